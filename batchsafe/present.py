"""Tables printed by the CLI (rich). Presentation only: no stage logic here.

Every table fits an 80-column terminal without cutting an identifier short: tables have
no vertical rules, identifier columns wrap (``overflow="fold"``) instead of ending in
"…", related short fields share a cell on separate lines (phase over kind; engine,
dispatch and the models), and the only deliberate shortening is of digests, which
``--json`` prints in full.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.table import Table

DIGEST_SHOWN = 7 + 16
"""``sha256:`` and 16 hex digits of a file digest in ``bundle show`` (``--json`` has all 64)."""


def _table(title: str) -> Table:
    """A table without vertical rules: columns apart by two spaces, not by " │ " and padding."""
    return Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))


def _col(table: Table, header: str, *, numeric: bool = False) -> None:
    """Numbers right-aligned and never wrapped; identifiers wrapped, never truncated."""
    if numeric:
        table.add_column(header, justify="right", no_wrap=True)
    else:
        table.add_column(header, overflow="fold")


def plan_table(plan: Any) -> Table:
    """Phases of a plan with their counts."""
    table = _table(f"{plan.experiment.get('id')}\n{plan.plan_hash}")
    table.min_width = len(plan.plan_hash)  # the hash in the title on one line (71 columns)
    # Short fields stacked in one cell (phase over kind; engine, dispatch, then one model per
    # line) so that the widest identifiers (quant_concurrency, model names) need no cut.
    for col in ("phase\nkind", "engine\ndispatch\nmodels"):
        _col(table, col)
    for col in ("prompts", "conds", "groups", "samples"):
        _col(table, col, numeric=True)
    for p in plan.phases:
        table.add_row(f"{p.id}\n{p.kind}", "\n".join([p.engine, p.dispatch, *p.models]), str(p.prompts),
                      str(p.conditions), str(p.groups), str(p.samples))
    table.add_row("total", "", str(len(plan.prompts)), "", str(len(plan.groups)), str(len(plan.samples)))
    return table


def identity_table(rows: list[Any]) -> Table:
    """Byte identity of outputs against their baselines, per phase, model and condition."""
    table = _table("outputs vs baseline (byte identity)")
    for col, right in (("phase", False), ("model", False), ("condition", False), ("compared", True),
                       ("identical", True), ("differ", True)):
        _col(table, col, numeric=right)
    for r in rows:
        share = f"{100 * r.identical / r.compared:.1f}%" if r.compared else "-"
        table.add_row(r.phase, r.model, r.condition, str(r.compared), f"{r.identical} ({share})", str(r.differing))
    return table


def manifest_table(manifest: Any) -> Table:
    """Files of a bundle."""
    # No media type column (it follows from the name; --json has it): names get the room.
    table = _table(f"kind={manifest.kind} parent={manifest.parent or '-'} batchsafe {manifest.batchsafe_version}")
    _col(table, "name")
    _col(table, "size", numeric=True)
    _col(table, "sha256 (--json: full)", numeric=True)
    for f in manifest.files:
        table.add_row(f.name, str(f.size), f.sha256[:DIGEST_SHOWN] + "…")
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
    table = _table(title)
    for col in cols:
        _col(table, col, numeric=col != "phase")
    for row in headline_rows(head):
        table.add_row(row[0], *row[2:])
    audit = head.get("audit")
    if audit:
        share = "-" if audit.get("unsafe_share") is None else f"{100 * audit['unsafe_share']:.1f}%"
        table.add_row("audit", str(audit.get("candidates")), "", "", "", share, "")
    return table
