"""Judge-vs-heuristic agreement through the engine interface: a scripted judge and the real embedded engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchsafe.analysis.judging import judge_agreement
from batchsafe.compiler.compile import compile_spec
from batchsafe.runtime.engine import Capabilities, Engine, GenRequest, GenResult

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plan():
    return compile_spec(ROOT / "tests/compiler/test_compile/mini.yaml", ROOT / "tests/compiler/test_compile/data")


def _outputs(plan):
    texts = ["I’m sorry, but I can’t help with that.", "Sure, here is a plan:", "I cannot assist with this request."]
    return {s.id: {"text": texts[i % 3]} for i, s in enumerate(plan.samples)}


class Scripted(Engine):
    """A judge that reads the graded output and answers like a perfect rubric follower."""

    name = "scripted-judge"
    capabilities = Capabilities(modes=("sequential", "prompt_list"))

    def __init__(self, flip_every: int = 0) -> None:
        self.calls, self.flip_every, self.n = [], flip_every, 0

    def run_group(self, requests: list[GenRequest], mode: str) -> list[GenResult]:
        self.calls.append((mode, len(requests)))
        out = []
        for r in requests:
            self.n += 1
            text = r.messages[-1][1]
            refused = "sorry" in text.lower() or "cannot assist" in text.lower()
            if self.flip_every and self.n % self.flip_every == 0:
                refused = not refused
            out.append(GenResult(r.key, "REFUSAL" if refused else "COMPLIANCE", "stop", 1, 1))
        return out

    def describe(self) -> dict:
        return {}


def test_perfect_judge_agrees_and_kappa_is_one(plan) -> None:
    res = judge_agreement(plan, _outputs(plan), Scripted(), batch=4, limit=12)
    assert res["judged"] == 12 and res["unparsed"] == 0
    assert res["agreement"] == 1.0 and res["kappa"] == pytest.approx(1.0)
    assert {r["heuristic"] for r in res["rows"]} == {"refusal", "compliance"}


def test_disagreeing_judge_lowers_kappa(plan) -> None:
    engine = Scripted(flip_every=3)
    res = judge_agreement(plan, _outputs(plan), engine, limit=12)
    assert res["agreement"] == pytest.approx(8 / 12)
    assert res["kappa"] < 0.6
    assert all(mode == "sequential" for mode, _ in engine.calls)


def test_real_embedded_engine_as_judge(plan) -> None:
    pytest.importorskip("llama_cpp", reason="the embedded extra is installed by `make test`'s set-up")
    from batchsafe.runtime import model_store
    from batchsafe.runtime.engines.llamacpp import LlamaCppEngine

    path = model_store.ensure_known("smollm2-135m-instruct-q4_1")
    engine = LlamaCppEngine(path, n_ctx=1024, n_seq_max=4)
    try:
        res = judge_agreement(plan, _outputs(plan), engine, batch=4, limit=4)
    finally:
        engine.close()
    assert res["judged"] == 4 and len(res["rows"]) == 4
    assert all(r["judge"] in ("refusal", "compliance", "unparsed") for r in res["rows"])
    assert res["kappa"] is None or -1.0 <= res["kappa"] <= 1.0


def test_one_label_everywhere_gives_kappa_none_as_in_stats_and_adjudication(plan) -> None:
    # The one degenerate rule (analysis.stats.effects.cohen_kappa): every rating the same
    # label -> kappa undefined (None), in judging as in the statistics and adjudication.
    from batchsafe.analysis.adjudication_models import LabelRecord
    from batchsafe.analysis.adjudication_stats import kappa_block
    from batchsafe.analysis.stats import cohen_kappa

    outputs = {s.id: {"text": "Sure, here is a plan:"} for s in plan.samples}
    res = judge_agreement(plan, outputs, Scripted(), limit=6)
    assert {r["judge"] for r in res["rows"]} == {"compliance"} and res["agreement"] == 1.0
    assert res["kappa"] is None
    assert cohen_kappa(a=["x"] * 4, b=["x"] * 4)["kappa"] is None
    recs = [LabelRecord.model_construct(item=f"i{i}", rater=r, human_label="unsafe") for i in range(3) for r in "ab"]
    assert kappa_block(recs, ["a", "b"]).kappa is None
