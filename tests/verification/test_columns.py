"""verification.columns: a whole-column "all in order" never hides what the record loops would report.

Each fast check lets a stage skip its per-record loop. On the compiler fixture plan's
records (as the runtime writes them) with one random edit, whenever the fast check says
"in order", the loop run without it must report nothing; on the unedited records the
fast check must say "in order" (so the fast path is the one taken).
"""

from __future__ import annotations

import copy
import functools
from types import SimpleNamespace

import fake_run as fake  # tests/analysis/test_analyze/fake_run.py, on sys.path via tests/conftest.py
from hypothesis import given, settings
from hypothesis import strategies as st

from batchsafe.compiler.plan import Plan
from batchsafe.verification import checks, columns, completeness
from batchsafe.verification.report import Stage

EDITS = [None, "drop", "extra", True, 1, 1.0, 0, -1, "x", [], {}, {"batch_size": 1}, "stop", "p_other"]
KEYS = ["sample", "group", "position", "prompt", "phase", "model", "engine", "condition", "group_members",
        "filler_positions", "text", "finish_reason", "prompt_tokens", "completion_tokens"]


@functools.cache
def _plan() -> Plan:
    return fake.mini_plan()


def _records(plan: Plan) -> tuple[list[dict], list[dict]]:
    """Output and filler records as ``runtime.bindings.group_records`` writes them, in run order."""
    outs, fillers = [], []
    samples = {s.id: s for s in plan.samples}
    for g in sorted(plan.groups, key=lambda g: g.index):
        members = [m.prompt for m in g.members]
        filler_pos = [i for i, m in enumerate(g.members) if m.sample is None]
        for i, m in enumerate(g.members):
            common = {"group": g.id, "position": i, "prompt": m.prompt, "phase": g.phase, "model": g.model,
                      "engine": g.engine, "text": "t", "finish_reason": "stop", "prompt_tokens": 2,
                      "completion_tokens": 3}
            if m.sample is None:
                fillers.append({"filler": f"{g.id}:{i}", **common, "condition": g.condition.model_dump(mode="json")})
            else:
                s = samples[m.sample]
                outs.append({"sample": s.id, **common, "condition": s.condition.model_dump(mode="json"),
                             "group_members": members, "filler_positions": filler_pos})
    return outs, fillers


def _edit(rows: list[dict], i: int, key: str, value) -> list[dict]:
    rows = copy.deepcopy(rows)
    if not rows:
        return rows
    r = rows[i % len(rows)]
    if value == "drop":
        r.pop(key, None)
    elif value == "extra":
        r["unexpected"] = 1
    elif key in ("condition",) and isinstance(value, dict):
        r[key] = {**r[key], **value}
    else:
        r[key] = value
    return rows


def _loop(fn, monkeypatch_target: str, ctx, *args) -> Stage:
    """Run a stage function with its fast column check forced to "not in order"."""
    saved = getattr(columns, monkeypatch_target)
    setattr(columns, monkeypatch_target, lambda *a, **k: False)
    try:
        st_ = Stage(name="t")
        fn(ctx, st_, *args)
        return st_
    finally:
        setattr(columns, monkeypatch_target, saved)


def test_the_unedited_records_take_the_fast_path() -> None:
    plan = _plan()
    outs, fillers = _records(plan)
    assert columns.aligned(plan, outs), "the fixture plan's samples are in run order"
    assert columns.coverage_matches(plan, outs)
    assert columns.output_fields_match(plan, outs, completeness.OUTPUT_KEYS)
    expected = [(g, i, m) for g in sorted(plan.groups, key=lambda g: g.index)
                for i, m in enumerate(g.members) if m.sample is None]
    assert expected and columns.fillers_match(expected, fillers, completeness.FILLER_KEYS, {})


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(KEYS), st.sampled_from(EDITS))
def test_output_records_fast_check_implies_the_loop_finds_nothing(i, key, value) -> None:
    plan = _plan()
    outs = _edit(_records(plan)[0], i, key, value)
    ctx = SimpleNamespace(plan=plan, outputs=outs)
    if columns.output_fields_match(plan, outs, completeness.OUTPUT_KEYS):
        assert _loop(completeness._check_output_records, "output_fields_match", ctx).status == "PASS"
    if columns.coverage_matches(plan, outs):
        planned = {s.id: s for s in plan.samples}
        assert all((r["prompt"], r["group"], r["position"]) == (planned[r["sample"]].prompt,
                                                               planned[r["sample"]].group,
                                                               planned[r["sample"]].position) for r in outs)
    if value is not None and value != "drop" and key in ("phase", "model", "engine") \
            and value != _records(plan)[0][i % len(outs)].get(key):
        assert not columns.output_fields_match(plan, outs, completeness.OUTPUT_KEYS)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(KEYS + ["filler"]), st.sampled_from(EDITS), st.booleans())
def test_filler_fast_check_implies_the_loop_finds_nothing(i, key, value, swap) -> None:
    plan = _plan()
    fillers = _edit(_records(plan)[1], i, key, value)
    if swap and len(fillers) > 1:  # out of plan order
        j = i % (len(fillers) - 1)
        fillers[j], fillers[j + 1] = fillers[j + 1], fillers[j]
    expected = [(g, k, m) for g in sorted(plan.groups, key=lambda g: g.index)
                for k, m in enumerate(g.members) if m.sample is None]
    ctx = SimpleNamespace(plan=plan)
    if columns.fillers_match(expected, fillers, completeness.FILLER_KEYS, {}):
        assert _loop(completeness._check_fillers, "fillers_match", ctx, fillers).status == "PASS"


def test_coverage_names_a_moved_sample_through_the_loop() -> None:
    plan = _plan()
    outs = _edit(_records(plan)[0], 3, "position", 7)
    assert not columns.coverage_matches(plan, outs)
    ctx = checks.Context(src=SimpleNamespace(has=lambda n: True))
    ctx.plan, ctx.outputs = plan, outs
    st_ = checks.check_coverage(ctx)
    assert st_.status == "FAIL" and "position 7" in "\n".join(st_.problems)


def test_rows_json_is_model_dump_for_scored_and_flip_rows(tmp_path) -> None:
    from pydantic import BaseModel

    from batchsafe.analysis.flips import flip_registry
    from batchsafe.analysis.scoring import score_run
    from batchsafe.compiler.plan import Condition

    plan = _plan()
    scored = score_run(plan, fake.fake_outputs(plan), timings={g.id: 0.25 for g in plan.groups})
    flips = flip_registry(scored)
    for rows in (scored, flips):
        assert columns._condition_fields(type(rows[0])) == ("condition",)  # the fast path is the one taken
        assert columns.rows_json(rows) == [r.model_dump(mode="json") for r in rows]

    class Odd(BaseModel):  # a field the fast path cannot copy: the serializer decides
        condition: Condition
        when: list[int]

    odd = [Odd(condition=Condition(batch_size=2, tensor_parallel=2), when=[1])]
    assert columns._condition_fields(Odd) is None
    assert columns.rows_json(odd) == [odd[0].model_dump(mode="json")]
    assert "tensor_parallel" in columns.rows_json(odd)[0]["condition"]


def test_files_stage_names_a_line_break_moved_inside_a_record() -> None:
    # Both lines together are two records, and their commas-joined parse dumps back to the
    # same bytes; each line alone is not JSON. Used to pass as canonical (fillers.jsonl is
    # not parsed by the schemas stage, so this check is its only canonical-form proof).
    good = b'{"a":1,"b":2}\n{"c":3}\n'
    assert completeness.jsonl_problem(good, "f.jsonl", canonical=True) is None
    for bad in (b'{"a":1\n"b":2},{"c":3}\n', b'{"x":[{"a":1}\n{"b":2}]},{"c":3}\n'):
        assert completeness.jsonl_problem(bad, "f.jsonl", canonical=True) == "f.jsonl:1: not JSON"
    assert completeness.jsonl_problem(b'{"b":1,"a":2}\n', "f.jsonl", canonical=True) == \
        "f.jsonl:1: not canonical JSON (sorted keys, no whitespace, minimal escapes)"
    assert completeness.jsonl_problem(b'{"x":1e-05}\n', "f.jsonl", canonical=True) is None  # Python's spelling
    assert completeness.jsonl_problem(b'{"x":1e-5}\n', "f.jsonl", canonical=True) is not None
