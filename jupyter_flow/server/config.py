"""Server-side defaults, set like any Jupyter option (`c.JupyterFlow.store = "s3://bucket/flows"`).

Unset options behave as the CLI does: the store is the engine's default ($JUPYTER_FLOW_STORE, then
the per-user folder), so the sidebar and `jupyter flow` see the same runs.
"""
from traitlets import Integer, Unicode
from traitlets.config import Configurable


class JupyterFlow(Configurable):
    store = Unicode(
        None,
        allow_none=True,
        config=True,
        help="Store URL (local path, s3://, gs://). Default: $JUPYTER_FLOW_STORE, then the CLI's default.",
    )
    executor = Unicode(
        "local",
        config=True,
        help="Default executor for runs started from the sidebar: a registered name ('local', 'dask', ...).",
    )
    scheduler = Unicode(
        None, allow_none=True, config=True, help="Dask scheduler address for the dask executor."
    )
    max_workers = Integer(
        None, allow_none=True, config=True, help="Parallel tasks per run (default: cores)."
    )
    poll_interval_ms = Integer(
        400,
        config=True,
        help="How often a live stream re-reads the store for runs this server did not start, in milliseconds.",
    )
