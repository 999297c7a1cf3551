"""The text ``batchsafe diff`` prints: setup, output identity, flip agreement, stats, gates."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

from .diff_models import AgreementCell, BundleDiff, GateResult

MAX_LINES = 20
"""Rows shown per list (the JSON output has everything)."""


def _short(value: Any, width: int = 60) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= width else text[: width - 1] + "…"


def _change(where: str, a: Any, b: Any) -> str:
    """One plan change; for two mappings only the keys that differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [k for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]
        return f"{where}: " + "; ".join(f"{k} {_short(a.get(k), 30)} -> {_short(b.get(k), 30)}" for k in keys)
    return f"{where}: {_short(a)} -> {_short(b)}"


def _status(status: str) -> str:
    return {"only_a": "only in A", "only_b": "only in B"}.get(status, status)


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def _capped(rows: Sequence[Any], out: list[str], fmt: Any, indent: str = "  ") -> None:
    for r in rows[:MAX_LINES]:
        out.append(indent + fmt(r))
    if len(rows) > MAX_LINES:
        out.append(f"{indent}… {len(rows) - MAX_LINES} more (see --json)")


def _table(rows: list[list[Any]], headers: list[str]) -> list[str]:
    return ["  " + line for line in tabulate(rows, headers=headers, tablefmt="simple",
                                             disable_numparse=True).splitlines()]


def _setup(d: BundleDiff, out: list[str]) -> None:
    s = d.setup
    out.append(f"Setup: {s.changes} difference{'s' if s.changes != 1 else ''}")
    ha, hb = d.a.plan_hash, d.b.plan_hash
    if s.same_plan:
        out.append(f"  plan: same ({ha})")
    elif ha is None or hb is None:
        out.append(f"  plan: A {ha or 'none'}, B {hb or 'none'}")
    else:
        out.append(f"  plan: {ha} -> {hb}")
    pd = s.plan
    if pd is not None:
        for title, changes in (("settings", pd.settings), ("inputs", pd.inputs), ("phases", pd.phases),
                               ("engines", pd.engines), ("models", pd.models)):
            if changes:
                out.append(f"  {title}:")
                _capped(changes, out, lambda c: _change(c.where, c.a, c.b), "    ")
        if pd.prompts_added or pd.prompts_removed:
            out.append(f"  prompts: +{len(pd.prompts_added)} -{len(pd.prompts_removed)}")
        if pd.samples_added or pd.samples_removed or pd.samples_regrouped:
            out.append(f"  samples: +{pd.samples_added} -{pd.samples_removed}, regrouped {pd.samples_regrouped}")
    elif not s.same_plan and ha and hb and ha != hb:
        out.append("  (plan files not compared)")
    if s.locators_changed:
        out.append("  locators (model sources, endpoints) differ; not part of plan_hash")
    for f in s.spec_files:
        out.append(f"  spec file {f.name}: {_status(f.status)}")
    for c in s.scorers:
        out.append(f"  scorer of task {c.task}: {', '.join(c.a) or '-'} -> {', '.join(c.b) or '-'}")
    e = s.environment
    if e.present == (False, False):
        out.append("  environment.json: in neither bundle")
    elif e.present != (True, True):
        out.append(f"  environment.json: A {'yes' if e.present[0] else 'missing'}, "
                   f"B {'yes' if e.present[1] else 'missing'}")
    if e.changed or e.only_a or e.only_b:
        out.append(f"  environment: {e.changed} changed, {e.only_a} only in A, {e.only_b} only in B")
        _capped(e.changes, out, lambda c: f"{c.path}: {_short(c.a, 40)} -> {_short(c.b, 40)}"
                if c.status == "changed" else f"{c.path}: only in {c.status[-1].upper()} ({_short(c.a or c.b, 40)})",
                "    ")
    if s.files:
        out.append(f"  files differing: {len(s.files)}")
        _capped(s.files, out, lambda f: f"{f.name} ({_status(f.status)})", "    ")


def _outputs(d: BundleDiff, out: list[str]) -> None:
    o = d.outputs
    out.append(f"Outputs: {o.matched:,} samples matched, {o.identical:,} byte-identical ({_pct(o.identical_rate, 2)}), "
               f"{o.labels_changed:,} labels changed; only in A {o.only_a:,}, only in B {o.only_b:,}")
    rows = [[c.phase, c.condition, f"{c.matched:,}", f"{c.identical:,}", _pct(c.identical_rate), f"{c.labels_changed:,}",
             f"{c.only_a:,}", f"{c.only_b:,}"] for c in o.by_condition]
    if rows:
        out += _table(rows, ["phase", "condition", "matched", "identical", "%", "labels changed", "only A", "only B"])


def _agreement_rows(cells: Sequence[AgreementCell], keys: Sequence[str]) -> list[list[Any]]:
    return [[*(getattr(c, k) for k in keys), f"{c.matched:,}", _pct(c.rate), f"{c.both_flipped:,}",
             f"{c.direction_disagreements:,}", f"{c.only_a:,}", f"{c.only_b:,}"] for c in cells]


def _flips(d: BundleDiff, out: list[str]) -> None:
    f = d.flips
    out.append(f"Flip registry: agreement {_pct(f.agreement, 2)} over {f.matched:,} matched rows: "
               f"flipped in both {f.both_flipped:,}, direction disagrees {f.direction_disagreements:,}, "
               f"only A {f.only_a:,}, only B {f.only_b:,}, neither {f.neither:,}")
    if f.rows_only_a or f.rows_only_b:
        out.append(f"  rows not matched: {f.rows_only_a:,} only in A's registry, {f.rows_only_b:,} only in B's")
    counts = ["matched", "agree", "both", "direction", "only A", "only B"]
    if f.by_model:
        out += _table(_agreement_rows(f.by_model, ["model"]), ["model", *counts])
    if f.by_model_condition and len(f.by_model_condition) > len(f.by_model):
        out.append("")
        out += _table(_agreement_rows(f.by_model_condition, ["model", "condition"]), ["model", "condition", *counts])
    if f.disagreements:
        out.append(f"  disagreements ({f.disagreements_total:,}):")
        _capped(f.disagreements, out, lambda r: f"{r.kind:9} {r.phase} {r.model} {r.condition} {r.prompt} "
                f"[{r.task}]  A: {r.a}  B: {r.b}", "    ")


def _stats(d: BundleDiff, out: list[str]) -> None:
    st = d.stats
    out.append(f"Statistics: {len(st.changed):,} of {st.leaves[0]:,} values differ; "
               f"{len(st.only_a):,} only in A, {len(st.only_b):,} only in B")
    top = sorted(st.changed, key=lambda c: (c.delta is None, -abs(c.delta or 0.0), c.path))[:MAX_LINES]
    if top:
        rows = [[c.path, _short(c.a, 14), _short(c.b, 14), "-" if c.delta is None else f"{c.delta:+.4g}"] for c in top]
        out += _table(rows, ["path (largest |delta| first)", "A", "B", "delta"])


def render_diff(diff: BundleDiff, gate_results: Sequence[GateResult] = ()) -> str:
    """The human-readable diff: bundles, setup, output identity, flip agreement, stats, gate PASS/FAIL lines."""
    out = [f"A: {diff.a.bundle_id} ({diff.a.kind}) {diff.a.where}",
           f"B: {diff.b.bundle_id} ({diff.b.kind}) {diff.b.where}"]
    if diff.same_bundle:
        out.append("A and B are the same bundle")
    for part in (_setup, _outputs, _flips, _stats):
        out.append("")
        part(diff, out)
    results = list(gate_results) or diff.gates
    if results:
        failed = sum(r.failed for r in results)
        out += ["", f"Gates: {failed} of {len(results)} failed"]
        out += [f"  {r.message}" for r in results]
    return "\n".join(out) + "\n"
