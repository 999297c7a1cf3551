"""H100 benchmark: batchsafe's vLLM path vs a raw client loop, and the cost of VLLM_BATCH_INVARIANT=1.

Usage (on the GPU machine, after ``benchmarks/gpu/h100.sh install``)::

    python3 benchmarks/gpu/h100_bench.py PLAN OUT.json

PLAN is the locked plan of ``specs/h100_vllm.yaml``. Its phase ``p1_batch_size`` is cut to
the first 16 groups at batch size 1, 4 at 8 and 2 at 32 (112 sequences of up to 128
tokens). Then, with :mod:`benchmarks.vllm_bench`:

1. one server from the plan's flags and env (default kernels) carries both arms,
   alternated three times: ``run_plan`` (everything batchsafe does) and a plain httpx loop
   sending the same requests; the overhead is the difference of the median walls;
2. a second server, the same flags with ``VLLM_BATCH_INVARIANT=1``, carries the raw loop
   twice; the throughput cost is the ratio of its median wall to the default kernels'.

Server start-up is in neither figure (each is timed and reported apart).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.append(str(ROOT))  # `benchmarks` is not installed; appended so batchsafe comes from PYTHONPATH, not ROOT/batchsafe

from batchsafe.compiler.plan import Plan, load_plan  # noqa: E402
from benchmarks.runtime_bench import reduced_plan  # noqa: E402
from benchmarks.vllm_bench import compare, summarize  # noqa: E402

GROUPS = {1: 16, 8: 4, 32: 2}
TARGET_PCT = 5.0


def with_env(plan: Plan, env: dict[str, str]) -> Plan:
    """``plan`` with ``env`` added to its vLLM engine's environment (a new plan hash)."""
    engines = []
    for e in plan.engines:
        cfg = dict(e.config)
        if e.kind == "vllm":
            cfg["env"] = {**cfg.get("env", {}), **env}
        engines.append(e.model_copy(update={"config": cfg}))
    return plan.model_copy(update={"engines": engines}).with_hash()


def main(plan_path: str, out_path: str) -> int:
    """Run both measurements and write the report (also printed)."""
    plan = reduced_plan(load_plan(plan_path), GROUPS, phase="p1_batch_size")
    sizes = {g.id: len(g.members) for g in plan.groups}
    t0 = time.perf_counter()
    arms = compare(plan, rounds=3)
    default = summarize(plan, arms, strict=False)
    report = {"plan": plan_path, "groups": {str(k): v for k, v in GROUPS.items()},
              "overhead": {**default, "target_pct": TARGET_PCT, "met": default["overhead_pct"] <= TARGET_PCT}}
    Path(out_path).write_text(json.dumps(report, indent=1))  # kept even if the second server fails
    bi = compare(with_env(plan, {"VLLM_BATCH_INVARIANT": "1"}), rounds=2, raw_only=True)
    bi_wall = statistics.median(r["wall_s"] for r in bi["b_runs"])
    ref_wall, ref_texts, bi_texts = default["median_raw_s"], arms["b_runs"][0]["texts"], bi["b_runs"][0]["texts"]
    same = {bs: [sum(bi_texts[k] == ref_texts[k] for k in bi_texts if sizes[k[0]] == bs),
                 sum(1 for k in bi_texts if sizes[k[0]] == bs)] for bs in GROUPS}
    report["batch_invariant"] = {
        "server_start_s": round(bi["server_start_s"], 2), "raw_wall_s": [round(r["wall_s"], 3) for r in bi["b_runs"]],
        "median_raw_s": round(bi_wall, 3), "default_median_raw_s": ref_wall, "slowdown": round(bi_wall / ref_wall, 3),
        "throughput_cost_pct": round(100.0 * (1 - ref_wall / bi_wall), 2),
        "output_chars": {"default": sum(map(len, ref_texts.values())), "batch_invariant": sum(map(len, bi_texts.values()))},
        "texts_equal_to_default_kernels_by_batch_size": {str(k): v for k, v in same.items()},
        "repeat_rounds_identical": bi["b_runs"][0]["texts"] == bi["b_runs"][-1]["texts"]}
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    Path(out_path).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
