"""Tests and effect sizes on scores: means, t-tests, Cohen's d, correlation, regression, kappa.

Same contract as :mod:`analysis.stats.tests`: inputs travel with the outputs, floats are
finite or None, degenerate inputs return a defined result with a ``note``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps
from statsmodels.stats.inter_rater import cohens_kappa as _sm_kappa
from statsmodels.stats.weightstats import DescrStatsW, ttost_paired

from ._memo import memo
from ._num import num, quiet


def _arr(x: Sequence[float]) -> np.ndarray:
    return np.asarray(x, dtype=float)


@memo
def mean_ci(x: Sequence[float], alpha: float = 0.05) -> dict[str, Any]:
    """Mean with a Student-t interval (``statsmodels`` ``DescrStatsW.tconfint_mean``).

    n = 0: mean None; n = 1: no interval (note); zero spread: the interval is the point.
    """
    a = _arr(x)
    n = int(a.size)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "lo": None, "hi": None, "alpha": alpha, "note": "n=0"}
    mean = float(a.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "sd": None, "lo": None, "hi": None, "alpha": alpha,
                "note": "n=1: no interval"}
    sd = float(a.std(ddof=1))
    if np.ptp(a) == 0:
        return {"n": n, "mean": mean, "sd": 0.0, "lo": mean, "hi": mean, "alpha": alpha, "note": "zero variance"}
    with quiet():
        lo, hi = DescrStatsW(a).tconfint_mean(alpha=alpha)
    return {"n": n, "mean": mean, "sd": sd, "lo": num(lo), "hi": num(hi), "alpha": alpha}


@memo
def cohens_d(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Cohen's d for two independent samples: (mean_a - mean_b) / pooled SD.

    Pooled SD = sqrt(((n_a - 1) var_a + (n_b - 1) var_b) / (n_a + n_b - 2)), ddof 1.
    Written out because neither scipy nor statsmodels has the plain d (statsmodels'
    ``effectsize_smd`` returns Hedges' bias-corrected g). Zero pooled SD: d is 0.0 when
    the means are equal, else None (an infinite standardized difference), with a note.
    """
    x, y = _arr(a), _arr(b)
    out: dict[str, Any] = {"n_a": int(x.size), "n_b": int(y.size),
                           "mean_a": num(x.mean()) if x.size else None, "mean_b": num(y.mean()) if y.size else None}
    if x.size == 0 or y.size == 0 or x.size + y.size < 3:
        return {**out, "difference": None, "sd_pooled": None, "d": None, "note": "too few observations"}
    diff = float(x.mean() - y.mean())
    va = float(x.var(ddof=1)) if x.size > 1 else 0.0
    vb = float(y.var(ddof=1)) if y.size > 1 else 0.0
    sp = float(np.sqrt(((x.size - 1) * va + (y.size - 1) * vb) / (x.size + y.size - 2)))
    out.update(difference=diff, sd_pooled=sp)
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        out["sd_pooled"] = 0.0
        return {**out, "d": 0.0 if diff == 0.0 else None, "note": "zero pooled variance"}
    return {**out, "d": diff / sp}


@memo
def paired_t(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """Paired t-test of y against x (``scipy.stats.ttest_rel(y, x)``) with Cohen's d.

    ``delta`` = mean(y - x) (condition minus reference). ``d`` = delta /
    sqrt((var_x + var_y) / 2), the average-variance d ("d_av"): the standardizer is the
    SD of the two conditions, not of the differences. That is the definition that
    reproduces TR138 A.5 (llama3.2-1b solo vs adversarial: delta -1/107, d -0.019;
    dividing by the SD of the differences would give -0.097).

    Degenerate: no differences at all -> t 0.0, p 1.0, d 0.0 (note); constant non-zero
    differences -> t and p None (the t statistic is infinite; note); n < 2 -> p 1.0.
    """
    a, b = _arr(x), _arr(y)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.size} vs {b.size}")
    n = int(a.size)
    out: dict[str, Any] = {"n": n, "mean_x": num(a.mean()) if n else None, "mean_y": num(b.mean()) if n else None}
    if n < 2:
        return {**out, "delta": num(b.mean() - a.mean()) if n else None, "t": None, "df": max(n - 1, 0), "p": 1.0,
                "d": None, "note": "n<2: no test"}
    diff = b - a
    delta = float(diff.mean())
    sd_x, sd_y = float(a.std(ddof=1)), float(b.std(ddof=1))
    s_av = float(np.sqrt((sd_x**2 + sd_y**2) / 2.0))
    out.update(delta=delta, sd_x=sd_x, sd_y=sd_y, sd_diff=float(diff.std(ddof=1)), df=n - 1)
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        d = 0.0 if delta == 0.0 else None
    else:
        d = delta / s_av
    out["d"] = d
    if not diff.any():
        return {**out, "t": 0.0, "p": 1.0, "d": 0.0, "note": "no differences"}
    if np.ptp(diff) == 0:  # exact test: the SD of equal floats can come out as ~1e-17
        return {**out, "t": None, "p": None, "note": "constant non-zero differences: t undefined (infinite)"}
    res = sps.ttest_rel(b, a)
    return {**out, "t": num(res.statistic), "p": num(res.pvalue)}


@memo
def tost_paired(x: Sequence[float], y: Sequence[float], margin: float, alpha: float = 0.05) -> dict[str, Any]:
    """Paired equivalence test of y - x within +/- margin (``statsmodels`` ``ttost_paired``).

    Zero variance of the differences: equivalent exactly when |mean difference| < margin,
    with p 0.0 or 1.0 (the limits of the one-sided t tests) and a note.
    """
    a, b = _arr(x), _arr(y)
    n = int(a.size)
    out: dict[str, Any] = {"n": n, "margin": margin, "alpha": alpha}
    if n < 2:
        return {**out, "delta": None, "p": 1.0, "equivalent": False, "note": "n<2: no test"}
    diff = b - a
    delta = float(diff.mean())
    out["delta"] = delta
    if np.ptp(diff) == 0:  # exact test: the SD of equal floats can come out as ~1e-17
        eq = abs(delta) < margin
        return {**out, "p": 0.0 if eq else 1.0, "equivalent": eq, "note": "zero variance of differences"}
    with quiet():
        p, _, _ = ttost_paired(b, a, -margin, margin)
    p = num(p)
    return {**out, "p": 1.0 if p is None else p, "equivalent": p is not None and p < alpha}


@memo
def pearson(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """Pearson correlation (``scipy.stats.pearsonr``).

    Fewer than 2 pairs or a constant input: r 0.0, p 1.0 with a note (the correlation
    is undefined; reporting "no linear association" is what TR138 prints for such rows).
    """
    a, b = _arr(x), _arr(y)
    n = int(a.size)
    if n < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return {"n": n, "r": 0.0, "p": 1.0, "note": "constant input or n<2: correlation undefined"}
    with quiet():
        res = sps.pearsonr(a, b)
    return {"n": n, "r": num(res.statistic), "p": num(res.pvalue)}


@memo
def linregress(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """Least-squares line y = intercept + slope * x (``scipy.stats.linregress``).

    n < 2 or constant x: slope None (note). Constant y: slope 0.0, r and r2 0.0, p 1.0
    (scipy returns NaN for r). Two points: an exact fit, p None (note).
    """
    a, b = _arr(x), _arr(y)
    n = int(a.size)
    if n < 2 or np.ptp(a) == 0:
        return {"n": n, "slope": None, "intercept": None, "r": None, "r2": None, "p": None, "stderr": None,
                "note": "n<2 or constant x: slope undefined"}
    if np.ptp(b) == 0:
        return {"n": n, "slope": 0.0, "intercept": float(b[0]), "r": 0.0, "r2": 0.0, "p": 1.0, "stderr": 0.0,
                "note": "constant y"}
    with quiet():
        res = sps.linregress(a, b)
    r = num(res.rvalue)
    out = {"n": n, "slope": num(res.slope), "intercept": num(res.intercept), "r": r,
           "r2": None if r is None else r * r, "p": num(res.pvalue), "stderr": num(res.stderr)}
    if n == 2:
        out.update(p=None, stderr=None, note="two points: exact fit")
    return out


def cohen_kappa(table: Sequence[Sequence[int]] | None = None, a: Sequence[Any] | None = None,
                b: Sequence[Any] | None = None) -> dict[str, Any]:
    """Cohen's kappa (``statsmodels.stats.inter_rater.cohens_kappa``) from a square table
    (rows rater a, columns rater b) or from two equal-length label lists.

    The one Cohen's kappa of batchsafe (the LLM-judge agreement and the adjudication
    summary use it too), with one rule for the degenerate table: when every rating of
    both raters is one and the same label, chance agreement is 1 and kappa is 0/0, so
    ``kappa`` is None (undefined, not 1.0) with a note; ``agreement`` is still reported.
    Otherwise ``kappa`` with its asymptotic 95 % interval (``ci_low``, ``ci_high``).
    No items at all: ``kappa`` and ``agreement`` None, note ``n=0``.
    """
    labels: list[str] | None = None
    if table is None:
        if a is None or b is None or len(a) != len(b):
            raise ValueError("give a table or two label lists of equal length")
        labels = sorted({str(v) for v in a} | {str(v) for v in b})
        pos = {lab: i for i, lab in enumerate(labels)}
        t = np.zeros((len(labels), len(labels)))
        for u, v in zip(a, b):
            t[pos[str(u)], pos[str(v)]] += 1
    else:
        t = np.asarray(table, dtype=float)
    n = float(t.sum())
    out: dict[str, Any] = {"n": int(n), "table": t.astype(int).tolist()}
    if labels is not None:
        out["labels"] = labels
    if n == 0:
        return {**out, "kappa": None, "agreement": None, "note": "n=0"}
    agreement = float(np.trace(t) / n)
    expected = float((t.sum(axis=0) * t.sum(axis=1)).sum() / n**2)
    if expected >= 1.0:
        return {**out, "kappa": None, "agreement": agreement, "expected_agreement": expected,
                "note": "chance agreement is 1: kappa undefined"}
    with quiet():
        res = _sm_kappa(t)
    return {**out, "kappa": num(res.kappa), "ci_low": num(res.kappa_low), "ci_high": num(res.kappa_upp),
            "agreement": agreement, "expected_agreement": expected}
