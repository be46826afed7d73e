"""A short, JSON-safe description of a value, made when it is saved, so readers never unpickle."""
from __future__ import annotations

import reprlib

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 120
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 8


def type_name(value) -> str:
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__.split('.')[0]}.{t.__qualname__}"


def describe(value) -> dict:
    info: dict = {"type": type_name(value)}
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple):
        info["shape"] = list(shape)
    dtype = getattr(value, "dtype", None)
    if dtype is not None and not callable(dtype):
        info["dtype"] = str(dtype)
    if isinstance(value, (list, tuple, dict, set, frozenset, str, bytes)):
        info["length"] = len(value)
    elif (shape is None or len(shape) == 1 or type(value).__module__ == "numpy") and hasattr(value, "__len__"):
        try:
            info["length"] = len(value)
        except Exception:  # noqa: BLE001 - a broken __len__ (or a 0-d array) only costs us the length
            pass
    try:
        info["preview"] = _short_repr(value)
    except Exception as e:  # noqa: BLE001 - any repr may fail; the preview says so
        info["preview"] = f"<repr failed: {e.__class__.__name__}>"
    if isinstance(value, (bool, int, float)) and not isinstance(value, complex):
        info["scalar"] = value
    return info


def _short_repr(value) -> str:
    if "shape" in dir(type(value)) and hasattr(value, "dtype"):  # arrays and frames: their own summary
        text = repr(value)
    else:
        text = _repr.repr(value)
    lines = text.splitlines()
    text = "\n".join(lines[:6]) + ("\n..." if len(lines) > 6 else "")
    return text if len(text) <= 300 else text[:297] + "..."
