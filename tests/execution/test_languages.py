"""Steps in other languages (R through IRkernel): R name analysis, the neutral format values cross
in, and real runs Python -> R -> Python, values that cannot cross, an R step's failure snapshot."""
import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SCENARIOS, cli, one_line_error, run_dirs, tagged_notebook
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_flow.errors import FlowError
from jupyter_flow.flow import analysis_r
from jupyter_flow.flow.dag import build_flow
from jupyter_flow.flow.kernelspecs import installed_kernels
from jupyter_flow.store import neutral, open_store

needs_r = pytest.mark.skipif("ir" not in installed_kernels(), reason="the R kernel (ir) is not installed; "
                             ".ci/run installs it (r-base-core r-cran-irkernel r-cran-jsonlite)")


# -- R name analysis ---------------------------------------------------------------------------------
@pytest.mark.parametrize("source, reads, writes", [
    ("x <- x + 1", ["x"], ["x"]),
    ("y = 2 * z", ["z"], ["y"]),
    ("10 -> q\nw ->> v", ["w"], ["q", "v"]),
    ("df$b <- df$a * 2", ["df"], ["df"]),  # a change of part of df reads it
    ("names(v) <- c('a', 'b')", ["names", "v", "c"], ["v"]),
    ("m[1, 2] <- 0\nlst[['a']]$b <- 1", ["m", "lst"], ["m", "lst"]),
    ("assign('h', 3)\nrm(old)", ["assign", "rm", "old"], ["h", "old"]),
    ("library(dplyr)\nrequire('tidyr')\nz <- mutate(d, k = a)", ["mutate", "d", "a"], ["z"]),
    ("res <- stats::median(u)\nu2 <- base:::sum(u)", ["u"], ["res", "u2"]),
    ("fit <- lm(y ~ x + w, data = d)", ["lm", "d"], ["fit"]),  # formula names are columns
    ("for (i in seq_len(n)) s <- s + i", ["seq_len", "n", "s"], ["i", "s"]),
    ("if (flag) {\n  a <- 1\n  b <- a\n} else {\n  b <- 2\n}", ["flag"], ["a", "b"]),
    ("f <- function(a, b = 2) {\n  t <- a * k\n  g <<- t\n  t\n}\nr <- f(3)", ["k"], ["f", "g", "r"]),
    ("sq <- \\(x) x^2 + w", ["w"], ["sq"]),
    ("out <- tryCatch({\n  m <- 1\n  m + n\n}, error = function(e) NA)", ["tryCatch", "n"], ["out", "m"]),
    ("s <- r\"(a\"b)\"  # a comment: x <- 1\n`odd name` <- 'y <- 2'", [], ["s", "odd name"]),
    ("x <- c(1,\n  2)\ny <- x |>\n  sum()", ["c", "sum"], ["x", "y"]),
])
def test_r_reads_and_writes(source, reads, writes):
    usage = analysis_r.analyze([source])
    assert usage.reads == reads
    assert usage.writes == writes


_names = st.sampled_from(["a", "b", "c", "d.x", "e_1", "caf\u00e9"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_names, st.lists(_names, max_size=3), st.sampled_from(["<-", "=", "->", "<<-"])),
                min_size=1, max_size=8))
def test_r_assignment_chains(lines):
    """Reads are the names used before the code assigns them (in order), writes those it assigns."""
    source, reads, writes = [], [], []
    for target, used, op in lines:
        expression = " + ".join(used) or "1"
        source.append(f"{expression} -> {target}" if op == "->" else f"{target} {op} {expression}")
        reads += [n for n in dict.fromkeys(used) if n not in writes and n not in reads]
        writes += [target] if target not in writes else []
    usage = analysis_r.analyze(["\n".join(source)])
    assert (usage.reads, usage.writes) == (reads, writes)


def test_r_analysis_names_packages_and_functions():
    usage = analysis_r.analyze(["library(ggplot2)\nsuppressPackageStartupMessages(library(stats))",
                                "double_it <- function(x) x * 2"])
    assert usage.packages == ["ggplot2", "stats"] and usage.functions == ["double_it"]


def test_r_syntax_errors_name_the_cell(tmp_path):
    path = tagged_notebook(tmp_path, [(["step:a"], "x = 1"), (["step:b", "kernel:ir"], "y <- f(x")])
    if "ir" not in installed_kernels():
        pytest.skip("the kernel's language is read from the installed ir kernelspec")
    with pytest.raises(FlowError, match=r"cell 2 \('y <- f\(x'\) in step 'b' \(R\): '\(' on line 1 is never closed"):
        build_flow(path)


def test_r_parameters_cell():
    found = analysis_r.parameters("n <- 5\nalpha = 0.5  # rate\nname <- 'abc'\nflag <- TRUE\nm <- -3L\nv <- c(1, 2)")
    assert found == {"n": (5, "int", "5"), "alpha": (0.5, "float", "0.5"), "name": ("abc", "str", "'abc'"),
                     "flag": (True, "bool", "TRUE"), "m": (-3, "int", "-3L"), "v": (None, "expression", "c(1, 2)")}


# -- the neutral format, Python's side ---------------------------------------------------------------
scalars = st.none() | st.booleans() | st.integers(-2**31 + 1, 2**31 - 1) | st.text(max_size=5) | \
    st.floats(allow_nan=False, allow_infinity=True)
values = st.recursive(scalars, lambda inner: st.lists(inner, min_size=2, max_size=3).filter(
    lambda xs: not _vector_like(xs)) | st.dictionaries(st.text(min_size=1, max_size=3), inner, min_size=1, max_size=3),
    max_leaves=8)


def _vector_like(xs) -> bool:
    """Lists that become vectors (and come back as numpy arrays): all numbers, all bools or all str."""
    return len(neutral._kinds(xs)) == 1


@settings(max_examples=200, deadline=None)
@given(values)
def test_plain_values_come_back_as_they_went(value):
    assert neutral.loads(neutral.dumps(value)) == value


def test_tables_vectors_and_matrices_keep_their_types():
    df = pd.DataFrame({"n": [1, 2, 3], "x": [0.5, None, 2.0], "s": ["a", None, "c"], "ok": [True, False, True],
                       "c": pd.Categorical(["lo", "hi", "lo"])})
    back = neutral.loads(neutral.dumps(df))
    pd.testing.assert_frame_equal(back, df)
    assert np.array_equal(neutral.loads(neutral.dumps([1.0, 2.5])), np.array([1.0, 2.5]))
    matrix = np.arange(6, dtype=float).reshape(2, 3)
    assert np.array_equal(neutral.loads(neutral.dumps(matrix)), matrix)
    assert neutral.loads(neutral.dumps(np.array([1, 2, 3]))).dtype == np.int64
    assert np.array_equal(neutral.loads(neutral.dumps([1, 2.5, None])), [1.0, 2.5, np.nan], equal_nan=True)
    assert neutral.loads(neutral.dumps(np.bool_(True))) is True


def test_what_cannot_cross_says_why():
    from sklearn.linear_model import LinearRegression

    assert neutral.check(LinearRegression()) == "a sklearn.linear_model._base.LinearRegression"
    assert neutral.check({1: "a"}) == "a dict whose keys are not all str"
    assert "datetime64" in neutral.check(pd.DataFrame({"t": pd.to_datetime(["2024-01-01"])}))
    assert neutral.check(np.zeros((2, 2, 2))).startswith("a 3-D numpy array")


# -- real runs -----------------------------------------------------------------------------------------
def _python_alone(scale: int = 2, label: str = "run"):
    """The computation of r_python_r_python.ipynb, done in Python alone."""
    table = pd.DataFrame({"n": [1, 2, 3, 4], "x": [0.5, 1.5, None, 4.0], "name": ["a", "b", None, "d"],
                          "ok": [True, False, True, True]})
    numbers = [1.0, 2.5, 4.0]
    settings_ = {"offset": 10, "tag": "py", "flags": [True, False]}
    table["n2"] = table["n"] * scale
    table["x_plus"] = table["x"] + 1
    table["upper"] = table["name"].map(lambda s: s.upper() if isinstance(s, str) else None)
    table["both"] = table["ok"] & (table["n"] > 1)
    doubled = np.array(numbers) * scale
    summary = {"total": sum(numbers), "count": len(numbers), "tag": f"{settings_['tag']}-{label}",
               "offset": settings_["offset"] + 1, "first_flag": settings_["flags"][0]}
    result = table.assign(n3=table["n2"] + summary["offset"])
    total = float(np.sum(doubled)) + summary["total"]
    return table, doubled, summary, result, total


@pytest.mark.slow
@needs_r
def test_python_r_python_gives_the_values_of_python_alone(run_flow):
    run = run_flow("r_python_r_python.ipynb", parameters={"scale": 3})
    table, doubled, summary, result, total = _python_alone(scale=3)
    r = run["in_r"].data
    pd.testing.assert_frame_equal(r.table, table)
    assert np.array_equal(r.doubled, doubled) and r.summary_r == summary
    assert np.array_equal(r.matrix_r, np.array([[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]]))
    pd.testing.assert_frame_equal(run["back"].data.result, result)
    assert math.isclose(run["back"].data.total, total)
    outputs = run["in_r"].task.record["outputs"]
    assert outputs["table"]["r_class"] == "data.frame" and outputs["table"]["neutral"]
    assert run["make"].task.record["outputs"]["table"]["neutral"]  # read by an R step: stored in both forms
    assert "neutral" not in run["in_r"].task.record["inputs"].get("scale", {})
    again = run_flow("r_python_r_python.ipynb", parameters={"scale": 3})
    assert {t.step: t.status for t in again.tasks} == {"make": "cached", "in_r": "cached", "back": "cached"}


@pytest.mark.slow
@needs_r
def test_a_model_object_cannot_cross_to_r(tmp_path, run_flow):
    """Made where the analysis cannot see it (in a function): the producing step fails at its end."""
    path = tagged_notebook(tmp_path, [
        (["step:train"], ("from sklearn.linear_model import LinearRegression\n"
                         "def fitted():\n    return LinearRegression().fit([[0], [1]], [0, 1])\n\nmodel = fitted()")),
        (["step:report", "kernel:ir"], "print(model)"),
    ])
    run = run_flow(path, expect="failed")
    error = run["train"].error
    assert error["type"] == "CannotCross"
    for words in ("'model' from step 'train' cannot cross to step 'report' (R)", "LinearRegression",
                  "what can cross between languages"):
        assert words in error["message"]


@needs_r
@pytest.mark.parametrize("made, kind", [
    ("model = LinearRegression().fit([[0], [1]], [0, 1])", "a sklearn.linear_model.LinearRegression object"),
    ("model = lm.LinearRegression(fit_intercept=False)", "a sklearn.linear_model.LinearRegression object"),
    ("model = StandardScaler().set_params(copy=True).fit([[0], [1]])", "a sklearn.preprocessing.StandardScaler object"),
])
def test_a_model_object_made_in_sight_is_refused_before_the_run(tmp_path, store, made, kind):
    imports = ("from sklearn.linear_model import LinearRegression\nimport sklearn.linear_model as lm\n"
               "from sklearn.preprocessing import StandardScaler")
    path = tagged_notebook(tmp_path, [(["imports"], imports), (["step:train"], made + "\nX = [1.0, 2.0]"),
                                      (["step:report", "kernel:ir"], "print(model)")])
    proc = cli("run", path, check=2)
    line = one_line_error(proc)
    assert f"step 'report' (R) reads 'model', which step 'train' (python) binds to {kind}: it cannot cross" in line
    assert "what can cross between languages: None, bool, int" in line
    assert run_dirs(store) == []
    data = tagged_notebook(tmp_path, [(["imports"], imports), (["step:train"], made + "\nX = StandardScaler()"
                                                                                     ".fit_transform([[0], [1]])"),
                                      (["step:report", "kernel:ir"], "print(X)")])
    assert build_flow(data).steps["report"].inputs == {"X": "train"}  # what the model makes crosses


@needs_r
def test_a_function_cannot_cross_and_that_is_said_before_the_run(tmp_path, store):
    path = tagged_notebook(tmp_path, [(["step:make"], "def helper(x):\n    return x * 2"),
                                      (["step:use", "kernel:ir"], "y <- helper(2)")])
    proc = cli("run", path)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert "step 'use' (R) reads 'helper', which step 'make' (python) binds to a function" in line
    assert "what can cross between languages" in line


@pytest.mark.slow
@needs_r
def test_a_failing_r_step_keeps_its_variables(tmp_path, run_flow, store):
    path = _r_notebook(tmp_path, [
        (["parameters"], "limit <- 3"),
        (["step:first"], "values <- c(1.5, 2.5)\nlabel <- 'start'"),
        (["step:second"], ("total <- sum(values) * limit\nfit <- lm(dist ~ speed, data = cars)\n"
                          "stop('too big: ', total)")),
        (["step:third"], "done <- total + 1"),
    ])
    flow = build_flow(path)
    assert flow.steps["second"].prev == ["first"] and flow.steps["third"].prev == ["second"]
    run = run_flow(path, expect="failed")
    second = run["second"].task.record
    assert "too big: 12" in second["error"]["message"]
    assert set(second["failure"]["variables"]) >= {"values", "total", "limit"}
    assert second["failure"]["unpicklable"]["fit"] == "lm"  # a model stays in R: listed by name and class
    import jupyter_flow

    namespace = {}
    jupyter_flow.load(run.id, "second", store=store, into=namespace)
    assert namespace["total"] == 12.0 and np.array_equal(namespace["values"], [1.5, 2.5])
    from jupyter_flow.flow.languages import HERE

    code = (f"source({json.dumps(str(HERE / 'in_kernel.R'))}); names <- .jf$load({json.dumps(run.id)}, 'second'); "
            "cat(sort(names), total, values, sep = ' ')")
    proc = subprocess.run(["Rscript", "-e", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["limit", "total", "values", "12", "1.5", "2.5"]  # fit: not converted


@pytest.mark.slow
@needs_r
def test_an_r_notebook_with_steps_and_prev(tmp_path, run_flow):
    path = _r_notebook(tmp_path, [
        (["parameters"], "n <- 4L"),
        (["step:make"], "xs <- seq_len(n)\nhalf <- xs / 2"),
        (["step:other"], "unrelated <- 'z'"),
        (["step:sum", "prev:make", "prev:other"], "total <- sum(half)\nmsg <- paste(unrelated, total)"),
    ])
    flow = build_flow(path)
    assert flow.steps["sum"].prev == ["make", "other"] and flow.steps["sum"].inputs == {"half": "make",
                                                                                         "unrelated": "other"}
    run = run_flow(path, parameters={"n": 6})
    assert run["sum"].data.total == 10.5 and run["sum"].data.msg == "z 10.5"


def _r_notebook(folder, cells):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(source, metadata={"tags": tags}) for tags, source in cells],
                      metadata={"kernelspec": {"name": "ir", "display_name": "R", "language": "R"},
                                "language_info": {"name": "R"}})
    path = folder / "flow_r.ipynb"
    nbformat.write(nb, path)
    return path


def test_a_bash_notebook_still_runs_as_one_step():
    flow = build_flow(SCENARIOS / "bash_no_steps.ipynb")
    assert list(flow.steps) == ["main"] and flow.steps["main"].options == {"cache": False}


def test_the_r_side_is_shipped_and_parses():
    from jupyter_flow.flow.languages import HERE

    if shutil.which("Rscript") is None:
        pytest.skip("R is not installed")
    code = (f"source({json.dumps(str(HERE / 'in_kernel.R'))}); "
            "cat(jsonlite::toJSON(.jf$encode(data.frame(a = 1:2, b = c('x', NA))), auto_unbox = TRUE))")
    proc = subprocess.run(["Rscript", "-e", code],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    back = neutral.decode(json.loads(proc.stdout))
    pd.testing.assert_frame_equal(back, pd.DataFrame({"a": [1, 2], "b": ["x", None]}))


def test_an_r_notebook_where_irkernel_is_not_installed_names_the_kernel(tmp_path, store, kernelspecs):
    """Only python3 for this run, whether or not this machine has IRkernel: the notebook's own kernel
    (`ir`, its metadata) and an R step's (`kernel:ir`) are named as missing before anything runs."""
    specs = kernelspecs("python3")
    notebook = _r_notebook(tmp_path, [(["step:make"], "x <- 1")])
    proc = cli("run", notebook, hide=specs.hidden, check=2)
    assert one_line_error(proc).startswith("error: the notebook's kernel 'ir' (its metadata, language R) is not "
                                           "installed; installed kernels: python, python3.")
    mixed = tagged_notebook(tmp_path, [(["step:a"], "x = 1"), (["step:b", "kernel:ir"], "y <- x")])
    proc = cli("run", mixed, hide=specs.hidden, check=2)
    assert one_line_error(proc).startswith("error: no kernel named 'ir' (kernel:ir on step 'b'); installed "
                                           "kernels: python, python3.")
    assert run_dirs(store) == []


def test_a_machine_without_the_kernel_says_which_and_how_to_install_it():
    from jupyter_client.kernelspec import NoSuchKernel

    from jupyter_flow.flow import languages

    spec = {"kernel": "ir", "step": "model", "stepbook": {"metadata": {"kernelspec": {"language": "R"}}}}
    message = languages.explain(NoSuchKernel("ir"), spec)
    assert message.startswith("no kernel named 'ir' on ") and "step 'model'" in message
    assert "r-cran-irkernel" in message and "IRkernel::installspec()" in message


@pytest.mark.slow
@needs_r
def test_an_r_step_is_retried(tmp_path, run_flow):
    marker = tmp_path / "attempted"
    path = tagged_notebook(tmp_path, [
        (["step:make"], "values = [1, 2, 3]"),
        (["step:flaky", "kernel:ir", "retry:1"],
         (f"if (!file.exists({json.dumps(str(marker))})) {{\n  file.create({json.dumps(str(marker))})\n"
         "  stop('first attempt fails')\n}\ntotal <- sum(values)")),
        (["step:after"], "doubled = total * 2"),
    ])
    flow = build_flow(path)
    assert flow.to_json()["steps"][1]["language"] == "R" and flow.steps["after"].inputs == {"total": "flaky"}
    run = run_flow(path)
    flaky = run["flaky"].task.record
    assert flaky["attempt"] == 2 and run["after"].data.doubled == 12


@pytest.mark.slow
@needs_r
def test_a_dask_worker_without_the_r_kernel_says_so(tmp_path):
    """The runner has the R kernel, the worker does not (its kernelspec folder hidden, as on another machine)."""
    from support.services import can_hide_folders, dask_cluster

    import jupyter_flow

    ir = installed_kernels()["ir"]
    if not can_hide_folders():
        pytest.skip("cannot hide a folder from the workers here (no unprivileged user namespaces)")
    with dask_cluster(tmp_path / "cluster", workers=1, nthreads=2, hide=(ir,)) as address:
        run = jupyter_flow.run(SCENARIOS / "r_python_r_python.ipynb", store=tmp_path / "store", executor="dask",
                               scheduler=address)
    assert run.status == "failed" and run["make"].status == "succeeded"
    message = run["in_r"].error["message"]
    assert message.startswith("no kernel named 'ir' on ") and "(the machine running step 'in_r')" in message
    assert "r-cran-irkernel" in message


@pytest.mark.slow
@needs_r
def test_an_r_steps_files_and_packages_are_recorded_and_its_cache_follows_them(tmp_path, run_flow, store):
    """As for a Python step: the files it read (fingerprinted) and wrote (stored), the packages it had
    loaded with their versions; an unchanged rerun is cached, a changed file it read reruns it."""
    (tmp_path / "input.csv").write_text("a,b\n1,2\n3,4\n")
    path = tagged_notebook(tmp_path, [
        (["step:make"], "scale = 2"),
        (["step:in_r", "kernel:ir"], ("library(tools)\nd <- read.csv('input.csv')\nd$c <- d$a * scale\n"
                                      "write.csv(d, 'scaled.csv', row.names = FALSE)\nn <- nrow(d)")),
        (["step:back"], "import pandas as pd\nback = pd.read_csv('scaled.csv')['c'].tolist()"),
    ])
    flow = build_flow(path)
    assert flow.steps["back"].file_edges == {"in_r": ["scaled.csv"]}  # predicted from the R code
    run = run_flow(path)
    record = run["in_r"].task.record
    assert set(record["files"]["read"]) == {"input.csv"} and set(record["files"]["written"]) == {"scaled.csv"}
    assert record["files"]["read"]["input.csv"]["size"] == 12
    stored = record["files"]["written"]["scaled.csv"]["hash"]
    assert open_store(store).blob_ok(stored)
    assert run["back"].data.back == [2, 6]
    assert record["packages"]["jsonlite"] and all(isinstance(v, str) for v in record["packages"].values())
    assert not list(Path(store).rglob("crossing"))  # the values crossed through the task folder: nothing left
    again = run_flow(path)
    assert {t.step: t.status for t in again.tasks} == {"make": "cached", "in_r": "cached", "back": "cached"}
    (tmp_path / "input.csv").write_text("a,b\n5,6\n")
    changed = run_flow(path)
    assert changed["in_r"].status == "succeeded" and "input.csv" in changed["in_r"].task.record["reason"]
    assert changed["back"].data.back == [10]
    # an R package updated since (as if the record had been made with jsonlite 0.0.1): the step runs again
    key = next(Path(store).glob(f"flows/*/runs/{changed.id}/in_r/0/task.json"))
    older = json.loads(key.read_text())
    older["packages"]["jsonlite"] = "0.0.1"
    key.write_text(json.dumps(older))
    updated = run_flow(path)
    reason = updated["in_r"].task.record["reason"]
    assert updated["in_r"].status == "succeeded" and "R package jsonlite 0.0.1 -> " in reason, reason
