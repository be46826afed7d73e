"""Values that cross from a step in one language to a step in another, in a neutral format.

The format is JSON any language reads (R with jsonlite; see in_kernel.R for R's side), one document
per value: `{"jupyter_flow_value": 1, "value": V}` where V is one of

- `{"type": "null"}`: None / NULL
- `{"type": "vector", "class": C, "values": [...], "names": [...]?}` with C one of logical, integer,
  double, character; a missing element (None, NaN in pandas, NA in R) is `null`; R's NaN, Inf, -Inf
  are the strings "NaN", "Inf", "-Inf". A Python scalar is a vector of length 1 (`"scalar": true`).
- `{"type": "factor", "levels": [...], "codes": [1-based or null]}`: pandas Categorical / R factor
- `{"type": "matrix", "class": C, "dim": [rows, columns], "values": [column by column]}`
- `{"type": "table", "nrow": N, "columns": [{"name": ..., vector or factor}], "row_names": [...]?}`:
  pandas DataFrame / R data.frame, each column keeping its type
- `{"type": "list", "items": [V...], "names": [...]?}`: Python list / dict (string keys), R list /
  named list

What comes back to Python: an R vector of length 1 without names is a scalar (bool, int, float,
str, or None for NA); a longer one a numpy array (an integer vector with NA becomes float with
NaN, a logical or character one with NA an object array holding None); a named vector a dict; a
data.frame a pandas DataFrame (integer columns with NA as pandas' Int64, logical ones with NA as
boolean); a factor a pandas Categorical; a list a list, a named list a dict.

Anything else (a model object, a function, a datetime column) cannot cross: `check` names why.
Tables go through this JSON everywhere; `FORMATS` is the seam where a columnar format (Parquet,
Arrow IPC) plugs in where both sides have it.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import sys
import tempfile

WHAT_CROSSES = ("what can cross between languages: None, bool, int, float, str, lists and dicts (str keys) of "
                "those, numpy arrays (1-D, 2-D) of numbers, bools or str, pandas Series and DataFrames with int, "
                "float, bool, str or category columns")
_INT32 = 2 ** 31 - 1


class CannotCross(TypeError):
    """The value has no neutral form."""


def dumps(value) -> bytes:
    """The neutral document of a Python value (raises CannotCross, naming the part that cannot)."""
    return json.dumps({"jupyter_flow_value": 1, "value": encode(value)}, allow_nan=False,
                      separators=(",", ":")).encode()


def loads(data: bytes | str):
    """The Python value of a neutral document."""
    doc = json.loads(data)
    return decode(doc["value"])


def check(value) -> str | None:
    """None when `value` can cross, else why not (e.g. "a LogisticRegression")."""
    try:
        encode(value)
    except CannotCross as e:
        return str(e)
    return None


# -- Python -> neutral -------------------------------------------------------------------------------
def encode(value):
    if value is None:
        return {"type": "null"}
    if (isinstance(value, (numbers.Number, str)) or _is_bool(value)) and _scalar_class(value):
        return {"type": "vector", "class": _scalar_class(value), "values": [_element(value)], "scalar": True}
    pd = sys.modules.get("pandas")
    np = sys.modules.get("numpy")
    if pd is not None and isinstance(value, pd.DataFrame):
        return _table(value, pd)
    if pd is not None and isinstance(value, (pd.Series, pd.Categorical)):
        return _column(pd.Series(value), "the Series", pd)
    if np is not None and isinstance(value, np.ndarray):
        return _array(value, np)
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise CannotCross("a dict whose keys are not all str")
        return {"type": "list", "items": [encode(v) for v in value.values()], "names": list(value)}
    if isinstance(value, (list, tuple)):
        kinds = _kinds(value)
        if value and len(kinds) == 1 and None not in kinds and any(v is not None for v in value):
            kind = kinds.pop()
            if kind == "integer" and any(not isinstance(v, bool) and abs(int(v)) > _INT32 for v in value
                                         if v is not None):
                kind = "double"
            return {"type": "vector", "class": kind, "values": [_element(v) for v in value]}
        return {"type": "list", "items": [encode(v) for v in value]}
    raise CannotCross(f"a {type(value).__module__}.{type(value).__qualname__}".replace("builtins.", ""))


def _is_bool(v) -> bool:
    return isinstance(v, bool) or type(v).__module__ == "numpy" and type(v).__name__ in ("bool", "bool_")


def _kinds(values) -> set:
    """The R classes of a list's elements (None left out); ints with floats are doubles."""
    kinds = {_scalar_class(v) for v in values if v is not None}
    return {"double"} if kinds == {"integer", "double"} else kinds


def _scalar_class(v) -> str | None:
    if _is_bool(v):
        return "logical"
    if isinstance(v, numbers.Integral):
        return "integer" if abs(int(v)) <= _INT32 else "double"
    if isinstance(v, numbers.Real):
        return "double"
    if isinstance(v, str):
        return "character"
    return None


def _element(v):
    if v is None:
        return None
    if _is_bool(v):
        return bool(v)
    if isinstance(v, numbers.Integral):
        return int(v) if abs(int(v)) <= _INT32 else float(v)
    if isinstance(v, numbers.Real):
        return None if math.isnan(v) else float(v) if math.isfinite(v) else ("Inf" if v > 0 else "-Inf")
    return str(v)


def _array(a, np):
    if a.ndim not in (1, 2):
        raise CannotCross(f"a {a.ndim}-D numpy array (1-D and 2-D ones can)")
    if a.dtype.kind == "b":
        kind = "logical"
    elif a.dtype.kind in "iu":
        kind = "integer" if a.size == 0 or int(np.abs(a).max()) <= _INT32 else "double"
    elif a.dtype.kind == "f":
        kind = "double"
    elif a.dtype.kind in "US" or a.dtype.kind == "O" and all(isinstance(v, str) or v is None for v in a.flat):
        kind = "character"
    else:
        raise CannotCross(f"a numpy array of dtype {a.dtype}")
    values = [_element(v.item() if hasattr(v, "item") else v) for v in (a.ravel(order="F"))]
    if a.ndim == 2:
        return {"type": "matrix", "class": kind, "dim": list(a.shape), "values": values}
    return {"type": "vector", "class": kind, "values": values}


def _column(s, what: str, pd):
    dtype = s.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        levels = [str(v) for v in dtype.categories]
        codes = [None if c < 0 else int(c) + 1 for c in s.cat.codes]
        return {"type": "factor", "levels": levels, "codes": codes}
    kind = dtype.kind
    if kind == "b" or str(dtype) == "boolean":
        cls = "logical"
    elif kind in "iu" or str(dtype) in ("Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32"):
        big = s.dropna().abs().max() if s.notna().any() else 0
        cls = "integer" if int(big) <= _INT32 else "double"
    elif kind == "f" or str(dtype) in ("Float32", "Float64"):
        cls = "double"
    elif kind == "O" or str(dtype) == "string":
        if not all(isinstance(v, str) or _missing(v) for v in s):
            raise CannotCross(f"{what} holds values that are not all str")
        cls = "character"
    else:
        raise CannotCross(f"{what} has dtype {dtype}")
    return {"type": "vector", "class": cls, "values": [None if _missing(v) else _element(v) for v in s]}


def _missing(v) -> bool:
    if v is None:
        return True
    try:
        import pandas as pd  # lazy: 0.5 s; only a value in a table needs it

        return bool(pd.isna(v))
    except (TypeError, ValueError, ImportError):
        return False


def _table(df, pd):
    columns = []
    for name in df.columns:
        if not isinstance(name, str):
            raise CannotCross(f"a DataFrame whose column name {name!r} is not a str")
        columns.append({"name": name, **_column(df[name], f"column {name!r}", pd)})
    out = {"type": "table", "nrow": len(df), "columns": columns}
    if not (isinstance(df.index, pd.RangeIndex) and df.index.start == 0 and df.index.step == 1):
        out["row_names"] = [str(v) for v in df.index]
    return out


# -- neutral -> Python -------------------------------------------------------------------------------
def decode(v):
    kind = v["type"]
    if kind == "null":
        return None
    if kind == "list":
        items = [decode(i) for i in v["items"]]
        return dict(zip(v["names"], items)) if v.get("names") else items
    if kind == "table":
        import pandas as pd  # lazy: 0.5 s; only a table needs it

        data = {c["name"]: _series(c, pd) for c in v["columns"]}
        index = pd.Index(v["row_names"]) if v.get("row_names") else pd.RangeIndex(v.get("nrow", 0))
        return pd.DataFrame(data, index=index) if data else pd.DataFrame(index=index)
    if kind == "factor":
        import pandas as pd  # lazy: 0.5 s; only a factor needs it

        return pd.Categorical.from_codes([-1 if c is None else c - 1 for c in v["codes"]], v["levels"])
    values = [_from_element(x, v["class"]) for x in v["values"]]
    if kind == "matrix":
        return _numpy(values, v["class"]).reshape(v["dim"], order="F")
    if v.get("names"):
        return dict(zip(v["names"], values))
    if len(values) == 1:
        return values[0]
    return _numpy(values, v["class"])


def _from_element(x, cls):
    if x is None:
        return float("nan") if cls == "double" else None
    if cls == "double":
        return float(x) if not isinstance(x, str) else {"NaN": math.nan, "Inf": math.inf, "-Inf": -math.inf,
                                                        "NA": math.nan}[x]
    if cls == "integer":
        return int(x)
    if cls == "logical":
        return bool(x)
    return str(x)


def _numpy(values: list, cls: str):
    import numpy as np  # lazy: 0.4 s; only a vector or matrix needs it

    missing = any(x is None for x in values)
    if cls == "double" or cls == "integer" and missing:
        return np.array([math.nan if x is None else x for x in values], dtype=float)
    if cls == "integer":
        return np.array(values, dtype=np.int64)
    if cls == "logical" and not missing:
        return np.array(values, dtype=bool)
    return np.array(values, dtype=object)


def _series(c: dict, pd):
    if c["type"] == "factor":
        return pd.Categorical.from_codes([-1 if x is None else x - 1 for x in c["codes"]], c["levels"])
    values = [_from_element(x, c["class"]) for x in c["values"]]
    missing = any(x is None for x in values)
    dtype = {"integer": "Int64" if missing else "int64", "logical": "boolean" if missing else "bool",
             "double": "float64", "character": None}[c["class"]]  # text: pandas' own default (str in pandas 3)
    return pd.Series(values, dtype=dtype)


FORMATS = {"json": (dumps, loads)}  # name -> (dumps, loads); a Parquet/Arrow pair plugs in here


def message(name: str, why: str, producer: str, readers: list[str], language: str) -> str:
    """The error of a value that cannot cross: the value, both steps, what can cross."""
    steps = ", ".join(repr(r) for r in readers)
    return (f"{name!r} from step {producer!r} cannot cross to step {steps} ({language}): it is {why}; "
            f"{WHAT_CROSSES}. Convert it in step {producer!r} (e.g. to a DataFrame or a dict of numbers), or use "
            "it in a step of the same language")


def save_neutral(store, step: str, name: str, value, readers: dict[str, str]) -> str:
    """Store the neutral copy of `value` (for the steps `readers` {step: language}); its hash."""
    try:
        data = dumps(value)
    except CannotCross as e:
        languages = ", ".join(sorted(set(readers.values())))
        raise CannotCross(message(name, str(e), step, list(readers), languages)) from None
    fd, path = tempfile.mkstemp(prefix="jupyter-flow-neutral-", suffix=".json")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return store.save_file(path)[0]
    finally:
        os.remove(path)
