"""Issue 21: the house rules a newcomer relies on when reading the package top-down, checked over all of it.

- No import cycle between any two of our modules, counting imports made inside functions (grimp reads
  them all; import-linter's contracts see only imports between layers, not a cycle inside one).
- The readers, the terminal and notebook views and the server import each other in one direction only.
"""
from __future__ import annotations

import grimp


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
