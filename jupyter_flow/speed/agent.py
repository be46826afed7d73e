"""Where the optional agent (`jupyter flow agent`, served by cli/agent.py) listens, and how to reach it.

The agent is two long-lived processes, each listening on a Unix socket in Jupyter's runtime
directory; the names carry a digest of this Python, its site-packages, PYTHONPATH and jupyter_flow's
sources, so a runner only ever uses an agent that would import what it would. The fork server asks
it for a zygote (speed/forkserver.py), the CLI hands it a command (cli/agent.py); both find it here.
"""
from __future__ import annotations

import hashlib
import json
import os
import site
import socket
import sys


def enabled() -> bool:
    return os.name == "posix" and os.environ.get("JUPYTER_FLOW_AGENT", "1") != "0"


def address(kind: str = "zygote") -> str:
    """The agent's socket for this Python, its installed packages, module path and jupyter_flow's code:
    a runner only uses an agent whose imports are its own (after `pip install`, start a new agent)."""
    from jupyter_core.paths import jupyter_runtime_dir  # only the commands that may use the agent need it

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # jupyter_flow/
    sources = [e.stat().st_mtime_ns for folder in (package, *_subpackages(package))
               for e in os.scandir(folder) if e.name.endswith(".py")]
    installed = [os.stat(p).st_mtime_ns for p in (*site.getsitepackages(), site.getusersitepackages())
                 if os.path.isdir(p)]
    key = json.dumps([os.path.realpath(sys.executable), sys.version, os.environ.get("PYTHONPATH", ""), package,
                      max(sources), installed])
    suffix = "" if kind == "zygote" else f"-{kind}"
    return os.path.join(jupyter_runtime_dir(),
                        f"jupyter-flow-agent-{hashlib.sha1(key.encode()).hexdigest()[:12]}{suffix}.sock")


def _subpackages(package: str) -> list[str]:
    return [e.path for e in os.scandir(package) if e.is_dir() and os.path.exists(os.path.join(e.path, "__init__.py"))]


def connect(kind: str = "zygote", where: str | None = None) -> socket.socket | None:
    """A connection to the running agent's `kind` socket; None if there is no agent (or only the
    socket file of one that was killed)."""
    if where is None and not enabled():
        return None
    where = where or address(kind)
    try:
        if os.stat(where).st_uid != os.getuid():  # only an agent of this user's
            return None
    except OSError:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(where)
    except OSError:
        sock.close()
        return None
    return sock
