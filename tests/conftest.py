"""Shared fixtures: a fresh store per test, one helper to run a scenario notebook, the CLI as users run it."""
from __future__ import annotations

import os
import pickle
import shlex
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


def cli(*args, env: dict | None = None, timeout: float = 300, check: int | None = None, hide=(), **kwargs):
    """Run `jupyter flow ARGS` as a user would; returns the CompletedProcess (text). `hide`: folders the
    command must not see (an empty tmpfs over each, in a mount namespace of its own; see `kernelspecs`)."""
    command = ["jupyter", "flow", *map(str, args)]
    if hide:
        mounts = "".join(f"mount -t tmpfs none {shlex.quote(str(folder))} && " for folder in hide)
        command = ["unshare", "--map-root-user", "--mount", "sh", "-c", mounts + 'exec "$@"', "sh", *command]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, **kwargs)
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


class Kernelspecs:
    """What `kernelspecs(...)` gave a test: `names`, and `hidden`, the machine-wide kernelspec folders
    a CLI run must be given as `cli(..., hide=specs.hidden)` so that it sees those names alone."""

    def __init__(self, names: tuple[str, ...], hidden: list[str]):
        self.names, self.hidden = names, hidden


@pytest.fixture
def kernelspecs(tmp_path, monkeypatch):
    """Only the kernelspecs a test names, whatever this machine has installed: `kernelspecs("python3")`,
    `kernelspecs("python3", "ir")` (skipped where one is not installed). Copies of them are the test's
    JUPYTER_PATH; JUPYTER_DATA_DIR is empty and the user site is off, so the user's own kernelspecs
    (`IRkernel::installspec()` puts `ir` there) do not count. The machine-wide folders (sys.prefix and
    /usr/share/jupyter) cannot be taken away by the environment: a CLI run hides them (`hidden`, needs
    unprivileged mount namespaces, or the test is skipped)."""
    from jupyter_core.paths import ENV_JUPYTER_PATH, SYSTEM_JUPYTER_PATH
    from support.services import can_hide_folders

    from jupyter_flow.flow.kernelspecs import installed_kernels, ipykernel_resources

    def only(*names: str) -> Kernelspecs:
        machine = installed_kernels()
        folder = tmp_path / "kernelspecs"
        for name in names:
            source = machine.get(name) or (ipykernel_resources() if name == "python3" else None)
            if not source:
                pytest.skip(f"the {name!r} kernel is not installed on this machine")
            shutil.copytree(source, folder / "kernels" / name)
        monkeypatch.setenv("JUPYTER_PATH", str(folder))
        monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
        monkeypatch.setenv("PYTHONNOUSERSITE", "1")  # ~/.local/share/jupyter is a user folder too
        monkeypatch.setenv("JUPYTER_FLOW_AGENT", "0")  # an agent's process would see every folder
        hidden = sorted({os.path.join(p, "kernels") for p in [*ENV_JUPYTER_PATH, *SYSTEM_JUPYTER_PATH]
                         if os.path.isdir(os.path.join(p, "kernels"))})
        if hidden and not can_hide_folders():
            pytest.skip("cannot hide this machine's kernelspecs here (no unprivileged mount namespaces)")
        return Kernelspecs(names, hidden)

    return only


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


def live_log(run_dir: Path, step: str, index: int = 0) -> str:
    """What a task's attempts have printed so far: each writes its live log into its own attempt folder
    (store/layout.py: attempt_key), found here whichever attempt or worker it is."""
    from jupyter_flow.store.layout import TASK_LOG

    return "".join(p.read_text() for p in sorted((Path(run_dir) / step / str(index)).glob(f"attempts/*/{TASK_LOG}")))



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
