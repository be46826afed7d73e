"""Helpers that start real services for tests: a Dask cluster, an S3 server (moto)."""
