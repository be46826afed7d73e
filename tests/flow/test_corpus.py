"""Public notebooks nobody here wrote (tests/corpus/, sources in its README): every one parses, and
the runnable ones run through jupyter_flow and give the values papermill gives top to bottom.

`docs/corpus.md` is the table of results; keep it in step with RUNS below.
"""
import ast
import json
import shutil

import papermill
import pytest
from conftest import ROOT, cli, one_line_error

pytestmark = pytest.mark.slow

CORPUS = ROOT / "tests" / "corpus"
NOTEBOOKS = sorted(p.relative_to(CORPUS).as_posix() for p in CORPUS.glob("**/*.ipynb"))
# Refused before anything runs, with one line naming the cell (papermill fails on them at run time).
REFUSED = {
    "papermill/broken1.ipynb": "SyntaxError",  # Python 2 print statement in cell 3
    "papermill/complex_parameters.ipynb": "SyntaxError",  # `= 2` in the parameters cell
}
RANDOM = "unseeded random numbers: two top-to-bottom runs differ too, so only deterministic values are compared"
# notebook -> names or expressions compared with top to bottom ("failed": both fail).
RUNS = {
    "kale/titanic-ml-dataset/titanic_dataset_ml.ipynb": [
        "PREDICTION_LABEL", "list(train_df.columns)", "train_df.shape", "list(test_df.columns)", "test_df.shape",
        "list(train_labels)", "sorted(results.Model)"],  # RANDOM
    "kale/candies_sharing.ipynb": ["CANDIES", "0 < kid1 + kid2 + kid3 <= CANDIES"],  # RANDOM
    "kale/pipeline_parameters_and_metrics.ipynb": ["d1", "d2", "rnd_matrix.shape", "type(sum_result).__name__"],
    "kale/serving-sklearn-iris.ipynb": ["x", "y", "x_trn.shape", "sorted(set(preds))"],  # RANDOM
    "kale/taxi-cab-classification/read_data.ipynb": ["columns", "data"],
    "papermill/simple_execute.ipynb": ["msg"],
    "papermill/no_parameters.ipynb": ["msg"],
    "papermill/nb_version_4.4.ipynb": ["var"],
    "papermill/report_mode_test.ipynb": ["a", "b", "sum(2, 3)"],
    "papermill/result_no_exec.ipynb": ["foo", "bar"],
    "papermill/test_notebooknode_io.ipynb": [],
    "papermill/test_autosave.ipynb": ["i"],
    "papermill/blank-vscode.ipynb": "runs",  # no kernelspec: we use python3; papermill refuses it
    "papermill/sysexit.ipynb": "exits",  # SystemExit(0): papermill stops there, without error
    "papermill/sysexit0.ipynb": "exits",  # SystemExit(0): papermill stops there, without error
    "papermill/sysexit1.ipynb": "failed",
    "papermill/systemexit.ipynb": "exits",  # SystemExit(0): papermill stops there, without error
    "papermill/line_magic_error.ipynb": "failed",
    "elyra/python_notebook.ipynb": [],
    "elyra/metrics.ipynb": ["df", "metadata", "metrics"],
    "ploomber/eda.ipynb": ["df"],
    "ploomber/report-generation-notebook.ipynb": ["upstream", "product", "df.shape"],  # RANDOM
    "ploomber/testing-one.ipynb": ["x"],
    "ploomber/testing-another.ipynb": ["x"],
    "ploomber/testing-final.ipynb": ["x"],
}
NOT_RUN = {  # kept, parse, but not run here (docs/corpus.md says why)
    "papermill/keyboard_interrupt.ipynb", "papermill/notimplemented_translator.ipynb", "papermill/test_logging.ipynb",
} | {n for n in NOTEBOOKS if n.startswith("parse-only/")}


def test_the_tables_cover_the_corpus():
    assert set(NOTEBOOKS) == set(RUNS) | NOT_RUN | set(REFUSED)


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_notebook_parses(notebook, store):
    proc = cli("dag", CORPUS / notebook)
    if notebook in REFUSED:
        assert proc.returncode == 2 and REFUSED[notebook] in one_line_error(proc)
    else:
        assert proc.returncode == 0, proc.stderr


def test_a_notebook_whose_kernel_is_missing_says_so(store):
    proc = cli("run", CORPUS / "papermill" / "notimplemented_translator.ipynb", check=2)
    assert "the notebook's kernel 'r' (its metadata, language R) is not installed" in one_line_error(proc)


@pytest.mark.parametrize("notebook, compare", list(RUNS.items()))
def test_runnable_notebooks_give_the_values_of_top_to_bottom(notebook, compare, tmp_path, run_flow, top_to_bottom):
    folder = tmp_path / "nb"
    shutil.copytree((CORPUS / notebook).parent, folder)  # its data beside it; what it writes stays here
    path = folder / (CORPUS / notebook).name
    if compare == "failed":
        run = run_flow(path, expect="failed")
        assert run.error["message"]  # says what happened
        with pytest.raises(papermill.PapermillExecutionError):
            papermill.execute_notebook(str(path), str(tmp_path / "out.ipynb"), progress_bar=False, cwd=str(folder))
        return
    run = run_flow(path)
    if compare == "runs":
        return
    if compare == "exits":
        papermill.execute_notebook(str(path), str(tmp_path / "out.ipynb"), progress_bar=False, cwd=str(folder))
        return
    if notebook.startswith("kale/"):  # Kale's reference run leaves out the cells tagged skip
        raw = json.loads(path.read_text())
        raw["cells"] = [c for c in raw["cells"] if "skip" not in c.get("metadata", {}).get("tags", [])]
        path.write_text(json.dumps(raw))
    got, expected = _pipeline_values(run, compare), top_to_bottom(path, compare)
    assert got.keys() == expected.keys()
    for name in compare:
        assert _same(got[name], expected[name]), name


def _same(a, b) -> bool:
    if hasattr(a, "equals"):  # pandas
        return type(a) is type(b) and a.equals(b)
    if type(a).__module__ == "numpy":
        import numpy

        return numpy.array_equal(a, b)
    return a == b


def _pipeline_values(run, expressions: list[str]) -> dict:
    """Each expression evaluated over the final values (the last writer in step order wins, as top to bottom)."""
    final = dict(run.parameters)
    for task in run.tasks:
        final.update(task.artifacts)
    values = {}
    for expr in expressions:
        names = {n.id for n in ast.walk(ast.parse(expr)) if isinstance(n, ast.Name)}
        scope = {n: getattr(final[n], "value", final[n]) for n in names if n in final}
        try:
            values[expr] = eval(expr, scope)
        except Exception:  # noqa: BLE001 - left out, as top_to_bottom leaves it out
            pass
    return values
