"""Stage 8 of verify: the files a derived bundle adds on top of its analysis.

* **Rescore audit** (``analysis/rescore_audit.jsonl`` + ``.json``, kind ``rescore``): each
  audit row's new label and score are the ones ``scores.jsonl`` now records (rechecked by
  the rescoring stage); the summary's counts follow from the rows and the registry; when
  the parent bundle is at hand (same store), the rows are exactly the samples whose label
  or score differs from the parent's scores, with the parent's old values.
* **Adjudication** (``adjudication/labels.jsonl``, ``summary.json``, ``report.md``, and ``protocol.json``
  when the plan sets ``analysis.protocol``: seed 003's corrected rates, recomputed too): the
  summary and report are recomputed from the labels and the flip registry (kappa included).

Derived files that are present but cannot be checked are a FAIL, not a silent pass.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson

from batchsafe.analysis.flips import RecordError, read_scored
from batchsafe.core import layout

from .checks import FLIPS, SCORES, Context, validated
from .recheck import numeric_diffs
from .report import Stage

AUDIT_ROWS, AUDIT_SUMMARY = layout.RESCORE_AUDIT, layout.RESCORE_AUDIT_SUMMARY
LABELS, ADJ_SUMMARY, ADJ_REPORT, ADJ_PROTOCOL = layout.ADJ_LABELS, layout.ADJ_SUMMARY, layout.ADJ_REPORT, layout.ADJ_PROTOCOL


def _parent_scores(ctx: Context, st: Stage) -> dict[str, Any] | None:
    """The parent's recorded scores by sample, when the parent is in the same store and intact."""
    store, parent = ctx.src._store, ctx.src.manifest.parent
    if store is None or parent is None or not layout.manifest_path(store.root, parent).is_file():
        return None
    if store.verify(parent):
        st.fail(f"parent bundle {parent} is damaged: the audit cannot be rechecked against it")
        return None
    try:
        return {r.sample: r for r in read_scored(store.read(parent, SCORES))}
    except (RecordError, LookupError) as exc:
        st.fail(f"parent bundle {parent}: {SCORES}: {exc}")
        return None


def check_rescore_audit(ctx: Context, st: Stage) -> str:
    """Recheck a rescore child's audit; return what was checked."""
    from batchsafe.analysis.rescore import read_rescore_audit, read_rescore_rows

    if not (ctx.usable(AUDIT_ROWS) and ctx.usable(AUDIT_SUMMARY)):
        st.fail(f"{AUDIT_ROWS} and {AUDIT_SUMMARY} must both be present and intact")
        return "rescore audit"
    try:
        rows = read_rescore_rows(ctx.src.read(AUDIT_ROWS))
        audit = read_rescore_audit(ctx.src.read(AUDIT_SUMMARY))
    except (RecordError, ValueError) as exc:
        st.fail(f"rescore audit unreadable: {exc}")
        return "rescore audit"
    scored = {r.sample: r for r in ctx.scored or []}
    flips = validated(ctx, FLIPS, st) or []
    for r in rows:
        now = scored.get(r.sample)
        if now is None:
            st.fail(f"{AUDIT_ROWS}: sample {r.sample} is not in {SCORES}")
        elif (now.label, now.score, now.scorer) != (r.new_label, r.new_score, r.new_scorer):
            st.fail(f"{AUDIT_ROWS}: sample {r.sample}: new {r.new_label}/{r.new_score} ({r.new_scorer}), but {SCORES} "
                    f"records {now.label}/{now.score} ({now.scorer})")
    claims = {"parent": ctx.src.manifest.parent, "labels_changed": sum(r.label_changed for r in rows),
              "scores_changed": sum(r.old_score != r.new_score for r in rows),
              "new_scorers": dict(sorted(Counter(r.scorer for r in scored.values()).items())),
              "flips_after": sum(f.flipped for f in flips), "samples_rescored": len(scored),
              "transitions": dict(sorted(Counter(f"{r.old_label}->{r.new_label}" for r in rows
                                                 if r.label_changed).items()))}
    recorded = audit.model_dump(mode="json")
    for key, value in claims.items():
        if recorded.get(key) != value:
            st.fail(f"{AUDIT_SUMMARY}: {key} recorded {recorded.get(key)!r}, the rows and scores give {value!r}")
    parent = _parent_scores(ctx, st)
    if parent is None:
        return "rescore audit (rows against scores; parent not in this store)"
    changed = {sid for sid, old in parent.items() if sid in scored
               and (old.label, old.score) != (scored[sid].label, scored[sid].score)}
    listed = {r.sample: r for r in rows}
    for sid in sorted(changed - set(listed)):
        st.fail(f"{AUDIT_ROWS}: sample {sid} changed from the parent ({parent[sid].label} -> {scored[sid].label}) "
                "but is not in the audit")
    for sid in sorted(set(listed) - changed):
        st.fail(f"{AUDIT_ROWS}: sample {sid} is listed as changed but matches the parent")
    for sid in sorted(changed & set(listed)):
        old, r = parent[sid], listed[sid]
        if (old.label, old.score, old.scorer) != (r.old_label, r.old_score, r.old_scorer):
            st.fail(f"{AUDIT_ROWS}: sample {sid}: old {r.old_label}/{r.old_score} ({r.old_scorer}), the parent "
                    f"records {old.label}/{old.score} ({old.scorer})")
    return "rescore audit against the parent's scores"


def check_adjudication(ctx: Context, st: Stage) -> str:
    """Recompute an adjudication child's summary and report from its labels."""
    from batchsafe.analysis.adjudication_models import AdjudicationError, read_labels
    from batchsafe.analysis.adjudication_stats import render_report, summarize

    for name in (LABELS, ADJ_SUMMARY, ADJ_REPORT):
        if not ctx.usable(name):
            st.fail(f"{name}: missing or damaged in an adjudication bundle")
            return "adjudication"
    try:
        records = read_labels(ctx.src.read(LABELS))
    except (AdjudicationError, ValueError) as exc:
        st.fail(f"{LABELS}: {exc}")
        return "adjudication"
    flips = validated(ctx, FLIPS, st)
    parent = ctx.src.manifest.parent
    if flips is None or parent is None:
        st.fail("adjudication bundle without a parent or a readable flip registry")
        return "adjudication"
    known = {f.sample for f in flips if f.flipped}
    unknown = sorted({r.item for r in records} - known)
    if unknown:
        st.fail(f"{LABELS}: item {unknown[0]} is not a flipped row of {FLIPS} ({len(unknown)} such items)")
        return "adjudication"
    summary = summarize(parent, records, flips)
    for d in numeric_diffs(orjson.loads(ctx.src.read(ADJ_SUMMARY)), orjson.loads(summary.model_dump_json())):
        st.fail(f"{ADJ_SUMMARY}: {d}")
    if ctx.src.read(ADJ_REPORT).decode("utf-8", "replace") != render_report(summary):
        st.fail(f"{ADJ_REPORT}: does not match the report rendered from {LABELS}")
    _check_protocol_rates(ctx, st, records, flips)
    return f"adjudication summary and report recomputed from {len(records)} labels"


def _check_protocol_rates(ctx: Context, st: Stage, records: Any, flips: Any) -> None:
    """adjudication/protocol.json (seed 003's corrected rates): present exactly when the plan asks, and recomputed."""
    from batchsafe.analysis.protocol_adjudication import protocol_adjudication

    want = protocol_adjudication(ctx.plan.analysis, records, flips) if ctx.plan is not None else None
    if want is None:
        if ctx.src.has(ADJ_PROTOCOL):
            st.fail(f"{ADJ_PROTOCOL}: present, but the plan sets no analysis.protocol discovery phases")
        return
    if not ctx.usable(ADJ_PROTOCOL):
        st.fail(f"{ADJ_PROTOCOL}: missing or damaged; the plan's analysis.protocol asks for the corrected rates")
        return
    for d in numeric_diffs(orjson.loads(ctx.src.read(ADJ_PROTOCOL)), want):
        st.fail(f"{ADJ_PROTOCOL}: {d}")


def check_derived(ctx: Context) -> Stage | None:
    """The derived-files stage, or None for a bundle that has none."""
    has_audit = ctx.src.has(AUDIT_ROWS) or ctx.src.has(AUDIT_SUMMARY) or ctx.src.manifest.kind == "rescore"
    has_adj = any(n.startswith(layout.ADJUDICATION_DIR) for n in ctx.src.names) or ctx.src.manifest.kind == "adjudication"
    if not (has_audit or has_adj):
        return None
    st = Stage(name="derived")
    if ctx.scored is None and ctx.usable(SCORES):
        validated(ctx, SCORES, st)
    done = []
    if has_audit:
        done.append(check_rescore_audit(ctx, st))
    if has_adj:
        done.append(check_adjudication(ctx, st))
    st.summary = "; ".join(done) + (": consistent" if st.status == "PASS" else f": {st.n_problems} problem(s)")
    return st
