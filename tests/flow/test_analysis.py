"""Static analysis of steps (no kernels): what each step reads, writes and may change in place, and
the refusals and warnings for what a pipeline cannot run as top to bottom does."""
import json

import pytest
from conftest import EXAMPLES, SCENARIOS, cli, one_line_error, run_dirs

from jupyter_flow.errors import FlowError
from jupyter_flow.flow.analysis import analyze
from jupyter_flow.flow.dag import build_flow


def usage(*cells, **kw):
    return analyze(list(cells), **kw)


def test_reads_and_writes_follow_python_scoping():
    u = usage("import math\nx = math.sqrt(y)\nfor i in range(3):\n    t = i + w\n"
              "def f(a):\n    return a + g\nsq = [k * q for k in x]\n%time r = x\n")
    assert u.reads == ["y", "w", "g", "q"]
    assert u.writes == ["math", "x", "i", "t", "f", "sq", "r"]


@pytest.mark.parametrize("code, changed", [
    ("xs.append(4)", "xs"),                                   # a method whose result is dropped
    ("last = xs.pop()", "xs"),                                # a known in-place method, result used
    ("df['a'] = 1", "df"),                                    # item assignment
    ("obj.attr = 2", "obj"),
    ("n += 1", "n"),
    ("df.dropna(inplace=True)", "df"),
    ("for d in [df]:\n    d['y'] = 2", "df"),                # through a loop variable
    ("d = df\nd['y'] = 2", "df"),                             # through an alias
    ("rows = [df]\nrows[0]['y'] = 2", "df"),                  # through a container
    ("def add(l):\n    l.append(99)\nadd(deck)", "deck"),     # passed to a notebook function
    ("import random\nrandom.shuffle(deck)", "deck"),          # passed to a module function
    ("def grow():\n    deck.append(1)\ngrow()", "deck"),       # a notebook function changing a global
    ("del x", "x"),
    ("v = rng.normal()", "rng"),                              # a draw advances a generator
])
def test_what_may_change_a_value_counts_as_reading_and_writing_it(code, changed):
    u = usage(code)
    assert changed in u.reads and changed in u.writes


def test_calls_whose_result_is_used_are_verified_at_run_time_not_edges():
    u = usage("m = X.mean()", "Xs = scaler.transform(X)", "model = make(Y)", "k = len(Z)", "np.save('f', W)",
              modules={"np": "numpy"})
    assert u.writes == ["m", "Xs", "model", "k"]
    assert u.maybe == ["Y"]  # mean, transform, len and np.save change nothing; make(Y) might
    assert {"X", "scaler", "Y", "Z", "W"} <= set(u.reads)


def test_ipython_syntax_parses_and_expansions_are_reads():
    u = usage("out = !echo hi\nt = %time n*2\n!echo {word} > f\n!echo $other $HOME\n%matplotlib inline")
    assert u.writes == ["out", "t"]
    assert u.reads == ["n", "word", "other", "HOME"]
    assert u.optional == {"other", "HOME"}  # `$name` is left as it is when nothing defines it
    u = usage("%%time\ny = x + 1\n", "%%capture cap\nprint(z)\n", "%timeit -n 3 f(a)")
    assert u.reads == ["x", "z", "f", "a"] and u.writes == ["y", "cap", "a"]  # f(a) may change a


def test_a_notebook_function_reads_and_changes_globals_where_it_is_called():
    defined = usage("def g():\n    return y * 10\n\ndef h():\n    deck.append(1)")
    u = analyze(["r = g()\nh()"], functions=defined.functions)
    assert u.reads == ["g", "y", "h", "deck"]
    assert u.writes == ["r", "deck"]


def test_a_notebook_function_changes_only_the_arguments_it_changes():
    defined = usage("def f(a, b, *rest, k=None, **kw):\n    a.append(1)\n    rest[0].sort()\n    m = g(b)\n"
                    "    return k")
    u = analyze(["r = f(x, y, z, k=w, other=v)"], functions=defined.functions)
    assert u.writes == ["x", "z", "r"]  # a (x) and *rest (z) are changed; k and **kw are only read
    assert u.maybe == ["y"]  # passed on to g, whose result is used: checked at run time


def test_builtins_are_reads_only_when_redefined():
    assert usage("r = sum(3, 4)").builtins == ["sum"]
    flow = build_flow(SCENARIOS / "redefined_builtin.ipynb")
    assert flow.steps["b"].inputs == {"sum": "a"}
    assert build_flow(SCENARIOS / "linear.ipynb").warnings == []


def test_a_shared_name_rebound_by_a_step_is_passed_on():
    flow = build_flow(SCENARIOS / "shared_rebound.ipynb")
    assert flow.steps["b"].inputs == {"math": "a"}
    assert "math" not in flow.steps["a"].reads


def test_global_random_state_is_a_warning_naming_the_step():
    flow = build_flow(SCENARIOS / "random_state.ipynb")
    assert len(flow.warnings) == 1 and "step 'b' draws from the global random state" in flow.warnings[0]
    assert "random.seed" in flow.warnings[0]


@pytest.mark.parametrize("cells, warned", [
    ({"imports": "import random\nrandom.seed(0)", "a": "x = random.random()", "b": "y = random.random()"}, True),
    ({"imports": "import numpy as np\nnp.random.seed(0)", "a": "x = np.random.rand()", "b": "y = np.random.rand()"},
     True),
    ({"a": "import random\nrandom.seed(0)\nx = random.random()", "b": "y = random.random()"}, True),
    ({"imports": "import random\nrandom.seed(0)", "a": "x = random.random()",
      "b": "random.seed(1)\ny = random.random()"}, False),  # b seeds its own
    ({"imports": "import random", "a": "x = random.random()", "b": "y = random.random()"}, False),  # never seeded
    ({"imports": "import random\nrandom.seed(0)", "a": "x = 1", "b": "y = random.random()"}, False),  # the first
    ({"imports": "import numpy as np", "a": "rng = np.random.default_rng(0)\nx = rng.random()",
      "b": "y = rng.random()"}, False),  # a generator passed on
])
def test_random_state_warnings(tmp_path, cells, warned):
    flow = build_flow(write(tmp_path, cells))
    assert any("global random state" in w for w in flow.warnings) == warned, flow.warnings


def test_a_step_split_around_a_step_using_its_names_is_refused():
    with pytest.raises(FlowError) as info:
        build_flow(SCENARIOS / "split_step.ipynb")
    message = str(info.value)
    assert "continues step 'a' after step 'b'" in message and "x" in message and "step:a_2" in message


def test_a_split_step_that_shares_no_name_with_the_step_between_is_fine(tmp_path):
    path = write(tmp_path, [("step:a", "x = 1"), ("step:b", "y = 2"), ("step:a", "z = x + 1")])
    assert build_flow(path).steps["a"].writes == ["x", "z"]


def test_a_split_step_that_redefines_a_builtin_the_step_between_uses_is_refused(tmp_path):
    """Top to bottom, step b's sum is the builtin (12); the pipeline would hand it a's later def (2).
    Found by test_pipeline_gives_the_values_of_top_to_bottom in a fresh-clone CI run."""
    path = write(tmp_path, [("step:a", "x = [0, 1]"), ("step:b", "r10 = sum(x) * 10 + len(x)"),
                            ("step:a", "def sum(l):\n    return 0")])
    with pytest.raises(FlowError) as info:
        build_flow(path)
    assert "continues step 'a' after step 'b'" in str(info.value) and "sum" in str(info.value)
    # and the other way: b redefines it, a's later cell uses it (top to bottom: b's sum)
    path = write(tmp_path, [("step:a", "x = [0, 1]"), ("step:b", "def sum(l):\n    return 0"),
                            ("step:a", "r20 = sum(x) * 10 + len(x)")])
    with pytest.raises(FlowError) as info:
        build_flow(path)
    assert "continues step 'a' after step 'b'" in str(info.value) and "sum" in str(info.value)


def test_refusals_from_the_cli_are_one_line_exit_2_and_write_nothing(store):
    proc = cli("run", SCENARIOS / "split_step.ipynb", check=2)
    assert "continues step 'a'" in one_line_error(proc)
    assert run_dirs(store) == []


def test_random_state_warning_is_printed_before_the_run(store):
    proc = cli("dag", SCENARIOS / "random_state.ipynb", check=0)
    assert "warning: step 'b' draws from the global random state" in proc.stdout


def test_aliases_left_between_steps_are_a_warning(tmp_path):
    path = write(tmp_path, [("step:a", "x = [1]\ny = x"), ("step:b", "x.append(2)"), ("step:c", "n = len(y)")])
    flow = build_flow(path)
    assert any("leaves 'y' and 'x' as one object" in w and "'b'" in w for w in flow.warnings), flow.warnings


def test_only_later_readers_of_a_maybe_changed_input_are_verified():
    flow = build_flow(SCENARIOS / "changed_in_place.ipynb")
    assert flow.steps["b"].verify == {"xs": ["c"]}
    assert flow.steps["c"].verify == {}


def test_quickstart_keeps_its_parallel_branches_and_verifies_the_shared_input():
    flow = build_flow(EXAMPLES / "quickstart.ipynb")
    assert flow.steps["select_features"].prev == ["load"]
    assert "X_train" in flow.steps["scale_features"].verify


def test_foreach_over_an_expression_parameter_evaluates_it_in_a_step():
    flow = build_flow(SCENARIOS / "foreach_expression.ipynb")
    assert next(iter(flow.steps)) == "parameters"
    assert flow.steps["parameters"].writes == ["items", "alphas"]
    assert flow.steps["square"].inputs == {"items": "parameters"}


def test_the_parameters_cell_runs_where_it_is_among_shared_cells():
    from jupyter_flow.flow import stepbook

    flow = build_flow(SCENARIOS / "before_parameters.ipynb")
    cells = stepbook.build(flow, flow.steps["a"], "run", 0)["cells"]
    assert [c["metadata"]["jupyter_flow"]["role"] for c in cells[:2]] == ["shared", "parameters"]


def write(tmp_path, cells) -> str:
    """A notebook from {tag: source} or [(tag, source)] (tags of steps: their name)."""
    items = cells.items() if isinstance(cells, dict) else cells
    raw = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3"}}, "cells": [
        {"cell_type": "code", "metadata": {"tags": [tag if tag in ("imports", "functions") or ":" in tag
                                                    else f"step:{tag}"]},
         "source": source, "outputs": [], "execution_count": None} for tag, source in items]}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(raw))
    return path


# -- files: predicted from the code where the path is spelled out -----------------------------------
@pytest.mark.parametrize("code, read, written", [
    ("got = open('out.txt').read()", ["out.txt"], []),
    ("open('out.txt', 'w').write('x')", [], ["out.txt"]),
    ("with open('log.txt', mode='a') as f:\n    f.write('x')", [], ["log.txt"]),
    ("with open('state.bin', 'r+b') as f:\n    f.write(b'x')", ["state.bin"], ["state.bin"]),
    ("open('out.txt', 'w').write('x')\ngot = open('out.txt').read()", [], ["out.txt"]),  # its own file
    ("import pandas as pd\ndf = pd.read_csv('data.csv')\ndf.to_parquet('clean.parquet')", ["data.csv"],
     ["clean.parquet"]),
    ("import numpy as np\nnp.save('a.npy', x)\ny = np.load('b.npy')", ["b.npy"], ["a.npy"]),
    ("import joblib\njoblib.dump(model, 'model.pkl')\nm = joblib.load('old.pkl')", ["old.pkl"], ["model.pkl"]),
    ("import pickle\nm = pickle.load(open('m.pkl', 'rb'))\npickle.dump(m, open('n.pkl', 'wb'))", ["m.pkl"],
     ["n.pkl"]),
    ("import json\ncfg = json.load(open('cfg.json'))", ["cfg.json"], []),
    ("import matplotlib.pyplot as plt\nplt.savefig('plot.png')\nfig.savefig('fig.svg')", [],
     ["plot.png", "fig.svg"]),
    ("import torch\ntorch.save(model, 'model.pt')", [], ["model.pt"]),
    ("import shutil\nshutil.copy('a.txt', 'b.txt')\nshutil.move('c.txt', 'd.txt')", ["a.txt", "c.txt"],
     ["b.txt", "c.txt", "d.txt"]),
    ("import os\nos.remove('old.txt')", [], ["old.txt"]),
    ("from pathlib import Path\nPath('a.txt').write_text('x')\nt = (Path('data') / 'b.txt').read_text()",
     ["data/b.txt"], ["a.txt"]),
    ("from pathlib import Path\np = Path('data', 'c.txt')\nwith p.open('w') as f:\n    pass", [], ["data/c.txt"]),
    (("import os\nbase = 'data'\nname = f'{base}/run_{3:02d}.csv'\nopen(name, 'w')\n"
      "open(os.path.join(base, 'x' + '.csv'))\nopen('{}.txt'.format(base))\nopen('%s.log' % base)"),
     ["data/x.csv", "data.txt", "data.log"], ["data/run_03.csv"]),
    ("def save():\n    open('saved.txt', 'w').write('x')\nsave()", [], ["saved.txt"]),  # a notebook function
    # files C code opens (the runtime's audit hook cannot see them): predicted from the code
    (("import h5py, sqlite3\nimport pyarrow.parquet as pq\nf = h5py.File('a.h5', 'w')\ng = h5py.File('b.h5')\n"
      "c = sqlite3.connect('db.sqlite')\nt = pq.read_table('x.parquet')\npq.write_table(t, 'y.parquet')"),
     ["b.h5", "db.sqlite", "x.parquet"], ["a.h5", "db.sqlite", "y.parquet"]),
    (("open(name)\npd.read_csv(url)\nopen('https://example.com/x')\ndf.to_sql('table', con)\n"
      "pd.read_sql('select 1', con)\nfor f in ['a.txt']:\n    open(f)"), [], []),  # not spelled out: not predicted
    ("if fast:\n    path = 'a.txt'\nopen(path)", [], []),  # bound in a branch: not known
])
def test_files_a_step_reads_and_writes_are_predicted_from_its_code(code, read, written):
    u = usage(code)
    assert (u.files_read, u.files_written) == (read, written)


def test_names_bound_to_constants_in_earlier_cells_name_files():
    u = analyze(["df = pd.read_csv(path)\ndf.to_csv(out_dir + '/clean.csv')"], modules={"pd": "pandas"},
                constants={"path": "data.csv", "out_dir": "results"})
    assert (u.files_read, u.files_written) == (["data.csv"], ["results/clean.csv"])


# -- warnings a careful reader would call false -------------------------------------------------------
@pytest.mark.parametrize("cells", [
    [("step:a", "x = [1]\ny = x"), ("step:b", "x = [2]\nx.append(3)"), ("step:c", "n = len(y)")],  # rebound first
    [("step:a", "x = [1]\ny = x"), ("step:b", "x = list(x)"), ("step:c", "x.append(2)\nn = len(y)")],  # rebound between
    [("step:a", "import pandas as pd\ndf = pd.DataFrame({'a': [1]})\nsub = df[['a']]"),
     ("step:b", "sub['b'] = 2")],                                                                  # a new object
    [("step:a", "xs = [1, 2]\nhead = xs[:1]"), ("step:b", "head.append(5)")],                     # a slice
    [("step:a", "xs = [1, 2]\nys = sorted(xs)"), ("step:b", "ys.append(5)")],                      # a call
    [("step:a", "target = 'y'\ncols = ['x', target]"), ("step:b", "cols.append('z')")],            # a str in a list
    [("step:a", "x = [1]\nys = [x]"), ("step:b", "ys = [x]\nfor d in ys:\n    d.append(2)")],       # rebinds the other
])
def test_no_shared_object_warning_where_there_is_no_shared_object(tmp_path, cells):
    assert build_flow(write(tmp_path, cells)).warnings == []


@pytest.mark.parametrize("cells", [
    [("step:a", "x = [1]\ny = x"), ("step:b", "x.append(2)"), ("step:c", "n = len(y)")],
    [("step:a", "df = {'a': 1}\nrows = [df]"), ("step:b", "df['b'] = 2")],
    # a step in between binds y to the object it held (found by the split property test in CI)
    [("step:s0", "y = [0, 1]"), ("step:s1", "x = y"), ("step:s2", "y = y"), ("step:s3", "_a = y\n_a.append(0)")],
])
def test_a_true_shared_object_is_still_warned_about(tmp_path, cells):
    assert any("as one object" in w for w in build_flow(write(tmp_path, cells)).warnings)


def test_names_from_a_star_import_are_not_undefined_and_come_from_its_step():
    flow = build_flow(SCENARIOS / "star_import.ipynb")
    assert flow.warnings == []
    assert flow.steps["b"].inputs == {"floor": "a", "pi": "a", "x": "a"}  # top to bottom, a's import defined them


def test_the_kernels_shell_made_in_a_shared_cell_is_never_an_edge():
    flow = build_flow(SCENARIOS / "ipython_shell.ipynb")
    assert "ip" not in flow.steps["a"].writes and flow.steps["b"].inputs == {"word": "a"}
    assert flow.warnings == []


def test_the_kernels_shell_made_in_a_step_and_used_by_another_is_refused(tmp_path):
    path = write(tmp_path, [("step:a", "ip = get_ipython()"),
                            ("step:b", "ip.run_line_magic('load_ext', 'autoreload')")])
    with pytest.raises(FlowError, match=r"step 'b' uses 'ip', which step 'a' binds to the IPython shell.*imports"):
        build_flow(path)


@pytest.mark.slow
@pytest.mark.parametrize("notebook, names", [
    ("star_import.ipynb", ["x", "p", "y"]),
    ("ipython_shell.ipynb", ["word", "n"]),
    ("before_parameters_no_steps.ipynb", ["path"]),
    ("before_parameters_untagged.ipynb", ["path"]),
])
def test_these_notebooks_give_the_values_of_top_to_bottom(run_flow, top_to_bottom, notebook, names):
    run = run_flow(notebook)
    expected = top_to_bottom(SCENARIOS / notebook, names)
    got = {n: a.value for task in run.tasks for n, a in task.artifacts.items() if n in names}
    assert got == expected and set(got) == set(names)


def test_a_magic_from_an_extension_a_step_loaded_is_refused_in_a_later_step(tmp_path):
    path = write(tmp_path, [("step:a", "%load_ext autoreload\nx = 1"), ("step:b", "%autoreload 2\ny = x")])
    with pytest.raises(FlowError, match=r"step 'b' uses %autoreload.*step 'a' loads the extension 'autoreload'.*"
                                        r"imports cell \(%load_ext autoreload\)"):
        build_flow(path)
    path = write(tmp_path, [("imports", "%load_ext autoreload"), ("step:a", "x = 1"),
                            ("step:b", "%autoreload 2\ny = x")])
    assert build_flow(path).warnings == []
