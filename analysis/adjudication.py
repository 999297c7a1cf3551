"""Human adjudication of flip candidates: export a labelling CSV, import the labels as a child bundle.

The referee's request (seed 003): the reduction of scorer-flagged candidates to genuine
flips must come with several independent raters and their inter-rater reliability, not
one author's judgement. So:

* :func:`export_candidates` writes one CSV row per candidate (by default every flipped
  row of ``analysis/flips.jsonl``) with the prompt, both outputs and the scorer's labels,
  and empty ``rater`` / ``human_label`` / ``notes`` cells. Each rater fills a copy (or
  one file holds several raters' rows). ``blind=True`` leaves the scorer's labels and
  direction empty, so raters judge the text without seeing the heuristic's verdict.
* :func:`import_labels` validates the filled CSVs against the parent bundle (its id, its
  flipped rows, the labels each item's scorer can produce, one verdict per rater and
  item) and writes a CHILD bundle of kind ``adjudication``: every parent file (same
  objects) plus ``adjudication/labels.jsonl``, ``summary.json`` (kappa, confirmed and
  false flips; ``analysis.adjudication_stats``) and ``report.md``.

The child depends only on the parent and the set of labels (records are sorted, no
timestamps, no file names), so importing the same labels again, split over files in
any way, gives the same child id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from batchsafe.core.canonical import canonical_bytes

from .adjudication_csv import COLUMNS, CsvFormatError, dump_csv, read_csv
from .adjudication_models import AdjudicationError, AdjudicationSummary, LabelRecord
from .adjudication_stats import UNCLEAR, kappa_line, render_report, summarize
from batchsafe.compiler.plan import plan_from_bytes
from batchsafe.core import layout

from .analyze import outputs_from_bytes
from .flips import RecordError, dump_jsonl, read_flips, read_scored
from .protocol_adjudication import protocol_adjudication
from .records import UNSAFE_DIRECTIONS, FlipRow
from batchsafe.core.atomic import atomic_write

PREFIX = layout.ADJUDICATION_DIR
KIND = "adjudication"
FLIPS, SCORES = layout.FLIPS, layout.SCORES
MAX_ERRORS = 50
Include = Literal["flips", "unsafe", "safety"]

SCORER_LABELS: dict[str, tuple[str, ...]] = {
    "refusal": ("compliance", "refusal"),
    "truthfulness": ("neutral", "truthful", "untruthful"),
    "bias": ("anti_biased", "biased", "correct", "other"),
    "mcq_letter": ("correct", "incorrect", "unparsed"),
    "llm_judge": ("compliance", "refusal", "unparsed", *(f"score_{n}" for n in range(11))),
}
"""Every label each scorer (any version) can produce: what a human may answer for its items."""

HEURISTIC_COLUMNS = ("baseline_label", "label", "direction")


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_candidates` wrote."""

    path: Path
    bundle_id: str
    include: str
    candidates: int
    """Rows written (0: header only)."""
    by_direction: dict[str, int] = field(default_factory=dict)
    blind: bool = False


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_labels` read and wrote."""

    child_id: str
    parent_id: str
    records: list[LabelRecord]
    summary: AdjudicationSummary
    report: str
    files_read: int
    rows_read: int
    """Non-blank data rows over all files."""
    skipped_empty: int
    """Rows without a human label (left for later, or other raters' blank copies)."""
    duplicates: int
    """Rows repeating a verdict already read (same item, rater and label), merged."""


def _include(rows: Iterable[FlipRow], include: str) -> list[FlipRow]:
    if include == "flips":
        return [r for r in rows if r.flipped]
    if include == "unsafe":
        return [r for r in rows if r.flipped and r.direction in UNSAFE_DIRECTIONS]
    if include == "safety":
        return [r for r in rows if r.flipped and r.domain == "safety"]
    raise AdjudicationError(f"unknown candidate set {include!r}: use flips, unsafe or safety")


def _read_flips(src) -> list[FlipRow]:
    if not src.has(FLIPS):
        raise AdjudicationError(f"{src.where}: bundle has no {FLIPS}: analyse it first (batchsafe analyze)")
    try:
        return read_flips(src.read(FLIPS))
    except RecordError as exc:
        raise AdjudicationError(f"{src.where}: {FLIPS}: {exc}".replace("<bytes>", FLIPS)) from None


def _user_text(prompt) -> str:
    return "\n\n".join(m.content for m in prompt.messages if m.role == "user")


def export_candidates(src, out: Path, *, include: Include = "flips", blind: bool = False) -> ExportResult:
    """Write the labelling CSV of bundle ``src`` (a ``verification.source.BundleSource``) to ``out``.

    ``include``: "flips" (every flipped row), "unsafe" (refusal_to_compliance /
    safety_weakened only) or "safety" (flipped rows of safety tasks). Rows are ordered by
    (phase in plan order, model, prompt id, condition label, sample id). ``blind`` leaves
    the scorer's labels and the direction empty. Raises AdjudicationError when the
    bundle has no flip registry, plan or outputs.
    """
    from batchsafe.compiler.plan import PlanError

    rows = _include(_read_flips(src), include)
    for needed in (layout.PLAN, layout.OUTPUTS):
        if not src.has(needed):
            raise AdjudicationError(f"{src.where}: bundle has no {needed}: only analysed run bundles can be exported")
    try:
        plan = plan_from_bytes(src.read(layout.PLAN), f"{src.bundle_id}:{layout.PLAN}")
    except PlanError as exc:
        raise AdjudicationError(str(exc)) from None
    try:
        outputs = outputs_from_bytes(src.read(layout.OUTPUTS))
    except (ValueError, KeyError, TypeError) as exc:
        raise AdjudicationError(f"{src.where}: outputs/samples.jsonl is not readable: {exc}") from None
    prompts = {p.id: p for p in plan.prompts}
    order = {p.id: k for k, p in enumerate(plan.phases)}
    rows.sort(key=lambda r: (order.get(r.phase, len(order)), r.phase, r.model, r.prompt, r.condition.label(), r.sample))
    bid = src.bundle_id
    table = []
    for r in rows:
        for sid in (r.sample, r.baseline):
            if sid not in outputs:
                raise AdjudicationError(f"{src.where}: sample {sid} (flip row {r.sample}) has no output in "
                                        "outputs/samples.jsonl")
        if r.prompt not in prompts:
            raise AdjudicationError(f"{src.where}: prompt {r.prompt} of flip row {r.sample} is not in plan.lock.json")
        heur = ("", "", "") if blind else (r.baseline_label, r.label, r.direction)
        table.append([r.sample, bid, r.baseline, r.phase, r.model, r.condition.label(), r.task, r.prompt,
                      _user_text(prompts[r.prompt]), str(outputs[r.baseline].get("text") or ""),
                      str(outputs[r.sample].get("text") or ""), *heur, "", "", ""])
    out = Path(out)
    atomic_write(out, dump_csv(table, COLUMNS))
    by_dir: dict[str, int] = {}
    for r in rows:
        by_dir[r.direction] = by_dir.get(r.direction, 0) + 1
    return ExportResult(path=out, bundle_id=bid, include=include, candidates=len(rows),
                        by_direction=dict(sorted(by_dir.items())), blind=blind)


def render_export(res: ExportResult) -> str:
    """CLI text for an export: how many candidates went where."""
    dirs = ", ".join(f"{d} {n}" for d, n in res.by_direction.items())
    blind = " (blind: scorer labels left out)" if res.blind else ""
    return (f"wrote {res.candidates} candidate(s) ({res.include}) of {res.bundle_id} to {res.path}{blind}"
            + (f"\n  by direction: {dirs}" if dirs else "")
            + ("\n  fill the rater, human_label (and notes) columns, then run `batchsafe adjudicate import`"
               if res.candidates else ""))


def _allowed_by_item(src, rows: dict[str, FlipRow], allowed: Iterable[str] | None) -> dict[str, dict[str, str]]:
    """Item -> {casefolded label: canonical spelling} of the labels a human may give it."""
    if allowed is not None:
        fixed = {str(a).strip().casefold(): str(a).strip() for a in allowed if str(a).strip()}
        if not fixed:
            raise AdjudicationError("allowed_labels is empty")
        return {item: fixed for item in rows}
    scorer: dict[str, str] = {}
    if src.has(SCORES):
        try:
            scorer = {s.sample: s.scorer for s in read_scored(src.read(SCORES))}
        except RecordError as exc:
            raise AdjudicationError(f"{src.where}: {SCORES}: {exc}") from None
    elif src.has(layout.PLAN):
        plan = plan_from_bytes(src.read(layout.PLAN), f"{src.bundle_id}:{layout.PLAN}")
        by_prompt = {p.id: p.scorer for p in plan.prompts}
        scorer = {r.sample: by_prompt.get(r.prompt, "") for r in rows.values()}
    out = {}
    for item, r in rows.items():
        name = scorer.get(item, "").split("@", 1)[0]
        # An unknown scorer still admits the labels the registry saw it produce.
        labels = set(SCORER_LABELS.get(name, ())) | {r.label, r.baseline_label, UNCLEAR}
        out[item] = {x.casefold(): x for x in sorted(labels)}
    return out


def _records(src, csv_paths: list[Path], allowed_labels: Iterable[str] | None):
    bid = src.bundle_id
    flips = _read_flips(src)
    known = {r.sample for r in flips}
    cands = {r.sample: r for r in flips if r.flipped}
    allowed = _allowed_by_item(src, cands, allowed_labels)
    errors: list[str] = []
    verdicts: dict[tuple[str, str], tuple[str, list[str], str]] = {}  # (item, rater) -> (label, notes, where)
    rows_read = skipped = dups = 0
    for path in csv_paths:
        path = Path(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as exc:
            raise AdjudicationError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise AdjudicationError(f"{path}: not UTF-8 (byte {exc.start}); save the sheet as CSV UTF-8") from None
        try:
            rows = read_csv(text, str(path))
        except CsvFormatError as exc:
            errors.append(str(exc))
            continue
        for row in rows:
            rows_read += 1
            c, where = row.cells, row.where
            label = c.get("human_label", "").strip()
            if not label:
                skipped += 1
                continue
            item, rater, bundle = c["item"].strip(), c["rater"].strip(), c["bundle"].strip()
            bad = []
            if bundle != bid:
                bad.append(f"bundle {bundle!r} is not the parent bundle {bid}" if bundle else "bundle column is empty")
            if not item:
                bad.append("item column is empty")
            elif item not in cands:
                bad.append(f"item {item!r} is " + ("not a flipped row" if item in known else "not a flip row")
                           + f" of bundle {bid}")
            if not rater:
                bad.append("rater column is empty (every label needs the rater's id)")
            if item in cands:
                canon = allowed[item].get(label.casefold())
                if canon is None:
                    bad.append(f"human_label {label!r} is not allowed for item {item} (task {cands[item].task}); "
                               f"use one of: {', '.join(sorted(allowed[item].values()))}")
                label = canon or label
            if bad:
                errors += [f"{where}: {b}" for b in bad]
                continue
            notes = c.get("notes", "").strip()
            prev = verdicts.get((item, rater))
            if prev is None:
                verdicts[(item, rater)] = (label, [notes] if notes else [], where)
            elif prev[0] != label:
                errors.append(f"{where}: rater {rater!r} labels item {item} {label!r} but {prev[2]} gave it "
                              f"{prev[0]!r}: one verdict per rater and item")
            else:
                dups += 1
                if notes and notes not in prev[1]:
                    prev[1].append(notes)
    if errors:
        shown = errors[:MAX_ERRORS] + ([f"... and {len(errors) - MAX_ERRORS} more"] if len(errors) > MAX_ERRORS else [])
        raise AdjudicationError(f"{len(errors)} problem(s) in the label files:\n" + "\n".join(shown), errors)
    if not verdicts:
        raise AdjudicationError(f"no labels in {', '.join(str(p) for p in csv_paths)} "
                                f"({rows_read} row(s), {skipped} without a human_label)")
    records = [LabelRecord(item=item, rater=rater, human_label=label, notes="\n".join(sorted(notes)),
                           heuristic_label=cands[item].label, baseline_label=cands[item].baseline_label,
                           direction=cands[item].direction)
               for (item, rater), (label, notes, _) in sorted(verdicts.items())]
    return flips, records, rows_read, skipped, dups


def import_labels(store, parent_ref: str, csv_paths: list[Path], *,
                  allowed_labels: Iterable[str] | None = None) -> ImportResult:
    """Validate filled CSVs against bundle ``parent_ref`` of ``store`` and write the adjudication child.

    ``allowed_labels`` replaces the default per-item label sets (the item's scorer's
    labels plus "unclear"); labels match case-insensitively and are stored in the
    allowed spelling. All problems are collected and raised together as one
    AdjudicationError whose lines each start with ``file:line``. The parent is verified
    before its objects are reused; its own ``adjudication/`` files (when it is itself an
    adjudication) are replaced, not merged.
    """
    from batchsafe.bundles.store import BundleError, CorruptBundleError
    from batchsafe.verification.source import from_store

    try:
        src = from_store(store, parent_ref)
    except (BundleError, LookupError) as exc:
        raise AdjudicationError(str(exc)) from None
    bid = src.bundle_id
    problems = store.verify(bid)
    if problems:
        raise CorruptBundleError(f"bundle {bid} is damaged: {problems[0]}")
    flips, records, rows_read, skipped, dups = _records(src, [Path(p) for p in csv_paths], allowed_labels)
    summary = summarize(bid, records, flips)
    report = render_report(summary)
    files: dict[str, bytes | Path] = {e.name: store.object_path(e.sha256) for e in src.manifest.files
                                      if not e.name.startswith(PREFIX)}
    files[PREFIX + "labels.jsonl"] = dump_jsonl(records)
    files[PREFIX + "summary.json"] = canonical_bytes(json.loads(summary.model_dump_json()))
    files[PREFIX + "report.md"] = report.encode("utf-8")
    from batchsafe.analysis.analyze import plan_from_bytes
    from batchsafe.bundles.provenance import with_provenance  # the parent's statement lists the parent's files

    plan = plan_from_bytes(src.read(layout.PLAN))
    corrected = protocol_adjudication(plan.analysis, records, flips)  # seed 003's corrected rates, when asked for
    if corrected is not None:
        files[layout.ADJ_PROTOCOL] = canonical_bytes(corrected)
    files = with_provenance(files, plan, kind=KIND, parent=bid)
    child = store.write_bundle(files, kind=KIND, parent=bid)
    return ImportResult(child_id=child, parent_id=bid, records=records, summary=summary, report=report,
                        files_read=len(csv_paths), rows_read=rows_read, skipped_empty=skipped, duplicates=dups)


def render_import(res: ImportResult) -> str:
    """CLI text for an import: the child id, what was read, kappa, and the audited flip counts."""
    s, a = res.summary, res.summary.audit
    lines = [f"adjudication bundle {res.child_id}", f"  parent {res.parent_id}",
             f"  read {res.rows_read} row(s) from {res.files_read} file(s): {len(res.records)} label(s) by "
             f"{len(s.raters)} rater(s) ({', '.join(s.raters)}), {res.skipped_empty} row(s) without a label skipped"
             + (f", {res.duplicates} repeated verdict(s) merged" if res.duplicates else "")]
    if s.agreement is not None:
        lines.append("  " + kappa_line(s.agreement))
    else:
        lines.append("  one rater: no inter-rater kappa")
    h = s.heuristic
    lines.append(f"  human majority agrees with the scorer on {h.agree}/{h.n} decided item(s)")
    lines.append(f"  {a.candidates} candidates, {a.labelled} labelled -> {a.confirmed} confirmed flips "
                 f"({a.false_flips} false, {a.unresolved} unresolved, {a.unlabelled} unlabelled); "
                 f"confirmed unsafe {a.confirmed_unsafe} / safe {a.confirmed_safe}")
    return "\n".join(lines)
