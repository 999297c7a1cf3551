"""Tables printed by the CLI (rich). Presentation only: no stage logic here."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def plan_table(plan: Any) -> Table:
    """Phases of a plan with their counts."""
    table = Table(title=f"{plan.experiment.get('id')}  {plan.plan_hash}")
    numeric = ("prompts", "conditions", "groups", "samples")
    for col in ("phase", "kind", "engine", "dispatch", "models", *numeric):
        table.add_column(col, justify="right" if col in numeric else "left")
    for p in plan.phases:
        table.add_row(p.id, p.kind, p.engine, p.dispatch, ", ".join(p.models), str(p.prompts), str(p.conditions),
                      str(p.groups), str(p.samples))
    table.add_row("total", "", "", "", "", str(len(plan.prompts)), "", str(len(plan.groups)), str(len(plan.samples)))
    return table


def identity_table(rows: list[Any]) -> Table:
    """Byte identity of outputs against their baselines, per phase, model and condition."""
    table = Table(title="outputs vs baseline (byte identity)")
    for col, right in (("phase", False), ("model", False), ("condition", False), ("compared", True),
                       ("identical", True), ("differ", True)):
        table.add_column(col, justify="right" if right else "left")
    for r in rows:
        share = f"{100 * r.identical / r.compared:.1f}%" if r.compared else "-"
        table.add_row(r.phase, r.model, r.condition, str(r.compared), f"{r.identical} ({share})", str(r.differing))
    return table


def manifest_table(manifest: Any) -> Table:
    """Files of a bundle."""
    table = Table(title=f"kind={manifest.kind} parent={manifest.parent or '-'} batchsafe {manifest.batchsafe_version}")
    for col in ("name", "size", "sha256", "media type"):
        table.add_column(col, justify="right" if col == "size" else "left")
    for f in manifest.files:
        table.add_row(f.name, str(f.size), f.sha256[:23] + "…", f.media_type)
    return table


def headline_table(result: Any) -> Table:
    """Headline numbers per phase (``MakeResult``/``AnalysisResult``, or their ``headline`` dict)."""
    from batchsafe.analysis.analyze import headline_rows

    head = result if isinstance(result, dict) else getattr(result, "headline", {}) or {}
    # No kind column (plan_table shows kinds): the table must fit an 80-column terminal.
    cols = ("phase", "samples", "safety flip", "capab. flip", "S/C", "unsafe", "identical")
    t = head.get("targets") or {}
    title = "analysis headline"
    if t:
        title += f"  targets: {t.get('pass', 0)} passed, {t.get('fail', 0)} failed, {t.get('not_available', 0)} n/a"
    table = Table(title=title)
    for col in cols:
        table.add_column(col, justify="left" if col == "phase" else "right")
    for row in headline_rows(head):
        table.add_row(row[0], *row[2:])
    audit = head.get("audit")
    if audit:
        share = "-" if audit.get("unsafe_share") is None else f"{100 * audit['unsafe_share']:.1f}%"
        table.add_row("audit", str(audit.get("candidates")), "", "", "", share, "")
    return table
