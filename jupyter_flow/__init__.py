"""jupyter_flow: run a tagged notebook as a parallel, tracked, resumable pipeline.

Importing this package is cheap (a step's kernel imports it): every name below is loaded on first
use.
"""
from ._version import __version__

_LAZY = {
    "run": "api", "resume": "api", "load": "kernel", "record": "inkernel", "batch": "batches", "Batch": "batches",
    "execute_notebook": "papermill_output", "show": "widgets", "compare": "widgets",
    "Run": "client", "Flow": "client", "Task": "client", "namespace": "client", "runs_table": "client",
    "FlowError": "errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'jupyter_flow' has no attribute {name!r}")


def _jupyter_server_extension_points():
    from .server import _jupyter_server_extension_points as points

    return points()


def _jupyter_labextension_paths():
    from .server import _jupyter_labextension_paths as paths

    return paths()


def load_ipython_extension(ipython):
    from .kernel import register_magics

    register_magics(ipython)
