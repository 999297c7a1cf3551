"""Group rows by one key column with numpy: codes, sorted keys and each group's row positions.

The phase analyses used one pandas groupby (or boolean filter) per model, level and cell;
at a few thousand rows each such call costs ~0.5 ms of pandas overhead for microseconds of
work. Grouping once and slicing index arrays keeps the rows of each group in their
original order, so anything computed from them (library calls, pandas reductions over the
same rows) sees exactly the values and order it saw before.
"""

from __future__ import annotations

from collections.abc import Iterator
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
