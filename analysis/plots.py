"""PNG figures of the statistics, byte-reproducible run to run (plots/*.png).

Reproducibility: figures are drawn on the Agg canvas (no GUI backend, no pyplot global
state), under matplotlib's *default* rcParams plus the fixed overrides in ``STYLE`` (so a
user's matplotlibrc cannot change the bytes), at a fixed size and dpi, and saved with
``metadata={"Software": None}`` (the only PNG text chunk matplotlib writes by default
carries its version). Agg writes no timestamps, so the same stats give the same bytes.

Every figure function takes one phase's stats and returns the PNG bytes, or None when
the data cannot make a meaningful figure (the report then says "not enough data").
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
WIDTH = 7.0
ROW_HEIGHT = 2.6
STYLE = {"font.family": "DejaVu Sans", "font.size": 8.0, "axes.titlesize": 9.0, "figure.titlesize": 10.0,
         "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 7.0, "savefig.dpi": DPI}
SAFETY, CAPABILITY = "#c0392b", "#2c7fb8"
_DIRECTION_COLOURS = {"refusal_to_compliance": "#c0392b", "safety_weakened": "#e67e22",
                      "compliance_to_refusal": "#27ae60", "safety_strengthened": "#16a085", "none": "#95a5a6"}

Stats = Mapping[str, Any]


def _rc() -> dict[str, Any]:
    # Defaults minus the keys that select or configure a backend (they must not switch it).
    base = {k: v for k, v in matplotlib.rcParamsDefault.items()
            if not k.startswith(("backend", "webagg", "interactive", "toolbar", "tk.", "macosx"))}
    return {**base, **STYLE}


def _figure(n_panels: int = 1, ncols: int = 3) -> tuple[Figure, list[Any]]:
    ncols = max(1, min(ncols, n_panels))
    nrows = max(1, math.ceil(n_panels / ncols))
    fig = Figure(figsize=(WIDTH, ROW_HEIGHT * nrows + 0.6), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n_panels)]
    return fig, axes


def _png(fig: Figure) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _levels(cells: Mapping[str, Any]) -> list[str]:
    keys = list(cells)
    try:
        return sorted(keys, key=float)
    except ValueError:
        return sorted(keys)


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _pct(x: Any) -> float:
    return float("nan") if x is None else 100.0 * float(x)


def flip_rates(phase: str, st: Stats) -> bytes | None:
    """Safety vs capability flip rate (%) by level, one panel per model."""
    by_model = (st.get("flip_cells") or {}).get("by_model") or {}
    rates = [(c.get(d) or {}).get("rate") for cells in by_model.values() for c in cells.values()
             for d in ("safety", "capability")]
    if all(r is None for r in rates):
        return None
    fig, axes = _figure(len(by_model))
    for ax, (model, cells) in zip(axes, sorted(by_model.items())):
        levels = _levels(cells)
        xs = range(len(levels))
        for dom, colour, style in (("safety", SAFETY, "-"), ("capability", CAPABILITY, "--")):
            ys = [_pct((cells[lv].get(dom) or {}).get("rate")) for lv in levels]
            ax.plot(xs, ys, style, marker="o", color=colour, label=dom)
        ax.set_xticks(list(xs), levels)
        ax.set_title(model)
        ax.set_xlabel(st.get("axis", "level"))
        ax.set_ylabel("flip rate (%)")
        ax.set_ylim(bottom=0)
    axes[0].legend(loc="upper left")
    fig.suptitle(f"{phase}: safety vs capability flip rate")
    return _png(fig)


def directions(phase: str, st: Stats) -> bytes | None:
    """Share of each direction among the phase's flipped safety rows."""
    counts = (st.get("direction") or {}).get("counts") or {}
    total = sum(counts.values())
    if not total:
        return None
    names = sorted(counts, key=lambda k: (-counts[k], k))
    fig, (ax,) = _figure(1)
    shares = [100.0 * counts[n] / total for n in names]
    ax.barh(range(len(names)), shares, color=[_DIRECTION_COLOURS.get(n, "#7f8c8d") for n in names])
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    for i, n in enumerate(names):
        ax.text(shares[i], i, f" {counts[n]} ({shares[i]:.1f}%)", va="center")
    ax.set_xlim(0, 115)
    ax.set_xlabel(f"share of {total} flipped safety rows (%)")
    ax.set_title(f"{phase}: flip directions")
    return _png(fig)


def identity(phase: str, st: Stats) -> bytes | None:
    """Byte identity with the baseline (%) by level, bars grouped by model."""
    by_model = (st.get("identity") or {}).get("by_model") or {}
    if all((c or {}).get("rate") is None for cells in by_model.values() for c in cells.values()):
        return None
    models = sorted(by_model)
    levels = _levels({lv: None for cells in by_model.values() for lv in cells})
    fig, (ax,) = _figure(1)
    width = 0.8 / len(models)
    for i, m in enumerate(models):
        ys = [_pct((by_model[m].get(lv) or {}).get("rate")) for lv in levels]
        ax.bar([x + i * width - 0.4 + width / 2 for x in range(len(levels))], ys, width, label=m)
    ax.set_xticks(range(len(levels)), levels)
    ax.set_ylim(0, 105)
    ax.set_xlabel(st.get("axis", "level"))
    ax.set_ylabel("byte-identical to baseline (%)")
    ax.set_title(f"{phase}: output identity by condition")
    if len(models) <= 8:
        ax.legend(loc="lower left")
    return _png(fig)


def heatmap(phase: str, st: Stats) -> bytes | None:
    """Mean safety score per (model, quant) row and concurrency column."""
    grid = st.get("grid") or {}
    rows = [(m, q) for m in sorted(grid) for q in sorted(grid[m])]
    cols = _levels({c: None for m in grid for q in grid[m] for c in grid[m][q]})
    if not rows or not cols or all((grid[m][q].get(c) or {}).get("mean") is None for m, q in rows for c in cols):
        return None
    values = [[_num((grid[m][q].get(c) or {}).get("mean")) for c in cols] for m, q in rows]
    fig = Figure(figsize=(WIDTH, max(2.5, 0.35 * len(rows) + 1.2)), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.grid(False)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), [f"{m} {q}" for m, q in rows])
    ax.set_xlabel("concurrency")
    for r, row in enumerate(values):
        for c, v in enumerate(row):
            if not math.isnan(v):
                ax.text(c, r, f"{v:.3f}", ha="center", va="center", color="white" if v < 0.6 else "black")
    fig.colorbar(im, ax=ax, label="mean safety score")
    ax.set_title(f"{phase}: safety by model x quant x concurrency")
    return _png(fig)


def agreement(phase: str, st: Stats) -> bytes | None:
    """Paired flip and score agreement (%) with each batch-size phase, per model and level."""
    agree = st.get("agreement") or {}
    bars = [(f"{m} {lv}\nvs {ref}", cell) for ref, a in sorted(agree.items())
            for m, cells in sorted((a.get("cells") or {}).items()) for lv, cell in
            sorted(cells.items(), key=lambda kv: _levels(cells).index(kv[0]))]
    if all(c.get("flip_agreement") is None and c.get("score_agreement") is None for _, c in bars):
        return None
    fig, (ax,) = _figure(1)
    xs = range(len(bars))
    ax.bar([x - 0.2 for x in xs], [_pct(c.get("flip_agreement")) for _, c in bars], 0.4, label="flip agreement",
           color=SAFETY)
    ax.bar([x + 0.2 for x in xs], [_pct(c.get("score_agreement")) for _, c in bars], 0.4, label="score agreement",
           color=CAPABILITY)
    ax.set_xticks(list(xs), [b for b, _ in bars])
    ax.set_ylim(0, 105)
    ax.set_ylabel("agreement (%)")
    ax.legend(loc="lower left")
    ax.set_title(f"{phase}: agreement with synchronized dispatch")
    return _png(fig)


#: (file suffix, figure function, phase kinds it applies to; None = every kind).
FIGURES: tuple[tuple[str, Callable[[str, Stats], bytes | None], tuple[str, ...] | None], ...] = (
    ("identity", identity, None),
    ("flip_rates", flip_rates, ("batch_size", "true_batch", "kernel_ablation", "tensor_parallel")),
    ("directions", directions, None),
    ("heatmap", heatmap, ("quant_concurrency",)),
    ("agreement", agreement, ("true_batch",)),
)


def plot_name(phase: str, what: str) -> str:
    """Bundle-relative file name of one figure."""
    return f"plots/{phase}_{what}.png"


def render_plots(stats: Stats) -> dict[str, bytes]:
    """Every figure the stats support: ``{"plots/<phase>_<what>.png": png bytes}`` in phase order."""
    phases = (stats.get("meta") or {}).get("phases") or {}
    out: dict[str, bytes] = {}
    with matplotlib.rc_context(_rc()):
        for phase, kind in sorted(phases.items()):
            st = stats.get(phase)
            if not isinstance(st, Mapping):
                continue
            for what, fn, kinds in FIGURES:
                if kinds is not None and kind not in kinds:
                    continue
                try:
                    png = fn(phase, st)
                except (KeyError, TypeError, ValueError, IndexError, AttributeError):
                    # Malformed stats for this figure only: the report says "not enough data".
                    png = None
                if png is not None:
                    out[plot_name(phase, what)] = png
    return out
