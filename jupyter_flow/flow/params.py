"""Parameter values for a run, read as papermill reads them: `-p NAME VALUE` (True/False/None, int,
float, else the text, whatever the default's type), `-r NAME TEXT`, `-y YAML`, `-b BASE64-YAML`,
`-f FILE`, or a dict; checked against the parameters cell before anything runs: an unknown name, or
text where a number or bool is expected, is an error; another type than the default's is passed as
given (as papermill passes it), with a warning."""
from __future__ import annotations

import base64
import binascii
import copy
from pathlib import Path

from jupyter_flow.errors import FlowError
from jupyter_flow.flow.dag import Flow, Parameter, build_flow

INJECTED = "injected-parameters"  # the tag of the cell papermill adds


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
    """A YAML (or JSON) file of values, read as papermill's -f reads it (dates stay text; any papermill URL)."""
    import yaml  # lazy: papermill.iorw costs 0.4 s; only a run given -f needs it
    from papermill.iorw import read_yaml_file

    try:
        data = read_yaml_file(path)
    except OSError as e:
        raise FlowError(f"-f {path}: cannot read it ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise FlowError(f"-f {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return _mapping(data, f"-f {path}")


def _yaml(text: str, origin: str) -> dict:
    import yaml  # lazy: papermill.iorw costs 0.4 s; only a run given -y or -b needs it
    from papermill.iorw import NoDatesSafeLoader

    try:
        return _mapping(yaml.load(text, Loader=NoDatesSafeLoader), origin)
    except yaml.YAMLError as e:
        raise FlowError(f"{origin}: not valid YAML ({str(e).splitlines()[0]})") from None


def _mapping(data, origin: str) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FlowError(f"{origin}: expected a mapping of parameter names to values, got {type(data).__name__}")
    return data


def from_options(parameters=(), raw=(), files=(), yaml_texts=(), base64_texts=(), inject: dict | None = None) -> list:
    """papermill's parameter options as (origin, name, value), in the order papermill's CLI applies them."""
    found = [("--inject-paths", name, value) for name, value in (inject or {}).items()]
    for text in base64_texts:
        try:
            decoded = base64.b64decode(text, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise FlowError(f"-b {text[:20]}: not base64 of a YAML text; make it with `base64 -w0 params.yaml`") \
                from None
        found += [("-b", k, v) for k, v in _yaml(decoded, "-b").items()]
    for path in files:
        found += [(f"-f {Path(path).name}", k, v) for k, v in load_file(path).items()]
    for text in yaml_texts:
        found += [("-y", k, v) for k, v in _yaml(text, f"-y {text[:30]!r}").items()]
    found += [("-p", name, parse_cli_value(text)) for name, text in parameters]
    found += [("-r", name, text) for name, text in raw]
    return found


def replace_injected(flow: Flow, build=None) -> Flow:
    """The flow papermill runs when given parameters: it replaces an `injected-parameters` cell (a
    papermill output used as input), so that cell's values are not defaults. The cell stays in place,
    as skipped, so that the notebook's cells keep their places. `build(raw)`: the flow of the changed
    notebook (default: `build_flow` at the same path)."""
    raw = flow.notebook.raw
    if not flow.notebook.python or not any(INJECTED in _tags(c) for c in raw["cells"]):
        return flow  # a notebook in another language runs as it is: the step's papermill replaces the cell
    raw = copy.deepcopy(raw)
    for cell in raw["cells"]:
        if INJECTED in _tags(cell):
            cell["metadata"]["tags"] = ["skip" if t == INJECTED else t for t in cell["metadata"]["tags"]]
    return build(raw) if build else build_flow(flow.path, raw=raw)


def _tags(cell: dict) -> list:
    return (cell.get("metadata") or {}).get("tags") or []


def resolve(flow: Flow, given: dict | None = None, cli: list | None = None, files: list[str] | None = None) -> dict:
    """The run's parameter values: the parameters cell's literal defaults, then `overrides`. A default
    that is an expression (`items = list(range(200))`) is left out unless overridden: the parameters
    cell computes it in the kernel, as papermill does."""
    defaults = {n: p.value for n, p in flow.parameters.items() if p.type != "expression"}
    return {**defaults, **overrides(flow, given, cli, files)}


def given_values(given: dict | None = None, cli: list | None = None, files: list[str] | None = None) -> list:
    """The values given for a run as (origin, name, value), one per name, the last given winning:
    files, then `given`, then `cli` (-p pairs (NAME, TEXT), or triples from `from_options`)."""
    found: dict = {}
    for path in files or []:
        found.update({k: (f"-f {Path(path).name}", v) for k, v in load_file(path).items()})
    found.update({k: ("parameter", v) for k, v in (given or {}).items()})
    for entry in cli or []:
        origin, name, value = entry if len(entry) == 3 else ("-p", entry[0], parse_cli_value(entry[1]))
        found[name] = (origin, value)
    return [(origin, name, value) for name, (origin, value) in found.items()]


def overrides(flow: Flow, given: dict | None = None, cli: list | None = None, files: list[str] | None = None) -> dict:
    """The values given for the run, checked: files, then `given`, then `cli` (last wins); `cli` holds
    -p pairs (NAME, TEXT), or (origin, name, value) triples from `from_options`. Only these are
    injected after the parameters cell, as papermill injects them (a default the cell changes after
    assigning it stays changed)."""
    values: dict = {}
    for origin, name, value in given_values(given, cli, files):
        if not flow.notebook.python:  # papermill's way: its translator writes any value in that language
            values[name] = value
            continue
        if name not in flow.parameters:
            valid = ", ".join(flow.parameters) or "none (the notebook has no parameters cell)"
            raise FlowError(f"{origin} {name}: {flow.path.name} has no parameter {name!r}; its parameters: {valid}")
        values[name] = _check(flow, flow.parameters[name], value, origin)
    return values


def _check(flow: Flow, param: Parameter, value, origin: str):
    """`value` as given (papermill passes it so). Text where the default is a number or bool is an
    error (`-p epochs abc`; -r passes text on purpose); another type than the default's is a warning."""
    expected, got = param.type, type(value).__name__
    if (expected in ("expression", "NoneType") or value is None or got == expected
            or (expected, got) == ("float", "int")):
        return value
    raw_hint = f"; -r {param.name} {value} passes it as text" if origin == "-p" else ""
    yaml_hint = f"; -y '{param.name}: {value}' passes it as YAML"
    if got == "str" and expected in ("int", "float", "bool") and origin != "-r":
        raise FlowError(f"{origin} {param.name}: expected {_article(expected)} like {param.source}, got {value!r} "
                        f"(str){raw_hint}")
    flow.warnings.append(f"{origin} {param.name}: {value!r} is {_article(got)} where the parameters cell has "
                         f"{_article(expected)} ({param.source}); it is passed as given, as papermill passes it"
                         f"{yaml_hint if got == 'str' and origin == '-p' else raw_hint}")
    return value


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"
