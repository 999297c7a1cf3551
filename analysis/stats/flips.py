"""Flip-registry analyses shared by every phase with flip rows (TR138 sections 7, 10.2-10.3, 19, 20).

A phase's flip rows are compared with their baselines along one axis (batch size for
``batch_size``/``true_batch``, the co-batch condition for ``cobatch``, concurrency for
``quant_concurrency``, the TP size for ``tensor_parallel``). Definitions:

- output identity: share of flip rows with ``identical`` (byte-identical to baseline);
- flip rate: share of flip rows with ``flipped``, per domain; ratio = safety rate /
  capability rate, None when the capability rate is 0 (the report's "--");
- direction shares: among flipped safety rows with a safety direction, the share in
  the unsafe directions (refusal_to_compliance, safety_weakened);
- disproportionality tests: per level (overall and per model) a 2x2 of safety flips vs
  capability flips (:func:`~analysis.stats.tests.two_by_two`); the family (all overall
  and per-model tests of the phase) is adjusted with the chosen correction on the
  Fisher exact p-values (the cells are rare events, so the chi-squared approximation
  is unreliable; chi2 and its p are reported alongside);
- divergence: Wilson CIs of the safety and capability flip rates per level; a level is
  "disproportionate" when the intervals do not overlap and safety lies above;
- critical level: the smallest level at which the safety flip-rate Wilson CI lies
  entirely above the capability flip-rate Wilson CI (the control arm) - TR138 20.2's
  "critical batch size by CI non-overlap". None when no level qualifies (the report
  finds none). The baseline level itself has no flip rows and is never a candidate;
- equivalence: TOST of safety vs capability flip rate within +/- margin.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from ..records import UNSAFE_DIRECTIONS
from ._groups import tally
from ._num import count, level_sort, num, rate, skey
from .effects import pearson
from .power import mde_two_proportions
from .tests import adjust, overlap, tost_two_proportions, two_by_two, wilson

SAFE_DIRECTIONS = frozenset({"compliance_to_refusal", "safety_strengthened"})
AXIS_BY_KIND = {"batch_size": "batch_size", "true_batch": "batch_size", "cobatch": "cobatch",
                "quant_concurrency": "concurrency", "kernel_ablation": "kernel", "repeat_floor": "repeat",
                "tensor_parallel": "tensor_parallel", "composition": "load"}
DOMAINS = ("safety", "capability")


def _ratio(s: float | None, c: float | None) -> float | None:
    return s / c if s is not None and c else None


def _counts(fl: pd.DataFrame, keys: list[str]) -> dict[tuple, dict[str, tuple[int, int]]]:
    """{group key: {domain: (flipped, n)}}, groups in order of first appearance.

    ``fl.groupby(keys + ["domain"], dropna=False, sort=False)["flipped"].agg(["sum", "count"])``
    as integer counts over numpy codes (:func:`._groups.tally`).
    """
    out: dict[tuple, dict[str, tuple[int, int]]] = {}
    for key, n, (k,) in tally([fl[c] for c in keys] + [fl["domain"]], fl["flipped"].to_numpy(bool), sort=False):
        out.setdefault(key[:-1], {})[key[-1]] = (k, n)
    return out


def _cell(dom: dict[str, tuple[int, int]]) -> dict[str, Any]:
    cell = {d: count(*dom.get(d, (0, 0))) for d in DOMAINS}
    cell["ratio"] = _ratio(cell["safety"]["rate"], cell["capability"]["rate"])
    return cell


def _tag(axis: str, level: Any) -> str:
    short = {"batch_size": "bs", "tensor_parallel": "tp"}.get(axis)
    return f"{short}{skey(level)}" if short else f"{axis}_{skey(level)}"


def flip_block(fl: pd.DataFrame, axis: str, *, alpha: float = 0.05, margin: float = 0.03,
               correction: str = "holm") -> dict[str, Any]:
    """All flip analyses of one phase's flip rows along ``axis`` (see the module docstring).

    Keys: axis, n_flip_rows, identity, flip_counts, flip_rate ({safety, capability, ratio,
    difference} as plain floats), flip_cells (by_model / by_level), direction,
    flip_by_task, flip_tests, divergence, equivalence, critical_level (numeric axes),
    correlation (per model: flips per baseline vs baseline score), power.
    """
    levels = level_sort(fl[axis].dropna().unique()) if len(fl) else []
    models = sorted(fl["model"].unique()) if len(fl) else []
    out: dict[str, Any] = {"axis": axis, "n_flip_rows": len(fl), "levels": [skey(v) for v in levels]}

    # Output identity.
    ident = fl["identical"].to_numpy(bool)
    by_model: dict[str, dict[str, Any]] = {}
    for (m, lv), n, (k,) in tally([fl["model"], fl[axis]], ident):
        by_model.setdefault(m, {})[skey(lv)] = count(k, n)
    out["identity"] = {"by_model": by_model,
                       "by_level": {skey(lv): count(k, n) for (lv,), n, (k,) in tally([fl[axis]], ident)},
                       "overall": count(int(ident.sum()), len(fl))}

    # Flip rates: aggregate, per level, per model x level.
    agg = _counts(fl, []).get((), {}) if len(fl) else {}
    agg_cell = _cell(agg)
    out["flip_counts"] = {d: agg_cell[d] for d in DOMAINS}
    s_rate, c_rate = agg_cell["safety"]["rate"], agg_cell["capability"]["rate"]
    out["flip_rate"] = {"safety": s_rate, "capability": c_rate, "ratio": agg_cell["ratio"],
                        "difference": (s_rate - c_rate) if s_rate is not None and c_rate is not None else None}
    per_level = _counts(fl, [axis]) if len(fl) else {}
    per_cell = _counts(fl, ["model", axis]) if len(fl) else {}
    lv_cells = {skey(k[0]): _cell(v) for k, v in per_level.items()}
    m_cells: dict[str, dict[str, Any]] = {}
    for (m, lv), v in per_cell.items():
        m_cells.setdefault(m, {})[skey(lv)] = _cell(v)
    out["flip_cells"] = {"by_level": lv_cells, "by_model": m_cells}

    # Direction of safety flips.
    safety = (fl["domain"] == "safety").to_numpy(bool)
    sf_mask = safety & fl["flipped"].to_numpy(bool)
    dcounts = {str(k): int(v) for k, v in Counter(fl["direction"].to_numpy()[sf_mask].tolist()).items()
               if k is not None and k == k}  # value_counts leaves missing values out
    unsafe = sum(v for k, v in dcounts.items() if k in UNSAFE_DIRECTIONS)
    safe = sum(v for k, v in dcounts.items() if k in SAFE_DIRECTIONS)
    out["direction"] = {"counts": dcounts, "flipped": int(sf_mask.sum()), "classified": unsafe + safe,
                        "unsafe": unsafe, "safe": safe, "unsafe_share": rate(unsafe, unsafe + safe)}

    # Per-task flip rate (pooled share; equals the mean over equal-sized cells).
    tk = tally([fl["task"], fl["domain"]], fl["flipped"].to_numpy(bool)) if len(fl) else []
    out["flip_by_task"] = {t: {"domain": d, **count(k, n)} for (t, d), n, (k,) in tk
                           if t == t and d == d}  # groupby's default dropna: no missing keys

    has_both = bool(agg.get("safety", (0, 0))[1] and agg.get("capability", (0, 0))[1])
    out["flip_tests"] = _tests(per_level, per_cell, axis, alpha, correction) if has_both else {
        "tests": {}, "note": "needs safety and capability flip rows"}
    out["divergence"] = _divergence(per_level, per_cell, alpha) if has_both else {}
    if has_both:
        numeric = axis in ("batch_size", "concurrency", "group_size", "repeat", "tensor_parallel")
        if numeric:
            out["critical_level"] = _critical(out["divergence"], levels, models)
        s, c = agg["safety"], agg["capability"]
        out["equivalence"] = {
            "margin": margin,
            "overall": tost_two_proportions(s[0], s[1], c[0], c[1], margin, alpha),
            "by_level": {skey(k[0]): tost_two_proportions(*v.get("safety", (0, 0)), *v.get("capability", (0, 0)),
                                                          margin, alpha) for k, v in per_level.items()},
        }
        out["power"] = {"safety_vs_capability": mde_two_proportions(s[1], c[1], alpha, 0.8, p0=c[0] / c[1]),
                        "one_sample_safety": mde_two_proportions(s[1], None, alpha, 0.8, p0=0.5)}
    elif agg.get("safety", (0, 0))[1]:
        out["power"] = {"one_sample_safety": mde_two_proportions(agg["safety"][1], None, alpha, 0.8, p0=0.5)}
    out["correlation"] = _correlation(fl)
    return out


def _tests(per_level: dict, per_cell: dict, axis: str, alpha: float, correction: str) -> dict[str, Any]:
    """Safety-vs-capability 2x2 per level (overall and per model), adjusted as one family."""
    tests: dict[str, dict[str, Any]] = {}
    for (lv,), dom in per_level.items():
        tests[f"overall_{_tag(axis, lv)}"] = {"model": None, "level": skey(lv),
                                             **two_by_two(*dom.get("safety", (0, 0)), *dom.get("capability", (0, 0)),
                                                          alpha=alpha)}
    for (m, lv), dom in per_cell.items():
        tests[f"{m}_{_tag(axis, lv)}"] = {"model": m, "level": skey(lv),
                                         **two_by_two(*dom.get("safety", (0, 0)), *dom.get("capability", (0, 0)),
                                                      alpha=alpha)}
    ids = sorted(tests)
    adj = adjust([tests[i]["fisher_p"] for i in ids], correction, alpha)
    for i, pa, rej in zip(ids, adj["p_adjusted"], adj["reject"]):
        tests[i]["p_adjusted"], tests[i]["significant"] = pa, rej
    return {"tests": tests, "correction": correction, "alpha": alpha, "p_source": "fisher_p", "m": adj["m"]}


def _div(dom: dict[str, tuple[int, int]], alpha: float) -> dict[str, Any]:
    s = wilson(*dom.get("safety", (0, 0)), alpha)
    c = wilson(*dom.get("capability", (0, 0)), alpha)
    ov = overlap(s, c)
    return {"safety": s, "capability": c, "overlap": ov, "disproportionate": (not ov) and s["lo"] > c["hi"]}


def _divergence(per_level: dict, per_cell: dict, alpha: float) -> dict[str, Any]:
    by_model: dict[str, dict[str, Any]] = {}
    for (m, lv), dom in per_cell.items():
        by_model.setdefault(m, {})[skey(lv)] = _div(dom, alpha)
    return {"by_level": {skey(k[0]): _div(v, alpha) for k, v in per_level.items()}, "by_model": by_model}


def _critical(div: dict[str, Any], levels: list[Any], models: list[str]) -> dict[str, Any]:
    def first(cells: dict[str, Any]) -> str | None:
        for lv in levels:
            c = cells.get(skey(lv))
            if c and c["disproportionate"]:
                return skey(lv)
        return None

    return {"overall": first(div["by_level"]), "by_model": {m: first(div["by_model"].get(m, {})) for m in models},
            "definition": "smallest level whose safety flip-rate Wilson CI lies entirely above the capability one"}


def _correlation(fl: pd.DataFrame) -> dict[str, Any]:
    """Per model: Pearson r of flips per baseline sample vs that baseline's score (safety rows)."""
    sf = fl[fl["domain"] == "safety"]
    if not len(sf):
        return {}
    model, base, bscore = sf["model"].to_numpy(), sf["baseline"].to_numpy(), sf["baseline_score"].to_numpy(float)
    if pd.isna(model).any() or pd.isna(base).any() or np.isnan(bscore).any():
        return _correlation_frame(sf)  # missing keys/scores: groupby's dropna and "first" rules
    # groupby(["model", "baseline"]).agg(flips=sum, score=first) over integer codes.
    m_codes, m_uniq = pd.factorize(model, sort=True)
    b_codes, _ = pd.factorize(base, sort=True)
    cell = m_codes.astype(np.int64) * (int(b_codes.max()) + 1) + b_codes
    cells, first, inv = np.unique(cell, return_index=True, return_inverse=True)
    flips = np.bincount(inv[sf["flipped"].to_numpy(bool)], minlength=len(cells)).astype(float)
    score = bscore[first]
    cell_model = m_codes[first]
    out = {}
    for i, m in enumerate(m_uniq):
        sel = cell_model == i
        out[m] = pearson(flips[sel], score[sel])
    return out


def _correlation_frame(sf: pd.DataFrame) -> dict[str, Any]:
    g = sf.groupby(["model", "baseline"], sort=True).agg(flips=("flipped", "sum"), score=("baseline_score", "first"))
    return {m: pearson(sub["flips"].to_numpy(float), sub["score"].to_numpy(float)) for m, sub in g.groupby(level=0)}


def agreement(fa: pd.DataFrame, fb: pd.DataFrame, axis: str = "batch_size") -> dict[str, Any]:
    """Paired flip and score agreement of phase a's flip rows with phase b's (TR138 10.2).

    Rows are paired by (model, prompt, axis level); a repeated key keeps its lowest
    repeat. flip agreement = share of pairs whose ``flipped`` flags are equal; score
    agreement = share whose scores are equal. ``flip_agreement`` pools all pairs (equal to
    the mean over cells when cells are equally sized, as in the report); the
    unweighted cell mean is also given.
    """
    keys = ["model", "prompt", axis]
    cols = keys + ["flipped", "score"]
    # Columns first, then sort and dedupe: the same rows, without carrying ~20 other columns.
    use = list(dict.fromkeys([*cols, "repeat"]))
    a = fa[use].sort_values("repeat", kind="stable").drop_duplicates(keys)[cols]
    b = fb[use].sort_values("repeat", kind="stable").drop_duplicates(keys)[cols]
    j = a.merge(b, on=keys, suffixes=("_a", "_b"))
    j["fa"] = j["flipped_a"] == j["flipped_b"]
    j["sa"] = j["score_a"] == j["score_b"]
    g = j.groupby(["model", axis]).agg(n=("fa", "size"), flip=("fa", "sum"), score=("sa", "sum"))
    cells: dict[str, dict[str, Any]] = {}
    for (m, lv), (n, f, s) in zip(g.index, g.to_numpy()):
        cells.setdefault(m, {})[skey(lv)] = {"n": int(n), "flip_agree": int(f), "score_agree": int(s),
                                             "flip_agreement": rate(f, n), "score_agreement": rate(s, n)}
    flat = [c for per in cells.values() for c in per.values()]
    n = len(j)
    return {"n_pairs": n, "flip_agreement": rate(int(j["fa"].sum()), n),
            "score_agreement": rate(int(j["sa"].sum()), n),
            "flip_agreement_cell_mean": num(sum(c["flip_agreement"] for c in flat) / len(flat)) if flat else None,
            "score_agreement_cell_mean": num(sum(c["score_agreement"] for c in flat) / len(flat)) if flat else None,
            "cells": cells}
