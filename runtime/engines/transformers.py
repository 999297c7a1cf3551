"""The transformers engine: Hugging Face transformers on torch (CPU), in process.

It loads a model from a GGUF file (``gguf_file=``: transformers dequantizes it to the
engine's dtype; the file is the model store's, fetched by sha256 like the llama.cpp
engine's) or from an HF model directory (found in the batchsafe cache by the digest
``hf.weights_sha256`` pins, e.g. the folder ``make vllm-cpu`` converts from that GGUF).
The two are different weights: the HF folder holds the GGUF's values rounded to bf16.

Dispatch: ``synchronized`` and ``prompt_list`` put the K prompts of a group into ONE
``generate`` call, left-padded with attention masks (true batching); ``sequential``
runs the same code with K=1. Decoding rules (greedy, eos, padding, stop strings) are in
:mod:`batchsafe.runtime.engines.transformers_batch`.

Numerics settings, all in the plan's engine config: ``dtype`` (float32 or bfloat16: the
weights and every activation), ``attn_implementation`` (sdpa or eager), ``n_threads``
(torch intra-op threads; None: torch's default, recorded at run time) and the torch /
transformers versions the run must find. A kernel-axis variant may override the first
three with flags, so a phase varies dtype as an axis::

    axes: {kernel: [{id: fp32, flags: [--dtype, float32]}, {id: bf16, flags: [--dtype, bfloat16]}]}

(flags: ``--dtype``, ``--attn-implementation``, ``--threads``; env is refused: torch reads
its environment once per process). torch and transformers are imported inside functions.
"""

from __future__ import annotations

import hashlib
import os
import time
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from batchsafe.compiler.plan_lookup import engine_of, kernel_variant, model_of
from batchsafe.runtime.engine import Engine, EngineError, GenRequest, GenResult, plan_engine
from batchsafe.runtime.engines import transformers_batch as tb
from batchsafe.runtime.engines.catalogue import engine
from batchsafe.runtime.engines.config import CheckContext, EngineConfig

DTYPES = ("float32", "bfloat16")
ATTN = ("sdpa", "eager")
FLAG_KEYS = {"--dtype": "dtype", "--attn-implementation": "attn_implementation", "--threads": "n_threads"}
"""Kernel-variant flags this engine understands -> the engine setting each overrides."""
PACKAGES = ("torch", "transformers", "tokenizers", "safetensors", "gguf", "accelerate", "numpy")


def variant_settings(flags: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """The settings a kernel variant overrides, from its ``flags`` (``--dtype bfloat16`` ...).

    ValueError (one line, for the compiler and the runtime alike) on an unknown flag, a
    missing or bad value, or any env.
    """
    if env:
        raise ValueError(f"env {sorted(env)} cannot be applied: torch reads its environment once per process")
    out: dict[str, Any] = {}
    args = [str(f) for f in flags]
    i = 0
    while i < len(args):
        flag, _, value = args[i].partition("=")
        if flag not in FLAG_KEYS:
            raise ValueError(f"unknown flag {flag!r} (known: {', '.join(FLAG_KEYS)})")
        if not _:
            if i + 1 >= len(args):
                raise ValueError(f"flag {flag} needs a value")
            i += 1
            value = args[i]
        key = FLAG_KEYS[flag]
        if key == "dtype" and value not in DTYPES:
            raise ValueError(f"--dtype {value!r}: one of {', '.join(DTYPES)}")
        if key == "attn_implementation" and value not in ATTN:
            raise ValueError(f"--attn-implementation {value!r}: one of {', '.join(ATTN)}")
        if key == "n_threads":
            if not value.isdigit() or not 1 <= int(value) <= 1024:
                raise ValueError(f"--threads {value!r}: an integer from 1 to 1024")
            value = int(value)  # type: ignore[assignment]
        out[key] = value
        i += 1
    return out


class TransformersEngineConfig(EngineConfig):
    """transformers on torch CPU, in process: one generate call per group (true batching)."""

    kind: Literal["transformers"]
    weights: Literal["gguf", "hf"] = "gguf"
    """gguf: the model's GGUF (``gguf.sha256``), dequantized by transformers to ``dtype``; hf: the HF
    directory in the batchsafe cache whose digest is the model's ``hf.weights_sha256``."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """torch dtype of the weights and activations (a kernel variant's ``--dtype`` overrides it)."""
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    """transformers attention implementation (``--attn-implementation`` overrides it)."""
    n_threads: int | None = Field(None, ge=1, le=1024)
    """torch intra-op threads; default: CPU count - 1 (at least 1), recorded at run time. Like
    llama.cpp, torch's threads slow several-fold when another process takes one of their cores."""
    torch: str | None = "2.13.0+cpu"
    """torch version the run must find (None: not checked); the default is the ``torch`` extra's pin."""
    transformers: str | None = "5.19.0"
    """transformers version the run must find (None: not checked); the default is the extra's pin."""
    chat_template: str | None = None
    """Jinja chat template overriding the tokenizer's."""

    def check_phase(self, ctx: CheckContext, path: tuple[Any, ...], phase: Any) -> None:
        """Kernel variants must be flags this engine applies; no quant or tensor-parallel axis."""
        for j, var in enumerate(phase.axes.kernel or []):
            try:
                variant_settings(var.flags, var.env)
            except ValueError as exc:
                ctx.error(path + ("axes", "kernel", j), "invalid-value",
                          f"kernel variant {var.id!r} on the transformers engine: {exc}",
                          "flags: --dtype float32|bfloat16, --attn-implementation sdpa|eager, --threads N")
        if phase.axes.quants:
            ctx.error(path + ("axes", "quants"), "invalid-value",
                      "the transformers engine has no quant axis in this build (it loads the model as pinned)")
        if getattr(phase.axes, "tensor_parallel", None):
            ctx.error(path + ("axes", "tensor_parallel"), "invalid-value", "the transformers engine runs on one CPU process")

    def check_binding(self, ctx: CheckContext, path: tuple[Any, ...], name: str, model: Any, phase: Any) -> None:
        """weights gguf: a gguf reference pinned by sha256; weights hf: an hf reference with weights_sha256."""
        if self.weights == "gguf":
            if model.gguf is None:
                ctx.error(path, "missing-key", f"model {name!r} has no gguf reference, needed by the transformers "
                          "engine with weights: gguf")
                return
            ctx.pin(path, f"models.{name}.gguf sha256", model.gguf.sha256 is not None)
        elif model.hf is None or model.hf.weights_sha256 is None:
            ctx.error(path, "missing-key", f"model {name!r} has no hf.weights_sha256, needed by the transformers "
                      "engine with weights: hf (it finds the directory in the cache by that digest)")


def _version(dist: str) -> str | None:
    try:
        return importlib_metadata.version(dist)
    except importlib_metadata.PackageNotFoundError:
        return None


def find_hf_dir(weights_sha256: str, cache_dir: str | None = None) -> Path:
    """The model directory under ``<cache>/models/`` whose weights digest is ``weights_sha256``."""
    from batchsafe.runtime import model_store
    from batchsafe.runtime.launch.weights import weights_digest, weights_files

    root = model_store.cache_root(cache_dir) / "models"
    seen = []
    for cand in sorted(p.parent for p in root.glob("*/config.json")):
        seen.append(cand.name)
        if weights_digest(weights_files(cand)) == weights_sha256:
            return cand
    raise EngineError(f"no model directory under {root} has weights digest {weights_sha256} "
                      f"(checked: {', '.join(seen) or 'none'}); `make vllm-cpu` converts SmolLM2's")


@engine("transformers", config=TransformersEngineConfig, display="transformers (torch CPU, embedded)",
        summary="Hugging Face transformers in process: the K prompts of a group in one left-padded generate call",
        modes=("sequential", "synchronized", "prompt_list"), true_batching=True,
        extras=("torch",), requires=("torch", "transformers", "gguf"))
class TransformersEngine(Engine):
    """transformers ``generate`` on torch CPU, in process (see the module docstring)."""

    version = "1"

    def __init__(self, source: str | Path, *, gguf_file: str | None = None, dtype: str = "float32",
                 attn_implementation: str = "sdpa", n_threads: int | None = None, seed: int = 0,
                 chat_template: str | None = None, model_sha256: str | None = None,
                 expect_versions: dict[str, str | None] | None = None) -> None:
        """Load the model and tokenizer from ``source``: an HF directory, or the directory
        holding ``gguf_file``. n_threads: torch threads (default CPU count - 1, at least 1;
        torch's setting is per process). model_sha256: the pinned identity (GGUF sha256 or
        weights digest), recorded. expect_versions: {"torch": ..., "transformers": ...} the
        installed packages must equal (None: not checked). seed: recorded only.
        """
        for dist, want in (expect_versions or {}).items():
            if want is not None and _version(dist) != want:
                raise EngineError(f"the plan pins {dist} {want}, this environment has {_version(dist)}; "
                                  "install batchsafe[torch] (make setup)")
        if dtype not in DTYPES or attn_implementation not in ATTN:
            raise EngineError(f"dtype {dtype!r} / attn_implementation {attn_implementation!r}: "
                              f"dtype one of {DTYPES}, attention one of {ATTN}")
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError as exc:
            raise EngineError(f"engine kind transformers needs torch and transformers: {exc}; "
                              "install with: pip install 'batchsafe[torch]'") from None
        hf_logging.disable_progress_bar()
        # Like llama.cpp, torch's threads slow several-fold when another process takes one of their cores.
        self.n_threads = n_threads or max(1, (os.cpu_count() or 2) - 1)
        torch.set_num_threads(self.n_threads)
        self.source, self.gguf_file = Path(source), gguf_file
        self.dtype, self.seed, self.model_sha256 = dtype, seed, model_sha256
        t0 = time.perf_counter()
        kw: dict[str, Any] = {"local_files_only": True, **({"gguf_file": gguf_file} if gguf_file else {})}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.source), **kw)
            self.model = AutoModelForCausalLM.from_pretrained(
                str(self.source), dtype=getattr(torch, dtype), attn_implementation=attn_implementation, **kw)
        except (OSError, ValueError) as exc:
            raise EngineError(f"transformers could not load {self.source / (gguf_file or '')}: {exc}") from None
        self.load_s = time.perf_counter() - t0
        self.model.eval()
        if chat_template is not None:
            self.tokenizer.chat_template = chat_template
        self.template_source = "override" if chat_template is not None else ("gguf" if gguf_file else "model_dir")
        if not self.tokenizer.chat_template:
            raise EngineError(f"{self.source.name}: the tokenizer has no chat template; pass chat_template")
        self.eos = tb.eos_ids(self.model, self.tokenizer)
        if not self.eos:
            raise EngineError(f"{self.source.name}: neither the model config nor the tokenizer names an eos token")
        self.pad = tb.pad_id(self.tokenizer, self.eos)
        # Replace, not pass: generate() fills unset fields from the model's own generation_config.
        self.model.generation_config = tb.greedy_config(self.pad, self.eos, self.tokenizer.bos_token_id)

    @classmethod
    def preflight(cls, plan: Any, engine: str, groups: list[Any]) -> list[str]:
        """What would stop this engine before anything runs: torch/transformers missing, a kernel
        variant it cannot apply, a GGUF with no source (a missing HF directory is found at load)."""
        from batchsafe.runtime import model_store

        out = []
        for module in ("torch", "transformers", "gguf"):
            try:
                __import__(module)
            except ImportError as exc:
                out.append(f"engine {engine!r} (transformers) needs {module}: {exc}; "
                           "install with: pip install 'batchsafe[torch]' (make setup)")
        cfg = getattr(engine_of(plan, engine), "config", {})
        mine = [g for g in groups if g.engine == engine]
        for g in mine:
            var = kernel_variant(plan, g.condition.kernel, phase=g.phase)
            try:
                variant_settings((var or {}).get("flags") or [], (var or {}).get("env") or {})
            except ValueError as exc:
                msg = f"engine {engine!r} (transformers) cannot apply kernel variant {g.condition.kernel!r}: {exc}"
                out += [msg] if msg not in out else []
        if cfg.get("weights", "gguf") == "gguf":
            for name in sorted({g.model for g in mine}):
                m = model_of(plan, name)
                if m is None or not m.gguf_sha256:
                    out.append(f"model {name!r} has no pinned gguf sha256; the transformers engine (weights: gguf) needs one")
                elif not (model_store.model_path(m.gguf_sha256.split(":")[-1]).exists()
                          or plan.locators.model_sources.get(name)):
                    out.append(f"model {name!r} has no source to fetch it from and is not in the model cache")
        return out

    @classmethod
    def from_plan(cls, plan: Any, binding: Any, *, run_dir: Any = None, cache_dir: str | None = None,
                  **kwargs: Any) -> TransformersEngine:
        """The engine of ``binding``: the plan's engine config with the binding's kernel variant on top;
        the GGUF (fetched and checked by sha256) or the HF directory of its model.
        ``run_dir`` is unused (nothing is launched)."""
        from batchsafe.runtime.bindings import DefaultEngineFactory

        eng = plan_engine(plan, binding)
        model = model_of(plan, binding.model)
        if model is None:
            raise EngineError(f"the plan defines no model {binding.model!r}")
        cfg = dict(eng.config)
        settings = {k: cfg.get(k) for k in ("dtype", "attn_implementation", "n_threads")}
        if binding.kernel:
            var = kernel_variant(plan, binding.kernel, engine=binding.engine)
            if var is None:
                raise EngineError(f"kernel variant {binding.kernel!r} is not in any phase of engine {binding.engine!r}")
            try:
                settings.update(variant_settings(var.get("flags") or [], var.get("env") or {}))
            except ValueError as exc:
                raise EngineError(f"kernel variant {binding.kernel!r} of engine {binding.engine!r}: {exc}") from None
        common = dict(dtype=settings["dtype"] or "float32", attn_implementation=settings["attn_implementation"] or "sdpa",
                      n_threads=settings["n_threads"], seed=plan.seed, chat_template=cfg.get("chat_template"),
                      expect_versions={"torch": cfg.get("torch"), "transformers": cfg.get("transformers")}, **kwargs)
        if binding.quant:
            raise EngineError(f"engine {binding.engine!r} (transformers) has no quant variants ({binding.quant})")
        if cfg.get("weights", "gguf") == "hf":
            if not model.hf_weights_sha256:
                raise EngineError(f"model {binding.model!r} has no hf.weights_sha256; weights: hf needs it")
            return cls(find_hf_dir(model.hf_weights_sha256, cache_dir), model_sha256=model.hf_weights_sha256, **common)
        if not model.gguf_sha256:
            raise EngineError(f"model {binding.model!r} has no gguf sha256; weights: gguf needs it")
        path, sha = DefaultEngineFactory(plan, cache_dir).model_file(binding)
        return cls(Path(path).parent, gguf_file=Path(path).name, model_sha256=f"sha256:{sha}", **common)

    # --- one group ------------------------------------------------------------

    def render(self, req: GenRequest) -> str:
        """The prompt text of a request (the chat template, with the assistant header)."""
        try:
            return self.tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in req.messages],
                                                      tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # jinja errors and the template's raise_exception
            raise EngineError(f"{req.key}: chat template refused the messages: {exc}") from None

    def tokenize(self, text: str) -> list[int]:
        """Tokens of a rendered prompt, no special tokens added."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _run(self, reqs: list[GenRequest]) -> list[GenResult]:
        for r in reqs:
            if r.temperature != 0.0:
                raise EngineError(f"{r.key}: only greedy decoding (temperature 0) is implemented")
            if r.max_tokens < 1:
                raise EngineError(f"{r.key}: max_tokens {r.max_tokens} < 1")
        t0 = time.perf_counter()
        prompts = [self.tokenize(self.render(r)) for r in reqs]
        if not all(prompts):
            raise EngineError("a prompt rendered to no tokens")
        rows, facts = tb.run_batch(self.model, self.tokenizer, prompts, [r.max_tokens for r in reqs],
                                   [r.stop for r in reqs], self.eos, self.pad)
        wall = time.perf_counter() - t0
        return [GenResult(key=r.key, text=row.text, finish_reason=row.finish, prompt_tokens=len(row.prompt),
                          completion_tokens=len(row.tokens), volatile={"group_wall_s": wall, **facts})
                for r, row in zip(reqs, rows)]

    def run_group(self, requests: list[GenRequest], mode: str) -> list[GenResult]:
        """sequential: each request alone (K=1); synchronized/prompt_list: one generate call of K rows."""
        if mode == "sequential":
            return [res for r in requests for res in self._run([r])]
        if mode in ("synchronized", "prompt_list"):
            return self._run(list(requests)) if requests else []
        raise EngineError(f"transformers engine does not implement dispatch mode {mode!r}")

    def describe(self) -> dict[str, Any]:
        """Versions, torch build and threads, dtype, attention, tokenizer and decoding facts."""
        import torch

        tmpl = self.tokenizer.chat_template or ""
        return {
            "engine": self.name, "engine_version": self.version,
            "versions": {d: _version(d) for d in PACKAGES},
            "torch": {"num_threads": torch.get_num_threads(), "n_threads_set": self.n_threads, "num_interop_threads": torch.get_num_interop_threads(),
                      "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                      "mkldnn": torch.backends.mkldnn.is_available(), "debug": torch.version.debug,
                      "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()},
            "dtype": self.dtype, "param_dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            # transformers keeps a GGUF quantizer object and may warn of packed kernels; what computes is here.
            "weight_modules": sorted({type(m).__name__ for m in self.model.modules() if "weight" in m._parameters}),
            "quantizer": type(getattr(self.model, "hf_quantizer", None)).__name__,
            "attn_implementation": self.model.config._attn_implementation,
            "model": {"sha256": self.model_sha256, "source": str(self.source), "gguf_file": self.gguf_file,
                      "class": type(self.model).__name__, "model_type": self.model.config.model_type,
                      "parameters": sum(p.numel() for p in self.model.parameters()), "load_s": round(self.load_s, 3)},
            "tokenizer": {"class": type(self.tokenizer).__name__, "eos_ids": self.eos, "pad_id": self.pad,
                          "padding": "left, attention mask 0 on padding"},
            "chat_template": {"source": self.template_source, "sha256": hashlib.sha256(tmpl.encode()).hexdigest()},
            "generation_config": self.model.generation_config.to_diff_dict(),
            "decoding": "greedy: one generate call per group (K=1 sequential), argmax with ties to the lowest id; "
                        "ends at an eos id (not counted) or max_tokens; stop strings cut the text after decoding",
            "seed": self.seed,
        }

    def close(self) -> None:
        """Drop the model and tokenizer (memory returns when nothing else holds them)."""
        self.model = self.tokenizer = None  # type: ignore[assignment]
