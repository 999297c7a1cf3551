"""Sharding (runtime/shard.py): every group in exactly one shard, constraints kept, deterministic."""

from __future__ import annotations

import json
import random
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsafe.compiler.compile import compile_spec
from batchsafe.core.canonical import canonical_bytes
from batchsafe.runtime.bindings import binding_for
from batchsafe.runtime.shard import (Item, ShardError, ShardManifest, block_key, gpus_for, parse_shard, partition,
                                     shard_plan)
from batchsafe.schemas import SCHEMA_DIR

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "tests" / "runtime" / "test_scaleout" / "small_quickstart.yaml"


@st.composite
def items(draw):
    """Groups with distinct indices, weights 1-8, spread over a few blocks of either kind."""
    n = draw(st.integers(0, 60))
    blocks = draw(st.lists(st.booleans(), min_size=1, max_size=6))  # splittable per block key
    indices = draw(st.permutations(range(n)))
    out = []
    for idx in indices:
        b = draw(st.integers(0, len(blocks) - 1))
        out.append(Item(id=f"g{idx}", index=idx, weight=draw(st.integers(1, 8)), key=f"k{b}", splittable=blocks[b]))
    return out


@settings(max_examples=300, deadline=None)
@given(items(), st.integers(1, 7), st.randoms(use_true_random=False))
def test_partition_invariants(its, n, rnd):
    shards = partition(its, n)
    assert len(shards) == n
    flat = [g for s in shards for g in s]
    assert sorted(flat) == sorted(it.id for it in its)  # every group in exactly one shard
    assert len(flat) == len(set(flat))
    by_id = {it.id: it for it in its}
    for s in shards:  # plan order inside a shard: a phase's schedule order is kept
        assert [by_id[g].index for g in s] == sorted(by_id[g].index for g in s)
    where = {g: i for i, s in enumerate(shards) for g in s}
    for key in {it.key for it in its if not it.splittable}:  # unsplittable blocks stay whole
        assert len({where[it.id] for it in its if it.key == key}) == 1
    shuffled = list(its)
    rnd.shuffle(shuffled)
    assert partition(shuffled, n) == shards  # a pure function of the set of groups
    if its:  # greedy least-loaded bound: no shard exceeds the ideal load by more than one piece
        total = sum(it.weight for it in its)
        target = -(-total // n)
        unsplit = [sum(it.weight for it in its if it.key == k) for k in {i.key for i in its if not i.splittable}]
        piece = max([*unsplit, target, max(it.weight for it in its)])  # the heaviest piece there can be
        loads = [sum(by_id[g].weight for g in s) for s in shards]
        assert max(loads) <= total / n + piece


def test_partition_balances_one_splittable_block():
    its = [Item(id=f"g{i}", index=i, weight=1, key="b", splittable=True) for i in range(10)]
    assert partition(its, 2) == [[f"g{i}" for i in range(5)], [f"g{i}" for i in range(5, 10)]]
    assert partition(its, 1) == [[f"g{i}" for i in range(10)]]
    with pytest.raises(ShardError):
        partition(its, 0)


@pytest.fixture(scope="module")
def small():
    return compile_spec(SMALL, ROOT / "specs")


def test_real_plan_manifest(small, tmp_path):
    for n in (1, 2, 3, 5, 40):
        m = shard_plan(small, n)
        assert m.workers == n and len(m.shards) == n and m.plan_hash == small.plan_hash
        ids = [g for s in m.shards for g in s.groups]
        assert sorted(ids) == sorted(g.id for g in small.groups) and len(ids) == len(set(ids))
        assert sum(s.samples for s in m.shards) == len(small.samples)
        rep = {g.id for g in small.groups if g.phase == "p5_repeat_floor"}
        assert sum(1 for s in m.shards if rep & set(s.groups)) == 1  # the repeat floor on one worker
        assert shard_plan(small, n).to_bytes() == m.to_bytes()  # deterministic, byte for byte
    m = shard_plan(small, 2)
    assert all(s.groups for s in m.shards) and all(s.gpus == 0 for s in m.shards)  # embedded engine: CPU workers
    path = m.write(tmp_path)
    assert ShardManifest.read(path) == m
    schema = json.loads((SCHEMA_DIR / "shard_manifest.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(json.loads(path.read_bytes()))
    assert path.read_bytes() == canonical_bytes(json.loads(path.read_bytes())) + b"\n"  # canonical JSON
    assert json.loads(path.read_bytes())["schema_version"] == 1
    newer = json.loads(path.read_bytes()) | {"schema_version": 2}
    path.write_text(json.dumps(newer))
    with pytest.raises(ShardError, match="newer"):
        ShardManifest.read(path)


def test_server_engines_stay_on_one_worker_per_kernel_variant(small):
    """A server's groups are one unsplittable block per (engine, kernel); GPUs come from the launch flags."""
    eng = small.engines[0].model_copy(update={"kind": "vllm", "config": {
        "flags": ["--tensor-parallel-size", "2"], "launch": {"kind": "process"}}})
    plan = small.model_copy(update={"engines": [eng]})
    keys = {block_key(plan, g) for g in plan.groups}
    assert keys == {(f"server:{eng.name}:-", False)}
    m = shard_plan(plan, 3)
    assert sorted(len(s.groups) for s in m.shards) == [0, 0, len(plan.groups)]
    assert max(s.gpus for s in m.shards) == 2.0
    cpu = eng.model_copy(update={"config": {**eng.config, "env": {"VLLM_TARGET_DEVICE": "cpu"}}})
    assert gpus_for(small.model_copy(update={"engines": [cpu]}), eng.name) == 0.0
    ext = eng.model_copy(update={"config": {"flags": []}})  # an external server: the worker is only a client
    assert gpus_for(small.model_copy(update={"engines": [ext]}), eng.name) == 0.0
    assert {binding_for(plan, g).kind for g in plan.groups} == {"vllm"}


@pytest.mark.parametrize("text,want", [("0/2", (0, 2)), ("1/2", (1, 2)), (" 3/4 ", (3, 4))])
def test_parse_shard(text, want):
    assert parse_shard(text) == want


@pytest.mark.parametrize("text", ["2/2", "1", "-1/2", "0/0", "a/b", "1/2/3"])
def test_parse_shard_refuses(text):
    with pytest.raises(ShardError, match="shard"):
        parse_shard(text)


def test_random_plans_of_groups_are_stable_across_runs(small):
    """The manifest digest depends on the plan only, not on the order groups are listed in."""
    groups = list(small.groups)
    random.Random(1).shuffle(groups)
    shuffled = small.model_copy(update={"groups": groups})
    assert shard_plan(shuffled, 3).digest() == shard_plan(small, 3).digest()
