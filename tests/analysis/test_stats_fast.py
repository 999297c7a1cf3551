"""The vectorised statistics paths against the code they replaced, bit for bit.

Each fast path of ``analysis.stats`` must give the same floats as the pandas /
statsmodels-formula code it replaced (stats.json bytes are content-addressed); the
reference implementations are kept here, verbatim in substance, and compared through
``orjson`` bytes so that even a last-bit difference fails.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsafe.analysis.stats._num import clean
from batchsafe.analysis.stats.anova import anova_one_way, anova_two_way, factor_codes


def _bytes(x: Any) -> bytes:
    return orjson.dumps(clean(x), option=orjson.OPT_SORT_KEYS)


def _formula_table(d: pd.DataFrame, terms: list[str]) -> pd.DataFrame:
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    return anova_lm(smf.ols("y ~ " + " + ".join(terms), data=d).fit(), typ=2)


def _formula_anova(df: pd.DataFrame, y: str, a: str, b: str | None) -> pd.DataFrame | None:
    """The replaced path: patsy on the whole frame with Categorical(str) factors."""
    d = pd.DataFrame({"y": df[y].astype(float).to_numpy(), "A": pd.Categorical(df[a].astype(str).to_numpy())})
    keys = ["A"]
    if b is not None:
        d["B"] = pd.Categorical(df[b].astype(str).to_numpy())
        keys.append("B")
    active = [k for k in keys if d[k].nunique() >= 2]
    terms = [f"C({k})" for k in active] + (["C(A):C(B)"] if len(active) == 2 else [])
    y_ = d["y"].to_numpy()
    if not terms or not len(d) or np.ptp(y_) == 0:
        return None
    return _formula_table(d, terms)


def _check(df: pd.DataFrame, b: str | None) -> None:
    try:
        table = _formula_anova(df, "y", "a", b)
    except (ValueError, np.linalg.LinAlgError) as exc:  # e.g. no residual df: NaN covariance
        with pytest.raises(type(exc)):
            anova_two_way(df, "y", "a", b) if b else anova_one_way(df, "y", "a")
        return
    fast = anova_two_way(df, "y", "a", b) if b else anova_one_way(df, "y", "a")
    if table is None:
        return
    # Every number of the fast result comes from the table: compare them all.
    names = {"C(A)": "a", "C(B)": "b", "C(A):C(B)": "a:b"}
    assert fast["residual"]["sum_sq"] == float(table.loc["Residual", "sum_sq"]) or fast["residual"]["sum_sq"] is None
    for row, name in names.items():
        if row in table.index and name in fast["factors"]:
            got, want = fast["factors"][name], table.loc[row]
            assert _bytes(got["sum_sq"]) == _bytes(float(want["sum_sq"]))
            if got.get("note") is None:
                assert _bytes([got["F"], got["p"]]) == _bytes([float(want["F"]), float(want["PR(>F)"])])


levels_a = st.sampled_from([["x", "y"], ["x", "y", "z"], [1, 4, 8, 16], [1.0, 4.0, None], ["solo"]])
levels_b = st.sampled_from([["q4", "q8"], [1, 2, 3], ["m1", "m2", "m10"]])


@settings(max_examples=60, deadline=None)
@given(la=levels_a, lb=levels_b, n=st.integers(2, 120), seed=st.integers(0, 2**31 - 1),
       grain=st.sampled_from([None, 1.0, 0.5]))
def test_anova_codes_match_formula_path(la: list, lb: list, n: int, seed: int, grain: float | None) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random(n)
    if grain is not None:  # scores on a grid (0/1 or halves), like the real data
        y = np.round(y / grain) * grain
    df = pd.DataFrame({"y": y, "a": pd.Series([la[i] for i in rng.integers(0, len(la), n)], dtype=object),
                       "b": pd.Series([lb[i] for i in rng.integers(0, len(lb), n)], dtype=object)})
    if any(isinstance(v, float) for v in la):
        df["a"] = pd.to_numeric(df["a"])  # float column with NaN, as the frames have
    _check(df, "b")
    _check(df, None)


def test_factor_codes_match_categorical() -> None:
    for col in (pd.Series([8.0, 1.0, None, 16.0, 1.0]), pd.Series(["b", "a", "b", None], dtype=object),
                pd.Series([3, 1, 2, 1]), pd.Series([], dtype=object), pd.Series([1, "1", 2], dtype=object)):
        codes, cats = factor_codes(col)
        ref = pd.Categorical(col.astype(str).to_numpy())
        assert list(cats) == list(ref.categories) and codes.tolist() == ref.codes.tolist()
