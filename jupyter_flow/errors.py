"""Errors a user can act on. Every one carries a message that says what is wrong and how to fix it."""


class FlowError(Exception):
    """Invalid input: a notebook, tag, parameter, store or option the user must fix. Nothing ran."""


class NotFound(FlowError):
    """A run, step, task or artifact that the store does not hold."""


class StoreError(FlowError):
    """The store cannot be reached, written or read consistently."""


class CorruptBlob(StoreError):
    """A blob's bytes no longer match its content hash."""


def failure_line(error: dict | None) -> str:
    """One line for a failed task's error record: exception type, message, and where in the user's
    notebook it happened, e.g. "SystemExit: 1, in cell 3 ('sys.exit(1)')"."""
    error = error or {}
    kind, message = error.get("type") or "", str(error.get("message") or "").strip()
    if kind in ("timed_out", "cancelled", "KernelDied") or message.startswith(f"{kind}:"):
        line = message or kind
    else:
        line = f"{kind}: {message}" if kind and message else message or kind or "failed"
    return f"{line.rstrip('.')}, in {error['where']}" if error.get("where") else line
