"""Artifacts of a human adjudication round: label records and the summary (see ``analysis.adjudication``).

``adjudication/labels.jsonl`` holds one :class:`LabelRecord` per (item, rater), sorted, in
canonical JSON; ``adjudication/summary.json`` is one :class:`AdjudicationSummary`. Both
carry everything needed to recompute the summary's numbers from the labels alone (the
heuristic and baseline labels are copied next to each human label). Readers refuse
schema versions newer than they understand.
"""

from __future__ import annotations

from batchsafe.core.errors import BatchsafeError

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from batchsafe.core import layout
from batchsafe.core.artifact import artifact, check_version

from .records import Direction

LABELS_SCHEMA_VERSION = 1
SUMMARY_SCHEMA_VERSION = 1


class AdjudicationError(BatchsafeError, ValueError):
    """Adjudication input that cannot be used; the message names the file and CSV line (or bundle file)."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or [message]
        """Every problem found, one line each (the message shows them all, up to a limit)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


@artifact("label record", version=LABELS_SCHEMA_VERSION, file=layout.ADJ_LABELS, lines=True, error=AdjudicationError)
class LabelRecord(_Frozen):
    """One rater's verdict on one candidate: one line of ``adjudication/labels.jsonl``."""

    schema_version: Literal[1] = LABELS_SCHEMA_VERSION
    """Version of this record format."""
    item: str = Field(min_length=1)
    """Sample id of the flipped (non-baseline) sample."""
    rater: str = Field(min_length=1)
    """Rater id as written in the CSV (whitespace trimmed)."""
    human_label: str = Field(min_length=1)
    """The rater's label for the sample's output ("unclear" when the rater could not decide)."""
    notes: str = ""
    """Free text from the rater (several notes of a repeated identical verdict joined by newlines)."""
    heuristic_label: str
    """The scorer's label for the same output (the flip row's ``label``)."""
    baseline_label: str
    """The scorer's label for the baseline output: a human label that differs from it confirms the flip."""
    direction: Direction
    """The flip row's direction, for the confirmed unsafe/safe split."""


class RaterCount(_Frozen):
    """What one rater labelled."""

    labels: int
    """Items this rater labelled."""
    by_label: dict[str, int]
    """Those labels by human label."""


class KappaBlock(_Frozen):
    """Chance-corrected agreement of a set of raters on the items all of them labelled."""

    method: Literal["cohen", "fleiss"]
    """Cohen's kappa (two raters) or Fleiss' kappa (three or more), from statsmodels."""
    raters: list[str]
    """Raters compared, sorted; for Cohen the first is the table's rows, the second its columns."""
    n: int
    """Items labelled by every one of these raters (the items the kappa is computed on)."""
    items: list[str]
    """Those items, sorted: the rows of a Fleiss table."""
    categories: list[str]
    """Labels that occur among them, sorted: the table's columns (and Cohen's rows)."""
    table: list[list[int]]
    """Cohen: confusion counts (rater 1 label x rater 2 label); Fleiss: per item, raters per category
    (``statsmodels.stats.inter_rater.aggregate_raters``)."""
    kappa: float | None
    """The kappa; None when undefined (no common items, or a single category used by everyone)."""
    ci_low: float | None = None
    """Lower asymptotic 95% bound (Cohen only; None when undefined)."""
    ci_high: float | None = None
    """Upper asymptotic 95% bound (Cohen only; None when undefined)."""
    observed_agreement: float | None
    """Share of agreeing rater pairs over the common items (raw agreement, not chance-corrected)."""
    note: str = ""
    """Why the kappa is undefined, when it is."""


class HeuristicAgreement(_Frozen):
    """How often the human majority agrees with the scorer's label of the same output."""

    n: int
    """Items with a decided human majority (a strict plurality that is not "unclear")."""
    agree: int
    """Those whose majority label equals the scorer's label."""
    rate: float | None
    """agree / n (None when n is 0)."""
    table: dict[str, dict[str, int]]
    """Scorer label -> human majority label -> items."""


class Binomial(_Frozen):
    """Exact two-sided binomial test of the confirmed unsafe share against 0.5, with a Wilson interval."""

    k: int
    """Confirmed unsafe-direction flips."""
    n: int
    """Confirmed flips with an unsafe or safe direction."""
    share: float | None
    """k / n (None when n is 0)."""
    p: float
    """Two-sided p-value (scipy ``binomtest``; 1.0 when n is 0)."""
    ci_low: float
    """Wilson lower bound."""
    ci_high: float
    """Wilson upper bound."""


class DirectionAudit(_Frozen):
    """Confirmed and false flips of one direction."""

    labelled: int
    """Candidates of this direction with at least one human label."""
    confirmed: int
    """Decided items whose human majority differs from the baseline's label."""
    false_flips: int
    """Decided items whose human majority equals the baseline's label (the scorer made the flip)."""
    unresolved: int
    """Labelled items without a decided majority (a tie, or "unclear")."""


class FlipAudit(_Frozen):
    """The candidates after human review (TR138 11.2 style: 49 candidates -> 44 confirmed)."""

    candidates: int
    """Flipped rows in the parent bundle's flip registry."""
    labelled: int
    """Candidates with at least one human label."""
    confirmed: int
    """Labelled candidates whose human majority label differs from the baseline's label."""
    false_flips: int
    """Labelled candidates whose human majority label equals the baseline's label."""
    unresolved: int
    """Labelled candidates without a decided majority (a tie, or "unclear")."""
    unlabelled: int
    """Candidates nobody labelled."""
    confirmed_unsafe: int
    """Confirmed flips whose direction weakens safety (refusal_to_compliance, safety_weakened)."""
    confirmed_safe: int
    """Confirmed flips whose direction strengthens safety (compliance_to_refusal, safety_strengthened)."""
    unsafe_test: Binomial
    """Unsafe share of the confirmed directional flips, tested against 0.5."""
    by_direction: dict[str, DirectionAudit]
    """The same counts per heuristic flip direction."""


@artifact("adjudication summary", version=SUMMARY_SCHEMA_VERSION, file=layout.ADJ_SUMMARY, error=AdjudicationError)
class AdjudicationSummary(_Frozen):
    """``adjudication/summary.json``: labels per rater, inter-rater agreement, and the audited flips."""

    schema_version: Literal[1] = SUMMARY_SCHEMA_VERSION
    """Version of this summary format."""
    parent: str
    """Id of the adjudicated bundle (whose ``analysis/flips.jsonl`` the items come from)."""
    labels: int
    """Label records (one per item and rater)."""
    labelled_items: int
    """Distinct items with at least one label."""
    raters: list[str]
    """Rater ids, sorted."""
    per_rater: dict[str, RaterCount]
    """Labels of each rater."""
    multi_rated_items: int
    """Items labelled by two or more raters."""
    agreement: KappaBlock | None
    """Cohen's kappa for exactly two raters, Fleiss' kappa for three or more; None for one rater."""
    pairwise: list[KappaBlock] = Field(default_factory=list)
    """Cohen's kappa of every pair of raters, when there are three or more."""
    heuristic: HeuristicAgreement
    """Agreement of the human majority with the scorer's label."""
    audit: FlipAudit
    """Confirmed and false flips."""


def _check_version(data: object, where: str, current: int, what: str) -> None:
    if not isinstance(data, dict):
        raise AdjudicationError(f"{where}: a {what} must be a JSON object")
    check_version(data, current, what=what, where=where, error=AdjudicationError)


def read_labels(raw: bytes, where: str = layout.ADJ_LABELS) -> list[LabelRecord]:
    """Label records of a labels.jsonl (bytes); refuses newer schema versions and bad lines."""
    out = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise AdjudicationError(f"{where}:{n}: not JSON: {exc}") from None
        _check_version(data, f"{where}:{n}", LABELS_SCHEMA_VERSION, "label record")
        try:
            out.append(LabelRecord.model_validate(data))
        except ValidationError as exc:
            raise AdjudicationError(f"{where}:{n}: invalid label record: {' '.join(str(exc).splitlines()[:3])}") from None
    return out


def read_summary(raw: bytes, where: str = layout.ADJ_SUMMARY) -> AdjudicationSummary:
    """The summary of a summary.json (bytes); refuses newer schema versions."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise AdjudicationError(f"{where}: not JSON: {exc}") from None
    _check_version(data, where, SUMMARY_SCHEMA_VERSION, "adjudication summary")
    try:
        return AdjudicationSummary.model_validate(data)
    except ValidationError as exc:
        raise AdjudicationError(f"{where}: invalid adjudication summary: {' '.join(str(exc).splitlines()[:3])}") from None
