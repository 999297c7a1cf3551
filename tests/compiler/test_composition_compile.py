"""Composition phases at compile time: the locked schedule (deterministic for a seed, different
for another), groups and baselines, identity, and positioned errors for configs that cannot run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from batchsafe.compiler.compile import compile_spec
from batchsafe.compiler.composition import arrival_offsets, background_slots, derived_seed
from batchsafe.compiler.diagnostics import SpecError
from batchsafe.compiler.plan import Condition, load_plan
from composition_fixtures import composition_spec


def errors(path: Path) -> str:
    with pytest.raises(SpecError) as exc:
        compile_spec(path, allow_unpinned=True)
    return "\n".join(exc.value.render())


def compiled(tmp_path: Path, name: str, **kw):
    folder = tmp_path / name
    folder.mkdir()
    return compile_spec(composition_spec(folder, **kw), allow_unpinned=True)


def test_groups_samples_and_baselines(tmp_path) -> None:
    plan = compiled(tmp_path, "a", levels="[0, 2, 3]", n_targets=5)
    assert len(plan.samples) == 15 and len(plan.groups) == 3
    assert [g.condition.load for g in plan.groups] == [0, 2, 3]
    assert all(g.mode == "concurrent" and all(m.sample for m in g.members) for g in plan.groups)
    by_id = {s.id: s for s in plan.samples}
    for s in plan.samples:
        if s.condition.load == 0:
            assert s.baseline is None
        else:
            assert by_id[s.baseline].condition.load == 0 and by_id[s.baseline].prompt == s.prompt
    [phase] = plan.phases
    sched = phase.composition
    # Targets in group order are the schedule's arrival order, the same at every level (paired).
    order = [t["prompt"] for t in sched["targets"]]
    assert all([m.prompt for m in g.members] == order for g in plan.groups)
    offs = [t["offset_s"] for t in sched["targets"]]
    assert offs == sorted(offs) and offs[0] == 0.2
    # Level L has L background slots, each a rotation of one permutation of the pool, never a target.
    assert sched["background"]["0"] == [] and len(sched["background"]["3"]) == 3
    pool = set(sched["background"]["2"][0])
    assert len(pool) == 6 and not pool & set(order)
    assert all(set(slot) == pool for lv in ("2", "3") for slot in sched["background"][lv])
    assert Condition(load=3).label() == "load=3"


def test_schedule_is_deterministic_for_a_seed_and_changes_with_it(tmp_path) -> None:
    a, b = compiled(tmp_path, "a"), compiled(tmp_path, "b")
    assert a.to_bytes() == b.to_bytes() and a.plan_hash == b.plan_hash
    c = compiled(tmp_path, "c", seed=7)
    assert c.phases[0].composition["targets"] != a.phases[0].composition["targets"]
    assert c.plan_hash != a.plan_hash
    # A schedule seed of its own (composition.seed) changes the offsets but not the target order.
    folder = tmp_path / "d"
    folder.mkdir()
    path = composition_spec(folder)
    path.write_text(path.read_text().replace("      schedule: poisson", "      schedule: poisson\n      seed: 99"))
    d = compile_spec(path, allow_unpinned=True).phases[0].composition
    ta = a.phases[0].composition["targets"]
    assert [t["prompt"] for t in d["targets"]] != [] and d["seed"] == 99
    assert [t["offset_s"] for t in d["targets"]] != [t["offset_s"] for t in ta]
    # fixed: exact spacing 1 / rate from start_s
    fixed = compiled(tmp_path, "e", schedule="fixed", rate=2.0, start=1.0, n_targets=4)
    assert [t["offset_s"] for t in fixed.phases[0].composition["targets"]] == [1.0, 1.5, 2.0, 2.5]


def test_poisson_offsets_are_numpy_generator_draws() -> None:
    seed = derived_seed(42, "arrivals:c1")
    got = arrival_offsets(5, "poisson", 4.0, 0.2, seed)
    gaps = np.random.default_rng(seed).exponential(0.25, size=5)
    want = [0.2] + [round(0.2 + float(x), 6) for x in np.cumsum(gaps[1:])]
    assert got == want
    assert arrival_offsets(0, "poisson", 4.0, 0.2, seed) == []
    assert background_slots(["a", "b", "c"], 0, 1) == [] and background_slots([], 2, 1) == []


def test_the_schedule_is_locked_in_the_plan_file_and_in_its_hash(tmp_path) -> None:
    plan = compiled(tmp_path, "a")
    path = tmp_path / "plan.lock.json"
    path.write_bytes(plan.to_bytes())
    assert load_plan(path).phases[0].composition == plan.phases[0].composition
    tampered = plan.to_bytes().replace(b'"offset_s":0.2,', b'"offset_s":0.3,', 1)
    assert tampered != plan.to_bytes()
    path.write_bytes(tampered)
    with pytest.raises(Exception, match="plan_hash .* does not match"):
        load_plan(path)


def test_plans_without_a_composition_phase_carry_no_composition_keys(tmp_path) -> None:
    plan = compiled(tmp_path, "a")
    other = plan.samples[0].condition.model_copy(update={"load": None})
    assert "load" not in other.model_dump()
    from batchsafe.compiler.plan import PhaseSummary
    summary = PhaseSummary(id="p", kind="batch_size", engine="e", models=[], tasks=[], dispatch="sequential",
                           prompts=0, conditions=0, samples=0, groups=0)
    assert "composition" not in summary.model_dump()


@pytest.mark.parametrize("edit, where, message", [
    (lambda t: t.replace("load_levels: [0, 2]", "load_levels: [2, 4]"), "phases[0].composition.load_levels",
     "load_levels must include 0"),
    (lambda t: t.replace("load_levels: [0, 2]", "load_levels: [0, 2, 2]"), "phases[0].composition.load_levels[2]",
     "load level 2 is listed twice"),
    (lambda t: t.replace("load_levels: [0, 2]", "load_levels: [0, -1]"), "phases[0].composition.load_levels[1]", ""),
    (lambda t: t.replace("rate_per_s: 4.0", "rate_per_s: 0"), "phases[0].composition.rate_per_s", ""),
    (lambda t: t.replace("schedule: poisson", "schedule: bursty"), "phases[0].composition.schedule", ""),
    (lambda t: t.replace("dispatch: concurrent", "dispatch: synchronized"), "phases[0].dispatch",
     "dispatch must be concurrent"),
    (lambda t: t.replace("axes: {}", "axes: {batch_sizes: [1, 2]}"), "phases[0].axes.batch_sizes",
     "the load level as its axis"),
    (lambda t: t.replace("background: {tasks: [background]}", "background: {tasks: [backgrund]}"),
     "phases[0].composition.background.tasks[0]", "unknown task 'backgrund'"),
])
def test_bad_configs_are_positioned_errors(tmp_path, edit, where, message) -> None:
    path = composition_spec(tmp_path)
    path.write_text(edit(path.read_text()))
    text = errors(path)
    assert "study_c.yaml:" in text and f"] {where}" in text, text
    assert message in text, text


def test_missing_block_wrong_kind_and_wrong_engine(tmp_path) -> None:
    path = composition_spec(tmp_path)
    base = path.read_text()
    block = base[base.index("    composition:\n"):]
    path.write_text(base.replace(block, ""))
    assert "a composition phase needs a composition block" in errors(path)
    path.write_text(base.replace("kind: composition", "kind: batch_size").replace("axes: {}", "axes: {batch_sizes: [1]}"))
    text = errors(path)
    assert "phases[0].composition: composition settings need kind composition" in text
    path.write_text(base.replace("    engine: vllm\n", "    engine: local\n").replace(
        "\nengines:\n", "\nengines:\n  local: {kind: llamacpp}\n"))
    assert "phases[0].engine" in (text := errors(path)) and "engine kind vllm, not llamacpp" in text, text
    # A background pool that is only the targets is empty once they are taken out.
    path.write_text(base.replace("background: {tasks: [background]}", "background: {tasks: [targets]}"))
    assert "phases[0].composition.background.tasks: the background pool is empty" in errors(path)
