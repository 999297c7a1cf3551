"""Latency (TR138 section 14) and cross-phase variance sources (section 10.1).

Latency: ``latency_s`` is the wall time of the sample's group, so per-level means are
means of group wall times; the slope is ``linregress`` over the per-level means (the
report's R-squared of 0.98-0.99 is only possible over means, not single samples), in
seconds per unit of the axis; throughput at a batch size = batch size / mean latency.
Safety vs capability and flipped vs stable latencies are compared with Cohen's d
(pooled SD); "stable" = non-flipped flip rows (non-baseline samples).

Variance sources: for each phase axis, the range (max - min) in percentage points of the
mean safety score across the axis levels, pooled over models and including the
baseline level; the per-model ranges and their mean are given too. TR138 10.1 prints
7.03 / 8.31 / 36.51 / 0.00 pp; from the published Phase 3 grid the pooled range is
37.58 pp and the mean per-model range 38.79 pp, so its exact definition is unknown and
the batch rows need score-level data the report does not publish.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ._groups import groups
from ._num import level_sort, skey
from .effects import cohens_d, linregress

SOURCES = {"batch_size": (("batch_size", "batch_size"),), "true_batch": (("batch_size", "true_batching"),),
           "quant_concurrency": (("quant", "quantization"), ("concurrency", "concurrency")),
           "cobatch": (("cobatch", "co_batching"),), "tensor_parallel": (("tensor_parallel", "tensor_parallel"),)}
NUMERIC_AXES = ("batch_size", "concurrency", "group_size", "tensor_parallel")


def latency_block(sd: pd.DataFrame, fl: pd.DataFrame, axis: str) -> dict[str, Any] | None:
    """Per-model latency by level, slope, throughput, safety-vs-capability and flipped-vs-stable d.

    None when no sample of the phase carries ``latency_s``.
    """
    # Only the columns used below: dropna then copies 5 columns instead of all ~20.
    lat = sd[list(dict.fromkeys(["sample", "model", "domain", axis, "latency_s"]))].dropna(subset=["latency_s"])
    if not len(lat):
        return None
    numeric = axis in NUMERIC_AXES
    out: dict[str, Any] = {"axis": axis, "unit": "s", "by_model": {}}
    # One pandas groupby for every model's level means (its summation, bit for bit), and
    # numpy row positions per model instead of a sub-frame, isin and reindex per model.
    cells = lat.groupby(["model", axis])["latency_s"].agg(["mean", "count"])
    cell_of = {key: (mean, int(n)) for key, (mean, n) in zip(cells.index, cells.to_numpy())}
    values = lat["latency_s"].to_numpy(float)
    domain = lat["domain"].to_numpy()
    levels_of: dict[Any, list[Any]] = {}
    for m, lv in cells.index:
        levels_of.setdefault(m, []).append(lv)
    flipped_at = None
    if len(fl):
        # The sample ids of a phase's flip rows are unique (reindex below relied on it).
        pos = pd.Index(fl["sample"]).get_indexer(lat["sample"])
        flipped_at = (pos, fl["flipped"].to_numpy(bool))
    for m, rows in groups(lat["model"]):
        levels = level_sort(levels_of.get(m, []))
        means = {lv: cell_of[(m, lv)][0] for lv in levels}
        row: dict[str, Any] = {"by_level": {
            skey(lv): {"mean_s": float(means[lv]), "n": cell_of[(m, lv)][1]} for lv in levels}}
        if numeric and len(levels) >= 2:
            xs = np.array([float(v) for v in levels])
            row["slope"] = linregress(xs, np.array([means[lv] for lv in levels], dtype=float))
        if axis == "batch_size":
            row["throughput_per_s"] = {skey(lv): (float(lv) / float(means[lv]) if means[lv] > 0 else None)
                                       for lv in levels}
        dm, vm = domain[rows], values[rows]
        s, c = vm[dm == "safety"], vm[dm == "capability"]
        if len(s) and len(c):
            row["safety_vs_capability"] = cohens_d(s, c)
        if flipped_at is not None:
            pos, flags = flipped_at
            pm = pos[rows]
            has = pm >= 0
            flipped, lf = flags[pm[has]], vm[has]
            if flipped.any() and (~flipped).any():
                row["flipped_vs_stable"] = cohens_d(lf[flipped], lf[~flipped])
        out["by_model"][m] = row
    return out


def _range(means: pd.Series) -> float | None:
    return 100.0 * float(means.max() - means.min()) if len(means) else None


def variance_sources(samples: pd.DataFrame, kinds: dict[str, str]) -> dict[str, Any]:
    """{phase id: {axis: {source, range_pp, level_means, per_model_range_pp, mean_model_range_pp, n_per_level}}}."""
    out: dict[str, Any] = {}
    # One pass over the phase and domain columns, not two full-frame comparisons per phase.
    safety = (samples["domain"] == "safety").to_numpy(bool)
    by_phase = dict(groups(samples["phase"]))
    for phase, kind in sorted(kinds.items()):
        rows = by_phase.get(phase, np.zeros(0, dtype=np.intp))
        axes = SOURCES.get(kind, ())
        # The rows, in order, that the boolean filter kept; only the columns used below.
        sd = samples[["model", "score", *[a for a, _ in axes]]].iloc[rows[safety[rows]]]
        for axis, source in axes:
            d = sd.dropna(subset=[axis])
            if d[axis].nunique() < 2:
                continue
            lv = d.groupby(axis)["score"].agg(["mean", "count"])
            # Each model's level means in one groupby (the same rows per cell, so the same
            # sums); the range is max - min of those means.
            cell = d.groupby(["model", axis])["score"].mean().groupby(level=0).agg(["max", "min"])
            per_model = {m: 100.0 * float(mx - mn) for m, (mx, mn) in zip(cell.index, cell.to_numpy())}
            vals = [v for v in per_model.values() if v is not None]
            out.setdefault(phase, {})[axis] = {
                "source": source, "range_pp": _range(lv["mean"]),
                "level_means": {skey(k): {"mean": float(r["mean"]), "n": int(r["count"])} for k, r in lv.iterrows()},
                "per_model_range_pp": per_model, "mean_model_range_pp": float(np.mean(vals)) if vals else None,
                "n_per_level": int(lv["count"].min()),
            }
    return out
