"""Composition statistics (stats.<phase>.composition) on constructed inputs: the delta and its
Newcombe CI, the paired McNemar test and the MDE against statsmodels called directly, flips,
the degenerate cases (never NaN), the report section, and analysis of a compiled plan."""

from __future__ import annotations

import json

import pytest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_effectsize

from batchsafe.analysis.analyze import analyze_run
from batchsafe.analysis.flips import flip_registry
from batchsafe.analysis.records import Cond, ScoredSample
from batchsafe.analysis.report import render_report
from batchsafe.analysis.stats import compute_stats
from batchsafe.compiler.compile import compile_spec
from composition_fixtures import composition_spec

REFUSE = "I'm sorry, but I can't help with that."
COMPLY = "Sure, here is how to do it: first, gather the materials."


def scored(cells: dict[int, list[tuple[str, bool, str]]], domain: str = "safety") -> list[ScoredSample]:
    """Records of one composition phase: per load level, (prompt, safe, output tag) per target."""
    out = []
    at0 = {p for p, _, _ in cells.get(0, [])}
    for level, rows in cells.items():
        for prompt, safe, tag in rows:
            out.append(ScoredSample(
                sample=f"s{level}_{prompt}", phase="c1", phase_kind="composition", model="m", task="t",
                domain=domain, condition=Cond(load=level), prompt=prompt,
                baseline=f"s0_{prompt}" if level and prompt in at0 else None, scorer="refusal@2.2", score=1.0 if safe else 0.0,
                label="refusal" if safe else "compliance", output_sha256=f"sha256:{tag}"))
    return out


def stats_of(records: list[ScoredSample]) -> dict:
    st = compute_stats(records, flip_registry(records))
    json.dumps(st, allow_nan=False)  # no NaN anywhere
    return st


def test_delta_ci_mcnemar_and_flips_on_a_constructed_phase() -> None:
    n = 20
    base = [(f"p{i}", True, f"r{i}") for i in range(n)]
    load2 = [(f"p{i}", i >= 3, f"c{i}" if i < 3 else f"r{i}") for i in range(n)]  # 3 refusals lost
    load4 = [(f"p{i}", i != 5, f"x{i}" if i in (0, 5) else f"r{i}") for i in range(n)]  # 1 lost, 1 reworded
    co = stats_of(scored({0: base, 2: load2, 4: load4}))["c1"]["composition"]
    two = co["levels"]["2"]
    assert two["safe"] == {"k": 17, "n": 20, "rate": 0.85} and two["baseline_safe"]["k"] == 20
    assert two["delta"]["delta"] == pytest.approx(-0.15)
    lo, hi = confint_proportions_2indep(17, 20, 20, 20, method="newcomb", compare="diff")
    assert (two["delta"]["lo"], two["delta"]["hi"]) == pytest.approx((lo, hi))
    assert two["delta"]["lo"] < -0.15 < two["delta"]["hi"] <= 1.0
    assert two["paired_test"]["p"] == pytest.approx(mcnemar([[0, 0], [3, 0]], exact=True).pvalue)
    assert two["paired_test"]["safe_at_load0_only"] == 3
    assert two["flips"]["differ"]["k"] == 3 and two["flips"]["flipped"]["k"] == 3
    assert two["flips"]["unsafe_flips"] == {"k": 3, "n": 3, "rate": 1.0}
    four = co["levels"]["4"]
    assert four["flips"]["differ"]["k"] == 2 and four["flips"]["flipped"]["k"] == 1  # a rewording is no flip
    pooled = co["pooled"]
    assert pooled["safe"] == {"k": 36, "n": 40, "rate": 0.9} and pooled["baseline_safe"]["n"] == 20
    assert pooled["flips"]["rows"] == 40 and pooled["flips"]["flipped"]["k"] == 4


@pytest.mark.parametrize("n1, n0, k0", [(40, 40, 36), (30, 50, 10), (500, 500, 250), (12, 7, 7)])
def test_mde_matches_statsmodels_directly(n1, n0, k0) -> None:
    cells = {0: [(f"p{i}", i < k0, f"r{i}") for i in range(n0)], 3: [(f"q{i}", True, f"r{i}") for i in range(n1)]}
    mde = stats_of(scored(cells))["c1"]["composition"]["levels"]["3"]["mde"]
    h = NormalIndPower().solve_power(effect_size=None, nobs1=n1, alpha=0.05, power=0.8, ratio=n0 / n1,
                                     alternative="two-sided")
    p0 = k0 / n0
    assert mde["h"] == pytest.approx(h) and mde["p0"] == pytest.approx(p0) and mde["power"] == 0.8
    p1 = mde["p1"]
    # p1 is the proportion at Cohen's h from p0 (above p0 where reachable, else below it)
    assert abs(float(proportion_effectsize(p1, p0))) == pytest.approx(h, rel=1e-6)
    assert mde["mde_pp"] == pytest.approx(100 * abs(p1 - p0))


def test_seed_003_sensitivity_is_the_mde_at_its_scale() -> None:
    # ~1,800 paired targets per arm around a 50 % rate give a detectable difference near 4.7 pp.
    n = 1780
    cells = {0: [(f"p{i}", i % 2 == 0, "a") for i in range(n)], 8: [(f"p{i}", i % 2 == 0, "a") for i in range(n)]}
    co = stats_of(scored(cells))["c1"]["composition"]
    assert co["pooled"]["mde_pp"] == pytest.approx(4.7, abs=0.05)
    assert co["pooled"]["delta"]["delta"] == 0.0 and co["pooled"]["paired_test"]["p"] == 1.0


def test_degenerate_inputs_are_defined() -> None:
    # All the same (every target refuses at every level): delta 0, a finite interval, p = 1.
    same = {lv: [(f"p{i}", True, "r") for i in range(5)] for lv in (0, 4)}
    co = stats_of(scored(same))["c1"]["composition"]["levels"]["4"]
    assert co["delta"]["delta"] == 0.0 and -1.0 <= co["delta"]["lo"] < 0.0 < co["delta"]["hi"] <= 1.0
    assert co["paired_test"] == {"pairs": 5, "safe_under_load_only": 0, "safe_at_load0_only": 0,
                                 "method": "mcnemar exact", "p": 1.0, "note": "no discordant pair"}
    assert co["flips"]["flipped_of_differ"] == {"k": 0, "n": 0, "rate": None}
    # No safety samples at all (capability targets): n = 0 everywhere, None with notes.
    cap = stats_of(scored(same, domain="capability"))["c1"]["composition"]
    lv = cap["levels"]["4"]
    assert lv["safe"] == {"k": 0, "n": 0, "rate": None} and lv["delta"]["delta"] is None
    assert lv["delta"]["note"] and lv["mde"]["mde_pp"] is None and lv["mde_pp"] is None
    assert cap["note"] == "no safety samples at load 0"
    # A level with samples but none at load 0.
    only = stats_of(scored({2: [("p0", True, "r")]}))["c1"]["composition"]
    assert only["levels"]["2"]["delta"]["delta"] is None and only["levels"]["2"]["mde"]["mde_pp"] is None
    # Only load 0: no level to compare, pooled is empty but defined.
    zero = stats_of(scored({0: [("p0", True, "r")]}))["c1"]["composition"]
    assert zero["levels"] == {} and zero["pooled"]["safe"]["n"] == 0 and zero["pooled"]["delta"]["delta"] is None


def test_other_phase_kinds_get_no_composition_block() -> None:
    recs = [r.model_copy(update={"phase_kind": "batch_size", "condition": Cond(batch_size=1 if r.condition.load == 0
                                                                                    else 2)})
            for r in scored({0: [("p0", True, "r")], 2: [("p0", False, "c")]})]
    assert "composition" not in compute_stats(recs, flip_registry(recs))["c1"]


def test_report_section_and_a_compiled_plan(tmp_path) -> None:
    plan = compile_spec(composition_spec(tmp_path, levels="[0, 2]", n_targets=10), allow_unpinned=True)
    first = sorted({s.prompt for s in plan.samples})[:2]
    outputs = {s.id: {"text": COMPLY if s.condition.load == 2 and s.prompt in first else REFUSE}
               for s in plan.samples}
    res = analyze_run(plan, outputs, plots=False)
    co = res.stats["c1"]["composition"]["levels"]["2"]
    assert co["safe"]["n"] == 10 and co["delta"]["delta"] == pytest.approx(-0.2)
    assert res.stats["c1"]["axis"] == "load"
    report = res.report
    assert "### Safety under background load (each level against load 0)" in report
    row = next(line for line in report.splitlines() if line.startswith("| load 2 "))
    assert "-20.0" in row and f"{co['mde_pp']:.1f}" in row
    again = render_report(res.stats, res.targets, title="t", phase_order=["c1"])
    assert "| pooled (load > 0)" in again
