"""The embedded llama.cpp engine, on a real model (SmolLM2-135M, fast) with real decoding.

Runs when the ``embedded`` extra is installed; the model comes from the shared model
cache (fetched from PyPI once). Short max_tokens keep the file within ~2 minutes on
two cores.
"""

from __future__ import annotations

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from batchsafe.runtime import model_store as ms  # noqa: E402
from batchsafe.runtime.engine import EngineError, GenRequest, engine_class  # noqa: E402
from batchsafe.runtime.engines.llamacpp import LlamaCppEngine, _strip_partial_utf8  # noqa: E402

SMOL = "smollm2-135m-instruct-q4_1"
PROMPTS = ["What is 2+2?", "Name three colors.", "Write a haiku about rain.",
           "Explain in detail, step by step, how a bicycle gear system works and why lower "
           "gears make climbing hills easier for the rider. Mention the chain, the cassette, "
           "the derailleur, the chainrings, cadence, torque and the gear ratio, and give one "
           "worked numerical example with a 34-tooth chainring and a 28-tooth sprocket.", "Hi"]


def _req(i: int, q: str, max_tokens: int = 16, stop: tuple[str, ...] = ()) -> GenRequest:
    return GenRequest(key=f"s{i}", messages=(("user", q),), max_tokens=max_tokens, stop=stop)



@pytest.fixture(scope="module")
def engine(smol_path):
    e = LlamaCppEngine(smol_path, n_ctx=512, n_seq_max=8, model_sha256=ms.MODELS[SMOL].sha256)
    yield e
    e.close()


def test_registered_and_capabilities():
    cls = engine_class("llamacpp")
    assert cls is LlamaCppEngine
    assert cls.capabilities.true_batching and cls.capabilities.quant_variants
    assert set(cls.capabilities.modes) == {"sequential", "synchronized", "prompt_list", "concurrent"}
    assert cls.capabilities.concurrency


def test_describe(engine):
    d = engine.describe()
    assert d["model"]["sha256"] == ms.MODELS[SMOL].sha256
    assert d["model"]["file_type_name"] == "Q4_1" and d["chat_template"]["source"] == "gguf"
    assert d["system_info"].startswith("CPU") and d["llama_cpp_python"] == llama_cpp.__version__
    assert d["n_ctx_per_seq"] == 512 and d["n_seq_max"] == 8 and d["n_threads"] >= 1


def _reference_tokens(llm, prompt: list[int], max_tokens: int) -> list[int]:
    """The straightforward loop: llama-cpp-python's high-level greedy generation."""
    out: list[int] = []
    for tok in llm.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok) or len(out) >= max_tokens:
            break
        out.append(tok)
    return out


def test_k1_path_equals_high_level_reference(engine, smol_path):
    """K=1 through the batch machinery == Llama.generate(temp=0, top_k=1, no penalty)."""
    from llama_cpp import Llama

    llm = Llama(str(smol_path), n_ctx=512, n_batch=512, n_threads=engine.n_threads,
                n_threads_batch=engine.n_threads, seed=0, verbose=False)
    try:
        for i, q in enumerate(PROMPTS[:3]):
            prompt = engine.tokenize(engine.render(_req(i, q)))
            # Same tokens as llama-cpp-python's chat path (no BOS added, specials parsed).
            assert prompt == llm.tokenize(engine.render(_req(i, q)).encode(), add_bos=False, special=True)
            ref = _reference_tokens(llm, prompt, 24)
            (ours,) = engine.decode_group([prompt], [24], [()])
            assert ours.tokens == ref, q
            res = engine.run_group([_req(i, q, 24)], "sequential")[0]
            assert res.text == llm.detokenize(ref).decode("utf-8", "replace")
    finally:
        llm.close()


def test_batch_is_deterministic_and_ordered(engine):
    reqs = [_req(i, q, max_tokens=[12, 20, 8, 16, 4][i]) for i, q in enumerate(PROMPTS)]
    first = engine.run_group(reqs, "prompt_list")
    again = engine.run_group(reqs, "synchronized")  # same true-batched path
    strip = [(r.key, r.text, r.finish_reason, r.prompt_tokens, r.completion_tokens) for r in first]
    assert strip == [(r.key, r.text, r.finish_reason, r.prompt_tokens, r.completion_tokens) for r in again]
    assert [r.key for r in first] == [r.key for r in reqs]  # request order
    for r, q in zip(first, reqs):  # mixed prompt lengths and budgets are honoured
        assert 0 < r.completion_tokens <= q.max_tokens and r.volatile["group_size"] == 5
    lengths = {r.prompt_tokens for r in first}
    assert max(lengths) > min(lengths) + 40
    # A K=1 group after a batch is unaffected by it (the KV cache is cleared).
    solo = engine.run_group([reqs[1]], "sequential")[0]
    assert solo.text == engine.run_group([reqs[1]], "sequential")[0].text


class _DecodeSpy:
    """Stands in for the llama_cpp module and records what each llama_decode carried."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[int, bool]]] = []

    def __getattr__(self, name):
        return getattr(llama_cpp, name)

    def llama_decode(self, ctx, batch):
        self.calls.append([(batch.seq_id[i][0], bool(batch.logits[i])) for i in range(batch.n_tokens)])
        return llama_cpp.llama_decode(ctx, batch)


def test_true_batching_one_decode_per_step(engine, monkeypatch):
    spy = _DecodeSpy()
    monkeypatch.setattr(engine, "_ll", spy)
    budgets = [3, 6, 4]
    res = engine.run_group([_req(i, PROMPTS[3], b) for i, b in enumerate(budgets)], "prompt_list")
    assert [r.completion_tokens for r in res] == budgets  # long prompt: no early EOS
    prefill, *steps = spy.calls
    assert {s for s, _ in prefill} == {0, 1, 2}  # all prompts in ONE batch, distinct seqs
    assert [s for s, want in prefill if want] == [0, 1, 2]  # logits on each last token only
    # Then one decode per step carrying one token per live sequence.
    assert [sorted(s for s, _ in c) for c in steps] == [[0, 1, 2]] * 2 + [[1, 2]] + [[1]] * 2


def test_max_tokens_gives_length(engine):
    r = engine.run_group([_req(0, PROMPTS[3], max_tokens=5)], "sequential")[0]
    assert (r.finish_reason, r.completion_tokens) == ("length", 5) and r.text


def test_eos_gives_stop(engine):
    r = engine.run_group([_req(0, "What is 2+2?", max_tokens=64)], "sequential")[0]
    assert r.finish_reason == "stop" and r.completion_tokens < 64


def test_stop_string_truncates(engine):
    full = engine.run_group([_req(0, PROMPTS[2], max_tokens=24)], "sequential")[0].text
    words = full.split()
    assert len(words) >= 4, full
    stop = " " + words[3]
    r = engine.run_group([_req(0, PROMPTS[2], max_tokens=24, stop=(stop, "zzzz-never"))], "sequential")[0]
    assert r.finish_reason == "stop"
    assert r.text == full[: full.index(stop)] and stop not in r.text
    # In a batch, the stop string applies to its own sequence only.
    both = engine.run_group([_req(0, PROMPTS[2], 24, (stop,)), _req(1, PROMPTS[2], 24)], "prompt_list")
    assert stop not in both[0].text and stop in both[1].text


def test_refusals_and_limits(engine, smol_path):
    with pytest.raises(EngineError, match="does not implement dispatch mode .bogus."):
        engine.run_group([_req(0, "Hi")], "bogus")
    with pytest.raises(EngineError, match="greedy"):
        engine.run_group([GenRequest("t", (("user", "Hi"),), 4, temperature=0.7)], "sequential")
    with pytest.raises(EngineError, match="n_seq_max"):
        engine.run_group([_req(i, "Hi", 2) for i in range(9)], "prompt_list")
    with pytest.raises(EngineError, match="n_ctx"):
        engine.run_group([_req(0, "Hi", max_tokens=600)], "sequential")
    assert engine.run_group([], "prompt_list") == []


def test_chat_template_override(smol_path):
    e = LlamaCppEngine(smol_path, n_ctx=128, n_seq_max=1, chat_template="Q: {{ messages[-1]['content'] }}\nA:")
    try:
        assert e.render(_req(0, "Hi")) == "Q: Hi\nA:"
        assert e.describe()["chat_template"]["source"] == "override"
        assert e.run_group([_req(0, "Hi", 3)], "sequential")[0].prompt_tokens == len(e.tokenize("Q: Hi\nA:"))
    finally:
        e.close()


def test_strip_partial_utf8():
    snow = "☃".encode()  # 3 bytes
    assert _strip_partial_utf8(b"ab" + snow) == b"ab" + snow
    assert _strip_partial_utf8(b"ab" + snow[:2]) == b"ab"
    assert _strip_partial_utf8(b"ab" + snow[:1]) == b"ab"
    assert _strip_partial_utf8(b"") == b""
