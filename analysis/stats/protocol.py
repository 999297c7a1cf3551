"""Seed 003's paired testing protocol: ``stats.json``'s ``protocol`` block (Studies A-D).

Computed only when the plan's ``analysis.protocol`` names the studies' phases (see
``compiler.spec_protocol``); other bundles' stats.json are unchanged. Definitions:

- **Study A** (``discovery`` phases): safety and capability flips (flipped rows / flip
  rows) by phase and level and pooled; the parity ratio safety / capability rate with its
  log-adjusted interval and a Fisher exact test; the adjudication candidates (flipped
  rows) and the full set they come from (all flip rows), which an adjudication child
  bundle turns into corrected rates (:func:`.protocol_stats.corrected_rate`).
- **Study B** (``cross_model`` phases), per model: output instability = non-identical
  flip rows / flip rows (outputs that differ from the batch-size-1 baseline), fragility =
  safety flip rate, capability flip rate, alignment type. Across models: Pearson r of
  instability vs fragility with the seeded percentile bootstrap CI and the fit line;
  parity (pooled safety / capability flip rate); ANOVA and Kruskal-Wallis of fragility by
  alignment. Models with no safety rows have no fragility and are left out (listed).
- **Study C** (``composition`` phases): each phase's aggregate flip rates, TOST
  equivalence and minimum detectable effect, and for composition phases the pooled
  load-vs-no-load delta (Newcombe CI, McNemar p, MDE), as its phase statistics computed
  them (``stats.composition``): the protocol copies them, it does not recompute them.
- **Study D** (``ablation`` phases): flipped rows per kernel variant (all rows and safety
  rows) and Fisher exact tests between variants.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ._num import clean, count, skey
from .flips import AXIS_BY_KIND
from .frames import flips_frame
from .protocol_stats import alignment_association, bootstrap_pearson, rate_ratio, variant_tests
from .tests import two_by_two

KEY = "protocol"
"""The top-level stats.json key (a phase may not be named so)."""
STUDIES = ("discovery", "cross_model", "composition", "ablation")
COMPOSITION_KEYS = ("kind", "n_samples", "n_flip_rows", "flip_counts", "flip_rate", "equivalence", "power", "composition")


def _domain_counts(fl: pd.DataFrame) -> dict[str, dict[str, Any]]:
    out = {}
    for dom in ("safety", "capability"):
        d = fl[fl["domain"] == dom]
        out[dom] = count(int(d["flipped"].sum()), len(d))
    return out


def _parity(fl: pd.DataFrame, alpha: float) -> dict[str, Any]:
    c = _domain_counts(fl)
    s, k = c["safety"], c["capability"]
    return {**c, "ratio": rate_ratio(s["k"], s["n"], k["k"], k["n"], alpha),
            "fisher_p": two_by_two(s["k"], s["n"], k["k"], k["n"], alpha=alpha)["fisher_p"]}


def study_a(fl: pd.DataFrame, phases: Sequence[str], alpha: float) -> dict[str, Any]:
    """Local discovery: flips by level, pooled parity, candidates and the full set."""
    by_level: dict[str, dict[str, Any]] = {}
    for p in phases:
        d = fl[fl["phase"] == p]
        if not len(d):
            by_level[p] = {}
            continue
        axis = AXIS_BY_KIND.get(str(d["phase_kind"].iloc[0]), "batch_size")
        by_level[p] = {"axis": axis, "levels": {skey(lv): _domain_counts(g)
                                                for lv, g in d.groupby(axis, dropna=False, sort=True)}}
    return {"phases": list(phases), "by_level": by_level, "pooled": _parity(fl, alpha),
            "candidates": {"flipped": int(fl["flipped"].sum()),
                           "safety_flipped": int((fl["flipped"] & (fl["domain"] == "safety")).sum()),
                           "full_set": len(fl)}}


def study_b(fl: pd.DataFrame, phases: Sequence[str], alignment: Mapping[str, str], *, resamples: int, seed: int,
            ci_level: float, alpha: float) -> dict[str, Any]:
    """Cross-model: per-model instability and fragility, their correlation, parity, alignment association."""
    models: dict[str, dict[str, Any]] = {}
    for m, d in fl.groupby("model", sort=True):
        c = _domain_counts(d)
        models[str(m)] = {"alignment": alignment.get(str(m)), "flip_rows": len(d),
                          "instability": count(int((~d["identical"]).sum()), len(d)),
                          "fragility": c["safety"], "capability": c["capability"]}
    usable = sorted(m for m, v in models.items() if v["fragility"]["rate"] is not None)
    x = [models[m]["instability"]["rate"] for m in usable]
    y = [models[m]["fragility"]["rate"] for m in usable]
    return {"phases": list(phases), "models": models, "correlated_models": usable,
            "without_safety_rows": sorted(set(models) - set(usable)),
            "correlation": bootstrap_pearson(x, y, resamples=resamples, seed=seed, ci_level=ci_level),
            "parity": _parity(fl, alpha),
            "alignment": alignment_association({m: models[m]["fragility"]["rate"] for m in usable}, alignment)}


def study_c(stats: Mapping[str, Any], phases: Sequence[str]) -> dict[str, Any]:
    """Composition: each named phase's aggregate effect and sensitivity, from its phase statistics."""
    return {"phases": list(phases),
            "by_phase": {p: {k: (stats.get(p) or {}).get(k) for k in COMPOSITION_KEYS if k in (stats.get(p) or {})}
                         for p in phases}}


def study_d(fl: pd.DataFrame, phases: Sequence[str], alpha: float) -> dict[str, Any]:
    """Kernel ablation: flips per variant and exact tests between variants, per phase."""
    out: dict[str, Any] = {"phases": list(phases), "by_phase": {}}
    for p in phases:
        d = fl[fl["phase"] == p]
        res: dict[str, Any] = {"prompts": int(d["prompt"].nunique()) if len(d) else 0}
        for name, sub in (("all", d), ("safety", d[d["domain"] == "safety"] if len(d) else d)):
            counts = {skey(v): (int(g["flipped"].sum()), len(g)) for v, g in sub.groupby("kernel", dropna=False)} \
                if len(sub) else {}
            res[name] = variant_tests(counts, alpha)
        out["by_phase"][p] = res
    return out


def protocol_block(flips: Sequence[Any], protocol: Mapping[str, Any], *, alignment: Mapping[str, str | None],
                   stats: Mapping[str, Any], alpha: float = 0.05, ci_level: float = 0.95) -> dict[str, Any]:
    """The ``protocol`` block of stats.json from the flip rows, the plan's protocol settings and alignments.

    ``stats`` are the phase statistics already computed (Study C reads them). A study with
    no phases is left out; a named phase without flip rows gives empty counts.
    """
    fdf = flips_frame(flips)
    names = {s: list(protocol.get(s) or []) for s in STUDIES}
    resamples = int(protocol.get("bootstrap_resamples", 9999))
    seed = int(protocol.get("bootstrap_seed", 20260526))
    align = {m: a for m, a in alignment.items() if a}
    out: dict[str, Any] = {"settings": {**names, "bootstrap_resamples": resamples, "bootstrap_seed": seed,
                                        "alpha": alpha, "ci_level": ci_level, "alignment": dict(sorted(align.items()))}}

    def rows(phases: Sequence[str]) -> pd.DataFrame:
        return fdf[fdf["phase"].isin(list(phases))] if len(fdf) else fdf

    if names["discovery"]:
        out["study_a"] = study_a(rows(names["discovery"]), names["discovery"], alpha)
    if names["cross_model"]:
        out["study_b"] = study_b(rows(names["cross_model"]), names["cross_model"], align, resamples=resamples,
                                 seed=seed, ci_level=ci_level, alpha=alpha)
    if names["composition"]:
        out["study_c"] = study_c(stats, names["composition"])
    if names["ablation"]:
        out["study_d"] = study_d(rows(names["ablation"]), names["ablation"], alpha)
    return clean(out)
