"""A team on one S3 store, at once, with faults (issue 23): moto's S3 server on loopback, three users.

ann and carl are login names; bob is a JupyterHub user (JUPYTERHUB_USER, his login name `jovyan`).
Each starts TEAM_RUNS runs (default 10) of one notebook with `jupyter flow run`, some failing; bob
resumes ann's failures through his Jupyter server (the sidebar's Resume), ann resumes bob's with the
CLI, each in a second terminal while their own runs go on; carl runs `gc --all-users` and `fsck` in
between his runs. Hypothesis deals out the faults: which runs fail, and which runs are killed where:
the runner (and its kernels) or a step's kernel while a chosen step runs, or either one while the
step's 160 MiB output is uploaded in parts (an S3 multipart upload with parts already stored).

Kill points are states, never durations: a step told to `hold` marks that it got there and waits
for ever; an upload is caught by asking the S3 server for multipart uploads in progress.

After it: every run started is listed, to every user (CLI and sidebar), with its user and its true
status (or was deleted by gc as gc may: an unpinned run nobody resumed from, with `keep` newer runs
of its user); `fsck` is clean and every value a listed run references is there and intact; every
resume succeeded, with the value a clean run gives.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
from conftest import cli, tagged_notebook, wait_for
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from support.services import free_port, s3_bucket

from jupyter_flow.errors import NotFound
from jupyter_flow.store import blobs, layout, open_store, records

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

USERS = ("ann", "bob", "carl")
RESUMER = {"ann": "bob", "bob": "ann"}  # whose failures each resumes (carl's stay as they ended)
STEPS = ("make", "measure", "check", "tail")
RUNS = int(os.environ.get("TEAM_RUNS", "10"))  # per user
KEEP = 3  # carl's `gc --keep`
MULTIPART = 160 << 20  # s3fs uploads a file of 2 x 50 MiB or more in 50 MiB parts
FINAL = {"succeeded", "failed", "crashed", "cancelled"}
FIGURES: dict = {}


def user_env(name: str) -> dict:
    env = {"JUPYTER_FLOW_AGENT": "0", "USER": name, "LOGNAME": name}
    if name == "bob":
        env.update(JUPYTERHUB_USER="bob", USER="jovyan", LOGNAME="jovyan")
    return env


# -- the world: S3, a store, a notebook, each user's Jupyter server ---------------------------------
class Server:
    """`jupyter server` run as one user, with the jupyter_flow extension: the sidebar's REST API."""

    def __init__(self, user: str, base: Path, root: Path, store: str):
        self.user, self.port, self.token = user, free_port(), secrets.token_hex(16)
        folder = base / f"server-{user}"
        folder.mkdir()
        env = {**os.environ, **user_env(user), "JUPYTER_RUNTIME_DIR": str(folder / "runtime"),
               "JUPYTER_CONFIG_DIR": str(folder / "config")}
        if user != "bob":
            env.pop("JUPYTERHUB_USER", None)
        self.log = folder / "server.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", "--ip=127.0.0.1",
             f"--port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={root}", f"--JupyterFlow.store={store}", "--JupyterFlow.max_workers=1"],
            cwd=root, env=env, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)

    def api(self, path: str, method: str = "GET", body=None):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/jupyter-flow/api/{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def up(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.user}'s server exited:\n{self.log.read_text()[-3000:]}")
        try:
            return self.api("version")
        except OSError:
            return None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            kill_family(self.proc.pid)


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    base = tmp_path_factory.mktemp("team")
    with s3_bucket(base / "moto", "team") as (env, endpoint):
        os.environ.pop("JUPYTERHUB_USER", None)
        import boto3

        prefix = "store"
        store = f"s3://team/{prefix}"
        root, gates = base / "project", base / "gates"
        root.mkdir()
        gates.mkdir()
        notebook = tagged_notebook(root, [
            (["parameters"], 'tag = "x"\nsize = 1000\nfail = False\nhold = "none"'),
            (["functions"], ("import pathlib, threading\n\ndef hold_here(step):\n"
                             "    if hold == step:  # a kill point: say so, then wait for the kill\n"
                             f"        pathlib.Path({str(gates)!r}, f'{{tag}}.{{step}}').touch()\n"
                             "        threading.Event().wait()")),
            (["step:make"], 'hold_here("make")\nbig = (tag.encode() * (size // len(tag) + 1))[:size]'),
            (["step:measure"], 'hold_here("measure")\nn = len(big)'),
            (["step:check"], 'hold_here("check")\nif fail:\n    raise ValueError(f"{tag} fails")\nm = n + 1'),
            (["step:tail"], 'hold_here("tail")\ntail = (big[-10:], m)'),
        ])
        servers = {u: Server(u, base, root, store) for u in USERS}
        try:
            for server in servers.values():
                info = wait_for(server.up, timeout=120, what=f"{server.user}'s jupyter server")
                assert info["user"] == server.user and not info["read_only"], info
            yield {"store": store, "prefix": prefix, "notebook": notebook, "gates": gates, "servers": servers,
                   "s3": boto3.client("s3", endpoint_url=endpoint), "env": env}
        finally:
            for server in servers.values():
                server.stop()
            print("\nteam test figures:", FIGURES)


# -- faults ---------------------------------------------------------------------------------------
def kill_family(pid: int) -> None:
    """SIGKILL a process and everything it started (kernels run in sessions of their own)."""
    try:
        family = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def kernel_of(store, run_id: str, step: str) -> int | None:
    """The kernel pid recorded by the task of `step` while it runs."""
    run = records.find_run(store, run_id)
    task = next((t for t in records.list_tasks(store, run) if t.step == step), None)
    return task.kernel_pid if task and task.status == "running" else None


def uploading_in_parts(s3, key: str) -> bool:
    """Whether a multipart upload of `key` is under way with at least one of its parts stored."""
    for upload in s3.list_multipart_uploads(Bucket="team", Prefix=key).get("Uploads", []):
        if s3.list_parts(Bucket="team", Key=key, UploadId=upload["UploadId"]).get("Parts"):
            return True
    return False


def unfinished_uploads(s3) -> set[str]:
    return {u["Key"] for u in s3.list_multipart_uploads(Bucket="team").get("Uploads", [])}


# -- hypothesis' plan -----------------------------------------------------------------------------
FAULTS = st.one_of(
    st.tuples(st.sampled_from(["runner", "kernel"]), st.sampled_from(STEPS)),  # kill it while STEP runs
    st.tuples(st.just("upload"), st.sampled_from(["kernel", "runner"])),  # kill it mid-multipart
)


@st.composite
def plans(draw):
    """{user: [what happens to each of their runs]}: "ok", "fail", or a fault; every kind of fault and
    a failure of ann's and bob's at least once, dealt out over all runs in an order hypothesis picks."""
    events = ([draw(st.tuples(st.just(kind), FAULTS.filter(lambda f, k=kind: f[0] == k)))[1]
               for kind in ("runner", "kernel", "upload")]
              + [draw(FAULTS) for _ in range(draw(st.integers(0, 2)))] + ["fail"] * 4)
    events += ["ok"] * (len(USERS) * RUNS - len(events))
    order = draw(st.permutations(range(len(events))))
    dealt = [events[i] for i in order]
    plan = {u: dealt[i * RUNS:(i + 1) * RUNS] for i, u in enumerate(USERS)}
    for user in RESUMER:  # a failure of each resumer's colleague
        if all(e == "ok" for e in plan[user]):
            plan[user][draw(st.integers(0, RUNS - 1))] = "fail"
    gc_at = sorted(draw(st.sets(st.integers(0, RUNS - 1), min_size=2, max_size=3)))
    return plan, gc_at


# -- the team at work -----------------------------------------------------------------------------
class Team:
    def __init__(self, world: dict, example: str):
        self.world, self.example = world, example
        self.store = open_store(world["store"])
        self.started: dict[str, dict] = {}  # tag -> what happened to that run
        self.resumes: list[dict] = []
        self.inbox = {u: queue.Queue() for u in RESUMER}  # failures for a resumer to pick up
        self.resumed = {}  # failed run id -> threading.Event set once its resume run exists
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []
        self.upload_keys: set[str] = set()  # blobs whose upload was killed mid-multipart

    def run_id(self, tag: str, runner: subprocess.Popen | None = None) -> str:
        """The id of the run `tag` (its first, not a resume); `runner`: the command that starts it, which
        must not exit without one."""
        def find():
            return next((r.id for r in records.list_runs(self.store)
                         if r.parameters.get("tag") == tag and not r.origin_run), None)

        found = wait_for(lambda: find() or (runner is not None and runner.poll() is not None),
                         timeout=300, what=f"the run record of {tag}")
        if found is True:  # the runner exited: its run is there, or never will be
            found = find()
            if found is None:
                _, err = runner.communicate()
                raise AssertionError(f"{tag}: `jupyter flow run` exited {runner.returncode} without a run: "
                                     f"{err[-2000:]}")
        return found

    def start(self, user: str, i: int, event) -> None:
        """One `jupyter flow run` of `user`, with `event` (ok, fail, or a fault) happening to it."""
        tag = f"{self.example}-{user}-{i}"
        fault = event if isinstance(event, tuple) else None
        params = {"tag": tag, "fail": event == "fail", "hold": fault[1] if fault and fault[0] != "upload" else "none",
                  "size": MULTIPART if fault and fault[0] == "upload" else 1000}
        args = [a for k, v in params.items() for a in ("-p", k, str(v))]
        runner = subprocess.Popen(["jupyter", "flow", "run", str(self.world["notebook"]), *args, "--no-cache",
                                   "--quiet", "--store", self.world["store"]],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                                  env={**os.environ, **user_env(user)})
        landed = None
        if fault:
            kind, where = fault
            if kind == "upload":  # the kernel of `make` uploads `big`, under a key known from its bytes
                key = f"{self.world['prefix']}/{layout.blob(blobs.hash_value(big_value(tag, MULTIPART)))}"
                wait_for(lambda: uploading_in_parts(self.world["s3"], key) or runner.poll() is not None,
                         timeout=300, what=f"{tag}'s upload")
                landed, step, victim = runner.poll() is None, "make", where
                self.upload_keys.add(key)
            else:
                marker = self.world["gates"] / f"{tag}.{where}"
                wait_for(lambda: marker.exists() or runner.poll() is not None, timeout=300, what=f"{tag} at {where}")
                landed, step, victim = marker.exists(), where, kind
            if landed and victim == "runner":
                kill_family(runner.pid)
            elif landed:
                os.kill(kernel_of(self.store, self.run_id(tag, runner), step), signal.SIGKILL)
        run_id = self.run_id(tag, runner)
        out, err = runner.communicate(timeout=600)
        with self.lock:
            self.started[tag] = {"user": user, "id": run_id, "event": event, "landed": landed,
                                 "exit": runner.returncode, "stderr": err[-2000:]}
        if landed is False:
            raise AssertionError(f"{tag}: the run ended before its kill point {fault}: {err[-500:]}")
        if user in RESUMER and event != "ok":  # a colleague picks it up; go on once they have resumed it
            self.resumed[run_id] = threading.Event()
            self.inbox[RESUMER[user]].put(run_id)
            assert self.resumed[run_id].wait(600), f"nobody resumed {run_id}"

    def work(self, user: str, plan: list, gc_at: list) -> None:
        for i, event in enumerate(plan):
            if user == "carl" and i in gc_at:
                self.collect()
            self.start(user, i, event)
        if user == "carl":
            self.collect()

    def collect(self) -> None:
        """carl cleans up everyone's runs, then checks the store, while the others work."""
        env = user_env("carl")
        gc = cli("gc", "--keep", KEEP, "--all-users", "--store", self.world["store"], env=env, check=0)
        fsck = cli("fsck", "--store", self.world["store"], env=env)
        FIGURES.setdefault("gc", []).append(gc.stdout.strip())
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr

    def resume(self, resumer: str) -> None:
        """`resumer` resumes each failure of their colleague as it comes: bob from his sidebar, ann with the CLI."""
        while (failed := self.inbox[resumer].get()) is not None:
            run_id, said = (self.resume_in_sidebar if resumer == "bob" else self.resume_with_cli)(resumer, failed)
            self.resumes.append({"by": resumer, "origin": failed, "id": run_id, "said": said,
                                 "checked": said == "succeeded" and self.check_resume(run_id, resumer, failed)})

    def check_resume(self, run_id: str, user: str, origin: str) -> bool:
        """The resume as it just ended: its user, its origin, the value a clean run gives. False if
        carl's gc deleted it already (the end of the test checks gc was allowed to)."""
        try:
            run = records.find_run(self.store, run_id)
            tail = records.read_task(self.store, run, "tail")
            value = self.store.load_value(tail.outputs["tail"]["hash"])
        except NotFound:
            return False
        assert run.status == "succeeded" and run.origin_run == origin and run.user == user, run
        tag, size = run.parameters["tag"], run.parameters["size"]
        assert value == (big_value(tag, size)[-10:], size + 1), (run_id, value)
        return True

    def resume_in_sidebar(self, user: str, failed: str) -> tuple[str, str]:
        server = self.world["servers"][user]
        new = server.api(f"runs/{failed}/resume", "POST", {"parameters": {"fail": False, "hold": "none"}})["id"]
        self.resumed[failed].set()
        run = wait_for(lambda: (r := server.api(f"runs/{new}"))["status"] in FINAL and r, timeout=600,
                       what=f"{user}'s resume of {failed}")
        return new, run["status"]

    def resume_with_cli(self, user: str, failed: str) -> tuple[str, str]:
        proc = subprocess.Popen(["jupyter", "flow", "resume", failed, "-p", "fail", "False", "-p", "hold", "none",
                                 "--quiet", "--store", self.world["store"]], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, **user_env(user)})

        def resume_run():
            return next((r.id for r in records.list_runs(self.store) if r.origin_run == failed), None)

        wait_for(lambda: resume_run() or proc.poll() is not None, timeout=300, what=f"{user}'s resume of {failed}")
        self.resumed[failed].set()
        _, err = proc.communicate(timeout=600)
        return resume_run(), "succeeded" if proc.returncode == 0 else f"exit {proc.returncode}: {err[-1000:]}"

    def thread(self, fn, *args) -> threading.Thread:
        def guarded():
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - reported by the test, not lost in a thread
                self.errors.append(e)
                traceback.print_exc()  # at once: hypothesis reports only the example it runs again
                for box in self.inbox.values():
                    box.put(None)
                for event in self.resumed.values():
                    event.set()
        t = threading.Thread(target=guarded, daemon=True)
        t.start()
        return t


# -- the test --------------------------------------------------------------------------------------
def big_value(tag: str, size: int) -> bytes:
    """The value the notebook's `make` step computes."""
    return (tag.encode() * (size // len(tag) + 1))[:size]


def expected_status(event) -> str:
    if event == "ok":
        return "succeeded"
    if event == "fail":
        return "failed"
    kind, where = event
    killed_runner = kind == "runner" or (kind == "upload" and where == "runner")
    return "crashed" if killed_runner else "failed"


@settings(max_examples=int(os.environ.get("TEAM_EXAMPLES", "1")), deadline=None, database=None,
          phases=[Phase.generate], suppress_health_check=list(HealthCheck))
@given(scenario=plans())
def test_a_team_on_one_s3_store_with_faults(team, scenario):
    plan, gc_at = scenario
    t0 = time.monotonic()
    crew = Team(team, uuid.uuid4().hex[:6])
    workers = [crew.thread(crew.work, u, plan[u], gc_at) for u in USERS]
    resumers = [crew.thread(crew.resume, u) for u in RESUMER]
    for t in workers:
        t.join(1200)
    for box in crew.inbox.values():
        box.put(None)
    for t in resumers:
        t.join(1200)
    if crew.errors:
        raise crew.errors[0]
    FIGURES.setdefault("seconds", []).append(round(time.monotonic() - t0))
    FIGURES.setdefault("plan", []).append({u: [e if isinstance(e, str) else ":".join(e) for e in plan[u]]
                                           for u in USERS})

    try:
        check_the_store(team, crew)
    except BaseException:
        traceback.print_exc()  # at once: hypothesis reports only the example it runs again
        raise


def check_the_store(team, crew: Team) -> None:
    # every resume completed, with the value a clean run gives (checked as it ended: gc may delete it later)
    store = crew.store
    assert crew.resumes and all(r["said"] == "succeeded" for r in crew.resumes), crew.resumes
    FIGURES.setdefault("resumes_deleted_before_checked", []).append(sum(not r["checked"] for r in crew.resumes))

    # every run is listed to every user, with its user and its true status, unless gc could delete it
    fsck = cli("fsck", "--store", team["store"], env=user_env("carl"))
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    listings = {u: json.loads(cli("runs", "--all-users", "--limit", 0, "--format", "json", "--store", team["store"],
                                  env=user_env(u), check=0).stdout) for u in USERS}
    sidebars = {u: s.api("runs")["runs"] for u, s in team["servers"].items()}
    truth = {r["id"]: (r["user"], r["status"]) for r in listings["ann"]}
    for u in USERS:
        assert {r["id"]: (r["user"], r["status"]) for r in listings[u]} == truth, u
        assert {r["id"]: (r["user"], r["status"]) for r in sidebars[u]} == truth, u
    ours = {**{s["id"]: (s["user"], expected_status(s["event"])) for s in crew.started.values()},
            **{r["id"]: (r["by"], "succeeded") for r in crew.resumes}}
    origins = {records.find_run(store, i).origin_run for i in truth}
    pinned = records.pins(store)
    gone = []
    for run_id, (user, status) in ours.items():
        if run_id in truth:
            assert truth[run_id] == (user, status), (run_id, truth[run_id], (user, status), crew.started)
        else:  # gc's to delete: not pinned, nobody kept resumed from it, KEEP newer runs of its user
            assert run_id not in pinned and run_id not in origins, run_id
            assert sum(1 for i, (u, _) in ours.items() if u == user and i > run_id) >= KEEP, run_id
            gone.append(run_id)
    assert {r["user"] for r in listings["ann"]} >= set(USERS)  # each sees the others' runs, by name

    # nothing a listed run references is missing or corrupt; killed uploads left no object behind
    for run_id in truth:
        run = records.find_run(store, run_id)
        for task in records.list_tasks(store, run):
            for digest in task.blob_refs():
                store.verify_blob(digest)
    for key in crew.upload_keys:  # no object, or a whole one (the resume stored the value again)
        digest = key.rsplit("/", 1)[-1]
        if store.has_blob(digest):
            store.verify_blob(digest)
    FIGURES.setdefault("deleted_by_gc", []).append(len(gone))
    FIGURES.setdefault("unfinished_multipart_uploads", []).append(len(unfinished_uploads(team["s3"])))
    FIGURES.setdefault("runs", []).append(len(ours))
