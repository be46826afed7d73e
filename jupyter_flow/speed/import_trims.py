"""Import trims: the CLI's imports of the notebook stack, without the optional packages a run never uses.

- jsonschema 4 imports, as jsonschema._format runs, every optional package that can check a string
  format (`with suppress(ImportError): import rfc3987_syntax`, fqdn, idna, webcolors...); one compiles a
  grammar (rfc3987_syntax: 2.7 s measured here, 4.8 s with the cores busy). nbformat's schemas check no
  formats, so while jsonschema._format runs those packages are not found; right after, they are
  importable again, for whoever wants them.
- papermill 2 imports its S3 handler, and so boto3 (60 ms), as papermill.iorw runs (`try: from .s3
  import S3 except ImportError`). A run never gives papermill a remote path (fsspec reads and writes the
  store), so while papermill.iorw runs papermill.s3 is not found (papermill's `s3://` handler, never used
  by a run, would then say to install boto3).

How: `install()` puts a finder first on sys.meta_path, the import system's own extension point. It wraps
the loader of jsonschema._format and papermill.iorw (when they are imported, if they are not yet) so that
while that module's code runs, in the thread importing it and nowhere else, the packages above raise
ModuleNotFoundError; the module itself gets its own loader back. Nothing is written into sys.modules, no
other library's code or attribute is changed, and the finder leaves sys.meta_path once both are imported.
Version-gated: jsonschema 4.x, papermill 2.x; any other version imports as it is.

Only in the CLI's process (which is also the agent's): `jupyter_flow.cli.main.entry` installs it first
thing, before any thread starts. The Python API, the Jupyter server, Dask workers and kernels import as
they would without jupyter_flow.

Upstream changes that would make this unnecessary: jsonschema importing a format's checker package the
first time that format is checked (a FormatChecker whose optional checkers register lazily), and papermill
importing `.s3` inside S3Handler, where it is used.
"""
from __future__ import annotations

import importlib.abc
import sys
import threading

FORMAT_CHECKER_PACKAGES = ("fqdn", "idna", "isoduration", "jsonpointer", "rfc3339_validator", "rfc3986_validator",
                           "rfc3987", "rfc3987_syntax", "uri_template", "webcolors")
# module -> (its distribution, the major version the trim was written for, the modules not found while it runs)
TRIMS = {
    "jsonschema._format": ("jsonschema", 4, FORMAT_CHECKER_PACKAGES),
    "papermill.iorw": ("papermill", 2, ("papermill.s3",)),
}


def install() -> bool:
    """Trim the notebook stack's imports in this process (see above). Only before any thread starts:
    False (nothing done) if one has."""
    if threading.active_count() > 1 or any(isinstance(f, _Trims) for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, _Trims({m: t for m, t in TRIMS.items() if m not in sys.modules}))
    return True


def written_for(distribution: str, major: int) -> bool:
    """Whether the installed `distribution` is of the major version a trim was written for."""
    from importlib.metadata import PackageNotFoundError, version  # once per trimmed module, when it is imported

    try:
        return version(distribution).split(".")[0] == str(major)
    except PackageNotFoundError:
        return False


class _Trims(importlib.abc.MetaPathFinder):
    def __init__(self, trims: dict):
        self.trims = trims  # the modules still to be imported
        self.hidden = threading.local()  # .names: not found, in this thread, while a trimmed module runs

    def find_spec(self, name, path, target=None):
        hidden = getattr(self.hidden, "names", ())
        if name in hidden or name.partition(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r} (not imported while {self.hidden.importing} is: "
                                      "see jupyter_flow.speed.import_trims)", name=name)
        trim = self.trims.pop(name, None)
        if trim is None or not written_for(*trim[:2]):
            return None
        spec = self._spec_of_others(name, path, target)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _Hiding(spec.loader, trim[2], self)
        return spec

    def _spec_of_others(self, name, path, target):
        """The spec the other finders give `name`: the module as it would be imported without us."""
        for finder in list(sys.meta_path):
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    return spec
        return None

    def done(self) -> None:
        """Leave sys.meta_path once every trimmed module is imported (never while importlib walks it)."""
        if not self.trims and self in sys.meta_path:
            sys.meta_path.remove(self)


class _Hiding(importlib.abc.Loader):
    """A module's own loader, with `names` not found while the module's code runs."""

    def __init__(self, loader, names: tuple, trims: _Trims):
        self.loader, self.names, self.trims = loader, names, trims

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = module.__spec__.loader = self.loader  # its own, for importlib.resources and the like
        state = self.trims.hidden
        before = getattr(state, "names", ()), getattr(state, "importing", "")
        state.names, state.importing = before[0] + self.names, module.__name__
        try:
            self.loader.exec_module(module)
        finally:
            state.names, state.importing = before
            self.trims.done()
