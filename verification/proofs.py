"""scores.jsonl and flips.jsonl proven by recomputation instead of parsed.

A bundle's scores follow from its plan and outputs, and its flips from its scores. When
the rows recomputed with the plan's scorer versions serialise to exactly the recorded
bytes, the file is valid, canonical and complete by construction: the schemas stage
need not parse it (250 MB of JSON lines at 300k samples, and the records' gigabyte), and
the rescoring and statistics stages reuse the rows. When the bytes differ, or the plan
or outputs are unusable, nothing is concluded: the file is parsed and checked as it
always was, and the later stages name the difference with the same messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from batchsafe.analysis.flips import RecordError, dump_jsonl, flip_registry
from batchsafe.analysis.records import FlipRow, ScoredSample
from batchsafe.analysis.scoring import ScoringError, score_run, timings_from_bytes
from batchsafe.core import layout
from batchsafe.core.jsonl import CHUNK, lines_match

from .columns import all_finite, rows_json

# ``ctx`` below is a ``checks.Context``; not imported, because checks imports this module.

def same_jsonl(rows: list[Any], raw: bytes) -> bool:
    """Whether ``raw`` is exactly ``dump_jsonl(rows)``, the canonical JSON lines of ``rows``.

    The rows are dumped as plain dicts (``columns.rows_json``, not one ``model_dump`` per
    row) in one orjson call per chunk (``core.jsonl.canonical_lines``), which is the
    canonical form when no float is NaN or infinite (checked per float field; orjson writes
    them as null) and no float token is spelled unlike Python's; each chunk's lines are
    compared in place with the next bytes of ``raw``. A chunk not settled that way sends the
    whole comparison through the canonical dump itself. No parse of ``raw`` is needed:
    equal bytes are the proof.
    """
    if not rows:
        return dump_jsonl(rows) == raw
    model = type(rows[0])

    def chunks() -> Iterator[list[dict[str, Any]] | None]:
        for i in range(0, len(rows), CHUNK):  # the dumps of all 300k rows at once held 0.7 GB
            dumped = rows_json(rows[i:i + CHUNK])
            yield dumped if all_finite(dumped, model) else None

    same = lines_match(raw, chunks())
    return dump_jsonl(rows) == raw if same is None else same


def rescore(ctx: Any, overrides: dict[str, str] | None = None) -> list[ScoredSample]:
    """The plan's samples scored again from the bundle's outputs (``overrides``: scorer name -> version).

    Outputs of samples the plan does not list are left out (coverage names them); the
    latencies come from the timings log when it passed integrity. Raises ScoringError.
    """
    assert ctx.plan is not None and ctx.outputs is not None
    timings = timings_from_bytes(ctx.src.read(layout.TIMINGS)) if ctx.usable(layout.TIMINGS) else {}
    planned = {s.id for s in ctx.plan.samples}
    outputs = {r["sample"]: r for r in ctx.outputs if r["sample"] in planned}
    return score_run(ctx.plan, outputs, timings=timings, scorer_override=overrides)


def prove_scores(ctx: Any) -> list[ScoredSample] | None:
    """The rows of scores.jsonl, recomputed with the plan's scorer versions, if they are its exact bytes."""
    if ctx.plan is None or ctx.outputs is None or not ctx.usable(layout.SCORES):
        return None
    return _if_exact(ctx, layout.SCORES, lambda: rescore(ctx), ScoringError)


def prove_flips(ctx: Any, scored: list[ScoredSample]) -> list[FlipRow] | None:
    """The rows of flips.jsonl, recomputed from proven ``scored`` rows, if they are its exact bytes."""
    if not ctx.usable(layout.FLIPS):
        return None
    return _if_exact(ctx, layout.FLIPS, lambda: flip_registry(scored), RecordError)


def _if_exact(ctx: Any, name: str, compute: Callable[[], list[Any]], error: type[Exception]) -> list[Any] | None:
    """``compute()``'s rows if their canonical lines are exactly ``name``'s bytes; None otherwise.

    ``error`` (what ``compute`` raises for inconsistent inputs) is None here: the stage
    that recomputes the file later reports it.
    """
    try:
        rows = compute()
    except error:
        return None
    return rows if same_jsonl(rows, ctx.src.read(name)) else None
