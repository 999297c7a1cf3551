"""One- and two-way ANOVA with eta-squared (statsmodels OLS + ``anova_lm(typ=2)``).

eta-squared of a term = SS_term / SS_total (total sum of squares about the grand mean),
the definition TR138 uses ("share of variance explained"; its A.3 prints SS_total).
Factors are treated as categorical (numbers like concurrency 1/4/8 are levels, not a
trend). Sums of squares are library output, unrounded: a factor whose cell means are
exactly equal can show an SS of ~1e-30 (floating-point noise), with p 1.0.

Speed: statsmodels' formula interface (patsy) costs more than the fit itself at 8,000
rows. The design matrix of categorical factors depends only on each row's level
combination, so patsy builds it once for one row per combination (cached by the levels)
and the full matrix is that small one indexed by each row's combination: the same
columns, the same 0/1 values, the same design_info, so OLS and ``anova_lm`` give the
same numbers bit for bit (tests/analysis/test_stats_fast.py checks that against the
formula path).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from itertools import product
from typing import Any

import numpy as np
import pandas as pd

from ._num import num, quiet

_FACTOR_KEYS = ("A", "B")

# A factor as (codes into its categories, categories): categories are the sorted distinct
# values as strings, what pd.Categorical(values.astype(str)) would hold.
Factor = tuple[np.ndarray, tuple[str, ...]]


def factor_codes(values: Any) -> Factor:
    """(codes, sorted string categories) of a column, as ``pd.Categorical(col.astype(str))`` has them.

    Distinct values are factorised first and only they are turned into strings (the
    per-element ``astype(str)`` was a measurable share of an ANOVA); values whose strings
    coincide share a category, as they would after ``astype(str)``.
    """
    arr = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
    codes, uniq = pd.factorize(arr)
    names = [str(v) for v in uniq]
    na = codes < 0
    if na.any():  # factorize folds None and NaN together; their strings differ ("None", "nan")
        codes = codes.copy()
        na_names = [str(v) for v in arr[na]]
        extra = {nm: len(names) + i for i, nm in enumerate(dict.fromkeys(na_names))}
        names.extend(extra)
        codes[na] = [extra[nm] for nm in na_names]
    if not names:
        return np.zeros(0, dtype=np.intp), ()
    cats, inv = np.unique(np.array(names, dtype=object), return_inverse=True)
    return inv[codes].astype(np.intp, copy=False), tuple(str(c) for c in cats)


@lru_cache(maxsize=64)
def _design(cats: tuple[tuple[str, ...], ...], formula: str) -> tuple[np.ndarray, Any] | None:
    """patsy's (design matrix, design_info) for one row per level combination, in C order.

    None when patsy drops a combination as missing (it reads a level such as "nan" as
    NA): the per-row matrix then has fewer rows than the data, so the caller fits the
    whole frame through the formula instead.
    """
    from patsy import dmatrices

    combos = np.array(list(product(*[range(len(c)) for c in cats])), dtype=np.intp).reshape(-1, len(cats))
    frame = {"y": np.zeros(len(combos))}
    for k, c, col in zip(_FACTOR_KEYS, cats, combos.T):
        frame[k] = pd.Categorical.from_codes(col, categories=list(c))
    # As statsmodels' from_formula calls it (handle_formula_data): dataframe return type.
    _, x = dmatrices(formula, pd.DataFrame(frame), return_type="dataframe")
    return (np.asarray(x), x.design_info) if len(x) == len(combos) else None


def _fit_table(y: np.ndarray, factors: Sequence[Factor], formula: str) -> pd.DataFrame:
    """``anova_lm(ols(formula).fit(), typ=2)`` with the design matrix built from the level codes."""
    from statsmodels.regression.linear_model import OLS
    from statsmodels.stats.anova import anova_lm

    cats = tuple(c for _, c in factors)
    design = _design(cats, formula)
    if design is None:
        import statsmodels.formula.api as smf  # the formula path, for levels patsy reads as NA

        frame = {"y": y, **{k: pd.Categorical.from_codes(codes, categories=list(c))
                            for k, (codes, c) in zip(_FACTOR_KEYS, factors)}}
        return anova_lm(smf.ols(formula, data=pd.DataFrame(frame)).fit(), typ=2)
    small, info = design
    idx = np.zeros(y.size, dtype=np.intp)
    for codes, c in factors:  # row-major combination index, the order of _design's rows
        idx = idx * len(c) + codes
    exog = small[idx]
    mod = OLS(y, exog, missing="drop", missing_idx=None, formula=formula, design_info=info)
    return anova_lm(mod.fit(), typ=2)


def _empty_term(df: int, levels: int, note: str, p: float | None = 1.0) -> dict[str, Any]:
    return {"df": max(df, 0), "sum_sq": 0.0, "F": None, "p": p, "eta_sq": 0.0, "levels": levels, "note": note}


def _anova(y: np.ndarray, factors: Sequence[Factor], names: list[str], interaction: bool) -> dict[str, Any]:
    """ANOVA of y on the categorical factors A (and B); ``names`` are the caller's factor names."""
    n = int(y.size)
    keys = list(_FACTOR_KEYS[: len(names)])
    by_key = dict(zip(keys, factors))
    levels = {k: len(by_key[k][1]) for k in keys}
    term_names = dict(zip(keys, names))
    want = list(keys) + (["A:B"] if interaction and len(keys) == 2 else [])
    label = {k: term_names[k] for k in keys}
    label["A:B"] = f"{names[0]}:{names[1]}" if len(names) == 2 else ""
    # Degrees of freedom and cell count of each term, for the degenerate results.
    term_df = {k: levels[k] - 1 for k in keys}
    term_levels = dict(levels)
    if "A:B" in want:
        term_df["A:B"] = max(levels["A"] - 1, 0) * max(levels["B"] - 1, 0)
        term_levels["A:B"] = levels["A"] * levels["B"]
    out: dict[str, Any] = {"n": n, "typ": 2, "factors": {}, "method": "statsmodels ols + anova_lm(typ=2)"}
    if n == 0:
        for k in want:
            out["factors"][label[k]] = _empty_term(0, 0, "n=0")
        return {**out, "ss_total": 0.0, "residual": {"df": 0, "sum_sq": 0.0}, "note": "n=0"}
    # All-equal values are tested exactly (ptp): their SS about a rounded mean can be ~1e-31.
    ss_total = 0.0 if np.ptp(y) == 0 else float(((y - y.mean()) ** 2).sum())
    out["ss_total"] = ss_total
    if ss_total == 0.0:
        # No variance to explain: every term explains none of it.
        for k in want:
            out["factors"][label[k]] = _empty_term(term_df[k], term_levels[k], "zero variance")
        return {**out, "residual": {"df": n - 1, "sum_sq": 0.0}, "note": "zero variance"}

    # A factor with one level explains nothing and cannot enter the model.
    active = [k for k in keys if levels[k] >= 2]
    terms = [f"C({k})" for k in active]
    if interaction and len(active) == 2:
        terms.append("C(A):C(B)")
    if not terms:
        for k in want:
            out["factors"][label[k]] = _empty_term(0, term_levels[k], "single level")
        return {**out, "residual": {"df": n - 1, "sum_sq": ss_total}}
    with quiet():
        table = _fit_table(y, [by_key[k] for k in keys], "y ~ " + " + ".join(terms))
    res_ss = float(table.loc["Residual", "sum_sq"])
    res_df = float(table.loc["Residual", "df"])
    out["residual"] = {"df": num(res_df), "sum_sq": num(res_ss)}
    # Perfect fit (or no residual df): F is infinite/undefined.
    perfect = res_df <= 0 or res_ss <= 1e-12 * ss_total
    row_for = {"A": "C(A)", "B": "C(B)", "A:B": "C(A):C(B)"}
    for k in want:
        row = row_for[k]
        if row not in table.index:
            out["factors"][label[k]] = _empty_term(0, term_levels[k], "single level")
            continue
        ss = float(table.loc[row, "sum_sq"])
        term: dict[str, Any] = {"df": num(table.loc[row, "df"]), "sum_sq": num(ss), "eta_sq": num(ss / ss_total),
                                "levels": term_levels[k]}
        if perfect:
            term.update(F=None, p=None, note="zero residual variance: F undefined")
        else:
            term.update(F=num(table.loc[row, "F"]), p=num(table.loc[row, "PR(>F)"]))
            if term["p"] is None:  # rank-deficient term (e.g. empty cells): nothing estimable
                term.update(F=None, p=1.0, note="term not estimable")
        out["factors"][label[k]] = term
    return out


def anova_two_way(df: pd.DataFrame, y: str, a: str, b: str, *, interaction: bool = True) -> dict[str, Any]:
    """Two-way ANOVA of ``df[y]`` on categorical ``a`` and ``b`` (with their interaction).

    Returns ``{"n", "ss_total", "residual": {"df", "sum_sq"}, "factors": {a: term, b: term,
    "a:b": term}}``; each term has df, sum_sq, F, p, eta_sq (= sum_sq / ss_total), levels.
    Degenerate: zero total variance -> F None, p 1.0, eta_sq 0.0 (note "zero variance");
    a one-level factor -> the same with note "single level"; zero residual variance ->
    F and p None (note).
    """
    return {"y": y, **anova_codes(df[y].to_numpy(dtype=float), [factor_codes(df[a]), factor_codes(df[b])], [a, b],
                                  interaction=interaction)}


def anova_one_way(df: pd.DataFrame, y: str, a: str) -> dict[str, Any]:
    """One-way ANOVA of ``df[y]`` on categorical ``a``; same result shape as :func:`anova_two_way`."""
    return {"y": y, **anova_codes(df[y].to_numpy(dtype=float), [factor_codes(df[a])], [a], interaction=False)}


def anova_codes(y: np.ndarray, factors: Sequence[Factor], names: list[str], *, interaction: bool = True
                ) -> dict[str, Any]:
    """:func:`anova_two_way` / :func:`anova_one_way` on arrays: ``factors`` from :func:`factor_codes`.

    For callers that already hold the level codes (no frame, no ``"y"`` key in the result).
    """
    return _anova(np.asarray(y, dtype=float), factors, names, interaction)
