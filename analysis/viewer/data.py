"""What the HTML report shows, gathered from one bundle (any ``BundleSource``).

Everything here is read from a bundle that may come from a stranger, so nothing is
trusted: files are read through the source (digest-checked), JSON is parsed without
executing anything, rows of an unexpected shape are skipped and counted, and every string
ends up either autoescaped by jinja2 or inside the JSON data block (escaped by
``json_for_script``) from which the page's script builds nodes with ``textContent`` only.

The flip browser's payload is deduplicated: output texts and prompts are stored once and
rows refer to them by index, so a 30k-sample bundle whose outputs mostly repeat stays a
few megabytes.
"""

from __future__ import annotations

import base64
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchsafe.bundles.provenance import STATEMENT_NAME as STATEMENT
from batchsafe.core import layout

from .diffspan import diff_segments

PLAN, OUTPUTS, FLIPS = layout.PLAN, layout.OUTPUTS, layout.FLIPS
TARGETS, REPORT = layout.TARGETS, layout.REPORT
IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml"}
UNSAFE = {"refusal_to_compliance", "safety_weakened"}


@dataclass
class PhaseView:
    """One phase: its per-(model, condition) counts (each cell links to its flip rows) and plots."""

    id: str
    kind: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    plots: list[tuple[str, str]] = field(default_factory=list)
    """(bundle name, data: URI)."""


@dataclass
class ReportData:
    """Everything the template needs."""

    bundle_id: str
    kind: str
    parent: str | None
    batchsafe_version: str
    files: list[Any]
    experiment: str = ""
    plan_hash: str = ""
    n_samples: int = 0
    phases: list[PhaseView] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    report_md: str = ""
    has_statement: bool = False
    totals: dict[str, int] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)
    """The flip browser's data (rows, texts, prompts, diffs), serialised into the page."""
    skipped: int = 0
    """Flip rows of an unexpected shape, left out (named in the page)."""
    missing: list[str] = field(default_factory=list)
    """Files the report would show that the bundle lacks or that failed their digest."""


def _read(src: Any, name: str, missing: list[str]) -> bytes | None:
    if not src.has(name):
        missing.append(name)
        return None
    try:
        return src.read(name)
    except Exception as exc:  # noqa: BLE001 -- a damaged file is reported in the page, not fatal
        missing.append(f"{name} ({exc})")
        return None


def _lines(raw: bytes | None) -> list[dict[str, Any]]:
    out = []
    for line in (raw or b"").splitlines():
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(row, dict):
            out.append(row)
    return out


def _json(raw: bytes | None) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


def cond_label(c: Any) -> str:
    """Compact condition label, as ``Condition.label()`` writes it (bs=8, q=Q2_K,c=4, r=1)."""
    if not isinstance(c, dict):
        return str(c)
    parts = [f"{short}={c[key]}" for key, short in (("batch_size", "bs"), ("cobatch", "co"), ("quant", "q"),
                                                   ("concurrency", "c"), ("kernel", "k"), ("load", "load"))
             if c.get(key) is not None]
    if c.get("repeat"):
        parts.append(f"r={c['repeat']}")
    return ",".join(parts) or "default"


def _prompt_text(p: Any) -> str:
    return "\n\n".join(f"[{m.role}] {m.content}" for m in p.messages)


def _interner() -> tuple[list[str], Any]:
    table: list[str] = []
    index: dict[str, int] = {}

    def intern(s: str) -> int:
        i = index.get(s)
        if i is None:
            i = index[s] = len(table)
            table.append(s)
        return i
    return table, intern


def gather(src: Any) -> ReportData:
    """Read ``src`` (an opened bundle) into a ``ReportData``."""
    m = src.manifest
    data = ReportData(bundle_id=src.bundle_id, kind=m.kind, parent=m.parent, batchsafe_version=m.batchsafe_version,
                      files=list(m.files), has_statement=src.has(STATEMENT))
    plan = None
    raw_plan = _read(src, PLAN, data.missing)
    if raw_plan is not None:
        from batchsafe.analysis.analyze import plan_from_bytes
        try:
            plan = plan_from_bytes(raw_plan)
        except Exception as exc:  # noqa: BLE001 -- an unreadable plan still leaves the flips to show
            data.missing.append(f"{PLAN} ({str(exc).splitlines()[0]})")
    kinds: dict[str, str] = {}
    prompts: dict[str, str] = {}
    if plan is not None:
        data.experiment, data.plan_hash, data.n_samples = str(plan.experiment.get("id", "")), plan.plan_hash, len(plan.samples)
        kinds = {p.id: p.kind for p in plan.phases}
        prompts = {p.id: _prompt_text(p) for p in plan.prompts}
    texts = {r["sample"]: r["text"] for r in _lines(_read(src, OUTPUTS, data.missing))
             if isinstance(r.get("sample"), str) and isinstance(r.get("text"), str)}
    flips = _lines(_read(src, FLIPS, data.missing))
    _flip_payload(data, flips, texts, prompts, kinds)
    targets = _json(_read(src, TARGETS, data.missing))
    if isinstance(targets, dict) and isinstance(targets.get("targets"), list):
        data.targets = [t for t in targets["targets"] if isinstance(t, dict)]
    report = _read(src, REPORT, data.missing)
    data.report_md = report.decode("utf-8", "replace") if report else ""
    _attach_plots(src, data)
    return data


def _flip_payload(data: ReportData, flips: list[dict[str, Any]], texts: dict[str, str], prompts: dict[str, str],
                  kinds: dict[str, str]) -> None:
    strings, intern = _interner()
    diffs: list[Any] = []
    diff_index: dict[tuple[int, int], int] = {}
    rows = []
    cells: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)
    phase_order: list[str] = []
    for r in flips:
        try:
            phase, model, task, direction = (str(r[k]) for k in ("phase", "model", "task", "direction"))
            sample, baseline = str(r["sample"]), str(r["baseline"])
            cond = cond_label(r.get("condition"))
            identical, flipped = bool(r["identical"]), bool(r["flipped"])
        except (KeyError, TypeError):
            data.skipped += 1
            continue
        if phase not in kinds and phase not in phase_order:
            kinds.setdefault(phase, str(r.get("phase_kind", "")))
        if phase not in phase_order:
            phase_order.append(phase)
        a, b = texts.get(baseline), texts.get(sample)
        ai = intern(a) if a is not None else -1
        bi = intern(b) if b is not None else -1
        di = -1
        if not identical and a is not None and b is not None:
            di = diff_index.get((ai, bi), -1)
            if di < 0:
                di = diff_index[(ai, bi)] = len(diffs)
                diffs.append(diff_segments(a, b))
        pi = intern(prompts[str(r.get("prompt"))]) if str(r.get("prompt")) in prompts else -1
        rows.append({"p": phase, "m": model, "c": cond, "t": task, "d": direction, "f": int(flipped),
                     "i": int(identical), "s": sample, "bs": baseline, "q": pi, "a": ai, "b": bi, "x": di,
                     "l0": str(r.get("baseline_label", "")), "l1": str(r.get("label", "")),
                     "u": int(direction in UNSAFE)})
        c = cells[(phase, model, cond)]
        c["n"] += 1
        c["differ"] += not identical
        c["flipped"] += flipped
        c["unsafe"] += direction in UNSAFE
    for phase in phase_order:
        view = PhaseView(id=phase, kind=kinds.get(phase, ""))
        for (p, model, cond), c in cells.items():
            if p == phase:
                view.rows.append({"model": model, "condition": cond, **c})
        data.phases.append(view)
    data.totals = {"rows": len(rows), "differ": sum(1 - r["i"] for r in rows), "flipped": sum(r["f"] for r in rows),
                   "unsafe": sum(r["u"] for r in rows)}
    data.payload = {"rows": rows, "strings": strings, "diffs": diffs}


def _attach_plots(src: Any, data: ReportData) -> None:
    """Inline every PNG/SVG plot of the bundle, under the phase its name starts with (else "other")."""
    by_phase = {p.id: p for p in data.phases}
    for e in data.files:
        dot = e.name.rfind(".")
        mime = IMAGE_TYPES.get(e.name[dot:].lower()) if dot > 0 else None
        if mime is None or "plots/" not in e.name:
            continue
        raw = _read(src, e.name, data.missing)
        if raw is None:
            continue
        uri = f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"
        base = e.name.rsplit("/", 1)[-1]
        phase = next((p for p in sorted(by_phase, key=len, reverse=True) if base.startswith(p + "_")), None)
        if phase is None:
            phase = "other"
            if phase not in by_phase:
                by_phase[phase] = PhaseView(id=phase)
                data.phases.append(by_phase[phase])
        by_phase[phase].plots.append((e.name, uri))


def json_for_script(obj: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>``, ``&`` or line separators
    can end the element or confuse a parser (hostile outputs may contain ``</script>``)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text
