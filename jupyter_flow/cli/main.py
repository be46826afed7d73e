"""`jupyter flow ...`: run, inspect, resume and clean up notebook pipelines from the terminal.

Imports of jupyter_flow's layers are made inside the command that needs them (each block marked
`# lazy: start-up time`): this module imports only what hands a command to an agent (0.2 s), and
`jupyter flow runs` reads the store without importing the runtime, papermill or jupyter_client.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import logging
import os
import signal
import sys
import traceback
from pathlib import Path

from jupyter_flow._version import __version__
from jupyter_flow.cli import agent
from jupyter_flow.errors import FlowError
from jupyter_flow.speed import import_trims

EPILOG = """\
Tag notebook cells with step:NAME (and prev:NAME, foreach:ITEM=VAR, retry:N, timeout:S, ...).
Examples:
  jupyter flow dag notebooks/quickstart.ipynb            show the steps and what flows between them
  jupyter flow plan notebooks/quickstart.ipynb -p seed 2 which steps a run would reuse or run, and why
  jupyter flow run notebooks/quickstart.ipynb -p seed 1  run it; every step in its own kernel
  jupyter flow runs                                      your recent runs
  jupyter flow show RUN_ID                               one run: tasks, durations, artifacts
  jupyter flow resume RUN_ID                             rerun what failed, reuse what finished
  jupyter flow run in.ipynb out.ipynb -p a 1             papermill drop-in: also write one executed notebook
  jupyter flow batch nb.ipynb -f grid.yaml               one run per parameter set, several at once
  jupyter flow pin RUN_ID --note "figure 3"              keep a run (and what it needs) from every gc
  jupyter flow fsck                                      check stored values and records
  jupyter flow envs                                      cached environments of pip:SPEC steps
  jupyter flow export nb.ipynb --to kfp -o p.yaml --store s3://b/flow   a Kubeflow pipeline of the notebook
Store: --store URL, else $JUPYTER_FLOW_STORE, else a folder in your Jupyter data dir.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """Bad options: one line and exit code 2, like every other bad input."""
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


class _ExecutorHelp(str):
    """--executor's help lists the registered executors, read only when help is shown."""

    def __mod__(self, params):
        from jupyter_flow.executors import names  # lazy: start-up time

        return (f"where tasks run: {', '.join(names())} (default: local; dask needs --scheduler; "
                "packages add executors through the entry-point group jupyter_flow.executors)")


def _count(minimum: int):
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number >= {minimum}")
        return value

    return parse


def _add_store(p):
    p.add_argument("--store", metavar="URL", help="where runs are kept: a folder, s3://bucket/prefix, ... "
                   "(default: $JUPYTER_FLOW_STORE, else ~/.local/share/jupyter/flow)")


def _add_execution(p):
    p.add_argument("-p", "--parameter", "--parameters", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   default=[], help="set a parameter of the parameters cell (value read as papermill reads it, "
                   "whatever the default's type: True/False/None, int, float, else string); repeatable")
    p.add_argument("--max-workers", type=_count(1), metavar="N", help="tasks run at once (default: number of cores)")
    p.add_argument("--executor", metavar="NAME", default="local", help=_ExecutorHelp("where tasks run"))
    p.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler address, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--no-cache", action="store_true", help="run every step even if an identical earlier task exists")
    p.add_argument("--quiet", action="store_true", help="no progress view; print only the outcome")
    _add_store(p)


def _add_format(p, choices=("text", "json")):
    p.add_argument("--format", choices=choices, default=choices[0], help="output format")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """`jupyter flow`'s parser; given a `command` (see command_in), with that command's options only: building
    all 17 commands' parsers took 8-10 ms of each command's start (argparse looks up a translation of every help
    text). Its help and its errors are the same either way."""
    parser = _Parser(prog="jupyter flow", description="Run a tagged Jupyter notebook as a parallel, "
                                     "tracked, resumable pipeline.", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, add in PARSERS.items():
        if command in (None, name):
            add(sub)
    return parser


def command_in(argv: list[str]) -> str | None:
    """The command `argv` names, if it is one and no top-level --help comes before it; else None."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in PARSERS else None
        if arg in ("-h", "--help"):
            return None
    return None


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run a notebook as a pipeline",
                       description="Run every step of NOTEBOOK as its own papermill execution, independent steps "
                       "at the same time. Exit code: 0 succeeded, 1 failed or cancelled, 2 invalid input.")
    p.add_argument("notebook", help="the .ipynb file (a path or any fsspec URL: s3://, gs://, http://...)")
    p.add_argument("output", nargs="?", help="also write the executed notebook here, in papermill's format "
                   "(a path or any fsspec URL); written when the run fails too")
    p.add_argument("-f", "--parameters-file", "--parameters_file", action="append", default=[], metavar="FILE",
                   help="YAML file of parameter values (like papermill -f); repeatable")
    p.add_argument("--with", dest="with_", action="append", default=[], metavar="NOTEBOOK",
                   help="another notebook of the same flow: its steps join NOTEBOOK's in one DAG (a step that reads "
                   "a name another notebook's step writes depends on it); repeatable")
    _add_execution(p)
    _add_papermill(p)
    _add_kfp(p)


def _add_dag(sub) -> None:
    p = sub.add_parser("dag", help="print the steps of a notebook and the edges between them",
                       description="Print the DAG inferred from the notebook's tags and data flow, and from the "
                       "files its steps read and wrote in the last run in the store (file edges).")
    p.add_argument("notebook")
    p.add_argument("--with", dest="with_", action="append", default=[], metavar="NOTEBOOK",
                   help="another notebook of the same flow (as for run); repeatable")
    _add_format(p, ("text", "json", "mermaid"))
    _add_store(p)


def _add_runs(sub) -> None:
    p = sub.add_parser("runs", help="list runs, newest first (yours unless --all-users)")
    p.add_argument("--flow", help="only runs of this flow (the notebook's name)")
    p.add_argument("--status", help="only runs with this status (running, succeeded, failed, cancelled, crashed)")
    p.add_argument("--user", help="only runs of this user")
    p.add_argument("--batch", metavar="BATCH_ID", help="only the runs of this batch (of every user); a unique "
                   "prefix of its id is enough, with or without `batch-`")
    p.add_argument("--all-users", action="store_true", help="runs of every user")
    p.add_argument("--limit", type=_count(0), default=20, help="at most this many (default 20; 0 for all)")
    _add_format(p, ("table", "json"))
    _add_store(p)


def _add_show(sub) -> None:
    p = sub.add_parser("show", help="show one run: parameters, metrics, tasks, artifacts")
    p.add_argument("run_id", help="a run id (a unique prefix is enough)")
    p.add_argument("--step", help="also show this step's failure: its error and failing frames with their locals")
    p.add_argument("--index", type=_count(0), default=0, help="foreach task index of --step (default 0)")
    _add_format(p)
    _add_store(p)


def _add_task_reader(sub, name: str) -> None:
    what = {"logs": "print a task's log (what its cells printed)",
            "artifacts": "list a task's stored values: name, type, size, preview"}[name]
    p = sub.add_parser(name, help=what)
    p.add_argument("run_id")
    p.add_argument("step")
    p.add_argument("--index", type=_count(0), default=0, help="foreach task index (default 0)")
    if name == "artifacts":
        _add_format(p)
    _add_store(p)


def _add_resume(sub) -> None:
    p = sub.add_parser("resume", help="rerun a failed run, reusing the steps that finished",
                       description="Create a new run linked to RUN_ID: finished steps whose code and inputs are "
                       "unchanged are reused (not re-executed); the failed step and everything after it run again "
                       "from the notebook as it is now.")
    p.add_argument("run_id")
    p.add_argument("--from", dest="from_step", metavar="STEP", help="also rerun STEP and everything after it")
    p.add_argument("--from-start", action="store_true",
                   help="run the failed step from its first cell (by default it continues from its failing cell "
                        "when that gives the same values)")
    p.add_argument("--notebook", help="the notebook's path, if it moved since the run")
    p.add_argument("-f", "--parameters-file", action="append", default=[], metavar="FILE",
                   help="YAML file of parameter values (like papermill -f); repeatable")
    _add_execution(p)
    _add_kernel_and_cwd(p)


def _add_cancel(sub) -> None:
    p = sub.add_parser("cancel", help="stop a running run (from any terminal that sees the store)")
    p.add_argument("run_id")
    _add_store(p)


def _add_gc(sub) -> None:
    p = sub.add_parser("gc", help="delete your old runs and the stored values no kept run uses",
                       description="Delete your runs but the N newest of each flow (everyone's, N newest of each "
                       "user's flows, with --all-users), then the stored values no remaining run uses. Never "
                       "deleted: running or damaged runs, pinned runs (jupyter flow pin), runs a kept run was "
                       "resumed from or reuses steps of, and everything those need.")
    p.add_argument("--keep", type=_count(0), required=True, metavar="N",
                   help="keep the N newest runs of each flow (of each user)")
    p.add_argument("--flow", help="only this flow")
    p.add_argument("--all-users", action="store_true", help="collect every user's runs, not only yours")
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted, by user; delete nothing")
    _add_store(p)


def _add_pin(sub) -> None:
    p = sub.add_parser("pin", help="keep a run and everything it needs from every gc (anyone's)")
    p.add_argument("run_id", help="a run id (a unique prefix is enough)")
    p.add_argument("--note", metavar="TEXT", help="why it is kept, e.g. 'figure 3 of the paper'")
    _add_store(p)


def _add_unpin(sub) -> None:
    p = sub.add_parser("unpin", help="let gc remove a pinned run again")
    p.add_argument("run_id")
    _add_store(p)


def _add_fsck(sub) -> None:
    p = sub.add_parser("fsck", help="check every stored value and record; move corrupt values aside",
                       description="Check every blob against its hash and every run and task record for "
                       "readability; move corrupt blobs to quarantine/ (the next run that produces the value "
                       "stores it again), list damaged records, remove temporary files of writes that died. "
                       "Exit code: 0 all good, 1 problems found.")
    p.add_argument("--dry-run", action="store_true", help="report only; move and remove nothing")
    _add_store(p)


def _add_envs(sub) -> None:
    p = sub.add_parser("envs", help="list or remove the cached Python environments of pip: steps",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="A step tagged pip:SPEC (e.g. pip:six==1.16.0) runs in a Python environment of\n"
                       "its own, built with uv and cached by requirement set and Python version; later runs\n"
                       "reuse it. Cache folder: $JUPYTER_FLOW_ENVS, else ~/.cache/jupyter-flow/envs.",
                       epilog="Examples:\n  jupyter flow envs                 list: key, requirements, python, "
                       "size, last used\n  jupyter flow envs rm 3f2a         remove one (a unique key prefix)\n"
                       "  jupyter flow envs rm --all        remove every cached environment\n"
                       "A removed environment is built again by the next run that needs it.")
    p.add_argument("action", nargs="?", choices=["list", "rm"], default="list", help="list (default) or rm")
    p.add_argument("keys", nargs="*", metavar="KEY", help="with rm: the environments to remove (key prefixes)")
    p.add_argument("--all", action="store_true", help="with rm: remove every cached environment")
    _add_format(p)


def _add_agent(sub) -> None:
    sub.add_parser("agent", help="keep runs and kernels warm between commands (optional; Ctrl-C stops it)",
                   description="Import the runner's stack (papermill, jupyter_client) and the kernels' "
                   "(ipykernel, IPython) once, and serve every `run`, `resume` and `batch` of this Python "
                   "environment from them: each starts at once, with its first kernel a fork away. The "
                   "commands behave as without it (output, exit status, Ctrl-C, folder, environment) and "
                   "never need it; JUPYTER_FLOW_AGENT=0 makes one ignore it. Leave it running in a "
                   "terminal, or in the background: jupyter flow agent 2>/dev/null &")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(command_in([a for a in argv if a != "--debug"]))
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    args = parser.parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    if debug:  # jupyter_flow's debug lines on stderr (why a kernel starts cold...), not other libraries'
        logging.basicConfig(format="debug: %(message)s")
        logging.getLogger("jupyter_flow").setLevel(logging.DEBUG)
    if args.version:
        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return 2
    if args.command != "run":
        _collect_from_now_on()
    try:
        if args.command in WRITERS and not getattr(args, "dry_run", False):
            from jupyter_flow.store import open_store  # lazy: start-up time

            open_store(args.store).check_writable()  # a read-only store refuses in one line, before anything
        return COMMANDS[args.command](args)
    except FlowError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one line for the user, the traceback with --debug
        if args.debug:
            raise
        print(f"error: {e.__class__.__name__}: {e} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def _collect_from_now_on() -> None:
    """The garbage collector back on, if `entry` turned it off for start-up: what start-up made (modules,
    the flow) is frozen first, out of every later collection. Collecting it while it was made took 41
    collections, 6-14 ms of a cached rerun's CPU (linear5, load 5). In a process that did not start
    with `entry` (an agent serving many runs), nothing changes."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _interruptible() -> None:
    """Ctrl-C and `kill PID` cancel the run cleanly (KeyboardInterrupt in the waiting thread), even
    when this process was started with SIGINT ignored (as `cmd &` in a script and some CI harnesses do)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def _execute(args, runner, log_output: bool = False) -> int:
    from jupyter_flow.runtime import launch  # lazy: start-up time
    from jupyter_flow.ui.progress import Progress

    _interruptible()
    progress = Progress(quiet=args.quiet)
    progress.set_runner(runner)
    runner.on_event = progress.event
    if log_output:
        from jupyter_flow.readers.papermill_output import log_outputs  # lazy: start-up time

        runner.on_event = log_outputs(runner.store, progress.event)
    _collect_from_now_on()
    with progress:
        handle = launch(runner)
        handle.join(on_interrupt=progress.interrupted)
    progress.summary(handle)
    return 0 if handle.status == "succeeded" else 1


def cmd_run(args) -> int:
    _prestart_kernels(args)
    from jupyter_flow import runtime  # lazy: start-up time
    from jupyter_flow.executors import runs_whole_runs
    from jupyter_flow.readers import papermill_output

    if runs_whole_runs(args.executor):  # Kubeflow: the whole run is compiled and sent there
        _collect_from_now_on()
        return _submit_whole_run(args)
    if args.kfp_host or args.image:
        raise FlowError("--kfp-host and --image are for --executor kfp; add it, or drop them")
    given = _papermill_parameters(args)
    values = {name: value for _, name, value in given}
    input_path, output = papermill_output.paths(args.notebook, args.output, values)
    if output:
        papermill_output.check_output(output)
    if args.log_output:
        logging.basicConfig(level=args.log_level, format="%(message)s")  # as papermill's CLI
    if args.progress_bar is False or (args.progress_bar is None and args.log_output):
        args.quiet = True
    with papermill_output.local_notebook(input_path) as path:
        if args.help_notebook:
            return _help_notebook(path, args.notebook)
        if args.prepare_only:
            if not output:
                raise FlowError("--prepare-only writes the prepared notebook to OUTPUT; give one")
            papermill_output.prepare_notebook(path, output, values, report_mode=args.report_mode,
                                              kernel_name=args.kernel, language=args.language)
            print(f"output notebook (prepared, not run): {output}", file=sys.stderr)
            return 0
        runner = runtime.prepare(
            path, cli_params=given, store=args.store, executor=args.executor, scheduler=args.scheduler,
            max_workers=args.max_workers, no_cache=args.no_cache, kernel_name=args.kernel, cwd=args.cwd,
            with_=args.with_)
        code = _execute(args, runner, log_output=args.log_output)
    if output or args.stdout_file or args.stderr_file:
        nb, _ = papermill_output.merge(runner.store, runner.run_id, values, input_path, output, args.report_mode,
                                       args.kernel, args.language)
        with contextlib.ExitStack() as files:
            papermill_output.write(nb, output, *(files.enter_context(open(f, "w", encoding="utf-8")) if f else None
                                                 for f in (args.stdout_file, args.stderr_file)))
        if output:
            print(f"output notebook: {output}", file=sys.stderr)
    return code


def _add_papermill(p) -> None:
    """papermill's other options, with papermill's spellings (see README "papermill drop-in")."""
    p.add_argument("-r", "--parameters_raw", "--parameters-raw", nargs=2, action="append", default=[],
                   metavar=("NAME", "TEXT"), help="set a parameter to TEXT, a string (papermill -r); repeatable")
    p.add_argument("-y", "--parameters_yaml", "--parameters-yaml", action="append", default=[], metavar="YAML",
                   help="parameter values as a YAML mapping, e.g. -y 'items: [1, 2]' (papermill -y); repeatable")
    p.add_argument("-b", "--parameters_base64", "--parameters-base64", action="append", default=[],
                   metavar="BASE64", help="parameter values as base64 of a YAML mapping (papermill -b); repeatable")
    for what in ("input", "output"):
        p.add_argument(f"--inject-{what}-path", action="store_true",
                       help=f"pass the {what} notebook's path as parameter PAPERMILL_{what.upper()}_PATH")
    p.add_argument("--inject-paths", action="store_true", help="both of the above")
    _add_kernel_and_cwd(p)
    p.add_argument("-l", "--language", help="the language the injected parameters are written in (papermill -l)")
    p.add_argument("--prepare-only", action="store_true", help="write OUTPUT with the parameters injected, "
                   "run nothing (papermill --prepare-only)")
    p.add_argument("--prepare-execute", dest="prepare_only", action="store_false", help=argparse.SUPPRESS)
    p.add_argument("--report-mode", action=argparse.BooleanOptionalAction, default=False,
                   help="hide the code cells' input in OUTPUT (papermill --report-mode)")
    p.add_argument("--progress-bar", action=argparse.BooleanOptionalAction, default=None,
                   help="--no-progress-bar: as --quiet")
    p.add_argument("--log-output", action=argparse.BooleanOptionalAction, default=False,
                   help="log what each step printed, on standard error, when it ends")
    p.add_argument("--log-level", choices=["NOTSET", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                   default="INFO", help="with --log-output: its logging level (default INFO)")
    p.add_argument("--stdout-file", metavar="FILE", help="write what the cells printed on stdout to FILE")
    p.add_argument("--stderr-file", metavar="FILE", help="write what the cells printed on stderr to FILE")
    p.add_argument("--help-notebook", action="store_true", help="list the notebook's parameters and exit")
    p.add_argument("--request-save-on-cell-execute", action=argparse.BooleanOptionalAction, default=True,
                   help="accepted; OUTPUT is written once, when the run ends")
    p.add_argument("--autosave-cell-every", type=int, default=30, metavar="S", help="accepted; as above")
    p.add_argument("--engine", metavar="NAME", help="only papermill's default engine (nbclient)")
    p.add_argument("--start-timeout", "--start_timeout", type=int, default=60, metavar="S",
                   help="only papermill's default (60 s)")
    p.add_argument("--execution-timeout", type=int, metavar="S", help="not per cell: tag the step timeout:S")


def _add_kernel_and_cwd(p) -> None:
    p.add_argument("-k", "--kernel", metavar="NAME", help="the kernel of every step without a kernel: tag, "
                   "instead of the one the notebook names (papermill -k)")
    p.add_argument("--cwd", metavar="FOLDER", help="where the kernels run (default: the notebook's folder)")


def _papermill_parameters(args) -> list:
    """The parameter options as papermill's CLI applies them: (origin, name, value), in its order."""
    from jupyter_flow.flow.params import from_options  # lazy: start-up time
    from jupyter_flow.readers.papermill_output import check_options

    check_options({"engine_name": args.engine, "start_timeout": args.start_timeout,
                   "execution_timeout": args.execution_timeout}, flags={
        "engine_name": "--engine", "start_timeout": "--start-timeout", "execution_timeout": "--execution-timeout"})
    inject = {}
    if args.inject_input_path or args.inject_paths:
        inject["PAPERMILL_INPUT_PATH"] = args.notebook
    if args.inject_output_path or args.inject_paths:
        inject["PAPERMILL_OUTPUT_PATH"] = args.output
    return from_options(args.parameter, args.parameters_raw, args.parameters_file, args.parameters_yaml,
                        args.parameters_base64, inject)


def _help_notebook(path, name) -> int:
    from jupyter_flow.flow.dag import build_flow  # lazy: start-up time

    flow = build_flow(path)
    print(f"Parameters of {name} (its parameters cell):" if flow.parameters else f"{name} has no parameters cell")
    for p in flow.parameters.values():
        print(f"  {p.name}: {p.type} (default {p.source.split('=', 1)[-1].strip()})")
    return 0


def cmd_resume(args) -> int:
    _prestart_kernels(args)
    from jupyter_flow import runtime  # lazy: start-up time

    return _execute(args, runtime.prepare_resume(
        args.run_id, store=args.store, from_step=args.from_step, notebook_path=args.notebook,
        from_start=args.from_start,
        cli_params=args.parameter, param_files=args.parameters_file, executor=args.executor,
        scheduler=args.scheduler, max_workers=args.max_workers, no_cache=args.no_cache, kernel_name=args.kernel,
        cwd=args.cwd))


def _prestart_kernels(args) -> None:
    """The first thing a local run does when no step can come from the cache (--no-cache, or a store on
    this machine with no cache entry yet, e.g. a fresh one): start the zygote of the notebook's kernel, whose
    imports then overlap ours. Otherwise the executor starts it with the first kernel a step needs: a run
    served from the cache starts no zygote."""
    if getattr(args, "help_notebook", False) or getattr(args, "prepare_only", False):
        return  # nothing runs
    if args.executor != "local" or not (getattr(args, "no_cache", False) or _without_cache(args.store)):
        return
    from jupyter_flow.flow.kernelspecs import notebook_kernel  # lazy: start-up time
    from jupyter_flow.speed.forkserver import prestart

    kernel = args.kernel
    if not kernel:
        try:  # the notebook's own kernel, if it is a file here (a URL is read later, by papermill's I/O)
            with open(args.notebook, encoding="utf-8") as f:
                kernel = notebook_kernel(json.load(f))
        except (OSError, TypeError, ValueError, AttributeError):
            kernel = "python3"
    prestart(kernel)


def _without_cache(url) -> bool:
    """Whether the store at `url` is a folder on this machine without any cache entry (one stat; a store
    elsewhere is not asked: opening it costs more than the zygote saves)."""
    from jupyter_flow.store import layout, open_store  # lazy: start-up time
    from jupyter_flow.store.backends import LocalBackend

    try:
        store = open_store(url)
    except FlowError:
        return False  # the run says what is wrong with it
    return isinstance(store.backend, LocalBackend) and not store.exists(layout.CACHE_FOLDER)


def cmd_dag(args) -> int:
    from jupyter_flow.runtime.doors import flow_with_history  # lazy: start-up time
    from jupyter_flow.store import ENV

    url = args.store or os.environ.get(ENV)
    flow = flow_with_history(args.notebook, url or _default_store_if_there(), with_=args.with_)
    if args.format == "json":
        print(json.dumps(flow.to_json(), indent=1, default=repr))
    elif args.format == "mermaid":
        print(flow.to_mermaid())
    else:
        print(flow.to_text())
    return 0


def _default_store_if_there() -> str | None:
    """The default store's folder when it exists: `dag` never creates one."""
    from jupyter_flow.store import default_url  # lazy: start-up time

    return default_url() if os.path.isdir(default_url()) else None


def _add_plan(sub) -> None:
    p = sub.add_parser("plan", help="say which steps a run would reuse and which it would run, and why",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Before anything runs, print one line per step: ✓ reuse (an earlier result\n"
                       "stands: same code, inputs, parameters, files read, package versions, no network) or\n"
                       "▶ run, and why. It starts no kernel and writes nothing.",
                       epilog="Example:\n  $ jupyter flow plan flow.ipynb -p lr 0.2\n"
                       "  ✓ load    reused from run 20250101T120000.000-a1b2c3 (nothing it depends on changed)\n"
                       "  ▶ clean   file data.csv changed (1200 -> 1350 bytes)\n"
                       "  ▶ train   parameter `lr` changed (0.1 -> 0.2)\n"
                       "  ▶ report  input `model` from step `train`, which runs\n"
                       "A step that runs may make the same values as before: the run then reuses the steps after\n"
                       "it that the plan says run. `jupyter flow show RUN_ID` says why each step ran.\n")
    p.add_argument("notebook", help="the .ipynb file")
    p.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                   help="a parameter value, read as `jupyter flow run -p` reads it; repeatable")
    p.add_argument("-r", "--parameters_raw", "--parameters-raw", nargs=2, action="append", default=[],
                   metavar=("NAME", "TEXT"), help="a parameter set to TEXT, a string (as run -r); repeatable")
    p.add_argument("-y", "--parameters_yaml", "--parameters-yaml", action="append", default=[], metavar="YAML",
                   help="parameter values as a YAML mapping (as run -y); repeatable")
    p.add_argument("-f", "--parameters-file", "--parameters_file", action="append", default=[], metavar="FILE",
                   help="YAML file of parameter values (as run -f); repeatable")
    p.add_argument("-k", "--kernel", metavar="NAME", help="the kernel the run gets with -k (part of the cache key)")
    p.add_argument("--cwd", metavar="DIR", help="the folder the steps' files are in, if the run gets --cwd "
                   "(default: the notebook's)")
    _add_format(p)
    _add_store(p)


def cmd_plan(args) -> int:
    from jupyter_flow.flow.params import from_options, replace_injected, resolve  # lazy: start-up time
    from jupyter_flow.runtime.doors import flow_with_history
    from jupyter_flow.runtime.plan import plan
    from jupyter_flow.store import open_store

    store = open_store(args.store)
    flow = flow_with_history(args.notebook, store)  # as a run builds it: file edges from the last run too
    given = from_options(args.parameter, args.parameters_raw, args.parameters_file, args.parameters_yaml)
    if given:
        flow = replace_injected(flow)
    flow.kernel = args.kernel or flow.kernel
    if args.cwd and not Path(args.cwd).is_dir():
        raise FlowError(f"--cwd {args.cwd}: no such folder")
    resolve(flow, cli=given)  # a bad value: one line naming its option
    steps = plan(flow, store, {name: value for _, name, value in given}, cwd=args.cwd)  # as a run is given them
    if args.format == "json":
        print(json.dumps({"steps": steps}, indent=1))
        return 0
    width = max((len(s["step"]) for s in steps), default=0)
    for s in steps:
        print(f"{'✓' if s['action'] == 'reuse' else '▶'} {s['step']:<{width}}  {s['reason']}")
    return 0


def cmd_runs(args) -> int:
    from jupyter_flow.readers import client  # lazy: start-up time
    from jupyter_flow.store.records import current_user

    batch = None
    if args.batch:  # a prefix, as for run ids; the runtime's import (1.2 s) only when --batch is given
        from jupyter_flow.runtime.batches import find_batch

        batch = find_batch(client.open_store(args.store), args.batch)
    user = None if args.all_users or batch else (args.user or current_user())
    runs = client.list_runs(args.store, flow=args.flow, user=user, status=args.status, limit=args.limit or None,
                            batch=batch)
    if args.format == "json":
        print(json.dumps(runs, indent=1, default=str))
        return 0
    from jupyter_flow.ui.tables import runs_table  # lazy: start-up time

    runs_table(runs, all_users=args.all_users)
    return 0


def cmd_show(args) -> int:
    from jupyter_flow.readers import client  # lazy: start-up time

    run = client.get_run(args.store, args.run_id)
    if args.format == "json":
        print(json.dumps(run, indent=1, default=str))
        return 0
    from jupyter_flow.ui.tables import run_detail  # lazy: start-up time

    # a bad --step: nothing shown
    task = client.read_task(args.store, run["id"], args.step, args.index) if args.step else None
    run_detail(run, client.open_store(args.store))
    if task is not None:
        from jupyter_flow.ui.tables import failure_detail  # lazy: start-up time

        failure_detail(task)
    return 0


def cmd_logs(args) -> int:
    from jupyter_flow.readers import client  # lazy: start-up time

    sys.stdout.write(client.read_task_file(args.store, args.run_id, args.step, args.index, "log.txt"))
    return 0


def cmd_artifacts(args) -> int:
    from jupyter_flow.readers import client  # lazy: start-up time

    artifacts = client.task_artifacts(args.store, args.run_id, args.step, args.index)
    if args.format == "json":
        print(json.dumps(artifacts, indent=1))
        return 0
    from jupyter_flow.ui.tables import artifacts_table  # lazy: start-up time

    artifacts_table(artifacts)
    return 0


def cmd_cancel(args) -> int:
    from jupyter_flow.runtime import request_cancel  # lazy: start-up time

    run = request_cancel(args.store, args.run_id)
    if run["status"] != "running":
        print(f"run {run['id']} is not running (status {run['status']}); nothing to cancel")
        return 1
    print(f"asked run {run['id']} to stop; its tasks are interrupted, then killed")
    return 0


def cmd_gc(args) -> int:
    from jupyter_flow.store.gc import collect  # lazy: start-up time

    report = collect(args.store, keep=args.keep, flow=args.flow, dry_run=args.dry_run, all_users=args.all_users)
    verb = "would delete" if args.dry_run else "deleted"
    users = ", ".join(f"{len(r)} of {u or '(no user)'}" for u, r in report["by_user"].items())
    print(f"{verb} {len(report['runs'])} runs{f' ({users})' if users else ''}, {len(report['blobs'])} blobs "
          f"({report['bytes'] / 1e6:.1f} MB) and {len(report['temps'])} stale temporary files; "
          f"kept {report['kept']} runs")
    if args.dry_run:
        for user, runs in report["by_user"].items():
            print(f"{user or '(no user)'}:")
            for r in runs:
                print(f"  {r['id']}  {r['flow']}  {r['status']}  {(r['created'] or '')[:19].replace('T', ' ')}")
    if report["unknown"]:
        print(f"kept every unreferenced blob: {len(report['unknown'])} records of kept runs cannot be read (first: "
              f"{report['unknown'][0]}); `jupyter flow fsck` lists them", file=sys.stderr)
    return 0


def cmd_pin(args) -> int:
    from jupyter_flow.readers import client  # lazy: start-up time

    pin = client.pin(args.store, args.run_id, note=args.note)
    print(f"pinned run {pin['run_id']} (flow {pin['flow']}): no gc removes it or what it needs; "
          f"`jupyter flow unpin {pin['run_id']}` releases it")
    return 0


def cmd_unpin(args) -> int:
    from jupyter_flow.readers import client  # lazy: start-up time

    pin = client.unpin(args.store, args.run_id)
    print(f"unpinned run {pin['run_id']} (pinned by {pin.get('by') or '?'}); gc may remove it again")
    return 0


def _add_batch(sub) -> None:
    p = sub.add_parser("batch", help="run a notebook once per parameter set (papermill-style batch)",
                       description="Run NOTEBOOK once per parameter set of -f FILE, several runs at once, each a "
                       "tracked run tagged with the batch id. One run's failure does not stop the others. Exit "
                       "code: 0 every run succeeded, 1 some did not, 2 invalid input (nothing was run).")
    p.add_argument("notebook", nargs="?", help="the .ipynb file")
    p.add_argument("-f", "--file", dest="grid_file", metavar="FILE",
                   help="YAML: a grid {lr: [0.1, 0.01], depth: [3, 5]} (every combination) or a list of sets "
                   "[{lr: 0.1, depth: 3}, ...]")
    p.add_argument("--max-parallel-runs", type=int, metavar="N", help="runs at once (default: number of cores); "
                   "they share one executor and its warm kernels")
    p.add_argument("--resume", metavar="BATCH_ID", help="rerun the runs of BATCH_ID (a unique prefix is enough) "
                   "that did not succeed, reusing their finished steps")
    _add_execution(p)


def cmd_batch(args) -> int:
    from jupyter_flow.flow.params import parse_cli_value  # lazy: start-up time
    from jupyter_flow.runtime import batches
    from jupyter_flow.ui.progress import BatchProgress
    from jupyter_flow.ui.tables import runs_table

    _interruptible()
    progress = BatchProgress(quiet=args.quiet)
    options = dict(store=args.store, max_parallel_runs=args.max_parallel_runs, executor=args.executor,
                   scheduler=args.scheduler, max_workers=args.max_workers, on_event=progress.event,
                   on_start=progress.start)
    if args.resume:
        if args.notebook or args.grid_file:
            raise FlowError("--resume BATCH_ID reruns the batch's own notebook and sets; drop NOTEBOOK and -f")
        with progress:
            result = batches.resume_batch(args.resume, parameters={n: parse_cli_value(v) for n, v in args.parameter},
                                          **options)
    else:
        if not args.notebook or not args.grid_file:
            raise FlowError("give a notebook and its parameter sets: jupyter flow batch NOTEBOOK -f GRID.yaml "
                            "(or --resume BATCH_ID)")
        grid = batches.load_grid(args.grid_file)
        with progress:
            result = batches.run_batch(args.notebook, grid, cli_params=args.parameter, no_cache=args.no_cache,
                                       where=f"-f {args.grid_file}", **options)
    runs_table([r.record for r in result.runs], all_users=True)
    progress.summary(result)
    return 0 if result.succeeded else 1


def cmd_fsck(args) -> int:
    from jupyter_flow.store.fsck import check  # lazy: start-up time

    report = check(args.store, dry_run=args.dry_run)
    moved = "corrupt (dry run: left in place)" if args.dry_run else "corrupt, moved to quarantine/"
    print(f"checked {report['blobs']} blobs: {len(report['corrupt'])} {moved}")
    for digest in report["corrupt"]:
        print(f"  corrupt blob {digest}")
    print(f"{len(report['damaged'])} damaged records")
    for d in report["damaged"]:
        print(f"  run {d['run']} ({d['flow']}) {d['record']}: {d['problem']}")
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(report['temps'])} stale temporary files")
    return 1 if report["corrupt"] or report["damaged"] else 0


def cmd_envs(args) -> int:
    from jupyter_flow.execution import envs  # lazy: start-up time

    if args.action == "list":
        if args.keys or args.all:
            raise FlowError("KEY and --all go with rm: jupyter flow envs rm KEY... (or rm --all)")
        found = envs.list_envs()
        if args.format == "json":
            print(json.dumps(found, indent=1))
            return 0
        if not found:
            print(f"no cached environments in {envs.cache_dir()}")
        for e in found:
            print(f"{e['key'][:12]}  {' '.join(e['requirements']):40}  {e['python']:16}  {e['size'] / 1e6:7.1f} MB  "
                  f"used {envs.age(e['last_used'])}")
        return 0
    if bool(args.keys) == args.all:
        raise FlowError("say which environments to remove: jupyter flow envs rm KEY... (see `jupyter flow envs`), "
                        "or jupyter flow envs rm --all")
    removed = envs.remove(args.keys, everything=args.all)
    print(f"removed {len(removed)} environment{'s' if len(removed) != 1 else ''}" +
          (f": {', '.join(k[:12] for k in removed)}" if removed else ""))
    return 0


# -- Kubeflow Pipelines ------------------------------------------------------------------------------
def _add_kfp(p) -> None:
    p.add_argument("--kfp-host", metavar="URL", help="with --executor kfp: the Kubeflow Pipelines API, e.g. "
                   "http://localhost:8080")
    p.add_argument("--image", help="with --executor kfp: the container image of every step; it must have "
                   "jupyter-flow[kfp] installed (default python:3.11)")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="compile a notebook into a pipeline for another scheduler (Kubeflow)",
                       description="Compile NOTEBOOK's steps into a Kubeflow Pipelines (v2) pipeline file: each step "
                       "a component running the task in --image against the shared --store; parameters from the "
                       "parameters cell; foreach as ParallelFor; limit: as resources; retry: as retries.")
    p.add_argument("notebook")
    p.add_argument("--to", choices=["kfp"], required=True, help="the target (kfp: Kubeflow Pipelines v2)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the pipeline file to write (.yaml)")
    p.add_argument("--image", help="the container image of every step; it must have jupyter-flow[kfp] installed "
                   "(default python:3.11)")
    p.add_argument("--allow-local-store", action="store_true", help="accept a local folder as --store (only for "
                   "kfp's local runner on this machine: a cluster cannot see it)")
    _add_store(p)


def cmd_export(args) -> int:
    from jupyter_flow.kubeflow.pipeline import DEFAULT_IMAGE, export  # lazy: start-up time

    store = export(args.notebook, args.output, store=args.store, image=args.image or DEFAULT_IMAGE,
                   allow_local_store=args.allow_local_store)
    print(f"wrote {args.output}: a Kubeflow pipeline whose steps write to {store}; upload it in the Kubeflow UI "
          "or run it with `kfp run create`")
    return 0


def _submit_whole_run(args) -> int:
    """`run --executor kfp` (any whole-run backend): compile the notebook, send it, say where the run is."""
    from jupyter_flow.executors import make_backend  # lazy: start-up time

    if args.kernel or args.cwd or args.prepare_only:
        raise FlowError(f"-k, --cwd and --prepare-only do not apply to --executor {args.executor} (its steps run in "
                        "--image); drop them")
    if args.output:
        raise FlowError(f"--executor {args.executor} cannot write an output notebook (the run happens on the "
                        "cluster); drop OUTPUT and read the executed notebooks with `jupyter flow show RUN_ID`")
    backend = make_backend(args.executor, host=args.kfp_host, image=args.image)
    run = backend.submit_run(args.notebook, args.store, cli_params=_papermill_parameters(args))
    print(f"submitted to {backend.host}: run {run['run_id']} ({run['url']}); once it starts, `jupyter flow runs "
          f"--flow {run['flow']} --store {run['store']}` lists it, as {run['listed_as']}")
    return 0


def cmd_agent(args) -> int:
    command = agent.run_agent()
    if command is None:  # the agent was stopped
        return 0
    # this process is one the agent forked for a command sent to it: run it here, then exit as usual
    return command.finish(run_main(command.argv))


COMMANDS = {"run": cmd_run, "batch": cmd_batch, "resume": cmd_resume, "dag": cmd_dag, "plan": cmd_plan,
            "runs": cmd_runs, "show": cmd_show, "logs": cmd_logs, "artifacts": cmd_artifacts, "cancel": cmd_cancel,
            "gc": cmd_gc, "pin": cmd_pin, "unpin": cmd_unpin, "fsck": cmd_fsck, "envs": cmd_envs, "export": cmd_export,
            "agent": cmd_agent}
# each command's parser, in the order `jupyter flow --help` lists them
PARSERS = {"run": _add_run, "dag": _add_dag, "plan": _add_plan, "runs": _add_runs, "show": _add_show,
           "logs": functools.partial(_add_task_reader, name="logs"),
           "artifacts": functools.partial(_add_task_reader, name="artifacts"), "resume": _add_resume,
           "batch": _add_batch, "export": _add_export, "cancel": _add_cancel, "gc": _add_gc, "pin": _add_pin,
           "unpin": _add_unpin, "fsck": _add_fsck, "envs": _add_envs, "agent": _add_agent}
# commands that write to the store (but with --dry-run); run and resume check in runtime.prepare
WRITERS = ("batch", "gc", "pin", "unpin", "cancel", "fsck")



def run_main(argv: list[str]) -> int:
    """`main`, with what the interpreter would do for what escapes it: SystemExit's code, or the
    traceback (--debug) and 1."""
    try:
        return _exit_status(main(argv))
    except SystemExit as e:
        return _exit_status(e.code)
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        return 1


def _exit_status(code) -> int:
    """As sys.exit reads its argument: None is 0, an int is itself, anything else is printed and 1."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def entry() -> None:
    """The `jupyter-flow` console script: a run goes to `jupyter flow agent` when one is running for
    this environment (see cli/agent.py), else runs here. The interpreter then exits as usual (threads
    joined, exit handlers run, streams flushed); gc.freeze() first spares its last collections the
    objects of every module a run imported."""
    import_trims.install()  # before any thread starts: this process's (and an agent's) notebook-stack imports
    argv = sys.argv[1:]
    code = agent.delegate(argv)
    if code is None:
        gc.disable()  # until a run starts (_collect_from_now_on): start-up's objects live as long as the process
        code = run_main(argv)
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
