"""Kubeflow Pipelines: a whole run compiled to a KFP pipeline and submitted to a cluster."""
