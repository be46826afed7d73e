"""REST handlers under /jupyter-flow/api/: one base class, one routes table.

Every method is `@tornado.web.authenticated` then `@authorized`; starting, resuming and cancelling
a run count as executing code, pinning one as writing. POSTs and DELETEs carry the XSRF token
(jupyter-server checks it in prepare()). Engine errors become JSON: FlowError -> 400, NotFound ->
404, a store these credentials may only read -> 403, anything else -> 500.
"""
import asyncio
import functools
import json

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler

from jupyter_flow.errors import FlowError, NotFound
from jupyter_flow.server.service import FlowService
from jupyter_flow.store import ReadOnly, layout, status

RESOURCE = "jupyter_flow"
RUN_ID = rf"(?P<run_id>{layout.RUN_ID.pattern.strip('^$')})"
STEP = rf"(?P<step>{layout.STEP_NAME_PATTERN})"
RUN_OPTIONS = (("parameters", dict), ("executor", str), ("scheduler", str))


class FlowHandler(APIHandler):
    auth_resource = RESOURCE

    @property
    def service(self) -> FlowService:
        return self.settings["jupyter_flow"]

    async def call(self, fn, *args, **kwargs):
        """Run one engine call in a worker thread; map its errors to HTTP status codes."""
        try:
            return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))
        except NotFound as e:
            raise tornado.web.HTTPError(404, str(e)) from e
        except ReadOnly as e:
            raise tornado.web.HTTPError(403, str(e)) from e
        except FlowError as e:
            raise tornado.web.HTTPError(400, str(e)) from e

    def reply(self, data, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, default=str))

    def body(self) -> dict:
        """The JSON object the request carries ({} for an empty body); 400 for anything else."""
        raw = self.request.body.strip()
        if not raw:
            return {}
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise tornado.web.HTTPError(400, "request body must be UTF-8 encoded JSON") from None
        if not isinstance(data, dict):
            raise tornado.web.HTTPError(400, f"request body must be a JSON object, not {json.dumps(data)[:40]}")
        return data

    def field(self, data: dict, name: str, kind, required: bool = False):
        value = data.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, kind):
            raise tornado.web.HTTPError(400, f"'{name}' must be a {kind.__name__}")
        return value

    async def launch(self, start, *args, data=None):
        """Start (or resume) a run with the body's options; answer 201 with its id."""
        data = self.body() if data is None else data
        options = {name: self.field(data, name, kind) for name, kind in RUN_OPTIONS}
        self.reply(await self.call(start, *args, **options), status=201)

    def query_int(self, name: str, minimum: int = 1):
        raw = self.get_query_argument(name, None)
        if raw in (None, ""):
            return None
        if not raw.isdigit() or int(raw) < minimum:
            raise tornado.web.HTTPError(400, f"'{name}' must be a whole number >= {minimum}")
        return int(raw)

    def query_run_id(self, name: str):
        raw = self.get_query_argument(name, None)
        if raw in (None, ""):
            return None
        if not layout.RUN_ID.match(raw):
            raise tornado.web.HTTPError(400, f"'{name}' must be a run id (the last run of the page before), "
                                             f"not {raw[:40]!r}")
        return raw


class VersionHandler(FlowHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self):
        self.reply(await self.call(self.service.info))


def vocabulary() -> dict:
    """store/status.py's vocabulary (statuses, their order and colours, the step-name rule) and
    `ended`: the statuses after which a task or run no longer changes in a view (the terminal ones,
    and crashed and damaged, which are read as ends)."""
    ended = status.TERMINAL | {status.Status.CRASHED, status.Status.DAMAGED}
    return dict(status.vocabulary(), ended=[s.value for s in status.Status if s in ended])


class VocabularyHandler(FlowHandler):
    """The sidebar's one source for statuses and step names: it keeps no table of its own."""

    @tornado.web.authenticated
    @authorized
    async def get(self):
        self.reply(vocabulary())


class DagHandler(FlowHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self):
        self.reply(await self.call(self.service.dag, self.get_query_argument("path", "")))


class PlanHandler(FlowHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self):
        raw = self.get_query_argument("parameters", "")
        try:
            parameters = json.loads(raw) if raw else None
        except ValueError:
            raise tornado.web.HTTPError(400, "'parameters' must be a JSON object") from None
        parameters = self.field({"parameters": parameters}, "parameters", dict)
        self.reply(await self.call(self.service.plan, self.get_query_argument("path", ""), parameters))


class RunsHandler(FlowHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self):
        arg = self.get_query_argument
        self.reply(await self.call(
            self.service.list_runs,
            flow=arg("flow", None) or None,
            user=arg("user", None) or None,
            status=arg("status", None) or None,
            limit=self.query_int("limit"),
            batch=arg("batch", None) or None,
            offset=self.query_int("offset", minimum=0) or 0,
            before=self.query_run_id("before"),
        ))

    @tornado.web.authenticated
    @authorized(action="execute")
    async def post(self):
        data = self.body()
        await self.launch(self.service.start, self.field(data, "path", str, required=True), data=data)


class RunHandler(FlowHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self, run_id):
        self.reply(await self.call(self.service.get_run, run_id))


class CancelHandler(FlowHandler):
    @tornado.web.authenticated
    @authorized(action="execute")
    async def post(self, run_id):
        self.reply(await self.call(self.service.cancel, run_id))


class PinHandler(FlowHandler):
    """POST pins the run (body: {"note": TEXT}, optional): no gc removes it; DELETE unpins it."""

    @tornado.web.authenticated
    @authorized(action="write")
    async def post(self, run_id):
        note = self.field(self.body(), "note", str)
        self.reply(await self.call(self.service.pin, run_id, note))

    @tornado.web.authenticated
    @authorized(action="write")
    async def delete(self, run_id):
        self.reply(await self.call(self.service.unpin, run_id))


class ResumeHandler(FlowHandler):
    @tornado.web.authenticated
    @authorized(action="execute")
    async def post(self, run_id):
        await self.launch(self.service.resume, run_id)


class TaskHandler(FlowHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self, run_id, step, index, what):
        index = int(index or 0)
        if what == "artifacts":
            self.reply(await self.call(self.service.task_artifacts, run_id, step, index))
        else:
            self.reply(await self.call(self.service.task_file, run_id, step, index, what))


class MissingHandler(FlowHandler):
    """Unknown routes under the API answer JSON 404 too."""

    @tornado.web.authenticated
    @authorized
    async def get(self, path):
        raise tornado.web.HTTPError(404, f"no such jupyter-flow API route: {path}")

    post = delete = get


ROUTES = [
    (r"version", VersionHandler),
    (r"vocabulary", VocabularyHandler),
    (r"dag", DagHandler),
    (r"plan", PlanHandler),
    (r"runs", RunsHandler),
    (rf"runs/{RUN_ID}", RunHandler),
    (rf"runs/{RUN_ID}/cancel", CancelHandler),
    (rf"runs/{RUN_ID}/resume", ResumeHandler),
    (rf"runs/{RUN_ID}/pin", PinHandler),
    (rf"runs/{RUN_ID}/tasks/{STEP}(?:/(?P<index>\d+))?/(?P<what>log|artifacts|notebook)", TaskHandler),
    (r"(?P<path>.*)", MissingHandler),
]
