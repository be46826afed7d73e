"""Parameter values for a run: `-p NAME VALUE` (parsed as papermill does), `-f file.yaml`, or a dict,
checked against the parameters cell: unknown names and wrong types are errors before anything runs."""
from __future__ import annotations

import ast
from pathlib import Path

from .dag import Flow, Parameter
from .errors import FlowError


def parse_cli_value(raw: str):
    """papermill's reading of a -p value: True/False/None, int, float, else the string."""
    if raw in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[raw]
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def load_file(path: str) -> dict:
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise FlowError(f"-f {path}: cannot read it ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise FlowError(f"-f {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FlowError(f"-f {path}: expected a mapping of parameter names to values, got {type(data).__name__}")
    return data


def resolve(flow: Flow, given: dict | None = None, cli: list[tuple[str, str]] | None = None,
            files: list[str] | None = None) -> dict:
    """The run's parameter values: defaults, then files, then `given`, then -p pairs (last wins).
    A default that is an expression (`items = list(range(200))`) is left out unless overridden: the
    parameters cell computes it in the kernel, as papermill does."""
    values = {n: p.value for n, p in flow.parameters.items() if p.type != "expression"}
    overrides: dict = {}
    for path in files or []:
        overrides.update({k: (v, f"-f {Path(path).name}") for k, v in load_file(path).items()})
    overrides.update({k: (v, "parameter") for k, v in (given or {}).items()})
    for name, raw in cli or []:
        overrides[name] = (raw, "-p")
    for name, (value, origin) in overrides.items():
        if not flow.notebook.python:  # papermill's way: its translator writes any value in that language
            values[name] = parse_cli_value(value) if origin == "-p" else value
            continue
        if name not in flow.parameters:
            valid = ", ".join(flow.parameters) or "none (the notebook has no parameters cell)"
            raise FlowError(f"{origin} {name}: {flow.path.name} has no parameter {name!r}; its parameters: {valid}")
        values[name] = _coerce(flow.parameters[name], value, origin, from_text=origin == "-p")
    return values


def _coerce(param: Parameter, value, origin: str, from_text: bool):
    expected = param.type
    if from_text:
        parsed = parse_cli_value(value)
        if expected == "str":
            return value
        if expected in ("list", "dict", "tuple") and isinstance(parsed, str):
            try:
                parsed = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                pass
        value = parsed
    if expected in ("expression", "NoneType") or value is None:
        return value
    if expected == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value).__name__ == expected:
        return value
    raise FlowError(f"{origin} {param.name}: expected {_article(expected)} like {param.source}, "
                    f"got {value!r} ({type(value).__name__})")


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"
