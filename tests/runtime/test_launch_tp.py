"""The tensor_parallel axis on the launch side, without a server: bindings, command lines and
env per TP size, the heads-divisibility preflight, launch records, and verify's stack checks."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from batchsafe.compiler.compile import compile_spec
from batchsafe.compiler.tensor_parallel import MULTICAST_OFF_ENV, plan_variant
from batchsafe.runtime.bindings import binding_for, preflight
from batchsafe.runtime.engine import EngineError
from batchsafe.runtime.engines.vllm import VLLMEngine
from batchsafe.runtime.launch import tensor_parallel as tp_launch
from batchsafe.runtime.launch.record import LaunchRecord
from batchsafe.runtime.launch.vllm_process import prepare
from batchsafe.verification.checks import Context
from batchsafe.verification.report import Stage
from batchsafe.verification.stack import check_record, check_stack
from tp_fixtures import tp_spec

SMOL_CONFIG = {"architectures": ["LlamaForCausalLM"], "num_attention_heads": 9, "num_key_value_heads": 3}


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    return compile_spec(tp_spec(tmp_path_factory.mktemp("tp")))


def request(plan, size, model_dir: Path | None = None):
    req = prepare(plan, "vllm", plan.models[0], None, tp=plan_variant(plan, "vllm", size))
    return dataclasses.replace(req, python=Path(sys.executable), model_dir=model_dir or req.model_dir)


def model_dir(tmp_path: Path, config: dict) -> Path:
    d = tmp_path / "model"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(config))
    return d


def test_each_size_gets_its_flag_last_and_tp2_gets_multicast_off(plan) -> None:
    base = prepare(plan, "vllm", plan.models[0], None)
    one, two = request(plan, 1), request(plan, 2)
    assert base.tensor_parallel is None and "--tensor-parallel-size" not in base.flags
    assert one.flags == [*base.flags, "--tensor-parallel-size", "1"] and one.env == base.env
    assert two.flags == [*base.flags, "--tensor-parallel-size", "2"] and two.tensor_parallel == 2
    assert two.env == {**base.env, **MULTICAST_OFF_ENV}
    assert two.env["NCCL_NVLS_ENABLE"] == "0" and two.env["TORCH_SYMM_MEM_DISABLE_MULTICAST"] == "1"
    assert two.env["NVSHMEM_DISABLE_NVLS"] == "1"


def test_a_size_that_does_not_divide_the_heads_is_found_before_start(plan, tmp_path) -> None:
    smol = model_dir(tmp_path, SMOL_CONFIG)
    assert request(plan, 1, smol).problems() == []
    heads, kv = request(plan, 2, smol).problems()  # SmolLM2-135M: 9 heads, 3 KV heads
    assert "tensor_parallel 2 does not divide the model's num_attention_heads (9)" in heads
    assert "cannot shard or replicate the model's 3 key-value heads" in kv
    even = model_dir(tmp_path, {"num_attention_heads": 14, "num_key_value_heads": 2})
    assert request(plan, 2, even).problems() == []
    assert tp_launch.problems(even, 4) and "key-value heads" in tp_launch.problems(
        model_dir(tmp_path, {"num_attention_heads": 12, "num_key_value_heads": 3}), 4)[-1]
    # Fewer KV heads than ranks are replicated: 8 heads / 2 KV heads at TP 4 is fine.
    assert tp_launch.problems(model_dir(tmp_path, {"num_attention_heads": 8, "num_key_value_heads": 2}), 4) == []


def test_preflight_names_the_tp_size_the_model_cannot_take(plan, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BATCHSAFE_CACHE", str(tmp_path))
    d = tmp_path / "models" / "smollm2-135m-instruct-hf"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(SMOL_CONFIG))
    text = "\n".join(preflight(plan))
    assert "tensor_parallel 2 does not divide the model's num_attention_heads (9)" in text


def test_bindings_split_by_size_and_old_bindings_dump_as_before(plan) -> None:
    bindings = {binding_for(plan, g) for g in plan.groups}
    assert {b.tensor_parallel for b in bindings} == {1, 2}
    two = next(b for b in bindings if b.tensor_parallel == 2)
    assert two.label() == "vllm/vllm smollm2-135m tp=2" and two.as_dict()["tensor_parallel"] == 2
    assert "tensor_parallel" not in dataclasses.replace(two, tensor_parallel=None).as_dict()


def test_the_adapter_refuses_a_size_the_plan_lacks_and_needs_a_run_dir(plan) -> None:
    b = next(binding_for(plan, g) for g in plan.groups if g.condition.tensor_parallel == 2)
    with pytest.raises(EngineError, match="tensor_parallel 8 is not a size"):
        VLLMEngine.from_plan(plan, dataclasses.replace(b, tensor_parallel=8), run_dir="/nonexistent")
    with pytest.raises(EngineError, match="needs the run directory"):
        VLLMEngine.from_plan(plan, b, run_dir=None)


def record(plan, size: int | None, **kw) -> LaunchRecord:
    req = request(plan, size) if size else prepare(plan, "vllm", plan.models[0], None)
    argv = [str(req.python), "-m", "vllm.entrypoints.openai.api_server", "--model", "/m", "--served-model-name",
            req.served_name, "--disable-uvicorn-access-log", "--host", "127.0.0.1", "--port", "9", *req.flags]
    base = dict(seq=1, engine="vllm", kind="process", tensor_parallel=size, argv=argv, env=req.env,
                endpoint="http://x", server_version="0.32.0", served_model=req.served_name, max_model_len=2048,
                dtype="bfloat16", log="logs/x.log", weights_digest=plan.models[0].hf_weights_sha256)
    return LaunchRecord(**{**base, **kw})


def problems(plan, rec: LaunchRecord) -> str:
    st = Stage(name="stack")
    check_record(plan, rec, st)
    return "\n".join(st.problems)


def test_records_name_their_size_and_old_records_dump_as_before(plan) -> None:
    rec = record(plan, 2)
    assert rec.file_name() == "launch/001-vllm-tp2.json"
    assert json.loads(rec.model_dump_json())["tensor_parallel"] == 2
    assert "tensor_parallel" not in record(plan, None).model_dump(mode="json")


def test_stack_accepts_the_plans_tp_servers_and_names_each_difference(plan) -> None:
    assert problems(plan, record(plan, 1)) == "" and problems(plan, record(plan, 2)) == ""
    good = record(plan, 2)
    lied = record(plan, 2, argv=[*good.argv[:-1], "1"])
    assert "the server ran with --tensor-parallel-size 1, the plan says 2" in problems(plan, lied)
    multicast = record(plan, 2, env={**good.env, "NCCL_NVLS_ENABLE": "1"})
    text = problems(plan, multicast)
    assert "ran without NVLink multicast off: NCCL_NVLS_ENABLE='1' (want 0)" in text and "env differs" in text
    assert "tensor_parallel 4 is not a size the plan gives" in problems(plan, record(plan, 4 - 2, tensor_parallel=4))
    unnamed = record(plan, 2, tensor_parallel=None)
    assert "but the record names no TP size" in problems(plan, unnamed)


def fake_ctx(plan, records: list[LaunchRecord]) -> Context:
    blobs = {r.file_name(): r.model_dump_json().encode() for r in records}
    src = SimpleNamespace(manifest=SimpleNamespace(files=[SimpleNamespace(name=n) for n in blobs]),
                          read=blobs.__getitem__, has=lambda n: n in blobs)
    return Context(src=src, plan=plan)  # type: ignore[arg-type]


def test_stack_needs_a_record_for_every_size_the_groups_ran_at(plan) -> None:
    both = [record(plan, 1), record(plan, 2, seq=2)]
    st = check_stack(fake_ctx(plan, both))
    assert st.status == "PASS", st.problems
    st = check_stack(fake_ctx(plan, both[:1]))
    assert st.status == "FAIL"
    assert any("tensor_parallel 2 ran groups, but no launch record" in p for p in st.problems)
    failed = [record(plan, 1), record(plan, 2, seq=2, stop_reason="failed")]
    assert check_stack(fake_ctx(plan, failed)).status == "FAIL"


def test_a_container_launch_gets_the_same_tp_flag_env_and_record_size(tmp_path) -> None:
    from batchsafe.runtime.launch import container

    image = "vllm/vllm-openai@sha256:" + "a" * 64
    spec = tp_spec(tmp_path, edit=lambda t: t.replace("      kind: process\n", "      kind: container\n").replace(
        '    version: "0.32.0"\n', f'    version: "0.32.0"\n    image: "{image}"\n'))
    plan = compile_spec(spec)
    req = container.prepare(plan, "vllm", plan.models[0], None, tp=plan_variant(plan, "vllm", 2))
    assert req.flags[-2:] == ["--tensor-parallel-size", "2"] and req.tensor_parallel == 2
    assert {k: req.env[k] for k in MULTICAST_OFF_ENV} == MULTICAST_OFF_ENV
    assert container.prepare(plan, "vllm", plan.models[0], None).tensor_parallel is None
