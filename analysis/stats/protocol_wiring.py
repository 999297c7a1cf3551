"""Where the protocol block joins the analysis: only when the plan's settings ask for it.

``analyze_scored`` (and so ``bundle make``, ``analyze --samples`` and verify's statistics
stage, which all call it) passes its settings and the plan's model alignments here; a
plan without ``analysis.protocol`` gets its stats back untouched, byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._runtime import lean
from .protocol import KEY, protocol_block


def alignment_of(plan: Any) -> dict[str, str]:
    """Model name -> alignment type of a Plan's models (models without one are left out)."""
    return {m.name: m.alignment for m in plan.models if getattr(m, "alignment", None)}


def with_protocol(stats: dict[str, Any], flips: Sequence[Any], settings: Mapping[str, Any] | None,
                  alignment: Mapping[str, str | None] | None) -> dict[str, Any]:
    """``stats`` plus the ``protocol`` block when ``settings["protocol"]`` is set; else ``stats`` itself."""
    protocol = (settings or {}).get("protocol")
    if not protocol:
        return stats
    if KEY in stats:  # a phase named "protocol" would be overwritten silently
        raise ValueError(f"a phase id {KEY!r} clashes with the protocol statistics key; rename the phase")
    alpha = float((settings or {}).get("alpha", 0.05))
    ci_level = float((settings or {}).get("ci_level", 0.95))
    with lean():
        block = protocol_block(flips, protocol, alignment=dict(alignment or {}), stats=stats, alpha=alpha,
                               ci_level=ci_level)
    return {**stats, KEY: block}
