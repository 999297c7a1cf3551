"""``--fail-on METRIC<op>VALUE``: ``batchsafe diff`` as a deployment gate.

A gate names a metric of the diff and a threshold; it FAILS when ``value <op> threshold``
holds (``b.stats.p1.flip_rate.safety>0.05`` fails when B's safety flip rate is above 5 %).
Ops: ``> >= < <= == !=`` (``==``/``!=`` up to float noise, 1e-9 relative). The threshold is
a number, optionally with ``%`` (``5%`` is 0.05). A metric that exists but is undefined
(an agreement over no rows, a statistic that is null) fails: a gate never passes on
nothing. A metric that does not exist is a usage error (``UnknownMetricError``), listing
close matches, never a silent pass.

Metric paths (``verification.diff_paths`` syntax; model ids and condition labels with
dots or ``=`` go in brackets: ``agreement.by_model["llama3.2-1b"]``)::

    agreement.overall | .by_model.<m> | .by_model_condition.<m>.<cond> | .by_phase.<p>
        | .by_cell.<p>.<m>.<cond>
    flips.<counter> | flips.by_model.<m>.<counter> | flips.by_model_condition.<m>.<cond>.<counter>
        counters: matched both_flipped direction_disagreements only_a only_b neither (and, overall
        only, rows_only_a rows_only_b disagreements)
    outputs.<matched|identical|identical_rate|differing|labels_changed|only_a|only_b>
        | outputs.by_condition.<phase>.<cond>.<same fields>
    setup.<changes|same_plan|spec_files|scorer_changes|environment_changes|files_changed>
    a.stats.<path> | b.stats.<path> | delta.stats.<path>   (delta = b - a; a {k, n, rate}
        block stands for its rate, as in spec targets)
"""

from __future__ import annotations

from batchsafe.core.errors import BatchsafeError

import difflib
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from .diff_models import AgreementCell, BundleDiff, Gate, GateResult
from .diff_paths import (
    Path,
    PathSyntaxError,
    flatten,
    format_path,
    is_number,
    parse_path,
    parse_path_prefix,
)

OPS = (">=", "<=", "==", "!=", ">", "<")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?%?")
_COUNTERS = ("matched", "both_flipped", "direction_disagreements", "only_a", "only_b")


class GateError(BatchsafeError, ValueError):
    """A ``--fail-on`` that cannot be used (the CLI exits 2: a usage error, not a failed gate)."""


class GateSyntaxError(GateError):
    """A gate that cannot be parsed."""


class UnknownMetricError(GateError):
    """A gate naming a metric the diff does not have."""

    def __init__(self, message: str, unknown: Sequence[str]) -> None:
        super().__init__(message)
        self.unknown = list(unknown)
        """The unknown metric paths as written."""


def parse_gate(text: str) -> Gate:
    """``METRIC<op>VALUE`` (spaces around the op allowed) -> Gate; GateSyntaxError explains what is wrong."""
    s = text.strip()
    try:
        path, pos = parse_path_prefix(s)
    except PathSyntaxError as exc:
        raise GateSyntaxError(f"--fail-on {text!r}: {exc}") from None
    rest = s[pos:].lstrip()
    op = next((o for o in OPS if rest.startswith(o)), None)
    if op is None:
        raise GateSyntaxError(f"--fail-on {text!r}: expected one of {' '.join(OPS)} after the metric "
                              f"{format_path(path)!r}, found {rest[:10]!r}")
    num = rest[len(op):].strip()
    if not _NUMBER.fullmatch(num):
        raise GateSyntaxError(f"--fail-on {text!r}: threshold {num!r} is not a number (e.g. 0.05 or 5%)")
    value = float(num[:-1]) / 100 if num.endswith("%") else float(num)
    if not math.isfinite(value):
        raise GateSyntaxError(f"--fail-on {text!r}: threshold {num!r} is not finite")
    return Gate(metric=format_path(path), path=path, op=op, threshold=value)  # type: ignore[arg-type]


def format_gate(gate: Gate) -> str:
    """The canonical text of ``gate``; ``parse_gate(format_gate(g)) == g``."""
    return f"{gate.metric}{gate.op}{gate.threshold!r}"


def _num(value: Any) -> float | None:
    return float(value) if is_number(value) else None


def _put_cells(out: dict[Path, float | None], cells: Iterable[AgreementCell], prefix: Path,
               key: Any, counters: bool) -> None:
    for c in cells:
        k = prefix + key(c)
        out[("agreement", *k)] = c.rate
        if counters:
            for counter in _COUNTERS:
                out[("flips", *k, counter)] = float(getattr(c, counter))


def metric_paths(diff: BundleDiff) -> dict[Path, float | None]:
    """Every metric a gate can name, with its value (None: undefined)."""
    out: dict[Path, float | None] = {}
    f = diff.flips
    out[("agreement", "overall")] = f.agreement
    for name in (*_COUNTERS, "neither", "rows_only_a", "rows_only_b"):
        out[("flips", name)] = float(getattr(f, name))
    out[("flips", "disagreements")] = float(f.disagreements_total)
    _put_cells(out, f.by_model, ("by_model",), lambda c: (c.model,), True)
    _put_cells(out, f.by_model_condition, ("by_model_condition",), lambda c: (c.model, c.condition), True)
    _put_cells(out, f.by_phase, ("by_phase",), lambda c: (c.phase,), False)
    _put_cells(out, f.by_cell, ("by_cell",), lambda c: (c.phase, c.model, c.condition), False)
    o = diff.outputs
    fields = ("matched", "identical", "identical_rate", "labels_changed", "only_a", "only_b")
    for name in fields:
        out[("outputs", name)] = _num(getattr(o, name))
    out[("outputs", "differing")] = float(o.matched - o.identical)
    for cell in o.by_condition:
        for name in fields:
            out[("outputs", "by_condition", cell.phase, cell.condition, name)] = _num(getattr(cell, name))
        out[("outputs", "by_condition", cell.phase, cell.condition, "differing")] = float(cell.matched - cell.identical)
    s = diff.setup
    env = s.environment
    out.update({("setup", "changes"): float(s.changes), ("setup", "same_plan"): float(s.same_plan),
                ("setup", "spec_files"): float(len(s.spec_files)), ("setup", "scorer_changes"): float(len(s.scorers)),
                ("setup", "environment_changes"): float(env.changed + env.only_a + env.only_b),
                ("setup", "files_changed"): float(len(s.files))})
    sides = {}
    for side, stats in (("a", diff._stats_a), ("b", diff._stats_b)):
        leaves = {p: v for p, v in flatten(stats).items() if v is None or is_number(v)}
        sides[side] = leaves
        for p, v in leaves.items():
            out[(side, "stats", *p)] = _num(v)
    for p in sides["a"].keys() & sides["b"].keys():
        x, y = _num(sides["a"][p]), _num(sides["b"][p])
        out[("delta", "stats", *p)] = None if x is None or y is None else y - x
    return out


def _suggest(path: Path, known: dict[Path, Any]) -> str:
    written = format_path(path)
    close = difflib.get_close_matches(written, [format_path(p) for p in known], n=5, cutoff=0.6)
    hints = []
    for k in range(len(path) - 1, 0, -1):
        prefix = path[:k]
        children = sorted({p[k] for p in known if len(p) > k and p[:k] == prefix})
        if children:
            shown = ", ".join(format_path((c,)) for c in children[:12])
            more = f" (+{len(children) - 12} more)" if len(children) > 12 else ""
            hints.append(f"under {format_path(prefix)}: {shown}{more}")
            break
    if close:
        hints.insert(0, "did you mean " + " or ".join(close))
    if not hints:
        hints.append("metrics start with " + ", ".join(sorted({p[0] for p in known})))
    return f"{written}: " + "; ".join(hints)


def _holds(op: str, x: float, t: float) -> bool:
    if op in ("==", "!="):
        same = math.isclose(x, t, rel_tol=1e-9, abs_tol=1e-12)
        return same if op == "==" else not same
    return {">": x > t, ">=": x >= t, "<": x < t, "<=": x <= t}[op]


def evaluate_gates(diff: BundleDiff, gates: Sequence[Gate]) -> list[GateResult]:
    """One result per gate, in order; UnknownMetricError (before any is evaluated) for unknown metrics."""
    if not gates:
        return []
    known = metric_paths(diff)
    unknown = [g for g in gates if g.path not in known]
    if unknown:
        lines = [_suggest(g.path, known) for g in unknown]
        raise UnknownMetricError("unknown --fail-on metric" + ("s" if len(lines) > 1 else "") + ":\n  "
                                 + "\n  ".join(lines), [g.metric for g in unknown])
    results = []
    for g in gates:
        value = known[g.path]
        shown = f"{g.metric} {g.op} {g.threshold:g}"
        if value is None:
            failed, msg = True, f"FAIL {shown}: the value is undefined (nothing to compare), so the gate cannot pass"
        else:
            failed = _holds(g.op, value, g.threshold)
            msg = f"{'FAIL' if failed else 'pass'} {shown}: value {value:.6g}"
        results.append(GateResult(metric=g.metric, op=g.op, threshold=g.threshold, value=value, failed=failed,
                                  message=msg))
    return results


def exit_code(results: Sequence[GateResult]) -> int:
    """1 when any gate failed, else 0 (usage errors are the caller's exit 2)."""
    return int(any(r.failed for r in results))


def with_gates(diff: BundleDiff, results: Sequence[GateResult]) -> BundleDiff:
    """``diff`` with its ``gates`` filled, for ``--json``."""
    return diff.model_copy(update={"gates": list(results)})


__all__ = ["GateError", "GateSyntaxError", "UnknownMetricError", "evaluate_gates", "exit_code", "format_gate",
           "metric_paths", "parse_gate", "parse_path", "with_gates"]
