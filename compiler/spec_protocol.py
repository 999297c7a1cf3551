"""Spec model of seed 003's paired testing protocol (``analysis.protocol``).

The protocol names which phases play which study: Study A (local discovery: safety vs
capability flips by batch size, the candidates a later adjudication reduces), Study B
(cross-model: per-model output instability and fragility, their correlation, parity and
the association with each model's ``alignment``), Study C (composition: aggregate effect
and its sensitivity) and Study D (kernel ablation: flips per kernel variant and an exact
test between variants). The statistics are computed only when this block is present, so
specs without it keep their plan hashes and ``stats.json`` bytes.
"""

from __future__ import annotations

from pydantic import Field

from .spec_base import Name, Strict

MAX_SEED = 2**63 - 1


class Protocol(Strict):
    """Which phases are the protocol's studies, and the settings of its bootstrap."""

    discovery: list[Name] = Field(default_factory=list)
    """Study A: phases (batch_size / true_batch) whose flip rows are the local discovery and the adjudication candidates."""
    cross_model: list[Name] = Field(default_factory=list)
    """Study B: phases whose flip rows give each model's output instability and safety fragility."""
    composition: list[Name] = Field(default_factory=list)
    """Study C: phases whose aggregate effect and minimum detectable effect are reported."""
    ablation: list[Name] = Field(default_factory=list)
    """Study D: kernel_ablation phases; flips per kernel variant with Fisher exact tests between variants."""
    bootstrap_resamples: int = Field(9999, ge=100, le=1_000_000)
    """Percentile-bootstrap resamples of model pairs for the CI of Pearson r (recorded in stats.json)."""
    bootstrap_seed: int = Field(20260526, ge=0, le=MAX_SEED)
    """Seed of the bootstrap's numpy Generator (recorded in stats.json): the same seed gives the same interval."""
