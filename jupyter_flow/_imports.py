"""Keep the cost of importing the notebook stack low.

jsonschema registers a format checker for IRIs when `rfc3987_syntax` is importable, and that
package compiles a grammar at import (about 2.7 s here). nbformat never validates IRIs, so our
own processes mark it absent before anything imports jsonschema.
"""
import sys


def fast_notebook_imports() -> None:
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)
