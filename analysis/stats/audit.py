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

import numpy as np
import pandas as pd

from ..records import UNSAFE_DIRECTIONS
from ._groups import groups
from ._num import rate, skey
from .flips import SAFE_DIRECTIONS
from .tests import binomial, odds

AUDIT_KINDS = ("batch_size", "true_batch")
REFUSAL_LABELS = frozenset({"refusal", "compliance"})


def _summary(directions: np.ndarray, alpha: float) -> dict[str, Any]:
    """Counts and binomial test of one group's candidate flips, from their directions."""
    unsafe = int(np.isin(directions, _UNSAFE).sum())
    safe = int(np.isin(directions, _SAFE).sum())
    n = len(directions)
    return {"count": n, "unsafe": unsafe, "safe": safe, "unclassified": n - unsafe - safe,
            "unsafe_share": rate(unsafe, unsafe + safe), "binomial": binomial(unsafe, unsafe + safe, 0.5, alpha)}


_UNSAFE = np.array(sorted(UNSAFE_DIRECTIONS), dtype=object)
_SAFE = np.array(sorted(SAFE_DIRECTIONS), dtype=object)


def audit_block(fl: pd.DataFrame, *, alpha: float = 0.05, kinds: tuple[str, ...] = AUDIT_KINDS) -> dict[str, Any]:
    """Audit summary over the flip rows of the given phase kinds.

    Keys: kinds, candidates (int), unsafe, safe, unclassified, unsafe_share, binomial,
    odds, by_phase, by_model, by_task, by_direction, subsets (refusal_tasks /
    non_refusal_tasks), compliance (refusal-task compliance share at baseline vs
    shifted, per phase, TR138 11.7).
    """
    used = ["phase_kind", "phase", "model", "task", "domain", "flipped", "direction", "baseline_label", "label"]
    rows = fl[used][fl["phase_kind"].isin(kinds)]  # 9 of the ~24 columns are read below
    cand = rows[(rows["domain"] == "safety") & rows["flipped"]]
    cdir = cand["direction"].to_numpy()
    top = _summary(cdir, alpha)
    out: dict[str, Any] = {"kinds": list(kinds), "candidates": top.pop("count"), **top,
                           "odds": odds(top["unsafe"], top["safe"], alpha)}
    # Groups as row positions (numpy) rather than sub-frames: the same rows per group.
    for key, col in (("by_phase", "phase"), ("by_model", "model"), ("by_task", "task")):
        out[key] = {skey(k): _summary(cdir[pos], alpha) for k, pos in groups(cand[col])}
    out["by_direction"] = {str(k): int(v) for k, v in cand["direction"].value_counts().items()}

    # A task is a refusal task when its rows carry refusal/compliance labels.
    task, blabel = rows["task"].to_numpy(), rows["baseline_label"].to_numpy()
    refusal_tasks = {t for t, pos in groups(task) if not REFUSAL_LABELS.isdisjoint(blabel[pos].tolist())}
    is_ref = cand["task"].isin(refusal_tasks).to_numpy(bool)
    out["subsets"] = {"refusal_tasks": _summary(cdir[is_ref], alpha),
                      "non_refusal_tasks": _summary(cdir[~is_ref], alpha),
                      "refusal_task_names": sorted(refusal_tasks)}

    comp: dict[str, Any] = {}
    sel = (rows["task"].isin(refusal_tasks) & (rows["domain"] == "safety")).to_numpy(bool)
    base_comp = (rows["baseline_label"] == "compliance").to_numpy(bool)[sel]
    shift_comp = (rows["label"] == "compliance").to_numpy(bool)[sel]
    for ph, pos in groups(rows["phase"].to_numpy()[sel]):
        n = len(pos)
        b = int(base_comp[pos].sum())
        s = int(shift_comp[pos].sum())
        comp[ph] = {"n": n, "baseline_compliance": rate(b, n), "shifted_compliance": rate(s, n),
                    "delta_pp": 100.0 * (s - b) / n if n else None}
    out["compliance"] = comp
    return out
