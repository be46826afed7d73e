"""The runner's import trims (jupyter_flow.speed.import_trims) change what is imported when, never what works:
each check runs in a fresh interpreter, as a CLI process starts."""
import subprocess
import sys

import pytest


def _fresh(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_papermill_imports_without_boto3_and_its_s3_handler_still_works():
    pytest.importorskip("boto3")
    out = _fresh(
        "import sys\n"
        "from jupyter_flow.speed.import_trims import fast_notebook_imports\n"
        "fast_notebook_imports()\n"
        "import papermill, papermill.iorw\n"
        "print('boto3' in sys.modules)\n"
        "s3 = papermill.iorw.S3()\n"  # what papermill's s3:// handler calls
        "print(type(s3).__module__, type(s3).__name__, 'boto3' in sys.modules, sys.modules['papermill.s3'].S3 is type(s3))\n")
    assert out.splitlines() == ["False", "papermill.s3 S3 True True"]


def test_format_checker_packages_are_hidden_from_jsonschema_only():
    """jsonschema imports without them (so without their import costs), nbformat validates as before,
    and each one that is installed can be imported afterwards."""
    out = _fresh(
        "import importlib, importlib.util, sys\n"
        "from jupyter_flow.speed.import_trims import FORMAT_CHECKER_PACKAGES, fast_notebook_imports\n"
        "fast_notebook_imports()\n"
        "import nbformat\n"
        "print(sorted(set(FORMAT_CHECKER_PACKAGES) & set(sys.modules)))\n"
        "nbformat.validate(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('x = 1')]))\n"
        "for name in FORMAT_CHECKER_PACKAGES:\n"
        "    if importlib.util.find_spec(name):\n"
        "        importlib.import_module(name)\n"
        "print('importable')\n")
    assert out.splitlines() == ["[]", "importable"]


def test_a_process_that_has_papermill_already_is_left_alone():
    out = _fresh(
        "import papermill, sys\n"
        "real = sys.modules.get('papermill.s3')\n"
        "from jupyter_flow.speed.import_trims import fast_notebook_imports\n"
        "fast_notebook_imports()\n"
        "print(sys.modules.get('papermill.s3') is real)\n")
    assert out == "True"
