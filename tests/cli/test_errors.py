"""The one line a failed run ends with: exception type, message, and the user's cell."""
import pytest

from jupyter_flow.errors import failure_line


@pytest.mark.parametrize("error, line", [
    ({"type": "SystemExit", "message": "1", "where": "cell 4 ('sys.exit(1)')"},
     "SystemExit: 1, in cell 4 ('sys.exit(1)')"),
    ({"type": "ZeroDivisionError", "message": "division by zero.", "where": "cell 2 ('x = 1 / 0')"},
     "ZeroDivisionError: division by zero, in cell 2 ('x = 1 / 0')"),
    ({"type": "ImportError", "message": "no foo", "where": "shared cell 1 ('import foo')"},
     "ImportError: no foo, in shared cell 1 ('import foo')"),
    ({"type": "UnpicklableValue", "message": "'gen' cannot be pickled",
      "where": "the step's end (storing its outputs)"},
     "UnpicklableValue: 'gen' cannot be pickled, in the step's end (storing its outputs)"),
    ({"type": "KeyboardInterrupt", "message": "", "where": None}, "KeyboardInterrupt"),
    ({"type": "", "message": "127", "where": "cell 2 ('false')"}, "127, in cell 2 ('false')"),
    ({"type": "timed_out", "message": "timed out after 2 s (timeout: tag); the kernel was killed"},
     "timed out after 2 s (timeout: tag); the kernel was killed"),
    ({"type": "KernelDied", "message": "the kernel process was killed by SIGKILL"},
     "the kernel process was killed by SIGKILL"),
    (None, "failed"),
])
def test_failure_line(error, line):
    assert failure_line(error) == line
