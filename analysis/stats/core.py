"""``compute_stats``: every analysis that has data, as one JSON-ready dict (stats.json).

Layout (phase ids are the plan's, e.g. ``p1_batch_size``):

- ``meta``: alpha, tost_margin, correction, library versions, record counts;
- ``<phase>``: ``kind``, ``n_samples``, the flip block of :mod:`.flips` (``flip_rate``
  {safety, capability, ratio, difference}, ``identity``, ``flip_cells``, ``direction``,
  ``flip_tests``, ``divergence``, ``equivalence``, ``critical_level``, ``correlation``,
  ``power``) when the phase has flip rows; plus per kind:
  ``cobatch`` -> :mod:`.cobatch` keys (means, pairwise, anova, score_by_task, ...);
  ``quant_concurrency`` -> :mod:`.quant` keys (grid, anova{overall, per_model, quant,
  concurrency, interaction}, slopes, score_equivalence); ``true_batch`` ->
  ``flip_agreement_with``/``score_agreement_with`` {batch_size phase id: share} and
  ``agreement`` (cells); ``composition`` -> ``composition`` (:mod:`.composition`: each load
  level and the pooled levels against load 0: delta with its Newcombe CI, McNemar, MDE, flips);
  ``latency`` when samples carry latency_s;
- ``audit``: :mod:`.audit` over the batch_size and true_batch flip rows;
- ``cross_phase``: ``variance_sources``.

Nothing is rounded: every float is the library's full value (rounding is the report's
job). Keys are sorted and floats finite or None, so ``json.dumps(stats, sort_keys=True,
allow_nan=False)`` is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._groups import groups
from ._memo import memo_scope
from ._num import clean
from ._runtime import lean
from .audit import audit_block
from .cobatch import cobatch_block
from .composition import composition_block
from .cross import latency_block, variance_sources
from .flips import AXIS_BY_KIND, agreement, flip_block
from .frames import flips_frame, samples_frame
from .quant import quant_block
from .tests import CORRECTIONS

RESERVED = frozenset({"meta", "audit", "cross_phase"})


def _versions() -> dict[str, str]:
    import scipy
    import statsmodels

    return {"numpy": np.__version__, "pandas": pd.__version__, "scipy": scipy.__version__,
            "statsmodels": statsmodels.__version__}


def _phase_kinds(df: pd.DataFrame) -> dict[str, Any]:
    """``df.groupby("phase")["phase_kind"].first()`` as a dict: each phase's first non-missing kind."""
    kind = df["phase_kind"].to_numpy()
    out: dict[str, Any] = {}
    for phase, pos in groups(df["phase"]):
        first = kind[pos[0]]
        if first is None or first != first:  # a missing kind first: pandas' rule, via pandas
            return df.groupby("phase")["phase_kind"].first().to_dict()
        out[phase] = first
    return out


def compute_stats(scored: Sequence[Any], flips: Sequence[Any], alpha: float = 0.05, tost_margin: float = 0.03,
                  correction: str = "holm") -> dict[str, Any]:
    """Run every phase analysis that has data over ScoredSample and FlipRow records.

    ``alpha``: significance level for tests, intervals (1 - alpha) and corrections;
    ``tost_margin``: equivalence margin as a proportion (0.03 = +/-3 pp);
    ``correction``: multiplicity correction for each test family ("holm",
    "bonferroni", "fdr_bh").
    """
    with lean(), memo_scope():
        return _compute(scored, flips, alpha, tost_margin, correction)


def _compute(scored: Sequence[Any], flips: Sequence[Any], alpha: float, tost_margin: float,
             correction: str) -> dict[str, Any]:
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, not {correction!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), not {alpha!r}")
    sdf = samples_frame(scored)
    fdf = flips_frame(flips)
    kinds: dict[str, str] = {}
    for df in (sdf, fdf):
        if len(df):
            kinds.update(_phase_kinds(df))
    clash = sorted(set(kinds) & RESERVED)
    if clash:
        raise ValueError(f"phase ids {clash} clash with top-level stats keys {sorted(RESERVED)}")
    kw = {"alpha": alpha, "margin": tost_margin, "correction": correction}

    out: dict[str, Any] = {"meta": {"alpha": alpha, "tost_margin": tost_margin, "correction": correction,
                                    "n_samples": len(sdf), "n_flip_rows": len(fdf),
                                    "phases": dict(sorted(kinds.items())), "versions": _versions()}}
    by_phase_s = dict(tuple(sdf.groupby("phase"))) if len(sdf) else {}
    by_phase_f = dict(tuple(fdf.groupby("phase"))) if len(fdf) else {}
    empty_s, empty_f = sdf.iloc[:0], fdf.iloc[:0]
    for phase, kind in sorted(kinds.items()):
        sd, fl = by_phase_s.get(phase, empty_s), by_phase_f.get(phase, empty_f)
        axis = AXIS_BY_KIND.get(kind, "batch_size")
        res: dict[str, Any] = {"kind": kind, "n_samples": len(sd)}
        if len(fl):
            res.update(flip_block(fl, axis, **kw))
        if kind == "cobatch" and len(sd):
            res.update(cobatch_block(sd, **kw))
        elif kind == "quant_concurrency" and len(sd):
            res.update(quant_block(sd, **kw))
        elif kind == "true_batch" and len(fl):
            agree = {p: agreement(fl, by_phase_f[p], "batch_size") for p, k in sorted(kinds.items())
                     if k == "batch_size" and p in by_phase_f}
            res["agreement"] = agree
            res["flip_agreement_with"] = {p: a["flip_agreement"] for p, a in agree.items()}
            res["score_agreement_with"] = {p: a["score_agreement"] for p, a in agree.items()}
        elif kind == "composition":  # seed 003's Study C: each load level against load 0
            res["composition"] = composition_block(sd, fl if len(fl) else empty_f, alpha=alpha)
        lat = latency_block(sd, fl, axis) if len(sd) else None
        if lat is not None:
            res["latency"] = lat
        out[phase] = res
    if len(fdf):
        out["audit"] = audit_block(fdf, alpha=alpha)
    out["cross_phase"] = {"variance_sources": variance_sources(sdf, kinds) if len(sdf) else {}}
    return clean(out)
