"""Trivial pipelines, where only start-up and kernel supply count: jupyter_flow vs Metaflow and papermill.

    python bench/trivial.py              # medians of 5 after a warm-up, each pair interleaved
    python bench/trivial.py --quick      # smoke run
    python bench/trivial.py --kernelspec sys-prefix  # `python3` as `python -m ipykernel install --sys-prefix` writes it
    python bench/trivial.py --kernelspec all --only linear5   # issue 20's four set-ups, one table

  linear5   `jupyter flow run linear5.ipynb` vs `python linear5.py run` (Metaflow), 5 trivial steps in a chain
  trivial1  `jupyter flow run trivial1.ipynb` vs `papermill trivial1.ipynb out.ipynb`, one trivial cell

--kernelspec says which `python3` kernelspec the notebooks run in (for jupyter_flow and the peers
alike): `native` (default), `user`, `sys-prefix`, `venv`, or `all` of them one after the other, each
in a temp dir of its own (see bench/setups.py; the user's kernelspecs are not touched). For each
set-up the bench also times an unchanged rerun of linear5 served from the cache (median of
--repeat), checks with a two-step probe flow that its kernels came from a zygote, and notes the
load average before and after.

Each repetition runs ours, ours again with `jupyter flow agent` running (leave out with
--no-agent), then the peer, one right after the other, so a loaded machine slows them alike.
Then "where the time goes" splits our median runs (without and with the agent) from their records:
what lies outside the run's recorded span (process start-up, imports and checks before it; exit
after it), each step's task time (a task waits for its kernel if none is ready: the first one
always does), and the rest.
"""
from __future__ import annotations

import json
import os
import sys
from datetime import datetime

import setups
from common import (
    Bench,
    agent_running,
    arg_parser,
    environment_line,
    finish_args,
    latest_jf_run_id,
    markdown_table,
    ratio,
)

PAIRS = {
    "linear5": ("5-step linear trivial pipeline", "metaflow", "Metaflow `python linear5.py run`"),
    "trivial1": ("1-step trivial notebook", "papermill", "papermill CLI"),
}


def peer_command(bench: Bench, key: str):
    return bench.mf_run("linear5.py") if key == "linear5" else bench.papermill("trivial1.ipynb")


def breakdown(bench: Bench, run_id: str, flow: str, wall: float) -> list[tuple[str, float]]:
    """(part, seconds) of one of our runs, from its run.json and task.json records."""
    root = bench.jf_store / "flows" / flow / "runs" / run_id
    run = json.loads((root / "run.json").read_text())
    tasks = sorted((json.loads(p.read_text()) for p in root.glob("*/*/task.json")), key=lambda t: t["started"])
    parts = [("outside the run's recorded span: process start-up, imports, flow checks; exit", wall - run["duration"])]
    parts += [(f"step {t['step']} (task)", t["duration"]) for t in tasks]
    parts.append(("around the tasks: scheduling, records, closing the executor",
                  run["duration"] - sum(t["duration"] for t in tasks)))
    return parts


def measure(bench: Bench, key: str, agent: bool):
    """(our times, with the agent, the peer's, breakdowns of ours), taking turns in each repetition."""
    ours, with_agent, peer, parts, agent_parts = [], [], [], [], []
    peer_tool = PAIRS[key][1]
    for i in range(-bench.args.warmup, bench.args.repeat):
        bench.env["JUPYTER_FLOW_AGENT"] = "0"
        t = bench.run(bench.jf_run(f"{key}.ipynb"))
        run_id = latest_jf_run_id(bench.jf_store)
        bench.env["JUPYTER_FLOW_AGENT"] = "1"
        a = bench.run(bench.jf_run(f"{key}.ipynb")) if agent else None
        agent_run_id = latest_jf_run_id(bench.jf_store) if agent else None
        p = bench.run(peer_command(bench, key)) if peer_tool in bench.tools else None
        if i >= 0:
            ours.append(t)
            with_agent.append(a)
            peer.append(p)
            parts.append(breakdown(bench, run_id, key, t))
            agent_parts.append(breakdown(bench, agent_run_id, key, a) if agent else None)
    return ours, with_agent, peer, parts, agent_parts


def main(argv: list[str] | None = None) -> None:
    p = arg_parser(__doc__.split("\n")[0])
    p.add_argument("--only", action="append", choices=list(PAIRS), help="run only these (repeatable)")
    p.add_argument("--no-agent", action="store_true", help="leave out the runs with `jupyter flow agent` running")
    p.add_argument("--kernelspec", choices=[*setups.SETUPS, "all"], default="native",
                   help="the python3 kernelspec set-up (bench/setups.py), or all four in turn")
    args = finish_args(p.parse_args(argv))
    rows, details, checks = [], [], []
    for which in setups.SETUPS if args.kernelspec == "all" else [args.kernelspec]:
        with Bench(args) as bench:
            kernelspec = setups.use(bench, which)
            print(f"set-up {which}: temp dir {bench.root}; kernelspec python3: {kernelspec}", file=sys.stderr)
            load = os.getloadavg()[0]
            with agent_running(bench.jupyter_flow("agent"), bench.env, not args.no_agent):
                run_all(bench, args, f"{which}: `{kernelspec}`", rows, details)
            cached = cached_rerun(bench)
            checks.append([which, f"`{kernelspec}`", setups.forked(bench), round(cached, 2),
                           f"{load:.1f}–{os.getloadavg()[0]:.1f}"])
    print(markdown_table("Trivial pipelines (median seconds, whole commands)",
                         ["kernelspec python3", "work", "jupyter_flow", "peer", "peer's time", "ratio", "load"], rows))
    print("\n" + markdown_table("Each set-up: kernels forked? cached rerun (median seconds)",
                                ["set-up", "kernelspec command", "kernels from a zygote",
                                 "unchanged rerun from the cache", "load"], checks))
    for table in details:
        print("\n" + table)
    print(f"\n{environment_line(bench)}; {datetime.now():%Y-%m-%d}")


def cached_rerun(bench: Bench) -> float:
    """Median seconds of an unchanged linear5 rerun served from the cache (the first run fills it)."""
    bench.env["JUPYTER_FLOW_AGENT"] = "0"
    cmd = bench.jf_run("linear5.ipynb", cache=True)
    return bench.median("cached rerun", lambda i: bench.run(cmd))


def run_all(bench: Bench, args, kernelspec: str, rows: list, details: list) -> None:
    for key, (label, peer_tool, peer_name) in PAIRS.items():
        if args.only and key not in args.only:
            continue
        print(label, file=sys.stderr)
        load = os.getloadavg()[0]
        ours, with_agent, peer, parts, agent_parts = measure(bench, key, not args.no_agent)
        load = f"{load:.1f}–{os.getloadavg()[0]:.1f}"
        jf = bench.median("jupyter_flow", times=ours)
        other = bench.median(peer_tool, times=peer) if None not in peer else None
        rows.append([kernelspec, label, jf, peer_name, other, ratio(jf, other), load])
        if not args.no_agent:
            jfa = bench.median("jupyter_flow, agent running", times=with_agent)
            rows.append([kernelspec, f"{label}, `jupyter flow agent` running", jfa, peer_name, other, ratio(jfa, other),
                         load])
        for times, runs, how in ((ours, parts, ""), (with_agent, agent_parts, ", `jupyter flow agent` running")):
            if None in times:
                continue
            median_run = runs[sorted(range(len(times)), key=times.__getitem__)[len(times) // 2]]
            details.append(markdown_table(f"Where the time goes: {label}{how}, {kernelspec} (our median run)",
                                          ["part", "seconds"], [[name, round(s, 2)] for name, s in median_run]))


if __name__ == "__main__":
    main()
