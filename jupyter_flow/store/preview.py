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
    dtypes = getattr(value, "dtypes", None)
    if dtype is not None and not callable(dtype):
        info["dtype"] = str(dtype)
    elif dtypes is not None and hasattr(dtypes, "value_counts"):  # a DataFrame: its column types, counted
        info["dtype"] = ", ".join(f"{d}({n})" for d, n in dtypes.astype(str).value_counts().items())
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        info["nbytes"] = nbytes
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


BOUNDARIES = " \n,;)]}"


def cut(text: str, width: int) -> str:
    """`text` in at most `width` characters, cut after a whole token and ended with `…`."""
    if len(text) <= width:
        return text
    head = text[:width - 1]
    if text[width - 1] in BOUNDARIES:  # the last token is whole
        return head.rstrip() + "…"
    boundary = max(head.rfind(c) for c in BOUNDARIES)
    return (head[:boundary + 1] if boundary > 0 else head).rstrip() + "…"


def elide(text: str, width: int) -> str:
    """`text` on one line, at most `width` characters, cut after a whole token and ended with `…`."""
    lines = str(text).splitlines() or [""]
    return cut(lines[0] + (" …" if len(lines) > 1 else ""), width)


def summary(meta: dict, value_width: int = 0) -> str:
    """What a stored value is: type, shape or length, dtype (`ndarray (569, 30) float64`), and its
    preview when that is one line of at most `value_width` characters (`int 69`)."""
    if "missing" in meta:
        return f"missing: {meta['missing']}"
    parts = [meta.get("type") or "?"]
    if "shape" in meta:
        parts.append("(" + ", ".join(map(str, meta["shape"])) + ("," if len(meta["shape"]) == 1 else "") + ")")
    elif "length" in meta:
        parts.append(f"len {meta['length']}")
    if meta.get("dtype"):
        parts.append(str(meta["dtype"]))
    preview = meta.get("preview") or ""
    if "shape" not in meta and "\n" not in preview and 0 < len(preview) <= value_width:
        parts.append(preview)
    return " ".join(parts)


def _short_repr(value) -> str:
    module = type(value).__module__.split(".")[0]
    if module == "numpy" and hasattr(value, "shape"):
        import numpy  # lazy: loaded already (the value is numpy's); never imported for other values

        with numpy.printoptions(threshold=12, edgeitems=2, precision=4, linewidth=72):
            text = repr(value)
    elif module == "pandas" and hasattr(value, "shape"):
        import pandas  # lazy: loaded already (the value is pandas'); never imported for other values

        with pandas.option_context("display.max_rows", 6, "display.max_columns", 6, "display.width", 100):
            text = repr(value)
    else:
        text = _repr.repr(value)
    lines = text.splitlines()
    if len(lines) > 8:
        text = "\n".join(lines[:8]) + "\n…"
    return cut(text, 600)
