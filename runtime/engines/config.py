"""Building blocks of an engine's spec block (``engines.<name>`` in a spec).

Each engine module defines its block as a subclass of :class:`EngineConfig` and names
it in its ``@engine(..., config=...)`` declaration; the spec's engine union is built from
those declarations. The compile-time checks that only one kind needs (what pins a vLLM
stack, which model reference an engine serves) are methods of the block, so they live
with the engine too. This module imports only the floor and pydantic: the compiler
reads it without loading any adapter's dependencies.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import Field

from batchsafe.core.strict import Strict


class CheckContext(Protocol):
    """What the compiler's checker offers an engine block's checks (``compiler.checks.Checker``)."""

    spec: Any
    resolved_at_run: list[str]

    def error(self, path: tuple[Any, ...], code: str, message: str, hint: str = "") -> None:
        """Record a positioned diagnostic."""

    def pin(self, path: tuple[Any, ...], what: str, pinned: bool) -> None:
        """Record an unpinned reference (an error unless compiling with --allow-unpinned)."""


class EngineConfig(Strict):
    """Base of every engine's spec block; the checks default to none."""

    def check_engine(self, ctx: CheckContext, path: tuple[Any, ...], name: str) -> None:
        """Checks of block ``engines.<name>`` itself (e.g. what pins the stack), once per phase
        that uses it (``path`` points at the phase's ``engine`` field)."""

    def check_phase(self, ctx: CheckContext, path: tuple[Any, ...], phase: Any) -> None:
        """Checks of a phase run on this engine (``path`` points at the phase)."""

    def check_binding(self, ctx: CheckContext, path: tuple[Any, ...], name: str, model: Any, phase: Any) -> None:
        """Checks that model ``name`` (``model``, the spec's Model) can run on this engine."""


class Launch(Strict):
    """How the runtime obtains the server: attach to one (external), start a local
    command line (process) or a container (container). Only ``kind`` is identity; the
    rest says where things are on this machine (locators, left out of the plan hash)."""

    kind: Literal["external", "process", "container"] = "external"
    """external: a server someone else started, at ``endpoint``; process: the runtime starts
    ``python -m vllm.entrypoints.openai.api_server`` with the plan's flags and env, checks it
    and stops it; container: the plan's image by digest."""
    python: str | None = None
    """Interpreter of the engine's own venv (process launch; ``{cache}`` expands to the
    batchsafe cache root, ``~`` to home). A locator."""
    model_dir: str | None = None
    """Local HF model directory the server loads (``{cache}`` and ``~`` expand). A locator."""
    port: int | None = Field(None, ge=1, le=65535)
    """Loopback port; default: a free one. A locator."""
    ready_timeout_s: float = Field(600.0, gt=0)
    """Longest wait for the server to answer /health after start. A locator."""
