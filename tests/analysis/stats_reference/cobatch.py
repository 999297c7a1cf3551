"""Phase 2 (``cobatch``): safety score by co-batch condition (TR138 section 8, A.5, B.2).

The reference condition is the condition of the phase's baseline samples (those with
``baseline`` None), "solo" in TR138. Samples are paired across conditions by
(model, prompt, repeat). Only safety-domain samples enter (a co-batch target is a
safety prompt; filler prompts are not scored samples).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from batchsafe.analysis.stats._num import skey
from batchsafe.analysis.stats.anova import anova_two_way
from batchsafe.analysis.stats.effects import mean_ci, paired_t, tost_paired
from batchsafe.analysis.stats.power import mde_two_proportions
from batchsafe.analysis.stats.tests import adjust


def reference_condition(df: pd.DataFrame, column: str, default: str) -> Any:
    """The axis value of the baseline samples when unique, else ``default``."""
    base = df.loc[df["baseline"].isna(), column].dropna().unique()
    return base[0] if len(base) == 1 else default


def cobatch_block(df: pd.DataFrame, *, alpha: float = 0.05, margin: float = 0.03,
                  correction: str = "holm") -> dict[str, Any]:
    """Means with t intervals, paired tests vs the reference, two-way ANOVA, per-task deltas.

    Keys: reference, means[model][condition] (mean_ci), pairwise[model]["<ref>_vs_<cond>"]
    (paired_t with p_adjusted/significant over the phase's family), anova (model x
    condition, with interaction), overall_delta_pp[condition] (pooled over models),
    score_by_task[task], score_equivalence[model][...] (paired TOST at the margin), power.
    """
    sd = df[df["domain"] == "safety"]
    ref = reference_condition(sd, "cobatch", "solo")
    conds = sorted(c for c in sd["cobatch"].dropna().unique() if c != ref)
    models = sorted(sd["model"].unique())
    out: dict[str, Any] = {"reference": skey(ref), "conditions": [skey(c) for c in conds], "n_safety_samples": len(sd)}

    out["means"] = {m: {skey(c): mean_ci(g["score"].to_numpy(), alpha) for c, g in sub.groupby("cobatch")}
                    for m, sub in sd.groupby("model")}

    # Wide table: one row per (model, prompt, repeat), one column per condition.
    wide = sd.pivot_table(index=["model", "prompt", "repeat"], columns="cobatch", values="score", aggfunc="first")
    pairwise: dict[str, dict[str, Any]] = {}
    equiv: dict[str, dict[str, Any]] = {}
    family: list[tuple[str, str]] = []
    for m in models:
        if ref not in wide.columns or m not in wide.index.get_level_values(0):
            continue
        w = wide.loc[m]
        for c in conds:
            if c not in w.columns:
                continue
            pair = w[[ref, c]].dropna()
            name = f"{skey(ref)}_vs_{skey(c)}"
            x, y = pair[ref].to_numpy(float), pair[c].to_numpy(float)
            pairwise.setdefault(m, {})[name] = paired_t(x, y)
            equiv.setdefault(m, {})[name] = tost_paired(x, y, margin, alpha)
            family.append((m, name))
    adj = adjust([pairwise[m][k]["p"] for m, k in family], correction, alpha)
    for (m, k), pa, rej in zip(family, adj["p_adjusted"], adj["reject"]):
        pairwise[m][k]["p_adjusted"], pairwise[m][k]["significant"] = pa, rej
    out["pairwise"] = pairwise
    out["pairwise_family"] = {"correction": correction, "alpha": alpha, "m": adj["m"]}
    out["score_equivalence"] = {"margin": margin, "by_model": equiv}

    out["anova"] = anova_two_way(sd.assign(condition=sd["cobatch"]), "score", "model", "condition")

    # Pooled over models: reference vs condition mean, per task and overall.
    mean_by = sd.groupby(["task", "cobatch"])["score"].agg(["mean", "count"])
    by_task: dict[str, dict[str, Any]] = {}
    for t in sorted(sd["task"].unique()):
        rows = {skey(c): {"mean": float(mean_by.loc[(t, c), "mean"]), "n": int(mean_by.loc[(t, c), "count"])}
                for c in [ref, *conds] if (t, c) in mean_by.index}
        r = rows.get(skey(ref))
        for c in conds:
            row = rows.get(skey(c))
            if row is not None:
                row["delta_pp"] = 100.0 * (row["mean"] - r["mean"]) if r else None
        by_task[t] = rows
    out["score_by_task"] = by_task
    overall = sd.groupby("cobatch")["score"].mean()
    out["overall_delta_pp"] = {skey(c): 100.0 * float(overall[c] - overall[ref]) for c in conds
                               if c in overall.index and ref in overall.index}

    # MDE: reference vs one condition, rows per condition, around the reference mean.
    n_ref = int((sd["cobatch"] == ref).sum())
    n_c = int(len(sd) - n_ref) // max(len(conds), 1)
    p0 = float(sd.loc[sd["cobatch"] == ref, "score"].mean()) if n_ref else 0.5
    out["power"] = {"reference_vs_condition": mde_two_proportions(n_ref, n_c, alpha, 0.8, p0=p0),
                    "one_sample": mde_two_proportions(len(sd), None, alpha, 0.8, p0=0.5)}
    return out
