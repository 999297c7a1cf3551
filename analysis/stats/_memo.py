"""Reuse a statistics primitive's result for a repeated input, within one ``compute_stats``.

A bundle's cells repeat their counts and scores a lot (on the 31.5k-sample benchmark 70
2x2 tests have 41 distinct tables, 162 Wilson intervals 49 distinct counts, 81 paired
TOSTs 36 distinct pairs), and each scipy/statsmodels call costs ~0.1-1 ms of library
overhead. The primitives are deterministic functions of their arguments, so a repeated
call returns a copy of the first result: the same bytes, computed once.

Only active inside :func:`memo_scope` (``compute_stats`` opens one); elsewhere the
primitives run as written. Keys are exact: floats by their bit pattern (-0.0 and 0.0
differ), the type of every argument, numeric arrays by dtype, shape and bytes; an
argument without such a key (an object array, a frame) disables reuse for that call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import numpy as np

F = TypeVar("F", bound=Callable[..., Any])

# Per context (thread, task): concurrent compute_stats calls neither share nor end each other's scope.
_cache: ContextVar[dict[Any, Any] | None] = ContextVar("batchsafe_stats_memo", default=None)


class _Unkeyable(Exception):
    pass


def _key(x: Any) -> Any:
    if x is None or isinstance(x, (bool, int, str)):
        return (type(x), x)
    if isinstance(x, float):
        return (type(x), float(x).hex())
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise _Unkeyable
        return (np.ndarray, x.dtype.str, x.shape, x.tobytes())
    if isinstance(x, (np.integer, np.bool_)):
        return (type(x), x.item())
    if isinstance(x, np.floating):
        return (type(x), float(x).hex())
    if isinstance(x, (list, tuple)):
        return (type(x), tuple(_key(v) for v in x))
    raise _Unkeyable


def _copy(x: Any) -> Any:
    # Results are JSON-like trees; callers add keys to them (p_adjusted, significant).
    if isinstance(x, dict):
        return {k: _copy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_copy(v) for v in x]
    return x


def memo(fn: F) -> F:
    """Decorator: inside :func:`memo_scope`, repeated exact arguments reuse the first result."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        cache = _cache.get()
        if cache is None:
            return fn(*args, **kwargs)
        try:
            key = (fn, tuple(_key(a) for a in args), tuple(sorted((k, _key(v)) for k, v in kwargs.items())))
        except _Unkeyable:
            return fn(*args, **kwargs)
        if key not in cache:
            cache[key] = fn(*args, **kwargs)
        return _copy(cache[key])

    return wrapper  # type: ignore[return-value]


@contextmanager
def memo_scope() -> Iterator[None]:
    """Reuse primitive results inside the block (nesting keeps the outer scope's cache)."""
    token = _cache.set({}) if _cache.get() is None else None
    try:
        yield
    finally:
        if token is not None:
            _cache.reset(token)
