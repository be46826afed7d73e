"""Resolve a notebook path sent by the browser to a file inside the server root, or refuse it.

Same rule as jupyter-server's contents manager (an API path is relative, `/`-separated, and must
stay under root_dir once normalised), checked on real paths so a symlink cannot lead out either,
and with a path-component comparison so `/root_evil` is not taken to be inside `/root`.
"""
import os

from jupyter_server.utils import ApiPath, to_os_path

from jupyter_flow.errors import FlowError, NotFound


def is_inside(path: str, root: str) -> bool:
    path, root = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([path, root]) == root


def resolve_notebook(api_path: str, root_dir: str, allow_hidden: bool = False) -> str:
    """Return the absolute OS path of `api_path` (relative to root_dir); FlowError if not allowed."""
    if not api_path or not isinstance(api_path, str):
        raise FlowError("'path' is required: a notebook path relative to the server root")
    if "\0" in api_path or "\\" in api_path:
        raise FlowError(f"invalid notebook path {api_path!r}")
    if api_path.startswith("/") or os.path.isabs(api_path) or os.path.splitdrive(api_path)[0]:
        raise FlowError(f"{api_path!r} is absolute; give a path relative to the server root")
    parts = api_path.split("/")
    if ".." in parts:
        raise FlowError(f"{api_path!r} leaves the server root")
    if not allow_hidden and any(p.startswith(".") for p in parts if p):
        raise FlowError(f"{api_path!r} is hidden")
    if not api_path.endswith(".ipynb"):
        raise FlowError(f"{api_path!r} is not a notebook (.ipynb)")
    os_path = to_os_path(ApiPath(api_path), os.path.abspath(root_dir))
    if not is_inside(os_path, root_dir):
        raise FlowError(f"{api_path!r} is outside the server root")
    if not os.path.isfile(os_path):
        raise NotFound(f"no notebook at {api_path!r}")
    return os_path


def to_api(os_path: str, root_dir: str) -> str | None:
    """The server-relative path of a file, or None when it lies outside the root."""
    if not os_path or not is_inside(os_path, root_dir):
        return None
    rel = os.path.relpath(os.path.realpath(os_path), os.path.realpath(root_dir))
    return rel.replace(os.sep, "/")
