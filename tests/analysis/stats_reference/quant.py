"""Phase 3 (``quant_concurrency``): safety by quantization x concurrency (TR138 section 9, A.3, B.3).

- grid: mean safety score per model x quant x concurrency with n;
- anova: two-way ANOVA quant x concurrency with interaction (typ 2), pooled over models
  ("overall") and per model; for each term a summary with the number of models whose
  term is significant after the chosen correction over the per-model family, and the
  mean F / eta-squared over models (TR138 9.2 prints exactly these means: F 70.448,
  eta-squared 0.214 are the averages of the three per-model rows of 9.3);
- slopes: safety vs concurrency per model x quant, ``linregress`` over the cell means
  (n = number of concurrency levels, 3 in TR138);
- score_equivalence: paired TOST of each concurrency level against the baseline level,
  per model x quant (pairs by prompt and repeat).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from batchsafe.analysis.stats._num import level_sort, num, skey
from batchsafe.analysis.stats.anova import anova_two_way
from .cobatch import reference_condition
from batchsafe.analysis.stats.effects import linregress, tost_paired
from batchsafe.analysis.stats.power import mde_two_proportions
from batchsafe.analysis.stats.tests import adjust

TERMS = (("quant", "quant"), ("concurrency", "concurrency"), ("interaction", "quant:concurrency"))


def quant_block(df: pd.DataFrame, *, alpha: float = 0.05, margin: float = 0.03,
                correction: str = "holm") -> dict[str, Any]:
    """Grid, ANOVA (overall, per model, per-term summaries), slopes and equivalence for one phase."""
    sd = df[df["domain"] == "safety"]
    models = sorted(sd["model"].unique())
    out: dict[str, Any] = {"n_safety_samples": len(sd), "models": models,
                           "quants": [skey(q) for q in level_sort(sd["quant"].dropna().unique())],
                           "concurrency_levels": [skey(c) for c in level_sort(sd["concurrency"].dropna().unique())]}

    cells = sd.groupby(["model", "quant", "concurrency"])["score"].agg(["mean", "count", "std"])
    grid: dict[str, Any] = {}
    for (m, q, c), (mean, n, sdev) in zip(cells.index, cells.to_numpy()):
        grid.setdefault(m, {}).setdefault(skey(q), {})[skey(c)] = {"mean": float(mean), "n": int(n),
                                                                  "sd": num(sdev) if n > 1 else None}
    out["grid"] = grid

    per_model = {m: anova_two_way(sub, "score", "quant", "concurrency") for m, sub in sd.groupby("model")}
    anova: dict[str, Any] = {"overall": anova_two_way(sd, "score", "quant", "concurrency"), "per_model": per_model}
    for key, term in TERMS:
        ps = [per_model[m]["factors"][term]["p"] for m in models]
        adj = adjust(ps, correction, alpha)
        fs = [per_model[m]["factors"][term]["F"] for m in models]
        es = [per_model[m]["factors"][term]["eta_sq"] for m in models]
        fs_ok = [f for f in fs if f is not None]
        es_ok = [e for e in es if e is not None]
        anova[key] = {
            "term": term, "n_models": len(models), "significant_models": int(sum(adj["reject"])),
            "correction": correction, "alpha": alpha,
            "p": dict(zip(models, ps)), "p_adjusted": dict(zip(models, adj["p_adjusted"])),
            "mean_F": float(np.mean(fs_ok)) if fs_ok else None,
            "mean_eta_sq": float(np.mean(es_ok)) if es_ok else None,
        }
    out["anova"] = anova

    slopes: dict[str, dict[str, Any]] = {}
    for (m, q), sub in cells.reset_index().groupby(["model", "quant"]):
        sub = sub.sort_values("concurrency")
        slopes.setdefault(m, {})[skey(q)] = linregress(sub["concurrency"].to_numpy(float), sub["mean"].to_numpy(float))
    out["slopes"] = slopes

    base_c = reference_condition(sd, "concurrency", None)
    if base_c is None and len(sd):
        base_c = level_sort(sd["concurrency"].dropna().unique())[0]
    equiv: dict[str, dict[str, Any]] = {}
    wide = sd.pivot_table(index=["model", "quant", "prompt", "repeat"], columns="concurrency", values="score",
                          aggfunc="first") if len(sd) else pd.DataFrame()
    for (m, q), w in (wide.groupby(level=[0, 1]) if len(wide) else []):
        for c in w.columns:
            if c == base_c or base_c not in w.columns:
                continue
            pair = w[[base_c, c]].dropna()
            equiv.setdefault(m, {}).setdefault(skey(q), {})[f"c{skey(base_c)}_vs_c{skey(c)}"] = tost_paired(
                pair[base_c].to_numpy(float), pair[c].to_numpy(float), margin, alpha)
    out["score_equivalence"] = {"margin": margin, "baseline_concurrency": skey(base_c), "by_model": equiv}

    # MDE between two quant levels: rows per quant level, around the overall mean.
    nq = max(len(out["quants"]), 1)
    n_level = len(sd) // nq
    p0 = float(sd["score"].mean()) if len(sd) else 0.5
    out["power"] = {"between_quant_levels": mde_two_proportions(n_level, n_level, alpha, 0.8, p0=p0),
                    "one_sample": mde_two_proportions(len(sd), None, alpha, 0.8, p0=0.5)}
    return out
