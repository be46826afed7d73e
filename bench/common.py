"""Shared plumbing for the benchmarks: one temp dir, the three tools' command lines, timing, tables.

Every tool runs as a subprocess of the benchmark, with its state (jupyter_flow store, Metaflow
datastore and config, papermill outputs, raw .npy files) inside the same temp dir, so they all
write to the same disk.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTEBOOKS = HERE / "notebooks"
FLOWS = HERE / "metaflow_flows"

Command = list[str]


def arg_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--repeat", type=int, default=5, help="timed runs per measurement; the median is reported")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before timing each command")
    p.add_argument("--quick", action="store_true", help="smoke run: --repeat 1 --warmup 0 and smaller data")
    p.add_argument("--max-workers", type=int, default=os.cpu_count() or 2,
                   help="parallel tasks, the same for jupyter_flow and Metaflow (default: cores)")
    p.add_argument("--tmp", default=None, help="parent of the temp dir (default: the system's)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (it is printed)")
    p.add_argument("--skip", action="append", default=[], choices=["jupyter_flow", "metaflow", "papermill", "raw"],
                   help="leave a tool out (repeatable)")
    return p


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    if args.quick:
        args.repeat, args.warmup = 1, 0
    return args


class Failed(RuntimeError):
    pass


class Bench:
    """A temp dir with an environment for each tool; runs and times their commands there."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.root = Path(tempfile.mkdtemp(prefix="jf-bench-", dir=args.tmp))
        self.logs = self.root / "logs"
        self.logs.mkdir()
        self.jf_store = self.root / "jupyter_flow_store"
        (self.root / "metaflow_home").mkdir()
        self.env = dict(os.environ)
        self.env.update({
            "METAFLOW_HOME": str(self.root / "metaflow_home"),  # no user config is read
            "METAFLOW_DEFAULT_METADATA": "local",
            "METAFLOW_DEFAULT_DATASTORE": "local",
            "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(self.root / "metaflow"),
            "USER": self.env.get("USER") or "bench",
            "PYTHONUNBUFFERED": "1",
            "JUPYTER_RUNTIME_DIR": str(self.root / "runtime"),  # an agent of the user's is never used
            # every tool's modules run from cached bytecode, as an installed package's do (a checkout
            # installed with `pip install -e` has none, and $PYTHONDONTWRITEBYTECODE would keep it so)
            "PYTHONPYCACHEPREFIX": str(self.root / "pycache"),
        })
        self.env.pop("JUPYTER_FLOW_STORE", None)
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.python = sys.executable  # the interpreter every tool runs with (bench/setups.py may change it)
        self._count = 0
        self.tools = {t for t in ("jupyter_flow", "metaflow", "papermill", "raw") if t not in args.skip}
        if "jupyter_flow" in self.tools and not jupyter_flow_available():
            print("note: jupyter_flow CLI not found (`jupyter flow run`); its column is left out", file=sys.stderr)
            self.tools.discard("jupyter_flow")
        if "metaflow" in self.tools and not _importable("metaflow"):
            print("note: metaflow is not installed; its column is left out", file=sys.stderr)
            self.tools.discard("metaflow")

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc) -> None:
        if self.args.keep:
            print(f"\nkept {self.root}", file=sys.stderr)
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- command lines ------------------------------------------------------------------------
    def jupyter_flow(self, *args: str) -> Command:
        """`jupyter flow ARGS`, with the `jupyter` of this Python's environment: the peers run with
        sys.executable too, not through a version manager's shims (pyenv's add 0.1-0.3 s per command)."""
        jupyter = Path(self.python).with_name("jupyter")
        return [str(jupyter) if jupyter.exists() else "jupyter", "flow", *args]

    def jf_run(self, notebook: str, params: dict | None = None, *, cache: bool = False) -> Command:
        """`jupyter flow run`; without cache=True every step runs (Metaflow has no cross-run cache)."""
        return self.jupyter_flow("run", str(NOTEBOOKS / notebook), "--store", str(self.jf_store),
                                 "--max-workers", str(self.args.max_workers), *_params(params),
                                 *([] if cache else ["--no-cache"]))

    def mf_run(self, flow: str, command: str = "run", params: dict | None = None, *extra: str) -> Command:
        return [self.python, str(FLOWS / flow), "--quiet", "--no-pylint", command,
                "--max-workers", str(self.args.max_workers), *_params(params, flag_style=True), *extra]

    def papermill(self, notebook: str, params: dict | None = None) -> Command:
        out = self.root / "papermill" / notebook
        out.parent.mkdir(exist_ok=True)
        return [self.python, "-m", "papermill", "--log-level", "WARNING", str(NOTEBOOKS / notebook), str(out),
                *_params(params)]

    # -- running ------------------------------------------------------------------------------
    def run(self, *commands: Command, expect_ok: bool = True) -> float:
        """Run commands one after another in the temp dir; return the seconds they took together. They
        start with no dirty pages pending (os.sync, untimed): what an earlier command wrote is never
        flushed on this one's time."""
        if hasattr(os, "sync"):
            os.sync()
        start = time.perf_counter()
        for cmd in commands:
            self._count += 1
            log = self.logs / f"{self._count:04d}.log"
            with open(log, "w") as out:
                out.write(" ".join(cmd) + "\n")
                out.flush()
                rc = subprocess.run(cmd, cwd=self.root, env=self.env, stdout=out, stderr=subprocess.STDOUT).returncode
            if (rc == 0) != expect_ok:
                tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
                want = "to succeed" if expect_ok else "to fail"
                raise Failed(f"expected {' '.join(cmd)} {want}, it exited {rc}; log {log}:\n{tail}")
        return time.perf_counter() - start

    def repeat(self, once) -> list:
        """[once(i) for each of --repeat runs], after --warmup untimed calls once(-1), once(-2)..."""
        for i in range(self.args.warmup):
            once(-1 - i)
        return [once(i) for i in range(self.args.repeat)]

    def median(self, label: str, once=None, times: list[float] | None = None) -> float:
        """Median seconds of `once(i)` over the repetitions (or of given times), reported as it goes."""
        times = self.repeat(once) if times is None else times
        med = statistics.median(times)
        print(f"  {label:<44} median {med:7.2f} s  runs {' '.join(f'{t:.2f}' for t in times)}",
              file=sys.stderr, flush=True)
        return med


def _params(params: dict | None, flag_style: bool = False) -> list[str]:
    """`-p NAME VALUE` pairs (jupyter_flow, papermill) or `--NAME VALUE` (Metaflow)."""
    out: list[str] = []
    for name, value in (params or {}).items():
        out += [f"--{name}", str(value)] if flag_style else ["-p", name, str(value)]
    return out


def _importable(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def jupyter_flow_available() -> bool:
    if not shutil.which("jupyter-flow") or not shutil.which("jupyter"):
        return False
    return subprocess.run(["jupyter", "flow", "run", "--help"], capture_output=True).returncode == 0


def latest_jf_run_id(store: Path) -> str:
    """Id of the newest run in a jupyter_flow store (read through its client API)."""
    from jupyter_flow.readers import client
    from jupyter_flow.store import open_store

    runs = client.list_runs(open_store(str(store)), limit=1)
    if not runs:
        raise Failed(f"no run in {store}")
    return runs[0]["id"]


def markdown_table(title: str, columns: list[str], rows: list[list]) -> str:
    def cell(v):
        if v is None:
            return "–"
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v)

    lines = [f"### {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def ratio(a: float | None, b: float | None) -> str | None:
    return None if a is None or b is None or b == 0 else f"{a / b:.2f}×"


def environment_line(bench: Bench) -> str:
    import platform

    versions = []
    for mod in ("jupyter_flow", "metaflow", "papermill", "numpy"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except Exception:  # noqa: BLE001 - a missing tool is reported, not fatal
            versions.append(f"{mod} –")
    a = bench.args
    return (f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores, "
            f"{', '.join(versions)}; median of {a.repeat} run(s) after {a.warmup} warm-up, "
            f"--max-workers {a.max_workers}; seconds, wall clock of the whole command")


def against_baseline(title: str, rows: list[tuple], baseline: str | None) -> str:
    """A Markdown table of (label, ours, baseline's or None) seconds, with their ratio when a baseline
    checkout was timed too (bench/listing.py, bench/cache_hit.py)."""
    columns = ["", "jupyter_flow"] + ([f"baseline ({baseline})", "ratio"] if baseline else [])
    return markdown_table(title, columns, [
        [label, f"{ours:.3f}"] + ([f"{theirs:.3f}" if theirs is not None else None, ratio(ours, theirs)]
                                  if baseline else [])
        for label, ours, theirs in rows])


@contextlib.contextmanager
def temp_dir(prefix: str, parent: str | None, keep: bool):
    """A temp dir for a benchmark's state, removed at the end unless `keep` (then it is printed)."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield root
    finally:
        if keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def sample_usage(process, out: dict) -> None:
    """Note a psutil.Process's resident memory into out["peak"] (the highest seen) and its CPU seconds
    so far into out["cpu"]."""
    with process.oneshot():
        out["peak"] = max(out["peak"], process.memory_info().rss)
        cpu = process.cpu_times()
        out["cpu"] = cpu.user + cpu.system


def timed_command(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of a whole command. On a loaded machine the wall
    clock mostly measures waiting for a core; the CPU time is what the command itself costs."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def checkout_env(checkout: Path, root: Path, **extra: str) -> dict:
    """The environment that runs the jupyter_flow checkout at `checkout`, with its bytecode cached
    under `root` (as an installed package has it), even where $PYTHONDONTWRITEBYTECODE is set."""
    env = dict(os.environ, PYTHONPATH=str(checkout), PYTHONPYCACHEPREFIX=str(root / "pycache"),
               JUPYTER_RUNTIME_DIR=str(root / "runtime"))  # an agent of the user's is never used
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("JUPYTER_FLOW_STORE", None)
    return {**env, **extra}


@contextlib.contextmanager
def agent_running(command: list[str], env: dict, enabled: bool = True):
    """`jupyter flow agent` (`command`) serving the commands run with `env`, its sockets in env's
    JUPYTER_RUNTIME_DIR, if enabled."""
    if not enabled:
        yield
        return
    runtime = Path(env["JUPYTER_RUNTIME_DIR"])
    agent = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        while len(list(runtime.glob("*.sock"))) < 2:  # its zygote's and its runner's
            if agent.poll() is not None:
                raise RuntimeError("jupyter flow agent exited")
            time.sleep(0.05)
        yield
    finally:
        agent.terminate()
        agent.wait()
