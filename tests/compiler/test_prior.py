"""select.from_bundle: prompts picked from a prior bundle's flip registry or scores.

A prior study is the compiler fixture spec with every advbench record and four jailbreak
pairs, run by the hand-made fake run (tests/analysis/test_analyze/fake_run.py) with some
prompts "calmed" (every sample answers as its baseline, so they never flip), analysed and
stored. Expected picks are computed here from the bundle's raw JSON lines, not through
the compiler's reader.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import fake_run as fake  # tests/analysis/test_analyze/fake_run.py, on sys.path via tests/conftest.py
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchsafe.analysis.analyze import analyze_bundle, analyze_run
from batchsafe.analysis.records import Direction
from batchsafe.core.canonical import canonical_bytes
from batchsafe.cli import main
from batchsafe.bundles.from_run import bundle_run
from batchsafe.bundles.store import BundleStore
from batchsafe.compiler.compile import compile_spec
from batchsafe.compiler.diagnostics import SpecError
from batchsafe.compiler.plan import Condition, Plan
from batchsafe.compiler.prior import PriorReader, pick_records
from batchsafe.compiler.spec import FlipDirection, FromBundle

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
MINI = HERE / "test_compile" / "mini.yaml"
DATA = HERE / "test_compile" / "data"
CASES = sorted((HERE / "test_prior" / "errors").glob("*.yaml"))
STORE = "runs/store"
"""The store, relative to the world's directory (the default store when compiling from there)."""


@dataclass
class World:
    """A directory holding mini.yaml, the prior spec and a store with the prior bundles."""

    root: Path
    store: BundleStore
    plan: Plan
    ids: dict[str, str] = field(default_factory=dict)
    """Placeholder name -> bundle id (or object digest) used by the golden cases."""


def _prompts_of(plan: Plan, task: str) -> list[str]:
    return [p.id for p in sorted((p for p in plan.prompts if p.task == task), key=lambda p: p.records)]


def _run(plan: Plan, dest: Path, calm: set[str]) -> Path:
    """The fake run, with every sample of a ``calm`` prompt answering exactly as its baseline."""
    rd = fake.write_run_dir(plan, dest)
    path = rd / "outputs" / "samples.jsonl"
    rows = [json.loads(line) for line in path.read_bytes().splitlines()]
    text = {r["sample"]: r["text"] for r in rows}
    baseline = {s.id: s.baseline for s in plan.samples}
    for r in rows:
        if r["prompt"] in calm and baseline[r["sample"]]:
            r["text"] = text[baseline[r["sample"]]]
    path.write_bytes(b"".join(canonical_bytes(r) for r in rows))
    return rd


def _bundle(world: World, name: str, calm: set[str]) -> str:
    rd = _run(world.plan, world.root / "runs" / name, calm)
    res = analyze_run(world.plan, rd, plots=False)
    return bundle_run(rd, world.plan, world.store, extra=res.bundle_files())


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("prior")
    (root / "mini.yaml").write_text(MINI.read_text())
    (root / "prior.yaml").write_text("extends: mini.yaml\ntasks:\n  adv: {select: {count: 6}}\n  jail: {select: {count: 4}}\n")
    plan = compile_spec(root / "prior.yaml", DATA)
    w = World(root, BundleStore(root / STORE), plan)
    adv, jail = _prompts_of(plan, "adv"), _prompts_of(plan, "jail")
    w.ids["PRIOR"] = _bundle(w, "prior", set(adv[1::2]) | {jail[0]})
    w.ids["OTHER"] = _bundle(w, "other", set(adv[0::2]))
    w.ids["CHILD"] = analyze_bundle(w.store, w.ids["PRIOR"], plots=False)[0]
    w.ids["NOANALYSIS"] = bundle_run(w.root / "runs" / "prior", plan, w.store)
    w.ids["DAMAGED"] = _bundle(w, "damaged", set())
    # Damage an object only the damaged bundle lists (the others' outputs differ by their calm prompts).
    entry = next(e for e in w.store.manifest(w.ids["DAMAGED"]).files if e.name == "outputs/samples.jsonl")
    for other in ("PRIOR", "OTHER", "NOANALYSIS", "CHILD"):
        assert entry.sha256 not in {e.sha256 for e in w.store.manifest(w.ids[other]).files}
    w.store.object_path(entry.sha256).unlink()
    w.ids["DAMAGED_OBJECT"] = entry.sha256
    # Data that lacks some of the prior's records (golden case prior_mismatch.yaml).
    (root / "small").mkdir()
    lines = (DATA / "advbench" / "harmful_behaviors.csv").read_text().splitlines(keepends=True)
    (root / "small" / "harmful_behaviors.csv").write_text("".join(lines[:3]))  # header + records 0 and 1
    return w


@pytest.fixture(scope="module")
def reader(world: World) -> PriorReader:
    return PriorReader(world.store)


def _raw(world: World, bid: str, name: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in world.store.read(bid, name).splitlines() if line.strip()]


def _records_by_prompt(world: World, bid: str) -> dict[str, tuple[str, ...]]:
    plan = orjson.loads(world.store.read(bid, "plan.lock.json"))
    return {p["id"]: tuple(p["records"]) for p in plan["prompts"]}


def _row_kept(row: dict[str, Any], models: Any, phases: Any, conditions: Any) -> bool:
    return ((models is None or row["model"] in models) and (phases is None or row["phase"] in phases)
            and (conditions is None or Condition(**row["condition"]).label() in conditions))


def expected_flipped(world: World, bid: str, task: str, *, directions: Any = None, models: Any = None,
                     phases: Any = None, conditions: Any = None, min_flips: int = 1) -> set[tuple[str, ...]]:
    """Records of the prompts of ``task`` with at least ``min_flips`` flipped rows passing the filters."""
    counts: Counter[str] = Counter()
    for row in _raw(world, bid, "analysis/flips.jsonl"):
        if (row["task"] == task and row["flipped"] and (directions is None or row["direction"] in directions)
                and _row_kept(row, models, phases, conditions)):
            counts[row["prompt"]] += 1
    records = _records_by_prompt(world, bid)
    return {records[p] for p, n in counts.items() if n >= min_flips}


def expected_boundary(world: World, bid: str, task: str, lo: float, hi: float, *, models: Any = None) -> set[tuple[str, ...]]:
    """Records of the prompts of ``task`` whose mean score over their samples is in [lo, hi]."""
    scores: dict[str, list[float]] = defaultdict(list)
    for row in _raw(world, bid, "analysis/scores.jsonl"):
        if row["task"] == task and _row_kept(row, models, None, None):
            scores[row["prompt"]].append(row["score"])
    records = _records_by_prompt(world, bid)
    return {records[p] for p, v in scores.items() if lo <= sum(v) / len(v) <= hi}


def _compile(world: World, tasks: dict[str, Any], name: str = "select.yaml", **kw: Any) -> Plan:
    # JSON is YAML 1.2 flow syntax; count: null drops mini.yaml's count (extends merges mappings).
    (world.root / name).write_text(json.dumps({"extends": "mini.yaml", "tasks": tasks}, indent=1))
    return compile_spec(world.root / name, DATA, store=kw.pop("store", world.store), **kw)


def _from(bid: str, **fb: Any) -> dict[str, Any]:
    return {"select": {"count": None, "from_bundle": {"bundle": bid, **fb}}}


def _selected(plan: Plan, task: str) -> set[tuple[str, ...]]:
    return {tuple(p.records) for p in plan.prompts if p.task == task}


# --------------------------------------------------------------------------- selection


def test_flipped_selects_exactly_the_records_whose_prompts_flipped(world: World) -> None:
    prior = world.ids["PRIOR"]
    plan = _compile(world, {"adv": _from(prior), "jail": _from(prior)})
    for task in ("adv", "jail"):
        want = expected_flipped(world, prior, task)
        every = {tuple(p.records) for p in world.plan.prompts if p.task == task}
        assert want and want < every, task  # the calmed prompts make the pick a proper subset
        assert _selected(plan, task) == want
    # Jailbreak picks keep the prior's template x goal pairs.
    assert all(len(r) == 2 for r in _selected(plan, "jail"))
    # Tasks without from_bundle select as in mini.yaml.
    mini = compile_spec(MINI, DATA)
    assert _selected(plan, "mmlu") == _selected(mini, "mmlu")


def test_filters_narrow_the_pick(world: World) -> None:
    prior = world.ids["PRIOR"]
    every = expected_flipped(world, prior, "adv")
    cases = [{"directions": ["refusal_to_compliance"]}, {"models": ["m2"]}, {"min_flips": 4},
             {"phases": ["p1", "p3"], "conditions": ["bs=2", "q=Q2_K,c=2"]}]
    narrower = 0
    for fb in cases:
        want = expected_flipped(world, prior, "adv", **fb)
        assert want <= every
        if not want:
            with pytest.raises(SpecError, match=r"error\[empty-selection\]"):
                _compile(world, {"adv": _from(prior, **fb)})
            continue
        assert _selected(_compile(world, {"adv": _from(prior, **fb)}), "adv") == want, fb
        narrower += want < every
    assert narrower >= 2  # the filters really remove prompts here


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(task=st.sampled_from(["adv", "jail", "bias", "mmlu", "truth"]),
       directions=st.none() | st.lists(st.sampled_from(list(get_args(FlipDirection))), min_size=1, unique=True),
       models=st.none() | st.lists(st.sampled_from(["m1", "m2"]), min_size=1, unique=True),
       phases=st.none() | st.lists(st.sampled_from(["p1", "p2", "p3", "p4", "p5", "p6"]), min_size=1, unique=True),
       min_flips=st.integers(1, 5))
def test_pick_matches_the_flip_registry(world: World, reader: PriorReader, task: str, directions: Any, models: Any, phases: Any,
                                        min_flips: int) -> None:
    prior = world.ids["PRIOR"]
    fb = FromBundle(bundle=prior, directions=directions, models=models, phases=phases, min_flips=min_flips)
    dataset = {"adv": "advbench", "jail": "jb", "bias": "bbq", "mmlu": "mmlu", "truth": "tqa"}[task]
    errors, picked = pick_records(reader.open(prior), fb, task, dataset)
    want = expected_flipped(world, prior, task, directions=directions, models=models, phases=phases, min_flips=min_flips)
    assert set(picked) == want
    assert picked == sorted(picked)
    assert [e.code for e in errors] == ([] if want else ["empty-selection"])


def test_boundary_picks_by_mean_score(world: World) -> None:
    prior = world.ids["PRIOR"]
    lo, hi = 0.6, 0.85
    want = expected_boundary(world, prior, "adv", lo, hi)
    every = {tuple(p.records) for p in world.plan.prompts if p.task == "adv"}
    assert want and want < every
    assert want - expected_flipped(world, prior, "adv")  # a boundary prompt need not have flipped
    plan = _compile(world, {"adv": _from(prior, pick="boundary", score_range=[lo, hi])})
    assert _selected(plan, "adv") == want
    narrowed = expected_boundary(world, prior, "adv", lo, hi, models=["m2"])
    plan = _compile(world, {"adv": _from(prior, pick="boundary", score_range=[lo, hi], models=["m2"])})
    assert _selected(plan, "adv") == narrowed


def test_count_where_and_seed_apply_to_the_picked_records(world: World) -> None:
    prior = world.ids["PRIOR"]
    picked = expected_flipped(world, prior, "adv")
    one = _compile(world, {"adv": {"select": {"count": 1, "from_bundle": {"bundle": prior}}}})
    assert len(_selected(one, "adv")) == 1 and _selected(one, "adv") <= picked
    counts = Counter(tuple(p.records) for seed in range(12) for p in _compile(
        world, {"adv": {"select": {"count": 1, "seed": seed, "from_bundle": {"bundle": prior}}}}).prompts if p.task == "adv")
    assert set(counts) == picked  # the seed chooses among the picks, and only among them
    goal = next(p.messages[0].content for p in one.prompts if p.task == "adv")
    where = _compile(world, {"adv": {"select": {"count": None, "where": {"goal": goal}, "from_bundle": {"bundle": prior}}}})
    assert _selected(where, "adv") == _selected(one, "adv")
    # mini.yaml stratifies mmlu by subject: two of the picks, one per subject.
    picked = expected_flipped(world, prior, "mmlu")
    assert {r[0].split("_test:")[0] for r in picked} == {"astronomy", "nutrition"} and len(picked) > 2
    two = _selected(_compile(world, {"mmlu": {"select": {"count": 2, "from_bundle": {"bundle": prior}}}}), "mmlu")
    assert two <= picked and {r[0].split("_test:")[0] for r in two} == {"astronomy", "nutrition"}


def test_the_bundle_id_locks_the_selection(world: World) -> None:
    prior, child, other = world.ids["PRIOR"], world.ids["CHILD"], world.ids["OTHER"]
    a = _compile(world, {"adv": _from(prior)})
    b = _compile(world, {"adv": _from(prior)})
    assert a.to_bytes() == b.to_bytes()  # same inputs, byte-identical plan
    assert a.spec.resolved["tasks"]["adv"]["select"]["from_bundle"]["bundle"] == prior
    # An analysis child of the same run picks the same prompts, yet it is another bundle.
    c = _compile(world, {"adv": _from(child)})
    assert [p.id for p in c.prompts] == [p.id for p in a.prompts]
    assert c.plan_hash != a.plan_hash
    d = _compile(world, {"adv": _from(other)})
    assert _selected(d, "adv") == expected_flipped(world, other, "adv") != _selected(a, "adv")
    assert d.plan_hash != a.plan_hash


def test_store_forms_and_no_side_effects(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prior = world.ids["PRIOR"]
    want = _selected(_compile(world, {"adv": _from(prior)}), "adv")
    assert _selected(_compile(world, {"adv": _from(prior)}, store=str(world.store.root)), "adv") == want
    monkeypatch.chdir(world.root)  # default: runs/store below the working directory
    monkeypatch.delenv("BATCHSAFE_STORE", raising=False)
    assert _selected(_compile(world, {"adv": _from(prior)}, store=None), "adv") == want
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BATCHSAFE_STORE", str(world.store.root))
    assert _selected(_compile(world, {"adv": _from(prior)}, store=None), "adv") == want
    # A missing store is reported, not created; specs without from_bundle never look at it.
    nowhere = tmp_path / "nowhere"
    with pytest.raises(SpecError, match=r"error\[bundle-not-found\].*\(which does not exist\)"):
        _compile(world, {"adv": _from(prior)}, store=nowhere)
    assert compile_spec(MINI, DATA, store=nowhere).plan_hash == compile_spec(MINI, DATA).plan_hash
    assert not nowhere.exists()


def test_flip_directions_are_the_registry_directions() -> None:
    assert set(get_args(FlipDirection)) == set(get_args(Direction)) - {"none"}


# --------------------------------------------------------------------------- golden errors


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.stem)
def test_golden_error_text(case: Path, world: World, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test_prior/errors/NAME.yaml, with @PLACEHOLDER@ ids filled in, compiled through the CLI."""
    monkeypatch.chdir(world.root)
    monkeypatch.delenv("BATCHSAFE_STORE", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    text = case.read_text()
    for name, value in world.ids.items():
        text = text.replace(f"@{name}@", value)
    assert not re.search(r"@[A-Z_]+@", text), "unknown placeholder"
    (world.root / case.name).write_text(text)
    out = world.root / f"{case.stem}.plan.json"
    code = main(["compile", case.name, "--data-dir", str(DATA), "-o", str(out)])
    err = capsys.readouterr().err
    for name, value in world.ids.items():
        err = err.replace(value, f"@{name}@")
    expected = case.with_suffix(".expected")
    if os.environ.get("BATCHSAFE_REGEN_GOLDEN"):
        expected.write_text(err)
    assert code == 2
    assert err == expected.read_text()
    assert "Traceback" not in err and str(world.root) not in err
    assert not out.exists()


def test_every_prior_error_kind_has_a_golden_case() -> None:
    codes = "".join(c.with_suffix(".expected").read_text() for c in CASES)
    for code in ("bundle-not-found", "bundle-damaged", "bundle-incomplete", "unknown-name", "invalid-value",
                 "empty-selection", "selection-too-large"):
        assert f"error[{code}]" in codes, code
