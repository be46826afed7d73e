"""Issue 21: the readers, the terminal and notebook views and the server import each other in one
direction only, counting imports made inside functions (grimp reads them all)."""
import itertools

import grimp

LAYERS = ("readers", "ui", "server")


def test_no_import_cycles_between_readers_ui_and_server_modules():
    graph = grimp.build_graph("jupyter_flow")
    ours = sorted(m for m in graph.modules if m.split(".")[1:2] and m.split(".")[1] in LAYERS)
    assert len(ours) > 10
    cycles = [(a, b) for a, b in itertools.permutations(ours, 2)
              if graph.direct_import_exists(importer=a, imported=b) and graph.chain_exists(importer=b, imported=a)]
    assert cycles == []
    # and upwards never: readers import neither ui nor server; ui never imports server
    for low, high in (("readers", "ui"), ("readers", "server"), ("ui", "server")):
        assert not graph.chain_exists(importer=f"jupyter_flow.{low}", imported=f"jupyter_flow.{high}", as_packages=True)
