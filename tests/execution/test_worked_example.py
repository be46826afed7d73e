"""README "When a step fails", the worked example, as a user runs it: Alice's run of clean.ipynb
fails; Bob (another process, the same store) sees the failing frames, loads the failure into
IPython, walks it with %debug, fixes cell 4 and resumes Alice's run from the failing cell."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli

pytestmark = pytest.mark.slow

CELLS = [
    (["imports"], "import json\nimport threading"),
    (["step:load"], "rows = ['a,1', 'b,2', 'c,oops']"),
    (["step:parse"], "def parse(row):\n    guard = threading.Lock()\n    name, field = row.split(',')\n"
                     "    return name, json.loads(field)"),
    ([], "seen = []\nfor row in rows:\n    seen.append(parse(row))"),
]
FIX = "seen = []\nfor row in rows:\n    try:\n        seen.append(parse(row))\n    except ValueError:\n        pass"


def write(path: Path, cells) -> None:
    path.write_text(json.dumps({
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {"tags": tags}, "source": source, "outputs": [],
                   "execution_count": None} for i, (tags, source) in enumerate(cells)]}))


def test_from_a_colleagues_failed_run_to_a_continued_run(tmp_path, store):
    notebook = tmp_path / "clean.ipynb"
    write(notebook, CELLS)
    alice = cli("run", notebook, check=1)
    assert "step parse failed: JSONDecodeError: Expecting value: line 1 column 1 (char 0), in cell 4 ('seen = []')" \
        in alice.stderr
    run_id = alice.stdout.strip()
    shown = cli("show", run_id, "--step", "parse", check=0).stdout
    frames = shown[shown.index("step parse[0] failed"):]
    assert re.search(r"step parse\[0\] failed: JSONDecodeError: Expecting value: line 1 column 1 \(char 0\)\n"
                     r"  cell 4, line 3, in <module>\n"
                     r"  cell 3, line 4, in parse\n"
                     r"      row = 'c,oops'\n      name = 'c'\n      field = 'oops'\n"
                     r"      guard = _thread.lock \(not stored: cannot be pickled\)\n"
                     r"  .*/json/__init__.py, line \d+, in loads \(library\)\n      s = 'oops'\n", frames), frames
    session = f"%load_ext jupyter_flow\n%flow_load {run_id} parse\n%debug\nup\np field, row\nquit\nexit\n"
    bob = subprocess.run([sys.executable, "-m", "IPython", "--no-banner", "--colors=NoColor", "--quick"],
                         input=session, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert f"clean.ipynb, cell 3 of step parse, run {run_id}(4)parse()" in bob.stdout, bob.stdout + bob.stderr
    assert "ipdb> ('oops', 'c,oops')" in bob.stdout, bob.stdout
    write(notebook, CELLS[:3] + [([], FIX)])  # Bob's fix: skip rows that do not parse
    resumed = cli("resume", run_id, check=0)
    assert "load: reused" in resumed.stderr
    assert (f"parse: continues from cell 4: cell 3 not run again (values from run {run_id}'s failure snapshot)"
            in resumed.stderr), resumed.stderr
    assert "parse: succeeded" in resumed.stderr
