"""analysis.flips.flip_registry as it was before the issue-16 speed work (commit 5e338c7)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from batchsafe.analysis.flips import _DIRECTIONS, REFUSAL_LABELS, RecordError
from batchsafe.analysis.records import FLIP_SCHEMA_VERSION, Direction, FlipRow, ScoredSample
from batchsafe.core.fastmodel import construct


def family(scorer: str, domain: str, labels: Iterable[str] = ()) -> str:
    """"refusal", "safety" or "capability": which pair of direction names applies.

    Refusal-style rows are those of the refusal scorer, or of any scorer whose labels are
    refusal/compliance (an LLM judge's refusal verdicts read the same way).
    """
    if domain == "capability":
        return "capability"
    labels = set(labels)
    if scorer.split("@", 1)[0] == "refusal" or (labels and labels <= REFUSAL_LABELS):
        return "refusal"
    return "safety"


def direction_of(fam: str, baseline_score: float, score: float, flipped: bool) -> Direction:
    """Direction of one comparison (see the module docstring)."""
    if not flipped or score == baseline_score:
        return "none"
    down, up = _DIRECTIONS[fam]
    return down if score < baseline_score else up


def flip_registry(scored: Sequence[ScoredSample],
                  outputs_by_sample_sha: Mapping[str, str] | None = None) -> list[FlipRow]:
    """One FlipRow per non-baseline scored sample, in the order of ``scored``.

    Baselines are the records' ``baseline`` ids (copied from the plan by the scoring
    pass). ``outputs_by_sample_sha``: sample id -> output sha256, overriding the records'
    own ``output_sha256`` (for callers that hold fresher digests); identity is equality
    of these digests.

    Raises RecordError when a baseline is missing or is not comparable (another prompt,
    model or scorer, or itself not a baseline), when a sample id repeats, or when
    byte-identical outputs carry different labels or scores.
    """
    by_id: dict[str, ScoredSample] = {}
    for r in scored:
        if r.sample in by_id:
            raise RecordError(f"sample {r.sample} appears twice in the scored records")
        by_id[r.sample] = r
    sha = outputs_by_sample_sha or {}
    rows: list[FlipRow] = []
    for r in scored:
        if r.baseline is None:
            continue
        b = by_id.get(r.baseline)
        if b is None:
            raise RecordError(f"baseline {r.baseline} of sample {r.sample} is not among the scored records")
        if b.baseline is not None:
            raise RecordError(f"baseline {b.sample} of sample {r.sample} is itself compared with {b.baseline}")
        if (b.prompt, b.model, b.scorer, b.task, b.domain) != (r.prompt, r.model, r.scorer, r.task, r.domain):
            for field in ("prompt", "model", "scorer", "task", "domain"):
                if getattr(b, field) != getattr(r, field):
                    raise RecordError(f"sample {r.sample} and its baseline {b.sample} differ in {field}: "
                                      f"{getattr(r, field)!r} vs {getattr(b, field)!r}")
        identical = sha.get(r.sample, r.output_sha256) == sha.get(b.sample, b.output_sha256)
        if identical and (r.label != b.label or r.score != b.score):
            raise RecordError(f"sample {r.sample} is byte-identical to its baseline {b.sample} but scored "
                              f"{r.score} {r.label!r} vs {b.score} {b.label!r}: records are inconsistent")
        flipped = r.label != b.label
        fam = family(r.scorer, r.domain, (r.label, b.label))
        # Every field comes from validated ScoredSample records or is computed here, so the
        # row is built without re-validation (a third of the registry's time at 31k samples).
        rows.append(construct(FlipRow,
            schema_version=FLIP_SCHEMA_VERSION, sample=r.sample, baseline=b.sample, phase=r.phase,
            phase_kind=r.phase_kind, model=r.model, task=r.task, domain=r.domain, condition=r.condition,
            prompt=r.prompt, identical=identical, baseline_score=b.score, score=r.score, baseline_label=b.label,
            label=r.label, flipped=flipped, direction=direction_of(fam, b.score, r.score, flipped)))
    return rows
