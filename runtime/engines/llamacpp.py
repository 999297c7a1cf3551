"""The embedded llama.cpp engine: real GGUF decoding with true batching, in process.

A dispatch group of K requests is decoded together through the low-level API: all K
prompts go into one ``llama_batch`` under distinct sequence ids 0..K-1 (logits only on
each sequence's last prompt token), then every step decodes one token for every live
sequence in ONE ``llama_batch``. K=1 ("sequential") runs the very same code with a
single sequence, so the only difference between modes is what shares a forward pass.

In process, "synchronized" (K requests released together) and "prompt_list" (one call
carrying K prompts) are the same thing: both reach the true-batched path. "concurrent"
(K clients against a server) goes to llama_cpp.server in a subprocess, started on first
use (see ``runtime.engines.llamacpp_server``); the in-process model stays for the other
modes (the server mmaps the same file, and this process is idle while a group runs).

Decoding is greedy and defined exactly: the next token is ``argmax`` of the float32
logits with ties broken toward the lowest token id (numpy's first-maximum rule);
generation stops at an end-of-generation token (not counted, not in the text), when a
stop string appears (text cut before it), or at ``max_tokens`` ("length").
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import time
from datetime import datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pydantic import Field

from batchsafe.runtime import model_store
from batchsafe.runtime.engine import Engine, EngineError, GenRequest, GenResult
from batchsafe.runtime.engines.catalogue import engine
from batchsafe.runtime.engines.config import CheckContext, EngineConfig

def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def build_info() -> dict[str, Any]:
    """What is knowable about the llama.cpp build: versions, compiled CPU features, and
    whether it was built -march=native (the wheel keeps no CMake flags, so this is
    inferred: a CPU feature the host has but the build lacks means a portable build)."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()
    built = {kv.split("=")[0].strip() for kv in info.replace("CPU :", "").split("|") if "= 1" in kv}
    host = _cpu_flags()
    missing = sorted(f for f, h in (("AVX512", "avx512f"), ("AVX2", "avx2"), ("FMA", "fma"),
                                     ("AVX512_VNNI", "avx512_vnni"), ("AVX512_BF16", "avx512_bf16"))
                     if h in host and f not in built)
    try:
        llama_version = llama_cpp.llama_version().decode()
    except Exception:  # older bindings
        llama_version = None
    return {
        "llama_cpp_python": llama_cpp.__version__,
        "llama_cpp": llama_version,
        "system_info": info,
        "compiled_cpu_features": sorted(built),
        "host_features_not_compiled": missing,
        "native_build": False if missing else None,  # None: cannot tell from here
        "numpy": np.__version__,
        "jinja2": importlib_metadata.version("jinja2"),
    }


class ChatTemplate:
    """A GGUF chat template rendered the way llama-cpp-python's Jinja2ChatFormatter does.

    Same sandboxed environment (trim_blocks, lstrip_blocks, loopcontrols, HF's
    ``{% generation %}`` pass-through, ``tojson`` with ensure_ascii=False) and
    ``add_generation_prompt=True``. One deliberate difference: ``strftime_now`` formats
    a pinned date (2024-01-01) so a prompt never depends on the day it ran.
    """

    PINNED_NOW = datetime(2024, 1, 1)

    def __init__(self, source: str, bos_token: str, eos_token: str) -> None:
        import json

        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        class _Generation(jinja2.ext.Extension):
            tags = {"generation"}

            def parse(self, parser: Any) -> Any:
                parser.stream.skip(1)
                return parser.parse_statements(("name:endgeneration",), drop_needle=True)

        env = ImmutableSandboxedEnvironment(
            loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True,
            extensions=[_Generation, jinja2.ext.loopcontrols])
        env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, \
            sort_keys=False: json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                                        separators=separators, sort_keys=sort_keys)
        self.source = source
        self.sha256 = hashlib.sha256(source.encode()).hexdigest()
        self._tmpl = env.from_string(source)
        self._bos, self._eos = bos_token, eos_token

    def render(self, messages: tuple[tuple[str, str], ...]) -> str:
        """The prompt text for (role, content) messages, ending with the assistant header."""
        def raise_exception(message: str) -> None:
            raise EngineError(f"chat template refused the messages: {message}")

        return self._tmpl.render(
            messages=[{"role": r, "content": c} for r, c in messages],
            bos_token=self._bos, eos_token=self._eos, add_generation_prompt=True,
            raise_exception=raise_exception, strftime_now=self.PINNED_NOW.strftime)


def _strip_partial_utf8(data: bytes) -> bytes:
    """Drop an incomplete UTF-8 sequence at the very end, and nothing else."""
    for n in range(1, min(4, len(data)) + 1):
        b = data[-n]
        if b & 0xC0 != 0x80:  # a lead byte (or ASCII): how long should its sequence be?
            need = 1 if b < 0x80 else 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return data[:-n] if need > n else data
    return data


class SeqOut:
    """Raw outcome of one sequence: token ids and the finish reason (for tests, tools)."""

    __slots__ = ("prompt", "tokens", "finish", "stop_at")

    def __init__(self, prompt: list[int]) -> None:
        self.prompt = prompt
        self.tokens: list[int] = []
        self.finish = ""
        self.stop_at: int | None = None


class LlamaCppEngineConfig(EngineConfig):
    """The embedded llama.cpp engine (llama-cpp-python), true batching in one llama_batch."""

    kind: Literal["llamacpp"]
    n_ctx: int = Field(2048, ge=128)
    """Context length per sequence."""
    n_threads: int | None = Field(None, ge=1)
    """CPU threads; default leaves one core free (llama.cpp slows 10-50x when a core is shared)."""
    n_batch: int = Field(512, ge=1)
    """Prompt-processing batch in tokens."""
    chat_template: str | None = None
    """Jinja chat template overriding the one in the GGUF metadata."""

    def check_binding(self, ctx: CheckContext, path: tuple[Any, ...], name: str, model: Any, phase: Any) -> None:
        """The model needs a gguf reference pinned by its file digest."""
        if model.gguf is None:
            ctx.error(path, "missing-key", f"model {name!r} has no gguf reference, needed by engine kind llamacpp")
            return
        ctx.pin(path, f"models.{name}.gguf sha256", model.gguf.sha256 is not None)


@engine("llamacpp", config=LlamaCppEngineConfig, display="llama.cpp (embedded)",
        summary="llama-cpp-python in process: K sequences in one llama_batch; concurrent via a loopback llama_cpp.server",
        modes=("sequential", "synchronized", "prompt_list", "concurrent"),
        true_batching=True, concurrency=True, quant_variants=True, extras=("embedded",), requires=("llama_cpp",))
class LlamaCppEngine(Engine):
    """llama.cpp through llama-cpp-python's low-level bindings, one process, CPU.

    ``n_ctx`` is the context of ONE sequence; the context allocates ``n_ctx * n_seq_max``
    cells so every one of up to ``n_seq_max`` sequences gets ``n_ctx``. The context is
    the same for K=1 and K>1 groups, so modes differ only in what shares a forward pass.
    ``flash_attn`` defaults to off like llama-cpp-python's ``Llama`` (the reference).
    """

    version = "1"

    def __init__(self, model_path: str | os.PathLike[str], n_ctx: int = 1024,
                 n_threads: int | None = None, n_batch: int = 512, seed: int = 0,
                 chat_template: str | None = None, *, n_seq_max: int = 8,
                 kv_unified: bool = False, flash_attn: bool = False,
                 model_sha256: str | None = None) -> None:
        """Load a GGUF model and create one context for groups of up to ``n_seq_max``.

        n_threads: default ``cpu_count - 1``. n_batch: tokens per ``llama_decode`` (also
        n_ubatch; longer prefills are chunked). seed: recorded only; greedy decoding
        uses no randomness. chat_template: Jinja source replacing the GGUF's. kv_unified:
        one KV buffer shared by all sequences (llama.cpp's default is one per sequence).
        model_sha256: the pinned identity, to skip re-hashing a store-verified file.
        """
        import llama_cpp

        self._server: Any = None  # llama_cpp.server for "concurrent", started on first use
        self._ll = ll = llama_cpp
        model_store.quiet_llama_logs()
        ll.llama_backend_init()
        self.model_path = Path(model_path)
        # llama.cpp slows 10-50x when another process takes one of its cores: leave one free.
        self.n_threads = n_threads or max(1, (os.cpu_count() or 2) - 1)
        self.n_ctx, self.n_batch, self.seed, self.n_seq_max = n_ctx, n_batch, seed, n_seq_max
        self.model_sha256 = model_sha256 or model_store.sha256_file(self.model_path)
        self.gguf = model_store.gguf_summary(self.model_path)
        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = 0
        self._model = ll.llama_model_load_from_file(os.fsencode(self.model_path), mparams)
        if not self._model:
            raise EngineError(f"llama.cpp could not load {self.model_path}")
        cp = ll.llama_context_default_params()
        cp.n_ctx = n_ctx * n_seq_max
        cp.n_batch = cp.n_ubatch = n_batch
        cp.n_seq_max = n_seq_max
        cp.n_threads = cp.n_threads_batch = self.n_threads
        cp.kv_unified = kv_unified
        cp.flash_attn_type = (ll.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                              else ll.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        cp.no_perf = True
        self._cparams = cp
        self._ctx = ll.llama_init_from_model(self._model, cp)
        if not self._ctx:
            ll.llama_model_free(self._model)
            raise EngineError("llama.cpp could not create a context")
        self._vocab = ll.llama_model_get_vocab(self._model)
        self.n_vocab = ll.llama_vocab_n_tokens(self._vocab)
        self._batch = ll.llama_batch_init(n_batch, 0, 1)
        tmpl = chat_template
        if tmpl is None:
            tmpl = model_store.gguf_metadata(self.model_path, keep_array=0).get("tokenizer.chat_template")
        self.template_source = "override" if chat_template is not None else "gguf"
        self.template = None if tmpl is None else ChatTemplate(
            tmpl, self._token_text(ll.llama_vocab_bos(self._vocab)),
            self._token_text(ll.llama_vocab_eos(self._vocab)))

    # --- vocabulary ----------------------------------------------------------

    def _token_text(self, tok: int) -> str:
        if tok < 0:
            return ""
        return self._ll.llama_vocab_get_text(self._vocab, tok).decode("utf-8", "replace")

    def tokenize(self, text: str) -> list[int]:
        """Tokens of a rendered prompt: special tokens parsed, no BOS added (the template
        writes it when the model wants one, as llama-cpp-python's chat path does)."""
        raw = text.encode("utf-8")
        cap = len(raw) + 16
        buf = (self._ll.llama_token * cap)()
        n = self._ll.llama_tokenize(self._vocab, raw, len(raw), buf, cap, False, True)
        if n < 0:
            cap = -n
            buf = (self._ll.llama_token * cap)()
            n = self._ll.llama_tokenize(self._vocab, raw, len(raw), buf, cap, False, True)
        return list(buf[:n])

    def _piece(self, tok: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._ll.llama_token_to_piece(self._vocab, tok, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._ll.llama_token_to_piece(self._vocab, tok, buf, -n, 0, False)
        return buf.raw[:n]

    def detokenize(self, tokens: list[int]) -> bytes:
        """Bytes of a token list, detokenized as a whole (never split inside a UTF-8 char)."""
        if not tokens:
            return b""
        arr = (self._ll.llama_token * len(tokens))(*tokens)
        cap = 16 * len(tokens) + 16
        buf = ctypes.create_string_buffer(cap)
        n = self._ll.llama_detokenize(self._vocab, arr, len(tokens), buf, cap, False, False)
        if n < 0:
            cap = -n
            buf = ctypes.create_string_buffer(cap)
            n = self._ll.llama_detokenize(self._vocab, arr, len(tokens), buf, cap, False, False)
        return buf.raw[:n]

    def render(self, req: GenRequest) -> str:
        """The prompt text of a request (chat template applied)."""
        if self.template is None:
            raise EngineError(f"{self.model_path.name} has no tokenizer.chat_template; pass chat_template")
        return self.template.render(req.messages)

    # --- decoding ------------------------------------------------------------

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> list[int]:
        """Decode (token, pos, seq, want_logits) entries in n_batch chunks; return the
        greedy next token for every entry that asked for logits, in entry order."""
        ll, b, out = self._ll, self._batch, []
        for start in range(0, len(entries), self.n_batch):
            chunk = entries[start:start + self.n_batch]
            for i, (tok, pos, seq, want) in enumerate(chunk):
                b.token[i], b.pos[i], b.n_seq_id[i] = tok, pos, 1
                b.seq_id[i][0] = seq
                b.logits[i] = want
            b.n_tokens = len(chunk)
            rc = ll.llama_decode(self._ctx, b)
            if rc != 0:
                raise EngineError(f"llama_decode returned {rc} (1: no KV slot, <0: error)")
            for i, (_, _, _, want) in enumerate(chunk):
                if want:
                    row = np.ctypeslib.as_array(ll.llama_get_logits_ith(self._ctx, i), shape=(self.n_vocab,))
                    out.append(int(np.argmax(row)))  # first maximum: ties -> lowest id
        return out

    def decode_group(self, prompts: list[list[int]], max_tokens: list[int],
                     stops: list[tuple[str, ...]]) -> list[SeqOut]:
        """Greedy-decode K token prompts together (K=1 is the sequential baseline).

        A sequence's tokens include the one that completed a stop string (the text is
        cut before the stop string later) and exclude an end-of-generation token.
        """
        ll = self._ll
        k = len(prompts)
        if k > self.n_seq_max:
            raise EngineError(f"group of {k} exceeds n_seq_max={self.n_seq_max}")
        seqs = [SeqOut(p) for p in prompts]
        for s, m in zip(seqs, max_tokens):
            if m < 1 or not s.prompt:
                raise EngineError(f"empty prompt or max_tokens {m} < 1")
            if len(s.prompt) + m > self.n_ctx:
                raise EngineError(f"prompt of {len(s.prompt)} tokens + max_tokens {m} "
                                  f"does not fit n_ctx={self.n_ctx}")
        # Clear tokens AND data: a group must not depend on what ran before it.
        ll.llama_memory_clear(ll.llama_get_memory(self._ctx), True)
        entries = [(t, j, si, j == len(s.prompt) - 1)
                   for si, s in enumerate(seqs) for j, t in enumerate(s.prompt)]
        nxt = dict(enumerate(self._decode(entries)))
        raw = [bytearray() for _ in seqs]
        bstops = [[x.encode("utf-8") for x in st if x] for st in stops]
        while nxt:
            step = []
            for si, tok in nxt.items():
                s = seqs[si]
                if ll.llama_vocab_is_eog(self._vocab, tok):
                    s.finish = "stop"
                    continue
                s.tokens.append(tok)
                before = len(raw[si])
                raw[si] += self._piece(tok)
                # Only the tail can hold a new match; byte search is exact for UTF-8 text.
                tail_from = max(0, before - max((len(x) for x in bstops[si]), default=0))
                if any(x in raw[si][tail_from:] for x in bstops[si]):
                    s.finish = "stop"
                elif len(s.tokens) >= max_tokens[si]:
                    s.finish = "length"
                else:
                    step.append((tok, len(s.prompt) + len(s.tokens) - 1, si, True))
            nxt = dict(zip((e[2] for e in step), self._decode(step))) if step else {}
        ll.llama_memory_clear(ll.llama_get_memory(self._ctx), True)
        return seqs

    def _text(self, s: SeqOut, stops: tuple[str, ...]) -> str:
        data = self.detokenize(s.tokens)
        cut = [i for i in (data.find(x.encode()) for x in stops if x) if i >= 0]
        if cut:
            data = data[:min(cut)]
        elif s.finish == "length":
            data = _strip_partial_utf8(data)  # max_tokens may end inside a character
        return data.decode("utf-8", "replace")

    def _run(self, reqs: list[GenRequest]) -> list[GenResult]:
        for r in reqs:
            if r.temperature != 0.0:
                raise EngineError(f"{r.key}: only greedy decoding (temperature 0) is implemented")
        t0 = time.perf_counter()
        prompts = [self.tokenize(self.render(r)) for r in reqs]
        seqs = self.decode_group(prompts, [r.max_tokens for r in reqs], [r.stop for r in reqs])
        wall = time.perf_counter() - t0
        return [GenResult(key=r.key, text=self._text(s, r.stop), finish_reason=s.finish,
                          prompt_tokens=len(s.prompt), completion_tokens=len(s.tokens),
                          volatile={"group_wall_s": wall, "group_size": len(reqs)})
                for r, s in zip(reqs, seqs)]

    def run_group(self, requests: list[GenRequest], mode: str) -> list[GenResult]:
        """Sequential: each request alone (K=1). synchronized/prompt_list: one true batch."""
        if mode == "sequential":
            return [res for r in requests for res in self._run([r])]
        if mode in ("synchronized", "prompt_list"):
            return self._run(list(requests)) if requests else []
        if mode == "concurrent":
            return self._concurrent(list(requests)) if requests else []
        raise EngineError(f"llamacpp engine does not implement dispatch mode {mode!r}")

    def _concurrent_server(self) -> Any:
        """The llama_cpp.server of "concurrent" mode, mirroring this engine's settings (created,
        not started: run_group starts it on first use)."""
        from batchsafe.runtime.engines import llamacpp_server as srv

        if self._server is None:
            self._server = srv.LlamaCppServer(
                self.model_path, n_ctx=self.n_ctx, n_threads=self.n_threads, n_batch=self.n_batch,
                seed=self.seed, flash_attn=self._cparams.flash_attn_type == self._ll.LLAMA_FLASH_ATTN_TYPE_ENABLED)
        return self._server

    def _concurrent(self, reqs: list[GenRequest]) -> list[GenResult]:
        """K clients against llama_cpp.server; results rebuilt from its tokens by our rules."""
        from batchsafe.runtime.engines import llamacpp_server as srv

        for r in reqs:
            if r.temperature != 0.0:
                raise EngineError(f"{r.key}: only greedy decoding (temperature 0) is implemented")
        texts = [self.render(r) for r in reqs]
        prompts = [self.tokenize(t) for t in texts]
        for r, p in zip(reqs, prompts):  # the same limits as decode_group, before any request is sent
            if r.max_tokens < 1 or not p or len(p) + r.max_tokens > self.n_ctx:
                raise EngineError(f"{r.key}: prompt of {len(p)} tokens + max_tokens {r.max_tokens} "
                                  f"does not fit n_ctx={self.n_ctx}")
        replies, summary = self._concurrent_server().run_group(reqs, texts)
        out = []
        for r, p, rep in zip(reqs, prompts, replies):
            ex, js = rep["exec"], rep["json"]
            if ex["prompt"] != p:
                raise EngineError(f"{r.key}: llama_cpp.server evaluated a different prompt ({len(ex['prompt'])} "
                                  f"tokens) from the engine's ({len(p)} tokens)")
            got = srv.replay(ex["tokens"], r.max_tokens, r.stop, self._piece,
                             lambda t: bool(self._ll.llama_vocab_is_eog(self._vocab, t)))
            if got is None:
                raise EngineError(f"{r.key}: llama_cpp.server stopped after {len(ex['tokens'])} tokens "
                                  f"({js['choices'][0]['finish_reason']}) where the engine would go on")
            s = SeqOut(p)
            s.tokens, s.finish = got
            text = self._text(s, r.stop)
            choice = js["choices"][0]
            out.append(GenResult(key=r.key, text=text, finish_reason=s.finish, prompt_tokens=len(p),
                                 completion_tokens=len(s.tokens), volatile={
                "mode": "concurrent", "group_size": len(reqs), "group_wall_s": summary["group_wall_s"],
                "send_mono": rep["send"], "recv_mono": rep["recv"], "latency_s": rep["recv"] - rep["send"],
                "server_exec_start_mono": ex["start"], "server_exec_end_mono": ex["end"],
                "server_in_flight": ex["in_flight"], "kv_prefix_reused": ex["prefix_reused"],
                "server_token_ids": ex["tokens"], "server_finish_reason": choice["finish_reason"],
                "server_usage": js.get("usage"), "server_text_differs": choice["text"] != text,
                **({"server_text": choice["text"]} if choice["text"] != text else {}),
                "group_summary": summary}))
        return out

    def describe(self) -> dict[str, Any]:
        """Build, system and configuration facts for the run environment record."""
        from batchsafe.runtime.engines import llamacpp_server as srv

        cp = self._cparams
        return {
            "engine": self.name, "engine_version": self.version, **build_info(),
            "n_threads": self.n_threads, "n_ctx_per_seq": self.n_ctx,
            "n_ctx_total": cp.n_ctx, "n_batch": self.n_batch, "n_ubatch": cp.n_ubatch,
            "n_seq_max": self.n_seq_max, "kv_unified": bool(cp.kv_unified),
            "flash_attn_type": int(cp.flash_attn_type), "type_k": int(cp.type_k),
            "type_v": int(cp.type_v), "seed": self.seed,
            "decoding": "greedy argmax over float32 logits, ties to lowest token id",
            "model": {"sha256": self.model_sha256, "path": str(self.model_path), **self.gguf},
            "chat_template": {"source": self.template_source,
                              "sha256": self.template.sha256 if self.template else None,
                              "strftime_now": ChatTemplate.PINNED_NOW.isoformat()},
            "concurrent": srv.describe(self._concurrent_server()),
        }

    def close(self) -> None:
        """Stop the server (if any); free the batch, context and model (idempotent)."""
        if getattr(self, "_server", None) is not None:
            self._server.stop()
        ll = self._ll
        if getattr(self, "_ctx", None):
            ll.llama_batch_free(self._batch)
            ll.llama_free(self._ctx)
            ll.llama_model_free(self._model)
            self._ctx = self._model = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
