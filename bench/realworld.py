"""A real notebook with heavy imports: Kubeflow Kale's titanic example, as a pipeline vs papermill.

    python bench/realworld.py              # medians of 5 runs after 1 warm-up
    python bench/realworld.py --quick      # smoke run

The notebook and its CSVs are in tests/corpus/kale/titanic-ml-dataset (public, from
kubeflow-kale/kale's examples; see tests/corpus/README.md). Its `imports` cell (numpy, pandas,
seaborn, matplotlib, scikit-learn) is what each of its 9 steps runs first.

Columns, each the wall clock of the whole command, run one after the other in every repetition:
  papermill            the notebook top to bottom in one kernel, without its `skip` cells (the pipeline
                       never runs those; one of them also fails with today's seaborn)
  jupyter_flow         `jupyter flow run` (kernels forked from a process that imported the notebook's
                       modules once)
  ... no preload       the same with JUPYTER_FLOW_PRELOAD=0 (every step's kernel imports them itself)
"""
from __future__ import annotations

import json
import shutil
import statistics
import sys
from pathlib import Path

from common import Bench, arg_parser, environment_line, finish_args, markdown_table, ratio

TITANIC = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "kale" / "titanic-ml-dataset"
NOTEBOOK = "titanic_dataset_ml.ipynb"


def main() -> int:
    args = finish_args(arg_parser(__doc__.splitlines()[0]).parse_args())
    with Bench(args) as bench:
        work = bench.root / "titanic"
        shutil.copytree(TITANIC, work)
        nb = json.loads((work / NOTEBOOK).read_text())
        nb["cells"] = [c for c in nb["cells"] if "skip" not in c.get("metadata", {}).get("tags", [])]
        (work / "top_to_bottom.ipynb").write_text(json.dumps(nb))
        flow = ["jupyter", "flow", "run", str(work / NOTEBOOK), "--store", str(bench.jf_store), "--no-cache",
                "--max-workers", str(args.max_workers), "--quiet"]
        commands = {
            "papermill": [sys.executable, "-m", "papermill", "--log-level", "WARNING", "--cwd", str(work),
                          str(work / "top_to_bottom.ipynb"), str(bench.root / "out.ipynb")],
            "jupyter_flow": flow,
            "jupyter_flow, no preload": ["env", "JUPYTER_FLOW_PRELOAD=0", *flow],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for i in range(-args.warmup, args.repeat):  # interleaved, so drift in the machine's load hits all alike
            for name, cmd in commands.items():
                took = bench.run(cmd)
                if i >= 0:
                    times[name].append(took)
        med = {name: statistics.median(ts) for name, ts in times.items()}
        for name, ts in times.items():
            print(f"  {name:<28} median {med[name]:7.2f} s  runs {' '.join(f'{t:.2f}' for t in ts)}", file=sys.stderr)
        rows = [[name, med[name], ratio(med[name], med["papermill"])] for name in commands]
        print(markdown_table("Kale titanic (9 steps, 5 in parallel)", ["command", "seconds", "vs papermill"], rows))
        print(f"\n{environment_line(bench)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
