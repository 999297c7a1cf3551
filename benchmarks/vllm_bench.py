"""vLLM benchmark: batchsafe's vLLM path vs a raw httpx loop against the same server.

One vLLM-CPU server is launched from ``specs/vllm_cpu.yaml`` (the plan's flags and env,
through :mod:`batchsafe.runtime.launch`) and kept up for both arms, so server start-up is
in neither. Both arms send the same requests: the plan's warmup, then the first groups of
phase ``p1_batch_size`` at batch sizes 1 and 8 (synchronized: the K chat requests of a
group held in flight together), each request ``/v1/chat/completions`` with the plan's
messages and greedy sampling body.

(a) ``batchsafe``: :func:`runtime.executor.run_plan` on a reduced plan whose engine points
    at the running server (``launch.kind: external``): preflight, identity checks (model
    list, ``max_model_len``, ``/version``), warmup, K threads per group aligned by a
    barrier, result checks, records, one fsynced journal line per group, /metrics
    sampling, coverage check, outputs/, environment.json.
(b) ``raw``: one ``httpx.Client``; per group K threads that post together, then parse
    ``choices[0].message.content``. Nothing checked, nothing written.

Arms alternate (a, b, a, b); the report gives median walls and the overhead
``(a - b) / b``. Sequential (batch size 1) texts must agree between every run of both
arms (asserted: it shows the raw loop sends what batchsafe sends); batch-size-8 texts
are compared and reported, not asserted, since vLLM's batched outputs are not
reproducible on CPU (that is what the study measures).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from batchsafe.compiler.plan import Plan
from benchmarks.runtime_bench import _warmup_prompts, reduced_plan

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "vllm_cpu.yaml"
PHASE = "p1_batch_size"
GROUPS_PER_BATCH_SIZE: dict[int, int | None] = {1: 8, 8: 2}
"""8 single requests and 2 groups of 8 (24 sequences of up to 32 tokens): ~25 s per arm."""
ROUNDS = 3
TARGET_PCT = 3.0


def _external(plan: Plan, endpoint: str) -> Plan:
    """``plan`` with its vLLM engine pointed at ``endpoint`` instead of launching one."""
    engines = []
    for e in plan.engines:
        cfg = dict(e.config)
        if e.kind == "vllm":
            cfg["launch"] = {"kind": "external"}
        engines.append(e.model_copy(update={"config": cfg}))
    loc = plan.locators.model_copy(update={"endpoints": {e.name: endpoint for e in plan.engines}, "launch": {}})
    return plan.model_copy(update={"engines": engines, "locators": loc}).with_hash()


def _body(plan: Plan, prompt: Any, served: str) -> dict[str, Any]:
    """The request the adapter sends for ``prompt`` (same keys and values)."""
    dec = plan.decoding
    return {"model": served, "messages": [{"role": m.role, "content": m.content} for m in prompt.messages],
            "max_tokens": int(dec["max_tokens"]), "temperature": 0.0, "seed": plan.seed,
            "stop": list(dec.get("stop") or ()), "n": 1, "stream": False,
            "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}


def run_batchsafe(plan: Plan) -> dict[str, Any]:
    """One ``run_plan`` into a fresh run directory: wall, CPU and texts by (group, position)."""
    from batchsafe.runtime.executor import run_plan

    with tempfile.TemporaryDirectory(prefix="batchsafe-vbench-") as tmp:
        c0, t0 = time.process_time(), time.perf_counter()
        summary = run_plan(plan, Path(tmp) / "run", progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert summary.complete
        texts = {}
        for name in ("samples", "fillers"):
            for line in summary.outputs[name].read_bytes().splitlines():
                r = json.loads(line)
                texts[(r["group"], r["position"])] = r["text"]
    return {"wall_s": wall, "cpu_s": cpu, "texts": texts}


def run_raw(plan: Plan, endpoint: str, served: str) -> dict[str, Any]:
    """The same warmup and groups through one plain httpx client (see the module doc)."""
    prompts = {p.id: p for p in plan.prompts}
    texts: dict[tuple[str, int], str] = {}
    c0, t0 = time.process_time(), time.perf_counter()
    with httpx.Client(base_url=endpoint, timeout=600, trust_env=False) as client:
        def post(body: dict[str, Any]) -> str:
            r = client.post("/v1/chat/completions", json=body)
            r.raise_for_status()
            return r.json()["choices"][0]["message"]["content"] or ""

        for pid in _warmup_prompts(plan):
            post(_body(plan, prompts[pid], served))
        for g in sorted(plan.groups, key=lambda g: g.index):
            bodies = [_body(plan, prompts[m.prompt], served) for m in g.members]
            out: list[str] = [""] * len(bodies)
            barrier = threading.Barrier(len(bodies))

            def worker(i: int) -> None:
                barrier.wait()
                out[i] = post(bodies[i])

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(bodies))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for pos, text in enumerate(out):
                texts[(g.id, pos)] = text
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "texts": texts}


def compare(plan: Plan, rounds: int = ROUNDS, kernel: str | None = None, raw_only: bool = False) -> dict[str, Any]:
    """Launch ``plan``'s server (kernel variant ``kernel``), alternate the arms ``rounds``
    times (only the raw loop with ``raw_only``), stop it; walls, CPU times and texts."""
    from batchsafe.runtime.launch import vllm_process

    eng = next(e for e in plan.engines if e.kind == "vllm")
    model = next(m for m in plan.models if m.hf_repo)
    with tempfile.TemporaryDirectory(prefix="batchsafe-vbench-server-") as tmp:
        t = time.perf_counter()
        server = vllm_process.start(plan, eng.name, model, kernel, Path(tmp))
        start_s = time.perf_counter() - t
        try:
            ext = _external(plan, server.endpoint)
            a_runs, b_runs = [], []
            for _ in range(rounds):
                if not raw_only:
                    a_runs.append(run_batchsafe(ext))
                b_runs.append(run_raw(plan, server.endpoint, model.hf_repo))
        finally:
            server.finish("closed")
    return {"server_start_s": start_s, "a_runs": a_runs, "b_runs": b_runs}


def summarize(plan: Plan, arms: dict[str, Any], strict: bool = True) -> dict[str, Any]:
    """Check both arms sent the same requests (sequential texts equal; only counted when not
    ``strict``, for servers whose single requests do not repeat) and report the overhead."""
    a_runs, b_runs = arms["a_runs"], arms["b_runs"]
    sizes = {g.id: len(g.members) for g in plan.groups}
    seq_keys = sorted(k for k in a_runs[0]["texts"] if sizes[k[0]] == 1)
    batch_keys = sorted(k for k in a_runs[0]["texts"] if sizes[k[0]] > 1)
    ref = a_runs[0]["texts"]
    for r in a_runs + b_runs:
        assert set(r["texts"]) == set(ref), "the arms ran different groups"
        assert not strict or all(r["texts"][k] == ref[k] for k in seq_keys), "sequential texts differ between arms"
    seq_same = [sum(r["texts"][k] == ref[k] for k in seq_keys) for r in a_runs[1:] + b_runs]
    agree = [sum(r["texts"][k] == ref[k] for k in batch_keys) for r in a_runs[1:] + b_runs]
    wa, wb = statistics.median(r["wall_s"] for r in a_runs), statistics.median(r["wall_s"] for r in b_runs)
    pct = 100.0 * (wa - wb) / wb
    return {"sequences": len(ref), "rounds": len(a_runs), "server_start_s": round(arms["server_start_s"], 2),
            "batchsafe_wall_s": [round(r["wall_s"], 3) for r in a_runs],
            "raw_wall_s": [round(r["wall_s"], 3) for r in b_runs],
            "batchsafe_cpu_s": [round(r["cpu_s"], 3) for r in a_runs],
            "raw_cpu_s": [round(r["cpu_s"], 3) for r in b_runs],
            "median_batchsafe_s": round(wa, 3), "median_raw_s": round(wb, 3),
            "overhead_pct": round(pct, 2), "sequential_texts_identical": all(n == len(seq_keys) for n in seq_same),
            "sequential_texts_equal_to_first_run": f"{seq_same} of {len(seq_keys)} per later run",
            "batched_texts_equal_to_first_run": f"{agree} of {len(batch_keys)} per later run",
            "load_avg_end": [round(x, 2) for x in os.getloadavg()]}


def run(rounds: int = ROUNDS) -> dict[str, Any]:
    """Launch the vLLM-CPU server of ``specs/vllm_cpu.yaml``, compare the arms, stop it."""
    from batchsafe.compiler.compile import compile_spec

    plan = reduced_plan(compile_spec(SPEC), GROUPS_PER_BATCH_SIZE, phase=PHASE)
    report = summarize(plan, compare(plan, rounds))
    return {"spec": str(SPEC.relative_to(ROOT)), "groups": {str(k): v for k, v in GROUPS_PER_BATCH_SIZE.items()},
            **report, "target_pct": TARGET_PCT, "met": report["overhead_pct"] <= TARGET_PCT}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
