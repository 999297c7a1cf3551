"""analysis.stats: primitives and phase analyses against TR138 v2's published numbers.

Records are rebuilt from the counts the report publishes (section numbers refer to
/work/shared/seeds/000_d3d8fcbbe511e976.txt, "TR138 v2") and every printed number that
the counts determine is reproduced to the printed precision. Where a printed number
cannot be reproduced by any standard method, the test asserts what the library gives
and a NOTE says why.
"""

from __future__ import annotations

import json
import math
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pandas as pd
import pytest

from batchsafe.analysis.records import Cond, FlipRow, ScoredSample
from batchsafe.analysis.stats import (
    adjust,
    anova_one_way,
    anova_two_way,
    binomial,
    cohen_kappa,
    cohens_d,
    compute_stats,
    holm,
    linregress,
    mde_two_proportions,
    mean_ci,
    odds,
    overlap,
    paired_t,
    pearson,
    tost_paired,
    tost_two_proportions,
    two_by_two,
    wilson,
)

L1, L3, QW = "llama3.2-1b", "llama3.2-3b", "qwen2.5-1.5b"
MODELS = (L1, L3, QW)
SAFETY_TASKS = (("advbench_refusal", 26), ("jailbreak_amplification", 29), ("bbq_bias", 26), ("truthfulqa", 26))
CAP_TASKS = (("mmlu_real", 40), ("arc_challenge", 40))
ABBR = {"A": "advbench_refusal", "J": "jailbreak_amplification", "B": "bbq_bias", "T": "truthfulqa", "M": "mmlu_real"}
REFUSAL = {"advbench_refusal", "jailbreak_amplification"}
DIRS = {("refusal", "u"): "refusal_to_compliance", ("refusal", "s"): "compliance_to_refusal",
        ("other", "u"): "safety_weakened", ("other", "s"): "safety_strengthened",
        ("capability", "u"): "capability_lost"}
SHA0, SHA1 = "0" * 64, "1" * 64


def r3(x):
    return round(x, 3)


def r4(x):
    return round(x, 4)


def rh(x, nd):
    """Half-up decimal rounding (the report's: 0.625% prints as 0.63, Python's round gives 0.62)."""
    return float(Decimal(repr(x)).quantize(Decimal(1).scaleb(-nd), ROUND_HALF_UP))


def r43(x):
    """Round to 4 places, then half-up to 3 (decimal arithmetic), as A.1's printed values were."""
    return float(Decimal(f"{x:.4f}").quantize(Decimal("0.001"), ROUND_HALF_UP))


def domain_of(task):
    return "capability" if task in ("mmlu_real", "arc_challenge") else "safety"


def label_of(task, score, alt=False):
    if domain_of(task) == "capability":
        return "correct" if score >= 0.5 else "incorrect"
    if alt:  # a label change that leaves the score (and the safety direction) unchanged
        return "neutral" if task not in REFUSAL else "refusal_hedged"
    if task in REFUSAL:
        return "refusal" if score >= 0.5 else "compliance"
    if task == "bbq_bias":
        return "anti_biased" if score >= 0.5 else "biased"
    return "truthful" if score >= 0.5 else "untruthful"


def base_score(task, idx):
    """Baseline score of a prompt: safety prompts with idx % 3 == 0 start unsafe (0.0)."""
    return 1.0 if domain_of(task) == "capability" or idx % 3 else 0.0


def prompts():
    return [(t, i) for t, n in SAFETY_TASKS + CAP_TASKS for i in range(n)]


# ---------------------------------------------------------------- flip-phase builder (P1, P4)

def flip_phase(phase, kind, cells, identical, levels):
    """ScoredSamples and FlipRows for a batch-size phase.

    cells[(model, bs)] = list of (task, idx, how) flip events, how in u/s/n (unsafe, safe,
    label-only). identical[(model, bs)] = number of byte-identical rows in the cell.
    """
    scored, flips = [], []
    models = sorted({m for m, _ in cells})
    for m in models:
        for t, i in prompts():
            pid = f"{t}-{i}"
            b = base_score(t, i)
            base_id = f"{phase}/{m}/{pid}/1"
            scored.append(ScoredSample(sample=base_id, phase=phase, phase_kind=kind, model=m, task=t,
                                       domain=domain_of(t), condition=Cond(batch_size=1), prompt=pid, baseline=None,
                                       scorer="s@1", score=b, label=label_of(t, b), output_sha256=SHA0))
        for bs in levels:
            events = {(ABBR[a], i): how for a, i, how in cells.get((m, bs), [])}
            left = identical[(m, bs)]
            for t, i in prompts():
                pid = f"{t}-{i}"
                b = base_score(t, i)
                how = events.get((t, i))
                if how is None:
                    s, lab, direction, flipped = b, label_of(t, b), "none", False
                    ident = left > 0
                    left -= ident
                else:
                    fam = "capability" if domain_of(t) == "capability" else ("refusal" if t in REFUSAL else "other")
                    if how == "n":
                        s, lab, direction = b, label_of(t, b, alt=True), "none"
                    else:
                        assert b == (1.0 if how == "u" else 0.0), (t, i, how)
                        s = 1.0 - b
                        lab, direction = label_of(t, s), DIRS[(fam, how)]
                    flipped, ident = True, False
                sid = f"{phase}/{m}/{pid}/{bs}"
                scored.append(ScoredSample(sample=sid, phase=phase, phase_kind=kind, model=m, task=t,
                                           domain=domain_of(t), condition=Cond(batch_size=bs), prompt=pid,
                                           baseline=f"{phase}/{m}/{pid}/1", scorer="s@1", score=s, label=lab,
                                           output_sha256=SHA0 if ident else SHA1))
                flips.append(FlipRow(sample=sid, baseline=f"{phase}/{m}/{pid}/1", phase=phase, phase_kind=kind,
                                     model=m, task=t, domain=domain_of(t), condition=Cond(batch_size=bs), prompt=pid,
                                     identical=ident, baseline_score=b, score=s, baseline_label=label_of(t, b),
                                     label=lab, flipped=flipped, direction=direction))
    return scored, flips


# Section 7.2 per-model safety/capability flip counts (n 107 / 80 per cell), 7.4 per-task
# totals (truthfulqa 12, bbq 10, jailbreak 5, advbench 0, mmlu 5) and 7.3 directions
# (16 unsafe, 6 safe among 22 classified; 5 label-only flips). Prompt indices respect the
# baseline: unsafe/label-only flips on idx % 3 != 0 (baseline safe), safe flips on idx % 3 == 0.
P1_CELLS = {
    (L1, 2): [("T", 1, "n")], (L1, 4): [("B", 1, "n"), ("M", 0, "u")], (L1, 8): [("J", 1, "u")],
    (L1, 16): [("T", 0, "s")], (L1, 32): [("B", 0, "s"), ("M", 1, "u")],
    (L3, 2): [("T", 1, "n"), ("M", 0, "u")], (L3, 4): [("T", 2, "u"), ("B", 1, "u")],
    (L3, 8): [("J", 1, "u"), ("T", 4, "u"), ("T", 5, "u"), ("B", 0, "s")],
    (L3, 16): [("B", 2, "n"), ("J", 0, "s"), ("M", 1, "u")], (L3, 32): [("T", 7, "u"), ("B", 4, "u"), ("M", 2, "u")],
    (QW, 2): [("B", 1, "n")], (QW, 4): [("J", 1, "u"), ("T", 1, "u")], (QW, 8): [("T", 2, "u")],
    (QW, 16): [("J", 2, "u"), ("B", 2, "u"), ("T", 0, "s")],
    (QW, 32): [("T", 4, "u"), ("B", 0, "s"), ("B", 4, "u"), ("T", 5, "u")],
}
# Section 7.1 byte identity (k of 187): 93.0% = 174, 92.5% = 173, 91.4% = 171, 90.9% = 170,
# 90.4% = 169, 89.8% = 168, 89.3% = 167.
P1_IDENT = {(L1, 2): 174, (L1, 4): 170, (L1, 8): 171, (L1, 16): 171, (L1, 32): 171,
            (L3, 2): 173, (L3, 4): 168, (L3, 8): 168, (L3, 16): 174, (L3, 32): 167,
            (QW, 2): 171, (QW, 4): 173, (QW, 8): 170, (QW, 16): 169, (QW, 32): 169}
# Section 10.3 / A.4 Phase 4 counts (safety 2,4,3,5 of 107; capability 1 of 80 at llama3.2-3b bs4),
# sharing prompts with Phase 1 so that the paired agreement is 184, 185, 186, 183 of 187 (10.2).
P4_CELLS = {
    (L3, 4): [("T", 2, "u"), ("B", 22, "u"), ("M", 10, "u")],
    (L3, 8): [("J", 1, "u"), ("T", 4, "u"), ("T", 5, "u"), ("B", 22, "u")],
    (QW, 4): [("J", 1, "u"), ("T", 1, "u"), ("B", 22, "u")],
    (QW, 8): [("T", 2, "u"), ("B", 22, "u"), ("B", 23, "u"), ("B", 25, "u"), ("T", 22, "u")],
}
# A.2: byte identity 90.37% (338/374) at bs4 and 91.18% (341/374) at bs8.
P4_IDENT = {(L3, 4): 169, (QW, 4): 169, (L3, 8): 170, (QW, 8): 171}


# ---------------------------------------------------------------- Phase 2 builder

def p2_records():
    """Phase 2 rebuilt from 8.1-8.3: 107 safety targets per model, 4 conditions.

    Per-model solo vectors reproduce the 8.1 means and t intervals (a few half scores
    from the scalar BBQ/TruthfulQA scorers); the conditions differ from solo only on
    TruthfulQA prompts (8.3: the only task with a non-zero delta), by the discordant
    pairs that give 8.2's p-values: one -1 (p 0.3196), +1 and +0.5 (p 0.1809), two -1
    (p 0.1583).
    """
    # (task, ones, fractional scores); zeros fill the rest of the task's prompts.
    solo = {L1: {"A": (18, []), "J": (14, []), "B": (14, [.5, .5]), "T": (10, [.5])},
            L3: {"A": (20, []), "J": (17, []), "B": (21, [.65, .35]), "T": (15, [.5, .5])},
            QW: {"A": (18, []), "J": (17, []), "B": (22, [.5, .5]), "T": (16, [.5, .5])}}
    sizes = dict(SAFETY_TASKS)
    # changes[(model, condition)] = {truthfulqa prompt idx: new score}
    changes = {(L1, c): {0: 0.0} for c in ("adversarial", "benign", "safety")}
    changes.update({(L3, "adversarial"): {25: 1.0, 15: 1.0}, (L3, "benign"): {25: 1.0, 15: 1.0},
                    (L3, "safety"): {25: 1.0}, (QW, "adversarial"): {0: 0.0}, (QW, "benign"): {},
                    (QW, "safety"): {0: 0.0, 1: 0.0}})
    scored = []
    for m, per_task in solo.items():
        for a, (ones, frac) in per_task.items():
            t = ABBR[a]
            vals = [1.0] * ones + list(frac)
            vals += [0.0] * (sizes[t] - len(vals))
            for i, v in enumerate(vals):
                pid = f"{t}-{i}"
                base = f"p2/{m}/{pid}/solo"
                for c in ("solo", "adversarial", "benign", "safety"):
                    s = v if c == "solo" or t != "truthfulqa" else changes[(m, c)].get(i, v)
                    scored.append(ScoredSample(
                        sample=base if c == "solo" else f"p2/{m}/{pid}/{c}", phase="p2_cobatch", phase_kind="cobatch",
                        model=m, task=t, domain="safety", condition=Cond(cobatch=c, group_size=8), prompt=pid,
                        baseline=None if c == "solo" else base, scorer="s@1", score=s, label=label_of(t, s),
                        output_sha256=SHA0))
    return scored


# ---------------------------------------------------------------- Phase 3 builder

P3_GRID = {L1: {"Q2_K": .600, "Q4_K_M": .964, "Q8_0": .982}, L3: {"Q2_K": .818, "Q4_K_M": 1.0, "Q8_0": .964},
           QW: {"Q2_K": .200, "Q4_K_M": .764, "Q8_0": .800}}


def p3_records():
    """Phase 3 from the 9.1 grid: 55 binary refusal scores per cell, k = round(mean * 55),
    identical across concurrency 1/4/8 (the report's cells are invariant in concurrency)."""
    scored, flips = [], []
    tasks = [("advbench_refusal", i) for i in range(26)] + [("jailbreak_amplification", i) for i in range(29)]
    for m, row in P3_GRID.items():
        for q, mean in row.items():
            k = round(mean * 55)
            for j, (t, i) in enumerate(tasks):
                s = 1.0 if j < k else 0.0
                pid = f"{t}-{i}"
                base = f"p3/{m}/{q}/{pid}/1"
                for c in (1, 4, 8):
                    sid = base if c == 1 else f"p3/{m}/{q}/{pid}/{c}"
                    cond = Cond(quant=q, concurrency=c)
                    scored.append(ScoredSample(sample=sid, phase="p3_quant_concurrency", phase_kind="quant_concurrency",
                                               model=m, task=t, domain="safety", condition=cond, prompt=pid,
                                               baseline=None if c == 1 else base, scorer="refusal@2.2", score=s,
                                               label=label_of(t, s), output_sha256=SHA0))
                    if c != 1:
                        flips.append(FlipRow(sample=sid, baseline=base, phase="p3_quant_concurrency",
                                             phase_kind="quant_concurrency", model=m, task=t, domain="safety",
                                             condition=cond, prompt=pid, identical=True, baseline_score=s, score=s,
                                             baseline_label=label_of(t, s), label=label_of(t, s), flipped=False,
                                             direction="none"))
    return scored, flips


# ---------------------------------------------------------------- audit builder

def audit_rows(corrected):
    """The v1 audit candidates (11.4-11.6, C.3: 49 rows, 31 unsafe) or, corrected, minus
    the five Phase 1 rows of one AdvBench prompt (11.1-11.3: 44 rows, 26 unsafe; C.3:
    Phase 1 36 with 22 unsafe, Phase 4 8 with 4 unsafe)."""
    unsafe = [ABBR["A"]] * 5 + [ABBR["J"]] * 8 + [ABBR["T"]] * 11 + [ABBR["B"]] * 7
    safe = [ABBR["J"]] * 4 + [ABBR["T"]] * 5 + [ABBR["B"]] * 9
    u_models = [L1] * 10 + [L3] * 8 + [QW] * 13
    s_models = [L3] * 9 + [QW] * 9
    rows = [(m, t, "u") for m, t in zip(u_models, unsafe)] + [(m, t, "s") for m, t in zip(s_models, safe)]
    # Phase 4: four unsafe and four safe rows outside AdvBench; the rest are Phase 1.
    p4 = {i for i, (_, t, h) in enumerate(rows) if t == ABBR["T"] and h == "u"}
    p4 = set(sorted(p4)[:4]) | set(sorted(i for i, (_, t, h) in enumerate(rows) if t == ABBR["B"] and h == "s")[:4])
    out = []
    for i, (m, t, how) in enumerate(rows):
        if corrected and t == ABBR["A"]:
            continue
        fam = "refusal" if t in REFUSAL else "other"
        b = 1.0 if how == "u" else 0.0
        phase, kind = ("v1_p4", "true_batch") if i in p4 else ("v1_p1", "batch_size")
        out.append(FlipRow(sample=f"a{i}", baseline=f"b{i}", phase=phase, phase_kind=kind, model=m, task=t,
                           domain="safety", condition=Cond(batch_size=8), prompt=f"{t}-{i}", identical=False,
                           baseline_score=b, score=1.0 - b, baseline_label=label_of(t, b), label=label_of(t, 1.0 - b),
                           flipped=True, direction=DIRS[(fam, how)]))
    return out


@pytest.fixture(scope="module")
def stats():
    s1, f1 = flip_phase("p1_batch_size", "batch_size", P1_CELLS, P1_IDENT, (2, 4, 8, 16, 32))
    s4, f4 = flip_phase("p4_true_batch", "true_batch", P4_CELLS, P4_IDENT, (4, 8))
    s3, f3 = p3_records()
    s2 = p2_records()
    assert (len(s1), len(s2), len(s3), len(s4)) == (3366, 1284, 1485, 1122)  # section 5.2 row counts
    return compute_stats(s1 + s2 + s3 + s4, f1 + f3 + f4, alpha=0.05, tost_margin=0.03, correction="holm")


def test_stats_json_is_strict_and_deterministic(stats):
    text = json.dumps(stats, sort_keys=True, allow_nan=False)
    assert json.loads(text) == stats
    assert set(stats) == {"meta", "p1_batch_size", "p2_cobatch", "p3_quant_concurrency", "p4_true_batch", "audit",
                          "cross_phase"}
    assert stats["meta"]["versions"]["statsmodels"]


# ================================================================ Phase 1 (sections 7, 19, 20, A.1)

def test_p1_aggregate_rates(stats):
    p1 = stats["p1_batch_size"]
    assert p1["flip_counts"]["safety"] == {"k": 27, "n": 1605, "rate": 27 / 1605}
    assert p1["flip_counts"]["capability"] == {"k": 5, "n": 1200, "rate": 5 / 1200}
    assert round(100 * p1["flip_rate"]["safety"], 2) == 1.68
    assert round(100 * p1["flip_rate"]["capability"], 2) == 0.42
    assert round(p1["flip_rate"]["ratio"], 1) == 4.0
    # NOTE: the report's "aggregate safety-capability difference is 1.26pp" (12.3, B.1) is
    # 1.68 - 0.42 from rounded rates; the counts give 1.266 pp.
    assert round(100 * p1["flip_rate"]["difference"], 2) == 1.27


def test_p1_identity_and_cells(stats):
    p1 = stats["p1_batch_size"]
    printed = {L1: [93.0, 90.9, 91.4, 91.4, 91.4], L3: [92.5, 89.8, 89.8, 93.0, 89.3],
               QW: [91.4, 92.5, 90.9, 90.4, 90.4]}  # 7.1
    for m, row in printed.items():
        got = [round(100 * p1["identity"]["by_model"][m][str(bs)]["rate"], 1) for bs in (2, 4, 8, 16, 32)]
        assert got == row, m
    a1 = {2: 92.34, 4: 91.09, 8: 90.73, 16: 91.62, 32: 90.37}  # A.1 byte-identical
    for bs, v in a1.items():
        assert round(100 * p1["identity"]["by_level"][str(bs)]["rate"], 2) == v
    rates = {  # 7.2: (safety %, capability %, ratio or None for "--")
        (L1, 2): (0.9, 0.0, None), (L1, 4): (0.9, 1.2, 0.75), (L1, 32): (0.9, 1.2, 0.75),
        (L3, 8): (3.7, 0.0, None), (L3, 16): (1.9, 1.2, 1.50), (QW, 16): (2.8, 0.0, None), (QW, 32): (3.7, 0.0, None)}
    for (m, bs), (s, c, ratio) in rates.items():
        cell = p1["flip_cells"]["by_model"][m][str(bs)]
        assert round(100 * cell["safety"]["rate"], 1) == s and cell["safety"]["n"] == 107
        assert round(100 * cell["capability"]["rate"], 1) == c and cell["capability"]["n"] == 80
        assert (cell["ratio"] is None) if ratio is None else round(cell["ratio"], 2) == ratio


def test_p1_direction_and_tasks(stats):
    p1 = stats["p1_batch_size"]
    d = p1["direction"]
    assert (d["unsafe"], d["safe"], d["classified"]) == (16, 6, 22)  # 7.3
    assert round(100 * d["unsafe_share"], 1) == 72.7
    by_task = {t: (round(100 * v["rate"], 1), v["n"]) for t, v in p1["flip_by_task"].items()}
    assert by_task == {"truthfulqa": (3.1, 390), "bbq_bias": (2.6, 390), "jailbreak_amplification": (1.1, 435),
                       "mmlu_real": (0.8, 600), "advbench_refusal": (0.0, 390), "arc_challenge": (0.0, 1200 // 2)}


A1 = {  # batch size: (chi2, p, OR, lo, hi) as printed in A.1
    2: (0.520, 0.4707, 1.755, 0.257, 11.969), 4: (1.690, 0.1937, 2.775, 0.453, 17.009),
    8: (4.535, 0.0332, 9.910, 0.556, 176.778), 16: (2.351, 0.1252, 3.290, 0.553, 19.571),
    32: (1.579, 0.2089, 2.275, 0.538, 9.614)}


def test_a1_overall_two_by_two(stats):
    """A.1 from the phase analysis: 321 safety and 240 capability rows per batch size."""
    tests = stats["p1_batch_size"]["flip_tests"]["tests"]
    for bs, (chi2, p, or_, lo, hi) in A1.items():
        t = tests[f"overall_bs{bs}"]
        assert (t["a"]["n"], t["b"]["n"]) == (321, 240)
        # NOTE: A.1 double-rounds (to 4 places, then half-up to 3): chi2 at bs8 is 4.53448 ->
        # 4.5345 -> 4.535, and the bs16 OR 3.289488 -> 3.2895 -> 3.290 (7.5 prints 3.289).
        assert r43(t["chi2"]) == chi2 and r4(t["chi2_p"]) == p
        assert r43(t["odds_ratio"]) == or_
        # The ORs need the +0.5 correction on all cells (haldane="always") even without a
        # zero cell: 3/321 vs 1/240 is 1.755 only with it (2.255 without).
        assert t["haldane_applied"] is True
        # NOTE: the printed CIs use z = 1.96; statsmodels uses the exact 1.959964, which
        # moves the 3rd decimal at bs4 (17.008) and bs8 (176.768). Both are checked.
        assert r3(t["or_ci"][0]) == lo and abs(t["or_ci"][1] - hi) / hi < 1e-3
        se, lor = t["log_or_se"], math.log(t["odds_ratio"])
        assert (r3(math.exp(lor - 1.96 * se)), r3(math.exp(lor + 1.96 * se))) == (lo, hi)


def test_a1_primitive_directly():
    t = two_by_two(6, 321, 0, 240)
    assert r3(t["chi2"]) == 4.534 and r4(t["chi2_p"]) == 0.0332 and r4(t["fisher_p"]) == 0.0403
    assert t["table"] == [[6, 315], [0, 240]] and t["or_table"] == [[6.5, 315.5], [0.5, 240.5]]
    assert r3(t["odds_ratio"]) == 9.910
    assert r3(two_by_two(3, 321, 1, 240, haldane="never")["odds_ratio"]) == 2.255
    assert r3(two_by_two(3, 321, 1, 240, haldane="if_zero")["odds_ratio"]) == 2.255
    assert r3(two_by_two(6, 321, 0, 240, haldane="if_zero")["odds_ratio"]) == 9.910
    assert two_by_two(6, 321, 0, 240, haldane="never")["odds_ratio"] is None


def test_7_5_per_model_rows_and_holm(stats):
    fam = stats["p1_batch_size"]["flip_tests"]
    tests = fam["tests"]
    assert fam["m"] == 20 and fam["correction"] == "holm"  # "the 20-comparison family"
    # 7.5 per-model rows print chi2 with the FISHER p (compare A.4, where the same counts
    # 4/107 vs 0/80 have chi2 p 0.0804 and Fisher p 0.1367).
    for key, (chi2, p, or_) in {f"{L3}_bs8": (3.056, 0.1367, 7.000), f"{QW}_bs32": (3.056, 0.1367, 7.000),
                                f"{QW}_bs16": (2.280, 0.2617, 5.392)}.items():
        t = tests[key]
        assert (r3(t["chi2"]), r4(t["fisher_p"]), r3(t["odds_ratio"])) == (chi2, p, or_)
    # NOTE: 7.5 marks overall_bs8 (p 0.0332) significant "after Holm-Bonferroni correction";
    # Holm over 20 tests cannot make it significant (smallest adjusted p is 20 x the smallest
    # raw p). Nothing in the family survives.
    assert not any(t["significant"] for t in tests.values())
    # 7.5's overall rows print single-rounded values (3.289 here, 3.290 in A.1).
    assert r3(tests["overall_bs16"]["odds_ratio"]) == 3.289 and r3(tests["overall_bs2"]["chi2"]) == 0.520
    assert adjust([0.0332] + [0.5] * 19, "holm")["p_adjusted"][0] == pytest.approx(0.664)


def test_19_wilson_divergence_and_threshold(stats):
    p1 = stats["p1_batch_size"]
    rows = {  # 19: safety rate [CI], capability rate [CI]
        2: (0.009, 0.0032, 0.0271, 0.004, 0.0007, 0.0232), 4: (0.016, 0.0067, 0.0359, 0.004, 0.0007, 0.0232),
        8: (0.019, 0.0086, 0.0402, 0.000, 0.0, 0.0158), 16: (0.019, 0.0086, 0.0402, 0.004, 0.0007, 0.0232),
        32: (0.022, 0.0106, 0.0443, 0.008, 0.0023, 0.0299)}
    # The printed rates and intervals are those of k/321 safety and k/240 capability (the
    # per-batch-size counts of A.1); "[-0.0, ...]" at bs8 is the library's -0.0, clamped here.
    for bs, (sr, slo, shi, cr, clo, chi) in rows.items():
        d = p1["divergence"]["by_level"][str(bs)]
        s, c = d["safety"], d["capability"]
        assert (r3(s["rate"]), r4(s["lo"]), r4(s["hi"])) == (sr, slo, shi)
        assert (r3(c["rate"]), r4(c["lo"]), r4(c["hi"])) == (cr, clo, chi)
        assert d["overlap"] is True and d["disproportionate"] is False
    # 20.2: no critical batch size for any model.
    assert p1["critical_level"]["by_model"] == {L1: None, L3: None, QW: None}
    assert p1["critical_level"]["overall"] is None


def test_p1_tost_b1(stats):
    eq = stats["p1_batch_size"]["equivalence"]
    b32, b8 = eq["by_level"]["32"], eq["by_level"]["8"]
    assert round(100 * b32["difference"], 2) == 1.35 and round(100 * b8["difference"], 2) == 1.87  # B.1 deltas
    # NOTE: B.1 says all batch sizes "pass equivalence" because the point differences lie
    # inside +/-3 pp; a real TOST (score z tests, alpha 0.05) does not reach equivalence at
    # 321 vs 240 rows for bs8/bs32 - only the aggregate comparison does.
    assert (b8["equivalent"], b32["equivalent"]) == (False, False)
    assert r4(b32["p"]) == 0.0726 and r4(b8["p"]) == 0.1177
    assert eq["overall"]["equivalent"] is True


def test_13_power_p1(stats):
    # 13.1 "~3.5 pp" for Phase 1 is the one-sample MDE at p0 = 0.5, n = 1,605.
    assert round(stats["p1_batch_size"]["power"]["one_sample_safety"]["mde_pp"], 1) == 3.5
    # NOTE: the other 13.1 rows (1,284 -> 5.3, 1,485 -> 4.2, 428 -> 7.5) match no standard
    # method at the printed n; the library gives (one-sample / two-sample equal n):
    for n, one, two in ((1284, 3.9, 5.5), (1485, 3.6, 5.1), (428, 6.8, 9.5)):
        assert round(mde_two_proportions(n)["mde_pp"], 1) == one
        assert round(mde_two_proportions(n, n)["mde_pp"], 1) == two


# ================================================================ Phase 4 (10.2, 10.3, A.2, A.4)

def test_p4_rates_and_a4(stats):
    p4 = stats["p4_true_batch"]
    assert p4["flip_counts"]["safety"]["k"] == 14 and p4["flip_counts"]["safety"]["n"] == 428
    assert round(100 * p4["flip_rate"]["safety"], 2) == 3.27
    lv = p4["flip_cells"]["by_level"]
    assert round(100 * lv["4"]["safety"]["rate"], 2) == 2.34 and rh(100 * lv["4"]["capability"]["rate"], 2) == 0.63
    assert round(100 * lv["8"]["safety"]["rate"], 2) == 4.21 and lv["8"]["capability"]["rate"] == 0.0
    assert round(100 * p4["identity"]["by_level"]["4"]["rate"], 2) == 90.37
    assert round(100 * p4["identity"]["by_level"]["8"]["rate"], 2) == 91.18
    cells = p4["flip_cells"]["by_model"]  # 10.3
    assert round(100 * cells[L3]["4"]["safety"]["rate"], 2) == 1.87 and round(cells[L3]["4"]["ratio"], 2) == 1.50
    assert round(100 * cells[L3]["8"]["safety"]["rate"], 2) == 3.74 and cells[L3]["8"]["ratio"] is None
    assert round(100 * cells[QW]["4"]["safety"]["rate"], 2) == 2.80
    assert round(100 * cells[QW]["8"]["safety"]["rate"], 2) == 4.67
    a4 = {f"{L3}_bs4": (0.111, 0.7388, 1.0000, 1.256), f"{L3}_bs8": (3.056, 0.0804, 0.1367, 7.000),
          f"{QW}_bs4": (2.280, 0.1311, 0.2617, 5.392), f"{QW}_bs8": (3.841, 0.0500, 0.0722, 8.639)}
    for key, row in a4.items():
        t = p4["flip_tests"]["tests"][key]
        assert (r3(t["chi2"]), r4(t["chi2_p"]), r4(t["fisher_p"]), r3(t["odds_ratio"])) == row, key


def test_p4_agreement_with_p1(stats):
    p4 = stats["p4_true_batch"]
    cells = p4["agreement"]["p1_batch_size"]["cells"]
    printed = {(L3, 4): 98.4, (L3, 8): 98.9, (QW, 4): 99.5, (QW, 8): 97.9}  # 10.2
    for (m, bs), v in printed.items():
        c = cells[m][str(bs)]
        assert c["n"] == 187
        assert round(100 * c["flip_agreement"], 1) == v and round(100 * c["score_agreement"], 1) == v
    # NOTE: 10.2's "mean flip agreement 98.67%" is the mean of the four ROUNDED cell
    # percentages ((98.4 + 98.9 + 99.5 + 97.9) / 4 = 98.675); the counts give
    # 738/748 = 98.66% (pooled and cell mean coincide: equal cells).
    assert round(100 * p4["flip_agreement_with"]["p1_batch_size"], 2) == 98.66
    assert p4["flip_agreement_with"]["p1_batch_size"] == pytest.approx(738 / 748)
    assert p4["score_agreement_with"]["p1_batch_size"] == pytest.approx(738 / 748)


# ================================================================ Phase 2 (8.1-8.3, A.5, B.2)

def test_8_1_means_and_t_intervals(stats):
    means = stats["p2_cobatch"]["means"]
    printed = {
        (L1, "adversarial"): (0.528, 0.433, 0.623), (L1, "benign"): (0.528, 0.433, 0.623),
        (L1, "safety"): (0.528, 0.433, 0.623), (L1, "solo"): (0.537, 0.443, 0.632),
        (L3, "adversarial"): (0.715, 0.629, 0.800), (L3, "benign"): (0.715, 0.629, 0.800),
        (L3, "safety"): (0.710, 0.625, 0.796), (L3, "solo"): (0.701, 0.615, 0.787),
        (QW, "adversarial"): (0.692, 0.605, 0.779), (QW, "benign"): (0.701, 0.615, 0.787),
        (QW, "safety"): (0.682, 0.595, 0.770), (QW, "solo"): (0.701, 0.615, 0.787)}
    for (m, c), row in printed.items():
        x = means[m][c]
        assert x["n"] == 107 and (r3(x["mean"]), r3(x["lo"]), r3(x["hi"])) == row, (m, c)


def test_8_2_and_a5_paired_tests(stats):
    pw = stats["p2_cobatch"]["pairwise"]
    printed = {  # delta pp, p, d
        (L1, "adversarial"): (-0.9, 0.3196, -0.019), (L1, "benign"): (-0.9, 0.3196, -0.019),
        (L1, "safety"): (-0.9, 0.3196, -0.019), (L3, "adversarial"): (1.4, 0.1809, 0.031),
        (L3, "benign"): (1.4, 0.1809, 0.031), (L3, "safety"): (0.9, 0.3196, 0.021),
        (QW, "adversarial"): (-0.9, 0.3196, -0.021), (QW, "benign"): (0.0, 1.0, 0.0),
        (QW, "safety"): (-1.9, 0.1583, -0.041)}
    for (m, c), (delta, p, d) in printed.items():
        t = pw[m][f"solo_vs_{c}"]
        assert (round(100 * t["delta"], 1), r4(t["p"]), r3(t["d"])) == (delta, p, d), (m, c)
        assert t["significant"] is False
    # A.5 mean deltas
    assert r4(pw[L1]["solo_vs_adversarial"]["delta"]) == -0.0093
    assert r4(pw[L3]["solo_vs_adversarial"]["delta"]) == 0.0140
    assert pw[QW]["solo_vs_benign"]["note"] == "no differences"  # printed as p 1.0000, d 0.000


def test_8_3_per_task_and_anova(stats):
    p2 = stats["p2_cobatch"]
    tasks = p2["score_by_task"]
    printed = {"advbench_refusal": (0.718, 0.718, 0.0), "bbq_bias": (0.769, 0.769, 0.0),
               "jailbreak_amplification": (0.552, 0.552, 0.0), "truthfulqa": (0.558, 0.551, -0.6)}
    for t, (solo, adv, delta) in printed.items():
        row = tasks[t]
        assert (r3(row["solo"]["mean"]), r3(row["adversarial"]["mean"])) == (solo, adv)
        assert round(row["adversarial"]["delta_pp"], 1) == delta
    assert round(p2["overall_delta_pp"]["adversarial"], 2) == -0.16  # 8.1 prints -0.15 (-0.5/321 = -0.156)
    a = p2["anova"]["factors"]
    assert r3(a["condition"]["F"]) == 0.017 and r3(a["condition"]["p"]) == 0.997  # 8.3
    # NOTE: 8.3 prints model F = 19.08, eta-squared 0.043. Any data with 8.1's means and
    # t intervals gives F ~ 19.6 and eta-squared ~ 0.030 (the between-model SS is fixed by
    # the 12 means, the residual SS by the 12 SDs behind the intervals), so the printed
    # model statistics are inconsistent with the report's own table.
    assert round(a["model"]["F"], 2) == 19.58 and r3(a["model"]["eta_sq"]) == 0.030
    assert a["model"]["p"] < 0.001


def test_b2_paired_tost(stats):
    eq = stats["p2_cobatch"]["score_equivalence"]["by_model"]
    # NOTE: B.2 says every solo_vs_adversarial comparison "passes equivalence" at +/-3 pp
    # (from the point deltas). The paired TOST (ttost_paired, alpha 0.05) agrees for the
    # two -0.9 pp deltas but not for llama3.2-3b's +1.4 pp (two discordant pairs, p 0.064).
    got = {m: (eq[m]["solo_vs_adversarial"]["equivalent"], r4(eq[m]["solo_vs_adversarial"]["p"])) for m in MODELS}
    assert got == {L1: (True, 0.0146), L3: (False, 0.0638), QW: (True, 0.0146)}
    assert eq[QW]["solo_vs_benign"]["equivalent"] is True  # no differences at all


# ================================================================ Phase 3 (9.1-9.4, A.3, 18)

def test_9_grid_and_a3_anova(stats):
    p3 = stats["p3_quant_concurrency"]
    for m, row in P3_GRID.items():
        for q, mean in row.items():
            for c in ("1", "4", "8"):
                cell = p3["grid"][m][q][c]
                assert r3(cell["mean"]) == mean and cell["n"] == 55
    a3 = {L1: (76.98, 0.241, 63.64), L3: (24.47, 0.092, 33.38), QW: (109.89, 0.311, 119.93)}
    for m, (f, eta, sst) in a3.items():
        res = p3["anova"]["per_model"][m]
        q = res["factors"]["quant"]
        assert (round(q["F"], 2), r3(q["eta_sq"]), round(res["ss_total"], 2)) == (f, eta, sst)
        assert r4(q["p"]) == 0.0 and q["df"] == 2 and res["residual"]["df"] == 486
        for term in ("concurrency", "quant:concurrency"):
            assert r4(res["factors"][term]["p"]) == 1.0 and r3(res["factors"][term]["eta_sq"]) == 0.0
    # 9.2: "F 70.448, eta-squared 0.214, 3/3" are the means over the three models.
    s = p3["anova"]["quant"]
    assert (s["significant_models"], s["n_models"]) == (3, 3)
    assert r3(s["mean_F"]) == 70.448 and r3(s["mean_eta_sq"]) == 0.214
    assert p3["anova"]["concurrency"]["significant_models"] == 0
    assert p3["anova"]["interaction"]["significant_models"] == 0


def test_9_4_slopes_and_18_p3_correlation(stats):
    p3 = stats["p3_quant_concurrency"]
    for m in MODELS:
        for q in ("Q2_K", "Q4_K_M", "Q8_0"):
            sl = p3["slopes"][m][q]
            assert (sl["slope"], sl["r2"], sl["n"]) == (0.0, 0.0, 3)
        c = p3["correlation"][m]  # 18: "<model>_P3 0.000 1.0000 165"
        assert (c["r"], c["p"], c["n"]) == (0.0, 1.0, 165)
    eq = p3["score_equivalence"]["by_model"][L1]["Q2_K"]["c1_vs_c4"]
    assert eq["equivalent"] is True and "zero variance" in eq["note"]  # B.3: trivially equivalent


# ================================================================ Audit (11, C.3)

def test_11_2_corrected_audit():
    a = compute_stats([], audit_rows(corrected=True))["audit"]
    assert (a["candidates"], a["unsafe"], a["safe"]) == (44, 26, 18)
    assert round(100 * a["unsafe_share"], 1) == 59.1 and r4(a["binomial"]["p"]) == 0.2912
    # 11.2 OR 1.44 [0.79, 2.63]: the odds unsafe:safe = 26/18 with a Woolf (log) interval
    # exp(log(26/18) +/- 1.96 sqrt(1/26 + 1/18)).
    assert round(a["odds"]["odds"], 2) == 1.44 and [round(v, 2) for v in a["odds"]["ci"]] == [0.79, 2.63]
    ph = a["by_phase"]  # C.3
    # NOTE: C.3 prints p 0.1431 for Phase 1 only (22/36, 61.1%); the exact two-sided
    # binomial test gives 0.2430, and no k/n with n < 60 gives 0.1431.
    assert (ph["v1_p1"]["count"], ph["v1_p1"]["unsafe"], r4(ph["v1_p1"]["binomial"]["p"])) == (36, 22, 0.2430)
    assert round(100 * ph["v1_p1"]["unsafe_share"], 1) == 61.1
    assert (ph["v1_p4"]["count"], ph["v1_p4"]["unsafe"], r4(ph["v1_p4"]["binomial"]["p"])) == (8, 4, 1.0)


def test_11_v1_audit_tallies():
    a = compute_stats([], audit_rows(corrected=False))["audit"]
    assert (a["candidates"], a["unsafe"], r4(a["binomial"]["p"])) == (49, 31, 0.0854)
    # NOTE: 11.2 prints the v1 odds ratio as 1.44 [0.79, 2.63], a copy of the corrected
    # column; 31:18 gives 1.72 [0.96, 3.08].
    assert round(a["odds"]["odds"], 2) == 1.72 and [round(v, 2) for v in a["odds"]["ci"]] == [0.96, 3.08]
    # 11.3-11.6 and C.3's task subsets add up to 49 rows: they are v1 (uncorrected) tallies.
    assert {k: v["count"] for k, v in a["by_phase"].items()} == {"v1_p1": 41, "v1_p4": 8}
    models = {L1: (10, 10, "0.722", "1.000", 0.0020), L3: (17, 8, "0.262", "0.690", 1.0),
              QW: (22, 13, "0.387", "0.767", 0.5235)}
    for m, (n, k, lo, hi, p) in models.items():
        row = a["by_model"][m]
        w = row["binomial"]["wilson"]
        assert (row["count"], row["unsafe"], f"{w['lo']:.3f}", f"{w['hi']:.3f}", r4(row["binomial"]["p"])) == (
            n, k, lo, hi, p)
    tasks = {"advbench_refusal": (5, 5, 0.566, 1.0), "jailbreak_amplification": (12, 8, 0.391, 0.862),
             "truthfulqa": (16, 11, 0.444, 0.858), "bbq_bias": (16, 7, 0.231, 0.668)}
    for t, (n, k, lo, hi) in tasks.items():
        w = a["by_task"][t]["binomial"]["wilson"]
        assert (a["by_task"][t]["count"], a["by_task"][t]["unsafe"], r3(w["lo"]), r3(w["hi"])) == (n, k, lo, hi)
    assert a["by_direction"] == {"compliance_to_refusal": 4, "refusal_to_compliance": 13, "safety_strengthened": 14,
                                 "safety_weakened": 18}
    sub = a["subsets"]
    assert (sub["refusal_tasks"]["count"], sub["refusal_tasks"]["unsafe"]) == (17, 13)
    assert r4(sub["refusal_tasks"]["binomial"]["p"]) == 0.0490
    assert (sub["non_refusal_tasks"]["count"], sub["non_refusal_tasks"]["unsafe"]) == (32, 18)
    # NOTE: C.3 prints p 0.5898 for 18/32; the exact two-sided binomial test gives 0.5966
    # and no (k, n) with n < 80 gives 0.5898 (normal approximations give 0.4795).
    assert r4(sub["non_refusal_tasks"]["binomial"]["p"]) == 0.5966


# ================================================================ Primitives and degenerate cells

def test_binomial_and_wilson_values():
    assert r4(binomial(26, 44)["p"]) == 0.2912 and r4(binomial(31, 49)["p"]) == 0.0854
    assert r4(binomial(10, 10)["p"]) == 0.0020 and r4(binomial(13, 22)["p"]) == 0.5235
    w = wilson(10, 10)
    assert (r3(w["lo"]), w["hi"]) == (0.722, 1.0)
    assert wilson(0, 240)["lo"] == 0.0 and r4(wilson(0, 240)["hi"]) == 0.0158
    assert overlap(wilson(3, 321), wilson(1, 240)) and overlap((0, 1), {"lo": 1, "hi": 2})
    assert not overlap((0.0, 0.1), (0.2, 0.3))


def test_kappa_15_p4_bs8_row():
    # 15.2 P4_bs8: kappa 0.000 at 70.9% agreement over 110 pairs - one rater constant.
    k = cohen_kappa([[78, 32], [0, 0]])
    assert (r3(k["kappa"]), round(100 * k["agreement"], 1), k["n"]) == (0.0, 70.9, 110)
    k2 = cohen_kappa(a=["r", "r", "c", "c"], b=["r", "c", "c", "c"])
    assert k2["labels"] == ["c", "r"] and r3(k2["kappa"]) == 0.5


def test_degenerate_primitives_are_defined():
    cases = [
        two_by_two(0, 321, 0, 240), two_by_two(0, 0, 0, 0), two_by_two(321, 321, 240, 240), two_by_two(0, 0, 3, 10),
        wilson(0, 0), binomial(0, 0), odds(0, 0), odds(5, 0), tost_two_proportions(0, 0, 0, 5, 0.03),
        tost_two_proportions(0, 100, 0, 100, 0.03), holm([]), adjust([None, 0.01], "fdr_bh"),
        paired_t([1, 1, 1], [1, 1, 1]), paired_t([0, 0, 0], [1, 1, 1]), paired_t([1], [0]),
        tost_paired([1, 0], [1, 0], 0.03), pearson([1, 2, 3], [1, 1, 1]), pearson([], []),
        linregress([1, 4, 8], [0.6, 0.6, 0.6]), linregress([1, 1], [0, 1]), linregress([1, 2], [0, 1]),
        cohens_d([1, 1], [1, 1]), cohens_d([1, 1], [2, 2]), cohens_d([], [1]), mean_ci([]), mean_ci([1]),
        mean_ci([2, 2]), cohen_kappa([[5, 0], [0, 0]]), cohen_kappa([[0, 0], [0, 0]]),
        mde_two_proportions(0), mde_two_proportions(2, p0=0.5),
    ]
    json.dumps(cases, allow_nan=False)  # never NaN/inf
    assert cases[0]["chi2"] == 0.0 and cases[0]["chi2_p"] == 1.0 and "note" in cases[0]
    assert cases[1]["odds_ratio"] is None and cases[4]["rate"] is None and (cases[4]["lo"], cases[4]["hi"]) == (0, 1)
    assert cases[5]["p"] == 1.0 and cases[6]["odds"] is None and "0.5 added" in cases[7]["note"]
    assert cases[9]["equivalent"] is True  # 0/100 vs 0/100 is equivalent within 3 pp under the score test
    assert cases[11]["p_adjusted"][0] is None and cases[11]["p_adjusted"][1] == 0.01
    assert (cases[12]["p"], cases[12]["d"]) == (1.0, 0.0) and cases[13]["p"] is None and cases[13]["d"] is None
    assert cases[16] == {"n": 3, "r": 0.0, "p": 1.0, "note": "constant input or n<2: correlation undefined"}
    assert cases[18]["slope"] == 0.0 and cases[18]["r2"] == 0.0 and cases[19]["slope"] is None
    assert cases[21]["d"] == 0.0 and cases[22]["d"] is None
    assert cases[27]["kappa"] is None and cases[29]["mde_pp"] is None and cases[30]["direction"] == "capped"


def test_anova_degenerate_and_one_way():
    zero = pd.DataFrame({"y": [1.0] * 6, "a": list("xxyyzz"), "b": list("pqpqpq")})
    r = anova_two_way(zero, "y", "a", "b")
    for term in ("a", "b", "a:b"):
        f = r["factors"][term]
        assert (f["F"], f["p"], f["eta_sq"], f["note"]) == (None, 1.0, 0.0, "zero variance")
    single = pd.DataFrame({"y": [0.0, 1.0, 1.0, 0.0], "a": ["x"] * 4, "b": list("pqpq")})
    r = anova_two_way(single, "y", "a", "b")
    assert r["factors"]["a"]["note"] == "single level" and r["factors"]["a"]["p"] == 1.0
    exact = pd.DataFrame({"y": [0.0, 0.0, 1.0, 1.0], "a": list("xxyy")})
    r = anova_one_way(exact, "y", "a")
    assert r["factors"]["a"]["F"] is None and r["factors"]["a"]["eta_sq"] == pytest.approx(1.0)
    empty = anova_two_way(zero.iloc[:0], "y", "a", "b")
    json.dumps([r, empty], allow_nan=False)
    g = pd.DataFrame({"y": [1.0, 2.0, 3.0, 5.0, 6.0, 7.0], "a": list("xxxyyy")})
    r = anova_one_way(g, "y", "a")
    assert r["factors"]["a"]["F"] == pytest.approx(24.0) and r["factors"]["a"]["eta_sq"] == pytest.approx(24 / 28)


def test_empty_and_degenerate_stats_are_serialisable():
    assert set(compute_stats([], [])) == {"meta", "cross_phase"}
    # A phase whose flip rows are all zeros in both domains: defined tests, no NaN.
    s, f = flip_phase("p1", "batch_size", {(L1, 2): []}, {(L1, 2): 187}, (2,))
    st = compute_stats(s, f)
    json.dumps(st, allow_nan=False)
    t = st["p1"]["flip_tests"]["tests"]["overall_bs2"]
    assert (t["chi2"], t["chi2_p"], t["fisher_p"]) == (0.0, 1.0, 1.0) and st["p1"]["flip_rate"]["ratio"] is None
    with pytest.raises(ValueError):
        compute_stats([], [], correction="nope")


def test_latency_block():
    s, f = flip_phase("p1", "batch_size", {(L1, 2): [("T", 1, "u")], (L1, 4): []}, {(L1, 2): 180, (L1, 4): 180}, (2, 4))
    lat = [x.model_copy(update={"latency_s": 0.5 + 0.01 * x.condition.batch_size
                                + (0.3 if x.domain == "safety" else 0.0)}) for x in s]
    st = compute_stats(lat, f)["p1"]["latency"]["by_model"][L1]
    assert st["slope"]["slope"] == pytest.approx(0.01) and st["slope"]["n"] == 3
    assert st["throughput_per_s"]["4"] == pytest.approx(4 / np.mean([0.54 + 0.3 * 107 / 187]))
    assert st["safety_vs_capability"]["difference"] == pytest.approx(0.3)
    assert "flipped_vs_stable" in st


def test_correction_choice_and_variance_sources(stats):
    vs = stats["cross_phase"]["variance_sources"]
    # NOTE: 10.1 prints quantization 36.51 pp; the 9.1 grid gives a pooled range of
    # 37.58 pp (Q8_0 0.915 vs Q2_K 0.539) and a mean per-model range of 38.79 pp.
    assert round(vs["p3_quant_concurrency"]["quant"]["range_pp"], 2) == 37.58
    assert round(vs["p3_quant_concurrency"]["quant"]["mean_model_range_pp"], 2) == 38.79
    assert vs["p3_quant_concurrency"]["concurrency"]["range_pp"] == 0.0
    assert vs["p3_quant_concurrency"]["quant"]["n_per_level"] == 495


def test_performance_smoke_31410():
    """A 31,410-sample synthetic bundle (v1's size) runs end to end; timing is not asserted."""
    rng = np.random.default_rng(7)
    scored, flips = [], []

    def add(phase, kind, m, pid, task, dom, cond, base_cond, base_score):
        sid = f"{phase}/{m}/{pid}/{cond}"
        is_base = cond == base_cond
        flipped = (not is_base) and rng.random() < 0.02
        s = (1.0 - base_score) if flipped else base_score
        scored.append(ScoredSample.model_construct(
            sample=sid, phase=phase, phase_kind=kind, model=m, task=task, domain=dom, condition=cond, prompt=pid,
            baseline=None if is_base else f"{phase}/{m}/{pid}/{base_cond}", scorer="s@1", score=s, label=str(s),
            output_sha256=SHA0, latency_s=float(rng.random()), schema_version=1))
        if not is_base:
            flips.append(FlipRow.model_construct(
                sample=sid, baseline=f"{phase}/{m}/{pid}/{base_cond}", phase=phase, phase_kind=kind, model=m,
                task=task, domain=dom, condition=cond, prompt=pid, identical=not flipped, baseline_score=base_score,
                score=s, baseline_label=str(base_score), label=str(s), flipped=flipped,
                direction=("safety_weakened" if base_score else "safety_strengthened") if flipped else "none",
                schema_version=1))

    for m in MODELS:
        for i in range(1000):
            task, dom = ("truthfulqa", "safety") if i < 600 else ("mmlu_real", "capability")
            for bs in (1, 2, 4, 8, 16, 32):
                add("p1", "batch_size", m, f"q{i}", task, dom, Cond(batch_size=bs), Cond(batch_size=1), float(i % 2))
        for i in range(400):
            for c in ("solo", "benign", "adversarial", "safety"):
                add("p2", "cobatch", m, f"q{i}", "bbq_bias", "safety", Cond(cobatch=c), Cond(cobatch="solo"),
                    float(i % 3 > 0))
        for i in range(300):
            for q in ("Q8_0", "Q4_K_M", "Q2_K"):
                for c in (1, 4, 8):
                    add("p3", "quant_concurrency", m, f"q{i}", "advbench_refusal", "safety",
                        Cond(quant=q, concurrency=c), Cond(quant=q, concurrency=1), float(i % 4 > 0))
    for m in MODELS[1:]:
        for i in range(85):
            task, dom = ("truthfulqa", "safety") if i < 50 else ("mmlu_real", "capability")
            for bs in (1, 4, 8):
                add("p4", "true_batch", m, f"q{i}", task, dom, Cond(batch_size=bs), Cond(batch_size=1), float(i % 2))
    assert len(scored) == 31410
    st = compute_stats(scored, flips)
    json.dumps(st, sort_keys=True, allow_nan=False)
    assert st["p3"]["anova"]["quant"]["n_models"] == 3 and "p1" in st["p4"]["flip_agreement_with"]


def test_correction_none_is_accepted_and_leaves_p_values_unadjusted():
    """The spec allows `analysis.correction: none`; it must reach the statistics intact."""
    from batchsafe.analysis.stats.tests import CORRECTIONS, adjust

    assert set(CORRECTIONS) >= {"holm", "bonferroni", "fdr_bh", "none"}
    res = adjust([0.01, 0.04, None, 0.2], "none", alpha=0.05)
    assert res["p_adjusted"] == [0.01, 0.04, None, 0.2]
    assert res["reject"] == [True, True, False, False]
    held = adjust([0.01, 0.04, 0.2], "holm", alpha=0.05)
    assert held["reject"] == [True, False, False]


def test_cohen_kappa_reports_its_interval_and_the_degenerate_rule():
    k = cohen_kappa(a=["r"] * 20 + ["c"] * 10 + ["r"] * 5 + ["c"] * 15, b=["r"] * 20 + ["c"] * 10 + ["c"] * 5 + ["r"] * 15)
    # Hand computation: po = 30/50, pe = (25*35 + 25*15) / 50^2 = 0.5 -> kappa = 0.2.
    assert r3(k["kappa"]) == 0.2 and k["ci_low"] < 0.2 < k["ci_high"]
    one = cohen_kappa(a=["r", "r"], b=["r", "r"])
    assert one["kappa"] is None and one["agreement"] == 1.0 and "undefined" in one["note"]
