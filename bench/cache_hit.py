"""An unchanged rerun served entirely from the cache: `jupyter flow run linear5.ipynb`, the whole command
as a user types it, once the cache holds every step. Also what the launcher costs: `jupyter flow
--version` (jupyter_core's `jupyter` finds and starts the `jupyter-flow` script), `jupyter-flow
--version`, a bare `python -c pass`, the same without `site` (`python -S -c pass`: what site-packages'
.pth files cost each start) and the launcher's own imports (`python -c "import jupyter_core.command"`).
The cached rerun is also timed with `jupyter flow agent` running (its sockets in the temp dir), and
with its output on a terminal (a pty), where the progress view is drawn in place as a user sees it.

It also checks what a cache hit starts: the cached rerun once more with PYTHONPROFILEIMPORTTIME=1 (every
Python process of the command reports its imports: a zygote or kernel would import ipykernel), and
its process tree sampled every 2 ms (psutil). A hit should start no process but the `jupyter-flow`
script and import neither papermill, nbclient, jupyter_client nor ipykernel.

With `--baseline DIR`, the same commands also run against the jupyter_flow checkout in DIR (say, main
before this work), interleaved with ours so that both see the same machine load.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import pty
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
from common import against_baseline, agent_running, checkout_env, temp_dir, timed_command

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "bench" / "notebooks" / "linear5.ipynb"
AGENT = "the same, `jupyter flow agent` running"
TERMINAL = "the same, its output on a terminal (a pty: the live view)"
WATCHED = ("papermill", "nbclient", "jupyter_client", "ipykernel")
NO_SITE = "`python -S -c pass` (no site: no site-packages, no .pth files)"
LAUNCHER = "`python -c \"import jupyter_core.command\"` (the `jupyter` launcher's imports)"


def timed_in_terminal(cmd: list[str], env: dict) -> tuple[float, float]:
    """timed_command with the command's standard streams on a terminal (a pty) whose output is read as
    it comes, as a user's terminal would."""
    master, slave = pty.openpty()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    with contextlib.suppress(OSError):  # EIO once the command has closed the terminal
        while os.read(master, 65536):
            pass
    proc.wait()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    os.close(master)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode} on a terminal")
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def what_it_starts(cmd: list[str], env: dict) -> tuple[list[str], list[str], int]:
    """(the modules of WATCHED any process of the command imported, the command lines of the processes
    it started besides the `jupyter` launcher's `jupyter-flow`, how many modules its processes imported)."""
    proc = subprocess.Popen(cmd, env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    seen: dict[int, str] = {}
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            for child in root.children(recursive=True):
                seen.setdefault(child.pid, " ".join(child.cmdline()))
        except psutil.Error:
            pass
        time.sleep(0.002)
    err = proc.communicate()[1]
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{err[-2000:]}")
    imported = [line.rsplit("|", 1)[-1].strip() for line in err.splitlines()
                if line.startswith("import time:") and not line.endswith("| imported package")]
    modules = {name.split(".")[0] for name in imported}
    started = [c for c in seen.values() if c and "jupyter-flow" not in c]
    return sorted(m for m in WATCHED if m in modules), started, len(imported)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=10, help="timed runs of each command; the median is reported")
    p.add_argument("--baseline", metavar="DIR", help="also time the jupyter_flow checkout in DIR, interleaved")
    p.add_argument("--tmp", help="parent of the temp dir")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = p.parse_args()
    sides = {"jupyter_flow": ROOT} | ({"baseline": Path(args.baseline).resolve()} if args.baseline else {})
    with temp_dir("jf-bench-cache-", args.tmp, args.keep) as root:
        commands = {}
        for name, checkout in sides.items():
            env = checkout_env(checkout, root)
            run = ["jupyter", "flow", "run", str(NOTEBOOK), "--store", str(root / name), "--max-workers", "2"]
            timed_command(run, env)  # fills the cache
            commands[name] = {"cached rerun `jupyter flow run linear5.ipynb`": (run, env),
                              AGENT: (run, {**env, "JUPYTER_RUNTIME_DIR": str(root / f"agent-{name}")}),
                              TERMINAL: (run, env),
                              "`jupyter flow --version`": (["jupyter", "flow", "--version"], env),
                              "`jupyter-flow --version`": (["jupyter-flow", "--version"], env)}
        python = "`python -c pass` (the interpreter alone)"
        commands["python"] = {python: ([sys.executable, "-c", "pass"], dict(os.environ)),
                              NO_SITE: ([sys.executable, "-S", "-c", "pass"], dict(os.environ)),
                              LAUNCHER: ([sys.executable, "-c", "import jupyter_core.command"],
                                         commands["jupyter_flow"]["`jupyter flow --version`"][1])}
        agents = contextlib.ExitStack()
        for cmds in commands.values():
            if AGENT in cmds:
                agents.enter_context(agent_running(["jupyter", "flow", "agent"], cmds[AGENT][1]))
        for cmds in commands.values():  # warm-up: bytecode written, files cached
            for label, (cmd, env) in cmds.items():
                (timed_in_terminal if label == TERMINAL else timed_command)(cmd, env)
        times: dict[tuple, list] = {}
        loads = [os.getloadavg()[0]]
        for _ in range(args.repeat):
            for name, cmds in commands.items():
                for label, (cmd, env) in cmds.items():
                    timer = timed_in_terminal if label == TERMINAL else timed_command
                    times.setdefault((label, name), []).append(timer(cmd, env))
            loads.append(os.getloadavg()[0])
        agents.close()
        run, env = commands["jupyter_flow"]["cached rerun `jupyter flow run linear5.ipynb`"]
        imported, started, count = what_it_starts(run, env)
    base = "baseline" if args.baseline else None
    for i, what in enumerate(("wall clock", "CPU time (user + system)")):
        med = {k: statistics.median(t[i] for t in v) for k, v in times.items()}
        rows = [(label, med[label, "jupyter_flow"], med.get((label, base))) for label in commands["jupyter_flow"]]
        print(against_baseline(f"Unchanged rerun from the cache: {what}, median of {args.repeat} (seconds; "
                               f"load average {min(loads):.1f}-{max(loads):.1f} while timing)",
                               rows + [(label, med[label, "python"], None) for label in commands["python"]],
                               args.baseline) + "\n")
    watched = ", ".join(WATCHED)
    print(f"A cache hit imported: {', '.join(imported) or 'none of ' + watched}; "
          f"processes it started besides `jupyter-flow`: {'; '.join(started) or 'none'}; "
          f"modules its two Python processes imported: {count}")

if __name__ == "__main__":
    main()
