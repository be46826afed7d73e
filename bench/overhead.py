"""What running a notebook as a pipeline costs: jupyter_flow vs Metaflow vs papermill vs raw numpy.

    python bench/overhead.py             # medians of 5 runs, 500 MB array
    python bench/overhead.py --quick     # smoke run: 1 run, 50 MB array

Measures, each as the wall clock of whole commands run from a shell:
  linear   5 trivial steps in a chain            (bench/notebooks/linear5.ipynb, metaflow_flows/linear5.py)
  foreach  a 20-way foreach of trivial tasks     (foreach20.ipynb, foreach20.py)
  array    N MB of float64 passed between 2 steps (bigarray.ipynb, bigarray.py); raw = a process that
           np.save()s it and another that np.load()s it, in the same temp dir. Run again with an
           empty array: the difference is what moving the N MB costs each tool (its generation and
           sum are the same work in every column).
papermill runs each notebook top to bottom in one kernel: the same work with no pipeline.
"""
from __future__ import annotations

import sys

from common import Bench, arg_parser, environment_line, finish_args, markdown_table, ratio

RAW_SAVE = "import numpy as np, sys; np.save(sys.argv[1], np.random.default_rng(int(sys.argv[2])).random({n}))"
RAW_LOAD = "import numpy as np, sys; float(np.load(sys.argv[1]).sum())"


def scenarios(bench: Bench, array_mb: int) -> list[tuple[str, dict]]:
    """(label, {tool: once(i) -> seconds}) per benchmark; i is the repetition (negative for warm-ups)."""
    n = array_mb * 2**20 // 8
    npy = bench.root / "raw.npy"

    def array_params(i: int, mb: int = array_mb) -> dict:
        return {"n_mb": mb, "seed": i + 100}  # new data each time: no store can deduplicate it

    return [
        ("5-step linear pipeline", {
            "jupyter_flow": lambda i: bench.run(bench.jf_run("linear5.ipynb")),
            "metaflow": lambda i: bench.run(bench.mf_run("linear5.py")),
            "papermill": lambda i: bench.run(bench.papermill("linear5.ipynb")),
        }),
        ("20-way foreach", {
            "jupyter_flow": lambda i: bench.run(bench.jf_run("foreach20.ipynb")),
            "metaflow": lambda i: bench.run(bench.mf_run("foreach20.py")),
            "papermill": lambda i: bench.run(bench.papermill("foreach20.ipynb")),
        }),
        (f"{array_mb} MB array between 2 steps", {
            "jupyter_flow": lambda i: bench.run(bench.jf_run("bigarray.ipynb", array_params(i))),
            "metaflow": lambda i: bench.run(bench.mf_run("bigarray.py", "run", array_params(i))),
            "raw": lambda i: bench.run(
                [sys.executable, "-c", RAW_SAVE.format(n=n), str(npy), str(i + 100)],
                [sys.executable, "-c", RAW_LOAD, str(npy)]),
        }),
        ("the same with an empty array", {
            "jupyter_flow": lambda i: bench.run(bench.jf_run("bigarray.ipynb", array_params(i, 0))),
            "metaflow": lambda i: bench.run(bench.mf_run("bigarray.py", "run", array_params(i, 0))),
            "raw": lambda i: bench.run(
                [sys.executable, "-c", RAW_SAVE.format(n=0), str(npy), str(i + 100)],
                [sys.executable, "-c", RAW_LOAD, str(npy)]),
        }),
    ]


def main(argv: list[str] | None = None) -> None:
    p = arg_parser(__doc__.split("\n")[0])
    p.add_argument("--array-mb", type=int, default=None, help="array size in MB (default 500, --quick 50)")
    p.add_argument("--only", action="append", choices=["linear", "foreach", "array"],
                   help="run only these benchmarks (repeatable)")
    args = finish_args(p.parse_args(argv))
    array_mb = args.array_mb or (50 if args.quick else 500)
    keys = ["linear", "foreach", "array", "array"]
    with Bench(args) as bench:
        print(f"temp dir {bench.root}", file=sys.stderr)
        rows = []
        for key, (label, runners) in zip(keys, scenarios(bench, array_mb)):
            if args.only and key not in args.only:
                continue
            print(label, file=sys.stderr)
            t = {tool: bench.median(f"{tool}", once) for tool, once in runners.items() if tool in bench.tools}
            jf = t.get("jupyter_flow")
            rows.append([label, jf, t.get("metaflow"), t.get("papermill"), t.get("raw"),
                         ratio(jf, t.get("metaflow")), ratio(jf, t.get("papermill")), ratio(jf, t.get("raw"))])
        arrays = [r for r in rows if "array" in r[0]]
        if len(arrays) == 2:  # what moving the data costs: the run with it minus the run without it
            moved = [None if a is None or b is None else a - b for a, b in zip(arrays[0][1:5], arrays[1][1:5])]
            rows.append([f"moving {array_mb} MB (difference of the two)", *moved,
                         ratio(moved[0], moved[1]), None, ratio(moved[0], moved[3])])
        print(markdown_table(
            "Pipeline overhead (median seconds)",
            ["benchmark", "jupyter_flow", "Metaflow", "papermill", "raw numpy",
             "jupyter_flow / Metaflow", "jupyter_flow / papermill", "jupyter_flow / raw"], rows))
        print(f"\n{environment_line(bench)}")


if __name__ == "__main__":
    main()
