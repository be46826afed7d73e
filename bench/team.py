"""A team on one S3 store with the Dask executor (issue 23): runs started per minute, and the time from a
colleague's failure to its variables in my kernel.

    python bench/team.py                 # 3 users for 3 minutes; 5 loads of a 100 MB failure snapshot
    python bench/team.py --quick         # 1 minute; 2 loads
    python bench/team.py --load-only     # only the failure-to-variables figure (and its stages)

The S3 store is moto's server on loopback (`moto_server`, as the tests use), one bucket, one prefix;
the Dask cluster is real and local (`dask scheduler`, 2 `dask worker --nthreads 1`), its workers
reaching the same S3 server.

1. Runs per minute. Three users (their own USER), each a loop of `jupyter flow run NOTEBOOK
   --executor dask --scheduler ADDRESS --store s3://... --no-cache`, one after another, started at
   once, for --minutes, after an untimed round of one run each (the workers' kernel pools start);
   one run in 5 fails in its last step (as a team's do). The figure is the runs started in that time
   (each loop's last run is let finish and counted) / minutes, and each run's
   median wall time (the whole command: CLI start-up, a run of 3 steps on the cluster, its records
   and values on S3). The notebook: `params` -> `make` (a 1,000-element list) -> `sum` -> `check`.

2. Failure to variables. ann's run fails in a step whose 100 MB numpy array (`big`) is among its
   variables: the failure snapshot stores it on S3. bob has a real ipykernel open, `jupyter_flow`
   imported in it; the time is that of `jupyter_flow.load(RUN, "fit", store=S3)` in that kernel (find
   the run, read its task record and snapshot, download the 100 MB blob, check its hash, unpickle),
   median of --repeat loads of the same failure, each into a fresh kernel that imported only
   jupyter_flow (nothing cached in it, boto3 not imported yet); the array's checksum is compared with
   ann's. Goal: <= 2 s. For scale, the same kernel then fetches the same blob with one plain boto3 GET:
   the floor the S3 server and the network set. Where the time goes: in another fresh kernel per
   load, the same steps one at a time (opening the store, reading the run, task and snapshot records,
   the blob's download, its hash check, unpickling, the push into the kernel's namespace); medians.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import Bench, arg_parser, finish_args, markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.services import dask_cluster, s3_bucket

USERS = ("ann", "bob", "carl")
SNAPSHOT_MB = 100


def notebook(path: Path, cells: list[tuple[list[str], str]]) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src, metadata={"tags": tags})
                                         for tags, src in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def team_notebook(folder: Path) -> Path:
    return notebook(folder / "team.ipynb", [
        (["parameters"], "fail = False"),
        (["step:make"], "xs = list(range(1000))"),
        (["step:sum"], "total = sum(xs)"),
        (["step:check"], "if fail:\n    raise ValueError('check failed')\nok = total == 499500"),
    ])


def failing_notebook(folder: Path) -> Path:
    return notebook(folder / "fit.ipynb", [
        (["step:fit"], (f"import numpy as np\nbig = np.random.default_rng(0).random({SNAPSHOT_MB * 2**20 // 8})\n"
                        "checksum = float(big.sum())\nraise ValueError('did not converge')")),
    ])


def user_env(bench: Bench, user: str, s3: dict) -> dict:
    return {**bench.env, **s3, "USER": user, "LOGNAME": user, "JUPYTER_FLOW_AGENT": "0"}


def runs_per_minute(bench: Bench, store: str, address: str, s3: dict, minutes: float) -> dict:
    nb = team_notebook(bench.root)
    walls: list[float] = []
    codes: dict[int, int] = {}
    errors: list[str] = []  # a run that ended otherwise than planned: the figure would be wrong
    lock = threading.Lock()
    deadline = None

    def user_loop(user: str) -> None:
        i = 0
        while deadline is None or time.monotonic() < deadline:
            fail = i % 5 == 4
            cmd = bench.jupyter_flow("run", str(nb), "--executor", "dask", "--scheduler", address, "--store", store,
                                     "--no-cache", "--quiet", "-p", "fail", str(fail))
            t = time.perf_counter()
            with open(bench.logs / f"{user}-{i}.log", "w") as out:
                rc = subprocess.run(cmd, cwd=bench.root, env=user_env(bench, user, s3), stdout=out,
                                    stderr=subprocess.STDOUT).returncode
            with lock:
                walls.append(time.perf_counter() - t)
                codes[rc] = codes.get(rc, 0) + 1
            if rc != (1 if fail else 0):
                errors.append(f"{user}'s run {i} exited {rc}; see {bench.logs / f'{user}-{i}.log'}")
                return
            i += 1
            if deadline is None:  # the warm-up round: one run each
                return

    def all_users() -> None:
        threads = [threading.Thread(target=user_loop, args=(u,)) for u in USERS]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise SystemExit(errors[0])

    all_users()  # untimed: the workers' kernel pools, the store's first objects
    walls.clear()
    codes.clear()
    t0 = time.monotonic()
    deadline = t0 + minutes * 60
    all_users()
    elapsed = time.monotonic() - t0
    return {"runs": len(walls), "minutes": elapsed / 60, "per_minute": len(walls) / (elapsed / 60),
            "median_wall": statistics.median(walls), "failed": codes.get(1, 0)}


LOAD = """
t = time.perf_counter()
v = jupyter_flow.load({run!r}, "fit", store={store!r}, quiet=True)
took = time.perf_counter() - t
import boto3
t = time.perf_counter()
raw = len(boto3.client("s3").get_object(Bucket="team", Key={key!r})["Body"].read())
get = time.perf_counter() - t
print(json.dumps({{"seconds": took, "checksum": float(v["big"].sum()), "mb": v["big"].nbytes / 2**20, "get": get,
                  "raw_mb": raw / 2**20}}))
"""


STAGES = """
from jupyter_flow.store import blobs, open_store, records
stages, t = {{}}, time.perf_counter()
def stage(name):
    global t
    stages[name] = time.perf_counter() - t
    t = time.perf_counter()
store = open_store({store!r})
stage("open the store")
run = records.find_run(store, {run!r})
failure = records.read_failure(store, records.read_task(store, run, "fit"))
stage("run, task and snapshot records")
f = store.backend.open({blob!r})
buf = blobs.read_buffer(f)
stage("the blob's download")
assert blobs.digest_of(buf) == {digest!r}
stage("its hash check")
value = blobs.loads(buf)
stage("unpickling")
get_ipython().push({{"big": value}})
stage("the push into the kernel")
print(json.dumps(stages))
"""


def in_kernel(env: dict, code: str, warm: str) -> dict:
    """Run `warm`, then `code`, in a fresh ipykernel; the JSON `code` printed."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", env=env)
    try:
        kc.execute_interactive(warm, timeout=120)
        out: list[str] = []
        reply = kc.execute_interactive(code, timeout=300, output_hook=lambda m: out.append(
            m["content"].get("text", "")) if m["msg_type"] == "stream" else None)
        if reply["content"]["status"] != "ok":
            raise SystemExit(f"the load failed in the kernel: {reply['content'].get('evalue')}")
        return json.loads("".join(out).strip().splitlines()[-1])
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def failure_to_kernel(bench: Bench, store: str, address: str, s3: dict, repeat: int) -> dict:
    nb = failing_notebook(bench.root)
    cmd = bench.jupyter_flow("run", str(nb), "--executor", "dask", "--scheduler", address, "--store", store,
                             "--no-cache", "--quiet")
    proc = subprocess.run(cmd, cwd=bench.root, env=user_env(bench, "ann", s3), capture_output=True, text=True)
    if proc.returncode != 1:
        raise SystemExit(f"ann's failing run exited {proc.returncode}: {proc.stderr[-2000:]}")
    listing = subprocess.run(bench.jupyter_flow("runs", "--all-users", "--format", "json", "--store", store),
                             env=user_env(bench, "bob", s3), capture_output=True, text=True, check=True)
    run = next(r for r in json.loads(listing.stdout) if r["flow"] == "fit")
    from jupyter_flow.readers import client  # here: bench start-up does not need it
    from jupyter_flow.store import layout

    failure = client.task_artifacts(store, run["id"], "fit")["failure"]
    if not failure or "big" not in failure["variables"]:
        task = client.read_task(store, run["id"], "fit")
        raise SystemExit(f"ann's failure left no snapshot of `big`: {task.get('error')} {task.get('failure')}")
    digest = failure["variables"]["big"]["hash"]
    key = f"store/{layout.blob(digest)}"
    bob = user_env(bench, "bob", s3)
    warm = "import json, time, jupyter_flow"
    loads, stages = [], []
    for _ in range(repeat):
        loads.append(in_kernel(bob, LOAD.format(run=run["id"], store=store, key=key), warm))
        stages.append(in_kernel(bob, STAGES.format(run=run["id"], store=store, blob=layout.blob(digest),
                                                   digest=digest), warm))
    assert len({round(x["checksum"], 3) for x in loads}) == 1 and loads[0]["mb"] == SNAPSHOT_MB
    return {"seconds": statistics.median(x["seconds"] for x in loads), "all": [x["seconds"] for x in loads],
            "mb": loads[0]["mb"], "get": statistics.median(x["get"] for x in loads), "blob_mb": loads[0]["raw_mb"],
            "stages": {name: statistics.median(x[name] for x in stages) for name in stages[0]}}


def main() -> None:
    p = arg_parser(__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=3.0, help="how long the 3 users start runs (default 3)")
    p.add_argument("--load-only", action="store_true", help="measure only the failure-to-variables time")
    p.set_defaults(repeat=5, warmup=0)
    args = finish_args(p.parse_args())
    if args.quick:
        args.minutes, args.repeat = 1.0, 2
    with Bench(args) as bench, s3_bucket(bench.root / "moto", "team") as (s3, _):
        store = "s3://team/store"
        with dask_cluster(bench.root / "dask", workers=2, nthreads=1, env={**bench.env, **s3}) as address:
            rows = []
            if not args.load_only:
                rate = runs_per_minute(bench, store, address, s3, args.minutes)
                print(f"runs started per minute: {rate}", file=sys.stderr, flush=True)
                rows += [["users starting runs at once", len(USERS)],
                         ["runs started per minute (all users)", round(rate["per_minute"], 1)],
                         ["runs (of which failed by design)",
                          f"{rate['runs']} ({rate['failed']}) in {rate['minutes']:.1f} min"],
                         ["one run, whole command (median s)", round(rate["median_wall"], 2)]]
            before = os.getloadavg()[0]
            load = failure_to_kernel(bench, store, address, s3, args.repeat)
            during = f"{before:.1f}-{os.getloadavg()[0]:.1f}"
        rows += [[f"colleague's failure -> its {load['mb']:.0f} MB variable in my kernel (median s)",
                  round(load["seconds"], 2)],
                 ["loads (s)", " ".join(f"{s:.2f}" for s in load["all"])],
                 [f"the same blob ({load['blob_mb']:.0f} MB), one plain boto3 GET in that kernel (median s)",
                  round(load["get"], 2)],
                 *[[f"  stage: {name} (median s)", round(sec, 3)] for name, sec in load["stages"].items()],
                 ["load average (1 min) before and after the loads", during]]
        print(markdown_table(
            f"A team on one S3 store (moto on loopback), Dask executor (2 workers), {os.cpu_count()} cores",
            ["measure", "value"], rows))


if __name__ == "__main__":
    main()
