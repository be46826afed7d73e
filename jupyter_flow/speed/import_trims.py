"""Keep the cost of importing the notebook stack low (it is on the critical path of every run).

- jsonschema registers a format checker for each optional package it finds at import: one compiles
  a grammar (rfc3987_syntax, about 2.7 s here), others pull in date and URL libraries (isoduration
  and arrow, rfc3986_validator: 20 ms). nbformat's schemas use no formats, so those packages are
  hidden while jsonschema imports, and importable again right after, for whoever wants them.
- papermill imports its S3 handler, and so boto3 (60 ms), at import. A run never gives papermill a
  remote path (fsspec reads and writes those), so `papermill.s3` is a stand-in until its `S3` is
  used, which then imports the real module.

Both only when the module is not imported yet: in a process that has it (a Jupyter server), nothing
changes.
"""
import importlib.util
import sys
import threading
import types

FORMAT_CHECKER_PACKAGES = ("fqdn", "idna", "isoduration", "jsonpointer", "rfc3339_validator", "rfc3986_validator",
                           "rfc3987", "rfc3987_syntax", "uri_template", "webcolors")


_lock = threading.Lock()  # a run's threads all call it


def fast_notebook_imports() -> None:
    with _lock:
        _trim()


def _trim() -> None:
    if "jsonschema" not in sys.modules:
        hidden = [name for name in FORMAT_CHECKER_PACKAGES if name not in sys.modules]
        sys.modules.update(dict.fromkeys(hidden))  # None: `import name` raises ImportError
        try:
            import jsonschema  # noqa: F401
        finally:
            for name in hidden:
                if sys.modules.get(name, 0) is None:
                    del sys.modules[name]
    if "papermill" not in sys.modules and "papermill.s3" not in sys.modules and importlib.util.find_spec("boto3"):
        # (without boto3 papermill's import of it fails at once, and papermill says what to install)
        sys.modules["papermill.s3"] = _papermill_s3_stand_in()


def _papermill_s3_stand_in() -> types.ModuleType:
    module = types.ModuleType("papermill.s3", "Stands in for papermill.s3 until S3 is used (see jupyter_flow.speed.import_trims).")

    class S3:
        def __new__(cls, *args, **kwargs):
            if sys.modules.get("papermill.s3") is module:
                del sys.modules["papermill.s3"]
            return importlib.import_module("papermill.s3").S3(*args, **kwargs)

    module.S3 = S3
    return module
