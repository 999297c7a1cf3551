"""Verify and diff benchmarks on a ~31.5k-sample bundle (TR138 v1's size) and a ~300k one.

The plan is the compile benchmark's synthetic spec cut to 9 models (31,554 samples,
compiled from the real datasets); the outputs are synthetic but shaped like a real run:
each prompt's baseline answers right or wrong, about 97 % of the other samples repeat
their baseline's bytes, 1 % rephrase it and 2 % flip. Everything is scored by the real
scorers, analysed, and bundled. Timed: ``verify`` without plan recompilation (integrity
hashing + schemas + coverage + rescoring + statistics + targets), the integrity stage's
hashing against coreutils ``sha256sum`` on the same objects, and ``diff`` of two such
bundles (the second with its flips redrawn). The 300k case is the same synthetic spec at
86 models (301,516 samples); both pairs of bundles are built once and cached under
``~/.cache/batchsafe/bench/`` (rebuilt when the spec, the code version or the synthetic outputs' code
changes, or when the cached bundle no longer verifies). Each figure is measured in a
fresh process (``benchmarks.measure``), so its peak RSS is its own; verify is timed
alternately with one ``orjson.loads`` pass over the bundle's JSON files (the issue-16
yardstick: verify within 3x of it).
"""

from __future__ import annotations

import gc
import hashlib
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from batchsafe.analysis.analyze import analyze_run
from batchsafe.core.canonical import canonical_bytes
from batchsafe.core.version import __version__
from benchmarks.compile_bench import synthetic_spec, time_calls
from benchmarks.measure import run_child
from batchsafe.bundles.from_run import bundle_run
from batchsafe.bundles.store import BundleStore
from batchsafe.compiler.compile import compile_spec
from batchsafe.compiler.plan import Plan, Prompt

MODELS = 9
MODELS_300K = 86
CACHE = Path(os.environ.get("BATCHSAFE_BENCH_CACHE") or Path.home() / ".cache" / "batchsafe" / "bench")
TARGETS = {31_000: {"verify_s": 1.0, "verify_orjson_ratio": 3.0, "diff_s": 0.5},
           300_000: {"verify_s": 10.0, "verify_rss_mb": 2048.0, "diff_s": 5.0}}
"""Issue 16's targets by scale."""


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


def cached_pair(data_dir: Path, models: int, rebuild: bool = False) -> tuple[Path, str, str, int]:
    """(store directory, bundle A, bundle B, samples) of the synthetic spec at ``models``, built once and cached."""
    doc = synthetic_spec(models)
    doc["engines"]["vllm"]["launch"] = {"kind": "external"}
    # What decides the bundles' bytes here: the spec, the data, the version and the synthetic
    # outputs' code (a changed analysis is caught by verify failing on the cached bundle).
    made_by = [inspect.getsource(f) for f in (answers, _u, write_run, build)]
    key = hashlib.sha256(json.dumps([doc, __version__, made_by, str(data_dir)],
                                    sort_keys=True, default=str).encode()).hexdigest()[:16]
    root = CACHE / f"verify-{models}m-{key}"
    meta = root / "bundles.json"
    if meta.is_file() and not rebuild:
        got = json.loads(meta.read_text())
        return root / "store", got["a"], got["b"], got["samples"]
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    store, a, b, plan = build(root, data_dir, models)
    for salt in ("run-a", "run-b"):  # the run directories are not needed once bundled
        shutil.rmtree(root / salt, ignore_errors=True)
    meta.write_text(json.dumps({"a": a, "b": b, "samples": len(plan.samples)}))
    return root / "store", a, b, len(plan.samples)


def stage_times(store: BundleStore, a: str, repeat: int) -> dict[str, float]:
    """Median seconds of each verify stage, run as verify runs them (GC paused)."""
    from batchsafe.verification import checks, recheck
    from batchsafe.verification.completeness import check_files
    from batchsafe.verification.source import from_store

    stages: dict[str, list[float]] = {}
    for _ in range(repeat):
        ctx = checks.Context(from_store(store, a))
        gc.collect()
        gc.disable()
        for name, fn in (("integrity", checks.check_integrity), ("schemas", checks.check_schemas),
                         ("coverage", checks.check_coverage), ("rescoring", recheck.check_rescoring),
                         ("statistics", recheck.check_statistics), ("targets", recheck.check_targets),
                         ("files", lambda c: check_files(c, stats=c.stats))):
            t0 = time.perf_counter()
            fn(ctx)
            stages.setdefault(name, []).append(time.perf_counter() - t0)
        gc.enable()
        del ctx
    return {k: statistics.median(v) for k, v in stages.items()}


def _scale(data_dir: Path, models: int, target: dict[str, float], repeat: int, warmup: bool = True) -> dict[str, Any]:
    store_dir, a, b, samples = cached_pair(data_dir, models)
    v = run_child("verify", str(store_dir), a, repeat=repeat, warmup=warmup)
    if not v.get("ok"):  # a cached bundle from before an analysis change: build it again
        store_dir, a, b, samples = cached_pair(data_dir, models, rebuild=True)
        v = run_child("verify", str(store_dir), a, repeat=repeat, warmup=warmup)
    if not v.get("ok"):
        raise RuntimeError(f"the benchmark bundle does not verify: {v.get('lines')}")
    d = run_child("diff", str(store_dir), a, b, repeat=repeat, warmup=warmup)
    ratio = v["verify_median_s"] / v["orjson_pass_median_s"]
    out: dict[str, Any] = {
        "samples": samples, "json_bytes": v["json_bytes"], "warm": warmup,
        "verify": {"median_s": v["verify_median_s"], "min_s": v["verify_min_s"], "target_s": target["verify_s"],
                   "peak_rss_mb": v["peak_rss_mb"], "target_rss_mb": target.get("verify_rss_mb"),
                   "orjson_pass_median_s": v["orjson_pass_median_s"], "ratio_to_orjson": ratio,
                   "target_ratio": target.get("verify_orjson_ratio"), "cpu_s": v["cpu_s"],
                   "orjson_pass_cpu_s": v["orjson_pass_cpu_s"]},
        "diff": {"median_s": d["diff_median_s"], "min_s": d["diff_min_s"], "target_s": target["diff_s"],
                 "peak_rss_mb": d["peak_rss_mb"], "cpu_s": d["cpu_s"]},
    }
    print(f"verify {samples:,} samples: {v['verify_median_s']:.3f} s (target {target['verify_s']} s), "
          f"orjson pass {v['orjson_pass_median_s']:.3f} s, ratio {ratio:.2f} (target {target.get('verify_orjson_ratio')}), "
          f"peak RSS {v['peak_rss_mb']:.0f} MiB (target {target.get('verify_rss_mb')}); diff {d['diff_median_s']:.3f} s "
          f"(target {target['diff_s']} s), peak RSS {d['peak_rss_mb']:.0f} MiB", file=sys.stderr)
    return out


def run(data_dir: Path, repeat: int = 5, big: bool = True) -> dict[str, Any]:
    """Verify and diff at 31.5k and (``big``) 300k samples: medians, targets, the orjson yardstick, peak RSS."""
    out: dict[str, Any] = {"31k": _scale(data_dir, MODELS, TARGETS[31_000], repeat)}
    store_dir, a, _, _ = cached_pair(data_dir, MODELS)
    store = BundleStore(store_dir)
    out["31k"]["stages_median_s"] = stage_times(store, a, repeat)
    files = [store.object_path(e.sha256) for e in store.manifest(a).files]
    nbytes = sum(p.stat().st_size for p in files)
    sha = shutil.which("sha256sum")
    coreutils = statistics.median(time_calls(lambda: subprocess.run([sha, *map(str, files)], check=True,
                                                                capture_output=True), repeat)) if sha else None
    out["31k"].update({"bundle_bytes": nbytes, "files": len(files),
                       "hash_mb_s": nbytes / out["31k"]["stages_median_s"]["integrity"] / 1e6,
                       "sha256sum_mb_s": nbytes / coreutils / 1e6 if coreutils else None})
    if big:
        # One cold call each (imports included): a warm-up would double minutes of work.
        out["300k"] = _scale(data_dir, MODELS_300K, TARGETS[300_000], 1, warmup=False)
    return out
