"""Every key of the store is built here, and parsed here by pattern (never by position).

  blobs/<h[:2]>/<h>                                  pickled values, named by the hash of their bytes
  blobs/tmp/blob-*                                   blob writes in progress (local stores)
  blobs/tmp/probe-*                                  the writability probe (Store.check_writable), deleted at once
  quarantine/<h>                                     blobs `fsck` found corrupt, moved aside
  flows/<flow>/runs/<run>/run.json                   the run record; notebook.ipynb, cancel beside it
  flows/<flow>/runs/<run>/<step>/<index>/task.json   a task record; task.json.lock beside it on local stores
                                                     (the lock of its conditional writes, backends.write_if)
  flows/<flow>/runs/<run>/<step>/<index>/attempts/<n>-<token>/
                                                     output.ipynb, log.txt, failure.json of one attempt: each
                                                     attempt writes its own folder (a stale attempt, paused
                                                     and woken up, never overwrites a newer one's files); the
                                                     task record names the folder of the attempt that stands
                                                     (its `files_at`). Runs recorded before this kept them
                                                     beside task.json, earlier attempts' as output.attempt-N.ipynb
  flows/<flow>/index/<run>.json                      finished runs' records from <run> up to the next such
                                                     file: a cache of their run.json for listings (records.py)
  flows/<flow>/index/summary                         which users and statuses each of those files holds, and
                                                     which runs: a filtered listing reads only the files (or
                                                     run.json) of runs that can match (records.py, RunIndex)
  flows/<flow>/index/runs                            the ids of the flow's runs up to a time (and the runs gc
                                                     is removing): a listing lists only the run folders after
                                                     it (records.py, the run ledger)
  cache/<key>.json                                   cross-run cache index -> the task that made it
  pins/<run>.json                                    a pin: who pinned run <run> (of any flow), when, why;
                                                     `gc` never removes a pinned run nor what it needs. A key
                                                     of its own, so pinning never rewrites a run.json that
                                                     its runner may still be writing (records.py: pin)
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

from jupyter_flow.errors import FlowError

FLOW_NAME = re.compile(r"^(?!\.\.?$)[A-Za-z0-9_.-]+$")
# The step-name rule (the one place it is written): step:NAME tags, task keys, the sidebar (status.vocabulary).
STEP_NAME_PATTERN = r"[a-z_][a-z0-9_]*"
STEP_NAME = re.compile(rf"^{STEP_NAME_PATTERN}$")
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


def time_id(suffix: str) -> str:
    """A run (or batch) id: the UTC time to the millisecond, then `suffix`. Listings sort ids, so runs
    started within one second (a quick resume after its failed run) still sort as they started."""
    now = datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}-{suffix}"


DIGEST = re.compile(r"^[0-9a-f]{32}$")
BLOB_TMP = "blobs/tmp"
QUARANTINE = "quarantine"

# The files of a run (beside run.json) and of a task (beside task.json): every file name is here.
RUN_RECORD = "run.json"
RUN_NOTEBOOK = "notebook.ipynb"  # the notebook as it was run (what resume and exports start from)
CANCEL = "cancel"  # written to ask a run to stop (`jupyter flow cancel`)
TASK_RECORD = "task.json"
TASK_NOTEBOOK = "output.ipynb"  # the executed step notebook
TASK_LOG = "log.txt"  # the step's stdout and stderr
TASK_FAILURE = "failure.json"  # the failure snapshot: variables, frames (records.read_failure)
TASK_RESULT = "result.json"  # what the kernel hands the task on success (in its work folder only)
TASK_FILES = (TASK_NOTEBOOK, TASK_LOG, TASK_FAILURE)  # the files each attempt of a task writes

_RUN_JSON = re.compile(r"^flows/(?P<flow>[^/]+)/runs/(?P<run_id>[^/]+)/run\.json$")
_TASK_JSON = re.compile(r"^flows/(?P<flow>[^/]+)/runs/(?P<run_id>[^/]+)/(?P<step>[^/]+)/(?P<index>\d+)/task\.json$")
_INDEX_CHUNK = re.compile(r"^flows/(?P<flow>[^/]+)/index/(?P<run_id>[^/]+)\.json$")
_BLOB = re.compile(r"^blobs/[0-9a-f]{2}/(?P<digest>[0-9a-f]+)$")


def check_flow_name(name: str) -> str:
    if not FLOW_NAME.match(name):
        raise FlowError(f"flow name {name!r} is not allowed; use letters, digits, '_', '-' and '.' "
                        "(not '.' or '..' alone), in the notebook's metadata.jupyter_flow.flow")
    return name


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise FlowError(f"{run_id!r} is not a run id (letters, digits, '-', '_', '.', ':'); "
                        "`jupyter flow runs` lists them")
    return run_id


def run_key(flow: str, run_id: str) -> str:
    return f"flows/{flow}/runs/{run_id}"


def run_json(flow: str, run_id: str) -> str:
    return f"{run_key(flow, run_id)}/{RUN_RECORD}"


def run_file(flow: str, run_id: str, name: str) -> str:
    return f"{run_key(flow, run_id)}/{name}"


def task_key(flow: str, run_id: str, step: str, index: int) -> str:
    return f"{run_key(flow, run_id)}/{step}/{index}"


def task_json(flow: str, run_id: str, step: str, index: int) -> str:
    return f"{task_key(flow, run_id, step, index)}/{TASK_RECORD}"


def task_file(flow: str, run_id: str, step: str, index: int, name: str) -> str:
    """A file of a task (one of TASK_FILES) beside its task.json."""
    return in_task(task_key(flow, run_id, step, index), name)


def attempt_key(flow: str, run_id: str, step: str, index: int, attempt: int, token: str) -> str:
    """The folder of one attempt's files (TASK_FILES): `token` tells apart two executions of the same
    attempt (a task a lost Dask worker still runs while the scheduler runs it again elsewhere)."""
    return f"{task_key(flow, run_id, step, index)}/attempts/{attempt}-{token}"


def failure_snapshots(key: str) -> tuple[str, ...]:
    """Glob patterns of the failure snapshots of every attempt of the task at `key` (task_key): in
    their attempt folders, and beside task.json as runs recorded before attempt folders have them."""
    return f"{key}/attempts/*/{TASK_FAILURE}", f"{key}/failure*.json"


def in_task(key: str, name: str) -> str:
    """The file `name` in the folder `key` of a task (task_key) or of one of its attempts (attempt_key)."""
    return f"{key}/{name}"


def index_chunk(flow: str, first_run_id: str) -> str:
    return f"flows/{flow}/index/{first_run_id}.json"


def index_ledger(flow: str) -> str:
    """The ids of a flow's runs up to a time (no .json suffix: never taken for an index file)."""
    return f"flows/{flow}/index/runs"


def time_bound(when: datetime) -> str:
    """The run id prefix of a time: every id time_id makes at or after `when` sorts after it, every id
    it made before sorts before it."""
    when = when.astimezone(timezone.utc)
    return f"{when:%Y%m%dT%H%M%S}.{when.microsecond // 1000:03d}"


def index_summary(flow: str) -> str:
    """The summary of a flow's index files (no .json suffix: never taken for one of them)."""
    return f"flows/{flow}/index/summary"


CACHE_FOLDER = "cache"


def cache_entry(cache_key: str) -> str:
    return f"{CACHE_FOLDER}/{cache_key}.json"


def batch_json(batch_id: str) -> str:
    """A batch of runs (see runtime/batches.py): its notebook and parameter sets."""
    return f"batches/{check_run_id(batch_id)}.json"


def pin(run_id: str) -> str:
    return f"{PINS_FOLDER}/{check_run_id(run_id)}.json"


def blob(digest: str) -> str:
    return f"blobs/{digest[:2]}/{digest}"


def quarantined(digest: str) -> str:
    return f"{QUARANTINE}/{digest}"


def probe(token: str) -> str:
    """The tiny key Store.check_writable PUTs, then deletes (under the temporary prefix)."""
    return f"{BLOB_TMP}/probe-{token}"


# -- patterns for listings, and their parsers --------------------------------------------------
def run_jsons(flow: str | None = None, run_id_prefix: str | None = None) -> str:
    return f"flows/{flow or '*'}/runs/{run_id_prefix + '*' if run_id_prefix else '*'}/run.json"


def runs_folder(flow: str) -> str:
    """The folder of a flow's runs: one folder per run, named by its id."""
    return f"flows/{flow}/runs"


FLOWS_FOLDER = "flows"
PINS_FOLDER = "pins"


def index_chunks(flow: str | None = None) -> str:
    return f"flows/{flow or '*'}/index/*.json"


def index_summaries() -> str:
    return "flows/*/index/summary"


def index_ledgers() -> str:
    return "flows/*/index/runs"


def task_jsons(flow: str, run_id: str) -> str:
    return f"{run_key(flow, run_id)}/*/*/task.json"


ALL_TASK_JSONS = "flows/*/runs/*/*/*/task.json"
ALL_BLOBS = "blobs/??/*"
ALL_CACHE = f"{CACHE_FOLDER}/*.json"



def parse_run_json(key: str) -> tuple[str, str]:
    """(flow, run_id) of a run.json key."""
    m = _RUN_JSON.match(key)
    if not m:
        raise ValueError(f"{key} is not a run record key")
    return m["flow"], m["run_id"]


def parse_index_chunk(key: str) -> str:
    """The first run id an index file covers."""
    m = _INDEX_CHUNK.match(key)
    if not m:
        raise ValueError(f"{key} is not a run index key")
    return m["run_id"]


def parse_task_json(key: str) -> tuple[str, str, str, int]:
    """(flow, run_id, step, index) of a task.json key."""
    m = _TASK_JSON.match(key)
    if not m:
        raise ValueError(f"{key} is not a task record key")
    return m["flow"], m["run_id"], m["step"], int(m["index"])


def parse_pin(name: str) -> str | None:
    """The run id of a name in PINS_FOLDER, None for anything else (a write in progress)."""
    run_id = name[:-len(".json")] if name.endswith(".json") else ""
    return run_id if RUN_ID.match(run_id) else None


def parse_blob(key: str) -> str | None:
    """The digest of a blob key, None for anything else under blobs/ (temporary files)."""
    m = _BLOB.match(key)
    return m["digest"] if m else None
