"""Analysis artifacts: scored sample records and flip-registry rows.

A scored sample record is everything the statistics need about one sample and nothing
engine-specific, so results can be rechecked from ``scores.jsonl`` alone (its JSON
Schema is ``schema/scored_sample.schema.json``). A flip row compares one non-baseline
sample with its baseline sample.

Score orientation: for every scorer a higher score is the better outcome for that task
(refusal of a harmful request = 1, truthful = higher, less biased = higher, correct = 1).
So on safety tasks a lower score than the baseline weakens safety.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from batchsafe.compiler.plan import Condition as Cond  # one condition model for plan and analysis
from batchsafe.core import layout
from batchsafe.core.artifact import artifact

SCORED_SCHEMA_VERSION = 1
"""Newest ``ScoredSample`` version (one line of ``analysis/scores.jsonl``)."""
FLIP_SCHEMA_VERSION = 1
"""Newest ``FlipRow`` version (one row of the flip registry, ``analysis/flips.jsonl``)."""

Direction = Literal[
    "none",
    "refusal_to_compliance",
    "compliance_to_refusal",
    "safety_weakened",
    "safety_strengthened",
    "capability_lost",
    "capability_gained",
]
"""Direction of a flip. Refusal tasks use the refusal/compliance pair; other safety tasks the
weakened/strengthened pair; capability tasks lost/gained."""

UNSAFE_DIRECTIONS = frozenset({"refusal_to_compliance", "safety_weakened"})


@artifact("scored sample", version=SCORED_SCHEMA_VERSION, file=layout.SCORES, lines=True)
class ScoredSample(BaseModel):
    """One sample with its score: one line of scores.jsonl."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    schema_version: Literal[1] = SCORED_SCHEMA_VERSION
    """Version of this record format."""
    sample: str
    """Sample id from the plan."""
    phase: str
    """Phase id."""
    phase_kind: str
    """Phase kind (batch_size, cobatch, quant_concurrency, true_batch, kernel_ablation, repeat_floor)."""
    model: str
    task: str
    domain: Literal["safety", "capability"]
    condition: Cond
    prompt: str
    """Prompt id."""
    baseline: str | None
    """Baseline sample id, None for baseline samples."""
    scorer: str
    """Scorer as name@version."""
    score: float = Field(ge=0.0, le=1.0)
    """Task score in [0, 1], higher is better (safer, more truthful, less biased, correct)."""
    label: str
    """Discrete label (refusal/compliance, correct/incorrect, biased/anti_biased/unknown/other, truthful/untruthful/neutral)."""
    output_sha256: str
    """sha256 of the output text: byte identity with the baseline without shipping the text."""
    latency_s: float | None = None
    """Wall time of the sample's group in seconds (volatile; for latency analyses only)."""


@artifact("flip row", version=FLIP_SCHEMA_VERSION, file=layout.FLIPS, lines=True)
class FlipRow(BaseModel):
    """One row of the flip registry: a non-baseline sample against its baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    schema_version: Literal[1] = FLIP_SCHEMA_VERSION
    sample: str
    baseline: str
    phase: str
    phase_kind: str
    model: str
    task: str
    domain: Literal["safety", "capability"]
    condition: Cond
    prompt: str
    identical: bool
    """Output bytes identical to the baseline's."""
    baseline_score: float
    score: float
    baseline_label: str
    label: str
    flipped: bool
    """The label changed."""
    direction: Direction
    """Which way it changed (none when not flipped)."""
