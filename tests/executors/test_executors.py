"""Executors by name: the built-in ones, and one a third-party package registers by entry point."""
import textwrap

import pytest
from conftest import SCENARIOS, cli

from jupyter_flow.errors import FlowError
from jupyter_flow.executors import make_executor, names, registered
from jupyter_flow.store import open_store
from jupyter_flow.store.records import list_runs, list_tasks

PLUGIN = '''
import os

from jupyter_flow.executors.local import LocalExecutor


class TracingExecutor(LocalExecutor):
    """Runs tasks on this machine and notes each task it is given in $JF_TRACE."""

    def __init__(self, *, max_workers=None, scheduler=None, **options):
        super().__init__(max_workers)
        self.trace = os.environ["JF_TRACE"]

    def submit(self, spec, control):
        with open(self.trace, "a") as f:
            f.write(spec["step"] + "\\n")
        return super().submit(spec, control)
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """An installed distribution (module + dist-info) that registers the executor `tracing`."""
    site = tmp_path / "site"
    (site / "jf_tracing-1.0.dist-info").mkdir(parents=True)
    (site / "jf_tracing.py").write_text(PLUGIN)
    (site / "jf_tracing-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: jf-tracing\nVersion: 1.0\n")
    (site / "jf_tracing-1.0.dist-info" / "entry_points.txt").write_text(textwrap.dedent("""\
        [jupyter_flow.executors]
        tracing = jf_tracing:TracingExecutor
        local = jf_tracing:TracingExecutor
        """))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", f"{site}:{__import__('os').environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("JF_TRACE", str(tmp_path / "trace.txt"))
    registered.cache_clear()
    yield tmp_path / "trace.txt"
    registered.cache_clear()


def test_a_registered_executor_is_listed_and_runs_a_real_run(plugin, store):
    listed = names()  # kfp too, from this project's own entry points
    assert listed[:2] == ["local", "dask"] and "tracing" in listed
    assert listed.count("local") == 1  # a package cannot replace a built-in name
    assert "tracing" in " ".join(cli("run", "--help", check=0).stdout.split())
    cli("run", SCENARIOS / "linear.ipynb", "--executor", "tracing", "--quiet", check=0)
    assert sorted(plugin.read_text().split()) == ["a", "b", "c", "d", "e"]
    [run] = list_runs(open_store(store))
    assert run.status == "succeeded" and run.executor == "tracing"
    assert {t.step: t.status for t in list_tasks(open_store(store), run)} == dict.fromkeys("abcde", "succeeded")


def test_an_unknown_executor_is_one_line_listing_the_names(plugin, store, tmp_path):
    proc = cli("run", SCENARIOS / "linear.ipynb", "--executor", "nope", check=2)
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: unknown executor 'nope'; choose one of: local, dask, ")
    assert "tracing" in line and line.endswith("(packages add more through the entry-point group "
                                              "'jupyter_flow.executors')")
    assert not (tmp_path / "store").exists()


def test_a_broken_plugin_is_a_one_line_error(plugin, tmp_path):
    (tmp_path / "site" / "jf_tracing.py").write_text("raise ImportError('no module named torch')\n")
    with pytest.raises(FlowError, match=r"executor 'tracing' \(jf_tracing:TracingExecutor\) cannot be loaded: "
                                        r"ImportError: no module named torch; reinstall"):
        make_executor("tracing")
