"""Seed 003's protocol statistics (analysis/stats/protocol*.py) against its published numbers and scipy.

Seed: /work/shared/seeds/003_f92e79f4600a6d4d.txt. What its text allows is rebuilt from
counts: the kernel ablation's 22/55 vs 0/55 and the corrected full-set rate of 0.16 %
(17 confirmed of 63 candidates). The seed does not list its 15 models' (instability,
fragility) pairs nor the per-model alignment data, so r = 0.909 [0.65, 0.97], p = 0.942
and eta-squared = 0.033 cannot be rebuilt; r, its bootstrap CI and the alignment tests
are checked against scipy on constructed data instead.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import numpy as np
import pytest
import scipy.stats as sps
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from batchsafe.analysis.analyze import analyze_scored
from batchsafe.analysis.records import Cond, ScoredSample
from batchsafe.analysis.stats.protocol_stats import (alignment_association, bootstrap_pearson, corrected_rate,
                                                      rate_ratio, variant_tests)

SAFETY_TASK, CAP_TASK = "advbench_refusal", "mcq"


# --- records from counts --------------------------------------------------------------------

def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def comparison(model: str, phase: str, kind: str, prompt: str, domain: str, base: dict, cond: dict,
               outcome: str) -> Iterator[ScoredSample]:
    """A baseline and one compared sample; outcome "same" (identical bytes), "differs" (label kept) or "flip"."""
    task, scorer = (SAFETY_TASK, "refusal@2.2") if domain == "safety" else (CAP_TASK, "mcq_letter@1.0")
    good, bad = ("refusal", "compliance") if domain == "safety" else ("correct", "incorrect")
    bid = f"{phase}:{model}:{prompt}:" + ",".join(f"{k}={v}" for k, v in sorted(base.items()))
    sid = f"{phase}:{model}:{prompt}:" + ",".join(f"{k}={v}" for k, v in sorted(cond.items()))
    common = dict(phase=phase, phase_kind=kind, model=model, task=task, domain=domain, prompt=prompt, scorer=scorer)
    yield ScoredSample(sample=bid, condition=Cond(**base), baseline=None, score=1.0, label=good,
                       output_sha256=_sha(bid), **common)
    label, score, text = {"same": (good, 1.0, bid), "differs": (good, 1.0, sid), "flip": (bad, 0.0, sid)}[outcome]
    yield ScoredSample(sample=sid, condition=Cond(**cond), baseline=bid, score=score, label=label,
                       output_sha256=_sha(text), **common)


def arm(model: str, phase: str, domain: str, n: int, flips: int, differs: int = 0, *, level: int = 8,
        kind: str = "batch_size") -> list[ScoredSample]:
    """n comparisons of batch size ``level`` vs 1: ``flips`` flip, ``differs`` differ without a flip, the rest identical."""
    out: list[ScoredSample] = []
    for i in range(n):
        outcome = "flip" if i < flips else "differs" if i < flips + differs else "same"
        out += comparison(model, phase, kind, f"{domain[0]}{i}@{level}", domain, {"batch_size": 1},
                          {"batch_size": level}, outcome)
    return out


def ablation(phase: str, model: str, counts: dict[str, tuple[int, int]]) -> list[ScoredSample]:
    """Per kernel variant, n safety candidates at batch size 8 vs 1 under the same variant, k of them flipped."""
    out: list[ScoredSample] = []
    for variant, (k, n) in counts.items():
        for i in range(n):
            out += comparison(model, phase, "kernel_ablation", f"c{i}", "safety", {"kernel": variant, "batch_size": 1},
                              {"kernel": variant, "batch_size": 8}, "flip" if i < k else "same")
    return out


def settings(**protocol) -> dict:
    return {"alpha": 0.05, "tost_margin": 0.03, "correction": "holm", "ci_level": 0.95,
            "protocol": {"bootstrap_resamples": 2000, "bootstrap_seed": 7, **protocol}}


# --- the seed's published numbers ------------------------------------------------------------

def test_kernel_ablation_22_of_55_vs_0_of_55_is_fishers_exact_test():
    scored = ablation("p_d", "qwen", {"default": (22, 55), "batch_invariant": (0, 55)})
    res = analyze_scored(scored, settings=settings(ablation=["p_d"]), plots=False)
    d = res.stats["protocol"]["study_d"]["by_phase"]["p_d"]
    v = d["all"]["variants"]
    assert (v["default"]["k"], v["default"]["n"], v["batch_invariant"]["k"], v["batch_invariant"]["n"]) == (22, 55, 0, 55)
    (test,) = d["all"]["tests"]
    # Variants in sorted order: batch_invariant (0/55) is row a, default (22/55) row b.
    assert test["table"] == [[0, 55], [22, 33]]
    assert test["fisher_p"] == pytest.approx(sps.fisher_exact([[22, 33], [0, 55]]).pvalue, rel=1e-12)
    assert 3.4e-8 < test["fisher_p"] < 3.5e-8 and test["significant"] is True
    assert d["prompts"] == 55 and d["safety"]["tests"][0]["fisher_p"] == test["fisher_p"]
    # Wilson intervals of each variant's flip share, as statsmodels gives them.
    lo, hi = proportion_confint(22, 55, method="wilson")
    assert (v["default"]["lo"], v["default"]["hi"]) == pytest.approx((lo, hi))
    assert "Fisher exact p = 0.000000" in res.report and "Study D: kernel ablation" in res.report


def test_adjudication_17_of_63_gives_the_seeds_0_16_percent():
    # The seed publishes 0.16 % but not its full-set size; 17 genuine flips are 0.16 % of a full set
    # of 10,303-10,967 comparisons (17/N rounds to 0.16 % exactly there): take 10,625 (= 17/0.0016).
    ok = [n for n in range(5000, 20000) if f"{100 * 17 / n:.2f}" == "0.16"]
    assert (ok[0], ok[-1]) == (10304, 10967)
    r = corrected_rate(63, 63, 17, 10625)
    assert r["full_set_rate"] == pytest.approx(17 / 10625) and f"{100 * r['full_set_rate']:.2f}%" == "0.16%"
    assert r["confirmed_share"]["rate"] == pytest.approx(17 / 63)
    lo, hi = proportion_confint(17, 63, method="wilson")
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((63 / 10625 * lo, 63 / 10625 * hi))
    assert r["ci_low"] < r["full_set_rate"] < r["ci_high"]
    # Only part of the candidates labelled: the labelled share is extrapolated to all candidates.
    part = corrected_rate(63, 40, 10, 10625)
    assert part["full_set_rate"] == pytest.approx(63 / 10625 * 10 / 40)
    with pytest.raises(ValueError):
        corrected_rate(63, 64, 17, 10625)


def test_parity_ratio_0_94_with_the_statsmodels_interval():
    r = rate_ratio(47, 5000, 50, 5000)
    assert r["ratio"] == pytest.approx(0.94)
    lo, hi = confint_proportions_2indep(47, 5000, 50, 5000, compare="ratio", method="log-adjusted")
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((lo, hi)) and lo < 0.94 < hi


# --- r and its bootstrap, against scipy --------------------------------------------------------

def _fifteen_models(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.02, 0.30, 15)
    return x, 0.05 * x + rng.normal(0.0, 0.002, 15)


def test_pearson_r_and_bootstrap_ci_match_scipy_and_are_seeded():
    x, y = _fifteen_models()
    a = bootstrap_pearson(x, y, resamples=9999, seed=11)
    assert a["r"] == pytest.approx(sps.pearsonr(x, y).statistic) and a["p"] == pytest.approx(sps.pearsonr(x, y).pvalue)
    assert a["ci_low"] < a["r"] < a["ci_high"] and a["degenerate_resamples"] == 0
    assert (a["resamples"], a["seed"]) == (9999, 11)
    # scipy's own paired percentile bootstrap (another resampling stream) agrees to Monte Carlo error.
    ref = sps.bootstrap((x, y), lambda u, v: sps.pearsonr(u, v).statistic, paired=True, vectorized=False,
                        n_resamples=9999, method="percentile", rng=np.random.default_rng(5)).confidence_interval
    assert a["ci_low"] == pytest.approx(ref.low, abs=0.02) and a["ci_high"] == pytest.approx(ref.high, abs=0.02)
    # Same seed: the same interval; another seed: another one.
    again = bootstrap_pearson(x, y, resamples=9999, seed=11)
    other = bootstrap_pearson(x, y, resamples=9999, seed=12)
    assert (again["ci_low"], again["ci_high"]) == (a["ci_low"], a["ci_high"])
    assert (other["ci_low"], other["ci_high"]) != (a["ci_low"], a["ci_high"])
    fit = sps.linregress(x, y)
    assert a["fit"]["slope"] == pytest.approx(fit.slope) and a["fit"]["intercept"] == pytest.approx(fit.intercept)


def test_study_b_through_the_analysis_with_alignment_tests_against_scipy():
    # Five models: non-identical outputs (instability) and safety flips (fragility) per model.
    plan = {"m1": (10, 2), "m2": (20, 4), "m3": (30, 5), "m4": (40, 9), "m5": (12, 1)}
    align = {"m1": "sft", "m2": "sft", "m3": "rlhf", "m4": "rlhf", "m5": "dpo"}
    scored: list[ScoredSample] = []
    for m, (differ, flips) in plan.items():
        scored += arm(m, "p_b", "safety", 100, flips, differ - flips)
        scored += arm(m, "p_b", "capability", 50, 1)
    res = analyze_scored(scored, settings=settings(cross_model=["p_b"]), alignment=align, plots=False)
    b = res.stats["protocol"]["study_b"]
    inst = [(plan[m][0] + 1) / 150 for m in sorted(plan)]
    frag = [plan[m][1] / 100 for m in sorted(plan)]
    assert [b["models"][m]["instability"]["rate"] for m in sorted(plan)] == pytest.approx(inst)
    assert [b["models"][m]["fragility"]["rate"] for m in sorted(plan)] == pytest.approx(frag)
    assert b["correlation"]["r"] == pytest.approx(sps.pearsonr(inst, frag).statistic)
    assert b["correlation"]["resamples"] == 2000 and b["correlation"]["seed"] == 7
    assert b["parity"]["ratio"]["ratio"] == pytest.approx((21 / 500) / (5 / 250))
    groups = {"dpo": [0.01], "rlhf": [0.05, 0.09], "sft": [0.02, 0.04]}
    an = b["alignment"]["anova"]
    f = sps.f_oneway(*groups.values())
    assert an["F"] == pytest.approx(f.statistic) and an["p"] == pytest.approx(f.pvalue)
    allv = np.concatenate([np.array(v) for v in groups.values()])
    between = sum(len(v) * (np.mean(v) - allv.mean()) ** 2 for v in groups.values())
    assert an["eta_sq"] == pytest.approx(between / ((allv - allv.mean()) ** 2).sum())
    kw = sps.kruskal(*groups.values())
    assert b["alignment"]["kruskal"]["H"] == pytest.approx(kw.statistic)
    assert b["alignment"]["kruskal"]["p"] == pytest.approx(kw.pvalue)
    assert "Study B: cross-model" in res.report and "Kruskal-Wallis" in res.report


# --- degenerate inputs ----------------------------------------------------------------------

def test_degenerate_correlations_have_notes_and_no_interval():
    one = bootstrap_pearson([0.1], [0.02], resamples=500, seed=1)
    assert (one["r"], one["ci_low"], one["ci_high"]) == (0.0, None, None) and "fewer than 3" in one["note"]
    flat = bootstrap_pearson([0.1, 0.1, 0.1, 0.1], [0.01, 0.02, 0.03, 0.04], resamples=500, seed=1)
    assert flat["ci_low"] is None and flat["fit"]["slope"] is None
    # Three models where most resamples repeat a model: those are counted, not NaN.
    three = bootstrap_pearson([0.1, 0.2, 0.3], [0.01, 0.03, 0.02], resamples=500, seed=1)
    assert three["degenerate_resamples"] > 0 and three["ci_low"] is not None
    json.dumps([one, flat, three], allow_nan=False)


def test_degenerate_alignment_candidates_and_variants():
    single = alignment_association({"a": 0.1, "b": 0.2}, {"a": "sft", "b": "sft"})
    assert single["anova"]["F"] is None and "fewer than two" in single["anova"]["note"]
    equal = alignment_association({"a": 0.1, "b": 0.1, "c": 0.1, "d": 0.1}, {"a": "sft", "b": "sft", "c": "dpo", "d": "dpo"})
    assert equal["kruskal"] == {"H": 0.0, "p": 1.0, "note": equal["kruskal"]["note"]} and equal["anova"]["eta_sq"] == 0.0
    unassigned = alignment_association({"a": 0.1, "b": 0.2, "c": 0.3}, {"a": "sft", "b": None})
    assert unassigned["unassigned"] == ["b", "c"]
    zero = corrected_rate(0, 0, 0, 1000)
    assert (zero["full_set_rate"], zero["ci_low"], zero["ci_high"]) == (0.0, 0.0, 0.0)
    none_labelled = corrected_rate(10, 0, 0, 1000)
    assert none_labelled["full_set_rate"] is None and (none_labelled["ci_low"], none_labelled["ci_high"]) == (0.0, 0.01)
    assert corrected_rate(0, 0, 0, 0)["full_set_rate"] is None
    lone = variant_tests({"default": (3, 10)})
    assert lone["tests"] == [] and "fewer than two" in lone["note"]
    both_zero = rate_ratio(0, 100, 0, 100)
    assert both_zero["ratio"] is None and "0/0" in both_zero["note"]
    json.dumps([single, equal, unassigned, zero, none_labelled, lone, both_zero], allow_nan=False)


def test_all_identical_outputs_and_one_model():
    scored = arm("only", "p_a", "safety", 20, 0) + arm("only", "p_a", "capability", 20, 0)
    res = analyze_scored(scored, settings=settings(discovery=["p_a"], cross_model=["p_a"]), plots=True)
    p = res.stats["protocol"]
    assert p["study_a"]["candidates"] == {"flipped": 0, "safety_flipped": 0, "full_set": 40}
    assert p["study_a"]["pooled"]["ratio"]["ratio"] is None
    b = p["study_b"]
    assert b["models"]["only"]["instability"]["rate"] == 0.0 and b["correlation"]["ci_low"] is None
    assert b["alignment"]["anova"]["F"] is None
    json.dumps(res.stats, allow_nan=False)
    assert "plots/protocol_study_a_flip_rates.png" in res.plots


# --- wiring -------------------------------------------------------------------------------------

def _study_a_records() -> list[ScoredSample]:
    out: list[ScoredSample] = []
    for level, (s, c) in {2: (1, 0), 4: (2, 1), 8: (4, 1)}.items():
        out += arm("m1", "p_a", "safety", 40, s, 3, level=level) + arm("m1", "p_a", "capability", 40, c, 2, level=level)
    return out


def test_protocol_only_when_the_settings_ask_and_figures_are_reproducible():
    scored = _study_a_records()
    plain = analyze_scored(scored, settings={"alpha": 0.05, "tost_margin": 0.03, "correction": "holm"})
    assert "protocol" not in plain.stats and "paired testing protocol" not in plain.report
    assert not any("protocol" in n for n in plain.plots)
    res = analyze_scored(scored, settings=settings(discovery=["p_a"]))
    assert {k: v for k, v in res.stats.items() if k != "protocol"} == plain.stats
    assert res.report.startswith(plain.report.rstrip("\n"))
    a = res.stats["protocol"]["study_a"]
    assert a["by_level"]["p_a"]["levels"]["8"]["safety"] == {"k": 4, "n": 40, "rate": 0.1}
    assert a["candidates"] == {"flipped": 9, "safety_flipped": 7, "full_set": 240}
    png = res.plots["plots/protocol_study_a_flip_rates.png"]
    assert png.startswith(b"\x89PNG") and analyze_scored(scored, settings=settings(discovery=["p_a"])).plots == res.plots
    assert "![protocol_study_a_flip_rates](plots/protocol_study_a_flip_rates.png)" in res.report
    assert "protocol_instability_fragility: not enough data" in res.report
