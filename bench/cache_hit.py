"""An unchanged rerun served entirely from the cache: `jupyter flow run linear5.ipynb`, the whole command
as a user types it, once the cache holds every step. Also what the launcher costs: `jupyter flow
--version` (jupyter_core's `jupyter` finds and starts the `jupyter-flow` script), `jupyter-flow
--version`, and a bare `python -c pass`.

With `--baseline DIR`, the same commands also run against the jupyter_flow checkout in DIR (say, main
before this work), interleaved with ours so that both see the same machine load.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "bench" / "notebooks" / "linear5.ipynb"


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5, help="timed runs of each command; the median is reported")
    p.add_argument("--baseline", metavar="DIR", help="also time the jupyter_flow checkout in DIR, interleaved")
    p.add_argument("--tmp", help="parent of the temp dir")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="jf-bench-cache-", dir=args.tmp))
    sides = {"jupyter_flow": ROOT} | ({"baseline": Path(args.baseline).resolve()} if args.baseline else {})
    try:
        commands = {}
        for name, checkout in sides.items():
            env = dict(os.environ, PYTHONPATH=str(checkout))
            env.pop("JUPYTER_FLOW_STORE", None)
            run = ["jupyter", "flow", "run", str(NOTEBOOK), "--store", str(root / name), "--max-workers", "2"]
            subprocess.run(run, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fills it
            commands[name] = {"cached rerun `jupyter flow run linear5.ipynb`": (run, env),
                              "`jupyter flow --version`": (["jupyter", "flow", "--version"], env),
                              "`jupyter-flow --version`": (["jupyter-flow", "--version"], env)}
        commands["python"] = {"`python -c pass` (the interpreter alone)": ([sys.executable, "-c", "pass"], dict(os.environ))}
        times: dict[tuple, list] = {}
        for _ in range(args.repeat):
            for name, cmds in commands.items():
                for label, (cmd, env) in cmds.items():
                    times.setdefault((label, name), []).append(timed(cmd, env))
        med = {k: statistics.median(v) for k, v in times.items()}
        base = "baseline" if args.baseline else None
        print(f"### Unchanged rerun from the cache, median of {args.repeat} (seconds, whole command)\n")
        print("| command | jupyter_flow | " + (f"baseline ({args.baseline}) | ratio |" if base else ""))
        print("|---|---|" + ("---|---|" if base else ""))
        for label in commands["jupyter_flow"]:
            ours, theirs = med[label, "jupyter_flow"], med.get((label, base))
            print(f"| {label} | {ours:.3f} |" + (f" {theirs:.3f} | {ours / theirs:.2f}× |" if base else ""))
        label = next(iter(commands["python"]))
        print(f"| {label} | {med[label, 'python']:.3f} |" + (" | |" if base else ""))
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
