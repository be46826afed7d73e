"""Imports are paid once per run: kernels are forked from a process that imported the notebook's
`imports` and `functions` modules already, and each step still runs those cells, with the same results
as in a fresh kernel."""
import json
import os

import pytest
from conftest import cli, tagged_notebook

import jupyter_flow
from jupyter_flow.speed.forkserver import modules_to_preload

pytestmark = pytest.mark.slow


def test_modules_to_preload_reads_import_statements_only():
    sources = ["import numpy as np, os.path\nfrom pandas import DataFrame\nfrom . import local\nx = 1",
               "%matplotlib inline\nimport seaborn", "def f():\n    import json\n    return json"]
    assert modules_to_preload(sources) == ["numpy", "os.path", "pandas", "json"]


def test_an_installed_module_is_imported_once_for_all_steps(tmp_path, store):
    lib = tmp_path / "lib"
    lib.mkdir()
    log = tmp_path / "imports.log"
    (lib / "costly.py").write_text(f"import os\nopen({str(log)!r}, 'a').write(f'{{os.getpid()}}\\n')\nVALUE = 7\n")
    path = tagged_notebook(tmp_path, [(["imports"], "import costly"), (["step:a"], "a = costly.VALUE"),
                                (["step:b"], "b = a + costly.VALUE"), (["step:c"], "c = b + costly.VALUE")])
    env = {"PYTHONPATH": os.pathsep.join([str(lib), os.environ.get("PYTHONPATH", "")])}
    result = cli("run", path, "--quiet", env=env, check=0)
    run = jupyter_flow.Run(result.stdout.strip(), store)
    assert run["c"].data.c == 21
    assert len(log.read_text().split()) == 1  # three steps, three kernels, one import


def test_a_module_in_the_notebook_folder_is_never_preloaded(tmp_path, run_flow):
    # `idna` is installed; the notebook's folder has its own idna.py, which is the one the notebook imports
    (tmp_path / "idna.py").write_text("VALUE = 'local'\n")
    path = tagged_notebook(tmp_path, [(["imports"], "import idna"), (["step:a"], "a = idna.VALUE"),
                                (["step:b"], "b = a + idna.VALUE")])
    assert run_flow(path)["b"].data.b == "locallocal"


def test_plots_still_render_inline(tmp_path, run_flow):
    path = tagged_notebook(tmp_path, [(["imports"], "import matplotlib.pyplot as plt"),
                                (["step:a"], "plt.plot([1, 2, 3])\nplt.show()\nn = 3")])
    run = run_flow(path)
    outputs = [o for c in run["a"].notebook.cells for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs), json.dumps(outputs)[:500]


def test_forked_kernels_do_not_share_numpy_random_state(tmp_path, run_flow):
    path = tagged_notebook(tmp_path, [(["imports"], "import numpy as np"), (["parameters"], "seeds = [0, 1, 2, 3]"),
                                (["step:draw", "foreach:seeds"], "draw = float(np.random.rand())"),
                                (["step:gather"], "draws = draw")])
    draws = run_flow(path)["gather"].data.draws
    assert len(set(draws)) == 4, draws  # unseeded: each kernel draws its own numbers, as fresh processes do


def test_preload_can_be_turned_off(tmp_path, store):
    lib = tmp_path / "lib"
    lib.mkdir()
    log = tmp_path / "imports.log"
    (lib / "costly.py").write_text(f"import os\nopen({str(log)!r}, 'a').write(f'{{os.getpid()}}\\n')\n")
    path = tagged_notebook(tmp_path, [(["imports"], "import costly"), (["step:a"], "a = 1"), (["step:b"], "b = a + 1")])
    env = {"PYTHONPATH": os.pathsep.join([str(lib), os.environ.get("PYTHONPATH", "")]), "JUPYTER_FLOW_PRELOAD": "0"}
    cli("run", path, "--quiet", env=env, check=0)
    assert len(log.read_text().split()) == 2  # each step's kernel imported it itself
