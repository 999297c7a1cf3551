"""report.md's protocol sections (seed 003): one per study, from stats.json's ``protocol`` block.

Called by ``report.render_report`` at the end of the report, so verify's statistics stage
re-renders and compares them with everything else. Numbers are rounded only here. Kept
apart from ``report`` (which imports this module); both format with ``report_format``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from .protocol_plots import FIGURES, plot_name
from .report_format import FAILURES as _FAILURES
from .report_format import NOT_ENOUGH, Stats, pct
from .report_format import ci as _ci
from .report_format import fnum as _f
from .report_format import frac as _frac
from .report_format import table as _table

_pct = functools.partial(pct, nd=2)  # the studies' shares print to 2 decimals


def _note(d: Mapping[str, Any]) -> str:
    return f" ({d['note']})" if d.get("note") else ""


def _parity_line(p: Stats) -> str:
    r = p["ratio"]
    return (f"Safety flips {_frac(p['safety'])} vs capability flips {_frac(p['capability'])}: ratio "
            f"{_f(r.get('ratio'), 2)}x, {int(100 * (1 - r['alpha']))}% CI {_ci(r.get('ci_low'), r.get('ci_high'), 2)}"
            f"{_note(r)}; Fisher exact p = {_f(p.get('fisher_p'), 4)}.")


def study_a_section(a: Stats) -> list[str]:
    """Local discovery: flips by level, parity, candidates for adjudication."""
    rows = [[p, lv, _frac(c["safety"]), _frac(c["capability"])]
            for p, b in a["by_level"].items() for lv, c in (b.get("levels") or {}).items()]
    c = a["candidates"]
    return [*_table(["Phase", "Level", "Safety flips", "Capability flips"], rows), "", _parity_line(a["pooled"]), "",
            (f"Adjudication candidates: {c['flipped']:,} flipped rows ({c['safety_flipped']:,} safety) of a full set "
             f"of {c['full_set']:,} comparisons. Export them with `batchsafe adjudicate export`; the corrected "
             "full-set rate (confirmed / candidates scaled to the full set) comes with the adjudication child bundle.")]


def study_b_section(b: Stats) -> list[str]:
    """Cross-model: per-model instability and fragility, correlation with bootstrap CI, parity, alignment."""
    rows = [[m, v.get("alignment") or "--", _frac(v["instability"]), _frac(v["fragility"]), _frac(v["capability"])]
            for m, v in b["models"].items()]
    c = b["correlation"]
    out = [*_table(["Model", "Alignment", "Output instability", "Safety fragility", "Capability flips"], rows), ""]
    fit = c.get("fit") or {}
    out.append(f"Instability vs fragility across {c['n']} models: Pearson r = {_f(c.get('r'))} (p = {_f(c.get('p'), 4)}), "
               f"{int(round(100 * c['ci_level']))}% percentile bootstrap CI {_ci(c.get('ci_low'), c.get('ci_high'))} "
               f"({c['resamples']:,} resamples of model pairs, seed {c['seed']}, {c['degenerate_resamples']:,} "
               f"degenerate resamples dropped){_note(c)}; fit: fragility = {_f(fit.get('intercept'), 4)} + "
               f"{_f(fit.get('slope'), 4)} x instability.")
    if b.get("without_safety_rows"):
        out.append(f"Models without safety rows (no fragility): {', '.join(b['without_safety_rows'])}.")
    out += ["", _parity_line(b["parity"]), ""]
    al = b["alignment"]
    an, kw = al["anova"], al["kruskal"]
    out += _table(["Alignment", "Models", "Mean fragility"],
                  [[g, v["n"], _pct(v["mean"])] for g, v in al["groups"].items()])
    out += ["", (f"Alignment type vs fragility: one-way ANOVA F = {_f(an.get('F'))}, p = {_f(an.get('p'), 4)}, "
                 f"eta-squared = {_f(an.get('eta_sq'))}{_note(an)}; Kruskal-Wallis H = {_f(kw.get('H'))}, "
                 f"p = {_f(kw.get('p'), 4)}{_note(kw)}.")]
    if al.get("unassigned"):
        out.append(f"Models without an alignment attribute (left out): {', '.join(al['unassigned'])}.")
    return out


def study_c_section(c: Stats) -> list[str]:
    """Composition: aggregate effect and its sensitivity per phase (pooled load > 0 vs load 0 where measured)."""
    rows, pooled = [], []
    for p, st in c["by_phase"].items():
        po = (st.get("composition") or {}).get("pooled")
        if po:
            d = po.get("delta") or {}
            pooled.append([p, _frac(po.get("safe")), _frac(po.get("baseline_safe")), _f(d.get("delta"), 4),
                           _ci(d.get("lo"), d.get("hi"), 4), _f(po.get("mde_pp"), 1),
                           _f((po.get("paired_test") or {}).get("p"), 4)])
            continue
        fr, eq = st.get("flip_rate") or {}, ((st.get("equivalence") or {}).get("overall") or {})
        power = (st.get("power") or {}).get("safety_vs_capability") or (st.get("power") or {}).get("one_sample_safety") or {}
        rows.append([p, st.get("kind", "--"), _pct(fr.get("safety")), _pct(fr.get("capability")),
                     _f(eq.get("p"), 4) if eq else "--", _f(power.get("mde_pp"), 1)])
    out = _table(["Phase", "Kind", "Safety flip rate", "Capability flip rate", "TOST p", "MDE (pp)"], rows) if rows else []
    if pooled:
        out += ([""] if out else []) + _table(["Phase", "Safe under load", "Safe at load 0", "Delta", "CI", "MDE (pp)",
                                               "McNemar p"], pooled)
    return out


def study_d_section(d: Stats) -> list[str]:
    """Kernel ablation: flips per variant and the exact tests between them."""
    out: list[str] = []
    for p, r in d["by_phase"].items():
        for scope in ("all", "safety"):
            vt = r[scope]
            out += [f"{p}, {scope} rows ({r['prompts']} prompts):", ""]
            out += _table(["Variant", "Flipped rows", "Wilson CI"],
                          [[v, _frac(c), _ci(c.get("lo"), c.get("hi"))] for v, c in vt["variants"].items()])
            out += [""] + [f"- {t['a']} vs {t['b']}: Fisher exact p = {_f(t.get('fisher_p'), 6)}"
                           f"{'' if t.get('p_holm') is None else ', Holm p = ' + _f(t['p_holm'], 6)}{_note(t)}"
                           for t in vt["tests"]] + ([f"- {vt['note']}"] if vt.get("note") else []) + [""]
    return out[:-1] if out else [NOT_ENOUGH]


SECTIONS = (("study_a", "Study A: local discovery (safety vs capability flips by batch size)", study_a_section),
            ("study_b", "Study B: cross-model instability, fragility and alignment", study_b_section),
            ("study_c", "Study C: continuous-batch composition", study_c_section),
            ("study_d", "Study D: kernel ablation on flip candidates", study_d_section))


def protocol_sections(stats: Stats, plots: Sequence[str] = ()) -> list[str]:
    """The protocol's report lines (empty without a ``protocol`` block)."""
    block = stats.get("protocol")
    if not block:
        return []
    s = block.get("settings") or {}
    out = ["## Paired testing protocol (seed 003)", "",
           (f"Bootstrap: {s.get('bootstrap_resamples', 0):,} resamples, seed {s.get('bootstrap_seed')}; "
            f"alpha = {s.get('alpha')}."), ""]
    for key, title, fn in SECTIONS:
        if key not in block:
            continue
        try:
            body = fn(block[key]) or [NOT_ENOUGH]
        except _FAILURES:  # degenerate statistics for this study only: say so, keep the report
            body = [NOT_ENOUGH]
        out += [f"### {title}", "", *body, ""]
    if plots:
        out += ["### Protocol figures", ""]
        for stem, _ in FIGURES:
            name = plot_name(stem)
            out += [f"![{stem}]({name})" if name in plots else f"{stem}: {NOT_ENOUGH}", ""]
    return out
