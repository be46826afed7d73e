"""What moving a large value between two steps costs: jupyter_flow vs raw numpy vs Metaflow.

    python bench/bigvalue.py              # medians of 5, 500 MB of random float64
    python bench/bigvalue.py --quick      # smoke run: 1 round, 50 MB

Each tool runs the same 2-step work twice, as whole commands: once with an N MB array made in the
first step and read in the second (bench/notebooks/bigarray.ipynb, metaflow_flows/bigarray.py, or
for raw numpy a process that np.save()s it and another that np.load()s it), and once with an empty
array. The difference is what moving N MB costs. Every round runs all six commands one after the
other (interleaved), with a new seed each round so no store can deduplicate the data, so ratios
stay fair on a loaded machine.
"""
from __future__ import annotations

import statistics
import sys

from common import Bench, arg_parser, environment_line, finish_args, markdown_table
from overhead import RAW_LOAD, RAW_SAVE


def commands(bench: Bench, tool: str, mb: int, seed: int) -> list[list[str]]:
    params = {"n_mb": mb, "seed": seed}
    if tool == "jupyter_flow":
        return [bench.jf_run("bigarray.ipynb", params)]
    if tool == "metaflow":
        return [bench.mf_run("bigarray.py", "run", params)]
    npy = str(bench.root / "raw.npy")
    n = mb * 2**20 // 8
    return [[sys.executable, "-c", RAW_SAVE.format(n=n), npy, str(seed)], [sys.executable, "-c", RAW_LOAD, npy]]


def main(argv: list[str] | None = None) -> None:
    p = arg_parser(__doc__.split("\n")[0])
    p.add_argument("--array-mb", type=int, default=None, help="array size in MB (default 500, --quick 50)")
    args = finish_args(p.parse_args(argv))
    mb = args.array_mb or (50 if args.quick else 500)
    with Bench(args) as bench:
        tools = [t for t in ("raw", "jupyter_flow", "metaflow") if t in bench.tools]
        print(f"temp dir {bench.root}; tools {', '.join(tools)}", file=sys.stderr)
        times: dict[tuple[str, int], list[float]] = {(t, m): [] for t in tools for m in (mb, 0)}
        for i in range(-args.warmup, args.repeat):
            for tool in tools:
                for m in (mb, 0):
                    t = bench.run(*commands(bench, tool, m, seed=1000 + i))
                    if i >= 0:
                        times[tool, m].append(t)
                    print(f"  round {i:>2} {tool:<13} {m:>4} MB {t:6.2f} s", file=sys.stderr, flush=True)
        # The load on a shared machine changes between rounds, not within one: each round's difference
        # and ratios are taken within the round, and their medians reported.
        moved = {t: [a - b for a, b in zip(times[t, mb], times[t, 0])] for t in tools}
        med = statistics.median

        def round_ratio(tool: str, peer: str) -> str | None:
            if tool not in moved or peer not in moved:
                return None
            return f"{med(a / b for a, b in zip(moved[tool], moved[peer])):.2f}×"

        rows = [[tool, med(times[tool, mb]), med(times[tool, 0]), med(moved[tool]),
                 " ".join(f"{x:.2f}" for x in moved[tool]), round_ratio("jupyter_flow", tool)] for tool in tools]
        print(markdown_table(f"Moving {mb} MB between two steps (median seconds)",
                             ["tool", f"with {mb} MB", "with an empty array", "moving the array (difference)",
                              "difference in each round", "jupyter_flow / this (median of the rounds' ratios)"],
                             rows))
        print(f"\n{environment_line(bench)}")


if __name__ == "__main__":
    main()
