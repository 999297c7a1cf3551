"""The ``batchsafe diff`` artifact: what differs between two bundles (pydantic, JSON-serialisable).

Rates are fractions in [0, 1] (the text report prints percentages); a rate over nothing
is None, never NaN. Paths of statistics and environment keys are written with
``verification.diff_paths.format_path``, the syntax ``--fail-on`` reads.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from batchsafe.compiler.plandiff import PlanDiff
from batchsafe.core.artifact import artifact

DIFF_SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class BundleSide(_Model):
    """One of the two bundles compared."""

    bundle_id: str
    """Bundle id (recomputed from its manifest)."""
    kind: str
    """Manifest kind (run, analysis, rescore...)."""
    parent: str | None = None
    """Parent bundle id, for derived bundles."""
    where: str
    """Where it was read from."""
    plan_hash: str | None = None
    """plan_hash of its plan.lock.json (None without a plan)."""
    samples: int
    """Scored samples (lines of analysis/scores.jsonl)."""
    flip_rows: int
    """Flip-registry rows (lines of analysis/flips.jsonl)."""


class FileChange(_Model):
    """A bundle file whose bytes differ, or that only one bundle has."""

    name: str
    status: Literal["changed", "only_a", "only_b"]


class ScorerChange(_Model):
    """A task scored by different scorer versions in A and B."""

    task: str
    a: list[str]
    """Scorer refs (name@version) of the task's samples in A."""
    b: list[str]


class ValueChange(_Model):
    """One flattened key whose value differs, or that only one side has."""

    path: str
    """Written path (diff_paths syntax)."""
    status: Literal["changed", "only_a", "only_b"]
    a: Any = None
    b: Any = None


class EnvironmentDiff(_Model):
    """environment.json of A against B, flattened to paths (package lists by package name)."""

    present: tuple[bool, bool] = (False, False)
    """Whether A / B have an environment.json."""
    changed: int = 0
    """Keys with different values."""
    only_a: int = 0
    only_b: int = 0
    changes: list[ValueChange] = Field(default_factory=list)
    """The differing keys, sorted by path, at most ``verification.diff.MAX_ENV_CHANGES``."""
    truncated: bool = False
    """Whether ``changes`` was cut (the counts are always complete)."""


class SetupDiff(_Model):
    """What differs in how the two bundles were produced."""

    same_plan: bool
    """Both have a plan and the plan_hash is equal."""
    plan: PlanDiff | None = None
    """compiler.plandiff of the two plans (settings, inputs, prompts, phases, engines with image
    digests and flags, models); None when the plan files are byte-identical or one is missing."""
    locators_changed: bool = False
    """Model sources or endpoints differ (not part of plan_hash)."""
    spec_files: list[FileChange] = Field(default_factory=list)
    """spec/* texts that differ between the bundles."""
    scorers: list[ScorerChange] = Field(default_factory=list)
    """Tasks whose scorer versions differ (from analysis/scores.jsonl)."""
    environment: EnvironmentDiff = EnvironmentDiff()
    files: list[FileChange] = Field(default_factory=list)
    """Every bundle file whose digest differs or that one side lacks (outputs, analysis, logs too)."""
    changes: int = 0
    """Number of setup differences: plan changes, locators, spec files, scorer tasks, environment keys."""


class OutputCell(_Model):
    """Output byte identity of one condition (phase + condition label), samples matched by key."""

    phase: str
    condition: str
    """``compiler.plan.Condition.label()``."""
    matched: int
    """Samples present in both bundles."""
    identical: int
    """Matched samples whose output sha256 is equal."""
    identical_rate: float | None
    labels_changed: int
    """Matched samples scored with a different label."""
    only_a: int
    only_b: int


class OutputsDiff(_Model):
    """Output byte identity over all samples, and per condition."""

    matched: int = 0
    identical: int = 0
    identical_rate: float | None = None
    labels_changed: int = 0
    only_a: int = 0
    """Samples (by key: phase, model, prompt, condition) only in A."""
    only_b: int = 0
    by_condition: list[OutputCell] = Field(default_factory=list)
    """In A's order of first appearance, then B's."""


class AgreementCell(_Model):
    """Flip agreement of a group of matched flip rows (None fields: aggregated over them)."""

    phase: str | None = None
    model: str | None = None
    condition: str | None = None
    matched: int
    """Flip rows present in both registries."""
    agree: int
    """Rows whose flipped status and direction are the same in A and B."""
    both_flipped: int
    """Flipped in both, same direction."""
    direction_disagreements: int
    """Flipped in both, different directions."""
    only_a: int
    """Flipped in A only."""
    only_b: int
    """Flipped in B only."""
    rate: float | None
    """agree / matched."""


class FlipDisagreement(_Model):
    """One matched flip row on which A and B disagree."""

    kind: Literal["only_a", "only_b", "direction"]
    phase: str
    model: str
    condition: str
    prompt: str
    task: str
    sample_a: str
    sample_b: str
    a: str
    """A's verdict, e.g. ``refusal -> compliance (refusal_to_compliance)`` or ``refusal (no flip)``."""
    b: str


class FlipsDiff(_Model):
    """The two flip registries matched by key (phase, model, prompt, condition)."""

    matched: int = 0
    rows_only_a: int = 0
    """Flip rows only A's registry has (not counted in agreement)."""
    rows_only_b: int = 0
    both_flipped: int = 0
    direction_disagreements: int = 0
    only_a: int = 0
    only_b: int = 0
    neither: int = 0
    """Matched rows flipped in neither."""
    agreement: float | None = None
    """Share of matched rows whose flipped status and direction agree."""
    by_model: list[AgreementCell] = Field(default_factory=list)
    by_model_condition: list[AgreementCell] = Field(default_factory=list)
    """Per model and condition label (batch size etc.), over phases."""
    by_phase: list[AgreementCell] = Field(default_factory=list)
    by_cell: list[AgreementCell] = Field(default_factory=list)
    """Per phase, model and condition."""
    disagreements: list[FlipDisagreement] = Field(default_factory=list)
    """Disagreeing rows in A's order (then B's), at most ``verification.diff.MAX_DISAGREEMENTS``."""
    disagreements_total: int = 0
    truncated: bool = False


class StatChange(_Model):
    """A leaf of analysis/stats.json that differs (numbers, booleans, null)."""

    path: str
    a: float | int | bool | None
    b: float | int | bool | None
    delta: float | None
    """b - a when both are numbers, else None."""


class StatsDiff(_Model):
    """analysis/stats.json of A against B."""

    leaves: tuple[int, int] = (0, 0)
    """Numeric (or null) leaves in A / B."""
    changed: list[StatChange] = Field(default_factory=list)
    """Leaves on both sides that differ by more than 1e-12, sorted by path."""
    only_a: list[str] = Field(default_factory=list)
    only_b: list[str] = Field(default_factory=list)


class Gate(_Model):
    """A ``--fail-on`` condition: the gate FAILS when ``value <op> threshold`` holds."""

    metric: str
    """The metric path as written canonically (diff_paths syntax)."""
    path: tuple[str, ...]
    op: Literal[">", ">=", "<", "<=", "==", "!="]
    threshold: float


class GateResult(_Model):
    """One evaluated gate."""

    metric: str
    op: str
    threshold: float
    value: float | None
    """The metric's value; None when undefined (e.g. an agreement over no rows), which fails."""
    failed: bool
    message: str


@artifact("bundle diff", version=DIFF_SCHEMA_VERSION)  # printed by diff --json, not a bundle file
class BundleDiff(_Model):
    """``batchsafe diff A B``: setup, output identity, flip registries, statistics (and gates)."""

    schema_version: Literal[1] = DIFF_SCHEMA_VERSION
    """Version of this format; readers refuse newer versions."""
    a: BundleSide
    b: BundleSide
    same_bundle: bool
    """A and B have the same bundle id."""
    setup: SetupDiff
    outputs: OutputsDiff
    flips: FlipsDiff
    stats: StatsDiff
    gates: list[GateResult] = Field(default_factory=list)
    """Filled by ``with_gates`` for the CLI's --json output."""

    # Every numeric stats leaf of each side (not only the differing ones), for a.stats.* /
    # b.stats.* gates; kept out of the JSON, which lists only differences.
    _stats_a: dict[tuple[str, ...], Any] = PrivateAttr(default_factory=dict)
    _stats_b: dict[tuple[str, ...], Any] = PrivateAttr(default_factory=dict)
