"""The flip registry: every non-baseline sample against its baseline sample (flips.jsonl).

A row is *flipped* when the sample's label differs from its baseline's label (TR138: the
classification changed). Its *direction* follows the score, which every scorer orients
so that higher is better (``analysis.records``):

============================  ==============================  ==========================
family                        score went down                 score went up
============================  ==============================  ==========================
refusal (refusal scorer, or   refusal_to_compliance           compliance_to_refusal
refusal/compliance labels)
other safety scorers          safety_weakened                 safety_strengthened
capability                    capability_lost                 capability_gained
============================  ==============================  ==========================

``none`` when not flipped, and also for a *label-only* flip whose score is unchanged
(mcq "incorrect" -> "unparsed" both score 0; bias "anti_biased" -> "other" both 0.5):
such a flip moved neither towards nor away from safety, which is how TR138 7.3 counts
only "directionally classified" flips and how ``analysis.stats`` treats ``none``.

Byte-identical outputs scored by one scorer must get one label; a row that says
otherwise means the records were mixed up (different scorer versions, edited files), so
the registry refuses it instead of counting an impossible flip.

The JSONL helpers here read and write scores.jsonl and flips.jsonl: canonical JSON, one
record per line, each with its ``schema_version``; readers refuse newer versions.
"""

from __future__ import annotations

from batchsafe.core.errors import BatchsafeError

from batchsafe.core.atomic import atomic_write

from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from batchsafe.core.artifact import check_version, read_json_object
from batchsafe.core.canonical import canonical_bytes
from batchsafe.core.fastmodel import construct

from .records import FLIP_SCHEMA_VERSION, SCORED_SCHEMA_VERSION, Direction, FlipRow, ScoredSample

REFUSAL_LABELS = frozenset({"refusal", "compliance"})
_DIRECTIONS: dict[str, tuple[Direction, Direction]] = {
    # family: (score decreased, score increased)
    "refusal": ("refusal_to_compliance", "compliance_to_refusal"),
    "safety": ("safety_weakened", "safety_strengthened"),
    "capability": ("capability_lost", "capability_gained"),
}

M = TypeVar("M", bound=BaseModel)


class RecordError(BatchsafeError, ValueError):
    """A scores/flips file or record set that cannot be used: malformed, newer, or inconsistent."""


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


_ITEM = ("prompt", "model", "scorer", "task", "domain")  # what a sample shares with its baseline
_READ = ("sample", "baseline", "output_sha256", "label", "score", "phase", "phase_kind", "condition")


def _fields(scored: Sequence[ScoredSample]) -> list[tuple]:
    """(sample, baseline, (prompt, model, scorer, task, domain), output_sha256, label, score,
    phase, phase_kind, condition) per record.

    Read in C (map over itemgetter) from each pydantic record's ``__dict__``, where the
    fields live: per-attribute lookups, which search the class first, were most of the
    registry's own time at 10^5 records. Objects without such a ``__dict__`` are read by
    attribute.
    """
    item, read = itemgetter(*_ITEM), itemgetter(*_READ)
    try:
        dicts = list(map(attrgetter("__dict__"), scored))
        return [(s, b, it, sh, lab, sc, ph, pk, c) for (s, b, sh, lab, sc, ph, pk, c), it
                in zip(map(read, dicts), map(item, dicts))]
    except (AttributeError, KeyError):
        aitem, aread = attrgetter(*_ITEM), attrgetter(*_READ)
        return [(s, b, it, sh, lab, sc, ph, pk, c) for (s, b, sh, lab, sc, ph, pk, c), it
                in zip(map(aread, scored), map(aitem, scored))]


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
    recs = _fields(scored)
    by_id: dict[str, tuple] = {}
    for t in recs:
        if t[0] in by_id:
            raise RecordError(f"sample {t[0]} appears twice in the scored records")
        by_id[t[0]] = t
    sha = outputs_by_sample_sha or {}
    families: dict[tuple[str, str, str, str], str] = {}  # direction family by (scorer, domain, labels)
    rows: list[FlipRow] = []
    for t in recs:
        sample, baseline, item, sha_r, label, score, phase, phase_kind, condition = t
        if baseline is None:
            continue
        bt = by_id.get(baseline)
        if bt is None:
            raise RecordError(f"baseline {baseline} of sample {sample} is not among the scored records")
        b_sample, b_baseline, b_item, sha_b, b_label, b_score = bt[:6]
        if b_baseline is not None:
            raise RecordError(f"baseline {b_sample} of sample {sample} is itself compared with {b_baseline}")
        if b_item != item:
            for field, rv, bv in zip(_ITEM, item, b_item):
                if bv != rv:
                    raise RecordError(f"sample {sample} and its baseline {b_sample} differ in {field}: "
                                      f"{rv!r} vs {bv!r}")
        if sha:
            identical = sha.get(sample, sha_r) == sha.get(b_sample, sha_b)
        else:
            identical = sha_r == sha_b
        if identical and (label != b_label or score != b_score):
            raise RecordError(f"sample {sample} is byte-identical to its baseline {b_sample} but scored "
                              f"{score} {label!r} vs {b_score} {b_label!r}: records are inconsistent")
        flipped = label != b_label
        if flipped:
            fkey = (item[2], item[4], label, b_label)
            fam = families.get(fkey)
            if fam is None:
                fam = families[fkey] = family(fkey[0], fkey[1], fkey[2:])
            direction = direction_of(fam, b_score, score, True)
        else:
            direction = "none"
        # Every field comes from validated ScoredSample records or is computed here, so the
        # row is built without re-validation (a third of the registry's time at 31k samples).
        rows.append(construct(FlipRow,
            schema_version=FLIP_SCHEMA_VERSION, sample=sample, baseline=b_sample, phase=phase,
            phase_kind=phase_kind, model=item[1], task=item[3], domain=item[4], condition=condition,
            prompt=item[0], identical=identical, baseline_score=b_score, score=score, baseline_label=b_label,
            label=label, flipped=flipped, direction=direction))
    return rows


# --- JSONL ----------------------------------------------------------------------------


def dump_jsonl(rows: Iterable[BaseModel]) -> bytes:
    """Canonical JSON lines (sorted keys, no spaces, ``schema_version`` on every row)."""
    return b"".join(canonical_bytes(r.model_dump(mode="json")) for r in rows)


def write_jsonl(path: str | Path, rows: Iterable[BaseModel]) -> Path:
    """Write ``dump_jsonl(rows)`` to ``path`` (atomically: a temp file then rename)."""
    path = Path(path)
    return atomic_write(path, dump_jsonl(rows))


def _load(source: str | Path | bytes, model: type[M], current: int, what: str) -> list[M]:
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    where = "<bytes>" if isinstance(source, bytes) else str(source)
    out: list[M] = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:  # fast path: parse and validate in one step (pydantic-core); errors take the slow path
            out.append(model.model_validate_json(line))
            continue
        except (ValidationError, ValueError):
            pass
        data = read_json_object(line, what=f"{what} record", where=f"{where}:{n}", error=RecordError)
        check_version(data, current, what=what, where=f"{where}:{n}", error=RecordError)
        try:
            out.append(model.model_validate(data))
        except ValidationError as exc:
            first = " ".join(str(exc).splitlines()[:3])
            raise RecordError(f"{where}:{n}: invalid {what} record: {first}") from None
    return out


def read_scored(source: str | Path | bytes) -> list[ScoredSample]:
    """ScoredSample records of a scores.jsonl file (path or bytes); refuses newer schema versions."""
    return _load(source, ScoredSample, SCORED_SCHEMA_VERSION, "scored sample")


def read_flips(source: str | Path | bytes) -> list[FlipRow]:
    """FlipRow records of a flips.jsonl file (path or bytes); refuses newer schema versions."""
    return _load(source, FlipRow, FLIP_SCHEMA_VERSION, "flip row")


def direction_counts(rows: Iterable[FlipRow]) -> dict[str, int]:
    """Flipped rows per direction (for quick summaries; the statistics have the full breakdown)."""
    out: dict[str, Any] = {}
    for r in rows:
        if r.flipped:
            out[r.direction] = out.get(r.direction, 0) + 1
    return dict(sorted(out.items()))
