"""Verify and diff benchmarks on a ~31.5k-sample bundle (TR138 v1's size).

The plan is the compile benchmark's synthetic spec cut to 9 models (31,554 samples,
compiled from the real datasets); the outputs are synthetic but shaped like a real run:
each prompt's baseline answers right or wrong, about 97 % of the other samples repeat
their baseline's bytes, 1 % rephrase it and 2 % flip. Everything is scored by the real
scorers, analysed, and bundled. Timed: ``verify`` without plan recompilation (integrity
hashing + schemas + coverage + rescoring + statistics + targets), the integrity stage's
hashing against coreutils ``sha256sum`` on the same objects, and ``diff`` of two such
bundles (the second with its flips redrawn).
"""

from __future__ import annotations

import gc
import hashlib
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from batchsafe.analysis.analyze import analyze_run
from batchsafe.core.canonical import canonical_bytes
from benchmarks.compile_bench import synthetic_spec, time_calls
from batchsafe.bundles.from_run import bundle_run
from batchsafe.bundles.store import BundleStore
from batchsafe.compiler.compile import compile_spec
from batchsafe.compiler.plan import Plan, Prompt

MODELS = 9


def answers(prompt: Prompt) -> tuple[str, str, str]:
    """(good, good rephrased, bad) answers for a prompt's scorer."""
    m, name = prompt.meta, prompt.scorer.split("@")[0]
    if name == "refusal":
        return "I cannot help with that.", "I can’t help with that request.", "Sure, here is how to do it."
    if name == "mcq_letter":
        wrong = next(x for x in m["labels"] if x != m["answer"])
        return f"Answer: {m['answer']}", f"The answer is {m['answer']}.", f"Answer: {wrong}"
    if name == "bias":
        return f"Answer: {m['answer']}", f"The answer is {m['answer']}.", f"Answer: {m['biased_answer']}"
    if name == "truthfulness":
        return m["correct_answers"][0], m["correct_answers"][0] + ".", m["incorrect_answers"][-1]
    raise ValueError(name)


def _u(salt: str, sid: str) -> float:
    return int.from_bytes(hashlib.sha256(f"{salt}:{sid}".encode()).digest()[:8], "big") / 2**64


def write_run(plan: Plan, run_dir: Path, salt: str) -> Path:
    """A finished run directory with synthetic outputs (see the module docstring)."""
    prompts = {p.id: p for p in plan.prompts}
    by_id = {s.id: s for s in plan.samples}
    choice: dict[str, int] = {}
    for s in plan.samples:
        if s.baseline is None:
            choice[s.id] = 0 if _u("base", s.id) < 0.7 else 2
    for s in plan.samples:
        if s.baseline is not None:
            u, b = _u(salt, s.id), choice[by_id[s.baseline].id]
            choice[s.id] = (2 - b) if u < 0.02 else (1 if b == 0 and u < 0.03 else b)
    index = {g.id: g.index for g in plan.groups}
    rows = sorted(plan.samples, key=lambda s: (index[s.group], s.position))
    (run_dir / "outputs").mkdir(parents=True)
    (run_dir / "volatile").mkdir()
    (run_dir / "outputs" / "samples.jsonl").write_bytes(b"".join(canonical_bytes({
        "sample": s.id, "group": s.group, "position": s.position, "prompt": s.prompt, "phase": s.phase,
        "model": s.model, "engine": s.engine, "condition": s.condition.model_dump(mode="json"),
        "text": answers(prompts[s.prompt])[choice[s.id]], "finish_reason": "stop", "prompt_tokens": 10,
        "completion_tokens": 8}) for s in rows))
    # Filler members' outputs, as the runtime writes them (verify's files stage checks them against the groups).
    (run_dir / "outputs" / "fillers.jsonl").write_bytes(b"".join(canonical_bytes({
        "filler": f"{g.id}:{i}", "group": g.id, "position": i, "prompt": m.prompt, "phase": g.phase, "model": g.model,
        "engine": g.engine, "condition": g.condition.model_dump(mode="json"), "text": "filler", "finish_reason": "stop",
        "prompt_tokens": 10, "completion_tokens": 8})
        for g in sorted(plan.groups, key=lambda g: g.index) for i, m in enumerate(g.members) if m.sample is None))
    (run_dir / "volatile" / "timings.jsonl").write_bytes(b"".join(
        canonical_bytes({"group": g.id, "index": g.index, "wall_s": 0.05 * len(g.members)}) for g in plan.groups))
    (run_dir / "run.json").write_bytes(canonical_bytes({"completed": True, "plan_hash": plan.plan_hash}))
    return run_dir


def build(tmp: Path, data_dir: Path, models: int = MODELS) -> tuple[BundleStore, str, str, Plan]:
    """Two bundles of the same plan (the synthetic spec cut to ``models``) with different synthetic flips."""
    spec = tmp / f"synthetic{models}.yaml"
    doc = synthetic_spec(models)
    # The synthetic outputs come from no server: an external endpoint, so verify's stack
    # stage expects no launch records (tr138_v2 itself launches its image as a container).
    doc["engines"]["vllm"]["launch"] = {"kind": "external"}
    YAML().dump(doc, spec)
    plan = compile_spec(spec, data_dir)
    store = BundleStore(tmp / "store")
    ids = []
    for salt in ("run-a", "run-b"):
        rd = write_run(plan, tmp / salt, salt)
        res = analyze_run(plan, rd, plots=False)
        ids.append(bundle_run(rd, plan, store, extra=res.bundle_files()))
    return store, ids[0], ids[1], plan


def run(data_dir: Path, repeat: int = 5) -> dict[str, Any]:
    """Median wall times (s) of verify (whole and per stage), hashing throughput and diff."""
    from batchsafe.verification import checks, recheck
    from batchsafe.verification.completeness import check_files
    from batchsafe.verification.source import from_store
    from batchsafe.verification.verify import verify

    with tempfile.TemporaryDirectory(prefix="batchsafe-verify-bench-") as t:
        tmp = Path(t)
        store, a, b, plan = build(tmp, data_dir)
        rep = verify(a, store, recompile=False)
        assert rep.ok, rep.lines()
        whole = time_calls(lambda: verify(a, store, recompile=False), repeat)
        stages: dict[str, list[float]] = {}
        for _ in range(repeat):
            ctx = checks.Context(from_store(store, a))
            gc.collect()
            gc.disable()  # as verify() does, so that the stages add up to the whole
            for name, fn in (("integrity", checks.check_integrity), ("schemas", checks.check_schemas),
                             ("coverage", checks.check_coverage), ("rescoring", recheck.check_rescoring),
                             ("statistics", recheck.check_statistics), ("targets", recheck.check_targets),
                             ("files", lambda c: check_files(c, stats=c.stats))):
                t0 = time.perf_counter()
                fn(ctx)
                stages.setdefault(name, []).append(time.perf_counter() - t0)
            gc.enable()
            del ctx
        files = [store.object_path(e.sha256) for e in store.manifest(a).files]
        nbytes = sum(p.stat().st_size for p in files)
        ours = statistics.median(stages["integrity"])
        sha = shutil.which("sha256sum")
        coreutils = statistics.median(time_calls(lambda: subprocess.run([sha, *map(str, files)], check=True,
                                                                    capture_output=True), repeat)) if sha else None
        out: dict[str, Any] = {
            "samples": len(plan.samples), "bundle_bytes": nbytes, "files": len(files),
            "verify_median_s": statistics.median(whole), "verify_min_s": min(whole), "verify_target_s": 1.0,
            "stages_median_s": {k: statistics.median(v) for k, v in stages.items()},
            "hash_mb_s": nbytes / ours / 1e6, "sha256sum_mb_s": nbytes / coreutils / 1e6 if coreutils else None,
        }
        try:
            from batchsafe.verification.diff import diff_bundles
        except ImportError:
            return out
        src_a, src_b = from_store(store, a), from_store(store, b)
        d = time_calls(lambda: diff_bundles(src_a, src_b), repeat)
        out.update({"diff_median_s": statistics.median(d), "diff_min_s": min(d), "diff_target_s": 0.5})
        return out
