"""An unchanged rerun served from the cache: no kernel, no zygote, no papermill, nbclient, jupyter_client or
ipykernel imported."""
from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys
import time
from unittest import mock

import pytest
from conftest import cli, tagged_notebook
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from jupyter_flow.ui.progress import Progress

# Runs `jupyter flow run` in this process, then says what it imported and which zygotes it started (off a
# terminal, its lines are plain text: rich is not imported either).
PROBE = """
import sys
from jupyter_flow.cli import main as cli; from jupyter_flow.speed import forkserver
code = cli.run_main(sys.argv[1:])
watched = ("papermill", "nbclient", "jupyter_client", "ipykernel", "rich")
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


# Says, for each zygote started (an audit event, Python's own hook), whether the runtime was imported by then.
FIRST = """
import sys
from jupyter_flow.cli import main as cli
started = []
sys.addaudithook(lambda event, args: started.append("jupyter_flow.runtime" in sys.modules)
                 if event == "subprocess.Popen" and "forkserver.py" in str(args[1]) else None)
code = cli.run_main(sys.argv[1:])
print("EXIT", code, "ZYGOTES STARTED", started)
"""


@pytest.mark.slow
def test_a_run_with_nothing_in_the_cache_starts_its_zygote_first_and_a_later_hit_none(tmp_path, store):
    nb = tagged_notebook(tmp_path, [(["step:a"], "x = 1"), (["step:b"], "y = x + 1")])
    first = subprocess.run([sys.executable, "-c", FIRST, "run", str(nb)], capture_output=True, text=True,
                           timeout=300, check=False)
    assert "EXIT 0 ZYGOTES STARTED [False]" in first.stdout, first.stdout + first.stderr  # before the runtime
    (tmp_path / "flow.ipynb").write_text((tmp_path / "flow.ipynb").read_text().replace("x = 1", "x = 2"))
    changed = subprocess.run([sys.executable, "-c", FIRST, "run", str(nb)], capture_output=True, text=True,
                             timeout=300, check=False)  # the store has a cache now: the zygote comes when needed
    assert "EXIT 0 ZYGOTES STARTED [True]" in changed.stdout, changed.stdout + changed.stderr
    hit = subprocess.run([sys.executable, "-c", FIRST, "run", str(nb)], capture_output=True, text=True,
                         timeout=300, check=False)
    assert "EXIT 0 ZYGOTES STARTED []" in hit.stdout, hit.stdout + hit.stderr


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


def on_a_terminal(*args, env: dict | None = None) -> tuple[int, str]:
    """`jupyter flow ARGS` with its standard streams on a terminal (a pty), as a user types it: (exit code,
    everything it drew, escape sequences included)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(["jupyter", "flow", *map(str, args)], stdin=slave, stdout=slave, stderr=slave,
                            env={**os.environ, **(env or {})})
    os.close(slave)
    drawn = b""
    try:
        while chunk := os.read(master, 65536):
            drawn += chunk
    except OSError:  # EIO: the command closed the terminal
        pass
    os.close(master)
    return proc.wait(timeout=300), drawn.decode(errors="replace")


def final_table(drawn: str) -> dict[str, str]:
    """{step: status} from the last rows of the step table on the screen."""
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn)
    return {m[1]: m[2] for m in re.finditer(r"^(\w+) +(\w+) +\d+/\d+ +[\d.]+s *$", plain.replace("\r", ""), re.M)}


ERASE_LINE = "\x1b[2K"  # what redrawing the table in place writes


@pytest.mark.slow
def test_on_a_terminal_a_cache_hit_prints_its_table_once_and_a_longer_run_is_redrawn_live(tmp_path, store):
    nb = tagged_notebook(tmp_path, [(["step:a"], "import time; time.sleep(1); x = 1"), (["step:b"], "y = x + 1")])
    code, drawn = on_a_terminal("run", nb)  # runs for over a second: the table is redrawn while it does
    assert code == 0 and final_table(drawn) == {"a": "succeeded", "b": "succeeded"}, drawn
    assert ERASE_LINE in drawn and "running" in drawn, drawn
    code, drawn = on_a_terminal("run", nb)  # served from the cache: the same table, whether drawn live or not
    assert code == 0 and final_table(drawn) == {"a": "cached", "b": "cached"}, drawn
    code, drawn = on_a_terminal("run", nb, env={"PYTHONPROFILEIMPORTTIME": "1"})  # each import, on the screen
    assert code == 0 and final_table(drawn.replace(chr(13), "").split("| jupyter_flow.ui.progress")[-1]) == {
        "a": "cached", "b": "cached"} and "| rich" not in drawn, drawn  # drawn over before rich was needed


def terminal_view(live_after: float) -> tuple[Progress, io.StringIO]:
    """A run's view as on a terminal (80 columns), drawing into the returned buffer."""
    view = Progress(live_after=live_after)
    screen = io.StringIO()
    view.console, view.terminal = Console(file=screen, force_terminal=True, width=80), True
    view.steps = {"a": {"status": "queued", "tasks": {}, "total": 1, "started": None, "ended": None}}
    return view, screen


def test_on_a_terminal_a_run_over_before_live_after_gets_its_table_once_a_longer_one_a_live_view():
    view, screen = terminal_view(live_after=3600)  # a run served from the cache: over long before
    with view:
        view.event({"type": "task", "step": "a", "index": 0, "status": "cached", "duration": 0.0})
    assert view.live is None and ERASE_LINE not in screen.getvalue()
    assert final_table(screen.getvalue()) == {"a": "cached"}
    view, screen = terminal_view(live_after=0)  # a run that goes on: its table is redrawn in place
    with view:
        view.event({"type": "task", "step": "a", "index": 0, "status": "running"})
        while "running" not in screen.getvalue():  # drawn live (by the timer's and then rich's refresh thread)
            time.sleep(0.01)
        view.event({"type": "task", "step": "a", "index": 0, "status": "succeeded", "duration": 0.5})
    assert view.live is not None and final_table(screen.getvalue()) == {"a": "succeeded"}


SGR = re.compile(r"\x1b\[([0-9;]*)m([^\x1b]*)\x1b\[0m")


def looks(drawn: str) -> tuple[list[str], list[tuple[str, str]]]:
    """What a reader sees of `drawn`: its lines without escapes or trailing blanks, and each styled word with
    its style's codes."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", drawn)
    return [line.rstrip() for line in plain.splitlines()], [(m[1], m[2].strip()) for m in SGR.finditer(drawn)
                                                             if m[2].strip()]


STATUSES = ("queued", "running", "retrying", "succeeded", "cached", "reused", "skipped", "failed", "timed_out",
            "cancelled", "crashed", "damaged")


@given(st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9_]{0,24}", fullmatch=True), st.sampled_from(STATUSES),
                          st.integers(0, 1200), st.none() | st.integers(1, 1200),
                          st.none() | st.floats(0, 5000)), min_size=1, max_size=12, unique_by=lambda r: r[0]))
@settings(max_examples=100, deadline=None)  # 3 s of the quick lane
def test_a_run_over_before_its_live_view_draws_the_table_rich_would(rows):
    """The table a cache hit prints on a terminal without rich reads as rich's (the live view's last frame):
    the same lines, the same words in the same styles."""
    view, screen = terminal_view(live_after=3600)
    view.steps = {name: {"status": status, "tasks": dict.fromkeys(range(done), "succeeded"), "total": total,
                         "started": None if took is None else 1.0, "ended": None if took is None else 1.0 + took}
                  for name, status, done, total, took in rows}  # ended: the time column never changes meanwhile
    for env in ({}, {"NO_COLOR": "1"}, {"TERM": "dumb"}):  # colours, bold and dim only, nothing
        with mock.patch.dict(os.environ, env):
            view._draw_once()
            by_rich = io.StringIO()
            Console(file=by_rich, force_terminal=True, width=80).print(view._table())
        assert looks(screen.getvalue()) == looks(by_rich.getvalue()), env
        screen.seek(0)
        screen.truncate()
