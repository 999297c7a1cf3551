"""Lookups by name in a plan's header lists, shared by the engine adapters, sharding and verify.

The plan keeps engines, models and each phase's kernel variants as short lists (a
handful of entries); these are the one place their names are matched, so that every
reader finds the same entry, and says "none" the same way (None).
"""

from __future__ import annotations

from typing import Any


def engine_of(plan: Any, name: str) -> Any:
    """The plan's ``ResolvedEngine`` called ``name``, or None."""
    return next((e for e in plan.engines if e.name == name), None)


def model_of(plan: Any, name: str) -> Any:
    """The plan's ``ResolvedModel`` called ``name``, or None."""
    return next((m for m in plan.models if m.name == name), None)


def kernel_variant(plan: Any, kernel: str | None, *, engine: str | None = None,
                   phase: str | None = None) -> dict[str, Any] | None:
    """The kernel variant ``kernel`` as declared by a phase of ``engine`` (or by phase ``phase``).

    None when ``kernel`` is None or no such phase declares it; the first phase that
    declares it wins.
    """
    if kernel is None:
        return None
    return next((v for p in plan.phases if (engine is None or p.engine == engine) and (phase is None or p.id == phase)
                 for v in p.kernel_variants if v.get("id") == kernel), None)
