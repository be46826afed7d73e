"""Which task record stands when attempts write out of order (records.write_task / supersedes)."""
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_flow.store import layout, open_store, records
from jupyter_flow.store.records import TaskRecord
from jupyter_flow.store.status import TERMINAL, Status

STATUSES = [Status.RUNNING, Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT, Status.CANCELLED]
writes = st.lists(st.tuples(st.integers(1, 4), st.sampled_from(STATUSES), st.integers()), min_size=1, max_size=12)


def expected(sequence):
    """The newest attempt written; of its records, the first that ended, else the last one."""
    top = max(a for a, _, _ in sequence)
    mine = [w for w in sequence if w[0] == top]
    return next((w for w in mine if w[1] in TERMINAL), mine[-1])


@settings(max_examples=60, deadline=None)
@given(sequence=writes)
def test_the_newest_attempt_stands_whatever_the_order_of_writes(tmp_path_factory, sequence):
    store = open_store(str(tmp_path_factory.mktemp("s")))
    for attempt, status, token in sequence:
        records.write_task(store, TaskRecord(run_id="r1", flow="f", step="a", attempt=attempt, status=status,
                                             metrics={"token": token}))
    stored = store.read_json(layout.task_json("f", "r1", "a", 0))
    attempt, status, token = expected(sequence)
    assert (stored["attempt"], stored["status"], stored["metrics"]["token"]) == (attempt, status.value, token)


def test_a_stale_write_says_it_was_refused_and_a_damaged_record_is_replaced(tmp_path):
    store = open_store(str(tmp_path))
    new = TaskRecord(run_id="r1", flow="f", step="a", attempt=2, status=Status.RUNNING)
    assert records.write_task(store, new)
    assert not records.write_task(store, TaskRecord(run_id="r1", flow="f", step="a", attempt=1,
                                                    status=Status.SUCCEEDED))
    store.write_bytes(layout.task_json("f", "r1", "a", 0), b"{")
    assert records.write_task(store, TaskRecord(run_id="r1", flow="f", step="a", attempt=1, status=Status.FAILED))
