"""Read a notebook and turn its cell tags into blocks: steps, shared cells, parameters, metrics.

Plain `json` is enough here (and much faster to import than nbformat). Every error names the
cell at fault as users see it: its 1-based position and first line. The grammar is Kubeflow Kale's
(kale/processors/nbprocessor.py), tag for tag, plus our own step options; whatever Kale accepts
but jupyter_flow does not use is a warning naming the cell, never dropped silently.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_flow.errors import FlowError
from jupyter_flow.flow import languages
from jupyter_flow.flow.analysis import analyze
from jupyter_flow.flow.kernelspecs import notebook_kernel, requirement
from jupyter_flow.store.layout import STEP_NAME_PATTERN as NAME
from jupyter_flow.store.layout import check_flow_name

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_K8S_SEGMENT = r"[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?"
K8S_KEY = rf"{_K8S_SEGMENT}(?:/{_K8S_SEGMENT})?"

# The tag grammar: every tag we own matches exactly one of these anchored patterns.
TAG_RULES: list[tuple[str, re.Pattern]] = [
    # Kale: `step:`/`block:` with no name is an untagged cell (it continues the block above).
    ("step", re.compile(rf"^(?:step|block):(?P<name>{NAME})?$")),
    # prev:NAME, or prev:OTHER.ipynb:NAME for a step of another notebook of the flow (see several.py)
    ("prev", re.compile(rf"^prev:(?:(?P<notebook>[^:\s]+\.ipynb):)?(?P<name>{NAME})$")),
    ("shared", re.compile(r"^(?P<kind>imports|functions)$")),
    ("parameters", re.compile(r"^(?:parameters|pipeline-parameters|injected-parameters)$")),
    ("metrics", re.compile(r"^pipeline-metrics$")),
    ("skip", re.compile(r"^skip$")),
    ("foreach", re.compile(rf"^foreach:(?:(?P<item>{IDENT})=)?(?P<var>{IDENT})$")),
    ("retry", re.compile(r"^retry:(?P<value>\d+)$")),
    ("timeout", re.compile(r"^timeout:(?P<value>\d+(?:\.\d+)?)$")),
    ("catch", re.compile(r"^catch$")),
    ("kernel", re.compile(r"^kernel:(?P<value>[A-Za-z0-9_.\-]+)$")),
    # Kale's form: a Kubernetes resource name and quantity (limit:nvidia.com/gpu:1, limit:cpu:500m).
    ("limit", re.compile(r"^limit:(?P<resource>[_a-z\-./]+):(?P<value>[_a-zA-Z0-9.]+)$")),
    # Kale's pod annotations and labels: accepted, not used here (a warning says so).
    ("pod", re.compile(rf"^(?P<what>annotation|label):(?P<key>{K8S_KEY}):(?P<value>.*)$")),
    ("cache", re.compile(r"^cache:(?P<value>disabled|trust)$")),  # trust: reuse it though it used the network
    ("executor", re.compile(r"^executor:local$")),
    ("pip", re.compile(r"^pip:(?P<value>.+)$")),  # a requirement (checked by packaging) for the step's own env
    ("secret", re.compile(rf"^secret:(?P<name>{IDENT})$")),  # an environment variable holding a secret (any cell)
]
_PREFIX_HINTS = {
    "step": f"step:NAME where NAME matches {NAME} (lower case, digits, _), e.g. step:train",
    "block": f"block:NAME where NAME matches {NAME}",
    "prev": "prev:NAME naming another step, e.g. prev:load, or prev:OTHER.ipynb:NAME for a step of another notebook",
    "foreach": "foreach:VAR or foreach:ITEM=VAR (Python names), e.g. foreach:lr=learning_rates",
    "retry": "retry:N with N a whole number, e.g. retry:2",
    "timeout": "timeout:SECONDS, e.g. timeout:600",
    "kernel": "kernel:NAME naming an installed kernelspec (see `jupyter kernelspec list`)",
    "limit": "limit:RESOURCE:AMOUNT, e.g. limit:cpu:2, limit:cpu:500m, limit:memory:4Gi, limit:nvidia.com/gpu:1",
    "annotation": "annotation:KEY:VALUE with a Kubernetes key, e.g. annotation:team:ml",
    "label": "label:KEY:VALUE with a Kubernetes key, e.g. label:access-ml-pipeline:true",
    "cache": "cache:disabled or cache:trust",
    "executor": "executor:local",
    "pip": "pip:REQUIREMENT, e.g. pip:six==1.16.0 or pip:scikit-learn>=1.5",
    "secret": "secret:NAME naming an environment variable, e.g. secret:DATABASE_URL",
}
_WORDS = ["imports", "functions", "parameters", "pipeline-parameters", "pipeline-metrics", "skip", "catch"]
BLOCK_KINDS = ("step", "shared", "parameters", "metrics", "skip")
GPUS = ("gpu", "nvidia.com/gpu", "amd.com/gpu")  # Kale's vendor resource names are our gpu count
_QUANTITY = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(?:e(\d+))?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")
_UNITS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
          **{f"{p}i": 1024 ** (i + 1) for i, p in enumerate("KMGTPE")}}


@dataclass
class Cell:
    index: int  # position in the notebook, 0-based (messages show index + 1)
    id: str
    source: str
    tags: list[str]
    notebook: str = ""  # in a flow of several notebooks (see several.py): the one the cell is in,
    position: int | None = None  # and its place there (`index` is then its place in the whole flow)

    def label(self) -> str:
        first = next((line.strip() for line in self.source.splitlines() if line.strip()), "")
        if len(first) > 40:
            first = first[:37] + "..."
        where = f"{self.notebook} cell {self.position + 1}" if self.notebook and self.position is not None \
            else f"cell {self.index + 1}"
        return f"{where} ({first!r})" if first else where


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
    language: str = "python"  # the kernel's language, from the notebook's metadata
    warnings: list[str] = field(default_factory=list)  # what was accepted but not used, cell by cell
    secrets: list[str] = field(default_factory=list)  # environment variables named secret (see secrets.py)
    notebooks: list[str] = field(default_factory=list)  # the notebooks of a flow of several, in order

    @property
    def python(self) -> bool:
        return self.language.lower() in languages.PYTHON_LANGUAGES


def read(path: str | Path) -> Notebook:
    """The notebook at `path` alone (several.read joins it with the other notebooks of its flow)."""
    return parse(load(path), Path(path))


def load(path: str | Path) -> dict:
    """The notebook's JSON, checked to be a v4 notebook."""
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
    return raw


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
    """The notebook's blocks, the notebook alone (several.parse joins it with the other notebooks of its flow)."""
    cells = _code_cells(raw, path)
    parsed = [(cell, [(t, *_classify(cell, t)) for t in cell.tags]) for cell in cells]
    secrets = _secret_names(raw, path, parsed)
    parsed = [(cell, [tag for tag in tags if tag[1] != "secret"]) for cell, tags in parsed]
    named = [(cell, tag) for cell, tags in parsed for tag, kind, m in tags if kind == "step" and m["name"]]
    nb = Notebook(path=path, name=flow_name(raw, path), kernel=notebook_kernel(raw), raw=raw, steps={}, shared=[],
                  parameters=None, metrics=[], skipped=[], tagged_steps=bool(named), language=_language(raw),
                  secrets=secrets)
    if not languages.supported(nb.language):
        if named:
            cell, tag = named[0]
            raise FlowError(f"{cell.label()}: tag {tag!r} needs a Python kernel, but this notebook's kernel "
                            f"{nb.kernel!r} runs {nb.language}; remove its step tags to run it as one step, as "
                            "papermill does")
        nb.steps["main"] = StepBlock("main", cells)  # papermill's way: the notebook as it is, in one kernel
        return nb
    defaults = _steps_defaults(raw, nb.warnings)
    current: str | None = None  # "shared", "step:NAME" or None: where untagged cells go
    leading: list[Cell] = []  # untagged cells before the first step
    if not nb.tagged_steps:
        nb.steps["main"] = StepBlock("main")
        current = "step:main"
    for cell, tags in parsed:
        kind, m = _block(cell, tags, nb.warnings)
        if kind == "shared" and not nb.tagged_steps:
            kind = None  # one step: the notebook's own order is kept
        if kind in ("skip", "parameters", "metrics", "shared"):
            _ignore_options(cell, tags, f"a {_block_tag(tags)} cell", nb.warnings)
        if kind == "skip":
            nb.skipped.append(cell)
            continue
        if kind == "parameters":
            _add_parameters(nb, cell)
            current = current or "shared"  # Kale: cells after it join the parameters, which every step has
            continue
        if kind == "metrics":
            nb.metrics.append(cell)
            continue
        if kind == "shared":
            nb.shared.append(cell)
            current = "shared"
        elif kind == "step":
            nb.steps.setdefault(m["name"], StepBlock(m["name"])).cells.append(cell)
            current = f"step:{m['name']}"
        elif current == "shared":
            nb.shared.append(cell)
        elif current is None:
            leading.append(cell)
            _ignore_options(cell, tags, "a cell that does not run", nb.warnings)
            continue
        else:
            nb.steps[current[5:]].cells.append(cell)
        if current.startswith("step:"):
            options = [(tag, k, m) for tag, k, m in tags if k not in BLOCK_KINDS and k is not None]
            if kind != "step" and nb.tagged_steps:
                _ignore_options(cell, [o for o in options if o[1] == "prev"],
                                "a cell that continues a step (Kale reads prev: only where a step starts)",
                                nb.warnings)
                options = [o for o in options if o[1] != "prev"]
            if not nb.tagged_steps and any(k == "prev" for _, k, _ in options):
                raise FlowError(f"{cell.label()}: prev: needs steps; tag cells step:NAME first")
            _add_options(nb.steps[current[5:]], cell, options, nb.warnings)
        elif kind is None:
            _ignore_options(cell, tags, "a cell that continues the shared cells", nb.warnings)
    _before_parameters(nb, leading)
    for block in nb.steps.values():
        block.cells = sorted(block.cells, key=lambda c: c.index)
        if "pip" in block.options and "kernel" in block.options:
            raise FlowError(f"{block.option_cells['pip'].label()}: step {block.name!r} has both pip: and kernel: "
                            "tags; a pip: step runs in an environment of its own on the runner's Python; keep one")
        for resource, amount in defaults.items():
            block.options.setdefault("limit", {}).setdefault(resource, amount)
    return nb


def _secret_names(raw: dict, path: Path, parsed: list) -> list[str]:
    """The environment variables the notebook names secret, besides those whose names say so:
    metadata `jupyter_flow.execution.secrets` (a list of names) and `secret:NAME` tags on any cell."""
    names = (raw.get("metadata", {}).get("jupyter_flow") or {}).get("secrets", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and re.fullmatch(IDENT, n) for n in names):
        raise FlowError(f"{path}: metadata.jupyter_flow.secrets must be a list of environment variable names, "
                        f'e.g. ["DATABASE_URL"], not {names!r}; fix it in the notebook\'s metadata')
    tagged = [m["name"] for _, tags in parsed for _, kind, m in tags if kind == "secret"]
    return sorted({*names, *tagged})


def _before_parameters(nb: Notebook, leading: list[Cell]) -> None:
    """Cells above the parameters cell run before it, as top to bottom. In a notebook without step
    tags they are the shared cells of its one step. In a tagged notebook, untagged cells before the
    first step do not run (as in Kale; typically `!pip install`), except those defining a name the
    parameters cell uses (`import os` above `base = os.path.join(...)`): they join the shared cells."""
    params = nb.parameters
    if params is not None and not nb.tagged_steps:
        main = nb.steps["main"]
        nb.shared = [c for c in main.cells if c.index < params.index]
        main.cells = [c for c in main.cells if c.index > params.index]
    needed: list[Cell] = []
    if params is not None and leading:
        try:
            wanted = set(analyze([params.source]).reads)
            for cell in reversed([c for c in leading if c.index < params.index]):
                usage = analyze([cell.source])
                if wanted & set(usage.writes):
                    needed.append(cell)
                    wanted |= set(usage.reads)
        except SyntaxError:
            needed = []  # reported where the cell is analysed
    nb.shared = sorted(nb.shared + needed, key=lambda c: c.index)
    for cell in leading:
        if cell not in needed:
            nb.skipped.append(cell)
            nb.warnings.append(f"{cell.label()} comes before the first step and has no tag, so it does not run "
                               "(Kale ignores it too); tag it imports, step:NAME or skip")


def _block(cell: Cell, tags: list, warnings: list[str]) -> tuple[str | None, re.Match | None]:
    """Which block a cell's tags put it in. Kale: skip, imports, functions, pipeline-parameters and
    pipeline-metrics win over a step name; `step:`/`block:` with no name is no block (untagged)."""
    special = {tag: (kind, m) for tag, kind, m in tags if kind in BLOCK_KINDS and kind != "step"}
    names = {m["name"]: (tag, m) for tag, kind, m in tags if kind == "step" and m["name"]}
    if len(special) > 1 or len(names) > 1:
        both = list(special) + [tag for tag, _ in names.values()]
        raise FlowError(f"{cell.label()} has tags {both[0]!r} and {both[1]!r} that put it in two places; "
                        "keep one of them")
    if special and names:
        warnings.append(f"{cell.label()}: tag {next(iter(names.values()))[0]!r} is ignored because the cell is "
                        f"tagged {next(iter(special))!r} (as in Kale); remove one of them")
    if special:
        return next(iter(special.values()))
    if names:
        return "step", next(iter(names.values()))[1]
    return None, None


def _block_tag(tags: list) -> str:
    return next(tag for tag, kind, _ in tags if kind in BLOCK_KINDS and kind != "step")


def _ignore_options(cell: Cell, tags: list, what: str, warnings: list[str]) -> None:
    for tag, kind, _ in tags:
        if kind not in BLOCK_KINDS and kind is not None:
            warnings.append(f"{cell.label()}: tag {tag!r} is ignored on {what}; move it to the cell tagged "
                            "step:NAME")


def _add_parameters(nb: Notebook, cell: Cell) -> None:
    if nb.parameters is not None and "injected-parameters" not in cell.tags:
        raise FlowError(f"{cell.label()} is a second parameters cell ({nb.parameters.label()} is the first); "
                        "merge them into one cell tagged 'parameters'")
    if nb.parameters is None:
        nb.parameters = cell
    else:
        nb.parameters = Cell(nb.parameters.index, nb.parameters.id, nb.parameters.source + "\n" + cell.source,
                             nb.parameters.tags)


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
    import difflib  # lazy: only a tag not of ours is checked for a near miss (difflib: 1 ms of every start)

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


def _add_options(block: StepBlock, cell: Cell, options: list, warnings: list[str]) -> None:
    for tag, kind, m in options:
        if kind == "prev":
            up = f"{m['notebook']}:{m['name']}" if m["notebook"] else m["name"]
            if up not in block.prev:
                block.prev.append(up)
            continue
        if kind == "pip":
            _add_requirement(block, cell, tag, m["value"])
            continue
        if kind in ("limit", "pod"):
            limit = _resource(tag, kind, m, cell.label(), warnings)
            if limit:
                block.options.setdefault("limit", {}).update([limit])
            continue
        value = {
            "foreach": lambda m: {"var": m["var"], "item": m["item"] or "item"},
            "retry": lambda m: int(m["value"]),
            "timeout": lambda m: float(m["value"]),
            "catch": lambda m: True,
            "kernel": lambda m: m["value"],
            "cache": lambda m: m["value"] == "trust" and "trust",  # False: disabled
            "executor": lambda m: "local",
        }[kind](m)
        if kind in block.options and block.options[kind] != value:
            raise FlowError(f"{cell.label()}: step {block.name!r} already has {kind} set by "
                            f"{block.option_cells[kind].label()}; keep one {kind}: tag")
        block.options[kind] = value
        block.option_cells[kind] = cell


def _add_requirement(block: StepBlock, cell: Cell, tag: str, spec: str) -> None:
    """A `pip:` tag: one more package of the step's own environment (see envs)."""
    try:
        normalized = requirement(spec)
    except ValueError as e:
        raise FlowError(f"{cell.label()}: tag {tag!r} is not a pip requirement ({e}); write "
                        f"{_PREFIX_HINTS['pip']}") from None
    block.options["pip"] = sorted({*block.options.get("pip", []), normalized})
    block.option_cells.setdefault("pip", cell)


def _resource(tag: str, kind: str, m: re.Match, where: str, warnings: list[str]) -> tuple[str, float] | None:
    """(cpu|memory|gpu, amount) for a limit: tag with Kale's Kubernetes meaning: cpu in cores
    (500m = 0.5), memory in bytes (2Gi, 512M), gpu a whole count under any vendor's name. Other
    Kubernetes limits, annotations and labels are pod settings we do not use: a warning."""
    resource = m["resource"] if kind == "limit" else None
    if resource not in ("cpu", "memory", *GPUS):
        warnings.append(f"{where}: tag {tag!r} is a Kubernetes pod setting that jupyter_flow does not use; "
                        "it is ignored")
        return None
    q = _QUANTITY.fullmatch(m["value"])
    amount = float(q[1]) * 10 ** int(q[2] or 0) * _UNITS[q[3]] if q else None
    if resource in GPUS and (amount is None or amount != int(amount) or q[3]):
        raise FlowError(f"{where}: {tag!r} is not a whole number of GPUs; write e.g. limit:{resource}:1")
    if amount is None or (resource == "cpu" and q[3] not in (None, "m")):
        example = "limit:cpu:2 or limit:cpu:500m (millicores)" if resource == "cpu" else "limit:memory:4Gi or 512M"
        raise FlowError(f"{where}: {tag!r} is not a Kubernetes {resource} quantity; write e.g. {example}")
    return ("gpu" if resource in GPUS else resource), (int(amount) if amount == int(amount) else amount)


def _steps_defaults(raw: dict, warnings: list[str]) -> dict:
    """Kale's notebook-wide step settings (metadata kubeflow_notebook.steps_defaults): limits for
    every step (a step's own limit: tags win), pod labels and annotations (warned about, unused)."""
    defaults = (raw.get("metadata", {}).get("kubeflow_notebook") or {}).get("steps_defaults") or []
    where = "notebook metadata kubeflow_notebook.steps_defaults"
    limits = {}
    for tag in defaults if isinstance(defaults, list) else []:
        kind, m = next(((k, p.match(str(tag))) for k, p in TAG_RULES if k in ("limit", "pod") and p.match(str(tag))),
                       (None, None))
        if m is None:
            raise FlowError(f"{where}: {tag!r} is not a limit:, label: or annotation: setting; fix or remove it")
        limit = _resource(str(tag), kind, m, where, warnings)
        if limit:
            limits[limit[0]] = limit[1]
    return limits


def _language(raw: dict) -> str:
    meta = raw.get("metadata", {})
    language = (meta.get("kernelspec") or {}).get("language") or (meta.get("language_info") or {}).get("name")
    return str(language or "python")
