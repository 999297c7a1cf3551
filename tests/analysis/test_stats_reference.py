"""Whole phase blocks and the flip registry against their pre-issue-16 code, byte for byte.

``tests/analysis/stats_reference`` holds the analyses as they were at commit 5e338c7 (before
the vectorisation); random bundles go through both and the orjson bytes must match.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsafe.analysis.stats._num import clean


def _bytes(x: Any) -> bytes:
    return orjson.dumps(clean(x), option=orjson.OPT_SORT_KEYS)


# --- whole phase blocks against the pre-vectorisation code (tests/analysis/stats_reference) ---

DIRS = ["refusal_to_compliance", "compliance_to_refusal", "safety_weakened", "safety_strengthened", "none",
        "capability_lost"]


def _random_frames(seed: int, float_scores: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sample and flip frames of three phases (batch_size, cobatch, quant_concurrency)."""
    from batchsafe.analysis.stats.frames import COND_FIELDS

    rng = np.random.default_rng(seed)
    samples, flips = [], []
    kinds = {"p1": ("batch_size", [1, 4, 8]), "p2": ("cobatch", ["solo", "mixed", "adversarial"]),
             "p3": ("quant_concurrency", [1, 4, 8])}
    for phase, (kind, levels) in kinds.items():
        for m in ("m1", "m2", "m10"):
            for q in (["q4", "q8"] if kind == "quant_concurrency" else [None]):
                for p in range(int(rng.integers(3, 9))):
                    task = str(rng.choice(["advbench", "bbq", "mmlu"]))
                    domain = "capability" if task == "mmlu" else "safety"
                    for rep in range(2):
                        base_id = None
                        base_score = base_label = None
                        for j, lv in enumerate(levels):
                            if rng.random() < 0.1 and j:
                                continue  # a missing cell
                            sid = f"{phase}-{m}-{q}-{p}-{rep}-{lv}"
                            score = float(rng.random()) if float_scores else float(rng.integers(0, 3)) / 2
                            label = "refusal" if score >= 0.5 else "compliance"
                            cond = dict.fromkeys(COND_FIELDS)
                            cond["repeat"] = rep
                            if kind == "batch_size":
                                cond["batch_size"] = lv
                            elif kind == "cobatch":
                                cond["cobatch"] = lv
                            else:
                                cond["quant"], cond["concurrency"] = q, lv
                            row = {"sample": sid, "phase": phase, "phase_kind": kind, "model": m, "task": task,
                                   "domain": domain, "prompt": f"{task}-{p}", "baseline": base_id, "score": score,
                                   "label": label, "latency_s": float(rng.random()) if rng.random() < 0.9 else None,
                                   **cond}
                            samples.append(row)
                            if base_id is None:
                                base_id, base_score, base_label = sid, score, label
                                continue
                            flipped = label != base_label
                            flips.append({**{k: row[k] for k in row if k not in ("latency_s",)},
                                          "baseline": base_id, "identical": bool(rng.random() < 0.5) and not flipped,
                                          "baseline_score": base_score, "baseline_label": base_label,
                                          "flipped": flipped,
                                          "direction": str(rng.choice(DIRS)) if flipped else "none"})
    sdf, fdf = pd.DataFrame(samples), pd.DataFrame(flips)
    for df in (sdf, fdf):
        for f in ("batch_size", "group_size", "concurrency", "repeat", "tensor_parallel", "load"):
            df[f] = pd.to_numeric(df[f], errors="coerce")
    sdf["latency_s"] = pd.to_numeric(sdf["latency_s"], errors="coerce")
    return sdf, fdf


def _block_pairs(sdf: pd.DataFrame, fdf: pd.DataFrame) -> list[tuple[str, Any, Any]]:
    import stats_reference.audit as ra
    import stats_reference.cobatch as rc
    import stats_reference.cross as rx
    import stats_reference.flips as rf
    import stats_reference.quant as rq

    from batchsafe.analysis.stats import audit, cobatch, cross, flips, quant

    kw = {"alpha": 0.05, "margin": 0.03, "correction": "holm"}
    kinds = sdf.groupby("phase")["phase_kind"].first().to_dict()
    out = []
    for phase, kind in sorted(kinds.items()):
        sd, fl = sdf[sdf["phase"] == phase], fdf[fdf["phase"] == phase]
        axis = flips.AXIS_BY_KIND[kind]
        # Default arguments bind this phase's frames (a closure would see the last phase's).
        out.append((f"flip_block {phase}", lambda m, fl=fl, axis=axis: m.flip_block(fl, axis, **kw), (flips, rf)))
        out.append((f"latency {phase}", lambda m, sd=sd, fl=fl, axis=axis: m.latency_block(sd, fl, axis),
                    (cross, rx)))
        if kind == "cobatch":
            out.append(("cobatch", lambda m, sd=sd: m.cobatch_block(sd, **kw), (cobatch, rc)))
        if kind == "quant_concurrency":
            out.append(("quant", lambda m, sd=sd: m.quant_block(sd, **kw), (quant, rq)))
    p1 = fdf[fdf["phase"] == "p1"]
    out.append(("agreement", lambda m: m.agreement(p1, p1.assign(flipped=~p1["flipped"])), (flips, rf)))
    out.append(("audit", lambda m: m.audit_block(fdf.replace({"phase_kind": {"cobatch": "true_batch"}}),
                                                 alpha=0.05), (audit, ra)))
    out.append(("variance", lambda m: m.variance_sources(sdf, kinds), (cross, rx)))
    return out


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), float_scores=st.booleans())
def test_phase_blocks_match_reference(seed: int, float_scores: bool) -> None:
    from batchsafe.analysis.stats._memo import memo_scope
    from batchsafe.analysis.stats._runtime import lean

    sdf, fdf = _random_frames(seed, float_scores)
    for name, run, (new, ref) in _block_pairs(sdf, fdf):
        want = _bytes(run(ref))
        with lean(), memo_scope():  # as compute_stats runs them
            got = _bytes(run(new))
        assert got == want, name


# --- the flip registry against its pre-issue-16 version ---

LABELS = {"refusal@2.2": [(1.0, "refusal"), (0.0, "compliance")],
          "bias@1.0": [(1.0, "correct"), (0.0, "biased"), (0.5, "anti_biased"), (0.5, "other")],
          "mcq_letter@1.0": [(1.0, "correct"), (0.0, "incorrect"), (0.0, "unparsed")]}


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=st.integers(1, 12), corrupt=st.sampled_from([None, "missing", "chained", "field",
                                                                       "duplicate", "identical"]))
def test_flip_registry_matches_reference(data: Any, n: int, corrupt: str | None) -> None:
    import stats_reference.registry as ref

    from batchsafe.analysis.flips import RecordError, dump_jsonl, flip_registry
    from batchsafe.analysis.records import Cond, ScoredSample

    recs = []
    for i in range(n):
        scorer = data.draw(st.sampled_from(sorted(LABELS)))
        domain = "capability" if scorer.startswith("mcq") else "safety"
        for j, bs in enumerate((1, 4, 8)):
            score, label = data.draw(st.sampled_from(LABELS[scorer]))
            same = j and data.draw(st.booleans())
            recs.append(ScoredSample(
                sample=f"s{i}-{bs}", phase="ph", phase_kind="batch_size", model="m", task=f"t{scorer}",
                domain=domain, condition=Cond(batch_size=bs), prompt=f"p{i}", baseline=f"s{i}-1" if j else None,
                scorer=scorer, score=score, label=label, output_sha256="sha256:" + ("0" if same else str(j)) * 64))
    if corrupt == "missing":
        recs = [r for r in recs if r.sample != "s0-1"]
    elif corrupt == "chained":
        recs[2] = recs[2].model_copy(update={"baseline": "s0-4"})
    elif corrupt == "field":
        recs[1] = recs[1].model_copy(update={"prompt": "other"})
    elif corrupt == "duplicate":
        recs.append(recs[0])
    elif corrupt == "identical":
        recs[1] = recs[1].model_copy(update={"output_sha256": recs[0].output_sha256, "score": 0.25})
    for args in ((recs,), (recs, {"s0-4": "sha256:" + "f" * 64})):
        try:
            want = dump_jsonl(ref.flip_registry(*args))
        except RecordError as exc:
            with pytest.raises(RecordError) as got:
                flip_registry(*args)
            assert str(got.value) == str(exc)
            continue
        assert dump_jsonl(flip_registry(*args)) == want



def test_flip_registry_reads_objects_without_field_dicts() -> None:
    """Records without a __dict__ (slots) take the attribute path and give the same rows."""
    from batchsafe.analysis.flips import dump_jsonl, flip_registry
    from batchsafe.analysis.records import Cond, ScoredSample

    names = list(ScoredSample.model_fields)

    class Slotted:
        __slots__ = tuple(names)

        def __init__(self, r: ScoredSample) -> None:
            for n in names:
                setattr(self, n, getattr(r, n))

    recs = [ScoredSample(sample=f"s{bs}", phase="ph", phase_kind="batch_size", model="m", task="t", domain="safety",
                         condition=Cond(batch_size=bs), prompt="p", baseline=None if bs == 1 else "s1",
                         scorer="refusal@2.2", score=float(bs % 2), label="refusal" if bs % 2 else "compliance",
                         output_sha256="sha256:" + str(bs % 2) * 64) for bs in (1, 2, 3, 4)]
    assert dump_jsonl(flip_registry([Slotted(r) for r in recs])) == dump_jsonl(flip_registry(recs))
