"""What moving a large value between two steps costs: jupyter_flow vs raw numpy/pandas vs Metaflow.

    python bench/bigvalue.py                  # medians of 5 pairs, 500 MB: an array, then a DataFrame
    python bench/bigvalue.py --value array    # only the random float64 array
    python bench/bigvalue.py --quick          # smoke run: 1 round, 50 MB

First, where the time goes inside jupyter_flow (in this process, one value, no kernels): pickle,
hash, write, rename, secret scan, load, verify, preview, beside the raw save and load.

Then whole commands. Each tool runs the same 2-step work twice: once with an N MB value made in the
first step and read in the second (bench/notebooks/bigarray.ipynb or bigframe.ipynb;
metaflow_flows/bigarray.py for the array; for raw, a process that saves it and another that loads
it: np.save/np.load for the array, DataFrame.to_pickle/pd.read_pickle for the frame), and once with
an empty value. The difference is what moving N MB costs. Every round runs the commands one after
the other (interleaved), with a new seed each round so no store can deduplicate the data, so ratios
stay fair on a loaded machine.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

from common import Bench, arg_parser, environment_line, finish_args, markdown_table

# The same generation code as the notebooks' first steps; argv: path, seed.
MAKE = {
    "array": "import numpy as np\nrng = np.random.default_rng(seed)\nvalue = rng.random(n_mb * 2**20 // 8)\n",
    "frame": ("import numpy as np, pandas as pd\nrng = np.random.default_rng(seed)\nrows = n_mb * 2**20 // 30\n"
              "value = pd.DataFrame({'x': rng.random(rows), 'n': rng.integers(0, 1 << 40, rows),\n"
              "    't': pd.to_datetime(rng.integers(0, 1 << 60, rows)), 'f': rng.random(rows, dtype=np.float32),\n"
              "    'ok': rng.random(rows) < 0.5,\n"
              "    'kind': pd.Categorical.from_codes(rng.integers(0, 16, rows), list('abcdefghijklmnop'))})\n"),
}
RAW = {  # (save, load) as a raw user would write them; argv of save: path, seed, MB
    "array": ("import sys\nn_mb, seed = int(sys.argv[3]), int(sys.argv[2])\n" + MAKE["array"]
              + "np.save(sys.argv[1], value)",
              "import numpy as np, sys; float(np.load(sys.argv[1]).sum())"),
    "frame": ("import sys\nn_mb, seed = int(sys.argv[3]), int(sys.argv[2])\n" + MAKE["frame"]
              + "value.to_pickle(sys.argv[1])",
              "import pandas as pd, sys; df = pd.read_pickle(sys.argv[1]); float(df['x'].sum()) + len(df)"),
}
RAW_NAME = {"array": "raw np.save+np.load", "frame": "raw pandas to_pickle+read_pickle"}
NOTEBOOK = {"array": "bigarray.ipynb", "frame": "bigframe.ipynb"}


def make(kind: str, mb: int, seed: int = 0):
    ns = {"n_mb": mb, "seed": seed}
    exec(MAKE[kind], ns)  # noqa: S102 - our own generation code
    return ns["value"]


class _Counting:
    """A writer that only counts (blobs.dump reads `size`): pickling alone, no hash, no file."""

    def __init__(self):
        self.size = 0

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        self.size += n
        return n


def breakdown(kind: str, mb: int) -> list[tuple[str, float]]:
    """(stage, seconds) of saving then loading one `mb` MB value as a step does, and the raw peer's."""
    import numpy as np
    import pandas as pd

    from jupyter_flow.store import Store, blobs, layout
    from jupyter_flow.store.preview import describe

    value = make(kind, mb, seed=1)
    touch = (lambda v: float(v.sum())) if kind == "array" else (lambda v: float(v["x"].sum()) + len(v))
    stages: list[tuple[str, float]] = []

    def timed(label, f):
        start = time.perf_counter()
        result = f()
        stages.append((label, time.perf_counter() - start))
        return result

    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as root:
        store = Store(os.path.join(root, "store"))
        timed("pickle (to nowhere)", lambda: blobs.dump(value, _Counting()))
        hashed = time.perf_counter()
        digest = blobs.hash_value(value)
        stages.append(("hash (xxh3, while pickling)", time.perf_counter() - hashed - stages[0][1]))
        fd, tmp = tempfile.mkstemp(dir=store.backend.temp_dir(), prefix="blob-")
        with os.fdopen(fd, "wb") as f:
            start = time.perf_counter()
            blobs.dump(value, blobs.HashingWriter(f))
        stages.append(("write (pickle+hash+write, less the two above)",
                       time.perf_counter() - start - stages[0][1] - stages[1][1]))
        timed("rename into place", lambda: store.put_file(tmp, layout.blob(digest)))
        try:
            from jupyter_flow.execution import secrets
        except ImportError:
            secrets = None
        if secrets is not None and hasattr(secrets, "_CheckingWriter"):  # what a kernel adds: the secret scan
            start = time.perf_counter()
            blobs.dump(value, secrets._CheckingWriter(_Counting(), secrets.current(())))
            scan = time.perf_counter() - start - stages[0][1]  # below 0 when it is within the noise: shown as 0
            stages.append(("secret scan (pickle through the check, less pickling)", max(scan, 0.0)))
        with store.backend.open(layout.blob(digest)) as f:
            buf = timed("load: map the blob", lambda: blobs.read_buffer(f))
        timed("verify (xxh3 of the mapped bytes)", lambda: blobs.digest_of(buf))
        loaded = timed("load: unpickle (views into the map)", lambda: blobs.loads(buf))
        timed("read it (the second step's sum)", lambda: touch(loaded))
        timed("preview (describe)", lambda: describe(value))
        ours = sum(s for _, s in stages)
        raw = os.path.join(root, "raw")
        if kind == "array":
            timed("raw np.save", lambda: np.save(raw + ".npy", value))
            again = timed("raw np.load", lambda: np.load(raw + ".npy"))
        else:
            timed("raw to_pickle", lambda: value.to_pickle(raw))
            again = timed("raw read_pickle", lambda: pd.read_pickle(raw))
        timed("raw: read it", lambda: touch(again))
    raw_total = sum(s for _, s in stages) - ours
    return [*stages, ("jupyter_flow, all stages", ours), (f"{RAW_NAME[kind]}, all", raw_total)]


def commands(bench: Bench, kind: str, tool: str, mb: int, seed: int) -> list[list[str]]:
    params = {"n_mb": mb, "seed": seed}
    if tool == "jupyter_flow":
        return [bench.jf_run(NOTEBOOK[kind], params)]
    if tool == "metaflow":
        return [bench.mf_run("bigarray.py", "run", params)]
    path = str(bench.root / ("raw.npy" if kind == "array" else "raw.pkl"))
    save, load = RAW[kind]
    return [[sys.executable, "-c", save, path, str(seed), str(mb)], [sys.executable, "-c", load, path]]


def whole_commands(bench: Bench, args, kind: str, mb: int) -> None:
    tools = [t for t in ("raw", "jupyter_flow", "metaflow")
             if t in bench.tools and (t != "metaflow" or kind == "array")]
    print(f"{kind}: temp dir {bench.root}; tools {', '.join(tools)}", file=sys.stderr)
    times: dict[tuple[str, int], list[float]] = {(t, m): [] for t in tools for m in (mb, 0)}
    loads: list[float] = []
    for i in range(-args.warmup, args.repeat):
        for tool in tools:
            for m in (mb, 0):
                t = bench.run(*commands(bench, kind, tool, m, seed=1000 + i))
                if i >= 0:
                    times[tool, m].append(t)
                    loads.append(os.getloadavg()[0])
                print(f"  round {i:>2} {kind} {tool:<13} {m:>4} MB {t:6.2f} s  load {os.getloadavg()[0]:.1f}",
                      file=sys.stderr, flush=True)
    # The load on a shared machine changes between rounds, not within one: each round's difference
    # and ratios are taken within the round, and their medians reported.
    moved = {t: [a - b for a, b in zip(times[t, mb], times[t, 0])] for t in tools}
    med = statistics.median

    def round_ratio(tool: str, peer: str) -> str | None:
        if tool not in moved or peer not in moved:
            return None
        return f"{med(a / b for a, b in zip(moved[tool], moved[peer])):.2f}×"

    names = {"raw": RAW_NAME[kind], "jupyter_flow": "jupyter_flow", "metaflow": "metaflow"}
    rows = [[names[tool], med(times[tool, mb]), med(times[tool, 0]), med(moved[tool]),
             " ".join(f"{x:.2f}" for x in moved[tool]), round_ratio("jupyter_flow", tool)] for tool in tools]
    print(markdown_table(f"Moving a {mb} MB {'random float64 array' if kind == 'array' else 'mixed-column DataFrame'} "
                         f"between two steps (median seconds; load average {min(loads):.1f}-{max(loads):.1f})",
                         ["tool", f"with {mb} MB", "with an empty value", "moving it (difference)",
                          "difference in each round", "jupyter_flow / this (median of the rounds' ratios)"], rows))


def main(argv: list[str] | None = None) -> None:
    p = arg_parser(__doc__.split("\n")[0])
    p.add_argument("--array-mb", type=int, default=None, help="value size in MB (default 500, --quick 50)")
    p.add_argument("--value", choices=["array", "frame"], action="append", help="which value (default both)")
    p.add_argument("--no-breakdown", action="store_true", help="only the whole commands")
    p.add_argument("--only-breakdown", action="store_true", help="only the in-process breakdown")
    args = finish_args(p.parse_args(argv))
    mb = args.array_mb or (50 if args.quick else 500)
    kinds = args.value or ["array", "frame"]
    if not args.no_breakdown:
        for kind in kinds:
            runs = [breakdown(kind, mb) for _ in range(1 if args.quick else 3)]
            rows = [[label, f"{statistics.median(r[i][1] for r in runs):.3f}"] for i, (label, _) in enumerate(runs[0])]
            print(markdown_table(f"Where the time goes: one {mb} MB {kind}, saved and loaded in this process "
                                 f"(median seconds of {len(runs)}; load {os.getloadavg()[0]:.1f})",
                                 ["stage", "seconds"], rows))
    if args.only_breakdown:
        return
    with Bench(args) as bench:
        for kind in kinds:
            whole_commands(bench, args, kind, mb)
        print(f"\n{environment_line(bench)}")


if __name__ == "__main__":
    main()
