"""The spec side of a composition phase (``phase.composition``); scheduling is in ``compiler.composition``.

Kept apart from the scheduler so that ``compiler.spec`` can import these models without
importing the plan and scheduling modules (which import the spec).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .spec_base import Name, Strict


class BackgroundPool(Strict):
    """Prompts that keep the server loaded; never scored."""

    tasks: list[Name] = Field(min_length=1)
    """Tasks whose selected prompts are the background pool (targets are taken out of it)."""


class CompositionConfig(Strict):
    """Load levels and the seeded arrival schedule of a composition phase."""

    load_levels: list[Annotated[int, Field(ge=0, le=1024)]] = Field(min_length=2)
    """Background requests kept in flight while the targets arrive; must include 0 (the baseline)."""
    schedule: Literal["fixed", "poisson"] = "fixed"
    """fixed: target i arrives at start_s + i / rate_per_s; poisson: exponential gaps with mean 1 / rate_per_s."""
    rate_per_s: float = Field(gt=0.0, le=1000.0)
    """Target arrival rate (targets per second)."""
    start_s: float = Field(1.0, ge=0.0, le=3600.0)
    """Delay before the first arrival, so the background is in flight when the first target comes."""
    seed: int | None = Field(None, ge=0, lt=2**63)
    """Schedule seed; defaults to the spec's global seed."""
    background: BackgroundPool
    """The background pool."""
