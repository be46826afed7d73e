"""An unchanged rerun served from the cache: no kernel, no zygote, no papermill, nbclient, jupyter_client or
ipykernel imported."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import cli, tagged_notebook

# Runs `jupyter flow run` in this process, then says what it imported and which zygotes it started.
PROBE = """
import sys
from jupyter_flow.cli import main as cli; from jupyter_flow.speed import forkserver
code = cli.run_main(sys.argv[1:])
watched = ("papermill", "nbclient", "jupyter_client", "ipykernel")
print("EXIT", code, "IMPORTED", [m for m in watched if m in sys.modules], "ZYGOTES", len(forkserver._servers))
"""


@pytest.mark.slow
def test_cache_hit_starts_no_zygote_and_imports_no_papermill(tmp_path, store):
    nb = tagged_notebook(tmp_path, [(["step:a"], "x = 1"), (["step:b"], "y = x + 1")])
    cli("run", nb, check=0)
    probe = subprocess.run([sys.executable, "-c", PROBE, "run", str(nb)], capture_output=True, text=True,
                           timeout=120, check=False)
    assert probe.stderr.count("cached") == 2, probe.stdout + probe.stderr  # both steps
    assert "EXIT 0 IMPORTED [] ZYGOTES 0" in probe.stdout, probe.stdout + probe.stderr


# `jupyter-flow run` as the console script starts it (cli.main.entry), saying at exit whether the garbage
# collector was on again: start-up runs without it, the run itself must not (a long run would keep its garbage).
ENTRY = """
import atexit, gc, sys
from jupyter_flow.cli import main as cli
atexit.register(lambda: print("COLLECTING", gc.isenabled()))
sys.argv = ["jupyter-flow", *sys.argv[1:]]
cli.entry()
"""


@pytest.mark.slow
def test_a_run_collects_garbage_again_once_it_started(tmp_path, store):
    nb = tagged_notebook(tmp_path, [(["step:a"], "x = 1")])
    for _ in range(2):  # a run, then a cache hit
        probe = subprocess.run([sys.executable, "-c", ENTRY, "run", str(nb)], capture_output=True, text=True,
                               timeout=300, check=False)
        assert probe.returncode == 0 and "COLLECTING True" in probe.stdout, probe.stdout + probe.stderr
