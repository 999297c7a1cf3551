"""``batchsafe diff A B``: what differs between two analysed bundles, and deployment gates.

``diff_bundles(a, b)`` compares two ``BundleSource``s (``verification.source``):

* **setup**: plan (``compiler.plandiff.diff_plans`` when the plan files differ: settings,
  inputs, prompts, phases, engine configs with image digests and flags, models), locators,
  spec texts, scorer versions per task (from ``analysis/scores.jsonl``), ``environment.json``
  flattened to paths, and every bundle file whose digest differs;
* **outputs**: samples matched by (phase, model, prompt, canonical condition), not by
  sample id, with byte identity of their outputs (``output_sha256``) per condition;
* **flips**: the two flip registries matched the same way: flipped in both (same or other
  direction), only in A, only in B, and agreement per model, model x condition, phase;
* **stats**: numeric leaves of ``analysis/stats.json`` that differ.

Gates (``--fail-on``) are in ``diff_gates``, the text report in ``diff_render``; both are
re-exported here. Files are parsed with orjson into plain dicts (``diff_read``) and a file
whose bytes are the same in A and B is parsed once.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import compress
from operator import is_not, itemgetter, ne, or_
from typing import Any

import orjson

from batchsafe.compiler.plan import plan_from_bytes
from batchsafe.compiler.plandiff import diff_plans
from batchsafe.core import layout
from batchsafe.core.gcpause import with_gc_paused

from .diff_gates import (
    GateError,
    GateSyntaxError,
    UnknownMetricError,
    evaluate_gates,
    exit_code,
    format_gate,
    metric_paths,
    parse_gate,
    with_gates,
)
from .diff_models import (
    AgreementCell,
    BundleDiff,
    BundleSide,
    EnvironmentDiff,
    FileChange,
    FlipDisagreement,
    FlipsDiff,
    Gate,
    GateResult,
    OutputCell,
    OutputsDiff,
    ScorerChange,
    SetupDiff,
    StatChange,
    StatsDiff,
    ValueChange,
)
from .diff_paths import flatten, format_path, is_number, leaf_writer, numeric_leaves
from .diff_read import FLIPS, PLAN, SCORES, Conditions, DiffError, Key, SideData
from .diff_render import render_diff
from .diff_tally import tally_flips, tally_outputs
from .source import BundleSource

__all__ = ["BundleDiff", "DiffError", "Gate", "GateError", "GateResult", "GateSyntaxError", "UnknownMetricError",
           "diff_bundles", "evaluate_gates", "exit_code", "format_gate", "metric_paths", "parse_gate",
           "render_diff", "with_gates"]

MAX_ENV_CHANGES = 200
"""Environment keys listed (all are counted)."""
MAX_DISAGREEMENTS = 5000
"""Disagreeing flip rows listed (all are counted)."""
STATS_TOLERANCE = 1e-12

_TASK_SCORER = itemgetter(4, 3)  # of a scores value: sample, output_sha256, label, scorer, task


@with_gc_paused  # ~10^6 tuples and strings built, no cycles: the collector's passes were pure cost
def diff_bundles(a: BundleSource, b: BundleSource) -> BundleDiff:
    """Compare bundle A with bundle B (see the module docstring).

    Raises ``DiffError`` for a bundle without analysis files or with a malformed or newer
    record, ``compiler.plan.PlanError`` for an unreadable or tampered plan.
    """
    conds = Conditions()
    cache: dict[Any, Any] = {}
    da, db = SideData(a, "A", conds, cache), SideData(b, "B", conds, cache)
    setup, hashes = _setup(da, db)
    outputs = _outputs(da.scores, db.scores, conds.labels, db.diffs.get(SCORES))
    flips = _flips(da.flips, db.flips, conds.labels, db.diffs.get(FLIPS))
    stats_a, stats_b = _numeric_leaves(da.stats), _numeric_leaves(db.stats)
    diff = BundleDiff(
        a=_side(da, hashes[0]), b=_side(db, hashes[1]), same_bundle=a.bundle_id == b.bundle_id,
        setup=setup, outputs=outputs, flips=flips, stats=_stats(stats_a, stats_b))
    diff._stats_a, diff._stats_b = da.stats, db.stats
    return diff


def _side(d: SideData, plan_hash: str | None) -> BundleSide:
    m = d.src.manifest
    return BundleSide(bundle_id=d.src.bundle_id, kind=m.kind, parent=m.parent, where=d.src.where,
                      plan_hash=plan_hash, samples=len(d.scores), flip_rows=len(d.flips))


# --- setup ------------------------------------------------------------------------------


def _plan_hash_of(raw: bytes) -> str | None:
    # Only shown (the plans' bytes decide sameness), so a 30k-sample plan is not parsed for it:
    # in JSON the byte string below can only be an object key; taken when it occurs once.
    marker = b'"plan_hash":"'
    if raw.count(marker) == 1:
        i = raw.index(marker) + len(marker)
        j = raw.find(b'"', i)
        value = raw[i:j].decode("utf-8", "replace")
        if value.startswith("sha256:"):
            return value
    try:
        value = orjson.loads(raw).get("plan_hash")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _setup(da: SideData, db: SideData) -> tuple[SetupDiff, tuple[str | None, str | None]]:
    plan_diff, locators_changed = None, False
    pa_digest, pb_digest = da.digest(PLAN), db.digest(PLAN)
    if pa_digest is None or pb_digest is None:
        hashes = tuple(_plan_hash_of(d.src.read(PLAN)) if dg else None
                       for d, dg in ((da, pa_digest), (db, pb_digest)))
    elif pa_digest == pb_digest:
        # Byte-identical plans: nothing to compare, and no need to validate 30k samples twice.
        h = _plan_hash_of(da.src.read(PLAN))
        hashes = (h, h)
    else:
        pa = plan_from_bytes(da.src.read(PLAN), f"A ({da.src.bundle_id}): {PLAN}")
        pb = plan_from_bytes(db.src.read(PLAN), f"B ({db.src.bundle_id}): {PLAN}")
        plan_diff = diff_plans(pa, pb)
        locators_changed = pa.locators != pb.locators
        hashes = (pa.plan_hash, pb.plan_hash)
    names_a, names_b = da.src.names, db.src.names
    files = []
    for name in sorted(names_a | names_b):
        if name not in names_b:
            files.append(FileChange(name=name, status="only_a"))
        elif name not in names_a:
            files.append(FileChange(name=name, status="only_b"))
        elif da.digest(name) != db.digest(name):
            files.append(FileChange(name=name, status="changed"))
    spec_files = [f for f in files if f.name.startswith(layout.SPEC_DIR)]
    scorers = _scorers(da.scores, db.scores)
    env = _environment(da.environment, db.environment)
    n_plan = 0
    if plan_diff is not None:
        pd = plan_diff
        # Sample changes follow from the others (a new batch size adds samples): counted once.
        n_plan = (len(pd.settings) + len(pd.inputs) + len(pd.prompts_added) + len(pd.prompts_removed)
                  + len(pd.phases) + len(pd.engines) + len(pd.models)
                  + int(bool(pd.samples_added or pd.samples_removed or pd.samples_regrouped))) or int(not pd.same)
    elif hashes[0] != hashes[1]:
        n_plan = 1  # a plan on one side only
    changes = (n_plan + int(locators_changed) + len(spec_files) + len(scorers)
               + env.changed + env.only_a + env.only_b)
    same_plan = hashes[0] is not None and hashes[0] == hashes[1]
    return SetupDiff(same_plan=same_plan, plan=plan_diff, locators_changed=locators_changed,
                     spec_files=spec_files, scorers=scorers, environment=env, files=files,
                     changes=changes), hashes  # type: ignore[return-value]


def _scorers(sa: dict[Key, tuple[Any, ...]], sb: dict[Key, tuple[Any, ...]]) -> list[ScorerChange]:
    def by_task(index: dict[Key, tuple[Any, ...]]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for task, scorer in set(map(_TASK_SCORER, index.values())):
            out[str(task)].add(str(scorer))
        return out

    ta, tb = by_task(sa), by_task(sb)
    return [ScorerChange(task=t, a=sorted(ta.get(t, ())), b=sorted(tb.get(t, ())))
            for t in sorted(ta.keys() | tb.keys()) if ta.get(t) != tb.get(t)]


def _environment(ea: dict[str, Any] | None, eb: dict[str, Any] | None) -> EnvironmentDiff:
    if ea is None and eb is None:
        return EnvironmentDiff()
    fa = flatten(ea or {}, string_lists=True)
    fb = flatten(eb or {}, string_lists=True)
    changes: list[ValueChange] = []
    counts = {"changed": 0, "only_a": 0, "only_b": 0}
    for path in sorted(fa.keys() | fb.keys()):
        status = "only_b" if path not in fa else "only_a" if path not in fb else (
            "changed" if fa[path] != fb[path] or type(fa[path]) is not type(fb[path]) else None)
        if status is None:
            continue
        counts[status] += 1
        if len(changes) < MAX_ENV_CHANGES:
            changes.append(ValueChange(path=format_path(path), status=status, a=fa.get(path), b=fb.get(path)))
    total = sum(counts.values())
    return EnvironmentDiff(present=(ea is not None, eb is not None), changes=changes,
                           truncated=total > len(changes), **counts)


# --- outputs ----------------------------------------------------------------------------


def _outputs(sa: dict[Key, tuple[Any, ...]], sb: dict[Key, tuple[Any, ...]],
             labels: dict[tuple[Any, ...], str], diffs: list[int] | None) -> OutputsDiff:
    cells = tally_outputs(sa, sb, labels, diffs)
    rows = []
    tot = [0, 0, 0, 0, 0]
    for ck, c in cells.items():
        tot = [x + y for x, y in zip(tot, c)]
        rows.append(OutputCell(phase=str(ck[0]), condition=ck[1], matched=c[0], identical=c[1],
                               identical_rate=_rate(c[1], c[0]), labels_changed=c[2], only_a=c[3], only_b=c[4]))
    return OutputsDiff(matched=tot[0], identical=tot[1], identical_rate=_rate(tot[1], tot[0]),
                       labels_changed=tot[2], only_a=tot[3], only_b=tot[4], by_condition=rows)


def _rate(k: int, n: int) -> float | None:
    return k / n if n else None


# --- flips ------------------------------------------------------------------------------


def _flips(fa: dict[Key, tuple[Any, ...]], fb: dict[Key, tuple[Any, ...]],
           labels: dict[tuple[Any, ...], str], diffs: list[int] | None) -> FlipsDiff:
    cells, disagreements, n_dis, rows_only_a, rows_only_b = tally_flips(fa, fb, labels, diffs, MAX_DISAGREEMENTS)
    groups: dict[str, dict[tuple[Any, ...], list[int]]] = {"by_model": {}, "by_model_condition": {},
                                                            "by_phase": {}, "by_cell": {}}
    total = [0] * 6
    for (phase, model, cond), c in cells.items():
        total = [x + y for x, y in zip(total, c)]
        for name, gk in (("by_model", (None, model, None)), ("by_model_condition", (None, model, cond)),
                         ("by_phase", (phase, None, None)), ("by_cell", (phase, model, cond))):
            g = groups[name].setdefault(gk, [0] * 6)
            g[:] = [x + y for x, y in zip(g, c)]

    def cell_model(gk: tuple[Any, ...], c: list[int]) -> AgreementCell:
        p, m, cond = gk
        return AgreementCell(phase=None if p is None else str(p), model=None if m is None else str(m),
                             condition=cond, matched=c[0], agree=c[1], both_flipped=c[2],
                             direction_disagreements=c[3], only_a=c[4], only_b=c[5], rate=_rate(c[1], c[0]))

    built = {name: [cell_model(gk, c) for gk, c in g.items()] for name, g in groups.items()}
    return FlipsDiff(matched=total[0], rows_only_a=rows_only_a, rows_only_b=rows_only_b, both_flipped=total[2],
                     direction_disagreements=total[3], only_a=total[4], only_b=total[5],
                     neither=total[1] - total[2], agreement=_rate(total[1], total[0]),
                     disagreements=disagreements, disagreements_total=n_dis,
                     truncated=n_dis > len(disagreements), **built)


# --- stats ------------------------------------------------------------------------------


def _numeric_leaves(stats: dict[str, Any]) -> tuple[dict[tuple[str, ...], Any], dict[tuple[str, ...], str]]:
    """Number, boolean and null leaves (strings are descriptions, not results), and the
    written paths of their containers."""
    return numeric_leaves(stats)


def _stats(sa: tuple[dict[tuple[str, ...], Any], dict[tuple[str, ...], str]],
           sb: tuple[dict[tuple[str, ...], Any], dict[tuple[str, ...], str]]) -> StatsDiff:
    (la, ta), (lb, tb) = sa, sb
    common = list(la.keys() & lb.keys())
    xs, ys = list(map(la.__getitem__, common)), list(map(lb.__getitem__, common))
    # Equal values of one type cannot differ (no NaN in parsed JSON): only the others are
    # looked at, in C first (half of the 300k bench's 65k leaves are equal).
    look = compress(range(len(common)), map(or_, map(ne, xs, ys), map(is_not, map(type, xs), map(type, ys))))
    changed = []
    for i in look:
        x, y = xs[i], ys[i]
        if is_number(x) and is_number(y):
            if abs(float(y) - float(x)) <= STATS_TOLERANCE and isinstance(x, bool) == isinstance(y, bool):
                continue
            changed.append((common[i], x, y, float(y) - float(x)))
        elif x is not y:  # None on one side only (both None: no change)
            changed.append((common[i], x, y, None))
    changed.sort(key=itemgetter(0))  # by path, as the report lists them
    write_a, write_b = leaf_writer(ta), leaf_writer(tb)
    # One validation of the whole list: faster than a model per change (32k at 300k samples).
    return StatsDiff.model_validate({
        "leaves": (len(la), len(lb)),
        "changed": [{"path": write_a(p), "a": x, "b": y, "delta": d} for p, x, y, d in changed],
        "only_a": [write_a(p) for p in sorted(la.keys() - lb.keys())],
        "only_b": [write_b(p) for p in sorted(lb.keys() - la.keys())]})
