"""The "concurrent" dispatch mode: a real llama_cpp.server on loopback, a real model.

SmolLM2-135M from the model store; the server is started by the engine on first use and
reused across tests (one start ~1.5 s on two cores). What the tests pin down: K=1 through
the server == the embedded sequential path (same tokens), K=3 comes back in request order
with the measured serialization facts, a server killed mid-group gives a transient
EngineError and no zombie, and no server process outlives close(), the runtime's exit or
its death.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

llama_cpp = pytest.importorskip("llama_cpp")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from batchsafe.compiler.checks import ENGINE_MODES  # noqa: E402
from batchsafe.runtime import model_store as ms  # noqa: E402
from batchsafe.runtime.engine import EngineError, GenRequest  # noqa: E402
from batchsafe.runtime.engines import llamacpp_server as srv  # noqa: E402
from batchsafe.runtime.engines.llamacpp import LlamaCppEngine  # noqa: E402

SMOL = "smollm2-135m-instruct-q4_1"
ROOT = Path(__file__).resolve().parents[2]
LONG = ("Explain in detail, step by step, how a bicycle gear system works and why lower gears make "
        "climbing hills easier. Mention the chain, the cassette, the derailleur and the gear ratio.")


def _req(key: str, q: str, max_tokens: int = 16, stop: tuple[str, ...] = ()) -> GenRequest:
    return GenRequest(key=key, messages=(("user", q),), max_tokens=max_tokens, stop=stop)


def _strip(r):
    return (r.key, r.text, r.finish_reason, r.prompt_tokens, r.completion_tokens)


def _reaped(pid: int) -> bool:
    """Our child is gone and reaped: signal 0 finds no such process (a zombie would answer)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _exited(pid: int) -> bool:
    """A process that is not our child has exited (a zombie waiting for init to reap it counts)."""
    if _reaped(pid):
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True



@pytest.fixture(scope="module")
def engine(smol_path):
    e = LlamaCppEngine(smol_path, n_ctx=512, n_seq_max=3, model_sha256=ms.MODELS[SMOL].sha256)
    yield e
    e.close()


def test_mode_is_declared():
    assert "concurrent" in LlamaCppEngine.capabilities.modes and LlamaCppEngine.capabilities.concurrency
    assert "concurrent" in ENGINE_MODES["llamacpp"]


def test_k1_server_equals_embedded_sequential(engine):
    """Same prompt tokens, same generated tokens, same text/finish/counts as the in-process path."""
    cases = [_req("a", "What is 2+2?", 48),  # ends on EOS (first request: fresh server, no KV reuse)
             _req("b", LONG, 20),  # ends on max_tokens
             _req("c", "Write a haiku about rain.", 24)]
    full = engine.run_group([cases[2]], "sequential")[0].text
    cases.append(_req("d", "Write a haiku about rain.", 24, stop=(" " + full.split()[3], "zzzz-never")))
    finishes = []
    for r in cases:
        (seq,) = engine.run_group([r], "sequential")
        finishes.append(seq.finish_reason)
        (con,) = engine.run_group([r], "concurrent")
        assert _strip(con) == _strip(seq), r.key
        prompt = engine.tokenize(engine.render(r))
        (ours,) = engine.decode_group([prompt], [r.max_tokens], [r.stop])
        v = con.volatile
        assert v["server_token_ids"][:len(ours.tokens)] == ours.tokens, r.key  # same tokens
        assert v["server_usage"]["prompt_tokens"] == len(prompt)  # no BOS added, same template text
        assert not v["server_text_differs"] and v["server_finish_reason"] == seq.finish_reason
    assert finishes == ["stop", "length", "length", "stop"]  # EOS, max_tokens, max_tokens, stop string


def test_server_max_tokens_overrun_is_normalized(engine):
    """llama_cpp.server skips its max_tokens check while the text ends inside a UTF-8 character
    (its multibyte fix), so it overruns; the result is rebuilt from its tokens by the engine's
    rules and equals the sequential one, while volatile keeps what the server itself answered."""
    r = _req("e", "Reply with only emojis: \U0001F355\U0001F354\U0001F32E\U0001F389", 1)
    (seq,) = engine.run_group([r], "sequential")
    (con,) = engine.run_group([r], "concurrent")
    assert _strip(con) == _strip(seq) and (con.completion_tokens, con.finish_reason) == (1, "length")
    v = con.volatile
    assert v["server_usage"]["completion_tokens"] > 1 and v["server_text_differs"] and v["server_text"]


def test_k3_concurrent_in_order_with_measured_serialization(engine):
    reqs = [_req("x0", LONG, 20), _req("x1", "Name three colors.", 12), _req("x2", LONG, 8)]
    con = engine.run_group(reqs, "concurrent")
    seq = engine.run_group(reqs, "sequential")
    assert [r.key for r in con] == ["x0", "x1", "x2"]  # request order, whatever the server's order
    assert [_strip(r) for r in con] == [_strip(r) for r in seq]
    s = con[0].volatile["group_summary"]
    assert all(r.volatile["group_summary"] is s for r in con)
    assert s["k"] == 3 and s["send_spread_s"] < 1.0 and s["client_intervals_overlap"]
    # Measured inside the server: one completion at a time, execution intervals disjoint.
    assert s["serialized"] and s["server_max_in_flight"] == 1 and not s["server_exec_intervals_overlap"]
    assert sorted(s["server_exec_order"]) == [0, 1, 2]
    spans = sorted((r.volatile["server_exec_start_mono"], r.volatile["server_exec_end_mono"]) for r in con)
    assert all(b[0] >= a[1] for a, b in zip(spans, spans[1:]))
    for r in con:  # every request was sent before the first answer came back
        assert r.volatile["send_mono"] <= min(x.volatile["recv_mono"] for x in con)
        assert r.volatile["send_mono"] <= r.volatile["server_exec_start_mono"] < r.volatile["recv_mono"]
    # The server keeps the previous request's KV prefix (the shared system prompt).
    assert any(s["kv_prefix_reused"])
    d = engine.describe()["concurrent"]
    assert d["behaviour"] == srv.SERIALIZED and d["measured"]["max_server_in_flight"] == 1
    assert d["launch"]["n_ctx"] == 512 and d["server_settings"]["model"]["logits_all"] is False
    assert d["sampling"]["repeat_penalty"] == 1.0 and d["versions"]["fastapi"]


def test_server_killed_mid_group_is_transient_and_reaped(engine):
    engine.run_group([_req("w", "Hi", 2)], "concurrent")  # make sure it is up
    pid = engine._server.pid
    killer = threading.Timer(0.5, os.kill, (pid, signal.SIGKILL))
    killer.start()
    t0 = time.monotonic()
    with pytest.raises(EngineError, match="died during a concurrent group") as ei:
        engine.run_group([_req(f"k{i}", LONG, 200) for i in range(3)], "concurrent")
    killer.join()
    assert ei.value.transient and time.monotonic() - t0 < 20
    assert _reaped(pid) and not engine._server.alive()
    # A retry starts a fresh server.
    (again,) = engine.run_group([_req("w", "Hi", 2)], "concurrent")
    assert engine._server.pid != pid and again.volatile["group_summary"]["server_start"] == 2


def test_close_leaves_no_process(smol_path):
    e = LlamaCppEngine(smol_path, n_ctx=256, n_seq_max=1, model_sha256=ms.MODELS[SMOL].sha256)
    e.run_group([_req("c", "Hi", 2)], "concurrent")
    pid = e._server.pid
    assert not _reaped(pid)
    e.close()
    assert _reaped(pid)
    e.close()  # idempotent


def test_startup_failure_reports_server_output(tmp_path):
    s = srv.LlamaCppServer(tmp_path / "missing.gguf", n_ctx=64, n_threads=1, n_batch=64, seed=0)
    with pytest.raises(EngineError, match="exited during startup") as ei:
        s.start()
    assert not ei.value.transient and "missing.gguf" in str(ei.value)  # the server's own message
    assert s.proc is None


@pytest.mark.parametrize("ending", ["exit", "sigkill"])
def test_no_stray_server_after_runtime_ends(smol_path, ending):
    """A normal exit stops it (atexit); a killed runtime is outlived by at most ~0.5 s (watchdog)."""
    end = "sys.exit(0)" if ending == "exit" else "os.kill(os.getpid(), signal.SIGKILL)"
    script = textwrap.dedent(f"""
        import os, signal, sys
        from batchsafe.runtime.engines.llamacpp_server import LlamaCppServer
        s = LlamaCppServer({str(smol_path)!r}, n_ctx=128, n_threads=1, n_batch=128, seed=0)
        s.start()
        print(s.pid, flush=True)
        {end}
    """)
    p = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    pid = int(p.stdout.split()[0])
    deadline = time.monotonic() + 10
    while not _exited(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _exited(pid), f"server {pid} outlived its runtime ({ending})"
