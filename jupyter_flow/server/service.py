"""The server's only door into the engine: each method is one engine call, run off the event loop.

Reads go through `client` (JSON the store already holds, previews included); nothing is unpickled.
"""
import json
import os
import threading

from jupyter_flow._version import __version__
from jupyter_flow.errors import FlowError, StoreError
from jupyter_flow.executors import names as executor_names
from jupyter_flow.readers import client
from jupyter_flow.server.paths import resolve_notebook, to_api
from jupyter_flow.store import ReadOnly, open_store, records
from jupyter_flow.store.records import current_user

TASK_FILES = {"log": "log.txt", "notebook": "output.ipynb"}
# CPython 3.11's ast.parse is not thread-safe ("AST constructor recursion depth mismatch", or a
# bogus SyntaxError); the sidebar asks for a DAG and a plan at once, each in a worker thread
_PARSING = threading.Lock()


class FlowService:
    def __init__(self, config, root_dir: str, allow_hidden: bool = False, on_event=None):
        self.config = config
        self.on_event = on_event  # the runtime's reports on runs started here (live.RunEvents.notify)
        self.root_dir = os.path.abspath(root_dir)
        self.allow_hidden = allow_hidden
        self._store = None

    # -- helpers -------------------------------------------------------------------------------
    @property
    def store(self):
        if self._store is None:
            self._store = open_store(self.config.store)
        return self._store

    def notebook(self, api_path: str) -> str:
        return resolve_notebook(api_path, self.root_dir, self.allow_hidden)

    def _with_path(self, run: dict) -> dict:
        run["path"] = to_api(run.get("notebook") or "", self.root_dir)
        return run

    def _run_options(self, executor, scheduler) -> dict:
        return {
            "store": self.store,
            "executor": executor or self.config.executor,
            "scheduler": scheduler or self.config.scheduler,
            "max_workers": self.config.max_workers,
            "on_event": self.on_event,
        }

    # -- reads ---------------------------------------------------------------------------------
    def info(self) -> dict:
        return {
            "version": __version__,
            "user": current_user(),
            "store": self.store.url,
            "executor": self.config.executor,
            "scheduler": self.config.scheduler,
            "executors": executor_names(),
            "poll_interval_ms": self.config.poll_interval_ms,
            "read_only": self.read_only(),
        }

    def read_only(self) -> str | None:
        """Why this server may not write to the store (its one-line refusal), or None if it may
        (a store that cannot be reached says so at its first use instead)."""
        try:
            self.store.check_writable()
        except ReadOnly as e:
            return str(e)
        except StoreError:
            pass
        return None

    def _flow(self, api_path: str, content: dict | None):
        """The Flow of the notebook saved at `api_path`, or of `content` (its unsaved state) if given."""
        from jupyter_flow.flow.dag import build_flow  # the notebook stack: loaded at the first DAG, not with the server

        if content is not None and not isinstance(content.get("cells"), list):
            raise FlowError("'content' must be a notebook (a JSON object with a 'cells' list)")
        path = self.notebook(api_path)
        with _PARSING:
            return build_flow(path, content)

    def dag(self, api_path: str, content: dict | None = None) -> dict:
        out = self._flow(api_path, content).to_json()
        out["path"] = api_path
        return out

    def plan(self, api_path: str, parameters: dict | None = None, content: dict | None = None) -> dict:
        """For each step: would a run reuse it or run it, and why (runtime.plan), with these parameters."""
        from jupyter_flow.runtime.plan import plan  # the runtime: loaded when first used, not with the server

        return {"path": api_path, "steps": plan(self._flow(api_path, content), self.store, parameters)}

    def list_runs(self, flow=None, user=None, status=None, limit=None, batch=None, offset=0, before=None) -> dict:
        """A page of run records, newest first: {"runs": the `limit` from `offset` on (of the runs older
        than the run id `before`, if given: the sidebar's next page, which reads none of the runs before
        it), "more": whether others follow}. Each run carries `pinned` (see client.list_runs), a run of a
        batch `batch: {id, index}` (index: its parameter set)."""
        wanted = offset + limit + 1 if limit else None  # one more: is there a next page?
        runs = client.list_runs(self.store, flow=flow, user=user, status=status, limit=wanted, batch=batch,
                                before=before)
        page = runs[offset:offset + limit] if limit else runs[offset:]
        return {"runs": [self._with_path(r) for r in page], "more": len(runs) > offset + len(page)}

    def get_run(self, run_id: str) -> dict:
        return self._with_path(client.get_run(self.store, run_id))

    def _task(self, run_id: str, step: str, index: int) -> dict:
        return client.read_task(self.store, run_id, step, index)

    def _run_notebook(self, run_id: str) -> str:
        """The notebook of a run, if it lies inside the server root (the same rule as starting a run)."""
        run = records.find_run(self.store, run_id)
        api_path = to_api(run.notebook or "", self.root_dir)
        if api_path is None:
            raise FlowError(f"run {run.id} was made from a notebook outside the server root; use the CLI for it")
        return self.notebook(api_path)

    def task_file(self, run_id: str, step: str, index: int, what: str):
        if what == "notebook":
            self._run_notebook(run_id)
        text = client.read_task_file(self.store, run_id, step, index, TASK_FILES[what])
        if what == "notebook":
            return json.loads(text)
        return {"run_id": run_id, "step": step, "index": index, "text": text}

    def task_artifacts(self, run_id: str, step: str, index: int) -> dict:
        """Names, types, sizes and previews recorded when the values were saved, and the failure snapshot."""
        return client.task_artifacts(self.store, run_id, step, index)

    # -- actions -------------------------------------------------------------------------------
    def start(self, api_path: str, parameters=None, executor=None, scheduler=None) -> dict:
        from jupyter_flow import runtime  # loaded at the first run, not with the server

        handle = runtime.start_run(
            self.notebook(api_path), parameters=parameters, **self._run_options(executor, scheduler)
        )
        return {"id": handle.run_id, "status": "running"}

    def resume(self, run_id: str, parameters=None, executor=None, scheduler=None) -> dict:
        from jupyter_flow import runtime  # loaded at the first run, not with the server

        handle = runtime.resume_run(
            run_id, parameters=parameters, notebook_path=self._run_notebook(run_id),
            **self._run_options(executor, scheduler)
        )
        return {"id": handle.run_id, "origin_run": run_id, "status": "running"}

    def pin(self, run_id: str, note: str | None = None) -> dict:
        return client.pin(self.store, run_id, note)

    def unpin(self, run_id: str) -> dict:
        return client.unpin(self.store, run_id)

    def cancel(self, run_id: str) -> dict:
        from jupyter_flow import runtime  # loaded at the first run, not with the server

        run = self.get_run(run_id)
        if run["status"] != "running":
            raise FlowError(f"run {run_id} is {run['status']}, not running")
        runtime.request_cancel(self.store, run_id)
        return {"id": run_id, "cancel_requested": True}
