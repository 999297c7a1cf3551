"""The protocol's figures in the seed's shapes (seed 003, figures 1, 3 and 4), from stats.json.

Same reproducibility rules as :mod:`.plots` (Agg canvas, default rcParams plus its STYLE,
fixed size and dpi, no Software chunk): the same stats give the same PNG bytes. Each
function returns PNG bytes or None when the statistics cannot make the figure; only
plans with ``analysis.protocol`` have the ``protocol`` block, so other bundles get none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import matplotlib

from .plots import CAPABILITY, SAFETY, _figure, _levels, _pct, _png, _rc

Stats = Mapping[str, Any]
_ALIGN_COLOURS = ("#8e44ad", "#27ae60", "#d35400", "#2980b9", "#7f8c8d", "#c0392b", "#16a085", "#f1c40f")


def study_a_rates(stats: Stats) -> bytes | None:
    """Figure 1: safety vs capability flip rate (%) by batch size, one panel per discovery phase."""
    by_level = ((stats.get("protocol") or {}).get("study_a") or {}).get("by_level") or {}
    panels = [(p, b) for p, b in by_level.items() if (b or {}).get("levels")]
    if not panels:
        return None
    fig, axes = _figure(len(panels))
    for ax, (phase, block) in zip(axes, panels):
        cells = block["levels"]
        levels = _levels(cells)
        xs = range(len(levels))
        for dom, colour, style in (("safety", SAFETY, "-"), ("capability", CAPABILITY, "--")):
            ax.plot(xs, [_pct(cells[lv][dom]["rate"]) for lv in levels], style, marker="o", color=colour, label=dom)
        ax.set_xticks(list(xs), levels)
        ax.set_xlabel(block.get("axis", "level"))
        ax.set_ylabel("flip rate (%)")
        ax.set_ylim(bottom=0)
        ax.set_title(phase)
    axes[0].legend(loc="upper left")
    fig.suptitle("Study A: safety vs capability flip rate by batch size")
    return _png(fig)


def instability_fragility(stats: Stats) -> bytes | None:
    """Figure 3: output instability vs safety fragility per model, with the least-squares line (dashed)."""
    b = (stats.get("protocol") or {}).get("study_b") or {}
    models = b.get("models") or {}
    names = [m for m in b.get("correlated_models") or [] if m in models]
    if not names:
        return None
    fig, (ax,) = _figure(1)
    aligns = sorted({str(models[m].get("alignment")) for m in names})
    colour = {a: _ALIGN_COLOURS[i % len(_ALIGN_COLOURS)] for i, a in enumerate(aligns)}
    for a in aligns:
        ms = [m for m in names if str(models[m].get("alignment")) == a]
        ax.scatter([_pct(models[m]["instability"]["rate"]) for m in ms],
                   [_pct(models[m]["fragility"]["rate"]) for m in ms], color=colour[a], label=a, zorder=3)
    for m in names:
        ax.annotate(m, (_pct(models[m]["instability"]["rate"]), _pct(models[m]["fragility"]["rate"])), fontsize=6,
                    xytext=(3, 3), textcoords="offset points")
    corr = b.get("correlation") or {}
    fit = corr.get("fit") or {}
    xs = [_pct(models[m]["instability"]["rate"]) for m in names]
    if fit.get("slope") is not None:
        lo, hi = min(xs), max(xs)
        # The fit is in shares; the axes are percent: y% = 100 * (a + b * x% / 100).
        ax.plot([lo, hi], [100 * (fit["intercept"] + fit["slope"] * x / 100) for x in (lo, hi)], "--", color="#34495e")
    ci = (f", 95% CI [{corr['ci_low']:.2f}, {corr['ci_high']:.2f}]" if corr.get("ci_low") is not None
          and corr.get("ci_high") is not None else "")
    ax.set_title(f"Study B: instability vs fragility (r = {corr.get('r', 0.0):.3f}{ci})")
    ax.set_xlabel("output instability (% non-identical to baseline)")
    ax.set_ylabel("safety flip rate (%)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)  # rates: no negative axis, also when every model has 0 flips
    ax.legend(loc="upper left", title="alignment")
    return _png(fig)


def agreement(stats: Stats) -> bytes | None:
    """Figure 4: flip agreement (%) of each true-batch phase with synchronized dispatch, per model and batch size."""
    phases = ((stats.get("protocol") or {}).get("study_a") or {}).get("phases") or []
    bars = []
    for p in phases:
        for ref, a in sorted(((stats.get(p) or {}).get("agreement") or {}).items()):
            for m, cells in sorted((a.get("cells") or {}).items()):
                bars += [(f"{m}\nbs {lv}", cells[lv].get("flip_agreement")) for lv in _levels(cells)]
    if not bars or all(v is None for _, v in bars):
        return None
    fig, (ax,) = _figure(1)
    ys = [_pct(v) for _, v in bars]
    ax.bar(range(len(bars)), ys, 0.6, color=SAFETY)
    ax.set_xticks(range(len(bars)), [b for b, _ in bars])
    # The seed zooms to 95-100.5 % to expose small differences; lower only if a bar is below.
    low = min([95.0] + [y for y in ys if y == y])
    ax.set_ylim(max(0.0, low - 0.5), 100.5)
    ax.set_ylabel("flip agreement with synchronized (%)")
    ax.set_title("True-batch agreement with synchronized dispatch")
    return _png(fig)


def kernel_ablation(stats: Stats) -> bytes | None:
    """Study D: flipped rows (%) per kernel variant, one bar group per ablation phase."""
    by_phase = ((stats.get("protocol") or {}).get("study_d") or {}).get("by_phase") or {}
    bars = [(f"{p}\n{v}", c) for p, r in by_phase.items() for v, c in ((r.get("all") or {}).get("variants") or {}).items()]
    if not bars or all(c.get("rate") is None for _, c in bars):
        return None
    fig, (ax,) = _figure(1)
    ys = [_pct(c.get("rate")) for _, c in bars]
    ax.bar(range(len(bars)), ys, 0.6, color=SAFETY)
    for i, (_, c) in enumerate(bars):
        ax.text(i, ys[i] if ys[i] == ys[i] else 0.0, f" {c.get('k', 0)}/{c.get('n', 0)}", ha="center", va="bottom")
    ax.set_xticks(range(len(bars)), [b for b, _ in bars])
    ax.set_ylim(bottom=0)
    ax.set_ylabel("flipped rows (%)")
    ax.set_title("Study D: flips per kernel variant")
    return _png(fig)


FIGURES: tuple[tuple[str, Callable[[Stats], bytes | None]], ...] = (
    ("protocol_study_a_flip_rates", study_a_rates),
    ("protocol_instability_fragility", instability_fragility),
    ("protocol_agreement", agreement),
    ("protocol_kernel_ablation", kernel_ablation),
)
"""(file stem, figure function), in report order."""


def plot_name(stem: str) -> str:
    """Bundle-relative file name of one protocol figure."""
    return f"plots/{stem}.png"


def render_protocol_plots(stats: Stats) -> dict[str, bytes]:
    """Every protocol figure the stats support (none without a ``protocol`` block)."""
    if not stats.get("protocol"):
        return {}
    out: dict[str, bytes] = {}
    with matplotlib.rc_context(_rc()):
        for stem, fn in FIGURES:
            try:
                png = fn(stats)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError):
                png = None  # malformed stats for this figure only: the report says so
            if png is not None:
                out[plot_name(stem)] = png
    return out
