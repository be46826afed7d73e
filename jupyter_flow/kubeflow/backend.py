"""Run on a Kubeflow Pipelines cluster (`jupyter flow run NB --executor kfp --kfp-host URL --store s3://...`).

Kubeflow schedules a whole pipeline, not one task at a time, so this is a whole-run backend (see
jupyter_flow.executors.whole_run), not an executor of tasks: `submit_run` compiles the flow (see
jupyter_flow.kubeflow.pipeline) and creates one KFP run through the KFP API. Its pods write the run, task records,
values and executed notebooks into the store, so the usual readers (`runs`, `show`, load into a
kernel, `resume`) work on it. Its id in the store is the start time, `-kfp-` and the KFP run id.
"""
from __future__ import annotations

import contextlib
import io
import urllib.error
import urllib.request
import warnings

from jupyter_flow.errors import FlowError
from jupyter_flow.executors.whole_run import WholeRunBackend
from jupyter_flow.flow.dag import build_flow
from jupyter_flow.flow.params import resolve
from jupyter_flow.kubeflow.pipeline import (
    DEFAULT_IMAGE,
    KFP_MISSING,
    check_store_url,
    pipeline,
    pipeline_parameters,
)

USAGE = ("jupyter flow run NOTEBOOK --executor kfp --kfp-host URL --store s3://BUCKET/PREFIX (the Kubeflow Pipelines "
         "API, e.g. http://localhost:8080 after `kubectl port-forward svc/ml-pipeline-ui 8080:80`, and a store its "
         "pods can reach)")


class KfpBackend(WholeRunBackend):
    name = "kfp"
    usage = USAGE

    def __init__(self, host: str | None = None, image: str | None = None, experiment: str | None = None,
                 **options):
        super().__init__(**options)
        if not host:
            raise FlowError(f"--executor kfp runs whole pipelines and needs --kfp-host URL: {USAGE}")
        self.api, self.image, self.experiment = host.rstrip("/"), image or DEFAULT_IMAGE, experiment

    def submit_run(self, notebook, store: str | None, parameters: dict | None = None,
                   cli_params: list | None = None, param_files: list | None = None) -> dict:
        """Compile `notebook` and create a run of it on the cluster (see `WholeRunBackend.submit_run`;
        run_id: KFP's; the run's id in the store ends with `-kfp-<run_id>`)."""
        url = check_store_url(store)
        func = pipeline(notebook, store=url, image=self.image)
        flow = build_flow(notebook)
        given = {n: v for n, v in resolve(flow, parameters, cli_params, param_files).items()
                 if v != flow.parameters[n].value}
        typed = pipeline_parameters(flow)
        untyped = sorted(set(given) - set(typed))
        if untyped:
            raise FlowError(f"parameter {untyped[0]} has no literal default in the parameters cell, so it is not a "
                            "parameter of the Kubeflow pipeline; give it a default such as 0, '' or []")
        try:  # the optional `kfp` extra, needed only once a run is sent
            from kfp import Client
        except ImportError:
            raise FlowError(KFP_MISSING) from None
        self._check_reachable()
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # kfp prints links itself
                warnings.simplefilter("ignore", FutureWarning)
                result = Client(host=self.api).create_run_from_pipeline_func(
                    func, arguments=given, run_name=f"{flow.name} (jupyter_flow)", experiment_name=self.experiment,
                    enable_caching=False)
        except Exception as e:  # noqa: BLE001 - the API said no, or was not there
            reason = (str(e).strip().splitlines() or [e.__class__.__name__])[0][:200]
            raise FlowError(f"Kubeflow Pipelines at {self.api} did not take the run ({reason}); check --kfp-host "
                            "and that the API answers at HOST/apis/v2beta1/healthz") from None
        return {"run_id": result.run_id, "url": f"{self.api}/#/runs/details/{result.run_id}", "store": url,
                "flow": flow.name, "listed_as": f"an id ending in -kfp-{result.run_id}"}

    def _check_reachable(self) -> None:
        """Fail at once when nothing answers at the host (kfp.Client would retry its health check for 25 s).
        Any HTTP answer will do: a cluster behind a login may refuse us here and accept kfp's credentials."""
        try:
            urllib.request.urlopen(f"{self.api}/apis/v2beta1/healthz", timeout=10).close()
        except urllib.error.HTTPError:
            pass
        except (OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise FlowError(f"nothing answers at --kfp-host {self.api} ({reason}); give the Kubeflow Pipelines "
                            "API's address, e.g. http://localhost:8080") from None

    @property
    def host(self) -> str:
        return self.api
