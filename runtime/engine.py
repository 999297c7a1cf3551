"""The one engine interface the executor drives.

An engine receives a dispatch group (the requests that the plan says run together)
and a dispatch mode, and returns one result per request, in order. Engines are
registered by name; the plan names the engine, never a class path.
"""

from __future__ import annotations

from batchsafe.core.errors import EXIT_FAIL, BatchsafeError

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

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


@dataclass(frozen=True)
class GenRequest:
    """One sequence of a dispatch group."""

    key: str
    """Sample id, or a filler id for non-scored co-batch members."""
    messages: tuple[tuple[str, str], ...]
    """(role, content) chat messages, rendered by the compiler."""
    max_tokens: int
    stop: tuple[str, ...] = ()
    temperature: float = 0.0


@dataclass
class GenResult:
    """What one sequence produced. Timing lives in ``volatile`` and is never hashed."""

    key: str
    text: str
    finish_reason: str
    """'stop' (EOS or stop string), 'length' (max_tokens reached)."""
    prompt_tokens: int
    completion_tokens: int
    volatile: dict[str, Any] = field(default_factory=dict)


class EngineError(BatchsafeError):
    """An engine failure. ``transient`` ones are retried with bounded backoff."""

    exit_code = EXIT_FAIL

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class Engine(ABC):
    """Base class of every engine adapter."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    capabilities: ClassVar[Capabilities] = Capabilities()

    @abstractmethod
    def run_group(self, requests: list[GenRequest], mode: str) -> list[GenResult]:
        """Run one dispatch group together and return results in request order."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Build/system facts recorded in the run environment (versions, compile flags, devices)."""

    def warmup(self, requests: list[GenRequest]) -> None:
        """Run warmup requests whose results are discarded (not samples)."""
        for req in requests:
            self.run_group([req], "sequential")

    def close(self) -> None:
        """Release model memory, servers and threads."""


_REGISTRY: dict[str, type[Engine]] = {}


def register(cls: type[Engine]) -> type[Engine]:
    """Class decorator: make an engine available under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def engine_class(name: str) -> type[Engine]:
    """Look up a registered engine by name, with a clear error listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "(none)"
        raise EngineError(f"unknown engine {name!r}; registered: {known}") from None


def registered_engines() -> list[str]:
    """Names of all registered engines."""
    return sorted(_REGISTRY)
