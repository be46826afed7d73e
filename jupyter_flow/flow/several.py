"""One flow across several notebooks.

A notebook's metadata `jupyter_flow.notebooks` lists the notebooks of its flow, in order, paths
relative to its folder (it may list itself in its place; otherwise it comes first):

    "metadata": {"jupyter_flow": {"notebooks": ["prepare.ipynb", "report.ipynb"]}}

Each notebook is parsed as it is alone, then they are joined in that order, as if concatenated: a
step of a later notebook that reads a name written by a step of an earlier one depends on it, as
within one notebook; `prev:OTHER.ipynb:STEP` names a step of another notebook explicitly. A step
name already taken by an earlier notebook is qualified with the notebook's name (`step:load` of
report.ipynb becomes `report_load`); a notebook without step tags is one step named after it. The
shared cells (imports, functions) of every notebook run at the start of every step, the
parameters cells are one (a parameter set to two different defaults is an error), and each step
records its notebook (option `notebook`). A notebook whose kernel differs from the first one's runs
its steps in its own kernel (a `kernel:` tag), and then has no shared or parameters cells: they
would not run in the other steps' language. Only the first notebook's metadata counts.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

from jupyter_flow.errors import FlowError
from jupyter_flow.flow import languages, notebook
from jupyter_flow.flow.notebook import Cell, Notebook, StepBlock

KEY = "notebooks"


def read(path: str | Path, with_: list | tuple = ()) -> Notebook:
    """The flow of the notebook at `path`: joined with the notebooks its metadata names, then those of
    `with_` (paths, e.g. `--with` options); the notebook by itself when there are none."""
    return parse(notebook.load(path), Path(path), with_)


def parse(raw: dict, path: Path, with_: list | tuple = ()) -> Notebook:
    """As read, from the notebook's content `raw` (e.g. unsaved edits) at `path`."""
    nb = notebook.parse(raw, path)
    names = listed(raw, path)
    return join(nb, names, with_) if names or with_ else check_alone(nb)


def listed(raw: dict, path: Path) -> list[str]:
    """The notebooks the metadata names (as written); [] when it names none."""
    names = (raw.get("metadata", {}).get("jupyter_flow") or {}).get(KEY) or []
    if not isinstance(names, list) or not all(isinstance(n, str) and n.endswith(".ipynb") for n in names):
        raise FlowError(f"{path}: metadata.jupyter_flow.{KEY} must be a list of notebook paths relative to its "
                        f'folder, e.g. ["prepare.ipynb", "report.ipynb"], not {names!r}; fix the notebook\'s metadata')
    return names


def check_alone(nb: Notebook) -> Notebook:
    """A notebook run by itself: a `prev:OTHER.ipynb:STEP` naming itself is a plain `prev:STEP`; one
    naming another notebook is an error (that notebook is not in the flow)."""
    for block in nb.steps.values():
        block.prev = [_own(nb, up, block, [nb.path.name]) for up in block.prev]
    return nb


def _own(nb: Notebook, up: str, block: StepBlock, names: list[str]) -> str:
    other, colon, step = up.rpartition(":")
    if not colon:
        return up
    if Path(other).name == nb.path.name:
        return step
    cell = _prev_cell(block, up)
    raise FlowError(f"{cell.label()}: prev:{up} names notebook {other}, which is not in this flow (its notebooks: "
                    f"{', '.join(names)}); add it to metadata.jupyter_flow.{KEY} of {nb.path.name}, or run with "
                    f"--with {other}")


def join(main: Notebook, names: list[str], given: list | tuple = ()) -> Notebook:
    """`main` and the notebooks `names` lists (relative to its folder), then `given` (paths, e.g.
    `--with` options), joined into one (see the module's docstring)."""
    folder = main.path.parent
    books: list[tuple[str, Notebook]] = []
    if not any(_same(folder / n, main.path) for n in names):
        books.append((main.path.name, main))
    wanted = [(folder / n, n, f"metadata.jupyter_flow.{KEY} of {main.path.name} names") for n in names]
    wanted += [(Path(p).absolute(), _label(Path(p), folder), "--with") for p in given]
    for target, name, origin in wanted:
        if any(_same(target, nb.path) for _, nb in books):
            continue
        if _same(target, main.path):
            books.append((main.path.name, main))
        elif not target.is_file():
            raise FlowError(f"{origin} {name}: no such notebook ({target}); check the path")
        else:
            books.append((name, notebook.read(target)))
    return _joined(main, books)


def _label(path: Path, folder: Path) -> str:
    """A notebook as the flow names it: its path relative to the first notebook's folder when inside it."""
    try:
        return path.absolute().relative_to(folder.absolute()).as_posix()
    except ValueError:
        return str(path)


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _joined(main: Notebook, books: list[tuple[str, Notebook]]) -> Notebook:
    first = books[0][1]
    for label, nb in books:
        if not languages.supported(nb.language):
            known = ", ".join(["Python", *sorted(lang.name for lang in languages.LANGUAGES.values())])
            raise FlowError(f"{label}: its kernel {nb.kernel!r} runs {nb.language}; only notebooks in a language "
                            f"with steps ({known}) can join a flow; run it by itself")
        if not languages.same(nb.language, first.language) and (nb.shared or nb.parameters):
            cell = nb.shared[0] if nb.shared else nb.parameters
            where = f"{label} {cell.label()}" if cell else label
            raise FlowError(f"{where}: a shared or parameters cell of a {nb.language} notebook cannot "
                            f"join a flow whose first notebook ({books[0][0]}) is {first.language}; move it into the "
                            "steps that need it")
    joined = Notebook(path=main.path, name=main.name, kernel=first.kernel, raw=main.raw, steps={}, shared=[],
                      parameters=None, metrics=[], skipped=[], tagged_steps=True, language=first.language,
                      notebooks=[label for label, _ in books])
    taken: set[str] = set()
    names = {label: _names(label, nb, taken) for label, nb in _renumbered(books)}
    for label, nb in books:
        for block in nb.steps.values():
            block.name = names[label][block.name]
            block.prev = [_qualified(up, block, label, names, books) for up in block.prev]
            block.options["notebook"] = label
            if nb.kernel != first.kernel and "kernel" not in block.options and "pip" not in block.options:
                block.options["kernel"] = nb.kernel
            joined.steps[block.name] = block
        joined.shared += nb.shared
        joined.metrics += nb.metrics
        joined.skipped += nb.skipped
        joined.warnings += [f"{label}: {w}" for w in nb.warnings]
        joined.secrets = sorted({*joined.secrets, *nb.secrets})
        joined.parameters = _parameters(joined.parameters, nb.parameters, first.language)
    return joined


def _renumbered(books: list[tuple[str, Notebook]]):
    """Each notebook's cells take their place in the whole flow (cells of the first, then of the
    second...), keeping their notebook and place there for messages."""
    offset = 0
    for label, nb in books:
        cells = [c for b in nb.steps.values() for c in b.cells] + nb.shared + nb.metrics + nb.skipped
        cells += [nb.parameters] if nb.parameters else []
        for cell in {id(c): c for c in cells}.values():
            cell.notebook, cell.position = label, cell.index
            cell.index += offset
        offset += len(nb.raw.get("cells", []))
        yield label, nb


def _names(label: str, nb: Notebook, taken: set[str]) -> dict[str, str]:
    """Each step's name in the flow: its own, or qualified with its notebook's when an earlier
    notebook has a step of that name; a notebook without step tags is one step named after it."""
    stem = re.sub(r"[^a-z0-9_]", "_", Path(label).stem.lower())
    stem = stem if re.match(r"[a-z_]", stem) else f"_{stem}"
    found: dict[str, str] = {}
    for name in nb.steps:
        own = stem if not nb.tagged_steps else name
        flow_name = own if own not in taken else f"{stem}_{own}"
        if flow_name in taken:
            raise FlowError(f"{label}: step {name!r} clashes with a step of an earlier notebook, and so does "
                            f"{flow_name!r}; rename it")
        found[name] = flow_name
        taken.add(flow_name)
    return found


def _qualified(up: str, block: StepBlock, label: str, names: dict, books: list[tuple[str, Notebook]]) -> str:
    """A `prev:` entry as a step name of the flow: `STEP` of this notebook, or `OTHER.ipynb:STEP`."""
    other, colon, step = up.rpartition(":")
    if not colon:
        return names[label].get(up, up)  # an unknown step is named by the flow's own check (dag._check_prev)
    target = next((lb for lb, _ in books if lb == other or Path(lb).name == Path(other).name), None)
    cell = _prev_cell(block, up)
    if target is None:
        raise FlowError(f"{cell.label()}: prev:{up} names notebook {other}, which is not in this flow (its "
                        f"notebooks: {', '.join(lb for lb, _ in books)}); add it to metadata.jupyter_flow.{KEY} of "
                        f"{books[0][0]}, or run with --with {other}")
    if step not in names[target]:
        raise FlowError(f"{cell.label()}: prev:{up} names no step of {target}; its steps are: "
                        f"{', '.join(names[target]) or 'none'}")
    return names[target][step]


def _prev_cell(block: StepBlock, up: str) -> Cell:
    return next((c for c in block.cells if f"prev:{up}" in c.tags), block.cells[0])


def _parameters(mine: Cell | None, theirs: Cell | None, language: str) -> Cell | None:
    """The flow's one parameters cell: the first notebook's, then the others' lines. A parameter two
    notebooks set to different defaults has no one value: an error naming both."""
    if mine is None or theirs is None:
        return mine or theirs
    if languages.is_python(language):
        ours, other = _defaults(mine), _defaults(theirs)
        for name in ours.keys() & other.keys():
            if ours[name] != other[name]:
                raise FlowError(f"parameter {name!r} is {ours[name]} in {mine.label()} but "
                                f"{other[name]} in {theirs.label()}; a flow has one default per "
                                "parameter: give it the same default in both, or rename one")
    return Cell(mine.index, mine.id, mine.source + "\n" + theirs.source, mine.tags, mine.notebook, mine.position)


def _defaults(cell: Cell) -> dict[str, str]:
    try:
        tree = ast.parse(cell.source)
    except SyntaxError:
        return {}  # reported where the parameters are read (dag._parameters)
    return {t.id: ast.unparse(s.value) for s in tree.body if isinstance(s, ast.Assign)
            for t in s.targets if isinstance(t, ast.Name)}
