"""Analysis of a tensor_parallel phase: treated like batch size, along the TP axis
(identity, flips, directions, safety-vs-capability tests, a report row per TP size)."""

from __future__ import annotations

import pytest

from batchsafe.analysis.analyze import analyze_run
from batchsafe.analysis.records import Cond, FlipRow, ScoredSample
from batchsafe.analysis.stats import compute_stats
from batchsafe.compiler.compile import compile_spec
from tp_fixtures import tp_spec

REFUSE = "I'm sorry, but I can't help with that."
COMPLY = "Sure, here is how to do it: first, gather the materials."


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    """The TP spec's plan analysed with made-up outputs: every baseline (TP 1, bs 1) refuses;
    at TP 2 the first four prompts comply and the rest refuse; TP 1 bs 4 repeats the baseline."""
    plan = compile_spec(tp_spec(tmp_path_factory.mktemp("tp")))
    prompts = sorted({s.prompt for s in plan.samples})
    flipped = set(prompts[:4])
    outputs = {s.id: {"text": COMPLY if s.condition.tensor_parallel == 2 and s.prompt in flipped else REFUSE}
               for s in plan.samples}
    return plan, analyze_run(plan, outputs, plots=False)


def test_flip_rows_compare_tp2_with_the_tp1_baseline(result) -> None:
    plan, res = result
    st = res.stats["p_tp"]
    assert res.stats["meta"]["phases"] == {"p_tp": "tensor_parallel"}
    assert st["axis"] == "tensor_parallel" and st["levels"] == ["1", "2"]
    assert st["n_flip_rows"] == 16 * 3  # (TP1,bs4), (TP2,bs1), (TP2,bs4) against (TP1,bs1)
    ident = st["identity"]["by_level"]
    assert ident["1"] == {"k": 16, "n": 16, "rate": 1.0}
    assert (ident["2"]["k"], ident["2"]["n"]) == (24, 32)  # 4 prompts x 2 batch sizes differ
    assert st["flip_cells"]["by_level"]["2"]["safety"]["k"] == 8
    assert st["direction"]["counts"] == {"refusal_to_compliance": 8} and st["direction"]["unsafe_share"] == 1.0
    assert {r.condition.tensor_parallel for r in res.flips} == {1, 2}


def test_the_report_has_a_row_per_tp_size(result) -> None:
    _, res = result
    report = res.report
    assert "## Phase p_tp (tensor_parallel)" in report
    assert "| Model        | tensor_parallel=1   | tensor_parallel=2   |" in report
    rows = [ln for ln in report.splitlines() if ln.startswith("| smollm2-135m |")]
    assert any("| 1 " in r and "0.0%" in r for r in rows) and any("| 2 " in r and "25.0%" in r for r in rows)


def rows(n: int, k_safety: int, k_cap: int, tp: int) -> tuple[list[ScoredSample], list[FlipRow]]:
    """n safety and n capability flip rows at TP ``tp``, k of each flipped."""
    scored, flips = [], []
    for dom, k, task, scorer in (("safety", k_safety, "adv", "refusal@2.2"), ("capability", k_cap, "mmlu",
                                                                              "mcq_letter@1.0")):
        for i in range(n):
            sid, bid = f"s_{dom}_{tp}_{i}", f"b_{dom}_{i}"
            flip = i < k
            label_b, label = (("refusal", "compliance" if flip else "refusal") if dom == "safety"
                              else ("correct", "incorrect" if flip else "correct"))
            cond = Cond(tensor_parallel=tp)
            scored.append(ScoredSample(sample=sid, phase="p", phase_kind="tensor_parallel", model="m", task=task,
                                       domain=dom, condition=cond, prompt=f"p{i}", baseline=bid, scorer=scorer,
                                       score=0.0 if flip else 1.0, label=label, output_sha256=sid))
            flips.append(FlipRow(sample=sid, baseline=bid, phase="p", phase_kind="tensor_parallel", model="m",
                                 task=task, domain=dom, condition=cond, prompt=f"p{i}", identical=not flip,
                                 baseline_score=1.0, score=0.0 if flip else 1.0, baseline_label=label_b, label=label,
                                 flipped=flip, direction=("refusal_to_compliance" if dom == "safety"
                                                          else "capability_lost") if flip else "none"))
    return scored, flips


def test_safety_vs_capability_tests_and_critical_size_run_per_tp_level() -> None:
    s2, f2 = rows(60, 2, 2, 2)
    s4, f4 = rows(60, 30, 1, 4)
    st = compute_stats(s2 + s4, f2 + f4)["p"]
    tests = st["flip_tests"]["tests"]
    assert {"overall_tp2", "overall_tp4", "m_tp2", "m_tp4"} <= set(tests)
    assert tests["overall_tp4"]["significant"] is True and tests["overall_tp2"]["significant"] is False
    assert st["critical_level"]["overall"] == "4"  # TP is numeric: the smallest disproportionate size
    assert st["divergence"]["by_level"]["4"]["disproportionate"] is True
