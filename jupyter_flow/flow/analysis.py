"""Which names a piece of notebook code reads, which it writes, and which it may change in place.

Cells go through IPython's input transformers first, as in the kernel, so magics and shell lines
parse. `{expr}` and `$name` in a shell line or a magic's arguments are reads; the code given to
`%time`, `%timeit`, `%prun`, `%%time`, `%%capture` ... is analysed as code.

A name is *written* when the code assigns, augments, deletes or rebinds it, stores into its items
or attributes, calls a method on it whose result is dropped (`xs.append(4)`, `model.fit(X, y)`) or
a method known to change it (`xs.pop()`, `inplace=True`), passes it to a function whose result is
dropped (`random.shuffle(deck)`) or to any function defined in the notebook, or does any of this
through an alias (`d = df`, `for d in [df]`). Calling a notebook function also writes the globals
that function changes. `del x` reads and writes `x`.

A name is *maybe changed* (`Usage.maybe`) when it goes into a call whose result is used
(`Xs = scaler.transform(X)`) or into a nested scope (lambda, comprehension). Such uses rarely change
a value, so parallel branches may make them; the runtime re-hashes these inputs when the step ends
and stops the run if one changed under a later reader (see `in_kernel.finish`).

Files the code reads and writes are predicted where the path is written out: a literal, or a
simple string expression (f-string, `+`, `%`, `.format`, `os.path.join`, `Path(...) / ...`) over
literals and names bound to such values (`Usage.constants`, e.g. a parameter `path = 'data.csv'`),
passed to `open(p, mode)` (the mode decides), a path's `read_text`/`write_text`/`open`/`unlink`,
`read_*`/`load` functions (reads), `to_csv`-like methods and `save`/`savefig`/`dump` (writes),
`shutil.copy`/`move`, `os.rename`/`replace`/`remove`. Other paths are not predicted; the runtime
records every file a step opens.

A name bound to `get_ipython()` is the kernel's shell: calls on it change kernel state, not a value
of ours (it is treated as a module).
"""
from __future__ import annotations

import ast
import builtins
import posixpath
import re
from dataclasses import dataclass, field

BUILTINS = frozenset(dir(builtins)) | {"__file__", "__name__", "get_ipython", "display", "In", "Out"}

# Calls (functions or methods, by their last name) that change neither their receiver nor arguments.
PURE_CALLS = frozenset("""
print len repr str int float bool complex abs round min max sum sorted reversed list tuple set frozenset
dict isinstance issubclass type id hash range enumerate zip any all format hasattr getattr callable
divmod pow ord chr bin hex oct ascii vars dir display
copy deepcopy mean median std var sum prod cumsum min max argmin argmax any all count index get keys
values items startswith endswith join split rsplit strip lstrip rstrip lower upper title replace
encode decode find rfind isdigit isalpha head tail describe info nunique unique value_counts isna
notna isnull notnull astype reshape ravel flatten tolist to_numpy to_list to_dict to_frame dot
transpose round predict predict_proba predict_log_proba decision_function score transform
get_params get_support groupby agg aggregate merge concat query corr cov shape sample
save savez savez_compressed savetxt dump dumps to_csv to_json to_parquet to_pickle write_text
plot scatter hist bar barh show savefig imshow title xlabel ylabel legend figure subplots
histplot barplot boxplot lineplot scatterplot countplot heatmap pairplot displot
""".split())  # noqa: SIM905 (words read better than a list of strings)
# Methods that change their receiver even when their result is used (`last = xs.pop()`), random
# generators' draws included (`x = rng.normal()` advances `rng`).
MUTATING_METHODS = frozenset("""
append extend insert remove pop popitem clear sort reverse update setdefault add discard
difference_update intersection_update symmetric_difference_update fill resize put itemset
fit partial_fit fit_transform set_params
random integers normal uniform choice permutation shuffle standard_normal randint randn rand gauss
binomial poisson exponential beta gamma lognormal multinomial bytes getrandbits
""".split())  # noqa: SIM905
# Global random number generators: module -> its functions that do not draw from the global state.
RNG_STREAMS = {
    "random": {"Random", "SystemRandom", "getstate"},
    "numpy.random": {"default_rng", "RandomState", "Generator", "SeedSequence", "BitGenerator", "PCG64",
                     "MT19937", "Philox", "SFC64", "get_state"},
}
RNG_SEEDS = {"seed", "setstate", "set_state"}

_IPYTHON_SYNTAX = re.compile(r"[!%?]")
_CODE_LINE_MAGICS = {"time", "timeit", "prun"}
_CODE_CELL_MAGICS = {"time", "timeit", "prun", "capture"}
_MAGIC_OPTIONS = re.compile(r"^(?:\s*-(?:[nrpslTD]\s*\S+|[A-Za-z]))*\s*")
_FORMAT_SPEC = re.compile(r"^(?:.?[<>^=])?[+\- ]?#?0?\d{0,3}[,_]?(?:\.\d{0,3})?[a-zA-Z%]?$")
_BIG_WIDTH = re.compile(r"%[^a-zA-Z%]*\d{4}")
_UNKNOWN = object()  # a value static reading cannot know
SHELL = "IPython.InteractiveShell"  # what a name bound to get_ipython() stands for (in Usage.modules)
IMMUTABLE = (str, bytes, int, float, complex, bool, type(None), tuple, frozenset)
# Functions that open a file named by their first argument: (default mode, position of the mode argument).
# Some open it in C code that Python's audit hooks do not see (HDF5, netCDF, SQLite): predicted here.
OPEN_FUNCTIONS = {"open": ("r", 1), "io.open": ("r", 1), "codecs.open": ("r", 1), "gzip.open": ("rb", 1),
                  "bz2.open": ("rb", 1), "lzma.open": ("rb", 1), "PIL.Image.open": ("r", None),
                  "h5py.File": ("r", 1), "netCDF4.Dataset": ("r", 1), "tables.open_file": ("r", 1),
                  "sqlite3.connect": ("r+", None)}
PATH_KEYWORDS = ("file", "filename", "fname", "filepath_or_buffer", "path", "path_or_buf", "io", "f",
                 "excel_writer", "buf")
# Calls (by their last name) that read the file their first argument names, or write the first of their
# first two arguments that names a file (`np.save(path, arr)`, `torch.save(model, path)`).
READ_CALLS = frozenset({"load", "loadtxt", "genfromtxt", "fromfile", "imread", "load_workbook", "load_model",
                        "open_dataset", "open_dataarray"})
NOT_FILE_READS = frozenset({"read_sql", "read_sql_query", "read_sql_table", "read_gbq", "read_clipboard", "read_html"})
WRITE_CALLS = frozenset({
    "save", "savez", "savez_compressed", "savetxt", "savefig", "dump", "imwrite", "imsave", "tofile", "write_image",
    "save_model", "write_table", "write_feather",
    "to_csv", "to_parquet", "to_json", "to_pickle", "to_excel", "to_feather", "to_hdf", "to_html", "to_latex",
    "to_markdown", "to_stata", "to_xml", "to_orc", "to_netcdf", "to_file", "to_string"})
# Methods of a path (the receiver names the file).
PATH_READS, PATH_WRITES = frozenset({"read_text", "read_bytes"}), frozenset({"write_text", "write_bytes", "touch",
                                                                              "unlink"})
COPIES = {"shutil.copy": False, "shutil.copy2": False, "shutil.copyfile": False, "shutil.move": True,
          "os.rename": True, "os.replace": True}  # -> whether the source is removed
REMOVES = frozenset({"os.remove", "os.unlink"})
PATH_JOINS = frozenset({"os.path.join", "posixpath.join", "pathlib.Path", "pathlib.PurePath",
                        "pathlib.PosixPath", "pathlib.PurePosixPath"})
_BRACES = re.compile(r"(?<!\{)\{([^{}]+)\}(?!\})")
_DOLLAR = re.compile(r"(?<!\$)\$([A-Za-z_]\w*)")


@dataclass
class Function:
    """What calling a function defined in the notebook does to the globals: it reads them as they
    are at the call (the kernel that calls it gives it its own globals), and may change some."""
    reads: list[str]
    changes: list[str]
    maybe: list[str]  # globals it passes to calls that may change them
    params: dict[str, bool | None]  # parameter -> changed in place (True), maybe (False), neither (None)
    positional: list[str]  # parameters an argument at each position binds
    varargs: tuple[str | None, str | None] = (None, None)  # its *args and **kwargs names
    files_read: list[str] = field(default_factory=list)  # files it reads and writes (paths as written)
    files_written: list[str] = field(default_factory=list)

    def effect(self, position: int | None, keyword: str | None) -> bool | None:
        """What a call does to the value passed at `position` (or as `keyword`)."""
        if keyword is None and position is not None and position < len(self.positional):
            param = self.positional[position]
        elif keyword is not None and keyword in self.params and keyword not in self.varargs:
            param = keyword
        else:
            param = self.varargs[0] if keyword is None and position is not None else self.varargs[1]
        return self.params.get(param, True) if param else True


@dataclass
class Usage:
    reads: list[str] = field(default_factory=list)  # read before written, in order
    writes: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # written by a change in place
    rebound: list[str] = field(default_factory=list)  # written by binding it anew (assignment, import, def, del...)
    maybe: list[str] = field(default_factory=list)  # read, and passed where it may be changed
    optional: set[str] = field(default_factory=set)  # read only as `$name`: IPython leaves it if undefined
    builtins: list[str] = field(default_factory=list)  # builtin names read (they count if a step redefines one)
    modules: dict[str, str] = field(default_factory=dict)  # name bound by an import -> module path
    functions: dict[str, Function] = field(default_factory=dict)  # functions defined here
    rng: list[tuple[str, str]] = field(default_factory=list)  # ("seed" | "draw", stream), in code order
    aliases: dict[str, set[str]] = field(default_factory=dict)  # name -> names it may share an object with
    # (itself among them when it is bound to the object it held: `y = y`)
    shares: dict[str, set[str]] = field(default_factory=dict)  # the aliases that surely are one object
    # (not through an item, `y = x[0]`, nor with a name known to hold an immutable value)
    constants: dict[str, object] = field(default_factory=dict)  # name -> its immutable value, where known
    stars: list[str] = field(default_factory=list)  # modules star-imported (`from m import *`)
    shells: list[str] = field(default_factory=list)  # names bound to the kernel's shell (get_ipython())
    magics: list[str] = field(default_factory=list)  # IPython magics used (`%time` -> "time")
    extensions: list[str] = field(default_factory=list)  # IPython extensions loaded (`%load_ext autoreload`)
    files_read: list[str] = field(default_factory=list)  # files read before written (paths as written)
    files_written: list[str] = field(default_factory=list)  # files written or removed

    def read(self, name: str, bound: set[str], optional: bool = False) -> None:
        if not optional:
            self.optional.discard(name)
        if name in bound or name in self.reads:
            return
        if name in BUILTINS:
            if name not in self.builtins:
                self.builtins.append(name)
            return
        if optional:
            self.optional.add(name)
        self.reads.append(name)

    def write(self, name: str, bound: set[str]) -> None:
        bound.add(name)
        if name not in self.writes:
            self.writes.append(name)
        if name in self.maybe:
            self.maybe.remove(name)

    def file(self, path, read: bool = False, written: bool = False) -> None:
        if not _is_path(path):
            return
        if read and path not in self.files_written and path not in self.files_read:
            self.files_read.append(path)
        if written and path not in self.files_written:
            self.files_written.append(path)


def to_python(source: str) -> str:
    """Cell source with IPython syntax turned into plain Python, as the kernel does."""
    if not _IPYTHON_SYNTAX.search(source):
        return source
    from IPython.core.inputtransformer2 import TransformerManager  # lazy: IPython costs 0.3 s; only for magics and !

    return TransformerManager().transform_cell(source)


def parse(source: str) -> ast.Module:
    """Parse cell source (IPython syntax allowed). Raises SyntaxError."""
    try:
        return ast.parse(to_python(source))
    except (RecursionError, MemoryError):
        raise SyntaxError("an expression is nested too deeply for Python's parser; split it into several "
                          "statements", ("<cell>", 1, 1, "")) from None


def normalized(source: str) -> str:
    """The code without comments or formatting, so cosmetic edits do not change cache keys."""
    try:
        return ast.unparse(parse(source))
    except SyntaxError:
        return source


def analyze(sources: list[str], bound: set[str] | None = None, modules: dict[str, str] | None = None,
            functions: dict[str, Function] | None = None, constants: dict | None = None) -> Usage:
    """Reads and writes of code cells run in order.

    `bound` holds names already defined; `modules` the names bound by an import (their functions
    are not methods of a value of ours); `functions` the functions earlier cells defined;
    `constants` the names earlier cells bound to immutable values they spell out.
    """
    usage = Usage(modules=dict(modules or {}), constants=dict(constants or {}))
    walker = _Walker(usage, set(bound or ()), dict(functions or {}))
    for source in sources:
        for stmt in _Magics(usage).visit(parse(source)).body:
            walker.statement(stmt)
    return usage


class _Magics(ast.NodeTransformer):
    """Replace IPython's magic and shell calls by the Python they run or the names they expand; note
    the magics used and the extensions loaded (`Usage.magics`, `Usage.extensions`)."""

    def __init__(self, usage: Usage):
        self.u = usage
        self.shells = {name for name, module in usage.modules.items() if module == SHELL}

    def visit_Expr(self, node: ast.Expr):
        call = node.value
        name, args = _ipython_call(call, self.shells)
        code = None
        if name == "run_line_magic" and _const(args, 0) in _CODE_LINE_MAGICS:
            code = _try_parse(_MAGIC_OPTIONS.sub("", _const(args, 1) or "", count=1))
        elif name == "run_cell_magic" and _const(args, 0) in _CODE_CELL_MAGICS:
            code = _try_parse(_const(args, 2) or "")
            target = (_const(args, 1) or "").split()
            if code is not None and _const(args, 0) == "capture" and target and target[-1].isidentifier():
                code.body.append(ast.Assign(targets=[ast.Name(target[-1], ast.Store())], value=ast.Constant(None)))
        if code is None:
            return self.generic_visit(node)
        return [self.visit(stmt) for stmt in code.body]

    def visit_Call(self, node: ast.Call):
        name, args = _ipython_call(node, self.shells)
        if name in ("run_line_magic", "run_cell_magic") and isinstance(_const(args, 0), str):
            self.u.magics.append(_const(args, 0))
            if _const(args, 0) in ("load_ext", "reload_ext") and (_const(args, 1) or "").split():
                self.u.extensions.append(_const(args, 1).split()[0])
        if name == "run_line_magic" and _const(args, 0) in _CODE_LINE_MAGICS:
            expr = _try_parse(_MAGIC_OPTIONS.sub("", _const(args, 1) or "", count=1), "eval")
            if expr is not None:
                return self.visit(expr.body)
        text = {"system": 0, "getoutput": 0, "run_line_magic": 1, "run_cell_magic": 1}.get(name)
        if text is None:
            return self.generic_visit(node)
        return ast.Tuple(elts=_expansions(_const(args, text) or ""), ctx=ast.Load())


def _ipython_call(node, shells=()) -> tuple[str | None, list]:
    """`("system", args)` for `get_ipython().system(...)` (or `ip.system(...)`, `ip` one of `shells`),
    else (None, [])."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
            _is_shell(node.func.value) or getattr(node.func.value, "id", None) in shells):
        return node.func.attr, node.args
    return None, []


def _const(args: list, i: int):
    return args[i].value if len(args) > i and isinstance(args[i], ast.Constant) else None


def _try_parse(code: str, mode: str = "exec"):
    try:
        return ast.parse(to_python(code) if mode == "exec" else code.strip(), mode=mode)
    except SyntaxError:
        return None


def _expansions(text: str) -> list[ast.expr]:
    """What IPython expands in a shell line or magic: `{expr}` (an expression) and `$name`."""
    found: list[ast.expr] = []
    for match in _BRACES.finditer(text):
        expr = _try_parse(match.group(1), "eval")
        if expr is not None:
            found.append(expr.body)
    for match in _DOLLAR.finditer(text):
        name = ast.Name(match.group(1), ast.Load())
        name.optional = True  # IPython leaves `$name` as it is when nothing defines it
        found.append(name)
    return found


class _Walker:
    def __init__(self, usage: Usage, bound: set[str], functions: dict[str, Function]):
        self.u, self.bound, self.functions = usage, bound, functions
        self.depth = 0  # inside a compound statement: a binding there may not run, so its value is unknown

    # -- statements ---------------------------------------------------------------------------
    def statement(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.simple(stmt, parts=stmt.decorator_list + _def_defaults(stmt))
            for name in _free_names(stmt):
                self.u.read(name, self.bound)
            if not isinstance(stmt, ast.ClassDef):
                self.functions[stmt.name] = self.u.functions[stmt.name] = self._function(stmt)
            self.bind(stmt.name)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                if alias.name == "*":
                    self.u.stars.append(getattr(stmt, "module", None) or ".")
                    continue
                name = (alias.asname or alias.name).split(".")[0]
                self.bind(name)
                self.u.modules[name] = (f"{stmt.module}.{alias.name}" if isinstance(stmt, ast.ImportFrom)
                                        else alias.name if alias.asname else name)
        elif isinstance(stmt, (ast.Global, ast.Nonlocal, ast.Pass, ast.Break, ast.Continue)):
            pass
        elif isinstance(stmt, ast.Delete):
            self.simple(stmt)
            for target in stmt.targets:
                for name in _names(target, ast.Del):
                    self.u.read(name, self.bound)
                    self.u.write(name, self.bound)
                    self.u.rebound.append(name)
                    self.u.aliases.pop(name, None)
                    self.u.shares.pop(name, None)
        elif isinstance(stmt, (ast.For, ast.AsyncFor)):
            self.simple(stmt, parts=[stmt.iter, stmt.target], value=stmt.iter, targets=[stmt.target])
            self.body(stmt, "body", "orelse")
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                parts = [item.context_expr] + ([item.optional_vars] if item.optional_vars else [])
                self.simple(stmt, parts=parts, value=item.context_expr, targets=parts[1:])
            self.body(stmt, "body")
        elif isinstance(stmt, _COMPOUND):
            headers = [v for k, v in ast.iter_fields(stmt) if k not in _BODIES]
            self.simple(stmt, parts=[n for v in headers for n in (v if isinstance(v, list) else [v])
                                     if isinstance(n, ast.AST)])
            self.body(stmt, *_BODIES)
        else:
            value = getattr(stmt, "value", None)
            targets = stmt.targets if isinstance(stmt, ast.Assign) else (
                [stmt.target] if isinstance(stmt, ast.AnnAssign) else [])
            self.simple(stmt, value=value, targets=targets)

    def body(self, stmt: ast.stmt, *names: str) -> None:
        self.depth += 1
        for name in names:
            for child in getattr(stmt, name, None) or []:
                if isinstance(child, (ast.ExceptHandler, ast.match_case)):
                    if getattr(child, "name", None):
                        self.bind(child.name)
                    for inner in child.body:
                        self.statement(inner)
                else:
                    self.statement(child)
        self.depth -= 1

    def simple(self, stmt: ast.AST, parts: list | None = None, value=None, targets=()) -> None:
        """A statement without a body (or a compound statement's header): reads, then changes, then binds."""
        nodes = [n for part in (parts if parts is not None else [stmt]) for n in _walk_scope(part)]
        for node in nodes:
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                self.u.read(node.id, self.bound, getattr(node, "optional", False))
            elif isinstance(node, _SCOPES):
                for name in _free_names(node):
                    self.u.read(name, self.bound)
                    self.change(name, definite=False)
        dropped = stmt.value if isinstance(stmt, ast.Expr) else None
        for node in nodes:
            if isinstance(node, ast.Call):
                self.call(node, dropped=node is dropped)
            elif isinstance(node, (ast.Attribute, ast.Subscript)) and not isinstance(node.ctx, ast.Load):
                self.change(_root_name(node), definite=True)
            elif isinstance(node, ast.AugAssign):
                self.change(_root_name(node.target), definite=True)
        known = self.constant(value) if value is not None and len(targets) == 1 and not self.depth else _UNKNOWN
        shared = _refs(value) if value is not None else set()
        shared |= {a for name in shared for a in self.u.aliases.get(name, ())}
        surely = {n for n in _refs(value, items=False) if n not in self.u.constants and n not in self.u.modules}
        surely |= {a for name in surely for a in self.u.shares.get(name, ())}
        for target in targets:
            for name in _names(target, ast.Store):
                self.u.aliases.pop(name, None)
                self.u.shares.pop(name, None)
                if shared:  # itself included: `y = y` binds y to the object it held (equivalence.shared_objects)
                    self.u.aliases[name] = shared
                if surely - {name}:
                    self.u.shares[name] = surely - {name}
        for node in nodes:
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                self.bind(node.id)
        if targets and isinstance(targets[0], ast.Name):
            if isinstance(known, IMMUTABLE):
                self.u.constants[targets[0].id] = known
            elif _is_shell(value):
                self.u.modules[targets[0].id] = SHELL
                self.u.shells.append(targets[0].id)
                self.u.shares.pop(targets[0].id, None)

    # -- what a call may change ----------------------------------------------------------------
    def call(self, node: ast.Call, dropped: bool) -> None:
        path = self.path(node.func)
        self.random_state(path)
        self.files(node, path)
        func = node.func
        # a method's name even on a part of a value (`df["x"].sum()`, which has no dotted path)
        last = func.attr if isinstance(func, ast.Attribute) else path.rsplit(".", 1)[-1] if path else None
        args = [a for a in node.args] + [k.value for k in node.keywords]
        passed = {n for a in args for n in _refs(a)}
        inplace = any(k.arg == "inplace" and isinstance(k.value, ast.Constant) and k.value.value is True
                      for k in node.keywords)
        if isinstance(func, ast.Name) and func.id in self.functions:  # a function of this notebook
            for name in self.functions[func.id].reads:
                self.u.read(name, self.bound)
            for name in self.functions[func.id].changes:
                self.change(name, definite=True)
            for name in self.functions[func.id].maybe:
                self.change(name, definite=False)
            function = self.functions[func.id]
            for file in function.files_read:
                self.u.file(file, read=True)
            for file in function.files_written:
                self.u.file(file, written=True)
            for position, arg in enumerate(node.args):
                effect = function.effect(None if isinstance(arg, ast.Starred) else position, None)
                self.pass_to(arg, effect)
            for keyword in node.keywords:
                self.pass_to(keyword.value, function.effect(None, keyword.arg))
            return
        if last in PURE_CALLS and not inplace:
            return
        receiver = _root_name(func.value) if isinstance(func, ast.Attribute) else None
        if receiver and receiver not in self.u.modules:  # a method of a value
            self.change(receiver, definite=dropped or inplace or func.attr in MUTATING_METHODS)
            definite = False  # methods seldom change their arguments: verified at run time
        else:  # a function (`random.shuffle(deck)`) or a class
            definite = dropped
        for name in passed:
            self.change(name, definite)

    def pass_to(self, arg: ast.AST, effect: bool | None) -> None:
        for name in _refs(arg):
            if effect is not None:
                self.change(name, definite=effect)

    def path(self, func) -> str | None:
        """`numpy.random.rand` for `np.random.rand` (names resolved through imports)."""
        parts = []
        while isinstance(func, ast.Attribute):
            parts.append(func.attr)
            func = func.value
        if not isinstance(func, ast.Name):
            return None
        base = self.u.modules.get(func.id, func.id)
        return ".".join([base] + parts[::-1])

    # -- files and values written out ------------------------------------------------------------
    def files(self, node: ast.Call, path: str | None) -> None:
        """The files a call reads or writes, where its arguments spell out their paths."""
        func = node.func
        last = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        keywords = {k.arg: k.value for k in node.keywords if k.arg}

        def arg(i: int, *names: str):
            for name in names:
                if name in keywords:
                    return self.constant(keywords[name])
            positional = node.args[:i + 1]
            if len(positional) <= i or any(isinstance(a, ast.Starred) for a in positional):
                return _UNKNOWN
            return self.constant(node.args[i])

        receiver = self.constant(func.value) if isinstance(func, ast.Attribute) else _UNKNOWN
        if path in OPEN_FUNCTIONS or (last == "open" and _is_path(receiver)):
            file = arg(0, "file", "filename", "fp", "name", "database") if path in OPEN_FUNCTIONS else receiver
            default, at = OPEN_FUNCTIONS.get(path, ("r", 0))
            given = at is not None and (len(node.args) > at or "mode" in keywords)
            mode = arg(at, "mode") if given else default
            if isinstance(mode, str):
                self.u.file(file, read="r" in mode or "+" in mode, written=bool(set(mode) & set("wax+")))
        elif last in PATH_READS or last in PATH_WRITES:
            self.u.file(receiver, read=last in PATH_READS, written=last in PATH_WRITES)
        elif path in COPIES:
            self.u.file(arg(0, "src"), read=True, written=COPIES[path])
            self.u.file(arg(1, "dst"), written=True)
        elif path in REMOVES:
            self.u.file(arg(0, "path"), written=True)
        elif last in READ_CALLS or (last and last.startswith("read_") and last not in NOT_FILE_READS):
            self.u.file(arg(0, *PATH_KEYWORDS), read=True)
        elif last in WRITE_CALLS:
            first = arg(0, *PATH_KEYWORDS)
            self.u.file(first if _is_path(first) else arg(1), written=True)

    def constant(self, node):
        """The value of `node` where the code spells it out: literals, names bound to them, and simple
        string expressions over them (a path as a str); else _UNKNOWN."""
        try:
            value = self._constant(node)
        except (ValueError, TypeError, KeyError, IndexError, OverflowError, MemoryError, RecursionError):
            return _UNKNOWN
        return _UNKNOWN if isinstance(value, (str, bytes)) and len(value) > 4096 else value

    def _constant(self, node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self.u.constants.get(node.id, _UNKNOWN)
        if isinstance(node, ast.Tuple):
            items = tuple(self.constant(e) for e in node.elts)
            return _UNKNOWN if _UNKNOWN in items else items
        if isinstance(node, ast.JoinedStr):
            parts = []
            for part in node.values:
                if isinstance(part, ast.Constant):
                    parts.append(part.value)
                    continue
                value = self.constant(part.value)
                spec = self.constant(part.format_spec) if part.format_spec else ""
                if value is _UNKNOWN or not isinstance(spec, str) or not _FORMAT_SPEC.match(spec):
                    return _UNKNOWN
                value = {-1: lambda v: v, 115: str, 114: repr, 97: ascii}[part.conversion](value)
                parts.append(format(value, spec))
            return "".join(parts)
        if isinstance(node, ast.BinOp):
            left, right = self.constant(node.left), self.constant(node.right)
            if not isinstance(left, str) or right is _UNKNOWN:
                return _UNKNOWN
            if isinstance(node.op, ast.Add) and isinstance(right, str):
                return left + right
            if isinstance(node.op, ast.Div) and isinstance(right, str):
                return _join(left, right)
            if isinstance(node.op, ast.Mod) and not _BIG_WIDTH.search(left):
                return left % right
            return _UNKNOWN
        if isinstance(node, ast.Call) and not node.keywords:
            args = [self.constant(a) for a in node.args]
            if not all(isinstance(a, str) for a in args):
                return _UNKNOWN
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "format":
                template = self.constant(func.value)
                return template.format(*args) if isinstance(template, str) and "{:" not in template else _UNKNOWN
            path = self.path(func)
            if path in PATH_JOINS and args:
                return _join(*args)
            if path == "str" and len(args) == 1:
                return args[0]
        return _UNKNOWN

    def random_state(self, path: str | None) -> None:
        if not path or "." not in path:
            return
        stream, _, name = path.rpartition(".")
        if stream in RNG_STREAMS:
            if name in RNG_SEEDS:
                self.u.rng.append(("seed", stream))
            elif name not in RNG_STREAMS[stream] and not name[0].isupper():
                self.u.rng.append(("draw", stream))

    def change(self, name: str | None, definite: bool) -> None:
        """`name` (and what it may alias) is changed in place: a write, or a maybe."""
        if not name:
            return
        for target in {name} | self.u.aliases.get(name, set()):
            if target in self.u.modules or target in BUILTINS:
                continue
            self.u.read(target, self.bound)
            if definite:
                self.u.write(target, self.bound)
                if target not in self.u.changed:
                    self.u.changed.append(target)
            elif target not in self.u.writes and target not in self.u.maybe:
                self.u.maybe.append(target)

    def bind(self, name: str) -> None:
        self.u.write(name, self.bound)
        if name not in self.u.rebound:
            self.u.rebound.append(name)
        self.u.modules.pop(name, None)
        self.u.constants.pop(name, None)

    def _function(self, func: ast.FunctionDef | ast.AsyncFunctionDef) -> Function:
        """The globals a function reads and may change when called (it may change its arguments too)."""
        args = func.args
        params = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg] if a}
        declared = {n for node in ast.walk(func) if isinstance(node, ast.Global) for n in node.names}
        local = params | {n.id for node in func.body for n in ast.walk(node)
                          if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
        constants = {n: v for n, v in self.u.constants.items() if n not in local}
        inner = _Walker(Usage(modules=dict(self.u.modules), constants=constants), set(params), dict(self.functions))
        inner.depth = 1  # its bindings are local
        for stmt in func.body:
            inner.statement(stmt)
        outside = [n for n in inner.u.writes + inner.u.maybe if n not in local or n in declared]
        effects = {p: True if p in inner.u.changed else False if p in inner.u.maybe else None for p in params}
        return Function(reads=[n for n in inner.u.reads if n not in declared],
                        changes=[n for n in outside if n in inner.u.writes],
                        maybe=[n for n in outside if n in inner.u.maybe], params=effects,
                        positional=[a.arg for a in args.posonlyargs + args.args],
                        varargs=(args.vararg and args.vararg.arg, args.kwarg and args.kwarg.arg),
                        files_read=inner.u.files_read, files_written=inner.u.files_written)


_COMPOUND = (ast.If, ast.While, ast.Try, ast.Match) + ((ast.TryStar,) if hasattr(ast, "TryStar") else ())
_BODIES = ("body", "handlers", "cases", "orelse", "finalbody")
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda,
           ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _names(target: ast.AST, ctx) -> list[str]:
    return [n.id for n in ast.walk(target) if isinstance(n, ast.Name) and isinstance(n.ctx, ctx)]


def _refs(node: ast.AST | None, items: bool = True) -> set[str]:
    """Names whose objects `node` may hand on as they are (not a new value computed from them); with
    `items=False`, not through an item or slice (`df[['a']]`, `xs[1:]` usually make new objects)."""
    if isinstance(node, ast.Name):
        return {node.id}
    if isinstance(node, (ast.Attribute, ast.Starred)) or (items and isinstance(node, ast.Subscript)):
        return _refs(node.value, items)
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return {n for e in node.elts for n in _refs(e, items)}
    if isinstance(node, ast.Dict):
        return {n for v in node.values for n in _refs(v, items)}
    if isinstance(node, ast.IfExp):
        return _refs(node.body, items) | _refs(node.orelse, items)
    if isinstance(node, ast.NamedExpr):
        return _refs(node.value, items)
    return set()


def _is_shell(node) -> bool:
    """`get_ipython()`: the kernel's shell."""
    return (isinstance(node, ast.Call) and not node.args and isinstance(node.func, (ast.Name, ast.Attribute))
            and (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) == "get_ipython")


def _is_path(value) -> bool:
    """A str that can name a local file (not a URL, nor text)."""
    return (isinstance(value, str) and 0 < len(value) < 1024 and "\n" not in value and "://" not in value
            and "\0" not in value)


def _join(*parts: str) -> str:
    return posixpath.join(*parts)


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _def_defaults(stmt: ast.stmt) -> list[ast.AST]:
    if isinstance(stmt, ast.ClassDef):
        return list(stmt.bases) + [k.value for k in stmt.keywords]
    args = stmt.args
    return list(args.defaults) + [d for d in args.kw_defaults if d is not None]


def _walk_scope(node: ast.AST):
    """Nodes of this scope in source order; a nested scope is yielded but not entered."""
    todo = [node]
    while todo:
        current = todo.pop()
        yield current
        if current is node or not isinstance(current, _SCOPES):
            todo.extend(reversed(list(ast.iter_child_nodes(current))))


def _free_names(scope: ast.AST) -> list[str]:
    """Names a nested scope (function, class, lambda, comprehension) reads from outside."""
    local: set[str] = set()
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        a = scope.args
        for arg in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg]:
            if arg is not None:
                local.add(arg.arg)
    if isinstance(scope, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
        body = [scope]
    else:
        body = scope.body if isinstance(scope.body, list) else [scope.body]
    declared_global: set[str] = set()
    loads: list[str] = []
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Global):
                declared_global.update(node.names)
            elif isinstance(node, ast.Name):
                if isinstance(node.ctx, ast.Load):
                    loads.append(node.id)
                else:
                    local.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node is not scope:
                local.add(node.name)
            elif isinstance(node, ast.arg):
                local.add(node.arg)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                local.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                local.add(node.name)
    local -= declared_global
    seen: list[str] = []
    for name in loads:
        if name not in local and name not in seen:
            seen.append(name)
    return seen
