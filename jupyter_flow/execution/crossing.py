"""What a step in another language hands to Python at its end, in its own environment (so with its
own secrets): in_kernel.R runs `python -m jupyter_flow.execution.crossing NOTES OUT` after it wrote
its values (or its variables at a failure) in the neutral format.

- The files it noted reading and writing become the record's `files` (files.from_notes), written to
  OUT (crossing/files.json).
- Each value it wrote (crossing/out/NAME.json, crossing/failure/NAME.json) is checked for the
  step's secrets (see secrets.py: its text, and each string of the value); one that holds a secret
  is deleted before anything stores it and listed in crossing/withheld.json as {NAME: why}, which
  the runner's side (flow/languages.collect) reports as a Python step's withheld values.
"""
from __future__ import annotations

import json
import os
import sys

from jupyter_flow.execution import files, secrets
from jupyter_flow.store import neutral

WITHHELD = "withheld.json"


def withhold_secrets(folder: str, found) -> dict[str, str]:
    """Delete each value file under `folder` (the crossing folder) that holds a secret of `found`
    (secrets.Secrets); {name: why} of those deleted, also merged into WITHHELD."""
    withheld: dict[str, str] = {}
    for sub in ("out", "failure"):
        where = os.path.join(folder, sub)
        for file in sorted(os.listdir(where)) if os.path.isdir(where) else []:
            path = os.path.join(where, file)
            with open(path, "rb") as f:
                data = f.read()
            why = found.found_in(data) if found else None
            if why is None:
                try:
                    why = secrets.withheld(neutral.loads(data), found=found)
                except Exception:  # noqa: BLE001, S112 - not a value: the runner says so when it stores it
                    continue
            if why:
                os.remove(path)
                withheld[file.removesuffix(".json")] = why
    listing = os.path.join(folder, WITHHELD)
    if withheld or not os.path.exists(listing):
        before = read_withheld(folder)
        with open(f"{listing}.tmp", "w") as f:
            json.dump({**before, **withheld}, f)
        os.replace(f"{listing}.tmp", listing)
    return withheld


def read_withheld(folder: str) -> dict[str, str]:
    try:
        with open(os.path.join(folder, WITHHELD)) as f:
            return dict(json.load(f))
    except (OSError, ValueError, TypeError):
        return {}


def main(argv: list[str] | None = None) -> int:
    notes_path, out = sys.argv[1:3] if argv is None else argv
    with open(notes_path) as f:
        notes = json.load(f)
    found = secrets.current(notes.get("secrets") or ())
    withhold_secrets(os.path.dirname(os.path.abspath(out)), found)
    used = files.from_notes(notes, found)
    with open(f"{out}.tmp", "w") as f:
        json.dump(used, f)
    os.replace(f"{out}.tmp", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
