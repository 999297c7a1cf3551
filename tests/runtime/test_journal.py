"""The run journal: torn tails are repaired, everything else that does not verify is refused."""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchsafe.core.canonical import canonical_bytes, hash_obj
from batchsafe.compiler.compile import compile_spec
from batchsafe.compiler.plan import Plan
from batchsafe.runtime import journal as jr
from batchsafe.runtime.executor import RunSetupError, run_plan

HERE = Path(__file__).parent / "test_executor"
if "batchsafe_test_fakes" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("batchsafe_test_fakes", HERE / "fakes.py")
    _mod = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
    sys.modules["batchsafe_test_fakes"] = _mod
    _spec.loader.exec_module(_mod)  # type: ignore[union-attr]
FakeFactory = sys.modules["batchsafe_test_fakes"].FakeFactory

_PLAN: Plan = compile_spec(HERE / "small.yaml", HERE / "data")
REF_LINES: list[bytes] = []
REF_SAMPLES = REF_FILLERS = b""


@pytest.fixture(scope="module", autouse=True)
def _reference(tmp_path_factory):
    """One uninterrupted run of the small plan: the bytes every resumed run must reproduce."""
    global REF_SAMPLES, REF_FILLERS
    d = tmp_path_factory.mktemp("ref") / "run"
    run_plan(_PLAN, d, engine_factory=FakeFactory(), progress=False)
    REF_LINES[:] = (d / "journal.jsonl").read_bytes().splitlines(keepends=True)
    REF_SAMPLES = (d / "outputs" / "samples.jsonl").read_bytes()
    REF_FILLERS = (d / "outputs" / "fillers.jsonl").read_bytes()


def _seed(d: Path, lines: list[bytes], plan: Plan = _PLAN) -> Path:
    """A run directory as a crashed run leaves it: run.json and a journal."""
    d.mkdir(parents=True)
    jr.write_run_info(d, plan)
    (d / "journal.jsonl").write_bytes(b"".join(lines))
    return d


def _resume(d: Path, factory: FakeFactory | None = None):  # type: ignore[no-untyped-def]
    return run_plan(_PLAN, d, resume=True, engine_factory=factory or FakeFactory(), progress=False)


def test_reference_journal_shape():
    assert len(REF_LINES) == len(_PLAN.groups)
    entry = json.loads(REF_LINES[0])
    assert set(entry) == {"v", "group", "index", "records", "fillers", "digest"}
    assert REF_LINES[0] == canonical_bytes(entry)
    assert entry["digest"] == hash_obj({k: v for k, v in entry.items() if k != "digest"})


def test_torn_last_line_truncated_and_rerun(tmp_path):
    torn = REF_LINES[6][: len(REF_LINES[6]) // 2]
    d = _seed(tmp_path / "run", REF_LINES[:6] + [torn])
    fac = FakeFactory()
    s = _resume(d, fac)
    assert s.groups_run == len(_PLAN.groups) - 6
    ordered = sorted(_PLAN.groups, key=lambda g: g.index)
    first_call = next(c for c in fac.calls if not c[0].startswith("warmup:"))
    assert first_call[0] == (ordered[6].members[0].sample or f"filler:{ordered[6].id}:0")  # group 6 ran again
    assert (d / "journal.jsonl").read_bytes() == b"".join(REF_LINES)
    assert (d / "outputs" / "samples.jsonl").read_bytes() == REF_SAMPLES
    assert "truncated a torn journal line" in (d / "logs" / "run.log").read_text()


def test_full_line_without_newline_is_torn(tmp_path):
    d = _seed(tmp_path / "run", REF_LINES[:3] + [REF_LINES[3].rstrip(b"\n")])
    state = jr.read_journal(d / "journal.jsonl", _PLAN)
    assert len(state.entries) == 3 and state.torn_bytes == len(REF_LINES[3]) - 1
    assert _resume(d).groups_run == len(_PLAN.groups) - 3
    assert (d / "outputs" / "samples.jsonl").read_bytes() == REF_SAMPLES


def test_corrupt_middle_line_refused(tmp_path):
    d = _seed(tmp_path / "run", REF_LINES[:2] + [b'{"v": 1, "group": "g_tru\n'] + REF_LINES[3:5])
    before = (d / "journal.jsonl").read_bytes()
    with pytest.raises(RunSetupError, match="journal line 3 is corrupt"):
        _resume(d)
    assert (d / "journal.jsonl").read_bytes() == before  # refused, not "repaired"


def test_altered_line_refused_by_digest(tmp_path):
    entry = json.loads(REF_LINES[1])
    entry["records"][0]["text"] = "something else"
    d = _seed(tmp_path / "run", [REF_LINES[0], canonical_bytes(entry)])
    with pytest.raises(RunSetupError, match="journal line 2: digest does not match"):
        _resume(d)


def test_duplicate_group_refused(tmp_path):
    d = _seed(tmp_path / "run", REF_LINES[:4] + [REF_LINES[2]])
    with pytest.raises(RunSetupError, match=r"line 5: group g_\w+ is journaled twice"):
        _resume(d)


def test_group_not_in_plan_refused(tmp_path):
    entry = json.loads(REF_LINES[0])
    body = {k: v for k, v in entry.items() if k != "digest"} | {"group": "g_0000000000000000"}
    d = _seed(tmp_path / "run", [canonical_bytes({**body, "digest": hash_obj(body)})])
    with pytest.raises(RunSetupError, match="group 'g_0000000000000000' is not in the plan"):
        _resume(d)


def test_records_not_matching_members_refused(tmp_path):
    entry = json.loads(REF_LINES[0])
    body = {k: v for k, v in entry.items() if k != "digest"}
    body["records"] = []
    d = _seed(tmp_path / "run", [canonical_bytes({**body, "digest": hash_obj(body)})])
    with pytest.raises(RunSetupError, match="do not match the plan's members"):
        _resume(d)


def test_plan_hash_mismatch_refused(tmp_path):
    other = _PLAN.model_copy(update={"seed": 12345}).with_hash()
    assert other.plan_hash != _PLAN.plan_hash
    d = _seed(tmp_path / "run", REF_LINES[:2], plan=other)
    with pytest.raises(RunSetupError) as ei:
        _resume(d)
    assert other.plan_hash in str(ei.value) and _PLAN.plan_hash in str(ei.value)


def test_resume_of_foreign_directory_refused(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    with pytest.raises(RunSetupError, match="not a batchsafe run directory"):
        _resume(d)


def test_resume_of_empty_directory_starts_fresh(tmp_path):
    s = _resume(tmp_path / "new")
    assert s.complete and (tmp_path / "new" / "outputs" / "samples.jsonl").read_bytes() == REF_SAMPLES


def test_run_json_is_atomic_and_deterministic(tmp_path):
    jr.write_run_info(tmp_path, _PLAN)
    info = jr.read_run_info(tmp_path)
    assert info["plan_hash"] == _PLAN.plan_hash and info["started"] is True and info["completed"] is False
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temp file left behind
    a = (tmp_path / "run.json").read_bytes()
    jr.write_run_info(tmp_path, _PLAN)
    assert (tmp_path / "run.json").read_bytes() == a


def test_repair_tail(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a":1}\n{"b"')
    assert jr.repair_tail(p) == 4 and p.read_bytes() == b'{"a":1}\n'
    assert jr.repair_tail(p) == 0
    assert jr.repair_tail(tmp_path / "absent") == 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_crash_point_resumes_to_exact_sample_set(data):
    """k complete lines, then any torn prefix of line k+1: resume gives exactly the reference."""
    k = data.draw(st.integers(0, len(REF_LINES) - 1), label="complete groups")
    cut = data.draw(st.integers(0, len(REF_LINES[k]) - 1), label="torn prefix length")
    with tempfile.TemporaryDirectory() as tmp:
        d = _seed(Path(tmp) / "run", REF_LINES[:k] + [REF_LINES[k][:cut]])
        s = _resume(d)
        assert s.groups_run == len(REF_LINES) - k
        assert (d / "outputs" / "samples.jsonl").read_bytes() == REF_SAMPLES
        assert (d / "outputs" / "fillers.jsonl").read_bytes() == REF_FILLERS
        assert (d / "journal.jsonl").read_bytes() == b"".join(REF_LINES)
        ids = [json.loads(x)["sample"] for x in REF_SAMPLES.splitlines()]
        assert sorted(ids) == sorted(s.id for s in _PLAN.samples) and len(set(ids)) == len(ids)
