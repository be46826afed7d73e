"""Where a pipeline could give other values than the notebook run top to bottom: refused or
warned about before anything runs, naming the step.

- A step split around another one (`step:a`, `step:b`, `step:a`) whose later cells use a name (or
  a file, one of them writing it) the step in between also uses, a builtin the later cells redefine
  (`def sum`) included: refused (top to bottom, the step in between runs in the middle).
- A step that draws from a global random generator (`random`, `numpy.random`) after an earlier step
  used it, when something seeded it: warned (top to bottom it continues the earlier step's
  sequence; in a fresh kernel it starts again from the seed).
- A step that uses a magic IPython does not have after an earlier step loaded an extension
  (`%load_ext autoreload`, then `%autoreload 2`): refused (kernel state stays in the kernel of the
  step that made it; the imports cell, which every step runs, is where it belongs).
- Two names a step leaves pointing at one object (`y = x`) when a later step changes one of them in
  place as it received it: warned (top to bottom the other changes too; in a pipeline each value is
  its own copy), also after a step in between binds one of them to the object it held (`y = y`).
  Not when the later step rebinds the name first, nor for a new object made from the
  other (`sub = df[['a']]`: items, slices and calls make new objects) or an immutable value.
"""
from __future__ import annotations

import bisect
import functools

from jupyter_flow.errors import FlowError
from jupyter_flow.flow import analysis


def check_split_steps(nb, usages: dict[str, analysis.Usage], modules: dict[str, str], constants=None) -> None:
    starts = sorted((block.cells[0].index, name) for name, block in nb.steps.items() if block.cells)
    for name, block in nb.steps.items():
        if not block.cells:
            continue
        first, last = block.cells[0].index, max(c.index for c in block.cells)
        inside = starts[bisect.bisect_right(starts, (first, "\uffff")):bisect.bisect_left(starts, (last, ""))]
        for start, other in inside:
            late = [c for c in block.cells if c.index > start]  # steps that begin inside this one's span only
            rest = analysis.analyze([c.source for c in late], modules=modules, constants=constants)
            them = usages[other]
            clash = ((set(them.reads) | set(them.maybe) | set(them.builtins)) & set(rest.writes)  # builtins: `def sum`
                     | set(them.writes) & (set(rest.reads) | set(rest.builtins) | set(rest.writes) | set(rest.maybe))
                     | (set(them.files_read) | set(them.files_written)) & set(rest.files_written)
                     | set(them.files_written) & set(rest.files_read))
            if clash:
                names = ", ".join(sorted(clash))
                raise FlowError(
                    f"{late[0].label()} continues step {name!r} after step {other!r} began "
                    f"({nb.steps[other].cells[0].label()}), and both use {names}: top to bottom step {other!r} "
                    f"runs in between. Tag {late[0].label()} with a step of its own (e.g. step:{name}_2), "
                    f"or move it above step {other!r}")


def kernel_state(usages: dict[str, analysis.Usage]) -> None:
    loaded = None  # (step, extension): the last extension an earlier step loaded
    for name, usage in usages.items():
        foreign = [m for m in usage.magics if m not in ipython_magics()] if loaded else []
        if foreign:
            raise FlowError(
                f"step {name!r} uses %{foreign[0]}, which is not one of IPython's magics, after step {loaded[0]!r} "
                f"loads the extension {loaded[1]!r}: each step runs in a kernel of its own, so step {name!r} would "
                f"not have it. Load it in the imports cell (%load_ext {loaded[1]}), which every step runs")
        if usage.extensions:
            loaded = (name, usage.extensions[-1])


@functools.cache
def ipython_magics() -> frozenset[str]:
    """The magics every IPython kernel has, without loading an extension."""
    from IPython.core import magics  # lazy: IPython costs 0.3 s; only the equivalence check needs it

    names = {"bash", "sh", "perl", "ruby", "python", "python2", "python3", "pypy", "HTML", "SVG", "ls", "ll", "lf",
             "lk", "lx", "mkdir", "rmdir", "mv", "rm", "cp", "cat", "clear", "less", "more", "man", "connect_info",
             "qtconsole", "autosave"}  # script magics, shell aliases and ipykernel's, made when a kernel starts
    for value in vars(magics).values():
        table = getattr(value, "magics", None)
        if isinstance(table, dict):
            names.update(*(table.get(kind, ()) for kind in ("line", "cell")))
    return frozenset(names)


def random_state(shared: analysis.Usage, usages: dict[str, analysis.Usage]) -> list[str]:
    warnings = []
    for stream in analysis.RNG_STREAMS:
        seeded = ("seed", stream) in shared.rng
        last = None  # the last earlier step that used the stream
        for name, usage in usages.items():
            events = [kind for kind, s in usage.rng if s == stream]
            if not events:
                continue
            if events[0] == "draw" and last and seeded:
                warnings.append(
                    f"step {name!r} draws from the global random state ({stream}) after step {last!r} used it: "
                    f"top to bottom it continues the sequence where step {last!r} left it, but each step starts "
                    f"again from the seed. Seed it at the start of step {name!r} ({stream}.seed(...)) for values of "
                    "its own, or pass a generator (random.Random(seed), numpy.random.default_rng(seed)) between steps")
            seeded = seeded or "seed" in events
            last = name
    return warnings


def shared_objects(usages: dict[str, analysis.Usage]) -> list[str]:
    """Two names a step leaves on one object (`y = x`, `rows = [df]`; not `sub = df[['a']]`, nor a
    str or number inside a list) when a later step changes one of them in place as it received it:
    not after a step in between rebinds either name (then they are two objects again)."""
    warnings = []
    order = list(usages)
    for i, name in enumerate(order):
        for alias, targets in usages[name].shares.items():
            for target in sorted(targets):
                for changer in order[i + 1:]:
                    later = usages[changer]
                    for one in sorted({alias, target} & set(later.changed) & set(later.reads)):
                        other = target if one == alias else alias
                        if other in later.rebound and other not in later.reads:
                            continue  # it binds `other` anew before using it: the old object is gone
                        warnings.append(
                            f"step {name!r} leaves {alias!r} and {target!r} as one object, and step {changer!r} "
                            f"changes {one!r} in place: top to bottom {other!r} changes with it, but in the "
                            f"pipeline {other!r} stays as step {name!r} left it. Make a copy in step {name!r} "
                            f"(e.g. {alias} = copy.deepcopy({target})) or use {one!r} instead of {other!r}")
                    if any(n in later.rebound and not later.aliases.get(n, set()) & {alias, target}
                           for n in (alias, target)):
                        break  # rebound to another object (not `y = y`): no longer one object
    return warnings
