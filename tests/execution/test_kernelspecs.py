"""Kernels are forked for the kernelspecs users have, not only for the project's own: the default
native kernel, `python -m ipykernel install --user` and `--sys-prefix` (which write
`-Xfrozen_modules=off` into the command), and a kernelspec of another virtualenv. Each set-up runs a
two-step flow through `jupyter flow run`, and each step tells which process forked its kernel and how
that process was started. Kernelspecs are installed into this test's own folders (HOME,
JUPYTER_DATA_DIR, virtualenvs); the user's are never touched."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli, tagged_notebook
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jupyter_flow
from jupyter_flow.speed import forkserver

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]

WHO = ("import os, sys\n"
       "{step} = {value}\n"
       "{step}_parent = os.getppid()\n"
       "{step}_zygote = open(f'/proc/{{os.getppid()}}/cmdline').read().split(chr(0))[:-1]\n"
       "{step}_prefix = sys.prefix\n"
       "{step}_frozen = sys._xoptions.get('frozen_modules')\n")


def _venv(folder: Path) -> Path:
    """A virtualenv that sees this interpreter's packages (ipykernel, jupyter_flow: no downloads)."""
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(folder)], check=True)
    return folder


def _install(python, *how: str, env: dict) -> dict:
    """`python -m ipykernel install HOW`, as a user types it; the kernelspec it wrote."""
    out = subprocess.run([str(python), "-m", "ipykernel", "install", *how], env={**os.environ, **env},
                         capture_output=True, text=True, check=True)
    folder = out.stdout.strip().rsplit(" in ", 1)[-1]  # "Installed kernelspec NAME in FOLDER"
    return json.loads((Path(folder) / "kernel.json").read_text())


def _user_dirs(tmp_path) -> dict:
    return {"HOME": str(tmp_path / "home"), "JUPYTER_DATA_DIR": str(tmp_path / "home" / "jupyter")}


def _run(tmp_path, store: str, env: dict, kernel: str | None = None):
    """`jupyter flow run` of a two-step flow (a, then b = a + 1) in `kernel` (the notebook's python3 if
    None); the run and the runner's pid."""
    tags = [f"kernel:{kernel}"] if kernel else []
    path = tagged_notebook(tmp_path, [(["step:a", *tags], WHO.format(step="a", value="20")),
                                      (["step:b", *tags], WHO.format(step="b", value="a + 1"))])
    result = cli("run", path, "--quiet", env=env, check=0)
    run = jupyter_flow.Run(result.stdout.strip(), store)
    runner = json.loads(next(Path(store).glob(f"flows/*/runs/{run.id}/run.json")).read_text())["pid"]
    assert (run["a"].data.a, run["b"].data.b) == (20, 21)
    return run, runner


def _assert_forked(run, runner: int, argv: list[str]) -> None:
    """Both kernels were forked by one zygote (not launched by the runner), started with the
    kernelspec's interpreter and its options."""
    a, b = run["a"].data, run["b"].data
    assert a.a_parent == b.b_parent != runner
    zygote = a.a_zygote
    assert "forkserver.py" in zygote[-1], zygote
    options = argv[1:argv.index("-m")]
    assert os.path.realpath(zygote[0]) == os.path.realpath(argv[0]), zygote  # (a venv's python is a symlink)
    assert zygote[1:1 + len(options)] == options, zygote
    assert a.a_frozen == b.b_frozen == ("off" if "-Xfrozen_modules=off" in options else None)


def test_the_default_native_kernel_forks(tmp_path, store):
    run, runner = _run(tmp_path, store, _user_dirs(tmp_path))
    _assert_forked(run, runner, [sys.executable, "-m", "ipykernel_launcher"])
    assert run["a"].data.a_prefix == sys.prefix


def test_a_kernelspec_of_ipykernel_install_user_forks(tmp_path, store):
    env = _user_dirs(tmp_path)
    spec = _install(sys.executable, "--user", "--name", "python3", env=env)  # the notebook's kernel, shadowed
    assert "-Xfrozen_modules=off" in spec["argv"]  # what ipykernel writes (the case of issue 20)
    run, runner = _run(tmp_path, store, env)
    _assert_forked(run, runner, spec["argv"])


def test_a_kernelspec_of_ipykernel_install_sys_prefix_in_a_virtualenv_forks(tmp_path, store):
    # a new user's set-up: a virtualenv with jupyter_flow, the kernel registered in it, run from it
    venv = _venv(tmp_path / "venv")
    python = venv / "bin" / "python"
    for script, code in (("jupyter", "from jupyter_core.command import main as entry"),
                         ("jupyter-flow", "from jupyter_flow.cli.main import entry")):  # as pip would install them
        (venv / "bin" / script).write_text(f"#!{python}\nimport sys\n{code}\nsys.exit(entry())\n")
        (venv / "bin" / script).chmod(0o755)
    env = {**_user_dirs(tmp_path), "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    spec = _install(python, "--sys-prefix", "--name", "python3", env=env)
    assert spec["argv"][0] == str(python) and "-Xfrozen_modules=off" in spec["argv"]
    run, runner = _run(tmp_path, store, env)
    _assert_forked(run, runner, spec["argv"])
    assert run["a"].data.a_prefix == str(venv)  # the virtualenv's kernels, not the base interpreter's


def test_a_kernelspec_of_another_virtualenv_forks_from_a_zygote_of_that_interpreter(tmp_path, store):
    venv = _venv(tmp_path / "other")
    env = _user_dirs(tmp_path)
    spec = _install(venv / "bin" / "python", "--user", "--name", "other", env=env)
    run, runner = _run(tmp_path, store, env, kernel="other")
    _assert_forked(run, runner, spec["argv"])
    assert run["a"].data.a_prefix == run["b"].data.b_prefix == str(venv)  # not this runner's environment


LETTERS = "bBEOqsSu"
X_OPTIONS = ["frozen_modules=off", "utf8", "dev", "warn_default_encoding", "int_max_str_digits=5000"]
PROBE = "import sys; print(sys.flags, sorted(sys._xoptions.items()), sys.warnoptions, sys.path[1:])"


@st.composite
def interpreter_options(draw) -> list[str]:
    """Interpreter options as a kernelspec may spell them: letters alone or run together, -X and -W
    with their value attached or as the next argument, after letters or not."""
    spelled = []
    for kind in draw(st.lists(st.sampled_from(["letters", "X", "W"]), max_size=5)):
        if kind == "letters":
            spelled.append("-" + "".join(draw(st.lists(st.sampled_from(LETTERS), min_size=1, max_size=3))))
        else:
            value = draw(st.sampled_from(X_OPTIONS if kind == "X" else ["ignore", "error::DeprecationWarning"]))
            letters = draw(st.sampled_from(["", "s", "uB"]))  # -sXutf8 is -s -Xutf8
            spelled += [f"-{letters}{kind}{value}"] if draw(st.booleans()) else [f"-{letters}{kind}", value]
    return spelled


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(interpreter_options())
def test_a_zygote_starts_its_interpreter_as_the_kernelspec_would(options):
    # whatever the spelling, the zygote's interpreter has the flags, -X options, warning filters and
    # module path the kernel's own command would give it
    plan = forkserver.fork_plan([sys.executable, *options, "-m", "ipykernel_launcher", "-f", "{connection_file}"])
    zygote, args = plan
    assert args == ["-f", "{connection_file}"]

    def probe(argv):
        return subprocess.run([*argv, "-c", PROBE], capture_output=True, text=True, check=True).stdout

    assert probe([zygote.python, *zygote.options]) == probe([sys.executable, *options])
