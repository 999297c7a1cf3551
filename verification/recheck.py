"""Verify stages 5-7: what a bundle's analysis claims, recomputed from its outputs and scores.

5. **rescoring**: the recorded scorer versions give the recorded scores from the outputs;
6. **statistics**: the flip registry, statistics, targets and report follow from the scores;
7. **targets**: the spec's reproducibility targets hold.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from batchsafe.analysis.analyze import analyze_scored
from batchsafe.analysis.flips import RecordError
from batchsafe.core import layout
from batchsafe.analysis.records import ScoredSample
from batchsafe.analysis.scoring import ScoringError
from batchsafe.analysis.stats.protocol_wiring import alignment_of
from batchsafe.compiler.plan import Plan

from .checks import (
    FLIPS,
    OUTPUTS,
    PLAN,
    REPORT,
    SCORES,
    STATS,
    TARGETS,
    Context,
    validated,
)
from .proofs import rescore, same_jsonl
from .report import Stage

REL_TOL = 1e-9


# -- 5. rescoring ----------------------------------------------------------------------------


def recorded_overrides(plan: Plan, scorers: list[str], st: Stage) -> dict[str, str] | None:
    """Scorer name -> the one version the scores record (rescored bundles differ from the plan)."""
    refs: dict[str, set[str]] = {}
    for ref in set(scorers):
        refs.setdefault(ref.split("@", 1)[0], set()).add(ref)
    out = {}
    for name, versions in sorted(refs.items()):
        if len(versions) > 1:
            st.fail(f"{SCORES}: scorer {name} is recorded at several versions ({', '.join(sorted(versions))})")
            return None
        out[name] = next(iter(versions))
    planned = {p.scorer.split("@", 1)[0] for p in plan.prompts}
    return {k: v for k, v in out.items() if k in planned}


def check_rescoring(ctx: Context) -> Stage:
    """Score the outputs again with the recorded scorer versions; every record must match."""
    st = Stage(name="rescoring")
    if ctx.missing_input(st, PLAN, OUTPUTS, SCORES) or None in (ctx.plan, ctx.outputs, ctx.score_scorers):
        return st if st.status == "SKIP" else st.skip("plan, outputs or scores unreadable")
    assert ctx.plan is not None and ctx.outputs is not None and ctx.score_scorers is not None
    overrides = recorded_overrides(ctx.plan, [str(r) for r in ctx.score_scorers], st)
    if overrides is None:
        return st
    if SCORES in ctx.proven:  # the schemas stage rescored with the plan's versions: these very bytes
        again = ctx.rescored
    else:
        try:
            again = rescore(ctx, overrides)
        except ScoringError as exc:
            st.fail(f"{OUTPUTS}: cannot be rescored: {exc}")
            return st
    ctx.rescored = again
    refs = ", ".join(sorted({r.scorer for r in again}))
    if SCORES in ctx.proven or same_jsonl(again, ctx.src.read(SCORES)):
        ctx.scored = again  # byte-identical: the recorded records are these, valid by construction
        st.summary = f"{len(again):,} samples rescored with {refs}: byte-identical to {SCORES}"
        return st
    recorded_list = validated(ctx, SCORES, st)
    if recorded_list is None:
        return st
    recorded = {r.sample: r for r in recorded_list}
    # Say what is wrong before comparing fields: a sample scored without an output (its
    # output line was deleted) or an output never scored is not a serialisation detail.
    rescored_ids = {r.sample for r in again}
    for sid in sorted(set(recorded) - rescored_ids):
        st.fail(f"{SCORES}: sample {sid} is scored, but its output is missing from {OUTPUTS}")
    for sid in sorted(rescored_ids - set(recorded)):
        st.fail(f"sample {sid} missing from {SCORES}")
    for new in again:
        old = recorded.get(new.sample)
        if old is None or old == new:
            continue
        for k in _diff_fields(old, new):
            st.fail(f"{SCORES}: sample {new.sample}: {k} recorded {getattr(old, k)!r}, rescoring with "
                    f"{new.scorer} gives {getattr(new, k)!r}")
    if st.status == "PASS":
        st.fail(f"{SCORES}: records match but the file is not their canonical serialisation in plan order")
    st.summary = f"{st.n_problems} rescoring difference(s)"
    return st


def _diff_fields(a: ScoredSample, b: ScoredSample) -> list[str]:
    da, db = a.model_dump(mode="json"), b.model_dump(mode="json")
    return [k for k in da if da[k] != db[k]]


# -- 6. statistics ---------------------------------------------------------------------------


def numeric_diffs(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths where two JSON values differ (numbers beyond a relative 1e-9), each with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            sub = f"{path}.{k}" if path else str(k)
            if k not in a:
                out.append(f"{sub}: absent, recomputed {_short(b[k])}")
            elif k not in b:
                out.append(f"{sub}: recorded {_short(a[k])}, absent when recomputed")
            else:
                out += numeric_diffs(a[k], b[k], sub)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in numeric_diffs(x, y, f"{path}[{i}]")]
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool) and not isinstance(b, bool):
        if math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12):
            return []
    elif a == b:
        return []
    return [f"{path}: recorded {_short(a)}, recomputed {_short(b)}"]


def _short(v: Any) -> str:
    text = orjson.dumps(v).decode()
    return text if len(text) <= 60 else text[:57] + "..."


def check_statistics(ctx: Context) -> Stage:
    """Flip registry, statistics, targets and report recomputed from the recorded scores."""
    st = Stage(name="statistics")
    if ctx.missing_input(st, PLAN, SCORES) or ctx.plan is None:
        return st if st.status == "SKIP" else st.skip("plan or scores unreadable")
    if validated(ctx, SCORES, st) is None:
        return st
    assert ctx.scored is not None
    plan = ctx.plan
    proven_flips = ctx.flips if FLIPS in ctx.proven else None
    try:
        res = analyze_scored(ctx.scored, flips=proven_flips, settings=plan.analysis, targets=plan.targets,
                             plan_summary=plan.summary(),
                             title=str(plan.experiment.get("title") or plan.experiment.get("id") or ""),
                             phase_order=[p.id for p in plan.phases], plots=False, alignment=alignment_of(plan))
    except RecordError as exc:  # e.g. an output byte-identical to its baseline but scored differently
        st.fail(f"{SCORES}: {exc}")
        st.summary = "the scored records are inconsistent: nothing could be recomputed from them"
        return st
    ctx.targets, ctx.stats = res.targets, res.stats
    checked = []
    if ctx.usable(FLIPS) and proven_flips is None and not same_jsonl(res.flips, ctx.src.read(FLIPS)) \
            and validated(ctx, FLIPS, st) is not None:
        recorded = {r.sample: r for r in ctx.flips or []}
        for row in res.flips:
            old = recorded.get(row.sample)
            if old is not None and old != row:
                a, b = old.model_dump(mode="json"), row.model_dump(mode="json")
                fields = [k for k in b if a.get(k) != b[k]]
                st.fail(f"{FLIPS}: sample {row.sample}: {', '.join(fields)} recorded "
                        f"{[a.get(k) for k in fields]}, recomputed {[b[k] for k in fields]}")
        if st.status == "PASS":
            st.fail(f"{FLIPS}: rows match but the file is not their canonical serialisation")
    if ctx.usable(FLIPS):
        checked.append(FLIPS)
    for name, value in ((STATS, res.stats), (TARGETS, res.targets)):
        if name in ctx.json:
            for d in numeric_diffs(ctx.json[name], value):
                st.fail(f"{name}: {d}")
            checked.append(name)
    if ctx.usable(REPORT):
        plots = sorted(n.removeprefix(layout.ANALYSIS_DIR) for n in ctx.src.names if n.startswith(layout.PLOTS_DIR))
        from batchsafe.analysis.analyze import headline, headline_rows
        from batchsafe.analysis.report import render_report

        order = [p.id for p in plan.phases]
        # analyze_scored rendered it with the same arguments and no figures: reuse that when the bundle has none.
        text = res.report if not plots else render_report(
            res.stats, res.targets, title=str(plan.experiment.get("title") or plan.experiment.get("id") or ""),
            plan_summary=plan.summary(), plots=plots, phase_order=order,
            headline=headline_rows(headline(res.stats, res.targets), order))
        # A derived bundle (rescore, adjudication) may append sections; the analysis part must match.
        if not ctx.src.read(REPORT).decode("utf-8", "replace").startswith(text):
            st.fail(f"{REPORT}: does not match the report rendered from the recomputed statistics")
        checked.append(REPORT)
    st.summary = (f"recomputed from {SCORES}: {', '.join(checked)} identical" if st.status == "PASS"
                  else f"{st.n_problems} difference(s) from the recomputed statistics")
    return st


# -- 7. targets ------------------------------------------------------------------------------


def check_targets(ctx: Context) -> Stage:
    """Every reproducibility target of the spec passes (recomputed, not read from targets.json)."""
    st = Stage(name="targets")
    if ctx.targets is None:
        return st.skip("statistics could not be recomputed")
    results = ctx.targets.get("targets") or []
    if not results:
        return st.skip("the spec sets no targets")
    for t in results:
        if t["status"] != "pass":
            bound = t.get("value", [t.get("low"), t.get("high")])
            why = t.get("reason") or f"{t['metric']} = {t.get('actual')} is not {t['op']} {bound}"
            st.fail(f"target {t.get('id')}: {t['status']}: {why}")
    st.summary = f"{len(results) - st.n_problems} of {len(results)} targets pass"
    return st
