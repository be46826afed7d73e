"""Issue 21: the house rules a newcomer relies on when reading the package top-down, checked over all of it.

- No import cycle between any two of our modules, counting imports made inside functions (grimp reads
  them all; import-linter's contracts see only imports between layers, not a cycle inside one).
- The readers, the terminal and notebook views and the server import each other in one direction only.
- Every import made inside a function says why it is late, in a comment on its line or the line above
  (a group of imports one after another shares one comment): a late import hides an edge of the graph
  and costs a look-up at every call, so it must buy something (start-up time, an optional extra).
"""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import grimp

import jupyter_flow

PACKAGE = Path(jupyter_flow.__file__).parent
# a linter's pragma at the start of a comment (`noqa: F401`, `type: ignore[...]`) is no reason; the text after it may be
PRAGMA = re.compile(r"^\s*(?:noqa\b(?::\s*[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*)?|type:\s*ignore(?:\[[^]]*\])?)"
                    r"\s*[-;:,]*\s*", re.IGNORECASE)
NOT_A_REASON = re.compile(r"^cycle", re.IGNORECASE)  # an import late to hide a cycle: fix the cycle instead


def cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    ours = sorted(m for m in graph.modules if m == "jupyter_flow" or m.startswith("jupyter_flow."))
    edges = {m: sorted(n for n in graph.find_modules_directly_imported_by(m) if n in ours) for m in ours}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in ours:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if i < len(edges[node]):
                work.append((node, i + 1))
                nxt = edges[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if work:  # done with node: its parent learns its low-link
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle_through_three_modules_and_none_in_a_chain():
    graph = grimp.ImportGraph()
    for a, b in [("jupyter_flow.a", "jupyter_flow.b"), ("jupyter_flow.b", "jupyter_flow.c"),
                 ("jupyter_flow.c", "jupyter_flow.a"), ("jupyter_flow.c", "jupyter_flow.d")]:
        graph.add_import(importer=a, imported=b)
    assert cycles(graph) == [["jupyter_flow.a", "jupyter_flow.b", "jupyter_flow.c"]]
    graph.remove_import(importer="jupyter_flow.c", imported="jupyter_flow.a")
    assert cycles(graph) == []


def test_no_import_cycle_between_any_of_our_modules():
    graph = grimp.build_graph("jupyter_flow")
    assert len(graph.modules) > 60
    found = cycles(graph)
    where = [f"{a} -> {b} (line {d['line_number']})" for component in found for a in component for b in component
             if graph.direct_import_exists(importer=a, imported=b)
             for d in graph.get_import_details(importer=a, imported=b)]
    assert found == [], "import cycles (move the shared piece to the module that owns it):\n" + "\n".join(where)


def test_readers_ui_and_server_import_each_other_in_one_direction_only():
    graph = grimp.build_graph("jupyter_flow")
    # readers import neither ui nor server; ui never imports server
    for low, high in (("readers", "ui"), ("readers", "server"), ("ui", "server")):
        assert not graph.chain_exists(importer=f"jupyter_flow.{low}", imported=f"jupyter_flow.{high}", as_packages=True)


def reasons(source: str) -> dict[int, str]:
    """The comment of each line of code (1-based), without linter pragmas such as `noqa`."""
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            text = PRAGMA.sub("", token.string.lstrip("#").strip(), count=1).strip()
            if text and not NOT_A_REASON.match(text):
                found[token.start[0]] = text
    return found


def imports_without_reason(source: str) -> list[int]:
    """The line numbers of imports made inside a function with no reason: none on any of their lines,
    on the line above, or on those of the imports right next to them (a group shares one)."""
    comments = reasons(source)
    missing: list[int] = []

    def groups(statements: list[ast.stmt]):
        group: list[ast.stmt] = []
        for statement in [*statements, None]:
            if isinstance(statement, (ast.Import, ast.ImportFrom)):
                group.append(statement)
            elif group:
                yield group
                group = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for field in ("body", "orelse", "finalbody", "handlers"):
            statements = getattr(node, field, None)
            if not (isinstance(statements, list) and statements and isinstance(statements[0], ast.AST)):
                continue
            for group in groups(statements) if in_function else ():
                given = {group[0].lineno - 1, *(n for g in group for n in range(g.lineno, (g.end_lineno or 0) + 1))}
                if not given & comments.keys():
                    missing.extend(g.lineno for g in group)
            for statement in statements:
                visit(statement, in_function or isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(source), False)
    return missing


def test_the_reason_check_reads_own_lines_the_line_above_and_groups():
    source = '''
def f():
    import a  # lazy: a costs 0.3 s at start-up
    import b
    x = 1
    # lazy: only the S3 backend needs c
    import c
    x = 2
    import d  # noqa: F401
    x = 3
    import d2  # noqa: F401 - warming: imported while the kernel boots
    if x:
        import e  # cycle-free: e imports this module
    try:
        from g import (  # lazy: g pulls in numpy
            h,
        )
    except ImportError:
        from g2 import h
import z
'''
    assert imports_without_reason(source) == [9, 13, 19]


def test_every_import_inside_a_function_says_why_it_is_late():
    missing = {str(path.relative_to(PACKAGE.parent)): lines for path in sorted(PACKAGE.rglob("*.py"))
               if (lines := imports_without_reason(path.read_text(encoding="utf-8")))}
    assert missing == {}, ("imports inside functions without a reason: move each to the top of its module, or "
                           "say on its line what being late buys (`# lazy: papermill costs 0.4 s at start-up`)")
