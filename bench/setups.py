"""The four kernelspec set-ups of issue 20, made inside a bench's temp dir, and a check that their
kernels came from a zygote.

  native      ipykernel's own `python3` kernelspec: `python -m ipykernel_launcher ...`
  user        `python -m ipykernel install --user --name python3` (its command adds
              `-Xfrozen_modules=off`), into a user data dir in the temp dir (JUPYTER_DATA_DIR)
  sys-prefix  a fresh virtualenv (`python -m venv --system-site-packages`, so it sees this
              interpreter's packages), `python -m ipykernel install --sys-prefix --name python3` in it,
              and every command (ours and the peer's) run from it, as a new user would
  venv        a second virtualenv's interpreter as the `python3` kernelspec (installed with
              `--prefix` into the temp dir, first on JUPYTER_PATH), the runner staying in this one

Nothing outside the temp dir is written: the user's kernelspecs are never touched.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SETUPS = ("native", "user", "sys-prefix", "venv")


def use(bench, which: str) -> str:
    """Make `python3` the `which` kernelspec for the bench's commands; its command line, for the report."""
    root, env = bench.root, bench.env
    env["JUPYTER_DATA_DIR"] = str(root / "jupyter_data")  # `--user` writes here; nothing else is in it
    if which == "native":
        return f"{sys.executable} -m ipykernel_launcher (ipykernel's own)"
    if which == "user":
        argv = _install(sys.executable, env, "--user")
    elif which == "sys-prefix":
        venv = _venv(root / "venv")
        bench.python = str(venv / "bin" / "python")
        env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}", VIRTUAL_ENV=str(venv))
        argv = _install(bench.python, env, "--sys-prefix")
    elif which == "venv":
        venv = _venv(root / "other_venv")
        prefix = root / "kernelspec"
        argv = _install(venv / "bin" / "python", env, "--prefix", str(prefix))
        first = str(prefix / "share" / "jupyter")
        env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [first, env.get("JUPYTER_PATH")]))
    else:
        raise ValueError(f"unknown set-up {which!r}: one of {', '.join(SETUPS)}")
    return " ".join(argv[:argv.index("-m") + 2]).replace(str(root), "$TMP")


def _venv(folder: Path) -> Path:
    """A virtualenv that sees this interpreter's packages, with the `jupyter` and `jupyter-flow`
    scripts pip would install in it (a --system-site-packages venv has no scripts of its own)."""
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    for script, code in (("jupyter", "from jupyter_core.command import main as entry"),
                         ("jupyter-flow", "from jupyter_flow.cli.main import entry")):
        (folder / "bin" / script).write_text(f"#!{python}\nimport sys\n{code}\nsys.exit(entry())\n")
        (folder / "bin" / script).chmod(0o755)
    return folder


def _install(python, env: dict, *where: str) -> list[str]:
    """`python -m ipykernel install WHERE --name python3`, as a user types it; the command it wrote."""
    out = subprocess.run([str(python), "-m", "ipykernel", "install", *where, "--name", "python3"], env=env,
                         capture_output=True, text=True, check=True)
    folder = out.stdout.strip().rsplit(" in ", 1)[-1]  # "Installed kernelspec python3 in FOLDER"
    return json.loads((Path(folder) / "kernel.json").read_text())["argv"]


PROBE = ("import os\n"
         "{step}_parent = os.getppid()\n"
         "{step}_zygote = open(f'/proc/{{os.getppid()}}/cmdline').read().split(chr(0))[:-1]\n")


def forked(bench) -> str:
    """Run a two-step flow with the bench's commands and say whether both kernels were forked by one
    zygote, not started by the runner: 'yes (zygote: COMMAND)' or 'NO: why'."""
    import nbformat

    import jupyter_flow
    from jupyter_flow.readers import client
    from jupyter_flow.store import open_store

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(PROBE.format(step=s), metadata={"tags": [f"step:{s}"]}) for s in ("a", "b")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = bench.root / "probe.ipynb"
    nbformat.write(nb, path)
    store = bench.root / "probe_store"
    bench.env["JUPYTER_FLOW_AGENT"] = "0"
    bench.run(bench.jupyter_flow("run", str(path), "--store", str(store), "--no-cache", "--quiet"))
    run_id = client.list_runs(open_store(str(store)), limit=1)[0]["id"]
    runner = json.loads(next(store.glob(f"flows/*/runs/{run_id}/run.json")).read_text())["pid"]
    run = jupyter_flow.Run(run_id, str(store))
    a, b = run["a"].data, run["b"].data
    zygote = a.a_zygote
    if a.a_parent != b.b_parent or a.a_parent == runner or not zygote or "forkserver.py" not in zygote[-1]:
        return f"NO: parents {a.a_parent}, {b.b_parent} (runner {runner}), {' '.join(zygote)}"
    return f"yes: `{' '.join(zygote[:-1])} .../forkserver.py`".replace(str(bench.root), "$TMP")
