"""A 200-task foreach on a 2-worker Dask cluster: total time against the floor, and the runner's memory.

    python bench/dask_scale.py               # 200 tasks, 3 repetitions after a warm-up
    python bench/dask_scale.py --tasks 1000 --repeat 1 --warmup 0   # issue 20's scale figure
    python bench/dask_scale.py --quick       # 40 tasks, 1 repetition, no warm-up

Each repetition also runs the same command with a 1-task foreach: "ms per task beyond a 1-task
run" is (wall time of the whole N-task command - that of the 1-task one) / (N - 1).

The cluster is real and local: `dask scheduler` and 2 `dask worker --nthreads 1` processes. The
pipeline is bench/notebooks/foreach20.ipynb with n=200: `start`, 200 `work` tasks, `join`, run
with `jupyter flow run --executor dask --no-cache`.

The floor is what the kernel executions alone cost: one task's notebook (its parameters cell and
`y = item * item`) run by papermill in a fresh kernel, timed alone (median of --alone runs, taken
in each repetition just before the runs, so it sees the same machine load), times 200 split over
the 2 workers, plus `start` and `join`, which nothing runs beside:

    floor = t_alone * (200 / 2 + 2)

The tasks' own time is the sum of their task.json durations (each from its start record to its end
record: kernel from the pool, inputs, the step, outputs) over the 2 workers. The rest of `total`,
per task, is the scheduling overhead: what the runner, Dask and the worker add between tasks:

    overhead per task = (total - sum(durations) / 2) / (202 / 2)

Part of it is one worker idle while `start` and `join` run alone; the gap column is the median
time a Dask worker waits between the end of one task and the start of its next (task.json times).

`total` is the run's own duration (run.json: created to ended), so the CLI's start-up is not in it.
The same run on the local executor (`--max-workers 2`) is measured interleaved with it. The
runner's peak memory is its process's largest RSS (psutil, sampled every 20 ms) during the run;
kernels and Dask workers are other processes and are not in it; nor in its CPU time (user + system,
the last sample before it exits).
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from common import (
    NOTEBOOKS,
    Bench,
    arg_parser,
    environment_line,
    finish_args,
    markdown_table,
    sample_usage,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.services import dask_cluster

WORKERS = 2


def alone_once(tmp: Path) -> float:
    """Seconds for papermill to run one task's code in a fresh kernel, nothing else of ours running."""
    import nbformat
    import papermill

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("item = 0", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("y = item * item")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    start = time.perf_counter()
    papermill.execute_notebook(nb, str(tmp / "alone.ipynb"), parameters={"item": 7}, progress_bar=False,
                               log_output=False)
    return time.perf_counter() - start


def watch(proc: subprocess.Popen, stop: threading.Event, out: dict) -> None:
    """The largest RSS of the process while it runs (the runner; not its kernels), and its CPU time."""
    out.update(peak=0, cpu=0.0)
    try:
        p = psutil.Process(proc.pid)
        while not stop.is_set() and proc.poll() is None:
            sample_usage(p, out)
            stop.wait(0.02)
    except psutil.NoSuchProcess:
        pass


def run_once(bench: Bench, n: int, executor: list[str]) -> dict:
    """One `jupyter flow run` of the foreach; its duration, its tasks' durations, the runner's peak RSS."""
    store = bench.root / f"store-{executor[1]}"
    cmd = bench.jupyter_flow("run", str(NOTEBOOKS / "foreach20.ipynb"), "-p", "n", str(n), "--store", str(store),
                             "--no-cache", "--quiet", *executor)
    log = bench.logs / f"{executor[1]}-{time.monotonic_ns()}.log"
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=bench.root, env=bench.env, stdout=out, stderr=subprocess.STDOUT)
        stop, seen = threading.Event(), {}
        sampler = threading.Thread(target=watch, args=(proc, stop, seen))
        sampler.start()
        rc = proc.wait()
        wall = time.perf_counter() - started
        stop.set()
        sampler.join()
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {rc}; see {log}")
    run_dir = max(store.glob("flows/*/runs/*"), key=lambda p: p.stat().st_mtime)
    record = json.loads((run_dir / "run.json").read_text())
    tasks = [json.loads(p.read_text()) for p in run_dir.glob("*/*/task.json")]
    assert len(tasks) == n + 2 and all(t["status"] == "succeeded" for t in tasks), "not every task succeeded"
    return {"total": record["duration"], "wall": wall, "peak_mb": seen["peak"] / 2**20, "cpu": seen["cpu"],
            "busy": sum(t["duration"] for t in tasks) / WORKERS, "tasks": len(tasks), "gap": worker_gap(tasks)}


def worker_gap(tasks: list[dict]) -> float | None:
    """Median seconds a Dask worker waits between the end of one task and the start of its next."""
    from datetime import datetime

    lanes: dict[str, list] = {}
    for t in tasks:
        if t.get("worker"):
            lanes.setdefault(t["worker"], []).append((datetime.fromisoformat(t["started"]).timestamp(),
                                                      datetime.fromisoformat(t["ended"]).timestamp()))
    gaps = [b[0] - a[1] for lane in lanes.values() for a, b in zip(sorted(lane), sorted(lane)[1:])]
    return statistics.median(gaps) if gaps else None


def main() -> None:
    p = arg_parser(__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=200, help="width of the foreach (default 200)")
    p.add_argument("--alone", type=int, default=10, help="lone papermill executions per repetition for the floor")
    p.set_defaults(repeat=3, max_workers=WORKERS)
    args = finish_args(p.parse_args())
    if args.quick:
        args.tasks, args.alone = 40, 5
    n = args.tasks
    rows: dict[str, list[dict]] = {"dask": [], "local": []}
    floors: list[float] = []
    with Bench(args) as bench, dask_cluster(bench.root / "cluster", workers=WORKERS, nthreads=1) as address:
        executors = {"dask": ["--executor", "dask", "--scheduler", address],
                     "local": ["--executor", "local", "--max-workers", str(args.max_workers)]}
        with tempfile.TemporaryDirectory(dir=bench.root) as tmp:
            alone_once(Path(tmp))  # papermill imported and its first kernel started before any timing
            for i in range(-args.warmup, args.repeat):
                t_alone = statistics.median(alone_once(Path(tmp)) for _ in range(args.alone))
                results = {name: run_once(bench, n, cmd) for name, cmd in executors.items()}
                for name, cmd in executors.items():
                    results[name]["wall_1"] = run_once(bench, 1, cmd)["wall"]
                line = "  ".join(f"{k} {r['total']:.1f} s, {r['peak_mb']:.0f} MB" for k, r in results.items())
                print(f"  {'warm-up' if i < 0 else f'run {i + 1}'}: alone {t_alone * 1000:.0f} ms, {line}",
                      file=sys.stderr, flush=True)
                if i >= 0:
                    floors.append(t_alone * (n / WORKERS + 2))
                    for name, r in results.items():
                        rows[name].append(dict(r, floor=floors[-1]))

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[name])

    def ratio_to(name: str, key: str) -> str:
        return f"{statistics.median(r['total'] / r[key] for r in rows[name]):.2f}×"

    def overhead_ms(name: str) -> str:
        return f"{statistics.median((r['total'] - r['busy']) / (r['tasks'] / WORKERS) * 1000 for r in rows[name]):.0f}"

    def beyond_one_ms(name: str) -> str:
        return f"{statistics.median((r['wall'] - r['wall_1']) / (n - 1) * 1000 for r in rows[name]):.0f}"

    def gap_ms(name: str) -> str | None:
        gaps = [r["gap"] for r in rows[name] if r["gap"] is not None]
        return f"{statistics.median(gaps) * 1000:.0f}" if gaps else None

    table = [[f"{name} ({'2 Dask workers' if name == 'dask' else f'--max-workers {args.max_workers}'})",
              med(name, "total"), statistics.median(floors), ratio_to(name, "floor"), med(name, "busy"),
              ratio_to(name, "busy"), overhead_ms(name), gap_ms(name), f"{med(name, 'peak_mb'):.0f}", med(name, "cpu"),
              med(name, "wall"), med(name, "wall_1"), beyond_one_ms(name)]
             for name in rows]
    print(markdown_table(f"{n}-task foreach on {WORKERS} workers (median seconds)",
                         ["executor", "total", "floor", "total / floor", "tasks' own time", "total / tasks' time",
                          "overhead ms per task", "gap ms between tasks", "runner peak RSS MB", "runner CPU s",
                          "whole command", "whole 1-task command", "ms per task beyond a 1-task run"], table))
    print()
    print(environment_line(bench).replace("wall clock of the whole command", "run.json duration"))


if __name__ == "__main__":
    main()
