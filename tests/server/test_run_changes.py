"""The live stream's promise (server/live.py RunChanges): replaying what it sent, the whole run
first and then only changes, gives the browser exactly the run as it is now, after any sequence of
changes; and a change carries only the tasks that changed."""
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_flow.server.live import RunChanges
from jupyter_flow.store.status import Status

from .test_live import merge

STEPS = ["load", "train", "score"]
statuses = st.sampled_from([s.value for s in Status])
tasks = st.dictionaries(st.tuples(st.sampled_from(STEPS), st.integers(0, 3)),
                        st.fixed_dictionaries({"status": statuses, "attempt": st.integers(1, 3),
                                               "duration": st.none() | st.floats(0, 10)}), max_size=12)
runs = st.fixed_dictionaries({"status": statuses, "metrics": st.dictionaries(st.sampled_from("ab"), st.integers()),
                              "ended": st.none() | st.just("2026-12-07T12:00:00")},
                             optional={"error": st.just({"step": "train", "index": 0, "message": "x"})})


def as_run(fields: dict, by_key: dict) -> dict:
    order = {s: i for i, s in enumerate(STEPS)}
    ordered = sorted(by_key.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))
    listed = [dict(t, step=step, index=index) for (step, index), t in ordered]
    return {"id": "r1", "steps": [{"name": s} for s in STEPS], **fields, "tasks": listed}


@given(st.lists(st.tuples(runs, tasks), min_size=1, max_size=8))
@settings(deadline=None, max_examples=100)
def test_replaying_the_changes_gives_the_run_as_it_is(states):
    changes, seen, known = RunChanges(), None, {}
    for fields, new_tasks in states:
        known = {**known, **new_tasks}  # tasks are never removed from a run, only added or changed
        run = as_run(fields, known)
        event = changes(run)
        if seen is None:
            assert event == ("run", run)
            seen = run
            continue
        if event is None:
            assert seen == run
            continue
        name, change = event
        assert name == "change"
        before = {(t["step"], t["index"]): t for t in seen["tasks"]}
        assert all(before.get((t["step"], t["index"])) != t for t in change["tasks"])  # only what changed
        seen = merge(seen, change)
        assert seen == run
