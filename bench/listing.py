"""Listing runs with 10,000 runs in the store: `jupyter flow runs --flow F` (the whole command, as a
user types it) and the REST call the sidebar makes (GET /jupyter-flow/api/runs?flow=F&user=ME&limit=50
on a running Jupyter server).

The store is built fast by writing run records directly (90% of them in flow F, a tenth of those
failed). With `--baseline DIR`, the same commands and requests also run against the jupyter_flow
checkout in DIR (say, main before the run index), interleaved with ours so that both see the same
machine load. The first listing of a store without an index reads every run and writes the index:
it is reported on its own row; so is the listing alone, timed inside one process. Each figure comes
as wall clock and as CPU time (of the command, or of the server for the REST call): on a loaded
machine the wall clock mostly measures the wait for a core.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

from common import against_baseline, checkout_env, temp_dir, timed_command

ROOT = Path(__file__).resolve().parent.parent


def build_store(path: Path, count: int) -> None:
    from jupyter_flow.store import open_store, records

    store, user, start = open_store(str(path)), records.current_user(), datetime(2026, 1, 1, tzinfo=timezone.utc)
    for i in range(count):
        t = start + timedelta(seconds=37 * i)
        records.write_run(store, {
            "id": f"{t:%Y%m%dT%H%M%S}-{i:06x}", "flow": "F" if i % 10 else "G",
            "status": "failed" if i % 13 == 0 else "succeeded", "user": user, "host": "bench", "pid": 1,
            "notebook": "/bench/F.ipynb", "notebook_hash": "ab" * 16, "parameters": {"seed": i, "lr": 0.1},
            "created": t.isoformat(), "ended": (t + timedelta(seconds=3)).isoformat(), "duration": 3.0,
            "heartbeat": t.isoformat(), "metrics": {"accuracy": (i % 97) / 97}, "executor": "local",
            "steps": [{"name": f"s{j}", "prev": [f"s{j - 1}"] if j else [], "foreach": None, "options": {}}
                      for j in range(5)]})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Side:
    """One jupyter_flow checkout: its environment, its CLI command and its Jupyter server."""

    def __init__(self, name: str, checkout: Path, store: Path, work: Path):
        self.name, self.store = name, store
        self.env = checkout_env(checkout, work, JUPYTER_FLOW_STORE=str(store))
        self.work = work / name
        self.work.mkdir()
        self.server = None

    def cli(self, *options: str) -> tuple[float, float]:
        return timed_command(["jupyter", "flow", "runs", "--flow", "F", *options, "--store", str(self.store)],
                             self.env)

    def in_process(self, repeat: int) -> tuple[float, float]:
        """(wall, CPU) median seconds of the listing alone, `client.list_runs(flow, user, limit=20)`,
        in a process that has imported this side's jupyter_flow: without the interpreter's start."""
        code = ("import json, statistics, sys, time\nfrom jupyter_flow.readers import client\n"
                "from jupyter_flow.store.records import current_user\nwall, cpu = [], []\n"
                f"for _ in range({repeat}):\n"
                "    w, c = time.perf_counter(), time.process_time()\n"
                "    client.list_runs(sys.argv[1], 'F', user=current_user(), limit=20)\n"
                "    wall.append(time.perf_counter() - w); cpu.append(time.process_time() - c)\n"
                "print(json.dumps([statistics.median(wall), statistics.median(cpu)]))\n")
        out = subprocess.run([sys.executable, "-c", code, str(self.store)], env=self.env, check=True,
                             capture_output=True, text=True).stdout
        return tuple(json.loads(out))

    def start_server(self, tries: int = 5) -> None:
        """A Jupyter server on a free port; another one if that port was taken meanwhile."""
        self.token, runtime = os.urandom(8).hex(), self.work / "runtime"
        self.log = open(self.work / "server.log", "w")  # noqa: SIM115 - closed by stop()
        for _ in range(tries):
            port = free_port()
            self.url = f"http://127.0.0.1:{port}/jupyter-flow/api/runs?flow=F&limit=50&user={_user()}"
            self.server = subprocess.Popen(
                [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", f"--port={port}",
                 "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
                 f"--ServerApp.root_dir={self.work}"],
                env=dict(self.env, JUPYTER_CONFIG_DIR=str(self.work / "config"), JUPYTER_RUNTIME_DIR=str(runtime)),
                stdout=self.log, stderr=subprocess.STDOUT)
            # it writes jpserver-PID.json once it listens: wait for that state, or for it to exit
            while self.server.poll() is None and not (runtime / f"jpserver-{self.server.pid}.json").exists():
                time.sleep(0.1)
            if self.server.poll() is None:
                self.rest()
                return
        raise RuntimeError(f"the {self.name} server did not start; see {self.work / 'server.log'}")

    def rest(self) -> tuple[float, float]:
        """(wall seconds of the request, CPU seconds the server spent on it)."""
        import psutil

        request = urllib.request.Request(self.url, headers={"Authorization": f"token {self.token}"})
        cpu = psutil.Process(self.server.pid).cpu_times()
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as response:
            runs = json.loads(response.read())["runs"]
        elapsed = time.perf_counter() - start
        after = psutil.Process(self.server.pid).cpu_times()
        assert len(runs) == 50, len(runs)
        return elapsed, after.user - cpu.user + after.system - cpu.system

    def stop(self) -> None:
        if self.server is not None:
            self.server.terminate()
            self.server.wait(30)
            self.log.close()


def _user() -> str:
    from jupyter_flow.store.records import current_user

    return current_user()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10_000, help="runs in the store (default 10,000)")
    p.add_argument("--repeat", type=int, default=5, help="timed listings of each kind; the median is reported")
    p.add_argument("--baseline", metavar="DIR", help="also time the jupyter_flow checkout in DIR, interleaved")
    p.add_argument("--tmp", help="parent of the temp dir")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on `kill` too
    sys.path.insert(0, str(ROOT))
    sides = []
    with temp_dir("jf-bench-listing-", args.tmp, args.keep) as root:
        try:
            start = time.perf_counter()
            build_store(root / "store", args.runs)
            print(f"built {args.runs} runs in {time.perf_counter() - start:.1f} s", file=sys.stderr)
            if args.baseline:
                shutil.copytree(root / "store", root / "baseline-store")
                sides.append(Side("baseline", Path(args.baseline).resolve(), root / "baseline-store", root))
            sides.insert(0, Side("jupyter_flow", ROOT, root / "store", root))
            for s in sides:  # warm-up: bytecode written
                timed_command(["jupyter", "flow", "--version"], s.env)
            first = {s.name: s.cli() for s in sides}  # ours writes its index here
            for s in sides:
                s.start_server()
            times: dict[tuple, list] = {}
            for s in sides:
                times[s.name, "in-process"] = [s.in_process(args.repeat)]
            for _ in range(args.repeat):
                for s in sides:
                    times.setdefault((s.name, "cli"), []).append(s.cli())
                    times.setdefault((s.name, "failed"), []).append(s.cli("--status", "failed"))
                    times.setdefault((s.name, "rest"), []).append(s.rest())
        finally:
            for s in sides:
                s.stop()
    base = "baseline" if args.baseline else None
    for i, what in enumerate(("wall clock", "CPU time (user + system)")):
        med = {k: statistics.median(t[i] for t in v) for k, v in times.items()}
        print(against_baseline(f"Listing {args.runs} runs: {what}, median of {args.repeat} (seconds)", [
            ("`jupyter flow runs --flow F` (first, no index yet)", first["jupyter_flow"][i],
             first[base][i] if base else None),
            ("`jupyter flow runs --flow F`", med["jupyter_flow", "cli"], med.get((base, "cli"))),
            ("`jupyter flow runs --flow F --status failed` (1 run in 13)", med["jupyter_flow", "failed"],
             med.get((base, "failed"))),
            ("REST `GET /jupyter-flow/api/runs?flow=F&user=ME&limit=50`", med["jupyter_flow", "rest"],
             med.get((base, "rest"))),
            ("the listing alone, in-process (`client.list_runs(flow=F, user=ME, limit=20)`)",
             med["jupyter_flow", "in-process"], med.get((base, "in-process")))], args.baseline) + "\n")

if __name__ == "__main__":
    main()
