"""Group rows by one key column with numpy: codes, sorted keys and each group's row positions.

The phase analyses used one pandas groupby (or boolean filter) per model, level and cell;
at a few thousand rows each such call costs ~0.5 ms of pandas overhead for microseconds of
work. Grouping once and slicing index arrays keeps the rows of each group in their
original order, so anything computed from them (library calls, pandas reductions over the
same rows) sees exactly the values and order it saw before.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd


def groups(keys: Any, *, sort: bool = True) -> Iterator[tuple[Any, np.ndarray]]:
    """(key, row positions in original order) per distinct non-missing key, keys sorted.

    The same groups and order as ``df.groupby(col)`` (missing keys dropped, keys sorted
    when ``sort``), as positions into ``keys`` instead of sub-frames.
    """
    arr = keys.to_numpy() if isinstance(keys, pd.Series) else np.asarray(keys)
    codes, uniq = pd.factorize(arr, sort=sort)
    if not len(uniq):
        return
    order = np.argsort(codes, kind="stable")  # stable: rows keep their order within a group
    bounds = np.searchsorted(codes[order], np.arange(len(uniq) + 1))
    for i, key in enumerate(uniq):
        yield key, order[bounds[i]:bounds[i + 1]]


def tally(keys: Sequence[Any], *flags: np.ndarray, sort: bool = True) -> list[tuple[tuple, int, list[int]]]:
    """(key tuple, rows, [number of true rows of each flag]) per distinct key combination.

    ``df.groupby(keys, dropna=False)[flag].agg(["sum", "count"])`` for boolean flags:
    missing keys (None/NaN) form their own group with key NaN, as groupby with
    ``dropna=False`` keeps them. Counts are integers, so any summation order is exact.
    Combinations come in sorted key order when ``sort`` (missing last), else in order of
    first appearance.
    """
    n = len(keys[0]) if len(keys) else len(flags[0])
    if n == 0:
        return []
    codes_all, uniq_all = [], []
    for col in keys:
        arr = col.to_numpy() if isinstance(col, pd.Series) else np.asarray(col)
        codes, uniq = pd.factorize(arr, sort=sort, use_na_sentinel=False)
        codes_all.append(codes.astype(np.int64, copy=False))
        uniq_all.append(uniq)
    dims = [max(len(u), 1) for u in uniq_all]
    combined = np.ravel_multi_index(codes_all, dims) if keys else np.zeros(n, dtype=np.int64)
    if sort:
        cells, inv = np.unique(combined, return_inverse=True)
    else:
        cells, first, inv = np.unique(combined, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # cells by first appearance
        rank = np.empty(len(cells), dtype=np.int64)
        rank[order] = np.arange(len(cells))
        cells, inv = cells[order], rank[inv]
    sizes = np.bincount(inv, minlength=len(cells))
    sums = [np.bincount(inv[np.asarray(f, dtype=bool)], minlength=len(cells)) for f in flags]
    parts = np.unravel_index(cells, dims) if keys else ()
    out = []
    for i in range(len(cells)):
        key = tuple(uniq_all[j][parts[j][i]] for j in range(len(keys)))
        out.append((key, int(sizes[i]), [int(s[i]) for s in sums]))
    return out
