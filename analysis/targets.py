"""Spec targets evaluated against the plan summary and the statistics (targets.json).

A target is a structured check, never an expression: a dotted ``metric`` path into
``{"plan": plan.summary(), "stats": stats}``, an ``op`` and its reference value(s).
Every target gets one of three statuses:

- ``pass`` / ``fail``: the metric resolved to a number and the comparison held or not;
- ``not_available``: the path does not exist (a phase that did not run, a plan-only
  metric in a ``--samples`` analysis), the value is None (an undefined statistic such as
  a ratio over zero capability flips), or it is not a number.

A count block (``{"k", "n", "rate"}``, e.g. ``stats.<phase>.identity.overall``) resolves
to its ``rate``, so a target can name the block the report shows. Booleans compare as 1/0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

OPS = ("eq", "ne", "lt", "le", "gt", "ge", "approx", "between")
_MISSING = object()


def resolve_metric(path: str, context: Mapping[str, Any]) -> Any:
    """The value at dotted ``path`` in ``context``, or a sentinel (``is_missing``) when absent.

    Segments index mappings by key and sequences by integer position.
    """
    node: Any = context
    for seg in path.split("."):
        if isinstance(node, Mapping):
            if seg not in node:
                return _MISSING
            node = node[seg]
        elif isinstance(node, Sequence) and not isinstance(node, str) and seg.lstrip("-").isdigit():
            i = int(seg)
            if not -len(node) <= i < len(node):
                return _MISSING
            node = node[i]
        else:
            return _MISSING
    if isinstance(node, Mapping) and {"k", "n", "rate"} <= set(node):
        return node["rate"]
    return node


def is_missing(value: Any) -> bool:
    """Whether ``resolve_metric`` found nothing."""
    return value is _MISSING


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _compare(op: str, x: float, t: Mapping[str, Any]) -> tuple[bool | None, str]:
    """(held, reason); held None when the target lacks what ``op`` needs."""
    value, tol = t.get("value"), t.get("tolerance")
    if op == "between":
        lo, hi = t.get("low"), t.get("high")
        if lo is None and hi is None:
            return None, "between needs low and/or high"
        return (lo is None or x >= lo) and (hi is None or x <= hi), ""
    if value is None:
        return None, f"{op} needs a value"
    if op in ("eq", "ne", "approx"):
        if op == "approx" and tol is None:
            # No tolerance given: equal up to float noise (1e-9 relative).
            same = math.isclose(x, value, rel_tol=1e-9, abs_tol=1e-12)
        else:
            same = abs(x - value) <= tol if tol is not None else x == value
        return (not same) if op == "ne" else same, ""
    held = {"lt": x < value, "le": x <= value, "gt": x > value, "ge": x >= value}.get(op)
    if held is None:
        return None, f"unknown op {op!r} (known: {', '.join(OPS)})"
    return held, ""


def evaluate_target(target: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """One target's result: the target's fields plus ``actual``, ``status`` and ``reason``."""
    metric = str(target.get("metric", ""))
    op = str(target.get("op", ""))
    out: dict[str, Any] = {k: target.get(k) for k in ("id", "metric", "op", "value", "low", "high", "tolerance")
                           if target.get(k) is not None}
    out["description"] = target.get("description", "") or ""
    raw = resolve_metric(metric, context) if metric else _MISSING
    if is_missing(raw):
        return {**out, "actual": None, "status": "not_available", "reason": f"no metric {metric}"}
    x = _number(raw)
    if x is None:
        why = "value is undefined (None)" if raw is None else f"value is not a number ({type(raw).__name__})"
        return {**out, "actual": None, "status": "not_available", "reason": why}
    held, reason = _compare(op, x, target)
    if held is None:
        return {**out, "actual": x, "status": "not_available", "reason": reason}
    return {**out, "actual": raw if isinstance(raw, bool) else x, "status": "pass" if held else "fail",
            "reason": ""}


def evaluate_targets(targets: Sequence[Mapping[str, Any]], plan_summary: Mapping[str, Any] | None,
                     stats: Mapping[str, Any]) -> dict[str, Any]:
    """targets.json: ``{"targets": [...results in spec order], "summary": {pass, fail, not_available}}``.

    ``plan_summary`` None (an analysis of bare scored records) makes every ``plan.*``
    target not_available.
    """
    context: dict[str, Any] = {"stats": stats}
    if plan_summary is not None:
        context["plan"] = plan_summary
    results = [evaluate_target(t, context) for t in targets]
    summary = {s: sum(r["status"] == s for r in results) for s in ("pass", "fail", "not_available")}
    return {"targets": results, "summary": summary}
