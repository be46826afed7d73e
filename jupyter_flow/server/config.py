"""Server-side defaults, set like any Jupyter option (`c.JupyterFlow.store = "s3://bucket/flows"`).

Unset options fall back to what the CLI does, so the sidebar and `jupyter flow` see the same runs.
"""
import os

from traitlets import Integer, Unicode, default
from traitlets.config import Configurable


class JupyterFlow(Configurable):
    store = Unicode(
        None,
        allow_none=True,
        config=True,
        help="Store URL (local path, s3://, gs://). Default: $JUPYTER_FLOW_STORE, then the CLI's default.",
    )
    executor = Unicode(
        config=True, help="Executor for runs started from the sidebar: 'local' or 'dask'."
    )
    scheduler = Unicode(
        None, allow_none=True, config=True, help="Dask scheduler address for the dask executor."
    )
    max_workers = Integer(
        None, allow_none=True, config=True, help="Parallel tasks per run (default: cores)."
    )
    poll_interval_ms = Integer(
        400, config=True, help="How often the sidebar polls a live run, in milliseconds."
    )

    @default("store")
    def _store_default(self):
        return os.environ.get("JUPYTER_FLOW_STORE") or None

    @default("executor")
    def _executor_default(self):
        return os.environ.get("JUPYTER_FLOW_EXECUTOR") or "local"

    @default("scheduler")
    def _scheduler_default(self):
        return os.environ.get("JUPYTER_FLOW_SCHEDULER") or None
