"""Shared fixtures: a fresh store per test, one helper to run a scenario notebook, the CLI as users run it."""
from __future__ import annotations

import os
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "tests" / "notebooks"
EXAMPLES = ROOT / "notebooks"


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    """An empty store, also the default for CLI subprocesses and kernels of this test."""
    url = str(tmp_path / "store")
    monkeypatch.setenv("JUPYTER_FLOW_STORE", url)
    return url


@pytest.fixture
def notebook_copy(tmp_path):
    """Copy a scenario (or example) notebook into the test's folder, so the test may edit it."""

    def copy(name: str) -> Path:
        source = SCENARIOS / name if (SCENARIOS / name).exists() else EXAMPLES / name
        target = tmp_path / name
        shutil.copy(source, target)
        return target

    return copy


@pytest.fixture
def run_flow(store):
    """Run a notebook through the Python API and return the finished Run."""
    import jupyter_flow

    def run(notebook, parameters=None, expect: str | None = "succeeded", **options):
        path = notebook if Path(str(notebook)).is_absolute() else SCENARIOS / notebook
        result = jupyter_flow.run(path, parameters=parameters, store=store, **options)
        if expect is not None:
            failures = [(t.step, t.status, t.error) for t in result.tasks if t.error]
            assert result.status == expect, f"run {result.id} is {result.status}: {failures}"
        return result

    return run


def cli(*args, env: dict | None = None, timeout: float = 300, check: int | None = None, **kwargs):
    """Run `jupyter flow ARGS` as a user would; returns the CompletedProcess (text)."""
    proc = subprocess.run(["jupyter", "flow", *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, **kwargs)
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


@pytest.fixture
def top_to_bottom(tmp_path):
    """Run a notebook top to bottom with papermill in one kernel; return the final values of `names`
    (names, or expressions over them such as `df.shape`; those that fail to evaluate are left out)."""

    def execute(notebook, names, parameters=None) -> dict:
        import nbformat
        import papermill

        nb = nbformat.read(str(notebook), as_version=4)
        out = tmp_path / "values.pkl"
        nb.cells.append(nbformat.v4.new_code_cell(
            "import pickle as _p\n_v = {}\n"
            f"for _n in {list(names)!r}:\n"
            "    try:\n        _v[_n] = eval(_n, globals())\n    except Exception:\n        pass\n"
            f"_p.dump(_v, open({str(out)!r}, 'wb'))"))
        papermill.execute_notebook(nb, str(tmp_path / "top_to_bottom.ipynb"), parameters=parameters or {},
                                   progress_bar=False, cwd=str(Path(notebook).parent))
        with open(out, "rb") as f:
            return pickle.load(f)

    return execute


def one_line_error(proc) -> str:
    """The CLI's error output must be one line, without a traceback."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def run_dirs(store: str) -> list[Path]:
    return sorted(Path(store).glob("flows/*/runs/*"))



def wait_for(predicate, timeout: float = 120, what: str = "a state"):
    """Poll `predicate` until it returns something true (a state, not a duration); the timeout only
    turns a hang into a failure."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def busy_cores():
    """One CPU-bound process per core for the length of the test, as on a shared, loaded machine."""
    import sys

    # each spins until the test ends, or until pytest itself dies (its parent changes): never an orphan
    spin = f"import os\nwhile os.getppid() == {os.getpid()}: pass"
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(os.cpu_count() or 2)]
    yield
    for proc in procs:
        proc.kill()
        proc.wait()


def tagged_notebook(folder: Path, cells: list[tuple[list[str], str]]) -> Path:
    """folder/flow.ipynb, a python3 notebook of code cells, each (tags, source)."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(source, metadata={"tags": tags}) for tags, source in cells],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    path = folder / "flow.ipynb"
    nbformat.write(nb, path)
    return path
