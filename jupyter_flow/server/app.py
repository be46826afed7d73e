"""The server extension put together: the engine's service, the live streams' wake-ups, and every
route (handlers' and live's) mounted under /jupyter-flow/api/."""
from jupyter_server.utils import url_path_join

from jupyter_flow.server import handlers, live
from jupyter_flow.server.config import JupyterFlow
from jupyter_flow.server.service import FlowService

API_PREFIX = "jupyter-flow/api"


def setup_handlers(serverapp) -> None:
    web_app = serverapp.web_app
    config = JupyterFlow(config=serverapp.config, parent=serverapp)
    cm = serverapp.contents_manager
    events = web_app.settings["jupyter_flow_events"] = live.RunEvents()
    web_app.settings["jupyter_flow"] = FlowService(
        config, serverapp.root_dir, allow_hidden=getattr(cm, "allow_hidden", False), on_event=events.notify
    )
    base = url_path_join(web_app.settings["base_url"], API_PREFIX)
    web_app.add_handlers(
        ".*$", [(url_path_join(base, pattern) + "/?$", handler) for pattern, handler in live.ROUTES + handlers.ROUTES]
    )
    serverapp.log.info("jupyter_flow: REST API at %s (store: %s)", base, config.store or "default")
