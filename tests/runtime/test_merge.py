"""Partial runs and merge with the fake engine: byte identity, and every refusal with its reason."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from batchsafe.cli import main
from batchsafe.compiler.compile import compile_spec
from batchsafe.runtime.executor import RunSetupError, run_plan
from batchsafe.runtime.merge import MergeError, MergeUsageError, merge_partials
from batchsafe.runtime.partial import PartialError, read_partial, run_shard
from batchsafe.runtime.shard import shard_plan

HERE = Path(__file__).parent / "test_executor"
_spec = importlib.util.spec_from_file_location("batchsafe_test_fakes_merge", HERE / "fakes.py")
fakes = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(fakes)  # type: ignore[union-attr]

N = 3


@pytest.fixture(scope="module")
def plan():
    return compile_spec(HERE / "small.yaml", HERE / "data")


@pytest.fixture(scope="module")
def runs(plan, tmp_path_factory):
    """A single-process run and the plan's N shards as partial runs, all with the fake engine."""
    root = tmp_path_factory.mktemp("merge")
    run_plan(plan, root / "ref", engine_factory=fakes.FakeFactory(), progress=False)
    parts = []
    for i in range(N):
        d = root / f"shard-{i}"
        s = run_shard(plan, d, i, N, engine_factory=fakes.FakeFactory(), progress=False)
        assert s.complete and (d / "partial.json").is_file() and not (d / "outputs").exists()
        parts.append(d)
    return root, parts


def _copy(parts, tmp_path):
    out = []
    for d in parts:
        shutil.copytree(d, tmp_path / d.name)
        out.append(tmp_path / d.name)
    return out


def test_merge_is_byte_identical_to_one_process(plan, runs, tmp_path):
    root, parts = runs
    m = merge_partials(plan, list(reversed(parts)), tmp_path / "merged")  # order of arguments does not matter
    for name in ("outputs/samples.jsonl", "outputs/fillers.jsonl", "journal.jsonl"):
        assert (tmp_path / "merged" / name).read_bytes() == (root / "ref" / name).read_bytes(), name
    assert json.loads((tmp_path / "merged" / "run.json").read_bytes()) == json.loads((root / "ref" / "run.json").read_bytes())
    assert m.shards == list(range(N)) and m.samples == len(plan.samples)
    timings = [json.loads(x) for x in (tmp_path / "merged" / "volatile" / "timings.jsonl").read_bytes().splitlines()]
    assert [t["group"] for t in timings] == [g.id for g in sorted(plan.groups, key=lambda g: g.index)]
    assert {t["shard"] for t in timings} == set(range(N))
    env = json.loads((tmp_path / "merged" / "environment.json").read_bytes())
    assert (tmp_path / "merged" / "volatile" / "shard_manifest.json").read_bytes() == shard_plan(plan, N).to_bytes()
    assert [s["shard"] for s in env["shards"]] == list(range(N))
    # The merged directory is a complete normal run: resuming it runs nothing.
    s = run_plan(plan, tmp_path / "merged", resume=True, engine_factory=fakes.FakeFactory(), progress=False)
    assert s.complete and s.groups_run == 0


def test_gap_is_refused_naming_the_missing_shard(plan, runs, tmp_path):
    _, parts = runs
    with pytest.raises(MergeError, match=r"gap: \d+ of \d+ plan groups are in no partial .*missing shard\(s\) of 3: 1"):
        merge_partials(plan, [parts[0], parts[2]], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_overlap_is_refused_naming_the_group(plan, runs, tmp_path):
    _, parts = runs
    twice = _copy([parts[1]], tmp_path)[0]
    with pytest.raises(MergeError, match=r"overlap: group g_\w+ is journaled by both .*shard-1 \(shard 1/3\) and"):
        merge_partials(plan, [*parts, twice], tmp_path / "m")


def test_altered_or_incomplete_or_foreign_partials_are_refused(plan, runs, tmp_path):
    _, parts = runs
    bad = _copy(parts, tmp_path)
    journal = bad[0] / "journal.jsonl"
    journal.write_bytes(journal.read_bytes().replace(b'"text":"', b'"text":"X', 1))
    with pytest.raises(PartialError, match="journal.jsonl has sha256 .* recorded"):
        merge_partials(plan, bad, tmp_path / "m")
    rec = json.loads((bad[1] / "partial.json").read_bytes())
    (bad[1] / "partial.json").write_text(json.dumps({**rec, "schema_version": 2}))
    with pytest.raises(PartialError, match="partial run record schema_version 2 is newer"):
        merge_partials(plan, bad[1:], tmp_path / "m")
    (bad[1] / "partial.json").unlink()
    with pytest.raises(PartialError, match="not a completed shard"):
        merge_partials(plan, bad[1:], tmp_path / "m")
    other = compile_spec(HERE / "tiny_llamacpp.yaml", HERE / "data")
    with pytest.raises(PartialError, match="partial run of plan"):
        merge_partials(other, parts, tmp_path / "m")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(MergeUsageError, match="not empty"):
        merge_partials(plan, parts, tmp_path / "full")


def test_partials_of_another_sharding_are_refused(plan, runs, tmp_path):
    root, parts = runs
    two = [root / f"two-{i}" for i in range(2)]
    for i, d in enumerate(two):
        if not d.exists():
            run_shard(plan, d, i, 2, engine_factory=fakes.FakeFactory(), progress=False)
    m2, m3 = shard_plan(plan, 2), shard_plan(plan, 3)
    # Mixing shardings either overlaps or leaves a gap; both are refused before anything is written.
    with pytest.raises(MergeError, match="overlap|gap|manifest"):
        merge_partials(plan, [two[0], parts[1], parts[2]], tmp_path / "m")
    assert m2.digest() != m3.digest()
    assert read_partial(two[0], plan).manifest == m2.digest()


def test_resuming_a_shard_dir_with_another_shard_is_refused(plan, runs, tmp_path):
    _, parts = runs
    d = _copy([parts[0]], tmp_path)[0]
    factory = fakes.FakeFactory()
    done = run_shard(plan, d, 0, N, resume=True, engine_factory=factory, progress=False)
    assert done.complete and done.groups_done == len(shard_plan(plan, N).shards[0].groups) and not factory.calls
    with pytest.raises(PartialError, match="holds shard 0/3"):
        run_shard(plan, d, 1, N, resume=True, engine_factory=factory, progress=False)
    (d / "partial.json").unlink()  # as if shard 0 had been interrupted
    with pytest.raises(RunSetupError, match="outside the shard asked for"):
        run_shard(plan, d, 1, N, resume=True, engine_factory=fakes.FakeFactory(), progress=False)


def test_cli_merge_exit_codes(plan, runs, tmp_path, capsys):
    root, parts = runs
    pfile = tmp_path / "plan.lock.json"
    pfile.write_bytes(plan.to_bytes())
    assert main(["merge", str(pfile), *map(str, parts[:2]), "--out", str(tmp_path / "m")]) == 1
    assert "gap:" in capsys.readouterr().err
    assert main(["merge", str(pfile), *map(str, parts), "--out", str(tmp_path / "m")]) == 0
    assert "merged 3 partials" in capsys.readouterr().out
    assert (tmp_path / "m" / "outputs" / "samples.jsonl").read_bytes() == \
        (root / "ref" / "outputs" / "samples.jsonl").read_bytes()
    assert main(["run", str(pfile), "--shard", "3/3", "--out", str(tmp_path / "x")]) == 2
    assert "i must be 0..2" in capsys.readouterr().err


@pytest.mark.parametrize("n", [1, 2, 5, 40])
def test_any_number_of_shards_merges_to_the_same_bytes(plan, runs, tmp_path, n):
    """More shards than blocks leaves some empty; they need no partial, and the merge is still exact."""
    root, _ = runs
    m = shard_plan(plan, n)
    dirs = []
    for s in m.shards:
        if s.groups:
            d = tmp_path / f"s{s.index}"
            run_shard(plan, d, s.index, n, engine_factory=fakes.FakeFactory(), progress=False)
            dirs.append(d)
    assert len(dirs) == sum(1 for s in m.shards if s.groups) and (n < 40 or len(dirs) < n)
    merge_partials(plan, dirs, tmp_path / "merged")
    for name in ("outputs/samples.jsonl", "outputs/fillers.jsonl", "journal.jsonl"):
        assert (tmp_path / "merged" / name).read_bytes() == (root / "ref" / name).read_bytes(), name
