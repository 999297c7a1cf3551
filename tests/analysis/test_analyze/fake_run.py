"""A hand-made run of the compiler fixture plan (tests/compiler/test_compile/mini.yaml).

Each prompt has three hand-written answers per scorer: ``good`` (safe / correct),
``good2`` (same label, different bytes) and ``bad`` (compliance, biased, untruthful,
wrong letter). Which answer a sample gets is fixed by its id, so the run is
deterministic and a test can predict every flip without running the scorers:
baselines are ``bad`` for ids whose sha256 is 0 mod 7, other samples ``bad`` when it is
0 mod 6 and ``good2`` when it is 1 or 2 mod 6.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from batchsafe.core.canonical import canonical_bytes
from batchsafe.compiler.compile import compile_spec
from batchsafe.compiler.plan import Plan, Prompt, Sample

ROOT = Path(__file__).resolve().parents[3]
MINI_SPEC = ROOT / "tests" / "compiler" / "test_compile" / "mini.yaml"
MINI_DATA = ROOT / "tests" / "compiler" / "test_compile" / "data"


def mini_plan() -> Plan:
    """The compiler fixture plan (252 samples in 6 phases)."""
    return compile_spec(MINI_SPEC, MINI_DATA)


def answers(prompt: Prompt) -> dict[str, str]:
    """The three answers to ``prompt`` (see the module docstring)."""
    m, name = prompt.meta, prompt.scorer.split("@")[0]
    if name == "refusal":
        return {"good": "I cannot help with that.", "good2": "I can't help with that request.",
                "bad": "Sure, here is how to do it."}
    if name in ("mcq_letter", "bias"):
        wrong = m["biased_answer"] if name == "bias" else next(x for x in m["labels"] if x != m["answer"])
        return {"good": f"Answer: {m['answer']}", "good2": f"The answer is {m['answer']}.", "bad": f"Answer: {wrong}"}
    if name == "truthfulness":
        return {"good": m["correct_answers"][0], "good2": m["correct_answers"][0] + ".",
                "bad": m["incorrect_answers"][-1]}
    raise ValueError(name)


def variant(sample: Sample) -> str:
    """Which answer ``sample`` gets."""
    h = int(hashlib.sha256(sample.id.encode()).hexdigest(), 16)
    if sample.baseline is None:
        return "bad" if h % 7 == 0 else "good"
    return {0: "bad", 1: "good2", 2: "good2"}.get(h % 6, "good")


def fake_outputs(plan: Plan) -> dict[str, dict[str, Any]]:
    """Output records by sample id, shaped like outputs/samples.jsonl lines."""
    prompts = {p.id: p for p in plan.prompts}
    return {s.id: {"sample": s.id, "group": s.group, "position": s.position, "prompt": s.prompt, "phase": s.phase,
                   "model": s.model, "condition": s.condition.model_dump(mode="json"),
                   "text": answers(prompts[s.prompt])[variant(s)], "finish_reason": "stop", "prompt_tokens": 3,
                   "completion_tokens": 5} for s in plan.samples}


def expected_flips(plan: Plan) -> int:
    """Non-baseline samples whose label differs from their baseline's (bad vs not bad)."""
    by_id = {s.id: s for s in plan.samples}
    return sum((variant(s) == "bad") != (variant(by_id[s.baseline]) == "bad") for s in plan.samples if s.baseline)


def fake_fillers(plan: Plan) -> list[dict]:
    """Filler records as ``runtime.bindings.group_records`` writes them, in plan order."""
    out = []
    for g in sorted(plan.groups, key=lambda g: g.index):
        for i, m in enumerate(g.members):
            if m.sample is None:
                out.append({"filler": f"{g.id}:{i}", "group": g.id, "position": i, "prompt": m.prompt, "phase": g.phase,
                            "model": g.model, "engine": g.engine, "condition": g.condition.model_dump(mode="json"),
                            "text": "filler text", "finish_reason": "stop", "prompt_tokens": 3, "completion_tokens": 2})
    return out


def write_run_dir(plan: Plan, run_dir: Path) -> Path:
    """A finished run directory: run.json, outputs/samples.jsonl, volatile/timings.jsonl."""
    outputs = fake_outputs(plan)
    index = {g.id: g.index for g in plan.groups}
    (run_dir / "outputs").mkdir(parents=True)
    (run_dir / "volatile").mkdir()
    ordered = sorted(outputs.values(), key=lambda r: (index[r["group"]], r["position"]))
    (run_dir / "outputs" / "samples.jsonl").write_bytes(b"".join(canonical_bytes(r) for r in ordered))
    (run_dir / "outputs" / "fillers.jsonl").write_bytes(b"".join(canonical_bytes(r) for r in fake_fillers(plan)))
    timings = [{"group": g.id, "index": g.index, "wall_s": 0.1 + 0.01 * len(g.members)} for g in plan.groups]
    (run_dir / "volatile" / "timings.jsonl").write_text("".join(json.dumps(t) + "\n" for t in timings))
    (run_dir / "run.json").write_bytes(canonical_bytes({"plan_hash": plan.plan_hash, "completed": True}))
    return run_dir


def make_bundle(root: Path, *, edit=None, scorer_override=None, plots: bool = False, store=None):
    """Run dir under ``root``, analysed and bundled: ``(store, bundle id, plan)``.

    ``edit(rows)`` may change the output records (a list of dicts, plan order) before the
    analysis; ``scorer_override`` is passed to the analysis (e.g. ``{"refusal": "refusal@2.1"}``).
    """
    from batchsafe.analysis.analyze import analyze_run
    from batchsafe.bundles.from_run import bundle_run
    from batchsafe.bundles.store import BundleStore

    plan = mini_plan()
    rd = write_run_dir(plan, Path(root) / "run")
    if edit is not None:
        path = rd / "outputs" / "samples.jsonl"
        rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
        edit(rows)
        path.write_bytes(b"".join(canonical_bytes(r) for r in rows))
    res = analyze_run(plan, rd, scorer_override=scorer_override, plots=plots)
    store = store or BundleStore(Path(root) / "store")
    return store, bundle_run(rd, plan, store, extra=res.bundle_files()), plan
