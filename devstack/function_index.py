"""The functions of function_app as the host indexes them, read once per process.

`FunctionApp.get_functions()` validates and records bindings, and raises if called a second time in the same
process (it sees its own names as duplicates), so tests and the local host share this cached view.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def indexed_functions() -> dict[str, Any]:
    """Function name → the FunctionBuilder's built function (bindings, trigger, settings, user function)."""
    import function_app

    return {str(fn.get_function_name()): fn for fn in function_app.app.get_functions()}
