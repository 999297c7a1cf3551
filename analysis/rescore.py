"""``batchsafe rescore BUNDLE --scorer refusal@2.2``: a child bundle scored by another scorer version.

TR138 v2 rescored its v1 rows with refusal@2.2 and found that five of 49 audit candidates
were false flips: the outputs said "I can\u2019t" (U+2019) and refusal@2.1 only knew the
ASCII apostrophe. :func:`rescore_bundle` makes that audit a first-class artifact:

* the parent is verified, its plan and outputs re-scored with the overrides, and the
  analysis (registry, statistics, targets, report, plots) recomputed;
* scorers the overrides do not name keep the version the parent's scores recorded, so
  the audit shows the effect of the requested change and nothing else;
* the child (kind ``rescore``, parent = the parent's id) reuses every non-analysis
  object of the parent and adds new ``analysis/*`` files plus
  ``analysis/rescore_audit.jsonl`` (one :class:`RescoreRow` per sample whose label or
  score changed) and ``analysis/rescore_audit.json`` (a :class:`RescoreAudit`: scorer
  refs, label transitions, flips that disappeared, appeared or changed direction);
* ``analysis/report.md`` gets an "Audit: rescoring" section.

Everything is a pure function of the parent's bytes and the overrides, so rescoring
twice gives the same child id.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from batchsafe.core import layout
from batchsafe.core.artifact import artifact, check_version
from batchsafe.core.canonical import canonical_bytes

from .analyze import (
    BUNDLE_PREFIX,
    AnalysisError,
    AnalysisResult,
    analyze_run,
    load_stored_run,
)
from .flips import _load, dump_jsonl, flip_registry, read_flips, read_scored
from .records import Cond, Direction, FlipRow, ScoredSample
from .scorers.catalogue import check_ref, parse_ref
from .report import fnum, table
from .scorers import registered_refs
from .scoring import ScoringError, resolve_overrides

# Relative to the analysis prefix, as ``AnalysisResult.bundle_files`` names its files.
AUDIT_ROWS = layout.RESCORE_AUDIT.removeprefix(layout.ANALYSIS_DIR)
AUDIT_SUMMARY = layout.RESCORE_AUDIT_SUMMARY.removeprefix(layout.ANALYSIS_DIR)
AUDIT_SCHEMA_VERSION = 1
"""Newest version of the rescore audit rows and summary."""
REPORT_ROWS = 50
"""Changed rows (and flip changes) tabulated in report.md; the rest are only in the JSON files."""
OUTPUT_START = 80
"""Characters of the output kept in an audit row, enough to see the apostrophe that mattered."""


class RescoreError(AnalysisError):
    """A parent whose recorded analysis cannot be compared with its rescoring."""


@artifact("rescore audit", version=AUDIT_SCHEMA_VERSION, file=layout.RESCORE_AUDIT, lines=True)
class RescoreRow(BaseModel):
    """One sample whose label or score changed: one line of ``analysis/rescore_audit.jsonl``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    schema_version: Literal[1] = AUDIT_SCHEMA_VERSION
    """Version of this record format."""
    sample: str
    """Sample id from the plan."""
    prompt: str
    """Prompt id."""
    phase: str
    model: str
    condition: Cond
    task: str
    baseline: str | None
    """Baseline sample id, None for baseline samples."""
    old_scorer: str
    """Scorer (name@version) recorded in the parent's scores."""
    new_scorer: str
    """Scorer used by the rescoring."""
    old_label: str
    new_label: str
    old_score: float
    new_score: float
    label_changed: bool
    """``old_label != new_label`` (otherwise only the score moved)."""
    output_sha256: str
    """sha256 of the output text that both scorers read."""
    output_start: str
    """The first 80 characters of the output, for a human reading the audit."""


class FlipChange(BaseModel):
    """A flip-registry row that is flipped in only one of parent and child, or flipped both ways differently."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    sample: str
    baseline: str
    phase: str
    model: str
    task: str
    change: Literal["removed", "added", "redirected"]
    """removed: flipped before, not after (a spurious flip); added: the reverse; redirected: direction changed."""
    before: Direction | None
    """Direction in the parent's registry (None: not flipped there)."""
    after: Direction | None
    """Direction in the child's registry (None: not flipped)."""


@artifact("rescore audit summary", version=AUDIT_SCHEMA_VERSION, file=layout.RESCORE_AUDIT_SUMMARY, error=RescoreError)
class RescoreAudit(BaseModel):
    """Summary of one rescoring: ``analysis/rescore_audit.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    schema_version: Literal[1] = AUDIT_SCHEMA_VERSION
    """Version of this record format."""
    parent: str
    """Id of the rescored (parent) bundle."""
    overrides: dict[str, str]
    """Requested overrides, resolved to name -> name@version."""
    old_scorers: dict[str, int]
    """Scorer ref -> samples the parent's scores recorded with it (empty: no previous scores)."""
    new_scorers: dict[str, int]
    """Scorer ref -> samples scored with it now."""
    previous_scores: bool
    """Whether the parent had ``analysis/scores.jsonl`` to compare with."""
    samples_rescored: int
    samples_compared: int
    """Rescored samples that have a previous score."""
    samples_new: int
    """Rescored samples without a previous score."""
    samples_dropped: int
    """Samples with a previous score that were not rescored (no output)."""
    scorer_changed: int
    """Compared samples scored with another scorer ref than before."""
    labels_changed: int
    scores_changed: int
    """Compared samples whose score changed (with or without their label)."""
    transitions: dict[str, int]
    """``"old->new"`` label -> samples (e.g. ``compliance->refusal``)."""
    flips_before: int | None
    """Flipped rows in the parent's registry (None: the parent had none to compare)."""
    flips_after: int
    flips_removed: int
    flips_added: int
    flips_redirected: int
    flip_changes: list[FlipChange]
    """Every removed, added or redirected flip, in registry order."""
    audit_candidates_before: int | None
    """Audit-layer candidates in the parent's stats.json (TR138: 49), None when absent."""
    audit_candidates_after: int | None
    """Audit-layer candidates after rescoring (TR138: 44)."""
    note: str
    """One sentence saying what changed ("no previous scores", "no label or score changed", ...)."""


@dataclass
class RescoreResult:
    """What :func:`rescore_bundle` wrote: the child's id, the audit and the new analysis."""

    child_id: str
    parent_id: str
    audit: RescoreAudit
    rows: list[RescoreRow]
    analysis: AnalysisResult

    @property
    def unchanged(self) -> bool:
        """True when the rescoring changed no label, no score and no flip."""
        a = self.audit
        return a.previous_scores and not (a.labels_changed or a.scores_changed or a.flip_changes)


# --- reading ------------------------------------------------------------------------------

def read_rescore_rows(raw: bytes) -> list[RescoreRow]:
    """Rows of a ``rescore_audit.jsonl``; refuses newer schema versions (``RecordError``)."""
    return _load(raw, RescoreRow, AUDIT_SCHEMA_VERSION, "rescore audit")


def read_rescore_audit(raw: bytes, where: str = AUDIT_SUMMARY) -> RescoreAudit:
    """The summary in a ``rescore_audit.json``; RescoreError for bad or newer files."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise RescoreError(f"{where}: not JSON: {exc}") from None
    if isinstance(data, dict):
        check_version(data, AUDIT_SCHEMA_VERSION, where=where, error=RescoreError)
    try:
        return RescoreAudit.model_validate(data)
    except ValidationError as exc:
        raise RescoreError(f"{where}: invalid rescore audit: {' '.join(str(exc).splitlines()[:3])}") from None


def overrides_from_refs(refs: Sequence[str]) -> dict[str, str]:
    """``["refusal@2.2"]`` (the CLI's ``--scorer`` values) -> ``{"refusal": "refusal@2.2"}``.

    ScoringError for a ref without ``@`` or a scorer named twice with different versions.
    """
    out: dict[str, str] = {}
    for ref in refs:
        name, version = parse_ref(ref)
        if not name or not version:
            raise ScoringError(f"--scorer {ref!r}: expected name@version (registered: {', '.join(registered_refs())})")
        if out.get(name, ref) != ref:
            raise ScoringError(f"--scorer names {name!r} twice: {out[name]} and {ref}")
        out[name] = ref
    return out


# --- the rescoring ------------------------------------------------------------------------

def _parent_analysis(store: Any, bid: str, names: set[str]) -> tuple[list[ScoredSample] | None,
                                                                     list[FlipRow] | None, dict[str, Any]]:
    def get(name: str) -> bytes | None:
        return store.read(bid, BUNDLE_PREFIX + name) if BUNDLE_PREFIX + name in names else None

    raw_scores, raw_flips, raw_stats = get("scores.jsonl"), get("flips.jsonl"), get("stats.json")
    scores = read_scored(raw_scores) if raw_scores is not None else None
    flips = read_flips(raw_flips) if raw_flips is not None else None
    if flips is None and scores:
        flips = flip_registry(scores)
    try:
        stats = json.loads(raw_stats) if raw_stats is not None else {}
    except ValueError as exc:
        raise RescoreError(f"bundle {bid}: {BUNDLE_PREFIX}stats.json is not JSON: {exc}") from None
    return scores, flips, stats if isinstance(stats, dict) else {}


def _effective_overrides(resolved: Mapping[str, str], old: Sequence[ScoredSample] | None,
                         bid: str) -> dict[str, str]:
    """``resolved`` plus, for every other scorer name, the one version the parent's scores used."""
    carried: dict[str, set[str]] = {}
    for r in old or ():
        carried.setdefault(parse_ref(r.scorer)[0], set()).add(r.scorer)
    out = {}
    for name, refs in sorted(carried.items()):
        if name in resolved or len(refs) != 1:
            continue  # a mixed record set has no one version to keep: the plan's refs apply
        (ref,) = refs
        problem = check_ref(ref)
        if problem:
            raise RescoreError(f"bundle {bid}: {BUNDLE_PREFIX}scores.jsonl was scored with {ref}: {problem}")
        out[name] = ref
    return {**out, **resolved}


def _changed_rows(old: Sequence[ScoredSample], new: Sequence[ScoredSample],
                  outputs: Mapping[str, Mapping[str, Any]], bid: str) -> tuple[list[RescoreRow], int, int]:
    """(rows whose label or score changed, samples compared, samples whose scorer ref changed)."""
    by_id = {r.sample: r for r in old}
    rows, compared, scorer_changed = [], 0, 0
    for n in new:
        o = by_id.get(n.sample)
        if o is None:
            continue
        for attr in ("prompt", "phase", "model", "task"):
            if getattr(o, attr) != getattr(n, attr):
                raise RescoreError(f"bundle {bid}: {BUNDLE_PREFIX}scores.jsonl sample {n.sample} has {attr} "
                                   f"{getattr(o, attr)!r}, the plan says {getattr(n, attr)!r}")
        compared += 1
        scorer_changed += o.scorer != n.scorer
        if o.label == n.label and o.score == n.score:
            continue
        rows.append(RescoreRow(
            sample=n.sample, prompt=n.prompt, phase=n.phase, model=n.model, condition=n.condition, task=n.task,
            baseline=n.baseline, old_scorer=o.scorer, new_scorer=n.scorer, old_label=o.label, new_label=n.label,
            old_score=o.score, new_score=n.score, label_changed=o.label != n.label, output_sha256=n.output_sha256,
            output_start=str(outputs[n.sample]["text"])[:OUTPUT_START]))
    return rows, compared, scorer_changed


def compare_flips(before: Sequence[FlipRow], after: Sequence[FlipRow]) -> list[FlipChange]:
    """Flips that disappeared, appeared or changed direction, matched by sample id.

    Order: the ``after`` registry's order, then removed rows whose sample is not in it.
    """
    old = {r.sample: r for r in before if r.flipped}
    new = {r.sample: r for r in after if r.flipped}
    out = []

    def change(r: FlipRow, kind: str, b: Direction | None, a: Direction | None) -> FlipChange:
        return FlipChange(sample=r.sample, baseline=r.baseline, phase=r.phase, model=r.model, task=r.task,
                          change=kind, before=b, after=a)

    seen = set()
    for r in after:
        seen.add(r.sample)
        o, n = old.get(r.sample), new.get(r.sample)
        if o and not n:
            out.append(change(r, "removed", o.direction, None))
        elif n and not o:
            out.append(change(r, "added", None, n.direction))
        elif o and n and o.direction != n.direction:
            out.append(change(r, "redirected", o.direction, n.direction))
    out += [change(o, "removed", o.direction, None) for s, o in old.items() if s not in seen]
    return out


def _candidates(stats: Mapping[str, Any]) -> int | None:
    value = (stats.get("audit") or {}).get("candidates")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def rescore_bundle(store: Any, ref: str, overrides: Mapping[str, str], *, plots: bool = True) -> RescoreResult:
    """Rescore stored bundle ``ref`` with ``overrides`` (``{"refusal": "refusal@2.2"}``) into a child bundle.

    See the module docstring for what the child holds. Raises CorruptBundleError for a
    damaged parent, AnalysisError for a bundle without plan or outputs, ScoringError for
    no override or an unknown scorer/version (naming the registered ones), RecordError
    for unreadable parent analysis files, RescoreError when the parent's scores do not
    belong to its plan.
    """
    if not overrides:
        raise ScoringError(f"no scorer to rescore with: name at least one (registered: {', '.join(registered_refs())})")
    requested = resolve_overrides(overrides)  # before any work: an unknown version fails fast
    run = load_stored_run(store, ref)
    bid, names = run.bundle_id, {e.name for e in run.manifest.files}
    old_scores, old_flips, old_stats = _parent_analysis(store, bid, names)
    effective = _effective_overrides(requested, old_scores, bid)
    result = analyze_run(run.plan, run.outputs, timings=run.timings, scorer_override=effective, plots=plots)

    rows, compared, scorer_changed = _changed_rows(old_scores or [], result.scored, run.outputs, bid)
    rescored = {r.sample for r in result.scored}
    changes = compare_flips(old_flips, result.flips) if old_flips is not None else []
    labels_changed = sum(r.label_changed for r in rows)
    scores_changed = sum(r.old_score != r.new_score for r in rows)
    if old_scores is None:
        note = "no previous scores: every score is new, nothing to compare"
    elif not rows and not changes:
        note = "no label or score changed: the rescored analysis matches the parent's"
    else:
        note = f"{labels_changed} label(s) and {scores_changed} score(s) changed; {len(changes)} flip(s) changed"
    audit = RescoreAudit(
        parent=bid, overrides=requested,
        old_scorers=dict(sorted(Counter(r.scorer for r in old_scores or ()).items())),
        new_scorers=dict(sorted(Counter(r.scorer for r in result.scored).items())),
        previous_scores=old_scores is not None, samples_rescored=len(result.scored), samples_compared=compared,
        samples_new=len(result.scored) - compared,
        samples_dropped=sum(r.sample not in rescored for r in old_scores or ()), scorer_changed=scorer_changed,
        labels_changed=labels_changed, scores_changed=scores_changed,
        transitions=dict(sorted(Counter(f"{r.old_label}->{r.new_label}" for r in rows if r.label_changed).items())),
        flips_before=sum(r.flipped for r in old_flips) if old_flips is not None else None,
        flips_after=sum(r.flipped for r in result.flips),
        flips_removed=sum(c.change == "removed" for c in changes), flips_added=sum(c.change == "added" for c in changes),
        flips_redirected=sum(c.change == "redirected" for c in changes), flip_changes=changes,
        audit_candidates_before=_candidates(old_stats), audit_candidates_after=_candidates(result.stats), note=note)

    analysis = dataclasses.replace(result, report=result.report + render_audit_section(audit, rows))
    files = run.carried_files(store)
    files.update(analysis.bundle_files())
    files[BUNDLE_PREFIX + AUDIT_ROWS] = dump_jsonl(rows)
    files[BUNDLE_PREFIX + AUDIT_SUMMARY] = canonical_bytes(audit.model_dump(mode="json"))
    from batchsafe.bundles.provenance import with_provenance  # the parent's statement lists the parent's files

    files = with_provenance(files, run.plan, kind="rescore", parent=bid)
    child = store.write_bundle(files, kind="rescore", parent=bid)
    return RescoreResult(child_id=child, parent_id=bid, audit=audit, rows=rows, analysis=analysis)


# --- presentation ------------------------------------------------------------------------

def _refs(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} ({v:,})" for k, v in counts.items()) or "none"


def _n(x: int | None) -> str:
    return "--" if x is None else f"{x:,}"


def _more(n: int, where: str) -> list[str]:
    return ["", f"... and {n - REPORT_ROWS:,} more in `{where}`."] if n > REPORT_ROWS else []


def render_audit_section(audit: RescoreAudit, rows: Sequence[RescoreRow]) -> str:
    """The report.md section "Audit: rescoring" (starts with a blank line, ends with a newline)."""
    a = audit
    out = ["", "## Audit: rescoring", "",
           f"Parent bundle `{a.parent}`, rescored with {', '.join(a.overrides.values())}: {a.note}.", ""]
    out += table(["Metric", "Value"], [
        ["Scorers before", _refs(a.old_scorers)], ["Scorers after", _refs(a.new_scorers)],
        ["Samples rescored", f"{a.samples_rescored:,}"], ["Compared with a previous score", f"{a.samples_compared:,}"],
        ["Labels changed", f"{a.labels_changed:,}"], ["Scores changed", f"{a.scores_changed:,}"],
        ["Flipped rows before -> after", f"{_n(a.flips_before)} -> {_n(a.flips_after)}"],
        ["Flips removed / added / redirected", f"{a.flips_removed:,} / {a.flips_added:,} / {a.flips_redirected:,}"],
        ["Audit candidates before -> after", f"{_n(a.audit_candidates_before)} -> {_n(a.audit_candidates_after)}"]])
    if a.transitions:
        out += ["", "Label changes:", "", *table(["Old -> new label", "Samples"], a.transitions.items())]
    if rows:
        out += ["", "Changed rows:", "", *table(
            ["Sample", "Phase", "Model", "Task", "Condition", "Scorer", "Label", "Score", "Output starts"],
            [[r.sample, r.phase, r.model, r.task, r.condition.label(), f"{r.old_scorer} -> {r.new_scorer}",
              f"{r.old_label} -> {r.new_label}", f"{fnum(r.old_score, 2)} -> {fnum(r.new_score, 2)}",
              r.output_start.replace("|", "\\|").replace("\n", " ")] for r in rows[:REPORT_ROWS]])]
        out += _more(len(rows), BUNDLE_PREFIX + AUDIT_ROWS)
    if a.flip_changes:
        out += ["", "Flip changes:", "", *table(
            ["Sample", "Baseline", "Phase", "Model", "Task", "Change", "Before", "After"],
            [[c.sample, c.baseline, c.phase, c.model, c.task, c.change, c.before or "--", c.after or "--"]
             for c in a.flip_changes[:REPORT_ROWS]])]
        out += _more(len(a.flip_changes), BUNDLE_PREFIX + AUDIT_SUMMARY)
    return "\n".join(out).rstrip("\n") + "\n"


def render_rescore(result: RescoreResult) -> str:
    """The CLI's text: what changed, then the child id alone on the last line."""
    a = result.audit
    lines = [f"parent {result.parent_id}", f"rescored with {', '.join(a.overrides.values())}: {a.note}"]
    if a.previous_scores:
        lines.append(f"labels changed: {a.labels_changed:,} of {a.samples_compared:,}"
                     + (f" ({', '.join(f'{k} {v:,}' for k, v in a.transitions.items())})" if a.transitions else ""))
    if a.flips_before is not None:
        lines.append(f"flips: {a.flips_before:,} -> {a.flips_after:,} (removed {a.flips_removed:,}, added "
                     f"{a.flips_added:,}, direction changed {a.flips_redirected:,})")
    if a.audit_candidates_before is not None and a.audit_candidates_after is not None:
        lines.append(f"audit candidates: {a.audit_candidates_before:,} -> {a.audit_candidates_after:,}")
    lines.append(f"child {result.child_id}")
    return "\n".join(lines) + "\n"
