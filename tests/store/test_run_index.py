"""The run index (records.RunIndex) never hides or misreports a run, whatever happened to it: runners
killed between writes, listings racing each other (a lost update is an older copy of an index file),
index files truncated, corrupted, deleted or restored from long ago, runs deleted. Every listing is
checked against what each run's run.json says."""
import json
import os
import shutil
import tempfile
import threading
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jupyter_flow.store import layout, open_store, records
from jupyter_flow.store.records import RunRecord
from jupyter_flow.store.status import Status

FLOWS = ("f", "g")
USERS = ("ann", "bob")
FINISHED = ("succeeded", "failed", "cancelled")


def run_id(n: int) -> str:
    # two or three runs per hour, so runs share index files and listings cross hours
    return f"{datetime(2026, 1, 1) + timedelta(minutes=25 * n):%Y%m%dT%H%M%S}-{n:06x}"


def record(n: int, status: str, beat: int) -> dict:
    return {"id": run_id(n), "flow": FLOWS[n % 2], "status": status, "user": USERS[n % 3 % 2],
            "host": "elsewhere", "created": f"2026-01-01T00:00:{n:02d}+00:00",
            "heartbeat": datetime.now(timezone.utc).isoformat(), "parameters": {"n": n, "beat": beat},
            "steps": [{"name": "a"}], "batch": {"id": "b1", "index": n} if n % 4 == 0 else None}


def truth(model: dict, flow=None, user=None, status=None, batch=None) -> list[dict]:
    """What a listing must show: every run's last completed write, read back like run.json."""
    out = []
    for n, last in sorted(model.items(), key=lambda kv: run_id(kv[0]), reverse=True):
        if last is None:
            continue  # deleted
        run = (RunRecord(id=run_id(n), flow=FLOWS[n % 2], status=Status.DAMAGED) if last == "torn"
               else RunRecord.from_dict(last)).with_effective_status()
        if flow and run.flow != flow or status and run.status != status:
            continue
        if user and run.user != user and run.status != Status.DAMAGED:
            continue
        if batch and (run.extra.get("batch") or {}).get("id") != batch:
            continue
        out.append(run)
    return out


def summary(runs) -> list[tuple]:
    """What a user sees of each run: the damaged ones by id and status (their message names the error)."""
    return [(r.id, str(r.status)) if r.status == Status.DAMAGED else r.to_dict() for r in runs]


def index_keys(store) -> list[str]:
    """The index files and their summaries: what the damage below may hit, or bring back from long ago."""
    return store.glob(layout.index_chunks()) + store.glob(layout.index_summaries())


writer = st.integers(0, 4)
operation = st.one_of(
    st.tuples(st.just("beat"), writer),
    st.tuples(st.just("finish"), writer, st.sampled_from(FINISHED)),
    st.tuples(st.just("torn"), writer),  # a run.json write cut short where renames are not atomic
    st.tuples(st.just("delete"), writer),  # gc
    st.tuples(st.just("list"), st.sampled_from((None,) + FLOWS), st.sampled_from((None,) + USERS),
              st.sampled_from((None, "running", "succeeded", "failed", "damaged")),
              st.sampled_from((None, "b1")), st.sampled_from((None, 1, 3))),
    st.tuples(st.just("damage"), st.integers(0, 10**6), st.sampled_from(("truncate", "flip", "delete", "old", "junk"))),
    st.tuples(st.just("snapshot"),),
    st.tuples(st.just("fsck"),),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, min_size=5, max_size=50))
def test_listings_match_the_run_records_whatever_happens(ops):
    root = tempfile.mkdtemp()
    try:
        store = open_store(root)
        model: dict[int, object] = {}  # writer -> its run's last completed run.json write (None: deleted)
        finished, snapshots, beats = set(), [], 0
        for op in ops:
            kind = op[0]
            if kind in ("beat", "finish", "torn", "delete"):
                n = op[1]
                if (n in model and model[n] is None) or (n in finished and kind != "delete"):
                    continue  # a deleted run is gone; a finished run's record is never written again
                if kind == "delete":
                    records.remove_runs(store, [RunRecord(id=run_id(n), flow=FLOWS[n % 2])])  # as gc does
                    model[n] = None
                elif kind == "torn":
                    if not model.get(n):  # a runner killed in its first write: it had checked the run ledger
                        records.admit_run(store, FLOWS[n % 2], run_id(n))
                    data = store.read_bytes(layout.run_json(FLOWS[n % 2], run_id(n))) if model.get(n) else b"{}"
                    store.write_bytes(layout.run_json(FLOWS[n % 2], run_id(n)), data[: len(data) // 2])
                    model[n], _ = "torn", finished.add(n)  # never repaired by its (killed) writer
                else:
                    beats += 1
                    rec = record(n, "running" if kind == "beat" else op[2], beats)
                    records.write_run(store, rec)
                    model[n] = rec
                    if kind == "finish":
                        finished.add(n)
            elif kind == "list":
                _, flow, user, status, batch, limit = op
                got = records.list_runs(store, flow=flow, user=user, status=status, batch=batch, limit=limit)
                want = truth(model, flow, user, status, batch)
                assert summary(got) == summary(want[:limit] if limit else want), op
            elif kind == "snapshot":  # (not of the run ledgers: only compare-and-swap writes them, never a stale copy)
                snapshots += [(k, store.read_bytes(k)) for k in index_keys(store)]
            elif kind == "fsck":
                records.rebuild_index(store)
            else:
                _, pick, how = op
                keys = index_keys(store) + store.glob(layout.index_ledgers())
                if how == "old" and snapshots:
                    key, data = snapshots[pick % len(snapshots)]
                    store.write_bytes(key, data)
                elif how == "junk" and model:
                    store.write_bytes(layout.index_chunk("f", run_id(pick % 5)), b"not an index")
                elif keys:
                    key = keys[pick % len(keys)]
                    data = store.read_bytes(key)
                    if how == "delete":
                        store.delete(key)
                    elif how == "truncate":
                        store.write_bytes(key, data[: pick % max(len(data), 1)])
                    elif data:
                        i = pick * 7919 % len(data)  # spread: small picks would all hit the digest line
                        # (a run ledger's byte set, not flipped: flipped twice, it would be its copy from before)
                        byte = ord("~") if key.endswith("/runs") else data[i] ^ 0x20
                        store.write_bytes(key, data[:i] + bytes([byte]) + data[i + 1:])
        assert summary(records.list_runs(store)) == summary(truth(model))
        records.rebuild_index(store)
        assert summary(records.list_runs(store)) == summary(truth(model))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_listing_reads_the_index_not_every_run_and_fsck_rebuilds_it(tmp_path, monkeypatch):
    from jupyter_flow.store import fsck

    store = open_store(str(tmp_path))
    for n in range(600):
        records.write_run(store, record(n, FINISHED[n % 3], 0))
    assert len(records.list_runs(store, flow="f")) == 300  # reads every run.json, fills the index
    reads = []
    real_read = store.backend.read
    monkeypatch.setattr(store.backend, "read", lambda key: reads.append(key) or real_read(key))
    newest = records.list_runs(store, flow="f", limit=50)
    assert [r.id for r in newest] == [run_id(n) for n in range(598, 498, -2)]
    assert reads[0] == layout.index_ledger("f"), reads  # which runs exist: the run ledger, not every folder
    assert len(reads) <= 3 and all("/index/" in k for k in reads), reads  # one or two files, not 50 (no summary)
    monkeypatch.undo()

    # the index trusts a finished run's copy: damage to run.json after it finished is fsck's to find
    store.write_bytes(layout.run_json("f", run_id(598)), b'{"id": ')
    for key in store.glob(layout.index_chunks())[:3]:
        store.delete(key)
    report = fsck.check(store)
    assert [d["run"] for d in report["damaged"]] == [run_id(598)]
    assert records.list_runs(store, flow="f", limit=1)[0].status == Status.DAMAGED
    assert len(store.glob(layout.index_chunks())) == 4  # 299 and 300 finished runs: two files a flow
    assert summary(records.list_runs(store)) == summary(records.rebuild_index(store, write=False))


def test_runners_and_listings_at_once(tmp_path):
    """Eight runners (of two users) each start and finish runs while two listings run in a loop, by
    turns unfiltered and filtered by user and status (those read and write the index summaries): every
    listing shows every run of its filter that had finished before it began, exactly as its run.json
    says, and nothing else."""
    store = open_store(str(tmp_path))
    done: dict[str, dict] = {}
    lock, stop, errors = threading.Lock(), threading.Event(), []

    def runner(w):
        for i in range(15):
            n = w * 100 + i
            records.write_run(store, record(n, "running", 0))
            rec = record(n, FINISHED[n % 3], 1)
            records.write_run(store, rec)
            with lock:
                done[rec["id"]] = rec

    def lister(turn=0):
        filters = [{}, {"user": "ann"}, {"status": "failed"}, {"user": "bob", "status": "succeeded"}]
        while not stop.is_set():
            f, turn = filters[turn % len(filters)], turn + 1
            with lock:
                before = {i: rec for i, rec in dict(done).items()
                          if all(rec[name] == value for name, value in f.items())}
            try:
                shown = {r.id: r for r in records.list_runs(store, **f)}
                for rid, rec in before.items():
                    assert shown[rid].to_dict() == RunRecord.from_dict(rec).to_dict(), f
                for r in shown.values():
                    assert r.status in (Status.RUNNING, *FINISHED)
                    assert all(r[name] == value for name, value in f.items()), (f, r)
            except Exception as e:  # noqa: BLE001 - reported by the test thread
                errors.append(e)
                return

    threads = [threading.Thread(target=runner, args=(w,)) for w in range(8)]
    listers = [threading.Thread(target=lister) for _ in range(2)]
    for t in threads + listers:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    for t in listers:
        t.join()
    assert not errors, errors[0]
    shown = records.list_runs(store)
    assert len(shown) == 120 and all(r.to_dict() == RunRecord.from_dict(done[r.id]).to_dict() for r in shown)


def write_mixed_runs(store, count: int = 40) -> None:
    """Finished runs of two flows and users, one still running (elsewhere, beating), one damaged."""
    for n in range(count):
        records.write_run(store, record(n, "running" if n == count - 3 else FINISHED[n % 3], 0))
    records.admit_run(store, "f", run_id(count))
    store.write_bytes(layout.run_json("f", run_id(count)), b'{"id": "torn')


def test_runs_output_is_the_same_from_the_index_as_from_the_records(tmp_path):
    """`jupyter flow runs`, table and JSON: the first listing reads every run.json and writes the
    index, the next ones read the index; users see the same either way."""
    from conftest import cli

    store = open_store(str(tmp_path / "store"))
    write_mixed_runs(store)
    commands = [("runs", "--all-users", "--limit", "0", "--format", "json"), ("runs", "--flow", "f", "--all-users"),
                ("runs", "--status", "failed", "--all-users", "--format", "json"), ("runs", "--user", "bob")]
    for args in commands:
        shutil.rmtree(tmp_path / "store" / "flows" / "f" / "index", ignore_errors=True)
        shutil.rmtree(tmp_path / "store" / "flows" / "g" / "index", ignore_errors=True)
        first = cli(*args, "--store", store.url, check=0).stdout
        assert store.glob(layout.index_chunks()), "the first listing wrote the index"
        assert cli(*args, "--store", store.url, check=0).stdout == first, args
    shown = json.loads(cli("runs", "--all-users", "--limit", "0", "--format", "json", "--store", store.url).stdout)
    truth = records.rebuild_index(store, write=False)  # every run.json read
    assert [(r["id"], r["status"]) for r in shown] == [(r.id, str(r.status)) for r in truth]


def test_a_listing_killed_while_it_writes_the_index_leaves_listings_right(tmp_path):
    """kill -9 a process that keeps listing (and so writing the index) while runs end, at several
    points; every listing after that still matches the run records, and fsck clears its temp files."""
    import signal
    import subprocess
    import sys

    from conftest import wait_for

    from jupyter_flow.store import fsck

    store = open_store(str(tmp_path))
    lister = ("import sys; from jupyter_flow.store import open_store, records\n"
              "s = open_store(sys.argv[1])\nwhile True: records.list_runs(s)\n")
    n = 0
    for _ in range(3):
        records.write_run(store, record(n, FINISHED[n % 3], 0))
        n += 1
        proc = subprocess.Popen([sys.executable, "-c", lister, str(tmp_path)], env={**os.environ})
        try:
            wait_for(lambda p=proc: p.poll() is not None or store.glob(layout.index_chunks()), what="an index file")
            for _ in range(40):  # runs end while it lists
                records.write_run(store, record(n, FINISHED[n % 3], 0))
                n += 1
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert summary(records.list_runs(store)) == summary(records.rebuild_index(store, write=False))
    fsck.check(store)
    assert summary(records.list_runs(store)) == summary(records.rebuild_index(store, write=False))


# -- the index summary: a filtered listing reads only the runs that can match ----------------------
TEAM = ("ann", "bob", "cy", "dee", None)  # None: a run recorded without a user
KINDS = FINISHED + ("running", "torn")


def from_records(store, flow=None, user=None, status=None) -> list[RunRecord]:
    """The listing computed from every run.json alone (no index, no summary), filtered by the rules users see."""
    return [r for r in records.rebuild_index(store, write=False)
            if (not flow or r.flow == flow) and (not status or r.status == status)
            and (not user or r.user == user or r.status == Status.DAMAGED)]


def write_team_run(store, n: int, user, kind: str) -> None:
    if kind == "torn":
        records.admit_run(store, FLOWS[n % 2], run_id(n))  # a runner killed in its first write of run.json
        store.write_bytes(layout.run_json(FLOWS[n % 2], run_id(n)), b'{"id": "torn')
    else:
        records.write_run(store, dict(record(n, kind, 0), user=user))


team_run = st.tuples(st.sampled_from(TEAM), st.sampled_from(KINDS))
team_listing = st.tuples(st.sampled_from((None,) + FLOWS), st.sampled_from((None, "ann", "bob", "dee", "eve")),
                         st.sampled_from((None, "running", "damaged") + FINISHED), st.sampled_from((None, 1, 4)),
                         st.one_of(st.none(), st.integers(0, 72)))  # a cursor: the runs older than run n
SUMMARY_FATES = ("kept", "stale", "gone", "damaged", "without copies", "copies not of their group", "copies of others")


def summary_meets(store, fate: str, stale: dict) -> None:
    """What may become of each flow's summary (its copies included) after listings wrote it: a racing listing's
    older copy (`stale`: {key: bytes}), gone, damaged, from an older version (no copies), copies that are
    not of the runs' group (user, status) or not of the run named."""
    for flow in FLOWS:
        key = layout.index_summary(flow)
        if fate == "stale" and key in stale:
            store.write_bytes(key, stale[key])
        elif fate in ("gone", "damaged") and store.exists(key):
            store.delete(key) if fate == "gone" else store.write_bytes(key, b"0123\n{}")
        elif fate not in ("kept", "stale") and store.exists(key):
            body = json.loads(store.read_bytes(key).partition(b"\n")[2])
            copies = json.loads(body.pop("records"))
            if fate == "copies not of their group":
                body["records"] = json.dumps({i: {**r, "status": "failed" if r["status"] != "failed" else "succeeded",
                                                  "parameters": "forged"} for i, r in copies.items()})
            elif fate == "copies of others":
                ids = sorted(copies)
                body["records"] = json.dumps({i: {**copies[j], "parameters": "forged"}
                                              for i, j in zip(ids, ids[1:] + ids[:1]) if i != j})
            store.write_bytes(key, records._digested(body))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=st.lists(team_run, max_size=50), after=st.lists(st.tuples(st.integers(0, 70), team_run), max_size=15),
       listings=st.lists(team_listing, min_size=1, max_size=6), chunk=st.sampled_from((3, 8, 256)),
       dense=st.sampled_from((1, 2, 32)), fill=st.sampled_from(("fsck", "listing", "none")),
       copy_below=st.sampled_from((0, 4, 1000)), fate=st.sampled_from(SUMMARY_FATES))
def test_filtered_listings_through_summaries_equal_the_listings_from_the_records(before, after, listings, chunk,
                                                                                  dense, fill, copy_below, fate):
    """Random runs of random users and statuses; the index and its summaries filled (by fsck, or by
    listings) or not, copying the records of no group, of small ones or of all; then runs written after
    the summaries were (new ones, running ones that end: the summaries are stale), and the summaries
    kept, replaced by an older copy, deleted, damaged or holding wrong copies. Every filtered, limited
    listing, from any cursor, equals the one computed from run.json."""
    from unittest import mock

    root = tempfile.mkdtemp()
    try:
        store = open_store(root)
        with mock.patch.object(records.RunIndex, "CHUNK", chunk), mock.patch.object(records.RunIndex, "DENSE", dense), \
                mock.patch.object(records.RunIndex, "COPY_BELOW", copy_below):
            kinds = {}
            for n, (user, kind) in enumerate(before):
                write_team_run(store, n, user, kind)
                kinds[n] = (user, kind)
            if fill == "fsck":
                records.rebuild_index(store)
            elif fill == "listing":
                records.list_runs(store)
                records.list_runs(store, user="ann")
            if fill != "none" and any(k in FINISHED for _, k in kinds.values()):
                assert store.glob(layout.index_summaries()), "the index has its summaries"
            stale = {k: store.read_bytes(k) for k in store.glob(layout.index_summaries())}
            for n, (user, kind) in after:
                if n in kinds and kinds[n][1] != "running":
                    continue  # a finished run's record is never written again; a torn one is its killed writer's
                user = kinds[n][0] if n in kinds else user
                write_team_run(store, n, user, kind)
                kinds[n] = (user, kind)
            if fill == "listing":
                records.list_runs(store, status="failed")  # the summaries learn the runs that ended
            summary_meets(store, fate, stale)
            for flow, user, status, limit, older in listings:
                cursor = None if older is None else run_id(older)
                got = records.list_runs(store, flow=flow, user=user, status=status, limit=limit, before=cursor)
                want = [r for r in from_records(store, flow, user, status) if cursor is None or r.id < cursor]
                assert summary(got) == summary(want[:limit] if limit else want), (flow, user, status, limit, cursor)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_stale_missing_or_damaged_summary_never_hides_a_run_nor_shows_one_gc_removed(tmp_path):
    """A listing that raced ours wrote a summary from before the newest runs ended (a lost update):
    they are still listed, and the next filtered listing puts them into the summary. A summary
    naming runs gc has since removed lists none of them; a missing or damaged one lists the same."""
    from jupyter_flow.store import gc

    store = open_store(str(tmp_path))
    for n in range(60):
        write_team_run(store, n, TEAM[n % 4], FINISHED[n % 3])
    write_team_run(store, 60, "ann", "running")
    records.rebuild_index(store)
    key = layout.index_summary("f")
    stale = store.read_bytes(key)
    write_team_run(store, 60, "ann", "failed")  # the running one ends
    for n in range(62, 80, 2):  # and new ones of flow f, some ann's and failed
        write_team_run(store, n, "ann" if n % 4 else "bob", "failed" if n % 3 else "succeeded")
    filters = [dict(flow="f", user="ann", status="failed"), dict(user="ann"), dict(status="failed"),
               dict(flow="f", user="bob", status="succeeded", limit=2), dict(user="eve")]

    def check():
        for f in filters:
            want = from_records(store, f.get("flow"), f.get("user"), f.get("status"))
            assert summary(records.list_runs(store, **f)) == summary(want[:f.get("limit")]), f

    check()  # fills the summary with the new runs ...
    assert all(records.RunIndex(store).fact("f", run_id(n)) for n in range(60, 80, 2))
    store.write_bytes(key, stale)  # ... which a racing listing overwrote with its older copy
    assert records.RunIndex(store).fact("f", run_id(60)) is None
    check()
    assert records.RunIndex(store).fact("f", run_id(60))[1:] == ("ann", "failed"), "the next listing adds it back"

    report = gc.collect(store, keep=2, all_users=True)
    assert len(report["runs"]) > 30
    store.write_bytes(key, stale)  # names runs gc removed
    check()
    store.delete(key)
    check()
    store.write_bytes(key, b"0123\n{}")  # its digest does not match
    check()
    store.write_bytes(key, stale[:-40])  # cut short
    check()


def test_a_rare_filter_reads_the_summary_alone_not_every_index_file(tmp_path, monkeypatch):
    """2,600 runs by 20 users taking turns (7 runs each), one in 13 failed: one user's failed runs are
    spread over every index file. Their listing reads the ledger and the summary (which copies the
    records of each file's rare groups), no run.json; a listing of everyone's runs reads one or two
    index files (the newest holds 40 runs) and no summary. A summary without the copies (written by an
    older version) costs their run.json files once: that listing writes them into the summary."""
    store = open_store(str(tmp_path))
    for n in range(2600):
        records.write_run(store, dict(record(2 * n, "failed" if n % 13 == 0 else "succeeded", 0),
                                      user=f"user{n // 7 % 20:02d}"))
    records.rebuild_index(store)
    assert len(store.glob(layout.index_chunks("f"))) == 11
    rare = from_records(store, "f", "user07", "failed")
    assert 5 < len(rare) < 51
    reads = []
    real_read = store.backend.read
    monkeypatch.setattr(store.backend, "read", lambda key: reads.append(key) or real_read(key))
    assert summary(records.list_runs(store, flow="f", user="user07", status="failed", limit=51)) == summary(rare)
    assert sorted(reads) == sorted([layout.index_ledger("f"), layout.index_summary("f")]), reads
    key = layout.index_summary("f")
    body = json.loads(store.read_bytes(key).partition(b"\n")[2])
    copies = json.loads(body["records"])
    assert rare[0].id in copies and len(copies) < 2600 / 4  # the rare groups' runs only
    store.write_bytes(key, records._digested({"flow": "f", "files": body["files"]}))  # without copies
    reads.clear()
    assert summary(records.list_runs(store, flow="f", user="user07", status="failed", limit=51)) == summary(rare)
    assert sorted(reads) == sorted([layout.index_ledger("f"), key] + [layout.run_json("f", r.id) for r in rare])
    reads.clear()
    assert summary(records.list_runs(store, flow="f", user="user07", status="failed", limit=51)) == summary(rare)
    assert sorted(reads) == sorted([layout.index_ledger("f"), key]), reads
    reads.clear()
    assert len(records.list_runs(store, flow="f", limit=51)) == 51
    assert reads.pop(0) == layout.index_ledger("f")
    assert 1 <= len(reads) <= 2 and all(k.endswith(".json") and "/index/" in k for k in reads), reads


@pytest.mark.slow
def test_filtered_listings_through_summaries_on_s3(tmp_path, monkeypatch):
    """On S3 (moto on loopback) every read is a request, so a listing reads a run's index file as soon as
    two of its runs are wanted, else their run.json. Listings equal the records whichever it reads, with
    the summary stale or gone."""
    import uuid
    from unittest import mock

    from support.services import s3_bucket

    with s3_bucket(tmp_path, "flows") as _, mock.patch.object(records.RunIndex, "CHUNK", 32):
        store = open_store(f"s3://flows/{uuid.uuid4().hex[:8]}")
        for n in range(200):
            records.write_run(store, dict(record(2 * n, "failed" if n % 13 == 0 else "succeeded", 0),
                                          user=f"user{n // 7 % 10:02d}"))
        records.rebuild_index(store)
        stale = store.read_bytes(layout.index_summary("f"))
        rare, theirs = from_records(store, "f", "user05", "failed"), from_records(store, "f", "user05")
        reads = []
        real_read = store.backend.read
        monkeypatch.setattr(store.backend, "read", lambda key: reads.append(key) or real_read(key))
        assert summary(records.list_runs(store, flow="f", user="user05", status="failed")) == summary(rare) and rare
        assert sorted(reads) == sorted([layout.index_ledger("f"), layout.index_summary("f")]), reads
        reads.clear()
        assert summary(records.list_runs(store, flow="f", user="user05")) == summary(theirs)  # 7 in each of 3 files
        assert len(reads) == 2 + 3 and all("/index/" in k for k in reads), reads  # read whole
        monkeypatch.undo()
        for n in range(200, 230):  # runs the summaries do not know yet
            records.write_run(store, dict(record(2 * n, "failed", 0), user="user03"))
        for key in (None, "stale", "gone"):
            if key == "stale":
                store.write_bytes(layout.index_summary("f"), stale)
            elif key == "gone":
                store.delete(layout.index_summary("f"))
            for f in [dict(user="user03"), dict(user="user03", status="failed", limit=5), dict(status="failed")]:
                want = from_records(store, "f", f.get("user"), f.get("status"))
                assert summary(records.list_runs(store, flow="f", **f)) == summary(want[:f.get("limit")]), (key, f)
                for n in (5, 150, 215):  # the next page after run n, as the sidebar's `older ›` asks for it
                    older = [r for r in want if r.id < run_id(2 * n)]
                    got = records.list_runs(store, flow="f", before=run_id(2 * n), **f)
                    assert summary(got) == summary(older[:f.get("limit")]), (key, f, n)


# -- the run ledger: which runs exist, without listing every run folder ------------------------------
LEDGER_WRITERS = 8  # runs 0-3 have ids from long ago (the ledger covers their time), 4-7 from now (it never does)


def ledger_run_id(n: int, now: datetime) -> str:
    return run_id(n) if n < 4 else f"{layout.time_bound(now - timedelta(seconds=n))}-{n:06x}"


ledger_action = st.one_of(
    st.tuples(st.just("write"), st.integers(0, LEDGER_WRITERS - 1), st.sampled_from(("running",) + FINISHED)),
    st.tuples(st.just("gc"), st.integers(0, LEDGER_WRITERS - 1)),
    st.tuples(st.just("list"), st.sampled_from((None,) + FLOWS), st.sampled_from((None, "running", "failed"))),
    st.tuples(st.just("fsck"),),
)
# where an action runs inside another: when the outer one has just listed run folders (a listing, or the
# ledger moving on between its announcement and its commit), is about to delete a run folder (gc between
# marking its runs and deleting them), or written a run.json (a runner between its write and its second check)
ledger_step = st.tuples(ledger_action, st.sampled_from((None, "listed", "deleting", "written")), ledger_action,
                        st.integers(1, 2))  # at the first such call of the outer action, or the second


def check_ledger_interleavings(store, steps, now: datetime) -> None:
    """Run `steps` (an action, and another run inside it at a point); after each, and at each nested
    listing, every listing equals the truth: the runs whose last write completed and gc has not removed."""
    model: dict[int, dict | None] = {}
    real = {name: getattr(store.backend, name) for name in ("children", "delete", "write")}
    inside: dict[str, object] = {}  # point -> the action to run there (once)
    writing: set[int] = set()

    def due(point) -> bool:
        """Whether this is the call the nested action waits for (its `nth` at that point)."""
        if point not in inside:
            return False
        nested, nth = inside[point]
        inside[point] = (nested, nth - 1)
        return nth <= 1

    def hooked(name, point):
        def call(*args):
            wanted = (name != "children" or args[0].endswith("/runs")) and (
                name != "write" or args[0].endswith("/run.json"))
            if point == "deleting" and wanted and due(point):  # gc has marked the run, its folder is still there
                act(inside.pop(point)[0])
            out = real[name](*args)
            if point != "deleting" and wanted and due(point):
                act(inside.pop(point)[0])
            return out
        return call

    for name, point in (("children", "listed"), ("delete", "deleting"), ("write", "written")):
        setattr(store.backend, name, hooked(name, point))

    def act(action):
        kind = action[0]
        if kind == "write":
            _, n, status = action
            if n in model and (model[n] is None or model[n]["status"] in FINISHED) or n in writing:
                return  # removed, or finished: never written again; one writer per run
            rec = dict(record(n, status, 0), id=ledger_run_id(n, now))
            writing.add(n)
            model[n] = rec  # (what a listing nested in the write, after run.json is written, must show)
            records.write_run(store, rec)
            writing.discard(n)
        elif kind == "gc":
            n = action[1]
            if model.get(n) is None or model[n]["status"] not in FINISHED:
                return  # gc removes finished runs
            model[n] = None  # from here on no listing may show it
            records.remove_runs(store, [RunRecord(id=ledger_run_id(n, now), flow=FLOWS[n % 2])])
        elif kind == "list":
            _, flow, status = action

            def truth():
                want = [RunRecord.from_dict(rec).with_effective_status() for _, rec in
                        sorted(((k, v) for k, v in model.items() if v), key=lambda kv: kv[1]["id"], reverse=True)]
                return summary(r for r in want if (not flow or r.flow == flow) and (not status or r.status == status))

            before = truth()
            got = summary(records.list_runs(store, flow=flow, status=status))
            assert got in (before, truth()), action  # an action nested in the listing: the truth before or after it
        else:
            records.rebuild_index(store)

    for outer, point, nested, nth in steps:
        if point:
            inside[point] = (nested, nth)
        act(outer)
        inside.clear()
        act(("list", None, None))
    for flow in FLOWS:  # what is left in the ledgers: no run gc removed, nothing marked as being removed
        ledger = records._read_ledger(store, flow)[1]
        assert ledger is None or not ledger["gone"] and not set(ledger["ids"]) - set(store.children(
            layout.runs_folder(flow))), ledger


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ledger_step, min_size=3, max_size=25))
# a listing while gc has marked a run it removes and not yet deleted its folder
@example([(("write", 0, "running"), None, ("fsck",), 1), (("write", 4, "succeeded"), None, ("fsck",), 1),
          (("gc", 4), "deleting", ("list", None, None), 1)])
# a runner's first write of a run from long ago while a listing moves the ledger on past it
@example([(("gc", 0), None, ("fsck",), 1), (("write", 0, "running"), None, ("fsck",), 1),
          (("list", "g", None), "listed", ("write", 1, "running"), 2)])
def test_writers_gc_and_listings_interleaved_never_hide_a_run_nor_show_a_removed_one(steps):
    """Runs written (from long ago and from now), removed by gc, listed and fsck'd, each of these also
    inside another one (while a listing moves the ledger on, while gc deletes, while a runner writes),
    the ledger moving on at every listing: every listing equals the runs' records."""
    from unittest import mock

    root = tempfile.mkdtemp()
    try:
        with mock.patch.object(records, "LEDGER_STEP", 1):
            check_ledger_interleavings(open_store(root), steps, datetime.now(timezone.utc))
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_writers_gc_and_listings_interleaved_on_s3(tmp_path):
    """The same on S3 (moto on loopback): the ledger's compare-and-swap is a conditional PUT, the
    listing of the newest folders a ListObjectsV2 with StartAfter."""
    import uuid
    from unittest import mock

    from support.services import s3_bucket

    with s3_bucket(tmp_path, "flows"), mock.patch.object(records, "LEDGER_STEP", 1):
        @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(st.lists(ledger_step, min_size=3, max_size=15))
        def on_s3(steps):
            check_ledger_interleavings(open_store(f"s3://flows/{uuid.uuid4().hex[:8]}"), steps,
                                       datetime.now(timezone.utc))

        on_s3()
