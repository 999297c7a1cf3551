"""Verify stage ``files``: every file the manifest lists is accounted for by some stage.

A bundle may carry any file its author listed; a file no stage reads would be "verified"
without anyone having looked at it.  This stage closes that gap:

* each listed name is matched against :data:`CLAIMS` (name pattern -> the stage that
  checks it).  A name no stage knows is a FAIL.  ``logs/`` and other volatile files are
  informational (server and run logs, engine descriptions): they are listed as
  *unchecked* in the summary, and ``verify --strict`` fails on them;
* JSON-lines artifacts must be in their canonical byte form: UTF-8, LF line ends, a
  final newline, and (for the deterministic ones) each line exactly the canonical JSON of
  its record.  A CRLF rewrite under a self-consistent manifest is a FAIL naming the file
  and line;
* output records' plan-derived fields (phase, model, engine, condition, group members,
  filler positions) must be the plan's, token counts counts, and no unknown keys;
* ``outputs/fillers.jsonl`` is checked against the plan's groups: one record per filler
  member (a group member without a sample), at its group and position, with the group's
  prompt, phase, model, engine and condition and exactly the runtime's keys, in plan order;
* figures (``analysis/plots/*.png``) are re-rendered from the recomputed statistics (the
  renderer is byte-reproducible): each must equal its recomputation, a recomputed figure
  missing from the bundle is a FAIL, and so is a listed figure nobody can recompute.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from typing import Any

import orjson

from batchsafe.core import layout
from batchsafe.core.canonical import canonical_bytes_of_parsed
from batchsafe.core.jsonl import parse_plain

from . import columns
from .checks import FILLERS, FLIPS, OUTPUTS, PLAN, REPORT, SCORES, STATS, TARGETS, Context
from .report import Stage

__all__ = ["CLAIMS", "UNCHECKED", "check_files", "claim_of", "jsonl_problem"]

PLOTS = layout.PLOTS_DIR
CLAIMS: list[tuple[str, str]] = [
    (PLAN, "schemas, plan"), (layout.RUN, "plan"), (layout.ENVIRONMENT, "schemas"), (layout.SPEC_DIR + "*", "plan"),
    (OUTPUTS, "coverage"), (FILLERS, "files"), (layout.TIMINGS, "rescoring"),
    (SCORES, "rescoring"), (FLIPS, "statistics"), (STATS, "statistics"), (TARGETS, "statistics"),
    (REPORT, "statistics"), (PLOTS + "*.png", "files"),
    (layout.RESCORE_AUDIT, "derived"), (layout.RESCORE_AUDIT_SUMMARY, "derived"),
    (layout.ADJ_LABELS, "derived"), (layout.ADJ_SUMMARY, "derived"),
    (layout.ADJ_REPORT, "derived"), (layout.LAUNCH_DIR + "*.json", "stack"),
    ("attestation/provenance.intoto.json", "provenance"),
]
"""Name pattern (fnmatch; ``*`` spans ``/``) -> the stage(s) that check such a file."""
UNCHECKED = (layout.LOGS_DIR + "*", "volatile/*")
"""Informational files: listed as unchecked (``--strict`` fails on them)."""
# JSON-lines files whose every line must be canonical JSON (the volatile timings are
# written with Python's json.dumps and are only required to be clean JSON lines).
CANONICAL_JSONL = (OUTPUTS, FILLERS, SCORES, FLIPS, layout.RESCORE_AUDIT, layout.ADJ_LABELS)
# orjson's sorted dump is the canonical form except for some float spellings; where such a
# token could occur, ``core.jsonl.parse_plain`` proves nothing and lines take the exact path.
FILLER_KEYS = frozenset({"filler", "group", "position", "prompt", "phase", "model", "engine", "condition", "text",
                         "finish_reason", "prompt_tokens", "completion_tokens"})
"""Keys of a filler record (``runtime.bindings.group_records``)."""
OUTPUT_KEYS = frozenset({"sample", "group", "position", "prompt", "phase", "model", "engine", "condition",
                         "group_members", "filler_positions", "text", "finish_reason", "prompt_tokens",
                         "completion_tokens"})
"""Keys an output record may have (``runtime.bindings.group_records``; older runs lack some)."""


def claim_of(name: str) -> str | None:
    """The stage(s) that check ``name``, or None when no stage knows it."""
    return next((stage for pat, stage in CLAIMS if fnmatch.fnmatchcase(name, pat)), None)


def jsonl_problem(raw: bytes, name: str, *, canonical: bool, proven: bool = False) -> str | None:
    """The first way ``raw`` departs from canonical JSON lines, naming the line; None if it does not.

    Whole-file checks run first at C speed (decode, ``\\r``, blank lines, then
    ``core.jsonl.parse_plain``: one orjson call per line, then the records dumped again
    a chunk per orjson call and compared in place); lines are canonicalised one by one only to name the first bad one.
    ``proven``: that parse was already done on these bytes when the schemas stage read them.
    """
    if proven:  # the schemas stage's parse checked all of the below on these bytes
        return None
    nl = b"\n"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"{name}:{raw.count(nl, 0, exc.start) + 1}: invalid UTF-8 at byte {exc.start}"
    if raw and not raw.endswith(nl):
        return f"{name}:{raw.count(nl) + 1}: the last line has no final newline"
    cr = raw.find(b"\r")
    if cr >= 0:
        return f"{name}:{raw.count(nl, 0, cr) + 1}: CRLF or CR line ending (JSON lines end with LF only)"
    if raw.startswith(nl) or b"\n\n" in raw:
        at = 0 if raw.startswith(nl) else raw.index(b"\n\n") + 1
        return f"{name}:{raw.count(nl, 0, at) + 1}: blank line"
    if not canonical or not raw:
        return None
    # Each line parsed on its own and dumped again (core.jsonl.parse_plain). One
    # parse of the lines joined by commas would let a line break moved inside a record pass.
    plain = parse_plain(raw)
    if plain is not None and plain[1]:
        return None
    for n, line in enumerate(raw.split(nl)[:-1], 1):
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            return f"{name}:{n}: not JSON"
        if canonical_bytes_of_parsed(obj) != line + nl:
            return f"{name}:{n}: not canonical JSON (sorted keys, no whitespace, minimal escapes)"
    return None


def check_files(ctx: Context, *, strict: bool = False, stats: dict[str, Any] | None = None) -> Stage:
    """The ``files`` stage (see the module docstring); ``stats`` are the recomputed statistics, if any."""
    st = Stage(name="files")
    plan = ctx.plan
    launches = plan is not None and any((e.config.get("launch") or {}).get("kind") in ("process", "container")
                                        for e in plan.engines)
    unchecked: list[str] = []
    by_stage: Counter[str] = Counter()
    for e in ctx.src.manifest.files:
        name = e.name
        owner = claim_of(name)
        if owner == "stack" and not launches:
            st.fail(f"{name}: a launch record, but the plan launches no server")
        elif owner is not None:
            by_stage[owner] += 1
        elif any(fnmatch.fnmatchcase(name, p) for p in UNCHECKED):
            unchecked.append(name)
            if strict:
                st.fail(f"{name}: not checked by any stage (--strict)")
        else:
            st.fail(f"{name}: listed in the manifest, but no verify stage knows this file")
    fillers = _filler_rows(ctx) if plan is not None and ctx.usable(FILLERS) else None
    for name in sorted(n for n in ctx.src.names if n.endswith(".jsonl")):
        if ctx.usable(name):
            problem = jsonl_problem(ctx.src.read(name), name, canonical=name in CANONICAL_JSONL,
                                    proven=name in ctx.canonical)
            if problem:
                st.fail(problem)
    if plan is not None and ctx.outputs is not None:
        _check_output_records(ctx, st)
    if plan is not None and ctx.usable(FILLERS):
        _check_fillers(ctx, st, fillers)
    elif plan is not None and any(m.sample is None for g in plan.groups for m in g.members) \
            and ctx.src.has(OUTPUTS) and not ctx.src.has(FILLERS):
        st.fail(f"{FILLERS}: missing, but the plan's groups have filler members")
    _check_plots(ctx, st, stats)
    n = len(ctx.src.manifest.files)
    shown = ", ".join(unchecked[:5]) + (f", ... ({len(unchecked) - 5} more)" if len(unchecked) > 5 else "")
    tail = f"; {len(unchecked)} unchecked: {shown}" if unchecked else ""
    st.summary = (f"{n - len(unchecked)} of {n} listed files checked by a stage{tail}" if st.status == "PASS"
                  else f"{st.n_problems} problem(s) in the bundle's files{tail}")
    return st


def _check_output_records(ctx: Context, st: Stage) -> None:
    """Fields of each output record that the plan decides (phase, model, condition, ...) are the plan's.

    Coverage checks prompt, group and position; the other plan-derived fields would
    otherwise be free text a forger could change without any stage noticing. A key a
    record lacks (older runs) is not compared.
    """
    plan = ctx.plan
    assert plan is not None and ctx.outputs is not None
    if columns.output_fields_match(plan, ctx.outputs, OUTPUT_KEYS):
        return
    samples = {s.id: s for s in plan.samples}
    groups = {g.id: g for g in plan.groups}
    per_group = columns.group_fields(plan)
    for n, rec in enumerate(ctx.outputs, 1):
        if not rec.keys() <= OUTPUT_KEYS:
            extra = sorted(set(rec) - OUTPUT_KEYS)
            st.fail(f"{OUTPUTS}:{n}: unexpected key(s) {', '.join(map(str, extra))[:80]}")
        s = samples.get(rec.get("sample"))
        g = groups.get(s.group) if s is not None else None
        if s is None or g is None:
            continue  # coverage reports samples the plan does not have
        want = per_group[g.id]
        # One tuple comparison per record (an absent key stands in as the plan's value);
        # only a record that differs is walked key by key, for the message.
        got = (rec.get("phase", s.phase), rec.get("model", s.model), rec.get("engine", want[0]),
               rec.get("condition", want[1]), rec.get("group_members", want[2]), rec.get("filler_positions", want[3]))
        if got != (s.phase, s.model, *want):
            for key, value in zip(_PLAN_DECIDED, (s.phase, s.model, *want)):
                if key in rec and rec[key] != value:
                    st.fail(f"{OUTPUTS}: sample {s.id}: {key} recorded {str(rec[key])[:60]}, "
                            f"the plan says {str(value)[:60]}")
        pt, ct = rec.get("prompt_tokens", 0), rec.get("completion_tokens", 0)
        if not (type(pt) is int and pt >= 0 and type(ct) is int and ct >= 0):  # noqa: E721 (bool is no count)
            for key in ("prompt_tokens", "completion_tokens"):
                v = rec.get(key)
                if key in rec and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                    st.fail(f"{OUTPUTS}: sample {s.id}: {key} is not a token count ({str(v)[:40]})")
        if "finish_reason" in rec and not isinstance(rec["finish_reason"], str):
            st.fail(f"{OUTPUTS}: sample {s.id}: finish_reason is not a string")


_PLAN_DECIDED = ("phase", "model", *columns.GROUP_DECIDED)
"""Output record keys whose values the plan decides, in the order ``_check_output_records`` compares them."""


def _filler_rows(ctx: Context) -> list[Any] | None:
    """The values of fillers.jsonl's lines (None: not JSON lines); notes in ``ctx.canonical`` a proven-canonical file.

    A file of plain layout is parsed line by line and proven canonical by the same parse
    (``core.jsonl.parse_plain``), so the JSON-lines check need not parse it again.
    """
    raw = ctx.src.read(FILLERS)
    plain = parse_plain(raw)
    if plain is not None:
        if plain[1]:
            ctx.canonical.add(FILLERS)
        return plain[0]
    lines = [x for x in raw.splitlines() if x.strip()]
    try:
        rows = orjson.loads(b"[" + b",".join(lines) + b"]")  # one call: per-line parsing is most of the cost
    except orjson.JSONDecodeError:
        return None
    return rows if len(rows) == len(lines) else None  # `1, 2` on one line parses as two values


def _check_fillers(ctx: Context, st: Stage, rows: list[Any] | None) -> None:
    """One filler record per filler member of the plan's groups, where the group says, in plan order."""
    plan = ctx.plan
    assert plan is not None
    if rows is None:
        st.fail(f"{FILLERS}: not JSON lines")
        return
    expected = [(g, i, m) for g in sorted(plan.groups, key=lambda g: g.index)
                for i, m in enumerate(g.members) if m.sample is None]
    cond_json: dict[str, Any] = {}  # group id -> its condition as JSON (one dump per group, not per filler)
    if columns.fillers_match(expected, rows, FILLER_KEYS, cond_json):
        return
    want = {(g.id, i): (g, m) for g, i, m in expected}
    seen: Counter[tuple[str, int]] = Counter()
    order = []
    for n, r in enumerate(rows, 1):
        if not isinstance(r, dict):
            st.fail(f"{FILLERS}:{n}: not a JSON object")
            continue
        if r.keys() != FILLER_KEYS:  # a set comparison without building a set per record
            keys = set(r)
            extra, missing = sorted(keys - FILLER_KEYS), sorted(FILLER_KEYS - keys)
            st.fail(f"{FILLERS}:{n}: keys differ from a filler record's"
                    + (f"; unexpected {', '.join(map(str, extra))[:80]}" if extra else "")
                    + (f"; missing {', '.join(missing)}" if missing else ""))
        key = (r.get("group"), r.get("position"))
        if key not in want:
            st.fail(f"{FILLERS}:{n}: group {str(key[0])[:40]} position {str(key[1])[:12]} is not a filler member of the plan")
            continue
        seen[key] += 1
        order.append(key)
        g, m = want[key]
        got = (r.get("prompt"), r.get("phase"), r.get("model"), r.get("engine"), r.get("condition"))
        cond = cond_json.get(g.id)
        if cond is None:
            cond = cond_json[g.id] = g.condition.model_dump(mode="json")
        if got != (m.prompt, g.phase, g.model, g.engine, cond):
            st.fail(f"{FILLERS}:{n}: filler at group {g.id} position {key[1]} does not match the plan's "
                    "prompt, phase, model, engine or condition")
    for key, k in seen.items():
        if k > 1:
            st.fail(f"{FILLERS}: filler at group {key[0]} position {key[1]} appears {k} times")
    for g, i, _ in expected:
        if (g.id, i) not in seen:
            st.fail(f"filler at group {g.id} position {i} missing from {FILLERS}")
    if st.status == "PASS" and order != [(g.id, i) for g, i, _ in expected]:
        st.fail(f"{FILLERS}: records are not in plan order (group index, position)")


def _check_plots(ctx: Context, st: Stage, stats: dict[str, Any] | None) -> None:
    listed = sorted(n for n in ctx.src.names if n.startswith(PLOTS))
    if stats is None:
        if listed:
            st.fail(f"{listed[0]}: cannot be recomputed (the statistics could not be), so {len(listed)} figure(s) "
                    "are unchecked")
        return
    if not listed:
        # Analysed without figures (``plots=False``) or a bundle without an analysis: the
        # report names the figures it shows, and the statistics stage re-renders the report.
        return
    from batchsafe.analysis.plots import render_plots
    from batchsafe.analysis.protocol_plots import render_protocol_plots  # none unless the plan asks

    rendered = {**render_plots(stats), **render_protocol_plots(stats)}
    figures = {PLOTS + k.removeprefix("plots/"): v for k, v in rendered.items()}
    for name in listed:
        if name not in figures:
            st.fail(f"{name}: no such figure is recomputed from the statistics")
        elif ctx.usable(name) and ctx.src.read(name) != figures[name]:
            st.fail(f"{name}: differs from the figure re-rendered from the recomputed statistics")
    for name in sorted(set(figures) - set(listed)):
        st.fail(f"{name}: missing; the recomputed statistics give this figure")
