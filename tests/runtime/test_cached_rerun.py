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
