"""How the runner's own time grows with the number of steps: it must stay linear.

For 10, 100 and 1,000 trivial steps, in a chain (each step reads the one before) and in a fan-out
(one step, n-2 branches reading it, one step reading every branch), it times:
  flow      building the Flow from the notebook (dag.py and the analysis)
  schedule  one whole run through the runtime with the `instant` executor, which ends each task at
            once with a made-up record (registered through the `jupyter_flow.executors` entry
            points, like any third-party executor): the runner's own work, no kernel at all
and prints each per step, and the ratio of the per-step cost at 1,000 steps to that at 10 steps
(1.0 is perfectly linear; a quadratic cost would make it about 100).
A sanity point runs a real 10-step chain with the local executor and reports the CPU time of the
runner's own thread (kernels and papermill run in other threads and processes).

Run: python bench/scheduling.py [--sizes 10 100 1000] [--repeat 3] [--real-steps 10]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path

import nbformat

from jupyter_flow.executors import registered
from jupyter_flow.executors.base import Executor

HERE = Path(__file__).resolve().parent


class InstantExecutor(Executor):
    """Ends every task at once as succeeded, with a made-up hash for each name it may write."""

    def submit(self, spec, control):
        outputs = {name: {"hash": "0" * 32, "size": 1, "type": "int", "preview": "1"}
                   for name in spec["kernel_spec"]["writes"]}
        future = Future()
        future.set_result({"status": "succeeded", "run_id": spec["run_id"], "flow": spec["flow"], "step": spec["step"],
                           "index": spec["index"], "outputs": outputs, "metrics": {}, "duration": 0.0,
                           "cache_key": spec["cache_key"], "error": None})
        return future


def register_instant(site: Path) -> None:
    """Install `instant` as a package would: a dist-info whose entry point names this module's class."""
    info = site / "jf_bench_instant-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: jf-bench-instant\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[jupyter_flow.executors]\ninstant = scheduling:InstantExecutor\n")
    sys.path[:0] = [str(site), str(HERE)]
    registered.cache_clear()


def notebook(path: Path, shape: str, n: int) -> Path:
    cell = nbformat.v4.new_code_cell
    if shape == "chain":
        cells = [cell("x0 = 1", metadata={"tags": ["step:s0"]})]
        cells += [cell(f"x{i} = x{i - 1} + 1", metadata={"tags": [f"step:s{i}"]}) for i in range(1, n)]
    else:
        branches = range(1, n - 1)
        cells = [cell("x0 = 1", metadata={"tags": ["step:s0"]})]
        cells += [cell(f"y{i} = x0 + {i}", metadata={"tags": [f"step:b{i}"]}) for i in branches]
        total = "total = sum([" + ", ".join(f"y{i}" for i in branches) + "])"
        cells.append(cell(total, metadata={"tags": ["step:join"]}))
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nbformat.write(nb, str(path))
    return path


def one_run(path: Path, store: str, executor: str) -> tuple[float, float, float, str]:
    """(CPU seconds to build the Flow, wall seconds of the run, CPU seconds of the runner's thread, status).
    CPU time, not wall time: on a shared machine the wall clock counts other people's work too."""
    from jupyter_flow import runtime
    from jupyter_flow.flow.dag import build_flow

    c0 = time.thread_time()
    build_flow(path)
    flow_s = time.thread_time() - c0
    runner = runtime.prepare(path, store=store, executor=executor, no_cache=True)
    t0, c0 = time.perf_counter(), time.thread_time()
    status = runner.run()  # in this thread (`instant` ends tasks inline): its CPU time is the runner's own
    return flow_s, time.perf_counter() - t0, time.thread_time() - c0, status


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--repeat", type=int, default=3, help="runs per point; the median is reported")
    p.add_argument("--real-steps", type=int, default=10, help="steps of the real-run sanity point (0: skip)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jf-sched-"))
    register_instant(tmp / "site")
    rows = []
    for shape in ("chain", "fan-out"):
        per_step = {}
        for n in args.sizes:
            path = notebook(tmp / f"{shape}-{n}.ipynb", shape, n)
            runs = []
            for r in range(args.repeat):
                flow_s, wall, cpu, status = one_run(path, str(tmp / f"store-{shape}-{n}-{r}"), "instant")
                assert status == "succeeded", status
                runs.append((flow_s, wall, cpu))
            flow_s, wall, cpu = (statistics.median(x) for x in zip(*runs))
            per_step[n] = (flow_s / n, cpu / n)
            rows.append((shape, n, flow_s, cpu, wall))
            print(f"{shape} {n}: flow {flow_s:.3f} s, schedule {cpu:.3f} s CPU, {wall:.3f} s wall", file=sys.stderr)
        lo, hi = min(args.sizes), max(args.sizes)
        rows.append((shape, f"{hi} vs {lo}", per_step[hi][0] / per_step[lo][0], per_step[hi][1] / per_step[lo][1],
                     None))
    print("| shape | steps | build Flow, CPU s | per step, ms | schedule the run, CPU s | per step, ms | (wall s) |")
    print("|---|---|---|---|---|---|---|")
    for shape, n, flow_s, cpu, wall in rows:
        if isinstance(n, int):
            print(f"| {shape} | {n} | {flow_s:.3f} | {1000 * flow_s / n:.2f} | {cpu:.3f} | {1000 * cpu / n:.2f} "
                  f"| {wall:.2f} |")
        else:
            print(f"| {shape} | per-step cost, {n} | | {flow_s:.2f}x | | {cpu:.2f}x | |")
    if args.real_steps:
        path = notebook(tmp / "real.ipynb", "chain", args.real_steps)
        _, wall, cpu, status = one_run(path, str(tmp / "store-real"), "local")
        print(f"\nreal run, {args.real_steps}-step chain, local executor ({status}): {wall:.2f} s wall, runner thread "
              f"CPU {cpu:.3f} s = {1000 * cpu / args.real_steps:.1f} ms per step")


if __name__ == "__main__":
    main()
