"""The one engine interface the executor drives.

An engine receives a dispatch group (the requests that the plan says run together)
and a dispatch mode, and returns one result per request, in order. Engines are
declared by kind in ``runtime/engines/catalogue.py`` and loaded on first use; the plan
names the engine kind, never a class path.
"""

from __future__ import annotations

from batchsafe.compiler.plan_lookup import engine_of
from batchsafe.core.errors import EXIT_FAIL, BatchsafeError
from batchsafe.runtime.engines.catalogue import DISPATCH_MODES, ENGINES, Capabilities  # noqa: F401  (re-exported)

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

# The dispatch modes and capability flags are declared with the engine kinds, in the
# catalogue (one place); they are re-exported here for adapters and the executor.


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
    """The engine class of kind ``name``, imported through its catalogue factory on first use.

    Classes registered directly (tests, plug-ins) are found too; anything else is an
    EngineError listing the known kinds.
    """
    if name not in _REGISTRY and name in ENGINES:
        _REGISTRY[name] = ENGINES[name].factory()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(registered_engines()) or "(none)"
        raise EngineError(f"unknown engine {name!r}; registered: {known}") from None


def registered_engines() -> list[str]:
    """Names of all engines: the catalogue's kinds and any class registered directly."""
    return sorted(set(_REGISTRY) | set(ENGINES))


def plan_engine(plan: Any, binding: Any) -> Any:
    """The plan's engine entry (``ResolvedEngine``) of ``binding``; EngineError when the plan defines none."""
    eng = engine_of(plan, binding.engine)
    if eng is None:
        raise EngineError(f"the plan defines no engine {binding.engine!r}")
    return eng
