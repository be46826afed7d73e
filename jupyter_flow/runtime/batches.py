"""papermill-style batch: one tracked run per parameter set, several at once, sharing one executor.

A batch is a list of parameter sets (given as a list, or as a grid whose product makes the list),
plus values fixed for every set. Each set becomes an ordinary run tagged `batch: {id, index}`; the
batch itself is `batches/<id>.json` in the store (notebook, sets). Every set is validated before the
first run starts, so bad input writes nothing. One run's failure does not stop the others.
"""
from __future__ import annotations

import itertools
import os
import posixpath
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import yaml

from jupyter_flow import runtime
from jupyter_flow.errors import FlowError, NotFound
from jupyter_flow.readers.client import Run, list_runs, table_of
from jupyter_flow.store import Store, layout, open_store, records
from jupyter_flow.store.status import Status


def expand(spec, fixed: dict | None = None, where: str = "grid") -> list[dict]:
    """Parameter sets: a list of mappings as given, or a mapping of name -> list of values (their
    product, in order; a scalar counts as a one-value list). `fixed` values go into every set."""
    if isinstance(spec, dict):
        names = list(spec)
        choices = [v if isinstance(v, list) else [v] for v in spec.values()]
        if any(not c for c in choices):
            empty = next(n for n, c in zip(names, choices) if not c)
            raise FlowError(f"{where}: {empty} has an empty list of values; give at least one")
        sets = [dict(zip(names, combo)) for combo in itertools.product(*choices)]
    elif isinstance(spec, list):
        bad = next((i for i, s in enumerate(spec) if not isinstance(s, dict)), None)
        if bad is not None:
            raise FlowError(f"{where}: item {bad + 1} is {spec[bad]!r}; a list of sets holds mappings like "
                            "{lr: 0.1, depth: 3}")
        sets = [dict(s) for s in spec]
    else:
        raise FlowError(f"{where}: expected a grid ({{lr: [0.1, 0.01], depth: [3, 5]}}) or a list of parameter "
                        f"sets, got {type(spec).__name__}")
    if not sets:
        raise FlowError(f"{where}: no parameter sets; give a grid or a non-empty list")
    return [dict(s, **(fixed or {})) for s in sets]


def load_grid(path: str) -> list | dict:
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except OSError as e:
        raise FlowError(f"-f {path}: cannot read it ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise FlowError(f"-f {path}: not valid YAML ({str(e).splitlines()[0]})") from None


class SharedExecutor:
    """One run's view of an executor shared by the batch: closing it leaves the shared one open,
    and the kernels it asks to keep warm add up with the other runs'."""

    def __init__(self, base, demand: dict, lock: threading.Lock):
        self.base, self._demand, self._lock = base, demand, lock

    def __getattr__(self, name):
        return getattr(self.base, name)

    def want_kernels(self, kernel: str, cwd: str, count: int, **hints) -> None:
        with self._lock:
            self._demand[(id(self), kernel, cwd)] = count
            total = sum(n for (_, k, c), n in self._demand.items() if (k, c) == (kernel, cwd))
        self.base.want_kernels(kernel, cwd, total, **hints)

    def close(self) -> None:
        with self._lock:
            for key in [k for k in self._demand if k[0] == id(self)]:
                self._demand[key] = 0


ID_PREFIX = "batch-"  # every batch id starts with it, then the time it started (layout.time_id)


def find_batch(store: Store, given: str) -> str:
    """The id of the batch `given` names: its id, or a unique prefix of it, with or without the leading
    `batch-` (`2026` and `batch-2026` both name the one batch started in 2026), as run ids take one."""
    layout.check_run_id(given)
    folder = posixpath.dirname(layout.batch_json(ID_PREFIX))
    ids = [name.removesuffix(".json") for name in store.children(folder) if name.endswith(".json")]
    if given in ids:
        return given
    matches = sorted(i for i in ids if i.startswith(given) or i.startswith(ID_PREFIX + given))
    if not matches:
        raise NotFound(f"no batch {given!r} in store {store.url}; `jupyter flow runs` shows batch ids")
    if len(matches) > 1:
        raise FlowError(f"batch id {given!r} is ambiguous ({len(matches)} batches start with it: {matches[0]}, "
                        f"{matches[1]}{', ...' if len(matches) > 2 else ''}); give more of it")
    return matches[0]


class Batch:
    """The runs of a batch (one per parameter set, the latest attempt of each) and their table."""

    def __init__(self, batch_id: str, store: Store | str | None = None):
        """`batch_id`: its id, or a unique prefix of it (see `find_batch`)."""
        self.store = open_store(store)
        self.id = find_batch(self.store, batch_id)
        self.record = self.store.read_json(layout.batch_json(self.id))
        latest = latest_runs(self.store, self.record)
        self.runs = [Run(r["id"], self.store) for r in latest if r is not None]

    @property
    def table(self):
        """A pandas DataFrame like `runs_table`, one row per parameter set, in set order."""
        return table_of([r.record for r in self.runs])

    @property
    def succeeded(self) -> bool:
        return len(self.runs) == len(self.record["sets"]) and all(r.status == Status.SUCCEEDED for r in self.runs)

    def __iter__(self):  # runs, table = jupyter_flow.batch(...)
        return iter((self.runs, self.table))

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for r in self.runs:
            counts[r.status] = counts.get(r.status, 0) + 1
        return f"Batch({self.id!r}, {len(self.record['sets'])} sets: " + ", ".join(
            f"{n} {s}" for s, n in counts.items()) + ")"

    def _repr_html_(self) -> str:
        return f"<p>batch <b>{self.id}</b></p>" + self.table.to_html(index=False)


def latest_runs(store: Store, record: dict) -> list[dict | None]:
    """For each set of the batch, the record of its newest run (None if it never started)."""
    latest: list[dict | None] = [None] * len(record["sets"])
    for run in list_runs(store, flow=record["flow"], batch=record["id"]):  # newest first
        index = run["batch"]["index"]
        if latest[index] is None:
            latest[index] = run
    return latest


def run_batch(notebook, grid, parameters: dict | None = None, cli_params=None, store=None,
              max_parallel_runs: int | None = None, executor: str = "local", scheduler: str | None = None,
              max_workers: int | None = None, no_cache: bool = False, on_event=None, on_start=None,
              where: str = "grid") -> Batch:
    """Run one run per parameter set of `grid` (see `expand`); returns the finished Batch.

    `on_event(index, event)` sees every run's events; `on_start(index, runner)` each run as it is
    prepared (before any starts)."""
    sets = expand(grid, parameters, where)
    _check_limit(max_parallel_runs)
    store = open_store(store)
    batch_id = f"batch-{layout.time_id(secrets.token_hex(3))}"
    options = dict(store=store, scheduler=scheduler, max_workers=max_workers, no_cache=no_cache)
    runners = _prepare_all([(i, lambda ex, s=s: runtime.prepare(notebook, parameters=s, cli_params=cli_params,
                                                                 executor=ex, **options))
                            for i, s in enumerate(sets)], executor)
    flow = runners[0][1].flow
    record = {"id": batch_id, "flow": flow.name, "notebook": str(flow.path), "sets": [r.parameters for _, r in runners],
              "created": runtime.now(), "user": records.current_user()}
    store.write_json(layout.batch_json(batch_id), record)
    return _execute(store, record, runners, max_parallel_runs, on_event, on_start)


def resume_batch(batch_id: str, store=None, max_parallel_runs: int | None = None, executor: str = "local",
                 scheduler: str | None = None, max_workers: int | None = None, parameters: dict | None = None,
                 on_event=None, on_start=None) -> Batch:
    """Rerun the sets of a batch whose latest run did not succeed (resuming each failed run)."""
    _check_limit(max_parallel_runs)
    store = open_store(store)
    record = Batch(batch_id, store).record
    batch_id = record["id"]
    options = dict(store=store, scheduler=scheduler, max_workers=max_workers)
    jobs = []
    for i, run in enumerate(latest_runs(store, record)):
        if run is None:
            jobs.append((i, lambda ex, s=record["sets"][i]: runtime.prepare(
                record["notebook"], parameters=dict(s, **(parameters or {})), executor=ex, **options)))
        elif run["status"] != Status.SUCCEEDED:
            jobs.append((i, lambda ex, r=run["id"]: runtime.prepare_resume(r, parameters=parameters, executor=ex,
                                                                            **options)))
    if not jobs:
        raise FlowError(f"every run of batch {batch_id} succeeded; nothing to resume")
    return _execute(store, record, _prepare_all(jobs, executor), max_parallel_runs, on_event, on_start)


def _prepare_all(jobs, executor: str) -> list[tuple[int, runtime.Runner]]:
    """Validate every set (FlowError names the set) before any run exists; one executor for all."""
    shared = None
    runners = []
    demand: dict = {}
    lock = threading.Lock()
    try:
        for i, prepare in jobs:
            try:  # the first makes the executor (checking its options), the others share it
                runner = prepare(SharedExecutor(shared, demand, lock) if shared else executor)
            except FlowError as e:
                raise FlowError(f"parameter set {i + 1}: {e}") from None
            shared = shared or runner.executor
            runner.executor = SharedExecutor(shared, demand, lock)
            runners.append((i, runner))
    except BaseException:
        if shared is not None:
            shared.close()
        raise
    return runners


def _check_limit(max_parallel_runs: int | None) -> None:
    if max_parallel_runs is not None and max_parallel_runs < 1:
        raise FlowError(f"--max-parallel-runs {max_parallel_runs}: give 1 or more")


def _execute(store: Store, record: dict, runners, max_parallel_runs, on_event, on_start) -> Batch:
    limit = max_parallel_runs or os.cpu_count() or 2
    stop = threading.Event()
    for i, runner in runners:
        runner.record["batch"] = {"id": record["id"], "index": i}
        if on_event is not None:
            runner.on_event = lambda e, i=i: on_event(i, e)
        if on_start is not None:
            on_start(i, runner)

    def one(runner):
        if not stop.is_set():
            runner.record["created"] = runtime.now()  # its duration counts from its start, not its turn's wait
            runtime.launch(runner, background=False)

    pool = ThreadPoolExecutor(limit, thread_name_prefix="jupyter-flow-batch")
    futures = [pool.submit(one, runner) for _, runner in runners]
    try:
        while not all(f.done() for f in futures):
            wait(futures, timeout=0.25)
    except KeyboardInterrupt:
        stop.set()
        for _, runner in runners:
            runner.cancel(Status.CANCELLED)
        raise
    finally:
        pool.shutdown(wait=True)
        runners[0][1].executor.base.close()
    return Batch(record["id"], store)


def batch(notebook, grid, parameters: dict | None = None, **options) -> Batch:
    """`jupyter_flow.batch`: run `notebook` once per parameter set. `grid` is {name: [values]} (their
    product) or a list of {name: value} sets; `parameters` are fixed for every set. Returns the Batch
    (`.runs`, `.table`; `runs, table = jupyter_flow.batch(...)` works too). Options as for `jupyter_flow.run`, plus
    `max_parallel_runs`."""
    return run_batch(notebook, grid, parameters, **options)
