"""Where one trivial foreach task's time goes: timestamps from the store, CPU of every process, and
(with --py-spy) the runner's threads sampled by py-spy.

    python bench/task_breakdown.py                 # a 100-task foreach and a 1-task one, local executor
    python bench/task_breakdown.py --tasks 1000    # issue 20's scale
    python bench/task_breakdown.py --py-spy        # also: where the runner's CPU goes (needs py-spy)

The flow is bench/notebooks/foreach20.ipynb with `-p n N` (`start`, N `work` tasks doing `y = item *
item`, `join`), `jupyter flow run --no-cache --max-workers 2`, a whole command, no agent. The work
step is contained (flow/containment.py): its tasks reuse kernels unless JUPYTER_FLOW_REUSE_KERNELS=0.

Reported:
  ms per task beyond a 1-task run   (wall of the N-task command - that of the 1-task one) / (N - 1)
  CPU per task                      the same difference of the CPU time of every process of the command
                                    (runner, zygote, kernels: getrusage of the reaped children), and of
                                    the runner alone (psutil, its last sample)
  zygote + its kernels CPU          the same difference for the zygote's CPU time and that of the kernels it
                                    forked and reaped (psutil, its last sample): a fresh kernel's fork,
                                    start-up, cells and exit. With the runner's, what a task costs the cores:
                                    (runner + kernels) / cores is the wall time per task at best
  runner peak RSS                   psutil, sampled every 20 ms
  a task's timeline                 medians over the `work` tasks, from task.json (started, ended), the
                                    executed notebook's papermill metadata (its start, each cell's start
                                    and end, its end) and the mtimes of output.ipynb and log.txt:
                                    record written -> papermill starts (kernel from the pool, inputs'
                                    files, notebook built) -> first cell (kernel client connects,
                                    kernel_info) -> each cell by role -> papermill's end -> output.ipynb
                                    written -> task ended (log scrubbed, files stored, task.json)
  the work phase                    from the first `work` task's start to the last one's end, per task,
                                    and how many ran at once on average (sum of durations / that span):
                                    below 2, worker threads waited between tasks (scheduling, records)
  --py-spy                          share of the runner's CPU samples whose stack holds each of the
                                    functions in HOT (inclusive; a sample can count for several)
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import psutil
import setups
from common import NOTEBOOKS, Bench, arg_parser, finish_args, markdown_table, sample_usage

# (label, substring of a py-spy frame "function (file:line)"), for the runner's profile
HOT = [
    ("run_task (a task, whole)", "run_task (jupyter_flow/execution/task.py"),
    ("papermill.execute_notebook", "execute_notebook (papermill/execute.py"),
    ("  nbclient: start the kernel client, kernel_info", "async_start_new_kernel_client"),
    ("  nbclient: execute cells", "async_execute_cell"),
    ("  papermill: write the output notebook", "write_ipynb"),
    ("  nbformat.validate", "validate (nbformat/validator.py"),
    ("  papermill: parameterize (inject the parameters cell)", "parameterize_notebook"),
    ("kernel_pool.acquire (kernel from the pool)", "acquire (jupyter_flow/execution/kernel_pool.py"),
    ("kernel_pool.release (kill the kernel)", "release (jupyter_flow/execution/kernel_pool.py"),
    ("kernel start (pool's background boots)", "_start (jupyter_flow/execution/kernel_pool.py"),
    ("records.write_task", "write_task (jupyter_flow/store/records.py"),
    ("secrets: scrub files and record", "scrub_"),
    ("store.put_file", "put_file ("),
    ("stepbook.with_begin", "with_begin (jupyter_flow/flow/stepbook.py"),
    ("nbformat.from_dict", "from_dict (nbformat"),
    ("spec build (runtime/spec.py Specs.build)", "build (jupyter_flow/runtime/spec.py"),
    ("  stepbook.build", "build (jupyter_flow/flow/stepbook.py"),
    ("  files_in", "files_in (jupyter_flow/runtime/spec.py"),
    ("cache lookup (runtime/reuse.py)", "jupyter_flow/runtime/reuse.py"),
    ("runtime loop (runtime/loop.py, all of it)", "jupyter_flow/runtime/loop.py"),
    ("zmq / jupyter_client sockets", "jupyter_client/"),
]


def run(bench: Bench, n: int, profile: Path | None) -> dict:
    store = bench.root / f"store-{n}-{time.monotonic_ns()}"
    cmd = bench.jupyter_flow("run", str(NOTEBOOKS / "foreach20.ipynb"), "-p", "n", str(n), "--store", str(store),
                             "--no-cache", "--quiet", "--max-workers", "2")
    if profile:
        cmd = ["py-spy", "record", "--threads", "--format", "raw", "--rate", "200", "--nonblocking",
               "-o", str(profile), "--", *cmd]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=bench.root, env=dict(bench.env, JUPYTER_FLOW_AGENT="0"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = {"peak": 0, "cpu": 0.0, "kernels_cpu": 0.0}
    sampler = threading.Thread(target=_watch, args=(proc, seen, profile is not None))
    sampler.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{err[-2000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {"wall": wall, "cpu": cpu, "runner_cpu": seen["cpu"], "kernels_cpu": seen["kernels_cpu"],
            "peak_mb": seen["peak"] / 2**20, "store": store}


def _watch(proc: subprocess.Popen, out: dict, under_py_spy: bool) -> None:
    """Peak RSS and last CPU time of the runner (under py-spy: its child) while it runs."""
    try:
        p = psutil.Process(proc.pid)
        while proc.poll() is None:
            if under_py_spy:
                kids = p.children()
                if not kids:
                    time.sleep(0.02)
                    continue
                p, under_py_spy = kids[0], False
            sample_usage(p, out)
            _zygotes_cpu(p, out)
            time.sleep(0.02)
    except psutil.NoSuchProcess:
        pass


def _zygotes_cpu(runner: psutil.Process, out: dict) -> None:
    """The CPU seconds of the kernels so far: each zygote's own and that of the kernels it forked and
    reaped (its children's), summed over the runner's zygotes, the highest seen kept in out["kernels_cpu"]
    (a zygote's kernels are its children, not the runner's: getrusage of the command misses them)."""
    total = 0.0
    for child in runner.children():
        try:
            if not any("forkserver" in part for part in child.cmdline()):
                continue
            cpu = child.cpu_times()
            total += cpu.user + cpu.system + cpu.children_user + cpu.children_system
        except psutil.Error:
            continue
    out["kernels_cpu"] = max(out["kernels_cpu"], total)


def _t(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def timeline(store: Path) -> list[tuple[str, float]]:
    """(part, median ms) of the `work` tasks' timelines (see the docstring)."""
    parts: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        parts.setdefault(name, []).append(seconds * 1000)

    for record_path in store.glob("flows/*/runs/*/work/*/task.json"):
        task = json.loads(record_path.read_text())
        notebook = store / task["notebook"]  # in the attempt's folder (files_at)
        nb = json.loads(notebook.read_text())
        pm = nb["metadata"]["papermill"]
        cells = [c for c in nb["cells"] if c["metadata"].get("papermill", {}).get("start_time")]
        add("task.json written (running) -> papermill starts: kernel from the pool, files, notebook built",
            _t(pm["start_time"]) - _t(task["started"]))
        add("papermill starts -> first cell starts: kernel client connects, kernel_info",
            _t(cells[0]["metadata"]["papermill"]["start_time"]) - _t(pm["start_time"]))
        for c in cells:
            role = c["metadata"].get("jupyter_flow", {}).get("role") or "injected parameters (papermill)"
            add(f"cell: {role}", c["metadata"]["papermill"]["duration"])
        gaps = [_t(b["metadata"]["papermill"]["start_time"]) - _t(a["metadata"]["papermill"]["end_time"])
                for a, b in zip(cells, cells[1:])]
        add("between cells (nbclient, all gaps)", sum(gaps))
        last = cells[-1]["metadata"]["papermill"]["end_time"]
        add("last cell ends -> papermill's end", _t(pm["end_time"]) - _t(last))
        written = notebook.stat().st_mtime
        add("papermill's end -> output.ipynb written", written - _t(pm["end_time"]))
        add("output.ipynb written -> task ended (kernel released, log, files stored)", _t(task["ended"]) - written)
        add("task, whole (task.json duration)", task["duration"])
    return [(name, statistics.median(ms)) for name, ms in parts.items()]


def work_phase(store: Path) -> tuple[float, float, int]:
    """(seconds from the first `work` task's start to the last one's end, the sum of their durations, the
    number of kernels that ran them: fewer than the tasks when kernels were reused)."""
    tasks = [json.loads(p.read_text()) for p in store.glob("flows/*/runs/*/work/*/task.json")]
    span = max(_t(t["ended"]) for t in tasks) - min(_t(t["started"]) for t in tasks)
    return span, sum(t["duration"] for t in tasks), len({t.get("kernel_pid") for t in tasks})


def hot(profile: Path) -> list[tuple[str, float]]:
    """(label, % of the runner's samples) for each of HOT, from py-spy's raw (collapsed) output."""
    total, counts = 0, Counter()
    for line in profile.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        for label, marker in HOT:
            if marker in stack:
                counts[label] += int(n)
    return [(label, 100 * counts[label] / max(total, 1)) for label, _ in HOT] + [("samples", total)]


def main() -> None:
    p = arg_parser(__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=100, help="width of the foreach (default 100)")
    p.add_argument("--py-spy", action="store_true", help="also profile the runner with py-spy (a separate run)")
    p.add_argument("--kernelspec", choices=setups.SETUPS, default="native",
                   help="the python3 kernelspec set-up the tasks run in (bench/setups.py)")
    p.set_defaults(repeat=1, warmup=1)
    args = finish_args(p.parse_args())
    with Bench(args) as bench:
        print(f"kernelspec python3: {setups.use(bench, args.kernelspec)}", file=sys.stderr, flush=True)
        for _ in range(args.warmup):
            run(bench, 2, None)
        rows, lines = [], []
        for i in range(args.repeat):
            load = psutil.getloadavg()[0]
            big, one = run(bench, args.tasks, None), run(bench, 1, None)
            per = {k: f"{(big[k] - one[k]) / (args.tasks - 1) * 1000:.0f}"
                   for k in ("wall", "cpu", "runner_cpu", "kernels_cpu")}
            floor = (int(per["runner_cpu"]) + int(per["kernels_cpu"])) / (os.cpu_count() or 1)
            rows.append([i + 1, big["wall"], one["wall"], per["wall"], per["cpu"], per["runner_cpu"],
                         per["kernels_cpu"], f"{floor:.0f}", f"{big['peak_mb']:.0f}",
                         f"{load:.1f}–{psutil.getloadavg()[0]:.1f}"])
            print(f"  run {i + 1}: {rows[-1]}", file=sys.stderr, flush=True)
            lines = timeline(big["store"])
            span, busy, kernels = work_phase(big["store"])
        print(markdown_table(f"{args.tasks}-task foreach vs a 1-task one, local executor, --max-workers 2, "
                             f"kernelspec {args.kernelspec}",
                             ["run", "wall, N tasks", "wall, 1 task", "ms per task beyond 1",
                              "CPU ms per task (reaped children)", "runner CPU ms per task",
                              "zygote + its kernels CPU ms per task",
                              f"best ms per task on {os.cpu_count()} cores ((runner + kernels) / cores)",
                              "runner peak MB", "load"], rows))
        print("\n" + markdown_table("A work task's timeline (median ms over the tasks of the last run)", ["part", "ms"],
                                    [[n, f"{ms:.1f}"] for n, ms in lines]
                                    + [["the work phase, per task (first start to last end / N)",
                                        f"{span / args.tasks * 1000:.1f}"],
                                       ["tasks running at once, on average (sum of durations / work phase)",
                                        f"{busy / span:.2f}"],
                                       ["kernels that ran the work tasks (JUPYTER_FLOW_REUSE_KERNELS=0: one each)",
                                        kernels]]))
        if args.py_spy:
            profile = bench.root / "runner.pyspy"
            run(bench, args.tasks, profile)
            print("\n" + markdown_table("The runner's CPU samples (py-spy, inclusive %)", ["in", "%"],
                                        [[n, f"{v:.1f}" if n != "samples" else v] for n, v in hot(profile)]))


if __name__ == "__main__":
    main()
