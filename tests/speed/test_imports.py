"""The import trims (jupyter_flow.speed.import_trims) change what the CLI's process imports when, never
what works, and nothing outside the CLI: each check runs in a fresh interpreter, as a process starts."""
import importlib.util
import json
import subprocess
import sys
from importlib.metadata import version

import pytest

from jupyter_flow.speed import import_trims
from jupyter_flow.speed.import_trims import FORMAT_CHECKER_PACKAGES


def _fresh(code: str, *argv: str) -> list:
    """The JSON values `code` prints (one a line; other lines left out), run in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line[:1] in '[{"tf']


INSTALLED = [n for n in FORMAT_CHECKER_PACKAGES if importlib.util.find_spec(n)]
VALIDATE = ("import json, sys\n"
            "import nbformat\n"
            "nbformat.validate(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('x = 1')]))\n"
            "print(json.dumps(sorted(set(sys.argv[1:]) & set(sys.modules))))\n"
            "print(json.dumps([type(f).__name__ for f in sys.meta_path if type(f).__name__ == '_Trims']))\n"
            "print(json.dumps([m for m in sys.argv[1:] if sys.modules.get(m, 0) is None]))\n"
            "for name in sys.argv[1:]:\n"
            "    __import__(name)\n"
            "print(json.dumps('importable'))\n")


@pytest.mark.slow  # a fresh interpreter imports the notebook stack: seconds under load
def test_jsonschema_imports_without_the_format_checker_packages_and_they_stay_importable():
    if not INSTALLED:
        pytest.skip("no format-checker package is installed: nothing to trim")
    trimmed = _fresh("from jupyter_flow.speed import import_trims\nassert import_trims.install()\n" + VALIDATE,
                     *INSTALLED)
    # none imported, nothing written into sys.modules, each importable after (the finder waits for papermill)
    assert trimmed == [[], ["_Trims"], [], "importable"]


@pytest.mark.slow  # a fresh interpreter imports the notebook stack: seconds under load
def test_without_the_trims_a_process_imports_as_it_would_without_jupyter_flow():
    if "rfc3987_syntax" not in INSTALLED:
        pytest.skip("rfc3987_syntax (the costly one) is not installed")
    assert _fresh("import jupyter_flow.speed.import_trims\n" + VALIDATE, "rfc3987_syntax")[0] == ["rfc3987_syntax"]


@pytest.mark.slow  # a fresh interpreter imports the notebook stack: seconds under load
def test_papermill_imports_without_boto3_and_papermill_s3_stays_importable():
    pytest.importorskip("boto3")
    out = _fresh("import json, sys\n"
                 "from jupyter_flow.speed import import_trims\n"
                 "import_trims.install()\n"
                 "import papermill, papermill.iorw\n"
                 "print(json.dumps('boto3' in sys.modules))\n"
                 "import papermill.s3, nbformat\n"
                 "print(json.dumps(['boto3' in sys.modules, papermill.s3.S3.__module__]))\n"
                 "print(json.dumps([type(f).__name__ for f in sys.meta_path if type(f).__name__ == '_Trims']))\n")
    assert out == [False, [True, "papermill.s3"], []]  # both trimmed modules imported: the finder is gone


def test_only_the_importing_thread_misses_the_hidden_modules(tmp_path):
    # a trim of our own making: while `hider` runs, `hidden_mod` is not found in its thread; another thread
    # that imports it meanwhile finds it
    (tmp_path / "hidden_mod.py").write_text("")
    (tmp_path / "hider.py").write_text(
        "import threading\n"
        "got = {}\n"
        "def attempt(who):\n"
        "    try:\n"
        "        import hidden_mod  # noqa\n"
        "        got[who] = 'found'\n"
        "    except ImportError:\n"
        "        got[who] = 'missing'\n"
        "attempt('importing thread')\n"
        "other = threading.Thread(target=attempt, args=('another thread',))\n"
        "other.start()\n"
        "other.join()\n")
    out = _fresh("import json, sys\n"
                 f"sys.path.insert(0, {str(tmp_path)!r})\n"
                 "from jupyter_flow.speed import import_trims\n"
                 "import_trims.written_for = lambda *version: True\n"
                 "sys.meta_path.insert(0, import_trims._Trims({'hider': ('any', 1, ('hidden_mod',))}))\n"
                 "import hider\n"
                 "print(json.dumps(hider.got))\n")
    assert out == [{"importing thread": "missing", "another thread": "found"}]


def test_the_trims_are_installed_only_before_any_thread_starts():
    out = _fresh("import json, threading, time\n"
                 "threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n"
                 "from jupyter_flow.speed import import_trims\n"
                 "print(json.dumps(import_trims.install()))\n")
    assert out == [False]


@pytest.mark.slow  # a fresh interpreter imports the notebook stack: seconds under load
def test_the_cli_installs_them_first_thing_and_the_api_does_not():
    cli = _fresh("import atexit, json, sys\n"
                 "sys.argv = ['jupyter-flow', '--version']\n"
                 "from jupyter_flow.cli import main\n"
                 "atexit.register(lambda: print(json.dumps([type(f).__name__ for f in sys.meta_path])))\n"
                 "main.entry()\n")
    assert "_Trims" in cli[-1]
    api = _fresh("import json, sys\nimport jupyter_flow\nimport jupyter_flow.api\n"
                 "print(json.dumps([type(f).__name__ for f in sys.meta_path]))\n")
    assert "_Trims" not in api[0]


def test_a_version_the_trim_was_not_written_for_is_left_alone():
    assert import_trims.written_for("jsonschema", int(version("jsonschema").split(".")[0]))
    assert not import_trims.written_for("jsonschema", 99)
    assert not import_trims.written_for("no-such-distribution-here", 1)
