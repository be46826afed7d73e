"""Imports are paid once per run: kernels are forked from a process that imported the notebook's
`imports` and `functions` modules already (those known to be safe to fork: the standard library, an
allow-list, what JUPYTER_FLOW_PRELOAD_ALLOW adds), and each step still runs those cells, with the same
results as in a fresh kernel."""
import json
import os
from pathlib import Path

import pytest
from conftest import cli, tagged_notebook

import jupyter_flow
from jupyter_flow.speed.forkserver import modules_to_preload

pytestmark = pytest.mark.slow


def test_modules_to_preload_reads_import_statements_only():
    sources = ["import numpy as np, os.path\nfrom pandas import DataFrame\nfrom . import local\nx = 1",
               "%matplotlib inline\nimport seaborn", "def f():\n    import json\n    return json"]
    assert modules_to_preload(sources) == ["numpy", "os.path", "pandas", "json"]


def _costly(tmp_path, code: str = "") -> tuple[Path, dict]:
    """A module `costly` on the PYTHONPATH that logs the pid of each process importing it, then runs `code`;
    (the log, the environment a run needs to import it)."""
    lib = tmp_path / "lib"
    lib.mkdir()
    log = tmp_path / "imports.log"
    logging = f"import os\nopen({str(log)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
    (lib / "costly.py").write_text(f"{logging}VALUE = 7\n{code}")
    return log, {"PYTHONPATH": os.pathsep.join([str(lib), os.environ.get("PYTHONPATH", "")])}


WHO = "import os\n{s}_parent, {s}_pid = os.getppid(), os.getpid()\n"
THREE_STEPS = [(["imports"], "import costly"), (["step:a"], "a = costly.VALUE\n" + WHO.format(s="a")),
               (["step:b"], "b = a + costly.VALUE\n" + WHO.format(s="b")),
               (["step:c"], "c = b + costly.VALUE\n" + WHO.format(s="c"))]


def test_an_allowed_module_is_imported_once_for_all_steps(tmp_path, store):
    log, env = _costly(tmp_path)
    path = tagged_notebook(tmp_path, THREE_STEPS)
    result = cli("run", path, "--quiet", "--debug", env={**env, "JUPYTER_FLOW_PRELOAD_ALLOW": "other, costly"},
                 check=0)
    run = jupyter_flow.Run(result.stdout.strip(), store)
    assert run["c"].data.c == 21
    parents = [getattr(run[s].data, f"{s}_parent") for s in "abc"]
    # three kernels, one import: the zygote's
    assert log.read_text().split() == [str(parents[0])], (parents, result.stderr)


def test_a_module_not_known_to_be_fork_safe_is_imported_by_each_step_itself(tmp_path, store):
    log, env = _costly(tmp_path)
    path = tagged_notebook(tmp_path, THREE_STEPS)
    run = jupyter_flow.Run(cli("run", path, "--quiet", env=env, check=0).stdout.strip(), store)
    assert run["c"].data.c == 21
    assert len(log.read_text().split()) == 3 and str(run["a"].data.a_parent) not in log.read_text().split()


def test_a_preload_that_starts_a_thread_stops_preloading_and_debug_says_why(tmp_path, store):
    # an allowed module that starts a thread as it is imported: the zygote that imported it forks no more;
    # every kernel is forked from a new zygote that preloads nothing, and imports it itself
    log, env = _costly(tmp_path, "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), "
                                 "daemon=True).start()\n")
    path = tagged_notebook(tmp_path, THREE_STEPS)
    result = cli("run", path, "--quiet", "--debug", env={**env, "JUPYTER_FLOW_PRELOAD_ALLOW": "costly"}, check=0)
    run = jupyter_flow.Run(result.stdout.strip(), store)
    assert run["c"].data.c == 21
    kernels = {str(getattr(run[s].data, f"{s}_pid")) for s in "abc"}
    parents = {str(getattr(run[s].data, f"{s}_parent")) for s in "abc"}
    imported = log.read_text().split()
    # the zygote that imported it, then each kernel itself: none was forked from that zygote after its import
    # (a kernel it forked before may run a step: the first task can ask before the run's preload is known)
    assert len(set(imported)) == len(imported) == 4 and kernels < set(imported), (imported, parents)
    said = [line for line in result.stderr.splitlines() if "importing costly started 1 thread" in line]
    assert len(said) == 1 and "now fork from one that preloads nothing" in said[0], result.stderr


def test_a_module_in_the_notebook_folder_is_never_preloaded(tmp_path, run_flow, monkeypatch):
    # `idna` is installed; the notebook's folder has its own idna.py, which is the one the notebook imports
    (tmp_path / "idna.py").write_text("VALUE = 'local'\n")
    monkeypatch.setenv("JUPYTER_FLOW_PRELOAD_ALLOW", "idna")
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
    log, env = _costly(tmp_path)
    path = tagged_notebook(tmp_path, [(["imports"], "import costly"), (["step:a"], "a = 1"), (["step:b"], "b = a + 1")])
    env.update(JUPYTER_FLOW_PRELOAD="0", JUPYTER_FLOW_PRELOAD_ALLOW="costly")
    cli("run", path, "--quiet", env=env, check=0)
    assert len(log.read_text().split()) == 2  # each step's kernel imported it itself
