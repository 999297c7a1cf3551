"""Audit layer: direction of behaviour-changing safety rows (TR138 section 11, Appendix C).

Candidates are flipped safety rows of the audited phase kinds (TR138 5.3: "all rows from
Phases 1 and 4 where the safety classification changed", i.e. ``batch_size`` and
``true_batch``). A candidate is unsafe when its direction weakens safety
(refusal_to_compliance, safety_weakened), safe when it strengthens it
(compliance_to_refusal, safety_strengthened); anything else is unclassified and stays
out of the directional tests.

For every grouping: the unsafe share with its Wilson CI and an exact two-sided binomial
test against 0.5; overall also the odds unsafe:safe with a Woolf (log) CI
(:func:`~analysis.stats.tests.odds`: 26 vs 18 -> 1.44 [0.79, 2.63], TR138 11.2).
Refusal tasks are those whose labels are refusal/compliance (C.3 splits on them).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from batchsafe.analysis.records import UNSAFE_DIRECTIONS
from batchsafe.analysis.stats._num import rate, skey
from .flips import SAFE_DIRECTIONS
from batchsafe.analysis.stats.tests import binomial, odds

AUDIT_KINDS = ("batch_size", "true_batch")
REFUSAL_LABELS = frozenset({"refusal", "compliance"})


def _summary(c: pd.DataFrame, alpha: float) -> dict[str, Any]:
    unsafe = int(c["direction"].isin(UNSAFE_DIRECTIONS).sum())
    safe = int(c["direction"].isin(SAFE_DIRECTIONS).sum())
    return {"count": len(c), "unsafe": unsafe, "safe": safe, "unclassified": len(c) - unsafe - safe,
            "unsafe_share": rate(unsafe, unsafe + safe), "binomial": binomial(unsafe, unsafe + safe, 0.5, alpha)}


def audit_block(fl: pd.DataFrame, *, alpha: float = 0.05, kinds: tuple[str, ...] = AUDIT_KINDS) -> dict[str, Any]:
    """Audit summary over the flip rows of the given phase kinds.

    Keys: kinds, candidates (int), unsafe, safe, unclassified, unsafe_share, binomial,
    odds, by_phase, by_model, by_task, by_direction, subsets (refusal_tasks /
    non_refusal_tasks), compliance (refusal-task compliance share at baseline vs
    shifted, per phase, TR138 11.7).
    """
    rows = fl[fl["phase_kind"].isin(kinds)]
    cand = rows[(rows["domain"] == "safety") & rows["flipped"]]
    top = _summary(cand, alpha)
    out: dict[str, Any] = {"kinds": list(kinds), "candidates": top.pop("count"), **top,
                           "odds": odds(top["unsafe"], top["safe"], alpha)}
    for key, col in (("by_phase", "phase"), ("by_model", "model"), ("by_task", "task")):
        out[key] = {skey(k): _summary(g, alpha) for k, g in cand.groupby(col)}
    out["by_direction"] = {str(k): int(v) for k, v in cand["direction"].value_counts().items()}

    # A task is a refusal task when its rows carry refusal/compliance labels.
    labels = rows.groupby("task")["baseline_label"].agg(lambda s: bool(set(s) & REFUSAL_LABELS))
    refusal_tasks = {t for t, is_ref in labels.items() if is_ref}
    is_ref = cand["task"].isin(refusal_tasks)
    out["subsets"] = {"refusal_tasks": _summary(cand[is_ref], alpha),
                      "non_refusal_tasks": _summary(cand[~is_ref], alpha),
                      "refusal_task_names": sorted(refusal_tasks)}

    comp: dict[str, Any] = {}
    ref_rows = rows[rows["task"].isin(refusal_tasks) & (rows["domain"] == "safety")]
    for ph, g in ref_rows.groupby("phase"):
        n = len(g)
        b = int((g["baseline_label"] == "compliance").sum())
        s = int((g["label"] == "compliance").sum())
        comp[ph] = {"n": n, "baseline_compliance": rate(b, n), "shifted_compliance": rate(s, n),
                    "delta_pp": 100.0 * (s - b) / n if n else None}
    out["compliance"] = comp
    return out
