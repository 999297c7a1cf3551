"""What the registry returns: strict, immutable pydantic models the CLI prints as tables or JSON.

None of these is stored: the SQLite file holds the data, these are views of it. Each still
carries ``schema_version`` first so that ``registry query --json`` output can evolve the
same way every other batchsafe artifact does.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, use_attribute_docstrings=True)


class AddResult(_View):
    """Outcome of ``Registry.add``: what one bundle contributed (or had already contributed)."""

    schema_version: Literal[1] = 1
    """Version of this record format."""
    bundle: str
    """The bundle id (``sha256:<hex>``)."""
    added: bool
    """False when the bundle was already registered: nothing was changed."""
    kind: str
    """Bundle kind from its manifest (``run``, ``analysis``...)."""
    flip_rows: int = Field(ge=0)
    """Rows of its ``analysis/flips.jsonl`` (flipped or not)."""
    flipped: int = Field(ge=0)
    """Of those, rows whose label changed."""
    prompts: int = Field(ge=0)
    """Distinct prompts among its flip rows."""
    new_prompts: int = Field(ge=0)
    """Prompts the registry had not seen before this add (0 when ``added`` is False)."""


class BundleInfo(_View):
    """One registered bundle."""

    schema_version: Literal[1] = 1
    """Version of this record format."""
    order: int = Field(ge=1)
    """Position in the order bundles were added (1 = first)."""
    bundle: str
    """The bundle id."""
    kind: str
    """Bundle kind from its manifest."""
    parent: str | None
    """Parent bundle id (an analysis child names the run it re-analysed), or None."""
    experiment_id: str | None
    """``experiment.id`` of the bundle's plan (None without a plan)."""
    experiment_title: str | None
    """``experiment.title`` of the bundle's plan."""
    plan_hash: str | None
    """``plan_hash`` the bundle's plan declares."""
    samples: int | None
    """Scored samples of the run (from the plan, else scores.jsonl), None when unknown."""
    flip_rows: int = Field(ge=0)
    """Rows of the bundle's flip registry."""
    flipped: int = Field(ge=0)
    """Of those, flipped rows."""


class PromptInfo(_View):
    """A prompt's metadata, from the first registered bundle whose plan describes it."""

    schema_version: Literal[1] = 1
    """Version of this record format."""
    prompt: str
    """Prompt id (``p_`` + 16 hex, content-derived, so equal across plans)."""
    task: str
    """Task name."""
    domain: str
    """``safety`` or ``capability``."""
    dataset: str | None
    """Dataset name (None when no registered bundle carried a plan)."""
    records: list[str]
    """Source record ids (two for jailbreak prompts: template and goal)."""
    preview: str | None
    """The last user message, whitespace collapsed and cut to a short preview."""


class PromptFlipSummary(_View):
    """One prompt's flips across the registered bundles (one row of ``registry query``)."""

    schema_version: Literal[1] = 1
    """Version of this record format."""
    prompt: str
    """Prompt id."""
    task: str
    """Task name."""
    domain: str
    """``safety`` or ``capability``."""
    bundles_flipped: int = Field(ge=0)
    """Distinct bundles with at least one flipped row of this prompt (matching the filters)."""
    bundles_observed: int = Field(ge=0)
    """Distinct bundles with any row of this prompt matching the filters (direction aside)."""
    flipped_rows: int = Field(ge=0)
    """Flipped rows counted in ``bundles_flipped``."""
    observed_rows: int = Field(ge=0)
    """Rows counted in ``bundles_observed``."""
    models: list[str]
    """Models of the flipped rows, sorted."""
    conditions: list[str]
    """Condition labels (``Condition.label()``, e.g. ``bs=8``) of the flipped rows, sorted."""
    directions: list[str]
    """Directions of the flipped rows, sorted."""
    bundles: list[str]
    """Ids of the bundles counted in ``bundles_flipped``, in the order they were added."""


class HistoryRow(_View):
    """One flip-registry row of a prompt in one bundle."""

    schema_version: Literal[1] = 1
    """Version of this record format."""
    bundle: str
    """Bundle id."""
    experiment_id: str | None
    """The bundle's experiment id."""
    sample: str
    """Sample id."""
    baseline: str
    """Its baseline sample id."""
    phase: str
    """Phase id."""
    phase_kind: str
    """Phase kind."""
    model: str
    """Model name."""
    condition: str
    """Condition label, e.g. ``bs=8``."""
    baseline_label: str
    """The baseline sample's label."""
    label: str
    """This sample's label."""
    baseline_score: float
    """The baseline sample's score."""
    score: float
    """This sample's score."""
    flipped: bool
    """The label changed."""
    direction: str
    """Direction of the flip (``none`` when not flipped)."""
    identical: bool
    """Output bytes identical to the baseline's."""


class PromptHistory(_View):
    """Everything the registry knows about one prompt (``registry show``)."""

    schema_version: Literal[1] = 1
    """Version of this record format."""
    prompt: PromptInfo
    """The prompt's metadata."""
    bundles_observed: int = Field(ge=0)
    """Distinct bundles with a row of this prompt."""
    bundles_flipped: int = Field(ge=0)
    """Distinct bundles with a flipped row of this prompt."""
    rows: list[HistoryRow]
    """Every row, by bundle (in add order), phase, model, condition and sample."""
