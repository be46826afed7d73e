"""Steps in languages other than Python: which language a step's kernel speaks, and what each
language needs: how its cells are read (reads and writes), the code its step notebook runs to
begin, finish and snapshot, and the conversion of values at the runner's side (neutral.py).

A kernel's language is its kernelspec's `language`. A language is supported when it has an entry
in LANGUAGES (Python is the kernel's own: see execution/in_kernel.py); a notebook whose kernel speaks another
language (bash...) runs as one step, as papermill runs it.

Values cross through the task's folder: before an R step runs, the runner writes each input in the
neutral format (neutral.py) to `crossing/in/NAME.json`, taking the neutral copy its producer
stored when there is one; the step's R code (in_kernel.R) reads them, and at its end writes what it
assigned to `crossing/out/NAME.json` (or, on failure, its variables to `crossing/failure/`); the
runner stores each as a Python value (what Python steps load) and as its neutral copy (what R
steps load), and writes the task's result.json / failure.json as a Python step's kernel would.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from jupyter_flow.flow.kernelspecs import installed_kernels
from jupyter_flow.store import neutral, open_store
from jupyter_flow.store.preview import describe

HERE = Path(__file__).resolve().parents[1] / "execution"  # where the in-kernel code of each language is
CROSSING = "crossing"  # the folder in the task's working folder
PYTHON_LANGUAGES = ("python", "python3", "ipython", "ipython3")  # a kernelspec's `language` that is Python


@dataclass(frozen=True)
class Language:
    name: str  # as users write it
    runtime: str  # the file of in-kernel code shipped in the package
    install: str  # how to get its kernel

    def analyze(self, sources: list[str]):
        from jupyter_flow.flow import analysis_r  # lazy: its tokenizer's regex compiles in 40 ms; R steps only

        return analysis_r.analyze(sources)

    def parameters(self, source: str) -> dict:
        from jupyter_flow.flow import analysis_r  # lazy: its tokenizer's regex compiles in 40 ms; R steps only

        return analysis_r.parameters(source)

    def begin_code(self, kernel_spec: dict) -> str:
        """The step notebook's first cell: load the in-kernel code and begin. The kernel is also told
        which calls read and write files (to note them) and which Python records them (its own, with
        its own library path: R's kernel sets LD_LIBRARY_PATH to its own folders, in which a Python
        built with a shared libpython would find the system's libpython, and that one's sys.path)."""
        from jupyter_flow.flow.analysis_r import FILE_CALLS  # lazy: its regex compiles in 40 ms; R steps only

        text = json.dumps(dict(kernel_spec, python=sys.executable, file_calls=FILE_CALLS,
                               python_library_path=os.environ.get("LD_LIBRARY_PATH", "")), default=str)
        return f'source({json.dumps(str(HERE / self.runtime))})\n.jf$begin(r"---({text})---")'

    finish_code = ".jf$finish()"

    def snapshot_code(self) -> str:
        return f'if (!exists(".jf")) source({json.dumps(str(HERE / self.runtime))})\n.jf$snapshot()'


LANGUAGES = {
    "r": Language("R", "in_kernel.R", "apt-get install r-base-core r-cran-irkernel r-cran-jsonlite (or "
                  "install.packages(c('IRkernel', 'jsonlite')) in R), then R -e 'IRkernel::installspec()'"),
}


def is_python(language: str) -> bool:
    return (language or "python").lower() in PYTHON_LANGUAGES


def same(a: str, b: str) -> bool:
    return a.lower() == b.lower() or is_python(a) and is_python(b)


def supported(language: str) -> bool:
    return is_python(language) or (language or "").lower() in LANGUAGES


def get(language: str) -> Language | None:
    return LANGUAGES.get((language or "").lower())


def kernel_language(kernel: str, default: str = "python") -> str:
    """The language of installed kernelspec `kernel` (its kernel.json); `default` when it is not
    installed (the run then stops on the missing kernel, see kernels.check_kernelspecs)."""
    folder = installed_kernels().get(kernel.lower())
    if folder is None:
        return default
    try:
        with open(os.path.join(folder, "kernel.json")) as f:
            return str(json.load(f).get("language") or default)
    except (OSError, ValueError):
        return default


def step_language(options: dict, notebook_kernel: str, notebook_language: str) -> str:
    kernel = options.get("kernel")
    if kernel is None or kernel == notebook_kernel:
        return notebook_language
    return kernel_language(kernel)


def snapshot_code(language: str, given: dict) -> str:
    """The code that takes a failure snapshot in a kernel of `language`."""
    if is_python(language) or get(language) is None:
        return f"import jupyter_flow.execution.in_kernel as _jf\n_jf.snapshot(**{given!r})"
    return get(language).snapshot_code()


# -- at the runner's side (task.py) ------------------------------------------------------------------
def _language_of(spec: dict) -> str:
    return ((spec.get("stepbook") or {}).get("metadata", {}).get("kernelspec") or {}).get("language") or "python"


def give(store, spec: dict, workdir: str) -> None:
    """Before a step in another language runs: its inputs in the neutral format, in its folder."""
    if is_python(_language_of(spec)):
        return
    folder = os.path.join(workdir, CROSSING, "in")
    os.makedirs(folder, exist_ok=True)
    kernel_spec = spec["kernel_spec"]
    for name, ref in kernel_spec["inputs"].items():
        if "missing" in ref:
            continue
        meta = (spec.get("input_meta") or {}).get(name) or {}
        if meta.get("neutral") and "hash" in ref and store.blob_ok(meta["neutral"]):
            data = bytes(store.blob_bytes(meta["neutral"], name))
        else:  # from the value itself (its neutral copy was not made, or is gone)
            value = ([store.load_value(h, name) for h in ref["hashes"]] if "hashes" in ref
                     else store.load_value(ref["hash"], name))
            try:
                data = neutral.dumps(value)
            except neutral.CannotCross as e:
                producer = kernel_spec.get("producers", {}).get(name, "?")
                raise neutral.CannotCross(neutral.message(name, str(e), producer, [spec["step"]],
                                                            _language_of(spec))) from None
        with open(os.path.join(folder, f"{name}.json"), "wb") as f:
            f.write(data)


class SecretValue(Exception):
    """A step in another language wrote a secret that a later step reads (secrets never pass)."""


def collect(spec: dict, workdir: str) -> None:
    """After a step in another language: store what its kernel wrote in the neutral format (its
    outputs, or its variables at a failure) and write result.json / failure.json as Python's do.
    A value holding a secret was deleted in the step's environment (execution/crossing.py, run by
    in_kernel.R, lists it in crossing/withheld.json): it is listed as withheld, as a Python step's
    is; one a later step reads fails the step (SecretValue). The crossing folder is removed: what it
    held is stored, or withheld (a local store's task folder is the working folder)."""
    folder = os.path.join(workdir, CROSSING)
    try:
        with open(os.path.join(folder, "withheld.json")) as f:  # (execution/crossing.py: WITHHELD)
            secret = dict(json.load(f))
    except (OSError, ValueError, TypeError):
        secret = {}
    try:
        for kind, target in (("result", "result.json"), ("failure", "failure.json")):
            listing = os.path.join(folder, f"{kind}-r.json")
            if not os.path.exists(listing):
                continue
            with open(listing) as f:
                found = json.load(f)
            store = open_store(spec["store"])
            values, problems, withheld = {}, dict(found.get("unconvertible") or {}), {}
            sub = "out" if kind == "result" else "failure"
            for name, r_class in (found.get("values") or {}).items():
                path = os.path.join(folder, sub, f"{name}.json")
                if name in secret:
                    withheld[name] = secret[name]
                    continue
                try:
                    values[name] = _store(store, path, describe) | {"r_class": r_class}
                except Exception as e:  # noqa: BLE001 - a value Python cannot take is listed, not stored
                    problems[name] = f"{r_class} ({e.__class__.__name__}: {e})"
            warnings = list(found.get("warnings") or [])
            payload = {"metrics": {}, "files": _files_used(folder), "packages": found.get("packages") or {},
                       "warnings": warnings + [f"{n!r} {why}: not stored (secrets never are)"
                                               for n, why in withheld.items()], "withheld": withheld}
            if kind == "result":
                _check_needed(spec, withheld)
                payload["outputs"] = values
            else:
                payload.update(variables=values, unpicklable=problems, modules={})
            with open(os.path.join(workdir, target), "w") as f:
                json.dump(payload, f, default=str)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _check_needed(spec: dict, withheld: dict) -> None:
    """A withheld output a later step reads: the step fails, saying how to get the secret there."""
    needed = (spec.get("kernel_spec") or {}).get("needed") or {}
    for name, why in withheld.items():
        if name in needed:
            readers = ", ".join(map(repr, needed[name]))
            var = why.partition("$")[2]
            where = f"Sys.getenv('{var}') in R, os.environ['{var}'] in Python" if var else "its environment"
            raise SecretValue(f"step {spec['step']!r}: {name!r} {why}, and step {readers} reads it; secrets are "
                              f"never stored, so they do not pass between steps: read it in step {readers} itself "
                              f"from {where}, and pass only what is not secret")


def _files_used(folder: str) -> dict:
    """The record's `files` the step's kernel wrote (see execution/crossing.py: main), once."""
    path = os.path.join(folder, "files.json")
    try:
        with open(path) as f:
            used = json.load(f)
    except (OSError, ValueError):
        return {}
    os.remove(path)
    return used


def _store(store, path: str, describe) -> dict:
    """Store one value an R step wrote (checked for secrets already): as a Python value and in its
    neutral form."""
    with open(path, "rb") as f:
        data = f.read()
    value = neutral.loads(data)
    digest, size = store.save_value(value)
    copy, _ = store.save_file(path)
    return {"hash": digest, "size": size, **describe(value), "neutral": copy}


def explain(e: Exception, spec: dict) -> str:
    """The message of an exception that stopped a task before its notebook ran: a kernel missing on
    this machine (a Dask worker without R) says which, where, and how to install it."""
    from jupyter_client.kernelspec import NoSuchKernel  # lazy: jupyter_client costs 0.15 s; a cache hit never loads it

    if isinstance(e, NoSuchKernel):
        lang = get(_language_of(spec))
        how = f"; install it there: {lang.install}" if lang else "; install it there (jupyter kernelspec list)"
        return f"no kernel named {spec['kernel']!r} on {socket.gethostname()} (the machine running step " \
               f"{spec['step']!r}){how}"
    return str(e).strip() or repr(e)
