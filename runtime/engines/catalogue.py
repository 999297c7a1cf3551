"""The engine catalogue: every engine kind, declared once, with a lazy factory.

Each engine kind is one ``engine(...)`` declaration here (inspect_ai's ``@modelapi``
providers are the model): its dispatch modes, capabilities, default endpoint, health
probe, pip extra and importable requirements, and the adapter class as
``"module:Class"``, imported only when the kind is used. Everything else reads this declaration:

* the spec schema: ``Phase.dispatch`` / ``Group.mode`` enumerate :data:`DISPATCH_MODES`,
  the engine config union has exactly the declared kinds (a test pins it), and server
  endpoints default to ``default_endpoint``;
* the compiler's checks: a phase's dispatch must be one of its engine kind's ``modes``;
* the runtime: each adapter class takes ``capabilities`` from here, ``engine_class(kind)``
  loads it through the factory, and preflight probes ``default_endpoint + health_path``
  and names the extra to install;
* ``batchsafe engines``: the listing.

This module imports nothing heavy (no adapter, no HTTP client), so the compiler can read
it. Adding an engine: write ``runtime/engines/<kind>.py`` (an ``Engine`` subclass with
``from_plan``), add its declaration below and its spec config class in
``compiler/spec_refs.py``; the tests of the new module plus ``tests/runtime/test_catalogue.py``
cover the rest.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["DISPATCH_MODES", "ENGINES", "Capabilities", "EngineInfo", "engine", "engine_kinds"]

DISPATCH_MODES = ("sequential", "synchronized", "prompt_list", "concurrent")
"""How the requests of one group reach the engine.

sequential: one at a time (the K=1 baseline path).
synchronized: K separate requests released together (vLLM-style in-flight batch).
prompt_list: one call carrying all K prompts (true batching).
concurrent: K requests from K concurrent clients (load, not necessarily batching).
"""


@dataclass(frozen=True)
class Capabilities:
    """What an engine can honestly do; the executor refuses a plan that asks for more."""

    true_batching: bool = False
    """Decodes the K sequences of a group in one forward pass (distinct sequence ids)."""
    concurrency: bool = False
    """Accepts K concurrent requests (e.g. a server on loopback)."""
    quant_variants: bool = False
    """Can build or select quantization variants (Q8_0, Q4_K_M, Q2_K, ...)."""
    modes: tuple[str, ...] = ("sequential",)
    """Dispatch modes from DISPATCH_MODES it implements."""
    tensor_parallel: bool = False
    """Starts its server at a given tensor-parallel size, one server per size (a phase's
    ``axes.tensor_parallel``; ``compiler.tensor_parallel`` refuses the axis otherwise)."""


@dataclass(frozen=True)
class EngineInfo:
    """One engine kind as declared."""

    kind: str
    """The ``kind`` a spec names (``engines.<name>.kind``)."""
    display: str
    """Human name for messages and listings."""
    summary: str
    """One line for ``batchsafe engines``."""
    capabilities: Capabilities
    """Dispatch modes and what they really do."""
    factory: Callable[[], type]
    """Imports and returns the adapter class (lazily: importing the catalogue loads no adapter)."""
    default_endpoint: str | None = None
    """Base URL of a server engine when the spec names none."""
    health_path: str | None = None
    """Path answered by a healthy server (preflight's 2 s probe)."""
    extras: tuple[str, ...] = ()
    """``pip install 'batchsafe[<extra>]'`` extras the adapter needs."""
    requires: tuple[str, ...] = ()
    """Importable modules the adapter needs at run time (checked by preflight)."""
    target: str = ""
    """``"package.module:Class"`` of the adapter."""

    @property
    def modes(self) -> tuple[str, ...]:
        """Dispatch modes this kind implements."""
        return self.capabilities.modes

    @property
    def embedded(self) -> bool:
        """Runs inside the calling process (no server to share): a kind without a default endpoint."""
        return self.default_endpoint is None


ENGINES: dict[str, EngineInfo] = {}
"""Engine kind -> declaration, in declaration order."""


def engine(kind: str, target: str, *, display: str, summary: str, modes: tuple[str, ...],
           true_batching: bool = False, concurrency: bool = False, quant_variants: bool = False,
           tensor_parallel: bool = False, default_endpoint: str | None = None, health_path: str | None = None, extras: tuple[str, ...] = (),
           requires: tuple[str, ...] = ()) -> EngineInfo:
    """Declare engine ``kind``, implemented by ``target`` (``"package.module:Class"``, imported on first use)."""
    unknown = set(modes) - set(DISPATCH_MODES)
    if unknown or "sequential" not in modes:
        raise ValueError(f"engine {kind!r}: modes must include sequential and come from {DISPATCH_MODES}")
    if kind in ENGINES:
        raise RuntimeError(f"engine kind {kind!r} declared twice")
    module, _, cls = target.partition(":")

    def factory() -> type:
        return getattr(importlib.import_module(module), cls)

    info = EngineInfo(kind, display, summary, Capabilities(true_batching, concurrency, quant_variants, tuple(modes),
                                                           tensor_parallel),
                      factory, default_endpoint, health_path, tuple(extras), tuple(requires), target)
    ENGINES[kind] = info
    return info


def engine_kinds() -> tuple[str, ...]:
    """Every declared engine kind, in declaration order."""
    return tuple(ENGINES)


def describe() -> list[dict[str, Any]]:
    """The catalogue as plain rows (for ``batchsafe engines --json``)."""
    return [{"kind": e.kind, "display": e.display, "summary": e.summary, "modes": list(e.modes),
             "true_batching": e.capabilities.true_batching, "concurrency": e.capabilities.concurrency,
             "quant_variants": e.capabilities.quant_variants, "default_endpoint": e.default_endpoint,
             "extras": list(e.extras), "requires": list(e.requires)} for e in ENGINES.values()]


# --- the declarations ----------------------------------------------------------------
# Adapters are named as "module:Class" (an entry-point spelling), imported only when the
# kind is used: the catalogue stays light, and no import edge runs back from here to the
# adapters, which import ``runtime.engine`` (and through it this module).

engine("llamacpp", "batchsafe.runtime.engines.llamacpp:LlamaCppEngine", display="llama.cpp (embedded)",
       summary="llama-cpp-python in process: K sequences in one llama_batch; concurrent via a loopback llama_cpp.server",
       modes=("sequential", "synchronized", "prompt_list", "concurrent"),
       true_batching=True, concurrency=True, quant_variants=True, extras=("embedded",), requires=("llama_cpp",))
engine("vllm", "batchsafe.runtime.engines.vllm:VLLMEngine", display="vLLM",
       summary="vLLM's OpenAI-compatible server, external or launched by batchsafe",
       modes=("sequential", "synchronized", "prompt_list", "concurrent"),
       true_batching=True, concurrency=True, quant_variants=False, tensor_parallel=True,
       default_endpoint="http://127.0.0.1:8000", health_path="/v1/models")
engine("ollama", "batchsafe.runtime.engines.ollama:OllamaEngine", display="Ollama",
       summary="an Ollama server; tag digests checked or recorded",
       modes=("sequential", "concurrent"), concurrency=True, quant_variants=True,
       default_endpoint="http://127.0.0.1:11434", health_path="/api/version")
