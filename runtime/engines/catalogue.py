"""The engine catalogue: every engine kind, declared once, in the engine's own module.

An engine is one module in this package (inspect_ai's ``@modelapi`` providers are the
model): the adapter class carries an ``@engine(kind, config=..., ...)`` declaration with
its dispatch modes, capabilities, default endpoint, health probe, pip extra and
importable requirements, and the module defines the engine's spec block (``config``, an
:class:`~batchsafe.runtime.engines.config.EngineConfig` whose methods hold the
compile-time checks only this kind needs). Everything else reads the declaration:

* the spec schema: the engine union is exactly the declared ``config`` blocks (a kind
  with no adapter is refused), ``Phase.dispatch`` / ``Group.mode`` enumerate
  :data:`DISPATCH_MODES`, server endpoints default to ``default_endpoint``;
* the compiler's checks: a phase's dispatch must be one of its kind's ``modes``, then the
  block's own ``check_engine`` / ``check_phase`` / ``check_binding``;
* the runtime: adapters get ``name`` and ``capabilities`` from the declaration,
  ``engine_class(kind)`` returns the class, preflight probes ``default_endpoint +
  health_path`` and names the extra to install;
* ``batchsafe engines``: the listing.

Discovery is lazy: the first read of :data:`ENGINES` imports the modules of this package
that carry a declaration (their source has a line starting ``@engine(``). Engine modules
therefore keep heavy dependencies (HTTP clients, llama_cpp, torch) inside functions, so
reading the catalogue (the compiler does) stays cheap.

Adding an engine: write ``runtime/engines/<kind>.py`` with its spec block, its
``@engine`` declaration on an ``Engine`` subclass with ``from_plan``, and its tests. No
other module changes (``tests/runtime/test_catalogue.py`` checks the declarations).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

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
    """Returns the adapter class."""
    config: type
    """The engine's spec block (an ``EngineConfig`` subclass whose ``kind`` is ``Literal[kind]``)."""
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


class _Catalogue(dict):  # type: ignore[type-arg]
    """Kind -> declaration; the first read imports the declaring modules (see the module docstring)."""

    _loaded = False

    def _load(self) -> None:
        if not _Catalogue._loaded:
            _Catalogue._loaded = True  # set first: a module being imported may read the catalogue
            _discover()

    def __getitem__(self, key: str) -> EngineInfo:
        self._load()
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._load()
        return super().__contains__(key)

    def __iter__(self):  # type: ignore[no-untyped-def]
        self._load()
        return super().__iter__()

    def __len__(self) -> int:
        self._load()
        return super().__len__()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self._load()
        return super().get(key, default)

    def items(self):  # type: ignore[no-untyped-def]
        self._load()
        return super().items()

    def values(self):  # type: ignore[no-untyped-def]
        self._load()
        return super().values()

    def keys(self):  # type: ignore[no-untyped-def]
        self._load()
        return super().keys()


ENGINES: dict[str, EngineInfo] = _Catalogue()
"""Engine kind -> declaration, in discovery order (module name order)."""

_MARKER = "\n@engine("


def _discover() -> None:
    """Import every module of this package whose source declares an engine (sorted by name)."""
    here = Path(__file__).parent
    for path in sorted(here.glob("*.py")):
        if path.stem.startswith("_") or path.stem == "catalogue":
            continue
        if _MARKER in path.read_text(encoding="utf-8"):
            importlib.import_module(f"{__package__}.{path.stem}")


def engine(kind: str, *, config: type, display: str, summary: str, modes: tuple[str, ...],
           true_batching: bool = False, concurrency: bool = False, quant_variants: bool = False,
           tensor_parallel: bool = False, default_endpoint: str | None = None, health_path: str | None = None,
           extras: tuple[str, ...] = (), requires: tuple[str, ...] = ()) -> Callable[[type], type]:
    """Class decorator: declare the decorated adapter class as engine ``kind``.

    ``config`` is the engine's spec block; its ``kind`` field must be ``Literal[kind]``.
    The class gets ``name = kind`` and the declared ``capabilities``.
    """
    unknown = set(modes) - set(DISPATCH_MODES)
    if unknown or "sequential" not in modes:
        raise ValueError(f"engine {kind!r}: modes must include sequential and come from {DISPATCH_MODES}")
    if dict.__contains__(ENGINES, kind):
        raise RuntimeError(f"engine kind {kind!r} declared twice")
    field = getattr(config, "model_fields", {}).get("kind")
    if field is None or get_args(field.annotation) != (kind,):
        raise ValueError(f"engine {kind!r}: its config class must have kind: Literal[{kind!r}]")

    def declare(cls: type) -> type:
        info = EngineInfo(kind, display, summary, Capabilities(true_batching, concurrency, quant_variants,
                                                               tuple(modes), tensor_parallel),
                          lambda: cls, config, default_endpoint, health_path, tuple(extras), tuple(requires),
                          f"{cls.__module__}:{cls.__qualname__}")
        cls.name = kind  # type: ignore[attr-defined]
        cls.capabilities = info.capabilities  # type: ignore[attr-defined]
        dict.__setitem__(ENGINES, kind, info)
        return cls

    return declare


def engine_kinds() -> tuple[str, ...]:
    """Every declared engine kind, in catalogue order."""
    return tuple(ENGINES)


def describe() -> list[dict[str, Any]]:
    """The catalogue as plain rows (for ``batchsafe engines --json``)."""
    return [{"kind": e.kind, "display": e.display, "summary": e.summary, "modes": list(e.modes),
             "true_batching": e.capabilities.true_batching, "concurrency": e.capabilities.concurrency,
             "quant_variants": e.capabilities.quant_variants, "default_endpoint": e.default_endpoint,
             "extras": list(e.extras), "requires": list(e.requires)} for e in ENGINES.values()]
