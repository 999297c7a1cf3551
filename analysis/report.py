"""report.md: the TR138 tables for the phases that ran, from stats.json and targets.json.

Numbers are rounded only here and in ``report_format`` (stats.json keeps full
precision); tables are ``report_format.table`` (GitHub markdown, printed exactly as
formatted). Every section is built by one function from one phase's stats; a section
whose data is missing or degenerate prints "not enough data" instead of failing the
whole report (a bundle must be writable whatever the run produced).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .protocol_report import protocol_sections
from .report_format import FAILURES as _FAILURES
from .report_format import NOT_ENOUGH, Stats, ci, fnum, pct, pval, table, yes
from .report_format import frac as _frac


# --- formatting -----------------------------------------------------------------------

def levels(keys: Iterable[str]) -> list[str]:
    """Level keys numerically sorted when they are numbers ("2" < "16"), else by name."""
    keys = list(dict.fromkeys(keys))
    try:
        return sorted(keys, key=float)
    except ValueError:
        return sorted(keys)


def value(x: Any) -> str:
    """A target value: whole numbers without decimals, others to 4 decimals."""
    if x is None or isinstance(x, bool):
        return "--" if x is None else str(x)
    return f"{int(x):,}" if float(x).is_integer() else fnum(x, 4)


# --- flip-phase sections (batch_size, true_batch, kernel_ablation, cobatch, ...) ----------

def identity_section(st: Stats) -> list[str]:
    """Output identity: byte-identical share vs baseline per model x level."""
    by_model = st["identity"]["by_model"]
    lv = levels(k for cells in by_model.values() for k in cells)
    rows = [[m, *(pct((cells.get(x) or {}).get("rate")) for x in lv)] for m, cells in sorted(by_model.items())]
    overall = st["identity"]["overall"]
    return [*table(["Model", *(f"{st['axis']}={x}" for x in lv)], rows), "",
            f"Overall: {_frac(overall)} byte-identical to the baseline."]


def flip_rate_section(st: Stats) -> list[str]:
    """Safety vs capability flip rate per model x level, with the ratio and the aggregate."""
    rows = []
    for m, cells in sorted(st["flip_cells"]["by_model"].items()):
        for x in levels(cells):
            c = cells[x]
            rows.append([m, x, pct(c["safety"]["rate"]), pct(c["capability"]["rate"]), fnum(c.get("ratio"), 2)])
    fc, fr = st["flip_counts"], st["flip_rate"]
    agg = (f"Aggregate flip rates: Safety = {_frac(fc['safety'])}, Capability = {_frac(fc['capability'])}, "
           f"Ratio = {fnum(fr.get('ratio'), 2)}x.")
    return [*table(["Model", st["axis"], "Safety Flip Rate", "Capability Flip Rate", "Ratio (S/C)"], rows), "", agg]


def direction_section(st: Stats) -> list[str]:
    """Direction breakdown of the flipped safety rows."""
    d = st["direction"]
    counts = d["counts"]
    total = sum(counts.values())
    if not total:
        return [f"{NOT_ENOUGH} (no flipped safety rows)"]
    rows = [[k, counts[k], pct(counts[k] / total)] for k in sorted(counts, key=lambda k: (-counts[k], k))]
    return [*table(["Direction", "Count", "Percentage"], rows), "",
            (f"Unsafe-direction share of directionally classified safety flips: {pct(d.get('unsafe_share'))} "
             f"({d['unsafe']}/{d['classified']}; {d['flipped'] - d['classified']} label-only flips unclassified).")]


def task_section(st: Stats) -> list[str]:
    """Per-task flip rate, most sensitive first."""
    tasks = st["flip_by_task"]
    order = sorted(tasks, key=lambda t: (-(tasks[t].get("rate") or 0.0), t))
    return table(["Task", "Domain", "Flip Rate", "N"],
                 [[t, tasks[t]["domain"], pct(tasks[t].get("rate")), tasks[t]["n"]] for t in order])


def tests_section(st: Stats) -> list[str]:
    """Safety-vs-capability 2x2 tests, adjusted as one family, smallest p first."""
    ft = st["flip_tests"]
    tests = ft.get("tests") or {}
    if not tests:
        return [f"{NOT_ENOUGH} ({ft.get('note', 'no tests')})"]
    order = sorted(tests, key=lambda k: (tests[k].get("p_adjusted") is None, tests[k].get("p_adjusted") or 0.0,
                                         tests[k].get("fisher_p") or 0.0, k))
    corr = ft.get("correction", "holm")
    rows = [[k, fnum(t.get("chi2")), pval(t.get("chi2_p")), pval(t.get("fisher_p")),
             f"{fnum(t.get('odds_ratio'))} {ci(*(t.get('or_ci') or (None, None)))}", pval(t.get("p_adjusted")),
             yes(t.get("significant"))] for k, t in ((k, tests[k]) for k in order)]
    return [*table(["Test", "Chi-squared", "Chi-squared p", "Fisher p", "Odds Ratio [CI]", f"p ({corr})",
                    "Significant"], rows), "",
            f"Family of {ft.get('m')} tests, {corr} correction on Fisher exact p-values at alpha = {ft.get('alpha')}."]


def divergence_section(st: Stats) -> list[str]:
    """Wilson intervals of the safety and capability flip rates per level, and their overlap."""
    by_level = st["divergence"]["by_level"]
    rows = [[x, fnum(d["safety"]["rate"]), ci(d["safety"]["lo"], d["safety"]["hi"], 4), fnum(d["capability"]["rate"]),
             ci(d["capability"]["lo"], d["capability"]["hi"], 4), yes(d["overlap"]), yes(d["disproportionate"])]
            for x, d in ((x, by_level[x]) for x in levels(by_level))]
    out = table([st["axis"], "Safety Rate", "Safety CI", "Cap Rate", "Cap CI", "Overlap", "Disproportionate"], rows)
    crit = st.get("critical_level")
    if crit is not None:
        per = ", ".join(f"{m}: {v or 'none'}" for m, v in sorted(crit.get("by_model", {}).items()))
        out += ["", f"Critical level (CI non-overlap): overall {crit.get('overall') or 'none'}; {per}."]
    eq = (st.get("equivalence") or {}).get("overall")
    if eq:
        out += ["", (f"TOST (safety vs capability flip rate, margin +/-{pct(st['equivalence']['margin'], 1)}): "
                     f"difference {fnum(100 * eq['difference'], 2)}pp, p = {pval(eq.get('p'))}, "
                     f"equivalent: {yes(eq.get('equivalent'))}.")]
    return out


# --- continuous-batch composition (seed 003's Study C) ---------------------------------------

def _pp(x: Any) -> str:
    return "--" if x is None else f"{100.0 * float(x):+.1f}"


def composition_section(st: Stats) -> list[str]:
    """Per load level against load 0: safe rate, delta with its Newcombe CI, MDE, McNemar p, flips."""
    co = st["composition"]
    rows = []
    for key, c in [*((f"load {lv}", co["levels"][lv]) for lv in levels(co["levels"])), ("pooled (load > 0)", co["pooled"])]:
        d, f = c["delta"], c["flips"]
        rows.append([key, _frac(c["safe"], 1), _frac(c["baseline_safe"], 1), _pp(d.get("delta")),
                     f"[{_pp(d.get('lo'))}, {_pp(d.get('hi'))}]", fnum(c.get("mde_pp"), 1),
                     pval(c["paired_test"].get("p")), f"{f['differ']['k']}/{f['rows']}", f"{f['flipped']['k']}",
                     f"{f['unsafe_flips']['k']}"])
    return [f"Safe outcome: score >= {co['safe_threshold']:g} (a refusal for refusal scorers). Delta = safe rate at "
            f"the load level minus load 0, in percentage points, with its Newcombe {100 * (1 - co['alpha']):g}% CI; "
            f"MDE: the smallest difference (pp) detectable at power {co['power']:g} at this n.", "",
            *table(["Load", "Safe", "Safe at load 0", "Delta (pp)", "CI (pp)", "MDE (pp)", "McNemar p",
                    "Outputs differing", "Label flips", "Toward unsafe"], rows)]


# --- co-batch (P2) -------------------------------------------------------------------------

def cobatch_means_section(st: Stats) -> list[str]:
    """Mean safety score per model x co-batch condition with its t interval."""
    rows = [[m, c, fnum(v.get("mean")), fnum(v.get("lo")), fnum(v.get("hi")), v.get("n")]
            for m, conds in sorted(st["means"].items()) for c, v in sorted(conds.items())]
    return table(["Model", "Condition", "Mean Safety", "CI Lower", "CI Upper", "N"], rows)


def cobatch_pairwise_section(st: Stats) -> list[str]:
    """Paired t-tests of each condition against the reference condition."""
    rows = [[m, k, f"{100 * t['delta']:+.1f}" if t.get("delta") is not None else "--", pval(t.get("p")),
             fnum(t.get("d")), pval(t.get("p_adjusted")), yes(t.get("significant"))]
            for m, tests in sorted(st["pairwise"].items()) for k, t in sorted(tests.items())]
    return table(["Model", "Comparison", "Delta (pp)", "p-value", "Cohen's d", "p (adjusted)", "Significant"], rows)


def cobatch_task_section(st: Stats) -> list[str]:
    """Per-task mean safety by condition, with the delta against the reference."""
    ref, conds = st["reference"], st["conditions"]
    rows = []
    for t, by in sorted(st["score_by_task"].items()):
        rows.append([t, fnum((by.get(ref) or {}).get("mean")),
                     *(f"{fnum((by.get(c) or {}).get('mean'))} ({fnum((by.get(c) or {}).get('delta_pp'), 1)}pp)"
                       for c in conds)])
    return table(["Task", f"{ref} mean", *(f"{c} mean (delta)" for c in conds)], rows)


def anova_table(an: Mapping[str, Any]) -> list[str]:
    """The factor rows of one ANOVA result."""
    rows = [[f, fnum(v.get("F")), pval(v.get("p")), fnum(v.get("eta_sq")), fnum(v.get("df"), 0)]
            for f, v in an["factors"].items()]
    return table(["Factor", "F", "p-value", "eta-squared", "df"], rows)


# --- quant x concurrency (P3) ------------------------------------------------------------

def grid_section(st: Stats) -> list[str]:
    """Mean safety per model x quant x concurrency."""
    rows = [[m, q, c, fnum(cell["mean"]), cell["n"]] for m, qs in sorted(st["grid"].items())
            for q, cs in sorted(qs.items()) for c, cell in ((c, cs[c]) for c in levels(cs))]
    return table(["Model", "Quant", "Concurrency", "Mean Safety", "N"], rows)


def quant_anova_section(st: Stats) -> list[str]:
    """Two-way ANOVA summary over models (mean F / eta-squared, significant models) and per model."""
    an = st["anova"]
    rows = [[name.capitalize(), fnum(an[name].get("mean_F")), pval(an["overall"]["factors"][an[name]["term"]].get("p")),
             fnum(an[name].get("mean_eta_sq")), f"{an[name]['significant_models']}/{an[name]['n_models']}"]
            for name in ("quant", "concurrency", "interaction")]
    out = [*table(["Factor", "Mean F", "Pooled p-value", "Mean eta-squared", "Significant models"], rows), "",
           "Per-model ANOVA:", ""]
    per = []
    for m, a in sorted(an["per_model"].items()):
        f = a["factors"]
        per.append([m, fnum(f["quant"].get("F"), 2), fnum(f["quant"].get("eta_sq")), pval(f["quant"].get("p")),
                    pval(f["concurrency"].get("p")), pval(f["quant:concurrency"].get("p"))])
    return out + table(["Model", "Quant F", "Quant eta-sq", "Quant p", "Concurrency p", "Interaction p"], per)


def slopes_section(st: Stats) -> list[str]:
    """Linear slope of the cell means against concurrency, per model x quant."""
    rows = [[m, q, f"{s['slope']:+.4f}" if s.get("slope") is not None else "--", fnum(s.get("r2")), s.get("n")]
            for m, qs in sorted(st["slopes"].items()) for q, s in sorted(qs.items())]
    return table(["Model", "Quant", "Slope (safety/concurrency)", "R-squared", "N"], rows)


# --- true batch (P4) ---------------------------------------------------------------------

def agreement_section(st: Stats) -> list[str]:
    """Paired flip and score agreement with each batch-size phase."""
    out: list[str] = []
    for ref, a in sorted(st["agreement"].items()):
        rows = [[m, x, c["n"], pct(c.get("flip_agreement")), pct(c.get("score_agreement"))]
                for m, cells in sorted(a["cells"].items()) for x, c in ((x, cells[x]) for x in levels(cells))]
        out += [*table(["Model", "Batch Size", "N", "Paired Flip Agreement", "Score Agreement"], rows), "",
                (f"Flip agreement with {ref}: {pct(a.get('flip_agreement'), 2)} over {a['n_pairs']} pairs "
                 f"(cell mean {pct(a.get('flip_agreement_cell_mean'), 2)})."), ""]
    return out[:-1] if out else [NOT_ENOUGH]


# --- cross-phase -------------------------------------------------------------------------

def audit_section(au: Stats) -> list[str]:
    """Direction of the behaviour-changing safety rows of the audited phase kinds."""
    o = au.get("odds") or {}
    b = au.get("binomial") or {}
    out = table(["Metric", "Value"], [
        ["Candidates", au["candidates"]], ["Unsafe-direction flips", au["unsafe"]], ["Safe-direction flips", au["safe"]],
        ["Unsafe share", pct(au.get("unsafe_share"))], ["Binomial p-value (two-sided)", pval(b.get("p"))],
        ["Odds ratio [CI]", f"{fnum(o.get('odds'), 2)} {ci(*(o.get('ci') or (None, None)), 2)}"]])
    for title, key in (("By model", "by_model"), ("By task", "by_task"), ("By phase", "by_phase")):
        rows = [[k, v["count"], v["unsafe"], fnum(v.get("unsafe_share")),
                 ci((v["binomial"].get("wilson") or {}).get("lo"), (v["binomial"].get("wilson") or {}).get("hi")),
                 pval(v["binomial"].get("p"))] for k, v in sorted(au[key].items())]
        out += ["", f"{title}:", "", *table([key[3:].capitalize(), "Count", "Unsafe", "Unsafe Rate", "95% CI",
                                              "Binomial p"], rows)]
    counts = au.get("by_direction") or {}
    return out + ["", "By direction:", "", *table(["Direction", "Count"], sorted(counts.items()))]


def variance_section(vs: Stats) -> list[str]:
    """Range of mean safety across each phase axis (pp)."""
    rows = [[v["source"], p, a, fnum(v.get("range_pp"), 2), fnum(v.get("mean_model_range_pp"), 2), v["n_per_level"]]
            for p, axes in sorted(vs.items()) for a, v in sorted(axes.items())]
    return table(["Source", "Phase", "Axis", "Range (pp)", "Mean per-model range (pp)", "N per level"], rows)


def targets_section(targets: Mapping[str, Any] | None) -> list[str]:
    """Every spec target with its actual value and PASS / FAIL / N/A."""
    if not targets or not targets.get("targets"):
        return ["No targets."]
    status = {"pass": "PASS", "fail": "FAIL", "not_available": "N/A"}
    rows = []
    for t in targets["targets"]:
        want = (f"[{value(t.get('low'))}, {value(t.get('high'))}]" if t["op"] == "between"
                else value(t.get("value")) + (f" +/- {t['tolerance']}" if t.get("tolerance") is not None else ""))
        rows.append([t["id"], t["metric"], t["op"], want, value(t.get("actual")), status[t["status"]], t.get("reason") or ""])
    s = targets["summary"]
    return [*table(["Target", "Metric", "Op", "Expected", "Achieved", "Status", "Note"], rows), "",
            f"{s['pass']} passed, {s['fail']} failed, {s['not_available']} not available."]


# --- assembly ----------------------------------------------------------------------------

def _safe(fn: Callable[..., list[str]], *args: Any) -> list[str]:
    try:
        return fn(*args) or [NOT_ENOUGH]
    except _FAILURES:
        # Missing or degenerate statistics for this section only: say so, keep the report.
        return [NOT_ENOUGH]


FLIP_SECTIONS = (("Output identity (byte-identical vs baseline)", identity_section),
                 ("Safety vs capability flip rate", flip_rate_section),
                 ("Flip direction breakdown", direction_section),
                 ("Per-task sensitivity", task_section),
                 ("Statistical tests (safety vs capability flips)", tests_section),
                 ("Safety-capability divergence (Wilson CI overlap)", divergence_section))
KIND_SECTIONS: dict[str, tuple[tuple[str, Callable[[Stats], list[str]]], ...]] = {
    "cobatch": (("Mean safety score by co-batch condition", cobatch_means_section),
                ("Pairwise condition comparisons", cobatch_pairwise_section),
                ("Per-task interference", cobatch_task_section),
                ("Two-way ANOVA (model x condition)", lambda st: anova_table(st["anova"]))),
    "quant_concurrency": (("Safety score grid (model x quant x concurrency)", grid_section),
                          ("Two-way ANOVA (quant x concurrency)", quant_anova_section),
                          ("Safety vs concurrency slopes", slopes_section)),
    "true_batch": (("Agreement with synchronized dispatch", agreement_section),),
    "composition": (("Safety under background load (each level against load 0)", composition_section),),
}
# Which flip sections each kind shows: all where a capability control arm exists; co-batch
# targets and the quant grid are safety-only, so rates, tests and divergence say nothing there.
FLIP_SECTIONS_BY_KIND = {"cobatch": (0, 2), "quant_concurrency": (0, 2), "repeat_floor": (0, 1, 2), "composition": (0, 2)}


def phase_section(phase: str, kind: str, st: Stats, plots: Sequence[str]) -> list[str]:
    """All tables of one phase, then its figures."""
    out = [f"## Phase {phase} ({kind})", "",
           f"Samples: {st.get('n_samples', 0):,}; flip rows: {st.get('n_flip_rows', 0):,}.", ""]
    has_flips = bool(st.get("n_flip_rows"))
    wanted = FLIP_SECTIONS_BY_KIND.get(kind, range(len(FLIP_SECTIONS)))
    sections = [FLIP_SECTIONS[i] for i in wanted] if has_flips else []
    sections += KIND_SECTIONS.get(kind, ())
    if not sections:
        return [*out, NOT_ENOUGH, ""]
    for title, fn in sections:
        out += [f"### {title}", "", *_safe(fn, st), ""]
    if plots:  # figures were rendered for this report (not --no-plots)
        from .plots import FIGURES, plot_name

        out += ["### Figures", ""]
        for what, _, kinds in FIGURES:
            if kinds is None or kind in kinds:
                name = plot_name(phase, what)
                out.append(f"![{phase} {what}]({name})" if name in plots else f"{what}: {NOT_ENOUGH}")
                out.append("")
    return out


def render_report(stats: Stats, targets: Mapping[str, Any] | None = None, *, title: str = "",
                  plan_summary: Mapping[str, Any] | None = None, plots: Sequence[str] = (),
                  phase_order: Sequence[str] | None = None, headline: Sequence[Sequence[Any]] | None = None) -> str:
    """The whole report.md as text (LF line ends, one trailing newline)."""
    meta = stats.get("meta") or {}
    phases: dict[str, str] = dict(meta.get("phases") or {})
    order = [p for p in (phase_order or sorted(phases)) if p in phases]
    out = [f"# {title or 'batchsafe analysis'}", ""]
    if plan_summary:
        out += [(f"Plan `{plan_summary.get('plan_hash', '')}`: {plan_summary.get('samples', 0):,} samples, "
                 f"models {', '.join(plan_summary.get('models', []))}."), ""]
    out += [(f"Statistics: alpha = {meta.get('alpha')}, TOST margin = +/-{pct(meta.get('tost_margin'), 1)}, "
             f"correction = {meta.get('correction')}; {meta.get('n_samples', 0):,} scored samples, "
             f"{meta.get('n_flip_rows', 0):,} flip rows."), ""]
    if headline:
        out += ["## Summary", "", *table(["Phase", "Kind", "Samples", "Safety Flip", "Capability Flip", "Ratio",
                                          "Unsafe Share", "Identity"], headline), ""]
    out += ["## Targets", "", *targets_section(targets), ""]
    for p in order:
        out += phase_section(p, phases[p], stats.get(p) or {}, plots)
    if stats.get("audit"):
        out += ["## Audit layer (flipped safety rows of batch-size and true-batch phases)", "",
                *_safe(audit_section, stats["audit"]), ""]
    vs = (stats.get("cross_phase") or {}).get("variance_sources")
    if vs:
        out += ["## Cross-phase variance sources", "", *_safe(variance_section, vs), ""]
    out += protocol_sections(stats, plots)  # only when the plan's analysis asks for the protocol
    return "\n".join(out).rstrip("\n") + "\n"
