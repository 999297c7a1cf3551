"""Compiler: counts, schedule invariants, determinism, hashing, pins, plan loading."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchsafe.compiler.compile import compile_spec
from batchsafe.compiler.diagnostics import SpecError
from batchsafe.compiler.plan import Plan, PlanError, load_plan
from batchsafe.compiler.plandiff import diff_plans
from batchsafe.compiler.selection import allocate, seeded_order

HERE = Path(__file__).parent / "test_compile"
SPEC = HERE / "mini.yaml"
DATA = HERE / "data"


@pytest.fixture(scope="module")
def plan() -> Plan:
    return compile_spec(SPEC, DATA)


def test_phase_counts_follow_prompts_times_conditions_times_models(plan: Plan) -> None:
    tasks = Counter(p.task for p in plan.prompts)
    assert tasks == {"adv": 3, "jail": 2, "bias": 2, "truth": 2, "mmlu": 3, "arc": 2}
    assert plan.summary()["phases"] == {"p1": 14 * 3 * 2, "p2": 5 * 3 * 2, "p3": 3 * 4, "p4": 14 * 2,
                                        "p5": 14 * 2 * 2, "p6": 14 * 3}
    assert len(plan.samples) == 252 == len({s.id for s in plan.samples})


def test_every_sample_runs_exactly_once_where_the_sample_says(plan: Plan) -> None:
    by_id = {s.id: s for s in plan.samples}
    seen = Counter()
    for group in plan.groups:
        for pos, member in enumerate(group.members):
            if member.sample is None:
                continue
            seen[member.sample] += 1
            sample = by_id[member.sample]
            assert (sample.group, sample.position, sample.prompt) == (group.id, pos, member.prompt)
            assert (sample.phase, sample.model, sample.condition) == (group.phase, group.model, group.condition)
    assert set(seen) == set(by_id) and set(seen.values()) == {1}
    assert [g.index for g in plan.groups] == list(range(len(plan.groups)))


def test_batch_groups_have_exact_size_padded_with_unscored_fillers(plan: Plan) -> None:
    p1 = [g for g in plan.groups if g.phase == "p1"]
    for g in p1:
        assert len(g.members) == g.condition.batch_size
        assert g.mode == ("sequential" if g.condition.batch_size == 1 else "synchronized")
    bs4 = [g for g in p1 if g.condition.batch_size == 4 and g.model == "m1"]
    assert len(bs4) == 4  # 14 prompts -> 3 full groups + 1 group of 2 targets and 2 fillers
    assert [sum(m.sample is None for m in g.members) for g in bs4] == [0, 0, 0, 2]
    last = bs4[-1]
    scored = {m.prompt for m in last.members if m.sample}
    assert not scored & {m.prompt for m in last.members if m.sample is None}


def test_cobatch_groups_put_target_first_and_fill_from_the_pool(plan: Plan) -> None:
    prompts = {p.id: p for p in plan.prompts}
    for g in (g for g in plan.groups if g.phase == "p2"):
        assert g.members[0].sample is not None
        assert all(m.sample is None for m in g.members[1:])
        if g.condition.cobatch == "solo":
            assert len(g.members) == 1 and g.condition.group_size == 1
            continue
        assert len(g.members) == 3
        pool = {"benign": {"mmlu", "arc"}, "adversarial": {"adv", "jail"}}[g.condition.cobatch]
        assert {prompts[m.prompt].task for m in g.members[1:]} <= pool
        assert g.members[0].prompt not in {m.prompt for m in g.members[1:]}


def test_baselines_point_to_the_baseline_condition_of_the_same_prompt(plan: Plan) -> None:
    by_id = {s.id: s for s in plan.samples}
    for s in plan.samples:
        c = s.condition
        is_base = {"p1": c.batch_size == 1, "p2": c.cobatch == "solo", "p3": c.concurrency == 1,
                   "p4": c.batch_size == 1, "p5": c.batch_size == 1, "p6": c.repeat == 0}[s.phase]
        assert (s.baseline is None) == is_base, s
        if s.baseline:
            b = by_id[s.baseline]
            assert (b.prompt, b.model, b.phase) == (s.prompt, s.model, s.phase)
            if s.phase == "p3":  # partial baseline: only concurrency is replaced
                assert (b.condition.quant, b.condition.concurrency) == (c.quant, 1)
            if s.phase == "p5":
                assert (b.condition.kernel, b.condition.batch_size) == (c.kernel, 1)


def test_prompts_carry_scorer_metadata(plan: Plan) -> None:
    by_task = {}
    for p in plan.prompts:
        by_task.setdefault(p.task, p)
    assert by_task["mmlu"].meta["answer"] in "ABCD"
    assert "A. " in by_task["mmlu"].messages[-1].content
    assert by_task["bias"].meta["answer"] == "C"  # ambiguous BBQ contexts: "Can't be determined"
    assert {by_task["bias"].meta["biased_answer"], by_task["bias"].meta["anti_biased_answer"]} == {"A", "B"}
    assert by_task["truth"].meta["correct_answers"] and by_task["truth"].meta["incorrect_answers"]
    jail = by_task["jail"]
    assert jail.meta["goal"] in jail.messages[-1].content and "[INSERT PROMPT HERE]" not in jail.messages[-1].content
    assert len(jail.records) == 2


def test_compiles_from_other_directories_are_byte_identical(plan: Plan, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    again = compile_spec(SPEC.resolve(), DATA.resolve())
    assert again.to_bytes() == plan.to_bytes() and again.plan_hash == plan.plan_hash
    assert plan.compute_hash() == plan.plan_hash
    text = plan.to_bytes().decode()
    assert str(HERE.resolve()) not in text and str(Path.cwd()) not in text


def test_one_changed_byte_changes_the_hash_and_a_pin_names_the_file(plan: Plan, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(DATA, data)
    mmlu = data / "mmlu/test/nutrition_test.csv"
    mmlu.write_bytes(mmlu.read_bytes().replace(b"Calcium", b"Calciun"))
    changed = compile_spec(SPEC, data)
    assert changed.plan_hash != plan.plan_hash
    diff = diff_plans(plan, changed)
    assert [c.where for c in diff.inputs] == ["inputs/mmlu/test/nutrition_test.csv"]

    adv = data / "advbench/harmful_behaviors.csv"
    adv.write_bytes(adv.read_bytes().replace(b"train", b"tram"))
    with pytest.raises(SpecError) as exc:
        compile_spec(SPEC, data)
    (d,) = exc.value.diagnostics
    assert d.code == "hash-mismatch" and "advbench/harmful_behaviors.csv" in d.message
    assert d.path == "datasets.advbench.files[0].sha256"


def test_locators_do_not_change_the_plan_hash(plan: Plan, tmp_path: Path) -> None:
    text = SPEC.read_text().replace("/models/m1.gguf", "/elsewhere/m1.gguf")
    text = text.replace("  ollama: {kind: ollama}", "  ollama: {kind: ollama, endpoint: 'http://127.0.0.1:9999'}")
    moved = tmp_path / "mini.yaml"
    moved.write_text(text)
    other = compile_spec(moved, DATA)
    assert other.plan_hash == plan.plan_hash
    assert other.locators.endpoints["ollama"] == "http://127.0.0.1:9999"
    assert other.locators.model_sources["m1"][0]["path"] == "/elsewhere/m1.gguf"


def test_unpinned_references_need_allow_unpinned_and_are_recorded(tmp_path: Path) -> None:
    text = SPEC.read_text().replace(
        "vllm/vllm-openai@sha256:d5b12dfb74d605615f8b29ebafaa52294c118bcac7bc9e941785c4108fdb913a", "vllm/vllm-openai:latest")
    text = text.replace("revision: 89abcdef0123456789abcdef0123456789abcdef", "revision: null")
    spec = tmp_path / "mini.yaml"
    spec.write_text(text)
    with pytest.raises(SpecError) as exc:
        compile_spec(spec, DATA)
    codes = Counter(d.code for d in exc.value.diagnostics)
    assert codes == {"unpinned": 2}  # each reference once, at its first use (phases[0])
    assert {d.path for d in exc.value.diagnostics} == {"phases[0].engine", "phases[0].models[1]"}
    plan = compile_spec(spec, DATA, allow_unpinned=True)
    assert "engines.vllm.image vllm/vllm-openai:latest" in plan.unpinned
    assert "models.m2.hf org/m2 revision" in plan.unpinned
    assert plan.summary()["unpinned"] == plan.unpinned


def test_ollama_tags_without_digest_are_resolved_at_run(plan: Plan) -> None:
    assert plan.resolved_at_run == ["models.m1.ollama.tags.Q2_K m1:q2_K"]


def test_plan_loading_refuses_future_versions_and_tampering(plan: Plan, tmp_path: Path) -> None:
    path = tmp_path / "plan.lock.json"
    path.write_bytes(plan.to_bytes())
    assert load_plan(path) == plan
    raw = json.loads(path.read_bytes())
    raw["samples"][0]["prompt"] = raw["samples"][1]["prompt"]
    path.write_text(json.dumps(raw))
    with pytest.raises(PlanError, match="does not match its content"):
        load_plan(path)
    raw["schema_version"] = 2
    path.write_text(json.dumps(raw))
    with pytest.raises(PlanError, match="newer than this batchsafe understands"):
        load_plan(path)
    path.write_text("{}")
    with pytest.raises(PlanError, match="no integer schema_version"):
        load_plan(path)
    path.write_text("[1, 2]")
    with pytest.raises(PlanError, match="not a plan"):
        load_plan(path)


@given(st.dictionaries(st.text("abcdefgh", min_size=1, max_size=3), st.integers(1, 50), min_size=1, max_size=8),
       st.data())
def test_allocation_is_exact_and_bounded(sizes: dict[str, int], data) -> None:
    count = data.draw(st.integers(0, sum(sizes.values())))
    alloc = allocate(sizes, count)
    assert sum(alloc.values()) == count
    assert all(0 <= alloc[s] <= sizes[s] for s in sizes)
    assert alloc == allocate(dict(reversed(list(sizes.items()))), count)


@given(st.lists(st.text(min_size=1, max_size=6), unique=True, max_size=30), st.integers(), st.text(max_size=5))
def test_seeded_order_is_a_stable_permutation(items: list[str], seed: int, purpose: str) -> None:
    order = seeded_order(items, seed, purpose)
    assert sorted(order) == sorted(items)
    assert seeded_order(list(reversed(items)), seed, purpose) == order
