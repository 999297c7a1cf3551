"""The vLLM HTTP adapter, on loopback only, with real decoding behind every answer.

* Chat modes (sequential, synchronized, concurrent) run against a REAL OpenAI-compatible
  server: ``python -m llama_cpp.server`` serving SmolLM2-135M from the model store.
* ``/tokenize`` + prompt_list, identity checks and error paths run against
  test_vllm_adapter/vllm_shim.py, a loopback server with vLLM's request/response shapes
  that delegates to the embedded LlamaCppEngine (real greedy decoding, true batching).
* A compiled study runs end to end through the executor and the default factory.

Neither is vLLM: a real vLLM run (GPU) is done separately.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from batchsafe.compiler.compile import compile_spec  # noqa: E402
from batchsafe.compiler.plan import Locators  # noqa: E402
from batchsafe.runtime import model_store as ms  # noqa: E402
from batchsafe.runtime.bindings import Binding, DefaultEngineFactory  # noqa: E402
from batchsafe.runtime.engine import EngineError, GenRequest, engine_class  # noqa: E402
from batchsafe.runtime.engines.llamacpp import LlamaCppEngine  # noqa: E402
from batchsafe.runtime.engines.vllm import NEUTRAL_PENALTIES, VLLMEngine, variant_env_name  # noqa: E402
from batchsafe.runtime.executor import run_plan  # noqa: E402

HERE = Path(__file__).parent / "test_vllm_adapter"
DATA = Path(__file__).resolve().parents[1] / "compiler" / "test_compile" / "data"
_spec = importlib.util.spec_from_file_location("batchsafe_test_vllm_shim", HERE / "vllm_shim.py")
shim_mod = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["batchsafe_test_vllm_shim"] = shim_mod
_spec.loader.exec_module(shim_mod)  # type: ignore[union-attr]

SMOL = "smollm2-135m-instruct-q4_1"
REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"
REV = "12fd25f77366fa6b3b4b768ec3050bf629380bac"  # the revision study.yaml pins
ROOT = f"/root/.cache/huggingface/hub/models--HuggingFaceTB--SmolLM2-135M-Instruct/snapshots/{REV}"
QUESTIONS = ["What is 2+2?", "Name three colors.", "Write a haiku about rain."]


def _req(i: int, q: str, max_tokens: int = 12, stop: tuple[str, ...] = ()) -> GenRequest:
    return GenRequest(key=f"s{i}", messages=(("user", q),), max_tokens=max_tokens, stop=stop)


def _strip(results):
    return [(r.key, r.text, r.finish_reason, r.prompt_tokens, r.completion_tokens) for r in results]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



@pytest.fixture(scope="module")
def embedded(smol_path):
    e = LlamaCppEngine(smol_path, n_ctx=512, n_threads=1, n_seq_max=4, model_sha256=ms.MODELS[SMOL].sha256)
    yield e
    e.close()


@pytest.fixture(scope="module")
def shim_server(embedded):
    s = shim_mod.VLLMShim(embedded, REPO, root=ROOT, max_model_len=512)
    yield s
    s.stop()


@pytest.fixture
def shim(shim_server):
    shim_server.fail.clear()
    shim_server.delay_s = 0.0
    shim_server.requests.clear()
    return shim_server


@pytest.fixture(scope="module")
def real_server(smol_path, tmp_path_factory):
    """llama-cpp-python's OpenAI-compatible server, in a subprocess on a free port."""
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] extras not installed")
    port = _free_port()
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(smol_path), "--model_alias", REPO,
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024", "--n_threads", "1",
             "--n_threads_batch", "1", "--seed", "0", "--verbose", "False"], stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/v1/models", timeout=2) as r:
                    json.load(r)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def real(real_server):
    # llama_cpp.server's own default repeat_penalty is 1.1 (vLLM's is 1): neutralise it,
    # so greedy means argmax of the raw logits as in the embedded engine.
    return VLLMEngine(real_server, REPO, seed=42, extra_body={"repeat_penalty": 1.0})


# --- against a real OpenAI-compatible server (llama_cpp.server) ---------------------


def test_registered_and_capabilities():
    cls = engine_class("vllm")
    assert cls is VLLMEngine and hasattr(cls, "from_plan")
    assert set(cls.capabilities.modes) == {"sequential", "synchronized", "prompt_list", "concurrent"}


def test_real_server_identity_and_describe(real):
    d = real.describe()
    assert d["served_model"] == REPO and d["server_version"] is None  # llama_cpp.server has no /version
    assert d["verified"]["model"] is True and d["verified"]["revision"] is None
    assert d["sampling"]["repetition_penalty"] == 1.0 and d["sampling"]["seed"] == 42


def test_real_server_k1_sequential_equals_synchronized_and_embedded(real, embedded):
    req = _req(0, QUESTIONS[0], max_tokens=16)
    seq = real.run_group([req], "sequential")
    sync = real.run_group([req], "synchronized")
    again = real.run_group([req], "sequential")
    assert _strip(seq) == _strip(sync) == _strip(again)
    assert seq[0].prompt_tokens > 5 and 0 < seq[0].completion_tokens <= 16
    assert seq[0].finish_reason in ("stop", "length") and seq[0].text
    # Same model file, greedy on both sides: the server's answer is the embedded engine's.
    assert _strip(seq) == _strip(embedded.run_group([req], "sequential"))


def test_real_server_groups_in_order_with_timings(real):
    reqs = [_req(i, q, max_tokens=m) for i, (q, m) in enumerate(zip(QUESTIONS, (12, 3, 12)))]
    seq = real.run_group(reqs, "sequential")
    for mode in ("synchronized", "concurrent"):
        got = real.run_group(reqs, mode)
        assert [r.key for r in got] == ["s0", "s1", "s2"]
        assert _strip(got) == _strip(seq), mode  # the server decodes one request at a time
        assert got[1].finish_reason == "length" and got[1].completion_tokens == 3
        for r in got:
            v = r.volatile
            assert v["dispatch"] == mode and v["group_size"] == 3 and v["recv_s"] > v["send_s"] >= 0
            assert v["latency_s"] > 0 and v["request_id"]
        if mode == "synchronized":  # released together by the barrier, after every connection opened
            assert got[0].volatile["send_spread_s"] < 1.0  # barrier-released; generous for a loaded CI machine


def test_real_server_has_no_vllm_tokenize(real):
    with pytest.raises(EngineError, match=r"HTTP 404 to POST /tokenize") as ei:
        real.run_group([_req(0, "Hi")], "prompt_list")
    assert not ei.value.transient


# --- the vLLM protocol shim: /tokenize + prompt_list, identity, errors ---------------


def test_prompt_list_tokenizes_on_the_server_and_maps_by_index(shim, embedded):
    eng = VLLMEngine(shim.url, REPO, hf_revision=REV, seed=42)
    reqs = [_req(i, q, max_tokens=10) for i, q in enumerate(QUESTIONS)]
    got = eng.run_group(reqs, "prompt_list")
    assert [r.key for r in got] == ["s0", "s1", "s2"]  # the shim answers choices in reverse order
    paths = [p for p, _ in shim.requests]
    assert paths == ["/tokenize"] * 3 + ["/v1/completions"]
    tok_body = shim.requests[0][1]
    assert tok_body == {"model": REPO, "messages": [{"role": "user", "content": QUESTIONS[0]}],
                        "add_generation_prompt": True, "add_special_tokens": False}
    comp = shim.requests[-1][1]
    ids = [embedded.tokenize(embedded.render(r)) for r in reqs]
    assert comp["prompt"] == ids and comp["return_token_ids"] is True
    assert comp["temperature"] == 0.0 and comp["seed"] == 42 and comp["max_tokens"] == 10
    assert all(comp[k] == v for k, v in NEUTRAL_PENALTIES.items())
    seqs = embedded.decode_group(ids, [10] * 3, [()] * 3)  # what one true batch of the three gives
    assert [(r.text, r.completion_tokens, r.prompt_tokens) for r in got] == \
        [(embedded._text(s, ()), len(s.tokens), len(p)) for s, p in zip(seqs, ids)]
    assert got[0].volatile["dispatch"] == "prompt_list" and got[0].volatile["group_size"] == 3
    # Token ids are cached: a second group sends only the completions call.
    shim.requests.clear()
    eng.run_group(reqs[:2], "prompt_list")
    assert [p for p, _ in shim.requests] == ["/v1/completions"]


def test_prompt_list_k1_equals_chat_k1(shim):
    """The ids /tokenize returns are exactly what the chat route runs (Phase 4 baseline)."""
    eng = VLLMEngine(shim.url, REPO, seed=42)
    for i, q in enumerate(QUESTIONS[:2]):
        req = _req(i, q, max_tokens=10, stop=("\n\n",))
        assert _strip(eng.run_group([req], "prompt_list")) == _strip(eng.run_group([req], "sequential"))
    chat = next(b for p, b in shim.requests if p == "/v1/chat/completions")
    assert chat["stop"] == ["\n\n"] and chat["repetition_penalty"] == 1.0 and chat["n"] == 1


def test_prompt_list_needs_one_decoding_policy(shim):
    eng = VLLMEngine(shim.url, REPO)
    with pytest.raises(EngineError, match="must share max_tokens and stop"):
        eng.run_group([_req(0, "a", 4), _req(1, "b", 5)], "prompt_list")


def test_identity_checks(shim_server):
    d = VLLMEngine(shim_server.url, REPO, hf_revision=REV, config={"flags": ["--max-model-len", "512"]}).describe()
    assert d["server_version"] == "0.11.1+shim" and d["model_card"]["root"] == ROOT
    assert d["verified"] == {"model": True, "revision": True, "max_model_len": True}
    with pytest.raises(EngineError, match=r"does not serve the plan's model 'org/other'.*serves "
                                          r"'HuggingFaceTB/SmolLM2-135M-Instruct'") as ei:
        VLLMEngine(shim_server.url, "org/other")
    assert not ei.value.transient
    with pytest.raises(EngineError, match=f"at revision {REV}.*the plan pins 0000000"):
        VLLMEngine(shim_server.url, REPO, hf_revision="0" * 40)
    with pytest.raises(EngineError, match="max_model_len 512, the plan's flags say --max-model-len 2048"):
        VLLMEngine(shim_server.url, REPO, config={"flags": ["--max-model-len=2048"]})


def test_dead_server_is_transient_with_a_clear_message():
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(EngineError, match=r"vLLM server at .* is not reachable \(connection refused\); this "
                                          r"adapter .* does not start containers; start one, e.g. docker run") as ei:
        VLLMEngine(url, REPO, hf_revision=REV, config={"image": "vllm/vllm-openai@sha256:ab", "env": {"A": "1"}})
    assert ei.value.transient and "-e A=1 vllm/vllm-openai@sha256:ab --model " + REPO in str(ei.value)


def test_http_errors(shim):
    eng = VLLMEngine(shim.url, REPO, timeout_s=2.0)
    long = _req(0, "word " * 600, max_tokens=8)
    with pytest.raises(EngineError, match="HTTP 400 .*maximum context length is 512 tokens") as ei:
        eng.run_group([long], "sequential")
    assert not ei.value.transient
    shim.fail.append((503, "engine overloaded"))
    with pytest.raises(EngineError, match="HTTP 503 .*engine overloaded") as ei:
        eng.run_group([_req(0, "Hi", 2)], "sequential")
    assert ei.value.transient
    shim.delay_s = 2.6
    with pytest.raises(EngineError, match=r"did not answer POST /v1/chat/completions within 2 s") as ei:
        eng.run_group([_req(0, "Hi", 2)], "sequential")
    assert ei.value.transient


def test_synchronized_group_with_one_failure(shim):
    eng = VLLMEngine(shim.url, REPO)
    shim.fail.append((500, "CUDA error: an illegal memory access"))
    with pytest.raises(EngineError, match=r"request \d of 3: .*HTTP 500 .*illegal memory access") as ei:
        eng.run_group([_req(i, q, 2) for i, q in enumerate(QUESTIONS)], "synchronized")
    assert ei.value.transient
    # The other two were still answered (nothing left hanging at the barrier).
    assert len([p for p, _ in shim.requests if p == "/v1/chat/completions"]) == 3


# --- from the plan: kernel variants and an end-to-end run --------------------------


@pytest.fixture(scope="module")
def study(shim_server):
    plan = compile_spec(HERE / "study.yaml", DATA)
    return plan.model_copy(update={"locators": Locators(endpoints={"vllm": shim_server.url})})


def test_kernel_variant_needs_its_own_server(study, shim, monkeypatch):
    name = variant_env_name("batch_invariant")
    assert name == "BATCHSAFE_VLLM_ENDPOINT_BATCH_INVARIANT"
    monkeypatch.delenv(name, raising=False)
    b = Binding(engine="vllm", kind="vllm", model="smol", kernel="batch_invariant")
    want = f"needs a vLLM server started with VLLM_BATCH_INVARIANT=1.*set {name}="
    with pytest.raises(EngineError, match=want) as ei:
        DefaultEngineFactory(study)(b)
    assert not ei.value.transient and "-e VLLM_BATCH_INVARIANT=1" in str(ei.value)
    same = DefaultEngineFactory(study)(Binding(engine="vllm", kind="vllm", model="smol", kernel="default"))
    assert same.describe()["kernel_variant"]["differs_from_base"] == {}  # the base server is this variant
    monkeypatch.setenv(name, shim.url)
    d = DefaultEngineFactory(study)(b).describe()
    assert d["kernel_variant"]["endpoint_from"] == name and d["expected"]["env"] == {"VLLM_BATCH_INVARIANT": "1"}
    assert d["kernel_variant"]["same_endpoint_as_base"] is True  # recorded: vLLM cannot tell us its env


def test_study_runs_end_to_end(study, shim, monkeypatch, tmp_path):
    monkeypatch.setenv(variant_env_name("batch_invariant"), shim.url)
    summary = run_plan(study, tmp_path / "run", progress=False)
    assert summary.groups_done == len(study.groups)
    samples = [json.loads(x) for x in (tmp_path / "run" / "outputs" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == len(study.samples) == 12
    assert all(s["finish_reason"] in ("stop", "length") and s["completion_tokens"] > 0 for s in samples)
    paths = {p for p, _ in shim.requests}
    assert paths == {"/tokenize", "/v1/completions", "/v1/chat/completions"}
    engines = [json.loads(x) for x in (tmp_path / "run" / "volatile" / "engines.jsonl").read_text().splitlines()]
    assert {e["describe"]["served_model"] for e in engines} == {REPO}
