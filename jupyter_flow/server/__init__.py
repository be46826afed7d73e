"""jupyter-server extension: the REST API under /jupyter-flow/api/ that the JupyterLab sidebar calls.

Nothing here schedules or stores anything: every route calls the engine (runtime, client, dag).
This module stays import-light; tornado and the handlers load only when the server loads us.
"""
from jupyter_flow._version import __version__  # noqa: F401  (shown by `jupyter server extension list`)


def _jupyter_server_extension_points():
    return [{"module": "jupyter_flow.server"}]


def _jupyter_labextension_paths():
    # relative to the `jupyter_flow` package, which re-exports this function
    return [{"src": "labextension", "dest": "jupyter-flow"}]


def _load_jupyter_server_extension(serverapp):
    from jupyter_flow.server.app import setup_handlers  # tornado and the handlers load only in a server

    setup_handlers(serverapp)
