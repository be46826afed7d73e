"""What recovering from a failure costs: resume in jupyter_flow vs Metaflow, and jupyter_flow's cache.

    python bench/resume.py               # medians of 5 runs
    python bench/resume.py --quick       # smoke run
    python bench/resume.py --sleep-s 1   # each step also sleeps 1 s, so skipped work shows

linear5 (bench/notebooks/linear5.ipynb, bench/metaflow_flows/linear5.py) has 5 steps, and its
last step fails while a marker file exists. Each repetition runs it with the marker (it fails),
deletes the marker and resumes: the resume reuses the 4 good steps and runs the last one again.
jupyter_flow also reruns the unchanged linear5.ipynb: once served from its cache, once with
--no-cache (every step runs again). Metaflow has no cross-run cache, so that row is left blank.
"""
from __future__ import annotations

import sys

from common import Bench, arg_parser, environment_line, finish_args, latest_jf_run_id, markdown_table, ratio


def fail_then_resume(bench: Bench, tool: str, sleep_s: float) -> tuple[float, float]:
    """One repetition: (seconds of a run that fails in its last step, seconds of resuming it)."""
    marker = bench.root / "fail_marker"
    marker.touch()
    params = {"fail_marker": marker, "sleep_s": sleep_s}
    if tool == "jupyter_flow":
        failed = bench.run(bench.jf_run("linear5.ipynb", params), expect_ok=False)
        run_id = latest_jf_run_id(bench.jf_store)
        marker.unlink()
        return failed, bench.run(bench.jupyter_flow("resume", run_id, "--store", str(bench.jf_store)))
    id_file = bench.root / "metaflow_run_id"
    failed = bench.run(bench.mf_run("linear5.py", "run", params, "--run-id-file", str(id_file)), expect_ok=False)
    marker.unlink()
    return failed, bench.run(bench.mf_run("linear5.py", "resume", None, "--origin-run-id", id_file.read_text().strip()))


def main(argv: list[str] | None = None) -> None:
    p = arg_parser(__doc__.split("\n")[0])
    p.add_argument("--sleep-s", type=float, default=0.0, help="seconds each step sleeps (default 0)")
    args = finish_args(p.parse_args(argv))
    with Bench(args) as bench:
        print(f"temp dir {bench.root}", file=sys.stderr)
        med: dict[tuple[str, str], float] = {}
        for tool in ("jupyter_flow", "metaflow"):
            if tool not in bench.tools:
                continue
            print(tool, file=sys.stderr)
            pairs = bench.repeat(lambda i, tool=tool: fail_then_resume(bench, tool, args.sleep_s))
            med[tool, "failed run"] = bench.median("failed run", times=[f for f, _ in pairs])
            med[tool, "resume"] = bench.median("resume", times=[r for _, r in pairs])
        if "jupyter_flow" in bench.tools:
            print("jupyter_flow cache", file=sys.stderr)
            bench.run(bench.jf_run("linear5.ipynb", cache=True))  # fills the cache
            med["jupyter_flow", "cached"] = bench.median(
                "unchanged rerun (cache)", lambda i: bench.run(bench.jf_run("linear5.ipynb", cache=True)))
            med["jupyter_flow", "fresh"] = bench.median(
                "fresh rerun (--no-cache)", lambda i: bench.run(bench.jf_run("linear5.ipynb")))

        def row(label, jf_key, mf_key=None):
            jf, mf = med.get(("jupyter_flow", jf_key)), med.get(("metaflow", mf_key))
            return [label, jf, mf, ratio(jf, mf)]

        rows = [row("5-step run, last step fails", "failed run", "failed run"),
                row("resume it (last step runs again)", "resume", "resume"),
                row("unchanged 5-step rerun from cache", "cached"),
                row("same rerun with --no-cache", "fresh")]
        print(markdown_table("Failure recovery (median seconds)",
                             ["benchmark", "jupyter_flow", "Metaflow", "jupyter_flow / Metaflow"], rows))
        cached, fresh = med.get(("jupyter_flow", "cached")), med.get(("jupyter_flow", "fresh"))
        if cached and fresh:
            print(f"\njupyter_flow cached rerun / fresh rerun: {ratio(cached, fresh)}")
        print(f"\n{environment_line(bench)}; each step sleeps {args.sleep_s} s")


if __name__ == "__main__":
    main()
