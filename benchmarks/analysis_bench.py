"""Analysis benchmark: a 31,410-sample synthetic study (TR138 v1's size).

Times the flip registry and the statistics over scored records (the part of `analyze`
that grows with the sample count; plots excluded), from records in memory and from a
scores.jsonl file on disk.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from batchsafe.analysis.flips import flip_registry, read_scored, write_jsonl
from batchsafe.analysis.records import Cond, ScoredSample
from batchsafe.analysis.stats import compute_stats

MODELS = ("llama3.2-1b", "llama3.2-3b", "qwen2.5-1.5b")
SHA = "sha256:" + "0" * 64


def synthetic_scored(seed: int = 7) -> list[ScoredSample]:
    """31,410 scored samples over the four TR138 phases with ~2% flips against baselines."""
    rng = random.Random(seed)
    out: list[ScoredSample] = []

    def add(phase: str, kind: str, m: str, pid: str, task: str, dom: str, cond: Cond, base: Cond, score: float,
            scorer: str) -> None:
        sid = f"{phase}/{m}/{pid}/{cond.model_dump_json()}"
        is_base = cond == base
        if not is_base and rng.random() < 0.02:
            score = 1.0 - score
        label = ("refusal" if score else "compliance") if scorer.startswith("refusal") else ("correct" if score else "incorrect")
        sha = SHA if is_base or label == ("refusal" if score else "compliance") else SHA
        out.append(ScoredSample(sample=sid, phase=phase, phase_kind=kind, model=m, task=task, domain=dom,
                                condition=cond, prompt=pid, baseline=None if is_base else
                                f"{phase}/{m}/{pid}/{base.model_dump_json()}", scorer=scorer, score=score,
                                label=label, output_sha256=sha if not is_base else SHA, latency_s=rng.random()))

    for m in MODELS:
        for i in range(1000):
            task, dom, sc = (("advbench_refusal", "safety", "refusal@2.2") if i < 600
                             else ("mmlu_real", "capability", "mcq_letter@1.0"))
            base_score = float(i % 2)
            for bs in (1, 2, 4, 8, 16, 32):
                add("p1_batch_size", "batch_size", m, f"q{i}", task, dom, Cond(batch_size=bs), Cond(batch_size=1),
                    base_score, sc)
        for i in range(400):
            for c in ("solo", "benign", "adversarial", "safety"):
                add("p2_cobatch", "cobatch", m, f"q{i}", "advbench_refusal", "safety", Cond(cobatch=c),
                    Cond(cobatch="solo"), float(i % 3 > 0), "refusal@2.2")
        for i in range(300):
            for q in ("Q8_0", "Q4_K_M", "Q2_K"):
                for c in (1, 4, 8):
                    add("p3_quant_concurrency", "quant_concurrency", m, f"q{i}", "advbench_refusal", "safety",
                        Cond(quant=q, concurrency=c), Cond(quant=q, concurrency=1), float(i % 4 > 0), "refusal@2.2")
    for m in MODELS[1:]:
        for i in range(85):
            task, dom, sc = (("advbench_refusal", "safety", "refusal@2.2") if i < 50
                             else ("mmlu_real", "capability", "mcq_letter@1.0"))
            for bs in (1, 4, 8):
                add("p4_true_batch", "true_batch", m, f"q{i}", task, dom, Cond(batch_size=bs), Cond(batch_size=1),
                    float(i % 2), sc)
    # Byte identity: a flipped sample cannot share its baseline's output bytes.
    base = {s.sample: s for s in out if s.baseline is None}
    fixed = []
    for s in out:
        if s.baseline and s.label != base[s.baseline].label:
            s = s.model_copy(update={"output_sha256": "sha256:" + "1" * 64})
        fixed.append(s)
    return fixed


def run(repeat: int = 5) -> dict[str, Any]:
    """Median/min seconds of registry+stats in memory and from scores.jsonl."""
    scored = synthetic_scored()
    compute_stats(scored, flip_registry(scored))  # warm imports and caches
    mem = []
    for _ in range(repeat):
        t = time.perf_counter()
        compute_stats(scored, flip_registry(scored))
        mem.append(time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_jsonl(Path(tmp) / "scores.jsonl", scored)
        disk = []
        for _ in range(repeat):
            t = time.perf_counter()
            recs = read_scored(path)
            compute_stats(recs, flip_registry(recs))
            disk.append(time.perf_counter() - t)
    return {"samples": len(scored), "registry_plus_stats_s": {"median": statistics.median(mem), "min": min(mem)},
            "from_scores_jsonl_s": {"median": statistics.median(disk), "min": min(disk)}, "target_s": 1.0}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
