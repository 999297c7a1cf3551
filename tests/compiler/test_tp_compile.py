"""The tensor_parallel axis at compile time: conditions, baselines, run order, the plan's TP
variants, identity, and the positioned errors of a TP axis that cannot run."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchsafe.compiler.compile import compile_spec
from batchsafe.compiler.diagnostics import SpecError
from batchsafe.compiler.plan import Condition
from batchsafe.compiler.tensor_parallel import MULTICAST_OFF_ENV, plan_variant
from tp_fixtures import tp_spec


def errors(path: Path) -> str:
    with pytest.raises(SpecError) as exc:
        compile_spec(path)
    return "\n".join(exc.value.render())


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    return compile_spec(tp_spec(tmp_path_factory.mktemp("tp")))


def test_conditions_cross_tp_with_batch_size_and_the_baseline_is_tp1_bs1(plan) -> None:
    assert len(plan.samples) == 16 * 4
    conds = {(s.condition.tensor_parallel, s.condition.batch_size) for s in plan.samples}
    assert conds == {(1, 1), (1, 4), (2, 1), (2, 4)}
    by_id = {s.id: s for s in plan.samples}
    for s in plan.samples:
        if (s.condition.tensor_parallel, s.condition.batch_size) == (1, 1):
            assert s.baseline is None
        else:
            base = by_id[s.baseline]
            assert (base.condition.tensor_parallel, base.condition.batch_size, base.prompt) == (1, 1, s.prompt)
    assert Condition(batch_size=4, tensor_parallel=2).label() == "bs=4,tp=2"


def test_tp_is_the_outermost_axis_so_each_size_is_one_run_of_groups(plan) -> None:
    sizes = [g.condition.tensor_parallel for g in sorted(plan.groups, key=lambda g: g.index)]
    first2 = sizes.index(2)
    assert set(sizes[:first2]) == {1} and set(sizes[first2:]) == {2}


def test_the_plan_records_each_sizes_flag_and_multicast_off_env(plan) -> None:
    [phase] = plan.phases
    assert phase.tensor_parallel == [
        {"size": 1, "flags": ["--tensor-parallel-size", "1"], "env": {}},
        {"size": 2, "flags": ["--tensor-parallel-size", "2"], "env": MULTICAST_OFF_ENV}]
    assert MULTICAST_OFF_ENV == {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                                 "NVSHMEM_DISABLE_NVLS": "1"}
    assert plan_variant(plan, "vllm", 2)["flags"] == ["--tensor-parallel-size", "2"]
    assert plan_variant(plan, "vllm", 4) is None and plan_variant(plan, "vllm", None) is None


def test_tp_is_identity_and_the_axis_absent_leaves_plans_as_they_were(plan, tmp_path) -> None:
    other = compile_spec(tp_spec(tmp_path, "{tensor_parallel: [1, 4], batch_sizes: [1, 4]}"))
    assert other.plan_hash != plan.plan_hash
    assert {s.id for s in other.samples if s.condition.tensor_parallel == 1} == \
        {s.id for s in plan.samples if s.condition.tensor_parallel == 1}
    # Without the axis, neither conditions nor phase summaries carry a TP key.
    none = compile_spec(tp_spec(tmp_path, "{batch_sizes: [1, 4]}", lambda t: t.replace("kind: tensor_parallel",
                                                                                          "kind: batch_size")))
    dumped = none.to_bytes()
    assert b"tensor_parallel" not in dumped.replace(b'"kind":"batch_size"', b"")
    assert none.samples[0].condition.model_dump() == {"batch_size": 1, "cobatch": None, "group_size": None,
                                                      "quant": None, "concurrency": None, "kernel": None, "repeat": 0}


def test_an_explicit_baseline_may_name_another_size(tmp_path) -> None:
    path = tp_spec(tmp_path, "{tensor_parallel: [1, 2]}", lambda t: t.replace("targets: []",
                                                                             "    baseline: {tensor_parallel: 2}\ntargets: []"))
    plan = compile_spec(path)
    assert {s.condition.tensor_parallel for s in plan.samples if s.baseline is None} == {2}


def test_bad_tp_axes_are_positioned_errors(tmp_path) -> None:
    text = errors(tp_spec(tmp_path, "{tensor_parallel: [1, 2, 2, 0]}"))
    assert "tp.yaml:" in text and "phases[0].axes.tensor_parallel[3]" in text  # 0 < 1: schema range error
    text = errors(tp_spec(tmp_path, "{tensor_parallel: [1, 2, 2]}"))
    assert "error[duplicate-id] phases[0].axes.tensor_parallel[2]: tensor_parallel size 2 is listed twice" in text
    text = errors(tp_spec(tmp_path, "{tensor_parallel: [1, 2.5]}"))
    assert "phases[0].axes.tensor_parallel[1]" in text
    text = errors(tp_spec(tmp_path, "{batch_sizes: [1, 2]}"))
    assert "a tensor_parallel phase needs axes.tensor_parallel" in text


def test_tp_needs_a_launched_vllm_server_and_owns_its_flag_and_env(tmp_path) -> None:
    ext = tp_spec(tmp_path, edit=lambda t: t.replace("      kind: process\n", "      kind: external\n"))
    assert "attaches to an external server, which batchsafe cannot restart at another TP size" in errors(ext)
    flag = tp_spec(tmp_path, edit=lambda t: t.replace('--max-num-seqs, "16"]', '--max-num-seqs, "16", -tp, "2"]'))
    text = errors(flag)
    assert "engines.vllm.flags[9]:" in text and "sets -tp itself" in text
    env = tp_spec(tmp_path, edit=lambda t: t.replace('VLLM_BATCH_INVARIANT: "0"}',
                                                     'VLLM_BATCH_INVARIANT: "0", NCCL_NVLS_ENABLE: "1"}'))
    text = errors(env)
    assert "engines.vllm.env.NCCL_NVLS_ENABLE" in text and "turns NVLink multicast on" in text
    kflag = tp_spec(tmp_path, "{tensor_parallel: [1, 2], kernel: [{id: a}, {id: b, flags: [--tensor-parallel-size=2]}]}")
    assert "phases[0].axes.kernel[1].flags[0]" in errors(kflag)


def test_engines_without_tp_support_refuse_the_axis(tmp_path) -> None:
    from batchsafe.compiler.tensor_parallel import TP_ENGINE_KINDS

    assert TP_ENGINE_KINDS == {"vllm"}  # as the engine catalogue declares it

    def to_llamacpp(t: str) -> str:
        t = t.replace("engine: vllm\n", "engine: local\n").replace("dispatch: synchronized", "dispatch: sequential")
        return t.replace("\nengines:\n", "\nengines:\n  local: {kind: llamacpp}\n")
    text = errors(tp_spec(tmp_path, edit=to_llamacpp))
    assert "error[invalid-value] phases[0].axes.tensor_parallel: engine 'local' (kind llamacpp) cannot run a " \
           "tensor_parallel axis" in text
