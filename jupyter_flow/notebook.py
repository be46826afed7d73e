"""Read a notebook and turn its cell tags into blocks: steps, shared cells, parameters, metrics.

Plain `json` is enough here (and much faster to import than nbformat). Every error names the
cell at fault as users see it: its 1-based position and first line.
"""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import FlowError
from .store.layout import check_flow_name

NAME = r"[a-z_][a-z0-9_]*"
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"

# The tag grammar: every tag we own matches exactly one of these anchored patterns.
TAG_RULES: list[tuple[str, re.Pattern]] = [
    ("step", re.compile(rf"^(?:step|block):(?P<name>{NAME})$")),
    ("prev", re.compile(rf"^prev:(?P<name>{NAME})$")),
    ("shared", re.compile(r"^(?P<kind>imports|functions)$")),
    ("parameters", re.compile(r"^(?:parameters|pipeline-parameters|injected-parameters)$")),
    ("metrics", re.compile(r"^pipeline-metrics$")),
    ("skip", re.compile(r"^skip$")),
    ("foreach", re.compile(rf"^foreach:(?:(?P<item>{IDENT})=)?(?P<var>{IDENT})$")),
    ("retry", re.compile(r"^retry:(?P<value>\d+)$")),
    ("timeout", re.compile(r"^timeout:(?P<value>\d+(?:\.\d+)?)$")),
    ("catch", re.compile(r"^catch$")),
    ("kernel", re.compile(r"^kernel:(?P<value>[A-Za-z0-9_.\-]+)$")),
    ("limit", re.compile(r"^limit:(?P<resource>cpu|memory|gpu):(?P<value>\d+(?:\.\d+)?(?:[KMGT]i?)?)$")),
    ("cache", re.compile(r"^cache:disabled$")),
    ("executor", re.compile(r"^executor:local$")),
]
_PREFIX_HINTS = {
    "step": f"step:NAME where NAME matches {NAME} (lower case, digits, _), e.g. step:train",
    "block": f"block:NAME where NAME matches {NAME}",
    "prev": "prev:NAME naming another step, e.g. prev:load",
    "foreach": "foreach:VAR or foreach:ITEM=VAR (Python names), e.g. foreach:lr=learning_rates",
    "retry": "retry:N with N a whole number, e.g. retry:2",
    "timeout": "timeout:SECONDS, e.g. timeout:600",
    "kernel": "kernel:NAME naming an installed kernelspec (see `jupyter kernelspec list`)",
    "limit": "limit:cpu:N, limit:memory:4Gi or limit:gpu:1",
    "cache": "cache:disabled",
    "executor": "executor:local",
}
_WORDS = ["imports", "functions", "parameters", "pipeline-parameters", "pipeline-metrics", "skip", "catch"]
BLOCK_KINDS = ("step", "shared", "parameters", "metrics", "skip")


@dataclass
class Cell:
    index: int  # position in the notebook, 0-based (messages show index + 1)
    id: str
    source: str
    tags: list[str]

    def label(self) -> str:
        first = next((line.strip() for line in self.source.splitlines() if line.strip()), "")
        if len(first) > 40:
            first = first[:37] + "..."
        return f"cell {self.index + 1} ({first!r})" if first else f"cell {self.index + 1}"


@dataclass
class StepBlock:
    name: str
    cells: list[Cell] = field(default_factory=list)
    prev: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    option_cells: dict = field(default_factory=dict)  # option -> cell that set it (for messages)


@dataclass
class Notebook:
    path: Path
    name: str  # the flow name
    kernel: str
    raw: dict
    steps: dict[str, StepBlock]
    shared: list[Cell]
    parameters: Cell | None
    metrics: list[Cell]
    skipped: list[Cell]
    tagged_steps: bool  # False when the notebook has no step tags (it runs as one step)


def read(path: str | Path) -> Notebook:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FlowError(f"{path}: no such notebook; check the path") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise FlowError(f"{path}: cannot read it as a notebook ({e.__class__.__name__})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise FlowError(
            f"{path} is not valid notebook JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
            "restore it from version control or re-save it in Jupyter") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list):
        raise FlowError(f"{path} is not a Jupyter notebook (no 'cells' list); is it an .ipynb file?")
    _check_shape(raw, path)
    if raw.get("nbformat", 4) < 4:
        raise FlowError(f"{path} is an nbformat v{raw.get('nbformat')} notebook; open and save it in "
                        "Jupyter to upgrade it to v4")
    return parse(raw, path)


def _check_shape(raw: dict, path: Path) -> None:
    """The parts of the notebook format we read have the types nbformat's schema gives them."""
    fix = "fix it in a text editor or re-save the notebook in Jupyter"
    if not isinstance(raw.get("nbformat", 4), int) or isinstance(raw.get("nbformat"), bool):
        raise FlowError(f"{path}: 'nbformat' must be a whole number (4), not {raw['nbformat']!r}; {fix}")
    meta = raw.get("metadata", {})
    if not isinstance(meta, dict):
        raise FlowError(f"{path}: the notebook's 'metadata' must be a JSON object, not {type(meta).__name__}; {fix}")
    for name in ("jupyter_flow", "kernelspec"):
        if meta.get(name) is not None and not isinstance(meta[name], dict):
            raise FlowError(f"{path}: metadata.{name} must be a JSON object, not {type(meta[name]).__name__}; {fix}")
    for i, cell in enumerate(raw["cells"]):
        if isinstance(cell, dict) and not isinstance(cell.get("metadata", {}), dict):
            raise FlowError(f"{path}: cell {i + 1} has 'metadata' that is not a JSON object; {fix}")


def flow_name(raw: dict, path: Path) -> str:
    meta = raw.get("metadata", {}).get("jupyter_flow") or {}
    name = meta.get("flow") or meta.get("name") or path.stem
    return check_flow_name(re.sub(r"[^A-Za-z0-9_.-]", "_", str(name)) or "flow")


def parse(raw: dict, path: Path) -> Notebook:
    cells = _code_cells(raw, path)
    tagged_steps = any(_classify(c, t)[0] == "step" for c in cells for t in c.tags)
    steps: dict[str, StepBlock] = {}
    shared: list[Cell] = []
    metrics: list[Cell] = []
    skipped: list[Cell] = []
    parameters: Cell | None = None
    current: str | None = None  # "shared", "step:NAME" or None: where untagged cells go
    if not tagged_steps:
        steps["main"] = StepBlock("main")
        current = "step:main"
    for cell in cells:
        parsed = [(t, *_classify(cell, t)) for t in cell.tags]
        kinds = [(tag, kind, m) for tag, kind, m in parsed if kind in BLOCK_KINDS]
        if len(kinds) > 1:
            raise FlowError(f"{cell.label()} has tags {kinds[0][0]!r} and {kinds[1][0]!r} that put it in two "
                            "places; keep one of them")
        kind, match = (kinds[0][1], kinds[0][2]) if kinds else (None, None)
        if kind == "skip":
            skipped.append(cell)
            continue
        if kind == "parameters":
            if parameters is not None and "injected-parameters" not in cell.tags:
                raise FlowError(f"{cell.label()} is a second parameters cell ({parameters.label()} is the "
                                "first); merge them into one cell tagged 'parameters'")
            if parameters is None:
                parameters = cell
            else:
                parameters = Cell(parameters.index, parameters.id,
                                  parameters.source + "\n" + cell.source, parameters.tags)
            continue
        if kind == "metrics":
            metrics.append(cell)
            continue
        if kind == "shared" and not tagged_steps:
            steps["main"].cells.append(cell)  # one step: the notebook's own order is kept
        elif kind == "shared":
            shared.append(cell)
            current = "shared"
        elif kind == "step":
            name = match["name"]
            steps.setdefault(name, StepBlock(name)).cells.append(cell)
            current = f"step:{name}"
        elif current == "shared":
            shared.append(cell)
        elif current is None:
            raise FlowError(f"{cell.label()} belongs to no step: tag it step:NAME, imports, functions or skip "
                            "(untagged cells join the step or shared block above them)")
        else:
            steps[current[5:]].cells.append(cell)
        options = [(tag, k, m) for tag, k, m in parsed if k not in BLOCK_KINDS and k is not None]
        if options:
            if current is None or not current.startswith("step:"):
                raise FlowError(f"{cell.label()}: tag {options[0][0]!r} applies to a step, but this cell is not in "
                                "one; put it on the cell tagged step:NAME")
            if not tagged_steps and any(k == "prev" for _, k, _ in options):
                raise FlowError(f"{cell.label()}: prev: needs steps; tag cells step:NAME first")
            _add_options(steps[current[5:]], cell, options)
    for block in steps.values():
        block.cells = sorted(block.cells, key=lambda c: c.index)
    return Notebook(path=path, name=flow_name(raw, path), kernel=_kernel_name(raw), raw=raw, steps=steps,
                    shared=shared, parameters=parameters, metrics=metrics, skipped=skipped,
                    tagged_steps=tagged_steps)


def _code_cells(raw: dict, path: Path) -> list[Cell]:
    cells = []
    for i, c in enumerate(raw["cells"]):
        if not isinstance(c, dict) or "cell_type" not in c:
            raise FlowError(f"{path}: cell {i + 1} is malformed (no cell_type); re-save the notebook in Jupyter")
        if c["cell_type"] != "code":
            continue
        source = c.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        tags = c.get("metadata", {}).get("tags", []) or []
        if not isinstance(tags, list):
            raise FlowError(f"{path}: cell {i + 1} has metadata.tags that is not a list; fix it in the cell's "
                            "metadata")
        if not source.strip() and not tags:
            continue  # empty cells are nobody's business
        cells.append(Cell(index=i, id=str(c.get("id", i)), source=source, tags=[str(t).strip() for t in tags]))
    return cells


def _classify(cell: Cell, tag: str) -> tuple[str | None, re.Match | None]:
    """(kind, match) for a tag of ours; (None, None) for a foreign tag. Raises on a near miss."""
    for kind, pattern in TAG_RULES:
        m = pattern.match(tag)
        if m:
            return kind, m
    prefix, colon, _ = tag.partition(":")
    if colon:
        if prefix in _PREFIX_HINTS:
            raise FlowError(f"{cell.label()}: malformed tag {tag!r}; write {_PREFIX_HINTS[prefix]}")
        near = difflib.get_close_matches(prefix, list(_PREFIX_HINTS), n=1, cutoff=0.7)
        if near:
            raise FlowError(f"{cell.label()}: unknown tag {tag!r}; did you mean {near[0] + tag[len(prefix):]!r}?")
    else:
        near = difflib.get_close_matches(tag, _WORDS + list(_PREFIX_HINTS), n=1, cutoff=0.8)
        if near and near[0] != tag:
            hint = _PREFIX_HINTS.get(near[0], repr(near[0]))
            raise FlowError(f"{cell.label()}: unknown tag {tag!r}; did you mean {hint}?")
    return None, None


def _add_options(block: StepBlock, cell: Cell, options: list) -> None:
    for tag, kind, m in options:
        if kind == "prev":
            if m["name"] not in block.prev:
                block.prev.append(m["name"])
            continue
        if kind == "limit":
            block.options.setdefault("limit", {})[m["resource"]] = m["value"]
            continue
        value = {
            "foreach": lambda: {"var": m["var"], "item": m["item"] or "item"},
            "retry": lambda: int(m["value"]),
            "timeout": lambda: float(m["value"]),
            "catch": lambda: True,
            "kernel": lambda: m["value"],
            "cache": lambda: False,
            "executor": lambda: "local",
        }[kind]()
        if kind in block.options and block.options[kind] != value:
            raise FlowError(f"{cell.label()}: step {block.name!r} already has {kind} set by "
                            f"{block.option_cells[kind].label()}; keep one {kind}: tag")
        block.options[kind] = value
        block.option_cells[kind] = cell


def _kernel_name(raw: dict) -> str:
    return (raw.get("metadata", {}).get("kernelspec") or {}).get("name") or "python3"
