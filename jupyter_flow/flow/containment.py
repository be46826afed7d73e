"""Whether a step's code is contained: it cannot leave anything in its kernel that a fresh kernel would not have,
once the kernel's namespace is reset. Only such steps may run their tasks one after another in one kernel
(execution/kernel_pool.py); every other step gets a fresh kernel per task.

The check is an allowlist over the syntax tree: whatever it does not know makes the code not contained.
Admitted:
  statements   expressions, assignments and augmented assignments to plain names (or tuples/lists of them, or
               subscripts of them), `del` of names or subscripts, if/for/while (with else), pass/break/continue
  expressions  literals, f-strings, names, arithmetic, comparison, boolean and conditional expressions,
               subscripts and slices, list/tuple/set/dict displays and comprehensions, starred items
  calls        of the builtins in PURE_BUILTINS (never a name the code rebinds), and of the methods in
               PURE_METHODS (of builtin values: the kernel checks at run time that every value given to the
               step is plain data, see in_kernel.plain)
Refused, among others: imports, function and class definitions, lambdas, global/nonlocal, attribute loads or
stores, names that start with `_` (IPython's `_oh`, `__builtins__`, our `_jf`), IPython's own names (In, Out,
get_ipython, exit, quit, open...), `is` other than against None, keyword arguments `file`, try/with/async,
magics and shell escapes (not Python: they do not parse).

So a contained step can only build builtin values from literals, plain inputs and other builtin values, and
change only those values, which all hang off the namespace the reset clears; it reaches no module, no
builtin's attribute, no file, no environment, no working directory and no interpreter setting.
"""
from __future__ import annotations

import ast
import builtins

PURE_BUILTINS = frozenset({
    "abs", "all", "any", "ascii", "bin", "bool", "chr", "complex", "dict", "divmod", "enumerate", "filter", "float",
    "format", "frozenset", "hex", "int", "isinstance", "iter", "len", "list", "map", "max", "min", "next", "oct",
    "ord", "pow", "print", "range", "repr", "reversed", "round", "set", "slice", "sorted", "str", "sum", "tuple",
    "zip", "True", "False", "None",
})
PURE_METHODS = frozenset({
    # str
    "capitalize", "casefold", "center", "count", "endswith", "expandtabs", "find", "format", "index", "isalnum",
    "isalpha", "isdecimal", "isdigit", "islower", "isnumeric", "isspace", "istitle", "isupper", "join", "ljust",
    "lower", "lstrip", "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust",
    "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip", "swapcase", "title", "upper",
    "zfill",
    # list, dict, set (they change only the value they are called on)
    "append", "clear", "copy", "extend", "insert", "pop", "remove", "reverse", "sort", "get", "items", "keys",
    "values", "popitem", "setdefault", "update", "add", "difference", "difference_update", "discard",
    "intersection", "intersection_update", "isdisjoint", "issubset", "issuperset", "symmetric_difference",
    "symmetric_difference_update", "union",
    # int, float
    "as_integer_ratio", "bit_count", "bit_length", "conjugate", "is_integer",
})
# Names a fresh kernel's namespace holds besides the step's own (IPython's, ours start with `_`): never admitted.
KERNEL_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open", "display"})

_BUILTIN_NAMES = frozenset(dir(builtins))
_OPERATORS = (ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.expr_context)
_PLAIN_NODES = (ast.Module, ast.Expr, ast.Pass, ast.Break, ast.Continue, ast.If, ast.For, ast.While,
                ast.Constant, ast.JoinedStr, ast.FormattedValue, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare,
                ast.IfExp, ast.Subscript, ast.Slice, ast.List, ast.Tuple, ast.Set, ast.Dict, ast.Starred,
                ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.comprehension, ast.keyword,
                ast.Call, ast.Name, ast.Assign, ast.AugAssign, ast.Delete, ast.Attribute)


def not_contained(sources: list[str]) -> str:
    """Why the code of these cells (run in order, in one namespace) is not contained; "" if it is."""
    trees = []
    for source in sources:
        try:
            trees.append(ast.parse(source))
        except (SyntaxError, ValueError):
            return "a cell is not plain Python (a magic, a shell escape or a syntax error)"
    nodes = [node for tree in trees for node in ast.walk(tree)]
    bound = {target.id for node in nodes for target in _targets(node) if isinstance(target, ast.Name)}
    methods = {id(node.func) for node in nodes if isinstance(node, ast.Call)
               and isinstance(node.func, ast.Attribute) and node.func.attr in PURE_METHODS}
    for node in nodes:
        why = _refused(node, bound, methods)
        if why:
            return f"line {getattr(node, 'lineno', '?')}: {why}"
    return ""


def _targets(node: ast.AST) -> list[ast.AST]:
    """The names and subscripts a statement or comprehension binds (tuples and starred unpacked)."""
    if isinstance(node, ast.Assign):
        found = list(node.targets)
    elif isinstance(node, (ast.AugAssign, ast.For, ast.comprehension)):
        found = [node.target]
    elif isinstance(node, ast.NamedExpr):
        found = [node.target]
    else:
        return []
    flat: list[ast.AST] = []
    while found:
        target = found.pop()
        if isinstance(target, (ast.Tuple, ast.List)):
            found += target.elts
        elif isinstance(target, ast.Starred):
            found.append(target.value)
        else:
            flat.append(target)
    return flat


def _refused(node: ast.AST, bound: set[str], methods: set[int]) -> str:
    if isinstance(node, _OPERATORS):
        return ""
    if not isinstance(node, _PLAIN_NODES):
        return f"{type(node).__name__} is not admitted"
    if isinstance(node, ast.Name):
        if node.id.startswith("_") or node.id in KERNEL_NAMES:
            return f"the name {node.id} is the kernel's"
        if node.id in _BUILTIN_NAMES and node.id not in PURE_BUILTINS:
            return f"the builtin {node.id}"
        return ""
    if isinstance(node, ast.Attribute):  # only as the function of a call of a pure method
        return "" if id(node) in methods else f"attribute .{node.attr}"
    if isinstance(node, ast.Compare):
        for op, right in zip(node.ops, node.comparators):
            if isinstance(op, (ast.Is, ast.IsNot)) and not (_is_none(right) or _is_none(node.left)):
                return "`is` other than against None"
        return ""
    if isinstance(node, (ast.Assign, ast.AugAssign, ast.For, ast.comprehension, ast.Delete)):
        targets = node.targets if isinstance(node, ast.Delete) else _targets(node)
        for target in targets:
            if not isinstance(target, (ast.Name, ast.Subscript)):
                return f"assignment to {type(target).__name__}"
        return ""
    if isinstance(node, ast.Call):
        return _refused_call(node, bound)
    return ""


def _refused_call(node: ast.Call, bound: set[str]) -> str:
    if any(k.arg in (None, "file") for k in node.keywords):
        return "a call with **kwargs or file="
    func = node.func
    if isinstance(func, ast.Name):
        if func.id not in PURE_BUILTINS or func.id in bound:
            return f"a call of {func.id}"
        return ""
    if isinstance(func, ast.Attribute) and func.attr in PURE_METHODS:
        return ""
    return "a call of something other than a pure builtin or method"


def _is_none(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is None
