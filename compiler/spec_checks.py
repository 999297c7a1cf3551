"""Spec-only checks that used to surface late (while loading data or scheduling).

``validate`` promises to reject whatever ``compile`` would reject for reasons found in
the spec alone, so these run inside ``Checker.run`` (used by both).  Each check here
repeats, earlier and positioned, a rule that a later compile stage also enforces, with
the same message where the later stage has one (so one problem prints once):

* axis lists hold no duplicate values (a duplicate would schedule two samples with one
  id); every list-valued axis is checked, including axes added later;
* an explicit ``baseline`` names axes the phase sets, with values among the axis values;
* data paths are relative and stay inside their root; ``sha256`` does not pin a glob;
* targets name phases, models and top-level metrics the plan can produce;
* seeds satisfy ``0 <= seed < 2**63`` and every integer fits a signed 64-bit integer
  (engines and JSON consumers take them as int64); integers under ``engines`` (context
  size, batch, threads) stay below ``2**31``, as they reach C ``int`` parameters.
"""

from __future__ import annotations

import glob
from pathlib import PurePosixPath
from typing import Any

from .diagnostics import Diagnostic, did_you_mean, join_names, show_value
from .schedule import axis_values
from .spec import Spec
from .spec_protocol_checks import protocol_checks
from .yamlspec import LocatedDoc, diag_at

__all__ = ["spec_only_checks", "SEED_LIMIT", "INT64_LIMIT", "ENGINE_INT_LIMIT", "STATS_RESERVED", "PLAN_SUMMARY_KEYS"]

SEED_LIMIT = 2 ** 63
"""Seeds are ``0 <= seed < 2**63`` (documented in ARCHITECTURE.md, stage 1)."""
INT64_LIMIT = 2 ** 63
"""Any integer in a spec must satisfy ``-2**63 <= n < 2**63``."""
ENGINE_INT_LIMIT = 2 ** 31
"""Integers under ``engines`` (context size, batch, threads) reach C ``int`` parameters: ``< 2**31``."""
STATS_RESERVED = frozenset({"meta", "audit", "cross_phase"})
"""Top-level stats keys that are not phase ids (``analysis.stats.core.RESERVED``; a test
keeps them equal: importing it here would load pandas into ``validate``)."""
PLAN_SUMMARY_KEYS = frozenset({"plan_hash", "samples", "groups", "prompts", "phases", "models", "engines", "inputs",
                               "unpinned", "resolved_at_run"})
"""Keys of ``Plan.summary()`` (a test keeps them equal)."""
# Metric path segments after which the next segment names a phase or a model.
_PHASE_AFTER = ("flip_agreement_with", "by_phase")
_MODEL_AFTER = ("by_model",)


def spec_only_checks(spec: Spec, doc: LocatedDoc) -> list[Diagnostic]:
    """Every check of this module (see the module docstring); ``[]`` when all hold."""
    out: list[Diagnostic] = []
    _axis_duplicates(doc, out)
    _baselines(spec, doc, out)
    _data_paths(spec, doc, out)
    _targets(spec, doc, out)
    _integers(doc, doc.data, (), out)
    out += protocol_checks(spec, doc)
    return out


def _axis_duplicates(doc: LocatedDoc, out: list[Diagnostic]) -> None:
    phases = doc.data.get("phases") if isinstance(doc.data, dict) else None
    for i, phase in enumerate(phases if isinstance(phases, list) else []):
        axes = phase.get("axes") if isinstance(phase, dict) else None
        for axis, values in (axes.items() if isinstance(axes, dict) else []):
            if isinstance(values, dict) and isinstance(values.get("conditions"), list):  # cobatch
                axis, values = f"{axis}.conditions", values["conditions"]
                where: tuple = ("phases", i, "axes", "cobatch", "conditions")
            else:
                where = ("phases", i, "axes", axis)
            if not isinstance(values, list):
                continue
            seen: dict[Any, int] = {}
            for j, v in enumerate(values):
                key = _identity(v)
                if key is None:
                    continue
                if key in seen:
                    out.append(diag_at(doc, where + (j,), "duplicate-value",
                                       f"{axis} lists {show_value(key[1])} twice (also item [{seen[key]}])",
                                       "each axis value is one condition; a repeated value would schedule "
                                       "the same samples twice"))
                seen.setdefault(key, j)


def _identity(v: Any) -> tuple | None:
    """What makes an axis value the same condition: the scalar (typed) or a mapping's ``id``."""
    if isinstance(v, dict):
        v = v.get("id")
    return (type(v).__name__, v) if isinstance(v, (str, int, float, bool)) else None


def _baselines(spec: Spec, doc: LocatedDoc, out: list[Diagnostic]) -> None:
    for i, phase in enumerate(spec.phases):
        values = axis_values(phase)
        for axis, value in phase.baseline.items():
            at = ("phases", i, "baseline", axis)
            if axis not in values:
                out.append(diag_at(doc, at, "invalid-value", f"baseline axis {axis!r} is not an axis of this phase",
                                   did_you_mean(axis, values) or "axes set here: " + ", ".join(values), key=True))
            elif not any(type(value) is type(v) and value == v for v in values[axis]):
                out.append(diag_at(doc, at, "invalid-value", f"baseline {axis} {show_value(value)} is not one of the "
                                   f"axis values {join_names(values[axis])}"))


def _data_paths(spec: Spec, doc: LocatedDoc, out: list[Diagnostic]) -> None:
    # Same messages as compile's _load_inputs, which checks the datasets it loads again.
    for name, ds in spec.datasets.items():
        for i, ref in enumerate(ds.files):
            at = ("datasets", name, "files", i, "path")
            p = PurePosixPath(ref.path)
            if p.is_absolute() or ".." in p.parts or "\\" in ref.path or (len(ref.path) > 1 and ref.path[1] == ":"):
                out.append(diag_at(doc, at, "invalid-value", f"data path {ref.path!r} must stay inside the data directory"))
                continue
            if glob.has_magic(ref.path) and ref.sha256:
                out.append(diag_at(doc, ("datasets", name, "files", i, "sha256"), "invalid-value",
                                   "sha256 cannot pin a glob", "list the files one by one to pin each"))


def _targets(spec: Spec, doc: LocatedDoc, out: list[Diagnostic]) -> None:
    phases = [p.id for p in spec.phases]
    models = sorted({m for p in spec.phases for m in p.models})
    for i, t in enumerate(spec.targets):
        segs = t.metric.split(".")
        at = ("targets", i, "metric")
        if segs[0] == "plan" and len(segs) > 1:
            if segs[1] not in PLAN_SUMMARY_KEYS:
                out.append(diag_at(doc, at, "unknown-name", f"metric {t.metric!r}: the plan summary has no {segs[1]!r}",
                                   did_you_mean(segs[1], PLAN_SUMMARY_KEYS) or
                                   "plan metrics: " + join_names(sorted(PLAN_SUMMARY_KEYS))))
            elif segs[1] == "phases" and len(segs) > 2 and segs[2] not in phases:
                out.append(_no_phase(doc, at, t.metric, segs[2], phases))
        elif segs[0] == "stats" and len(segs) > 1:
            # stats.protocol exists only when the spec sets analysis.protocol (analysis.stats.protocol_wiring).
            if segs[1] not in phases and segs[1] not in STATS_RESERVED and not (segs[1] == "protocol"
                                                                                 and spec.analysis.protocol):
                out.append(_no_phase(doc, at, t.metric, segs[1], phases))
            for a, b in zip(segs[1:], segs[2:]):
                if a in _PHASE_AFTER and b not in phases:
                    out.append(_no_phase(doc, at, t.metric, b, phases))
                if a in _MODEL_AFTER and b not in models:
                    out.append(diag_at(doc, at, "unknown-name", f"metric {t.metric!r} names model {b!r}, which no "
                                       "phase runs", did_you_mean(b, models) or "models run: " + join_names(models)))


def _no_phase(doc: LocatedDoc, at: tuple, metric: str, name: str, phases: list[str]) -> Diagnostic:
    return diag_at(doc, at, "unknown-name", f"metric {metric!r} names phase {name!r}, which the plan does not have",
                   did_you_mean(name, phases) or "phases: " + join_names(phases))


def _integers(doc: LocatedDoc, node: Any, path: tuple, out: list[Diagnostic]) -> None:
    """Seeds in range, and every integer within int64 (Python would carry any size onwards)."""
    if isinstance(node, dict):
        for k, v in node.items():
            _integers(doc, v, path + (k,), out)
    elif isinstance(node, list):
        for j, v in enumerate(node):
            _integers(doc, v, path + (j,), out)
    elif isinstance(node, int) and not isinstance(node, bool):
        if path and path[-1] == "seed" and not 0 <= node < SEED_LIMIT:
            out.append(diag_at(doc, path, "out-of-range", f"seed {show_value(node)} is outside 0 <= seed < 2^63",
                               "seeds are non-negative 64-bit integers"))
        elif path[0] == "engines" and abs(node) >= ENGINE_INT_LIMIT and -INT64_LIMIT <= node < INT64_LIMIT:
            out.append(diag_at(doc, path, "out-of-range", f"engine setting {show_value(node)} does not fit 32 bits",
                               "engines take these as C ints: below 2^31"))
        elif not -INT64_LIMIT <= node < INT64_LIMIT:
            out.append(diag_at(doc, path, "out-of-range", f"integer {show_value(node)} does not fit 64 bits",
                               "integers in a spec satisfy -2^63 <= n < 2^63"))
