"""Helpers that keep every number in stats.json a plain, finite Python value.

The statistics are written with ``json.dumps(allow_nan=False)``, so a NaN or an
infinity that leaks out of numpy/scipy would make the bundle unwritable. Each
primitive handles its own degenerate cases explicitly (and says so in a ``note``);
:func:`num` is the last line of defence and turns anything non-finite into ``None``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np


def num(x: Any) -> float | None:
    """A plain finite float, or None for None/NaN/inf; -0.0 becomes 0.0."""
    if x is None:
        return None
    f = float(x)
    if not math.isfinite(f):
        return None
    return f + 0.0  # normalises -0.0 (Wilson bounds at k=0 can come back as -0.0)


def rate(k: int, n: int) -> float | None:
    """k/n as a float, None when n is 0 (a share of nothing is undefined, not 0)."""
    return float(k) / float(n) if n else None


def count(k: int, n: int) -> dict[str, Any]:
    """A count with its denominator and share, so a reader can recompute the share."""
    return {"k": int(k), "n": int(n), "rate": rate(k, n)}


def clean(obj: Any) -> Any:
    """Recursively convert numpy scalars/arrays to Python values and non-finite floats to None.

    Mapping keys become strings (JSON object keys) and are emitted sorted so that the
    output is byte-for-byte deterministic whatever the insertion order was.
    """
    t = type(obj)  # exact built-in types first: the ABC/isinstance chain below is slow
    if t is dict:
        return {str(k): clean(obj[k]) for k in sorted(obj, key=str)}
    if t is float:
        return num(obj)
    if t is str or t is bool or t is int or obj is None:
        return obj
    if t is list or t is tuple:
        return [clean(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): clean(obj[k]) for k in sorted(obj, key=str)}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [clean(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return num(obj)
    return obj


@contextmanager
def quiet() -> Iterator[None]:
    """Silence numpy/scipy/statsmodels runtime warnings inside a primitive.

    Degenerate inputs are detected and documented by the caller; the library's
    divide-by-zero chatter would only repeat that on stderr.
    """
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def skey(x: Any) -> str:
    """String key for a level (batch size 8 -> "8"; None -> "none")."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "none"
    if isinstance(x, (float, np.floating)) and float(x).is_integer():
        return str(int(x))
    return str(x)


def level_sort(values: Any) -> list[Any]:
    """Levels sorted numerically when they are all numbers, else as strings."""
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    try:
        return sorted(set(vals), key=float)
    except (TypeError, ValueError):
        return sorted(set(vals), key=str)
