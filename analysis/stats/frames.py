"""Records -> pandas DataFrames, built column by column (no per-row dicts) for speed.

The phase analyses work on these frames with groupby; 31,410 samples convert in a few
tens of milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

COND_FIELDS = ("batch_size", "cobatch", "group_size", "quant", "concurrency", "kernel", "repeat", "tensor_parallel",
               "load")
SAMPLE_FIELDS = ("sample", "phase", "phase_kind", "model", "task", "domain", "prompt", "baseline", "score", "label",
                 "latency_s")
FLIP_FIELDS = ("sample", "baseline", "phase", "phase_kind", "model", "task", "domain", "prompt", "identical",
               "baseline_score", "score", "baseline_label", "label", "flipped", "direction")


# Columns with a known dtype are built directly; the rest (ints or None) go through
# pd.to_numeric as before. Every other column holds strings (or None): object dtype,
# which is what DataFrame.from_records inferred for them.
_FLOAT = frozenset({"score", "baseline_score"})
_BOOL = frozenset({"identical", "flipped"})
_NUMERIC = ("batch_size", "group_size", "concurrency", "repeat", "tensor_parallel", "load", "latency_s")


def _frame(rows: Sequence[Any], fields: Sequence[str]) -> pd.DataFrame:
    # map(attrgetter) reads all fields of a record in one C call without a Python-level
    # loop, and zip(*) transposes to columns; building each column with its dtype skips
    # from_records' per-column type inference (half of the frame's cost at 31k rows).
    get, get_cond = attrgetter(*fields), attrgetter(*COND_FIELDS)
    names = [*fields, *COND_FIELDS]
    if not rows:
        return _frame_records([], names)
    try:
        # Pydantic records keep their fields in __dict__: item lookups there cost half of
        # attribute lookups, which search the class first.
        d = attrgetter("__dict__")
        cols = list(zip(*map(itemgetter(*fields), map(d, rows))))
        cond_objs = list(map(itemgetter("condition"), map(d, rows)))
        conds = list(map(itemgetter(*COND_FIELDS), map(d, cond_objs)))
    except (KeyError, AttributeError, TypeError):  # records that are not plain field holders
        cols = list(zip(*map(get, rows)))
        cond_objs = list(map(attrgetter("condition"), rows))
        conds = list(map(get_cond, cond_objs))
    data: dict[str, Any] = {}
    n = len(rows)
    for name, col in zip(fields, cols):
        data[name] = _column(name, col, n)
    data.update(_cond_columns(conds, cond_objs, n))
    return pd.DataFrame(data, copy=False)


def _column(name: str, col: tuple, n: int) -> np.ndarray:
    if name in _FLOAT:
        return np.array(col, dtype=float)
    if name in _BOOL:
        return np.array(col, dtype=bool)
    if name in _NUMERIC:
        return _numeric(col)
    return np.fromiter(col, dtype=object, count=n)


def _cond_columns(conds: list[tuple], cond_objs: list[Any], n: int) -> dict[str, np.ndarray]:
    """The condition columns, built once per distinct condition and indexed by row.

    A plan has a few dozen conditions for 10^4-10^5 rows. Distinct conditions are found
    by tuple equality, which would merge 1 and 1.0 (or True): only conditions of one
    validated model class (typed int/str fields, so no such mixes) take this path.
    """
    classes = set(map(type, cond_objs))
    if len(classes) == 1 and issubclass(next(iter(classes)), BaseModel):
        index = {t: i for i, t in enumerate(dict.fromkeys(conds))}
        codes = np.fromiter(map(index.__getitem__, conds), dtype=np.intp, count=n)
        return {name: _column(name, col, len(index))[codes] for name, col in zip(COND_FIELDS, zip(*index))}
    return {name: _column(name, col, n) for name, col in zip(COND_FIELDS, zip(*conds))}


def _numeric(col: tuple) -> np.ndarray:
    """What pd.to_numeric(errors="coerce") makes of ints/floats or None: int64 when nothing is
    missing and all are ints, else float64 with NaN for None (numpy converts None to NaN)."""
    try:
        if None in col:  # identity is tested first: a C-speed scan
            return np.array(col, dtype=float)
        arr = np.array(col)
        if arr.dtype.kind in "if":
            return arr
    except (TypeError, ValueError):
        pass
    return pd.to_numeric(np.fromiter(col, dtype=object, count=len(col)), errors="coerce")


def _frame_records(recs: list[tuple], names: list[str]) -> pd.DataFrame:
    """The empty frame as DataFrame.from_records builds it (column dtypes of no rows)."""
    df = pd.DataFrame.from_records(recs, columns=names)
    for f in ("batch_size", "group_size", "concurrency", "repeat", "tensor_parallel", "load"):
        df[f] = pd.to_numeric(df[f], errors="coerce")
    return df


def samples_frame(scored: Sequence[Any]) -> pd.DataFrame:
    """One row per ScoredSample, with the condition fields flattened into columns."""
    df = _frame(scored, SAMPLE_FIELDS)
    if not len(df):
        df["score"] = df["score"].astype(float)
        df["latency_s"] = pd.to_numeric(df["latency_s"], errors="coerce")
    return df


def flips_frame(flips: Sequence[Any]) -> pd.DataFrame:
    """One row per FlipRow, with the condition fields flattened into columns."""
    df = _frame(flips, FLIP_FIELDS)
    if not len(df):
        for f in ("identical", "flipped"):
            df[f] = df[f].astype(bool)
        for f in ("score", "baseline_score"):
            df[f] = df[f].astype(float)
    return df
