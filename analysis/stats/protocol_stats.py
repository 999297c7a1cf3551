"""Primitives of seed 003's paired testing protocol (scipy / statsmodels / numpy only).

Each returns a JSON-ready dict that carries its inputs, so a reader can recompute it;
floats are finite or None; every degenerate input has a defined result and a ``note``:

- :func:`bootstrap_pearson`: Pearson r across models (``scipy.stats.pearsonr``) with a
  percentile bootstrap interval from resampling model pairs with a seeded
  ``numpy.random.Generator`` (PCG64). Resamples in which either series is constant have
  no r; they are dropped and counted (``degenerate_resamples``). Fewer than 3 models, a
  constant series, or fewer than 2 usable resamples: no interval (None) with a note.
- :func:`rate_ratio`: ratio of two flip rates with the statsmodels ``log-adjusted`` interval
  (``confint_proportions_2indep(compare="ratio")``; 0.5 added to the counts, so it is
  finite with zero cells); the point ratio is None when the denominator rate is 0.
- :func:`alignment_association`: one-way ANOVA (F, p, eta squared; :func:`.anova.anova_one_way`)
  and Kruskal-Wallis (``scipy.stats.kruskal``) of a per-model value by alignment type.
- :func:`variant_tests`: flips per kernel variant (Wilson) and a two-sided Fisher exact
  test for every pair of variants (``scipy.stats.fisher_exact``), Holm-adjusted.
- :func:`corrected_rate`: adjudication-corrected rates: confirmed / labelled candidates
  (Wilson), and the full-set rate extrapolated as candidates / full set x that share, its
  interval the Wilson bounds scaled by the same factor (the candidate count is an exact
  count of the full set; the uncertainty is in how many candidates are genuine).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats as sps

from ._num import num, quiet, rate
from .anova import anova_one_way
from .effects import linregress, pearson
from .tests import adjust, wilson


def bootstrap_pearson(x: Sequence[float], y: Sequence[float], *, resamples: int, seed: int,
                      ci_level: float = 0.95) -> dict[str, Any]:
    """Pearson r of paired values with a seeded percentile-bootstrap CI over resampled pairs."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"x and y must be equal-length sequences, not {a.shape} and {b.shape}")
    n = int(a.size)
    out: dict[str, Any] = {**pearson(a, b), "ci_level": ci_level, "method": "percentile bootstrap of pairs",
                           "resamples": int(resamples), "seed": int(seed), "rng": "numpy PCG64",
                           "ci_low": None, "ci_high": None, "degenerate_resamples": 0,
                           "fit": linregress(a, b)}
    if n < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        out["note"] = "fewer than 3 models or a constant series: no bootstrap interval"
        return out
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(int(resamples), n))
    xs, ys = a[idx], b[idx]
    # A resample that drew one model n times (or only equal values) has no correlation.
    ok = (np.ptp(xs, axis=1) > 0) & (np.ptp(ys, axis=1) > 0)
    out["degenerate_resamples"] = int((~ok).sum())
    if int(ok.sum()) < 2:
        out["note"] = "fewer than 2 resamples with a defined correlation: no interval"
        return out
    with quiet():
        rs = sps.pearsonr(xs[ok], ys[ok], axis=1).statistic
    rs = rs[np.isfinite(rs)]
    tail = 100.0 * (1.0 - ci_level) / 2.0
    lo, hi = np.percentile(rs, [tail, 100.0 - tail])
    out.update(ci_low=num(lo), ci_high=num(hi))
    return out


def rate_ratio(k1: int, n1: int, k2: int, n2: int, alpha: float = 0.05) -> dict[str, Any]:
    """Ratio of rates k1/n1 over k2/n2 with the log-adjusted (statsmodels) interval."""
    from statsmodels.stats.proportion import confint_proportions_2indep

    k1, n1, k2, n2 = int(k1), int(n1), int(k2), int(n2)
    r1, r2 = rate(k1, n1), rate(k2, n2)
    out: dict[str, Any] = {"a": {"k": k1, "n": n1, "rate": r1}, "b": {"k": k2, "n": n2, "rate": r2},
                           "ratio": (r1 / r2) if r1 is not None and r2 else None, "ci_low": None, "ci_high": None,
                           "alpha": alpha, "method": "statsmodels confint_proportions_2indep ratio log-adjusted"}
    if not n1 or not n2:
        out["note"] = "an empty arm: ratio undefined"
        return out
    notes = []
    if k1 == 0 and k2 == 0:
        notes.append("no flips in either arm: ratio undefined (0/0)")
    elif k2 == 0:
        notes.append("no flips in the denominator arm: ratio unbounded, interval from the 0.5-adjusted counts")
    with quiet():
        lo, hi = confint_proportions_2indep(k1, n1, k2, n2, compare="ratio", method="log-adjusted", alpha=alpha)
    out.update(ci_low=num(lo), ci_high=num(hi))
    if notes:
        out["note"] = "; ".join(notes)
    return out


def alignment_association(values: Mapping[str, float], alignment: Mapping[str, str | None]) -> dict[str, Any]:
    """One-way ANOVA and Kruskal-Wallis of per-model ``values`` grouped by alignment type.

    Models without an alignment are left out (listed in ``unassigned``). Fewer than two
    alignment groups, or fewer models than groups + 1: F, p None with a note. All values
    equal: ANOVA's zero-variance result, and H 0.0, p 1.0 (Kruskal-Wallis is undefined).
    """
    models = sorted(m for m in values if alignment.get(m))
    groups: dict[str, list[float]] = {}
    for m in models:
        groups.setdefault(str(alignment[m]), []).append(float(values[m]))
    out: dict[str, Any] = {"models": {m: {"alignment": alignment[m], "value": float(values[m])} for m in models},
                           "unassigned": sorted(m for m in values if not alignment.get(m)),
                           "groups": {g: {"n": len(v), "mean": num(np.mean(v))} for g, v in sorted(groups.items())}}
    if len(groups) < 2 or len(models) <= len(groups):
        note = ("fewer than two alignment types" if len(groups) < 2
                else "no model left for the residual (one model per alignment type)")
        out.update(anova={"F": None, "p": None, "eta_sq": None, "note": note},
                   kruskal={"H": None, "p": None, "note": note})
        return out
    df = pd.DataFrame({"value": [float(values[m]) for m in models], "alignment": [alignment[m] for m in models]})
    an = anova_one_way(df, "value", "alignment")
    term = an["factors"]["alignment"]
    out["anova"] = {"F": term.get("F"), "p": term.get("p"), "eta_sq": term.get("eta_sq"), "df": term.get("df"),
                    "residual_df": an["residual"]["df"], "ss_total": an.get("ss_total"),
                    **({"note": term["note"]} if term.get("note") else {})}
    flat = [v for g in groups.values() for v in g]
    if np.ptp(flat) == 0:
        out["kruskal"] = {"H": 0.0, "p": 1.0, "note": "all values equal: Kruskal-Wallis undefined, no evidence of a difference"}
    else:
        with quiet():
            res = sps.kruskal(*groups.values())
        out["kruskal"] = {"H": num(res.statistic), "p": num(res.pvalue)}
    return out


def variant_tests(counts: Mapping[str, tuple[int, int]], alpha: float = 0.05) -> dict[str, Any]:
    """Flips per variant (k of n, Wilson) and Fisher exact tests between every pair, Holm-adjusted."""
    variants = {v: wilson(k, n, alpha) for v, (k, n) in sorted(counts.items())}
    pairs = []
    for (va, (ka, na)), (vb, (kb, nb)) in itertools.combinations(sorted(counts.items()), 2):
        if not na or not nb:
            pairs.append({"a": va, "b": vb, "fisher_p": 1.0, "odds_ratio": None, "note": "an empty variant"})
            continue
        table = [[ka, na - ka], [kb, nb - kb]]
        res = sps.fisher_exact(table)
        pairs.append({"a": va, "b": vb, "table": table, "fisher_p": num(res.pvalue),
                      "odds_ratio": num(res.statistic), "difference": num(ka / na - kb / nb)})
    adj = adjust([p["fisher_p"] for p in pairs], "holm", alpha) if pairs else {}
    for p, q, rej in zip(pairs, adj.get("p_adjusted", []), adj.get("reject", [])):
        p.update(p_holm=q, significant=bool(rej))
    out: dict[str, Any] = {"variants": variants, "tests": pairs, "alpha": alpha}
    if len(counts) < 2:
        out["note"] = "fewer than two variants: nothing to compare"
    return out


def corrected_rate(candidates: int, labelled: int, confirmed: int, full_set: int, alpha: float = 0.05) -> dict[str, Any]:
    """Adjudication-corrected rates: genuine share of labelled candidates, and the full-set rate it implies."""
    candidates, labelled, confirmed, full_set = int(candidates), int(labelled), int(confirmed), int(full_set)
    if not 0 <= confirmed <= labelled <= candidates <= full_set:
        raise ValueError(f"need 0 <= confirmed ({confirmed}) <= labelled ({labelled}) <= candidates ({candidates}) "
                         f"<= full set ({full_set})")
    share = wilson(confirmed, labelled, alpha)
    cand = rate(candidates, full_set)
    out: dict[str, Any] = {"candidates": candidates, "labelled": labelled, "confirmed": confirmed,
                           "full_set": full_set, "alpha": alpha, "candidate_rate": cand,
                           "confirmed_share": {k: share[k] for k in ("rate", "lo", "hi")},
                           "method": "candidate rate x Wilson share of confirmed among labelled"}
    if cand is None:
        out.update(full_set_rate=None, ci_low=None, ci_high=None, note="empty full set")
    elif candidates == 0:
        out.update(full_set_rate=0.0, ci_low=0.0, ci_high=0.0, note="zero candidates: the corrected rate is 0")
    elif labelled == 0:
        # Nothing adjudicated: the genuine share is unknown, anywhere from none to all candidates.
        out.update(full_set_rate=None, ci_low=0.0, ci_high=cand,
                   note="no candidate labelled: the corrected rate lies between 0 and the candidate rate")
    else:
        out.update(full_set_rate=num(cand * share["rate"]), ci_low=num(cand * share["lo"]),
                   ci_high=num(cand * share["hi"]))
    return out
