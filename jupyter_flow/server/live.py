"""What the sidebar shows live: a run pushed as it changes and a task's log as it grows (server-sent
events), and the DAG and plan of a notebook as it is edited, before it is saved.

The runtime reports every task start and end (`on_event`) for runs this server started; each report
wakes the streams that watch that run, which re-read it from the store and send it if it changed.
Runs started elsewhere (the CLI, a colleague, a Dask cluster) have no reports here: their streams
re-read the store every `JupyterFlow.poll_interval_ms` instead.

A report can come before the store shows it: the runtime reports a task running when it hands the
task to its executor, and the task's process writes `running` into task.json a moment later. So a
report that changed nothing yet is followed by quick re-reads (10 ms, doubling) until the change
lands or a poll interval has passed, rather than by a whole poll interval of showing the old state.
"""
import asyncio
import json

import tornado.web
from jupyter_server.auth.decorator import authorized
from tornado.iostream import StreamClosedError

from jupyter_flow.errors import NotFound
from jupyter_flow.readers import client
from jupyter_flow.server.handlers import RUN_ID, STEP, FlowHandler, vocabulary
from jupyter_flow.store.status import Status

RETRY = 0.01  # seconds before re-reading after a report the store did not show yet (doubles)
ENDED = frozenset(vocabulary()["ended"])  # a task or run in one of these no longer changes


class RunEvents:
    """Wakes the streams of a run when the runtime reports on it (called from the runner's thread)."""

    def __init__(self):
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, set[asyncio.Event]] = {}

    def subscribe(self, run_id: str) -> asyncio.Event:
        self._loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        self._waiters.setdefault(run_id, set()).add(wake)
        return wake

    def unsubscribe(self, run_id: str, wake: asyncio.Event) -> None:
        waiters = self._waiters.get(run_id, set())
        waiters.discard(wake)
        if not waiters:
            self._waiters.pop(run_id, None)

    def notify(self, event: dict) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake, event.get("run_id"))

    def _wake(self, run_id) -> None:
        for wake in self._waiters.get(run_id, ()):
            wake.set()


class StreamHandler(FlowHandler):
    """One server-sent-event stream of a run."""

    @property
    def events(self) -> RunEvents:
        return self.settings["jupyter_flow_events"]

    async def stream(self, run_id: str, poll):
        """Call `poll()` (in a thread) now, then after each report on the run or each poll interval,
        sending what it returns, until it returns done=True or the browser goes away."""
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        wake = self.events.subscribe(run_id)
        interval = self.service.config.poll_interval_ms / 1000
        # seconds to the next quick re-read, after a report the store did not show yet; reports may
        # also have come before this stream subscribed, so it starts as after one
        retry, first = RETRY, True
        try:
            while True:
                events, done = await self.call(poll)
                for name, data in events:
                    self.write(f"event: {name}\ndata: {json.dumps(data, default=str)}\n\n")
                if events or done:
                    await self.flush()
                if done:
                    break
                if events and not first:
                    retry = None
                first = False
                try:
                    await asyncio.wait_for(wake.wait(), timeout=retry or interval)
                    retry = RETRY  # a report: re-read now, and soon again if it shows nothing new
                except asyncio.TimeoutError:
                    retry = retry * 2 if retry and retry * 2 < interval else None
                wake.clear()
        except StreamClosedError:
            return
        finally:
            self.events.unsubscribe(run_id, wake)
        self.write("event: end\ndata: {}\n\n")
        self.finish()


def _text(value) -> str:
    return json.dumps(value, default=str, sort_keys=True)


class RunChanges:
    """What a run stream sends: the whole run (with its tasks) the first time, then only what changed
    since the last call: the run's fields that changed, the names of fields it no longer has, and the
    tasks that are new or changed. A 1,000-task foreach then sends a task's record when it changes rather
    than all 1,000 records on every change."""

    def __init__(self):
        self.fields: dict[str, str] | None = None  # run field -> its JSON, as last sent
        self.tasks: dict[tuple, str] = {}  # (step, index) -> the task's JSON, as last sent

    def __call__(self, run: dict) -> tuple[str, dict] | None:
        """("run", the run) the first time; ("change", {"run": fields, "gone": [name, ...], "tasks":
        [task, ...]}) after, or None if nothing changed."""
        fields = {k: _text(v) for k, v in run.items() if k != "tasks"}
        tasks = {(t["step"], t["index"]): t for t in run.get("tasks") or []}
        texts = {key: _text(t) for key, t in tasks.items()}
        first, before, sent = self.fields is None, self.fields or {}, self.tasks
        self.fields, self.tasks = fields, texts
        if first:
            return "run", run
        changed = {k: run[k] for k, text in fields.items() if before.get(k) != text}
        gone = sorted(before.keys() - fields.keys())
        new = [tasks[key] for key, text in texts.items() if sent.get(key) != text]
        return ("change", {"run": changed, "gone": gone, "tasks": new}) if changed or gone or new else None


class RunStreamHandler(StreamHandler):
    """`run` event: the run with its tasks; then a `change` event each time it changes (see
    RunChanges), until it ends."""

    @tornado.web.authenticated
    @authorized
    async def get(self, run_id):
        changes = RunChanges()

        def poll():
            run = self.service.get_run(run_id)
            event = changes(run)
            return ([event] if event else []), run["status"] != Status.RUNNING

        await self.stream(run_id, poll)


class LogStreamHandler(StreamHandler):
    """`log` events: what a task printed since the last event, while it runs and once it ended."""

    @tornado.web.authenticated
    @authorized
    async def get(self, run_id, step, index):
        index = int(index)
        sent = {"chars": 0}
        run = await self.call(self.service.get_run, run_id)  # 404 at once for a run that does not exist
        if step not in [s["name"] for s in run["steps"]]:
            raise tornado.web.HTTPError(404, f"run {run_id} has no step {step!r}")

        def poll():
            store = self.service.store
            run = client.get_run(store, run_id)
            try:
                status = client.read_task(store, run_id, step, index)["status"]
            except NotFound:
                status = "queued"  # not started yet
            try:
                text = client.read_task_file(store, run_id, step, index, "log.txt")
            except NotFound:
                text = ""
            new, sent["chars"] = text[sent["chars"]:], len(text)
            done = status in ENDED or run["status"] != Status.RUNNING
            return ([("log", {"text": new, "status": status})] if new or done else []), done

        await self.stream(run_id, poll)


class LiveDagHandler(FlowHandler):
    """POST {path, content}: the DAG of the notebook's unsaved content (nothing is written)."""

    @tornado.web.authenticated
    @authorized
    async def post(self):
        data = self.body()
        path = self.field(data, "path", str, required=True)
        content = self.field(data, "content", dict, required=True)
        self.reply(await self.call(self.service.dag, path, content))


class LivePlanHandler(FlowHandler):
    """POST {path, content, parameters?}: the plan of the notebook's unsaved content (nothing is written)."""

    @tornado.web.authenticated
    @authorized
    async def post(self):
        data = self.body()
        path = self.field(data, "path", str, required=True)
        content = self.field(data, "content", dict, required=True)
        self.reply(await self.call(self.service.plan, path, self.field(data, "parameters", dict), content))


ROUTES = [
    (r"dag/live", LiveDagHandler),
    (r"plan/live", LivePlanHandler),
    (rf"runs/{RUN_ID}/events", RunStreamHandler),
    (rf"runs/{RUN_ID}/tasks/{STEP}/(?P<index>\d+)/log/live", LogStreamHandler),
]
