"""An unchanged rerun served entirely from the cache: `jupyter flow run linear5.ipynb`, the whole command
as a user types it, once the cache holds every step. Also what the launcher costs: `jupyter flow
--version` (jupyter_core's `jupyter` finds and starts the `jupyter-flow` script), `jupyter-flow
--version`, and a bare `python -c pass`. The cached rerun is also timed with `jupyter flow agent`
running (its sockets in the temp dir).

With `--baseline DIR`, the same commands also run against the jupyter_flow checkout in DIR (say, main
before this work), interleaved with ours so that both see the same machine load.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from pathlib import Path

from common import against_baseline, agent_running, checkout_env, temp_dir, timed_command

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "bench" / "notebooks" / "linear5.ipynb"
AGENT = "the same, `jupyter flow agent` running"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5, help="timed runs of each command; the median is reported")
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
                              "`jupyter flow --version`": (["jupyter", "flow", "--version"], env),
                              "`jupyter-flow --version`": (["jupyter-flow", "--version"], env)}
        python = "`python -c pass` (the interpreter alone)"
        commands["python"] = {python: ([sys.executable, "-c", "pass"], dict(os.environ))}
        agents = contextlib.ExitStack()
        for cmds in commands.values():
            if AGENT in cmds:
                agents.enter_context(agent_running(["jupyter", "flow", "agent"], cmds[AGENT][1]))
        for cmds in commands.values():  # warm-up: bytecode written, files cached
            for cmd, env in cmds.values():
                timed_command(cmd, env)
        times: dict[tuple, list] = {}
        for _ in range(args.repeat):
            for name, cmds in commands.items():
                for label, (cmd, env) in cmds.items():
                    times.setdefault((label, name), []).append(timed_command(cmd, env))
        agents.close()
    base = "baseline" if args.baseline else None
    for i, what in enumerate(("wall clock", "CPU time (user + system)")):
        med = {k: statistics.median(t[i] for t in v) for k, v in times.items()}
        rows = [(label, med[label, "jupyter_flow"], med.get((label, base))) for label in commands["jupyter_flow"]]
        print(against_baseline(f"Unchanged rerun from the cache: {what}, median of {args.repeat} (seconds)",
                               rows + [(python, med[python, "python"], None)], args.baseline) + "\n")

if __name__ == "__main__":
    main()
