"""Keep library overheads that do not belong to the statistics out of ``compute_stats``.

Two measured problems on a 2-core box with another process busy (the normal case here):

- OpenBLAS threads: statsmodels' OLS takes an SVD of the n x k design; with two OpenBLAS
  threads competing for one free core an 8,100 x 9 SVD took 30-65 ms instead of ~1 ms.
  The matrices here are tiny, so BLAS runs single-threaded for the duration of the call
  (the previous thread count is restored afterwards). This is what threadpoolctl does,
  reduced to the OpenBLAS builds that numpy/scipy wheels ship.
- ``statsmodels.stats.multitest.multipletests(method="holm")`` calls ``gc.collect()``,
  which walks every live object - with ~55,000 record objects alive that cost ~160 ms
  per call. ``gc.freeze()`` moves the objects that exist before the computation into the
  permanent generation, so those collections only scan what the statistics allocate.
  What the statistics allocate grows too (frames, results: ~18 ms per Holm call at 31k
  samples with the collector paused, as verify runs), so :func:`adjust` calls
  :func:`refreeze` before each ``multipletests``: everything alive then joins the
  permanent generation, which ``lean`` empties again on exit.

Neither changes any result.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_",
            "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads", "openblas_get_num_threads64_",
            "openblas_get_num_threads")


@lru_cache(maxsize=1)
def _openblas() -> tuple[tuple[object, object], ...]:
    """(getter, setter) pairs of every OpenBLAS loaded in this process (Linux; empty elsewhere)."""
    importlib.import_module("numpy")  # numpy's BLAS must be loaded before we look for it

    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line})
    except OSError:
        return ()
    found = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        get = next((getattr(lib, n) for n in _GETTERS if hasattr(lib, n)), None)
        put = next((getattr(lib, n) for n in _SETTERS if hasattr(lib, n)), None)
        if get is not None and put is not None:
            found.append((get, put))
    return tuple(found)


_owned = 0  # > 0 while a lean() block that froze the heap itself is open


def refreeze() -> None:
    """Inside a :func:`lean` block that froze the heap: freeze what was allocated since too."""
    if _owned:
        gc.freeze()


@contextmanager
def lean() -> Iterator[None]:
    """Single-threaded OpenBLAS and frozen pre-existing objects for the duration of the block."""
    libs = _openblas()
    before = []
    for get, put in libs:
        before.append(int(get()))
        put(1)
    global _owned
    froze = gc.get_freeze_count() == 0  # leave a caller's own freeze alone
    if froze:
        gc.freeze()
        _owned += 1
    try:
        yield
    finally:
        if froze:
            _owned -= 1
            gc.unfreeze()
        for (_, put), n in zip(libs, before):
            put(n)
