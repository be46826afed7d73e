"""Which names a piece of notebook code reads before writing, and which names it writes.

Static, from the `ast` module: IPython syntax (magics, `!cmd`) is translated to Python first.
An assignment to a name's items or attributes (`df["a"] = 1`), an augmented assignment, and a
method call whose result is dropped (`xs.append(4)`, `model.fit(X, y)`) count as a read and a
write of that name, since they change the object in place. A call whose result is used
(`m = X.mean()`) does not: parallel branches may call methods on a shared input.
"""
from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass, field

BUILTINS = frozenset(dir(builtins)) | {"__file__", "__name__", "get_ipython", "display", "In", "Out"}

_MAGIC_LINE = re.compile(r"^(\s*)(%%?|!)")
# Magics whose argument is Python code of this cell: analyse that code, not the magic call.
_CODE_LINE_MAGIC = re.compile(r"^(\s*)%(?:time|timeit|prun)\s+(?:-\S+\s+)*", re.M)
_CODE_CELL_MAGIC = re.compile(r"^\s*%%(?:time|timeit|prun|capture)\b[^\n]*\n?")


@dataclass
class Usage:
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    modules: set[str] = field(default_factory=set)  # names bound by import: never "mutated"

    def read(self, name: str, bound: set[str]) -> None:
        if name not in bound and name not in BUILTINS and name not in self.reads:
            self.reads.append(name)

    def write(self, name: str, bound: set[str]) -> None:
        bound.add(name)
        if name not in self.writes:
            self.writes.append(name)


def to_python(source: str) -> str:
    """Cell source with IPython syntax turned into plain Python (only when there is any)."""
    if not any(_MAGIC_LINE.match(line) for line in source.splitlines()) and "?" not in source:
        return source
    source = _CODE_LINE_MAGIC.sub(r"\1", _CODE_CELL_MAGIC.sub("", source, count=1))
    from IPython.core.inputtransformer2 import TransformerManager

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


def analyze(sources: list[str], bound: set[str] | None = None, modules: set[str] | None = None) -> Usage:
    """Reads and writes of code cells run in order.

    `bound` holds names already defined (parameters, shared cells); `modules` the names of those
    bound by an import, whose method calls (`np.save(...)`) change nothing of ours.
    """
    usage = Usage(modules=set(modules or ()))
    bound = set(bound or ())
    for source in sources:
        for stmt in parse(source).body:
            _statement(stmt, usage, bound)
    return usage


def _statement(stmt: ast.stmt, usage: Usage, bound: set[str]) -> None:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        for node in stmt.decorator_list + _def_defaults(stmt):
            _expression(node, usage, bound)
        usage.write(stmt.name, bound)
        for name in _free_names(stmt):
            usage.read(name, bound)
        return
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        for alias in stmt.names:
            if alias.name != "*":
                name = (alias.asname or alias.name).split(".")[0]
                usage.modules.add(name)
                usage.write(name, bound)
        return
    if isinstance(stmt, ast.Global):
        return
    if isinstance(stmt, _COMPOUND):
        # Header expressions first, then the nested statements in order.
        for name, value in ast.iter_fields(stmt):
            if name in ("body", "orelse", "finalbody", "handlers", "cases"):
                continue
            for node in value if isinstance(value, list) else [value]:
                if isinstance(node, ast.AST):
                    _statement_part(node, usage, bound)
        for name in ("body", "handlers", "cases", "orelse", "finalbody"):
            for child in getattr(stmt, name, None) or []:
                if isinstance(child, (ast.ExceptHandler, ast.match_case)):
                    for inner in child.body:
                        _statement(inner, usage, bound)
                else:
                    _statement(child, usage, bound)
        return
    _statement_part(stmt, usage, bound)


_COMPOUND = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try, ast.Match) + (
    (ast.TryStar,) if hasattr(ast, "TryStar") else ())


def _statement_part(stmt: ast.AST, usage: Usage, bound: set[str]) -> None:
    # Everything loaded in the statement is read before anything it stores (x = x + 1).
    stores: list[str] = []
    mutated: list[str] = []
    for node in _walk_scope(stmt):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                usage.read(node.id, bound)
            else:
                stores.append(node.id)
        elif isinstance(node, (ast.Attribute, ast.Subscript)) and not isinstance(node.ctx, ast.Load):
            mutated.append(_root_name(node))
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            usage.read(node.target.id, bound)
    if isinstance(stmt, ast.Expr):
        call = stmt.value.value if isinstance(stmt.value, ast.Await) else stmt.value
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute):
            mutated.append(_root_name(call.func.value))
    for name in mutated:
        if name and name not in usage.modules and name not in BUILTINS:
            usage.read(name, bound)
            usage.write(name, bound)
    for name in stores:
        usage.write(name, bound)


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _expression(node: ast.AST, usage: Usage, bound: set[str]) -> None:
    for sub in _walk_scope(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
            usage.read(sub.id, bound)


def _def_defaults(stmt: ast.stmt) -> list[ast.AST]:
    if isinstance(stmt, ast.ClassDef):
        return list(stmt.bases) + [k.value for k in stmt.keywords]
    args = stmt.args
    return list(args.defaults) + [d for d in args.kw_defaults if d is not None]


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda,
           ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _walk_scope(node: ast.AST):
    """Nodes of this scope; nested scopes contribute only the globals they read."""
    todo = [node]
    while todo:
        current = todo.pop()
        if current is not node and isinstance(current, _SCOPES):
            for name in _free_names(current):
                yield ast.Name(id=name, ctx=ast.Load())
            continue
        yield current
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
