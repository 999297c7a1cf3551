"""Tests on counts: 2x2 tables, proportions, binomial, odds, equivalence, multiplicity.

Every function returns a small dict that carries its inputs (counts and n) next to
its outputs, so a reader of stats.json can recompute any number by hand. Floats are
plain Python floats or None, never NaN or infinity; degenerate inputs get a defined
result and a ``note`` saying what was done.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy import stats as sps
from statsmodels.stats.contingency_tables import Table2x2
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint, tost_proportions_2indep

from ._memo import memo
from ._num import num, quiet, rate
from ._runtime import refreeze

Haldane = Literal["always", "if_zero", "never"]

CORRECTIONS = ("holm", "bonferroni", "fdr_bh", "none")


@memo
def two_by_two(a_events: int, a_n: int, b_events: int, b_n: int, *, haldane: Haldane = "always",
               alpha: float = 0.05) -> dict[str, Any]:
    """Compare two proportions a_events/a_n and b_events/b_n (a is the row of interest).

    - ``chi2``/``chi2_p``: Pearson chi-squared WITHOUT continuity correction
      (``scipy.stats.chi2_contingency(correction=False)``), 1 df.
    - ``fisher_p``: two-sided Fisher exact test (``scipy.stats.fisher_exact``).
    - ``odds_ratio``/``or_ci``: odds ratio of a vs b with the Woolf (log) interval from
      ``statsmodels`` ``Table2x2`` (normal quantile at 1 - alpha/2).

    ``haldane`` sets the Haldane-Anscombe correction for the odds ratio only:
    ``"always"`` adds 0.5 to all four cells (what TR138 did: its printed odds ratios
    are reproduced only this way, e.g. 3/321 vs 1/240 gives 1.755, not 2.255);
    ``"if_zero"`` adds 0.5 only when a cell is zero; ``"never"`` leaves the table as is
    (the odds ratio is then None when a cell is zero).

    Degenerate: an empty group or a zero margin (no events at all, or only events)
    leaves chi-squared undefined; the result is chi2 0.0, p 1.0 with a note, since the
    data carry no evidence of a difference.
    """
    a_events, a_n, b_events, b_n = int(a_events), int(a_n), int(b_events), int(b_n)
    if not (0 <= a_events <= a_n and 0 <= b_events <= b_n):
        raise ValueError(f"events must lie in [0, n]: {a_events}/{a_n}, {b_events}/{b_n}")
    table = np.array([[a_events, a_n - a_events], [b_events, b_n - b_events]], dtype=float)
    out: dict[str, Any] = {
        "a": {"events": a_events, "n": a_n, "rate": rate(a_events, a_n)},
        "b": {"events": b_events, "n": b_n, "rate": rate(b_events, b_n)},
        "table": table.astype(int).tolist(), "alpha": alpha, "haldane": haldane,
        "difference": (num(rate(a_events, a_n) - rate(b_events, b_n)) if a_n and b_n else None),
    }
    notes = []
    if a_n == 0 or b_n == 0 or table.sum(axis=0).min() == 0:
        # chi2_contingency raises on a zero expected count; with an empty group or a
        # column of zeros there is nothing to compare.
        out.update(chi2=0.0, chi2_p=1.0, dof=1)
        notes.append("zero margin: chi-squared undefined, reported as 0 with p 1")
    else:
        res = sps.chi2_contingency(table, correction=False)
        out.update(chi2=num(res.statistic), chi2_p=num(res.pvalue), dof=int(res.dof))
    out["fisher_p"] = num(sps.fisher_exact(table).pvalue) if a_n and b_n else 1.0

    has_zero = bool((table == 0).any())
    if a_n == 0 or b_n == 0:
        out.update(odds_ratio=None, or_ci=None, log_or_se=None, haldane_applied=False, or_table=None)
        notes.append("empty group: odds ratio undefined")
    elif haldane == "never" and has_zero:
        out.update(odds_ratio=None, or_ci=None, log_or_se=None, haldane_applied=False,
                   or_table=table.tolist())
        notes.append("zero cell without Haldane correction: odds ratio undefined")
    else:
        applied = haldane == "always" or (haldane == "if_zero" and has_zero)
        or_table = table + 0.5 if applied else table
        t = Table2x2(or_table)
        lo, hi = t.oddsratio_confint(alpha=alpha)
        out.update(odds_ratio=num(t.oddsratio), or_ci=[num(lo), num(hi)], log_or_se=num(t.log_oddsratio_se),
                   haldane_applied=applied, or_table=or_table.tolist())
    if notes:
        out["note"] = "; ".join(notes)
    return out


@memo
def wilson(k: int, n: int, alpha: float = 0.05) -> dict[str, Any]:
    """Wilson score interval for k/n (``statsmodels`` ``proportion_confint(method="wilson")``).

    n = 0: rate None and the uninformative interval [0, 1], with a note.
    Bounds are clamped to [0, 1] (the library can return -0.0 at k = 0).
    """
    k, n = int(k), int(n)
    if n == 0:
        return {"k": k, "n": n, "rate": None, "lo": 0.0, "hi": 1.0, "alpha": alpha, "method": "wilson",
                "note": "n=0: no information, interval [0, 1]"}
    lo, hi = proportion_confint(k, n, alpha=alpha, method="wilson")
    return {"k": k, "n": n, "rate": k / n, "lo": max(0.0, num(lo)), "hi": min(1.0, num(hi)), "alpha": alpha,
            "method": "wilson"}


def _bounds(ci: Any) -> tuple[float, float]:
    if isinstance(ci, dict):
        return float(ci["lo"]), float(ci["hi"])
    lo, hi = ci
    return float(lo), float(hi)


def overlap(ci_a: Any, ci_b: Any) -> bool:
    """True when two closed intervals share a point (dicts with lo/hi, or (lo, hi) pairs)."""
    a_lo, a_hi = _bounds(ci_a)
    b_lo, b_hi = _bounds(ci_b)
    return a_lo <= b_hi and b_lo <= a_hi


@memo
def binomial(k: int, n: int, p: float = 0.5, alpha: float = 0.05) -> dict[str, Any]:
    """Exact two-sided binomial test of k successes in n against p (``scipy.stats.binomtest``).

    The Wilson interval of k/n is included. n = 0: p-value 1.0 with a note.
    """
    k, n = int(k), int(n)
    out = {"k": k, "n": n, "p0": p, "share": rate(k, n), "wilson": wilson(k, n, alpha)}
    if n == 0:
        return {**out, "p": 1.0, "note": "n=0: no test"}
    return {**out, "p": num(sps.binomtest(k, n, p, alternative="two-sided").pvalue)}


def odds(a: int, b: int, alpha: float = 0.05) -> dict[str, Any]:
    """Odds a:b of one group (e.g. unsafe vs safe audit flips) with a Woolf (log) interval.

    The estimate and interval are those of an intercept-only binomial GLM
    (``statsmodels`` GLM, Wald interval), which is exactly
    exp(log(a/b) +/- z * sqrt(1/a + 1/b)). This is the definition that reproduces
    TR138 section 11.2: 26 unsafe vs 18 safe gives 1.44 [0.79, 2.63].
    A zero count makes the odds 0 or infinite; 0.5 is then added to both counts (note).
    """
    import statsmodels.api as sm  # local: statsmodels.api is the heavy import

    a, b = int(a), int(b)
    out: dict[str, Any] = {"a": a, "b": b, "alpha": alpha}
    if a + b == 0:
        return {**out, "odds": None, "ci": None, "log_se": None, "note": "no observations"}
    ea, eb = float(a), float(b)
    if a == 0 or b == 0:
        ea, eb = ea + 0.5, eb + 0.5
        out["note"] = "zero count: 0.5 added to both counts"
    with quiet():  # IRLS on one row has zero residual df; the scale warning is irrelevant (scale is 1)
        res = sm.GLM(np.array([[ea, eb]]), np.ones((1, 1)), family=sm.families.Binomial()).fit()
        lo, hi = np.exp(res.conf_int(alpha=alpha)[0])
    return {**out, "odds": num(np.exp(res.params[0])), "ci": [num(lo), num(hi)], "log_se": num(res.bse[0])}


@memo
def tost_two_proportions(k1: int, n1: int, k2: int, n2: int, margin: float,
                         alpha: float = 0.05) -> dict[str, Any]:
    """Equivalence of two independent proportions within +/- margin (two one-sided tests).

    Uses ``statsmodels.stats.proportion.tost_proportions_2indep`` with
    ``compare="diff"`` and ``method="score"`` (Miettinen-Nurminen score z tests): unlike
    the Wald variant it stays defined when both counts are 0 or both are n. ``p`` is
    the larger of the two one-sided p-values; ``equivalent`` is p < alpha.
    """
    k1, n1, k2, n2 = int(k1), int(n1), int(k2), int(n2)
    out: dict[str, Any] = {"k1": k1, "n1": n1, "k2": k2, "n2": n2, "margin": margin, "alpha": alpha,
                           "method": "score", "difference": (k1 / n1 - k2 / n2) if n1 and n2 else None}
    if n1 == 0 or n2 == 0:
        return {**out, "p": 1.0, "p_lower": 1.0, "p_upper": 1.0, "equivalent": False, "note": "empty group: no test"}
    with quiet():
        res = tost_proportions_2indep(k1, n1, k2, n2, -margin, margin, method="score")
    p = num(res.pvalue)
    return {**out, "p": 1.0 if p is None else p, "p_lower": num(res.results_larger.pvalue),
            "p_upper": num(res.results_smaller.pvalue), "equivalent": p is not None and p < alpha}


def adjust(pvalues: Sequence[float | None], method: str = "holm", alpha: float = 0.05) -> dict[str, Any]:
    """Multiple-testing adjustment (``statsmodels.stats.multitest.multipletests``).

    ``method`` is "holm", "bonferroni", "fdr_bh" (any multipletests name works) or "none"
    (unadjusted p-values, each compared with alpha).
    None entries (tests that could not be run) are left out of the family and keep
    None as adjusted p-value and False as reject.
    """
    ps = list(pvalues)
    idx = [i for i, p in enumerate(ps) if p is not None]
    adj: list[float | None] = [None] * len(ps)
    rej = [False] * len(ps)
    if idx and method == "none":  # the spec's "no correction": each test at alpha on its own
        for i in idx:
            adj[i], rej[i] = num(ps[i]), bool(float(ps[i]) <= alpha)
    elif idx:
        refreeze()  # multipletests(method="holm") runs gc.collect(); see _runtime
        r, pa, _, _ = multipletests([float(ps[i]) for i in idx], alpha=alpha, method=method)
        for j, i in enumerate(idx):
            adj[i], rej[i] = num(pa[j]), bool(r[j])
    return {"method": method, "alpha": alpha, "m": len(idx), "p": [num(p) for p in ps], "p_adjusted": adj,
            "reject": rej}


def holm(pvalues: Sequence[float | None], alpha: float = 0.05) -> dict[str, Any]:
    """Holm-Bonferroni step-down adjustment; see :func:`adjust`."""
    return adjust(pvalues, "holm", alpha)
