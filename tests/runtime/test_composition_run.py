"""Running a composition phase: targets at their planned offsets under closed-loop background
load, client-side co-residency in volatile/composition.jsonl (never in outputs), and resume
after a stop or kill -9 without losing or doubling a target. A fake engine here (fast); the
real vLLM-CPU server in test_composition_real.py."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchsafe.compiler.compile import compile_spec
from batchsafe.runtime.composition import VOLATILE_FILE, _Tracker, summarize
from batchsafe.runtime.executor import RunInterrupted, run_plan
from composition_fixtures import composition_spec

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
_spec = importlib.util.spec_from_file_location("batchsafe_test_fakes", HERE / "test_executor" / "fakes.py")
fakes = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules.setdefault("batchsafe_test_fakes", fakes)
_spec.loader.exec_module(fakes)  # type: ignore[union-attr]


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture()
def plan(tmp_path):
    return compile_spec(composition_spec(tmp_path, levels="[0, 2]", rate=8.0, start=0.3, n_targets=6),
                        allow_unpinned=True)


def test_session_records_co_residency_and_outputs_stay_deterministic(plan, tmp_path) -> None:
    out = tmp_path / "run"
    s = run_plan(plan, out, engine_factory=fakes.FakeFactory(sleep_s=0.03), progress=False)
    assert s.complete and s.samples_done == 12 and s.fillers_done == 0
    recs = lines(out / VOLATILE_FILE)
    assert [r["load"] for r in recs] == [0, 2]
    sched = plan.phases[0].composition
    offsets = {t["prompt"]: t["offset_s"] for t in sched["targets"]}
    for rec in recs:
        assert len(rec["targets"]) == 6
        for t in rec["targets"]:
            assert t["planned_offset_s"] == offsets[t["prompt"]]
            assert t["submit_s"] >= t["planned_offset_s"] - 1e-3 and t["finish_s"] >= t["submit_s"]
    zero, two = recs
    assert all(t["in_flight_at_submit"]["background"] == 0 for t in zero["targets"]) and zero["background"] == []
    # Two slots kept in flight: targets mostly arrive with both background requests running.
    assert two["summary"]["mean_background_at_submit"] >= 1.5, two["summary"]
    assert max(t["in_flight_max"]["background"] for t in two["targets"]) == 2
    # Each slot sent its locked prompt sequence in order.
    for slot, seq in enumerate(sched["background"]["2"]):
        sent = [b["prompt"] for b in two["background"] if b["slot"] == slot]
        assert sent and sent == [seq[i % len(seq)] for i in range(len(sent))]
    # Outputs hold deterministic content only: the same plan run again gives the same bytes.
    again = tmp_path / "again"
    run_plan(plan, again, engine_factory=fakes.FakeFactory(sleep_s=0.01), progress=False)
    for name in ("samples.jsonl", "fillers.jsonl"):
        assert (out / "outputs" / name).read_bytes() == (again / "outputs" / name).read_bytes()
    assert b"in_flight" not in (out / "outputs" / "samples.jsonl").read_bytes()


def test_stop_and_resume_neither_loses_nor_doubles_targets(plan, tmp_path) -> None:
    out = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        run_plan(plan, out, engine_factory=fakes.FakeFactory(sleep_s=0.01), progress=False, stop_after_groups=1)
    s = run_plan(plan, out, resume=True, engine_factory=fakes.FakeFactory(sleep_s=0.01), progress=False)
    assert s.complete
    samples = lines(out / "outputs" / "samples.jsonl")
    assert sorted(r["sample"] for r in samples) == sorted(x.id for x in plan.samples)
    assert [r["load"] for r in lines(out / VOLATILE_FILE)] == [0, 2]


RUNNER = """
import importlib.util, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("fk", {fakes!r}); fk = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fk)
from batchsafe.compiler.plan import load_plan
from batchsafe.runtime.executor import run_plan
run_plan(load_plan({plan!r}), Path({out!r}), resume={resume}, engine_factory=fk.FakeFactory(sleep_s=0.05),
         progress=False)
"""


def test_kill9_mid_session_then_resume(tmp_path) -> None:
    plan = compile_spec(composition_spec(tmp_path, levels="[0, 2, 3]", rate=4.0, start=0.2, n_targets=6),
                        allow_unpinned=True)
    pfile, out = tmp_path / "plan.lock.json", tmp_path / "run"
    pfile.write_bytes(plan.to_bytes())

    def runner(resume: bool) -> subprocess.Popen:
        code = RUNNER.format(fakes=str(HERE / "test_executor" / "fakes.py"), plan=str(pfile), out=str(out),
                             resume=resume)
        return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    p = runner(False)
    journal = out / "journal.jsonl"
    deadline = time.monotonic() + 120
    while not (journal.exists() and journal.read_bytes().count(b"\n") >= 1):
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.01)
    time.sleep(0.4)  # inside the load-2 session: its targets are in flight, nothing journaled yet
    p.send_signal(signal.SIGKILL)
    p.wait()
    done = journal.read_bytes().count(b"\n")
    assert 1 <= done < 3
    p = runner(True)
    assert p.wait(timeout=120) == 0, p.communicate()
    samples = lines(out / "outputs" / "samples.jsonl")
    assert len(samples) == len({r["sample"] for r in samples}) == len(plan.samples)  # 0 lost, 0 duplicated
    assert journal.read_bytes().count(b"\n") == 3
    recs = lines(out / VOLATILE_FILE)
    assert {r["load"] for r in recs} == {0, 2, 3} and recs[-1]["load"] == 3


def test_tracker_counts_and_summary() -> None:
    tr = _Tracker()
    tr.start("b0", "background")
    assert tr.start("t0", "target") == {"targets": 0, "background": 1}
    tr.start("b1", "background")
    assert tr.start("t1", "target") == {"targets": 1, "background": 2}
    assert tr.finish("b0") == {"targets": 2, "background": 1}
    assert tr.finish("t0") == {"targets": 1, "background": 1}
    assert tr.max_seen["t0"] == {"targets": 1, "background": 2}
    s = summarize([{"in_flight_at_submit": {"background": 2, "targets": 1}, "lateness_s": 0.1},
                   {"in_flight_at_submit": {"background": 1, "targets": 0}, "lateness_s": 0.3}], 2)
    assert s["mean_background_at_submit"] == 1.5 and s["full_load_at_submit"] == 0.5 and s["max_lateness_s"] == 0.3
    assert s["mean_other_targets_at_submit"] == 0.5
    assert summarize([], 4)["mean_background_at_submit"] is None


def test_failures_inside_a_session_retry_or_stop_it_whole(plan, tmp_path) -> None:
    from batchsafe.runtime.executor import RetryPolicy, RunError

    loaded = next(g for g in plan.groups if g.condition.load == 2)
    target = loaded.members[-1].sample
    fast = RetryPolicy(sleep=lambda s: None)
    # A transient failure of one target: the whole session is run again, once recorded.
    out = tmp_path / "transient"
    s = run_plan(plan, out, engine_factory=fakes.FakeFactory(sleep_s=0.01, transient={target: 1}), progress=False,
                 retry=fast)
    assert s.complete and s.retries == 1
    assert [r["load"] for r in lines(out / VOLATILE_FILE)] == [0, 2]
    # A permanent failure of a background request stops the run before the group is journaled.
    out = tmp_path / "permanent"
    bg_key = f"background:{loaded.id}:1:0"
    t0 = time.monotonic()
    with pytest.raises(RunError, match="injected permanent failure"):
        run_plan(plan, out, engine_factory=fakes.FakeFactory(sleep_s=0.01, permanent={bg_key}), progress=False,
                 retry=fast)
    assert time.monotonic() - t0 < 30  # waiting targets are woken, not left to their offsets
    assert (out / "journal.jsonl").read_bytes().count(b"\n") == 1
    assert [r["load"] for r in lines(out / VOLATILE_FILE)] == [0]
    s = run_plan(plan, out, resume=True, engine_factory=fakes.FakeFactory(sleep_s=0.01), progress=False)
    assert s.complete and len(lines(out / "outputs" / "samples.jsonl")) == len(plan.samples)
