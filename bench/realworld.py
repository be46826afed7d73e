"""Real public notebooks as pipelines vs papermill top to bottom, in an installed kernelspec.

    python bench/realworld.py                          # the three notebooks, `--sys-prefix` kernelspec
    python bench/realworld.py --kernelspec native      # ipykernel's own kernelspec (bench/setups.py)
    python bench/realworld.py --only titanic --quick   # smoke run

The notebooks, each kept in tests/corpus/kale/ with its outputs cleared (see tests/corpus/README.md),
from https://github.com/kubeflow-kale/kale at commit 3e6b71147341:
  titanic   examples/titanic-ml-dataset/titanic_dataset_ml.ipynb, with its CSVs: numpy, pandas,
            seaborn, matplotlib and scikit-learn in its `imports` cell; 9 steps, 5 of them in parallel
  iris      examples/serving/sklearn/iris.ipynb: scikit-learn; 3 steps in a chain
  candies   examples/base/candies_sharing.ipynb: the standard library; 4 steps (a sack, three kids)

--kernelspec says which `python3` kernelspec every command runs in (`sys-prefix`, the default: a
fresh virtualenv with `python -m ipykernel install --sys-prefix`, every command run from it, as a
new user would; or `native`, `user`, `venv`; see bench/setups.py).

Columns, each the wall clock of the whole command, fresh store each time, run one after the other
in every repetition (interleaved, so drift in the machine's load hits all alike):
  papermill            the notebook top to bottom in one kernel, without its `skip` cells (the pipeline
                       never runs those; one of titanic's also fails with today's seaborn)
  jupyter_flow         `jupyter flow run --no-cache` (kernels forked from a zygote that imported the
                       notebook's modules once), no agent
  ... no preload       the same with JUPYTER_FLOW_PRELOAD=0 (every step's kernel imports them itself)
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
from pathlib import Path

import setups
from common import Bench, arg_parser, environment_line, finish_args, markdown_table, ratio

KALE = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "kale"
SOURCE = "https://github.com/kubeflow-kale/kale/blob/3e6b71147341/examples/"
# name -> (what to copy: the notebook or its folder, the notebook in it, upstream path, label)
NOTEBOOKS = {
    "titanic": (KALE / "titanic-ml-dataset", "titanic_dataset_ml.ipynb", "titanic-ml-dataset/titanic_dataset_ml.ipynb",
                "Kale titanic (9 steps, 5 in parallel; numpy, pandas, seaborn, matplotlib, sklearn)"),
    "iris": (KALE / "serving-sklearn-iris.ipynb", "serving-sklearn-iris.ipynb", "serving/sklearn/iris.ipynb",
             "Kale sklearn iris (3 steps in a chain; numpy, sklearn)"),
    "candies": (KALE / "candies_sharing.ipynb", "candies_sharing.ipynb", "base/candies_sharing.ipynb",
                "Kale candies sharing (4 steps; standard library)"),
}


def prepare(bench: Bench, name: str) -> tuple[Path, Path]:
    """Copy the notebook (and its data) into the temp dir; (the notebook, its top-to-bottom twin)."""
    source, notebook, _, _ = NOTEBOOKS[name]
    work = bench.root / name
    if source.is_dir():
        shutil.copytree(source, work)
    else:
        work.mkdir()
        shutil.copy(source, work / notebook)
    nb = json.loads((work / notebook).read_text())
    nb["cells"] = [c for c in nb["cells"] if "skip" not in c.get("metadata", {}).get("tags", [])]
    (work / "top_to_bottom.ipynb").write_text(json.dumps(nb))
    return work / notebook, work / "top_to_bottom.ipynb"


def measure(bench: Bench, args, name: str) -> list[list]:
    notebook, top_to_bottom = prepare(bench, name)
    work = notebook.parent

    def flow(i: int) -> list[str]:  # a fresh store for every run
        return bench.jupyter_flow("run", str(notebook), "--store", str(bench.root / f"store-{name}-{i}"),
                                  "--no-cache", "--max-workers", str(args.max_workers), "--quiet")

    commands = {
        "papermill, top to bottom": lambda i: [bench.python, "-m", "papermill", "--log-level", "WARNING", "--cwd",
                                               str(work), str(top_to_bottom), str(bench.root / f"{name}-out.ipynb")],
        "`jupyter flow run`": flow,
        "`jupyter flow run`, JUPYTER_FLOW_PRELOAD=0": lambda i: ["env", "JUPYTER_FLOW_PRELOAD=0", *flow(i)],
    }
    bench.env["JUPYTER_FLOW_AGENT"] = "0"
    times: dict[str, list[float]] = {label: [] for label in commands}
    load = os.getloadavg()[0]
    for i in range(-args.warmup, args.repeat):
        for label, cmd in commands.items():
            took = bench.run(cmd(f"{i}-{len(times[label])}"))
            if i >= 0:
                times[label].append(took)
    loads = f"{load:.1f}–{os.getloadavg()[0]:.1f}"
    med = {label: statistics.median(ts) for label, ts in times.items()}
    peer = med["papermill, top to bottom"]
    for label, ts in times.items():
        print(f"  {name} {label:<44} median {med[label]:7.2f} s  runs {' '.join(f'{t:.2f}' for t in ts)}",
              file=sys.stderr, flush=True)
    return [[NOTEBOOKS[name][3], label, med[label], ratio(med[label], peer), loads] for label in commands]


def main() -> int:
    p = arg_parser(__doc__.splitlines()[0])
    p.add_argument("--only", action="append", choices=list(NOTEBOOKS), help="run only these notebooks (repeatable)")
    p.add_argument("--kernelspec", choices=setups.SETUPS, default="sys-prefix",
                   help="the python3 kernelspec set-up (bench/setups.py); default sys-prefix")
    args = finish_args(p.parse_args())
    with Bench(args) as bench:
        kernelspec = setups.use(bench, args.kernelspec)
        print(f"temp dir {bench.root}; kernelspec python3: {kernelspec}", file=sys.stderr)
        forked = setups.forked(bench)
        rows = []
        for name in NOTEBOOKS:
            if not args.only or name in args.only:
                rows += measure(bench, args, name)
        print(markdown_table(f"Real notebooks, kernelspec {args.kernelspec} (`{kernelspec}`), median seconds",
                             ["notebook", "command", "seconds", "vs papermill", "load"], rows))
        print(f"\nkernels from a zygote: {forked}")
        print("sources: " + "; ".join(f"{n}: {SOURCE}{v[2]}" for n, v in NOTEBOOKS.items()))
        print(f"\n{environment_line(bench)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
