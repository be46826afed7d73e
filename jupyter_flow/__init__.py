"""jupyter_flow: run a tagged notebook as a parallel, tracked, resumable pipeline.

Importing this package is cheap (a step's kernel imports it): every name below is loaded on first
use.
"""
from jupyter_flow._version import __version__

_LAZY = {
    "run": "api", "resume": "api", "load": "readers.into_kernel", "record": "execution.in_kernel",
    "batch": "runtime.batches", "Batch": "runtime.batches", "execute_notebook": "api",
    "show": "ui.widgets", "compare": "ui.widgets", "Run": "readers.client", "Flow": "readers.client",
    "Task": "readers.client", "namespace": "readers.client", "runs_table": "readers.client",
    "FlowError": "errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib  # lazy: start-up time (this whole module is; see its docstring)

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'jupyter_flow' has no attribute {name!r}")


def _jupyter_server_extension_points():
    from jupyter_flow.server import _jupyter_server_extension_points as points  # lazy: start-up time

    return points()


def _jupyter_labextension_paths():
    from jupyter_flow.server import _jupyter_labextension_paths as paths  # lazy: start-up time

    return paths()


def load_ipython_extension(ipython):
    from jupyter_flow.readers.into_kernel import register_magics  # lazy: start-up time

    register_magics(ipython)
