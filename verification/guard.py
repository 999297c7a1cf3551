"""One stage's unexpected exception becomes that stage's FAIL line, never an abort of ``verify``.

The stages validate what they read, but a bundle is hostile input and a stage may meet a
shape nobody foresaw (a plan field of the wrong type deep in a derived stage, a number too
large for a float).  ``verify`` must still print a report and exit 1, naming the stage, so
each stage runs through :func:`guarded`.  Interrupts and out-of-memory still propagate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .report import Stage

__all__ = ["guarded"]

# What malformed data makes Python code raise; anything else is a bug worth a traceback.
_DATA_ERRORS = (ValueError, KeyError, TypeError, IndexError, AttributeError, OverflowError, RecursionError,
                ArithmeticError, UnicodeError, LookupError)


def guarded(name: str, fn: Callable[..., Stage | None], *args: Any, **kwargs: Any) -> Stage | None:
    """``fn(*args, **kwargs)``; a data error becomes a FAIL stage ``name`` saying what was raised."""
    try:
        return fn(*args, **kwargs)
    except _DATA_ERRORS as exc:
        st = Stage(name=name)
        st.fail(f"the {name} stage could not finish on this bundle: {type(exc).__name__}: {str(exc)[:200]}")
        st.summary = "stopped by malformed data"
        return st
