"""The verification stages, each a function of the bundle (and what earlier stages parsed).

Every stage checks one claim a bundle makes and names what breaks it:

Stages 1-4 are here; 5-7 (rescoring, statistics, targets) in ``verification.recheck``.

1. **integrity**: the files are the ones the manifest lists, byte for byte, and the
   manifest hashes to the id the bundle goes by;
2. **schemas**: each artifact parses with its model at a version this batchsafe knows;
3. **plan**: the plan is internally consistent (hash, references, groups, bundled spec)
   and, when the data is at hand, recompiling the spec gives the same plan;
4. **coverage**: each planned sample has exactly one output, score and flip row;
5. **rescoring**: the recorded scorer versions give the recorded scores from the outputs;
6. **statistics**: the flip registry, statistics, targets and report follow from the scores;
7. **targets**: the spec's reproducibility targets hold.

A stage that needs a file which failed an earlier stage is skipped and says so, so one
edited byte is reported once, where it is, not as a cascade.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchsafe.analysis.flips import FLIP_SCHEMA_VERSION, RecordError, read_flips, read_scored
from batchsafe.analysis.records import SCORED_SCHEMA_VERSION, FlipRow, ScoredSample
from batchsafe.core import layout
from batchsafe.core.canonical import canonical_bytes
from batchsafe.core.jsonl import JsonLineError, parse_lines_bulk
from batchsafe.bundles.manifest import DEFAULT_MAX_JSON_DEPTH, json_depth_exceeds
from batchsafe.compiler.plan import Plan, PlanError, plan_from_bytes

from . import columns, proofs
from .report import Stage
from .source import BundleSource

PLAN, OUTPUTS, FILLERS = layout.PLAN, layout.OUTPUTS, layout.FILLERS
SCORES, FLIPS, STATS, TARGETS, REPORT = layout.SCORES, layout.FLIPS, layout.STATS, layout.TARGETS, layout.REPORT
JSON_FILES = (STATS, TARGETS, layout.RUN, layout.ENVIRONMENT)
OUTPUT_FIELDS = {"sample": str, "prompt": str, "group": str, "position": int, "text": str}
RECORD_VERSIONS = {SCORES: SCORED_SCHEMA_VERSION, FLIPS: FLIP_SCHEMA_VERSION}
"""Newest record version per JSON-lines file, from the record models' own declarations."""


@dataclass
class Context:
    """What the stages share: the bundle, the names that failed integrity, and parsed artifacts."""

    src: BundleSource
    bad: set[str] = field(default_factory=set)
    plan: Plan | None = None
    outputs: list[dict[str, Any]] | None = None
    scored: list[ScoredSample] | None = None
    flips: list[FlipRow] | None = None
    score_samples: list[str] | None = None
    """The sample id of each line of scores.jsonl, in order (None: not parsed). Only the ids and scorers
    are kept from the schemas stage's parse: the records themselves are a gigabyte at 300k samples."""
    score_scorers: list[Any] | None = None
    """The ``scorer`` value of each line of scores.jsonl, in order."""
    flip_samples: list[str] | None = None
    """The sample id of each line of flips.jsonl, in order."""
    json: dict[str, Any] = field(default_factory=dict)
    rescored: list[ScoredSample] | None = None
    targets: dict[str, Any] | None = None
    stats: dict[str, Any] | None = None
    """The statistics recomputed by the statistics stage (the files stage re-renders figures from them)."""
    proven: set[str] = field(default_factory=set)
    """scores.jsonl and/or flips.jsonl when recomputed rows serialise to exactly their bytes
    (``verification.proofs``): ``scored``/``rescored`` and ``flips`` hold those rows, and the file was not parsed."""
    canonical: set[str] = field(default_factory=set)
    """JSON-lines files proven canonical when the schemas stage parsed them (``core.jsonl.sorted_dump_matches``),
    so that the files stage need not parse them again."""

    def usable(self, name: str) -> bool:
        """Whether ``name`` is in the bundle and passed integrity."""
        return self.src.has(name) and name not in self.bad

    def missing_input(self, stage: Stage, *names: str) -> bool:
        """Skip ``stage`` (return True) when a needed file is absent or damaged."""
        for n in names:
            if not self.src.has(n):
                stage.skip(f"the bundle has no {n}")
                return True
            if n in self.bad:
                stage.skip(f"{n} failed an earlier stage")
                return True
        return False


# -- 1. integrity ----------------------------------------------------------------------------


def check_integrity(ctx: Context) -> Stage:
    """Every listed file present, regular, of the listed size and digest; no extra file; id recomputed."""
    st = Stage(name="integrity")
    src = ctx.src
    if src.claimed_id and src.claimed_id != src.bundle_id:
        st.fail(f"bundle id: manifest.json hashes to {src.bundle_id}, but the bundle is named {src.claimed_id}")
    nbytes = 0
    for e in src.manifest.files:
        sha, size, problem = src.hash_file(e.name)
        if problem is None and size != e.size:
            problem = f"size {size} does not match manifest size {e.size}"
        elif problem is None and sha != e.sha256:
            problem = f"content hashes to {sha}, manifest says {e.sha256}"
        if problem:
            ctx.bad.add(e.name)
            st.fail(f"{e.name}: {problem}")
        else:
            nbytes += e.size
    for extra, problem in src.extra_paths():
        if extra not in ctx.bad:  # a listed file replaced by a link is reported once, above
            st.fail(f"{extra}: {problem}")
    st.summary = (f"{len(src.manifest.files)} files, {nbytes:,} bytes match their sha256 and size; "
                  f"bundle id {src.bundle_id}")
    if st.status == "FAIL":
        st.summary = f"{st.n_problems} problem(s) in {len(src.manifest.files)} files"
    return st


# -- 2. schemas ------------------------------------------------------------------------------


def _json_object(ctx: Context, name: str, st: Stage) -> dict[str, Any] | None:
    raw = ctx.src.read(name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        st.fail(f"{name}: invalid UTF-8 at byte {exc.start}")
        return None
    if json_depth_exceeds(text, DEFAULT_MAX_JSON_DEPTH):
        st.fail(f"{name}: JSON nested deeper than {DEFAULT_MAX_JSON_DEPTH} levels")
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        st.fail(f"{name}: not JSON: {exc}")
        return None
    if not isinstance(data, dict):
        st.fail(f"{name}: not a JSON object")
        return None
    return data


def _parse(ctx: Context, raw: bytes, name: str, what: str, current: int | None) -> list[tuple[int, dict[str, Any]]]:
    """``parse_lines``; notes in ``ctx.canonical`` whether the parse proves the file canonical."""
    rows, canonical = parse_lines_bulk(raw, name, what, current)  # proven before any stage can touch the records
    if canonical:
        ctx.canonical.add(name)
    return rows


def _outputs(raw: bytes, st: Stage, ctx: Context) -> list[dict[str, Any]] | None:
    try:
        rows = _parse(ctx, raw, OUTPUTS, "output record", None)
    except JsonLineError as exc:
        st.fail(str(exc))
        return None
    # The usual file, one pass per field (bool is not an int here); the loop below names the first bad field.
    if all({type(r.get(key)) for _, r in rows} <= {typ} for key, typ in OUTPUT_FIELDS.items()):
        return _share_repeats([rec for _, rec in rows])
    for n, rec in rows:
        for key, typ in OUTPUT_FIELDS.items():
            if not isinstance(rec.get(key), typ) or isinstance(rec.get(key), bool):
                st.fail(f"{OUTPUTS}:{n}: field {key!r} missing or not {typ.__name__}")
                return None
    return [rec for _, rec in rows]


SHARED_OUTPUT_STRINGS = ("engine", "phase", "model", "finish_reason", "prompt", "group")
"""Output record fields whose strings repeat from line to line (a prompt runs under many conditions)."""


def _share_repeats(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` with equal conditions and repeated strings held once (about 80 MiB at 300k samples).

    Conditions are equal when their JSON text is (1, 1.0 and true stay apart). The records
    are only read after this stage, so sharing one condition dict between them is safe.
    """
    conds: dict[bytes, Any] = {}
    strings: dict[str, str] = {}
    dumps = orjson.dumps
    for r in records:
        c = r.get("condition")
        if type(c) is dict:
            r["condition"] = conds.setdefault(dumps(c), c)
        for f in SHARED_OUTPUT_STRINGS:
            v = r.get(f)
            if type(v) is str:
                r[f] = strings.setdefault(v, v)
    return records


def _records(raw: bytes, name: str, st: Stage, ctx: Context) -> list[dict[str, Any]] | None:
    """JSON lines with a known schema_version; field-level validation is deferred (see ``validated``)."""
    try:
        rows = _parse(ctx, raw, name, "scored sample" if name == SCORES else "flip row", RECORD_VERSIONS[name])
    except JsonLineError as exc:
        st.fail(str(exc))
        return None
    for n, rec in rows:
        if not isinstance(rec.get("sample"), str):
            st.fail(f"{name}:{n}: field 'sample' missing or not str")
            return None
    return [rec for _, rec in rows]


def validated(ctx: Context, name: str, st: Stage) -> list[Any] | None:
    """The pydantic records of ``name`` (scores or flips), validated now; a problem fails ``st``.

    Deferred from the schemas stage because records that serialise back to exactly the
    bytes recomputed from the outputs are valid by construction; only a file that differs
    needs the per-record validation, for its messages.
    """
    attr, reader = ("scored", read_scored) if name == SCORES else ("flips", read_flips)
    if getattr(ctx, attr) is None:
        try:
            setattr(ctx, attr, reader(ctx.src.read(name)))
        except RecordError as exc:
            ctx.bad.add(name)
            st.fail(str(exc).replace("<bytes>", name))
    return getattr(ctx, attr)


def _proven(ctx: Context, name: str) -> bool:
    """Whether ``name`` (scores or flips) is proven by recomputation (``proofs``); fills ``ctx`` from the rows."""
    if name == SCORES:
        rows = proofs.prove_scores(ctx)
        if rows is None:
            return False
        ctx.scored = ctx.rescored = rows
        ctx.score_samples, ctx.score_scorers = [r.sample for r in rows], [r.scorer for r in rows]
    else:
        flips = proofs.prove_flips(ctx, ctx.scored) if SCORES in ctx.proven and ctx.scored is not None else None
        if flips is None:
            return False
        ctx.flips, ctx.flip_samples = flips, [r.sample for r in flips]
    ctx.proven.add(name)
    ctx.canonical.add(name)
    return True


def check_schemas(ctx: Context) -> Stage:
    """Each known artifact parses with its model, at a schema version this batchsafe reads."""
    st = Stage(name="schemas")
    checked = []
    if ctx.usable(PLAN):
        try:
            ctx.plan = plan_from_bytes(ctx.src.read(PLAN), PLAN)
            checked.append(PLAN)
        except PlanError as exc:
            ctx.bad.add(PLAN)
            st.fail(str(exc))
    if ctx.usable(OUTPUTS):
        ctx.outputs = _outputs(ctx.src.read(OUTPUTS), st, ctx)
        if ctx.outputs is None:
            ctx.bad.add(OUTPUTS)
        else:
            checked.append(OUTPUTS)
    for name in (SCORES, FLIPS):
        if ctx.usable(name):
            if _proven(ctx, name):
                checked.append(name)
                continue
            rows = _records(ctx.src.read(name), name, st, ctx)
            if rows is None:
                ctx.bad.add(name)
                continue
            if name == SCORES:
                ctx.score_samples, ctx.score_scorers = [r["sample"] for r in rows], [r.get("scorer") for r in rows]
            else:
                ctx.flip_samples = [r["sample"] for r in rows]
            checked.append(name)
    for name in JSON_FILES:
        if ctx.usable(name):
            data = _json_object(ctx, name, st)
            if data is None:
                ctx.bad.add(name)
                continue
            if name.startswith(layout.ANALYSIS_DIR) and canonical_bytes(data) != ctx.src.read(name):
                st.fail(f"{name}: not in canonical form (sorted keys, no whitespace)")
            ctx.json[name] = data
            checked.append(name)
    st.summary = f"{len(checked)} artifacts parsed: {', '.join(checked)}" if st.status == "PASS" else \
        f"{st.n_problems} artifact problem(s)"
    return st


# -- 3. plan ---------------------------------------------------------------------------------


def check_plan_consistency(ctx: Context, st: Stage) -> None:
    """References inside the plan, run.json's plan hash and the bundled spec texts."""
    plan = ctx.plan
    assert plan is not None
    prompts = {p.id for p in plan.prompts}
    groups = {g.id: g for g in plan.groups}
    samples = {s.id: s for s in plan.samples}
    if len(samples) != len(plan.samples):
        dup = next(k for k, v in Counter(s.id for s in plan.samples).items() if v > 1)
        st.fail(f"{PLAN}: sample {dup} is listed twice")
    for s in plan.samples:
        g = groups.get(s.group)
        if s.prompt not in prompts:
            st.fail(f"{PLAN}: sample {s.id} names unknown prompt {s.prompt}")
        elif g is None:
            st.fail(f"{PLAN}: sample {s.id} names unknown group {s.group}")
        elif not (0 <= s.position < len(g.members)) or g.members[s.position].sample != s.id:
            st.fail(f"{PLAN}: sample {s.id} is not member {s.position} of group {s.group}")
        if s.baseline is not None:
            b = samples.get(s.baseline)
            if b is None:
                st.fail(f"{PLAN}: sample {s.id} names unknown baseline {s.baseline}")
            elif (b.prompt, b.model, b.phase) != (s.prompt, s.model, s.phase):
                st.fail(f"{PLAN}: baseline {b.id} of sample {s.id} is another prompt, model or phase")
    run = ctx.json.get(layout.RUN)
    if run is not None and run.get("plan_hash") != plan.plan_hash:
        st.fail(f"run.json: plan_hash {run.get('plan_hash')} is not the bundled plan's {plan.plan_hash}")
    for f in plan.spec.files:
        name = layout.spec_name(f.path)
        if not ctx.src.has(name):
            st.fail(f"{name}: spec file recorded in the plan is missing from the bundle")
        elif ctx.usable(name) and ctx.src.read(name) != f.text.encode("utf-8"):
            st.fail(f"{name}: differs from the spec text recorded in {PLAN}")


# -- 4. coverage -----------------------------------------------------------------------------


def _exactly_once(st: Stage, name: str, ids: list[str], expected: set[str]) -> None:
    counts = Counter(ids)
    if len(counts) == len(ids) and counts.keys() == expected:  # each once, none missing, none extra
        return
    for sid, n in counts.items():
        if n > 1:
            st.fail(f"{name}: sample {sid} appears {n} times")
        if sid not in expected:
            st.fail(f"{name}: sample {sid} is not in the plan")
    missing = sorted(expected - counts.keys())
    for sid in missing:
        st.fail(f"sample {sid} missing from {name}")


def check_coverage(ctx: Context) -> Stage:
    """Each planned sample exactly once in outputs, scores and (non-baselines) flips, where it belongs."""
    st = Stage(name="coverage")
    if ctx.missing_input(st, PLAN, OUTPUTS) or ctx.plan is None or ctx.outputs is None:
        return st if st.status == "SKIP" else st.skip(f"{PLAN} or {OUTPUTS} unreadable")
    plan = ctx.plan
    planned = {s.id: s for s in plan.samples}
    _exactly_once(st, OUTPUTS, [r["sample"] for r in ctx.outputs], set(planned))
    for r in ([] if columns.coverage_matches(plan, ctx.outputs) else ctx.outputs):  # the loop names a mismatch
        s = planned.get(r["sample"])
        if s is not None and (r["prompt"], r["group"], r["position"]) != (s.prompt, s.group, s.position):
            st.fail(f"{OUTPUTS}: sample {s.id} ran as prompt {r['prompt']} in group {r['group']} position "
                    f"{r['position']}, the plan says {s.prompt} in {s.group} position {s.position}")
    checked = [OUTPUTS]
    if ctx.score_samples is not None:
        _exactly_once(st, SCORES, ctx.score_samples, set(planned))
        checked.append(SCORES)
    if ctx.flip_samples is not None:
        _exactly_once(st, FLIPS, ctx.flip_samples, {s.id for s in plan.samples if s.baseline})
        checked.append(FLIPS)
    st.summary = f"{len(planned):,} planned samples, each exactly once in {', '.join(checked)}"
    if st.status == "FAIL":
        st.summary = f"{st.n_problems} coverage problem(s)"
    return st


