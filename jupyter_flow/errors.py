"""Errors a user can act on. Every one carries a message that says what is wrong and how to fix it."""


class FlowError(Exception):
    """Invalid input: a notebook, tag, parameter, store or option the user must fix. Nothing ran."""


class NotFound(FlowError):
    """A run, step, task or artifact that the store does not hold."""


class StoreError(FlowError):
    """The store cannot be reached, written or read consistently."""


class CorruptBlob(StoreError):
    """A blob's bytes no longer match its content hash."""
