"""One- and two-way ANOVA with eta-squared (statsmodels OLS + ``anova_lm(typ=2)``).

eta-squared of a term = SS_term / SS_total (total sum of squares about the grand mean),
the definition TR138 uses ("share of variance explained"; its A.3 prints SS_total).
Factors are treated as categorical (numbers like concurrency 1/4/8 are levels, not a
trend). Sums of squares are library output, unrounded: a factor whose cell means are
exactly equal can show an SS of ~1e-30 (floating-point noise), with p 1.0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ._num import num, quiet

_FACTOR_KEYS = ("A", "B")


def _empty_term(df: int, levels: int, note: str, p: float | None = 1.0) -> dict[str, Any]:
    return {"df": max(df, 0), "sum_sq": 0.0, "F": None, "p": p, "eta_sq": 0.0, "levels": levels, "note": note}


def _anova(d: pd.DataFrame, names: list[str], interaction: bool) -> dict[str, Any]:
    """ANOVA of d.y on the categorical columns A (and B); ``names`` are the caller's factor names."""
    import statsmodels.formula.api as smf  # local: the formula API is the heaviest import here
    from statsmodels.stats.anova import anova_lm

    y = d["y"].to_numpy(dtype=float)
    n = int(y.size)
    keys = list(_FACTOR_KEYS[: len(names)])
    levels = {k: int(d[k].nunique()) for k in keys}
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
        fit = smf.ols("y ~ " + " + ".join(terms), data=d).fit()
        table = anova_lm(fit, typ=2)
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


def _factor(s: pd.Series) -> pd.Categorical:
    # A pandas Categorical lets patsy skip its per-element missing-value scan (3x faster
    # on 8,000 rows than an object column); levels are the values as strings.
    return pd.Categorical(s.astype(str).to_numpy())


def anova_two_way(df: pd.DataFrame, y: str, a: str, b: str, *, interaction: bool = True) -> dict[str, Any]:
    """Two-way ANOVA of ``df[y]`` on categorical ``a`` and ``b`` (with their interaction).

    Returns ``{"n", "ss_total", "residual": {"df", "sum_sq"}, "factors": {a: term, b: term,
    "a:b": term}}``; each term has df, sum_sq, F, p, eta_sq (= sum_sq / ss_total), levels.
    Degenerate: zero total variance -> F None, p 1.0, eta_sq 0.0 (note "zero variance");
    a one-level factor -> the same with note "single level"; zero residual variance ->
    F and p None (note).
    """
    d = pd.DataFrame({"y": df[y].astype(float).to_numpy(), "A": _factor(df[a]), "B": _factor(df[b])})
    return {"y": y, **_anova(d, [a, b], interaction)}


def anova_one_way(df: pd.DataFrame, y: str, a: str) -> dict[str, Any]:
    """One-way ANOVA of ``df[y]`` on categorical ``a``; same result shape as :func:`anova_two_way`."""
    d = pd.DataFrame({"y": df[y].astype(float).to_numpy(), "A": _factor(df[a])})
    return {"y": y, **_anova(d, [a], False)}
