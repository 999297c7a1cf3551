"""compiler.plan_fast: samples and groups built column by column must equal pydantic's validation.

The fast path may only accept what pydantic accepts, give the same models (values, field
sets, nesting), and hand anything else to pydantic, whose message the reader reports.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import fake_run as fake  # tests/analysis/test_analyze/fake_run.py, on sys.path via tests/conftest.py
import orjson
import pytest
from pydantic import BaseModel, Field, field_validator

from batchsafe.compiler import plan as P
from batchsafe.compiler.plan_fast import fast_samples_groups, plain_spec


@pytest.fixture(scope="module")
def plan_bytes() -> bytes:
    return fake.mini_plan().to_bytes()


def _fast(raw: dict[str, Any]):
    return fast_samples_groups(raw, P.Sample, P.Group, P.Member, P.Condition)


def _same_models(a: Any, b: Any) -> None:
    """Equal values, classes and fields sets, all the way down."""
    assert type(a) is type(b)
    if isinstance(a, BaseModel):
        assert a.__pydantic_fields_set__ == b.__pydantic_fields_set__
        assert list(a.__dict__) == list(b.__dict__)  # field order, which the serialiser follows
        for k in a.__dict__:
            _same_models(a.__dict__[k], b.__dict__[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same_models(x, y)
    else:
        assert a == b and type(a) is type(b)


def test_fast_path_equals_pydantic_on_a_real_plan(plan_bytes):
    raw = orjson.loads(plan_bytes)
    fast = _fast(copy.deepcopy(raw))
    assert fast is not None, "the current plan models must take the fast path"
    ref = P.Plan.model_validate(raw)
    _same_models(fast[0], ref.samples)
    _same_models(fast[1], ref.groups)
    plan = P.plan_from_bytes(plan_bytes)
    assert plan == ref and plan.to_bytes() == plan_bytes and plan.compute_hash() == ref.plan_hash
    # Conditions are validated once per distinct JSON text and shared (frozen models).
    assert len({id(s.condition) for s in plan.samples}) == len({s.condition.model_dump_json() for s in plan.samples})


def test_fast_path_leaves_the_raw_dict_untouched(plan_bytes):
    raw = orjson.loads(plan_bytes)
    before = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
    assert _fast(raw) is not None
    assert orjson.dumps(raw, option=orjson.OPT_SORT_KEYS) == before  # the hash check reads it afterwards


def _set(path: list[Any], value: Any, *, delete: bool = False):
    def edit(raw):
        node = raw
        for key in path[:-1]:
            node = node[key]
        if delete:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return edit


MUTATIONS = {
    "position as a string (pydantic coerces)": _set(["samples", 0, "position"], "0"),
    "position as a bool": _set(["samples", 0, "position"], True),
    "position as a float": _set(["samples", 0, "position"], 0.0),
    "id as an int": _set(["samples", 1, "id"], 7),
    "baseline as a list": _set(["samples", 1, "baseline"], ["x"]),
    "extra sample key": _set(["samples", 0, "extra"], 1),
    "missing sample key": _set(["samples", 0, "baseline"], None, delete=True),
    "sample not an object": _set(["samples", 0], "s_1"),
    "samples not a list": _set(["samples"], {"a": 1}),
    "unknown dispatch mode": _set(["groups", 0, "mode"], "turbo"),
    "mode not a string": _set(["groups", 0, "mode"], 3),
    "group index as a string": _set(["groups", 0, "index"], "0"),
    "members not a list": _set(["groups", 0, "members"], {"prompt": "p"}),
    "extra member key": _set(["groups", 0, "members", 0, "x"], 1),
    "member sample as an int": _set(["groups", 0, "members", 0, "sample"], 5),
    "condition not an object": _set(["samples", 0, "condition"], "bs=1"),
    "condition with an unknown key": _set(["samples", 0, "condition", "colour"], "red"),
    "condition batch size as a bool": _set(["samples", 0, "condition", "batch_size"], True),
    "condition batch size as a string": _set(["groups", 0, "condition", "batch_size"], "4"),
    "condition repeat absent (has a default)": _set(["samples", 0, "condition", "repeat"], None, delete=True),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_fast_path_accepts_only_what_pydantic_gives_the_same_models(plan_bytes, name):
    raw = orjson.loads(plan_bytes)
    MUTATIONS[name](raw)
    fast = _fast(copy.deepcopy(raw))
    try:
        ref = P.Plan.model_validate(raw)
    except ValueError:
        ref = None
    if ref is None:
        assert fast is None, f"{name}: the fast path accepted what pydantic refuses"
        with pytest.raises(P.PlanError, match="invalid plan"):
            P.plan_from_bytes(orjson.dumps(raw), check_hash=False)
    elif fast is not None:
        _same_models(fast[0], ref.samples)
        _same_models(fast[1], ref.groups)
    if ref is not None:  # whichever path read it, the reader's plan is pydantic's
        assert P.plan_from_bytes(orjson.dumps(raw), check_hash=False) == ref


def test_plain_spec_refuses_what_it_cannot_check():
    class Plain(BaseModel):
        a: str
        b: int | None
        c: Literal["x", "y"]

    class Defaulted(BaseModel):
        a: str = "z"

    class Constrained(BaseModel):
        a: int = Field(ge=0)

    class Validated(BaseModel):
        a: str

        @field_validator("a")
        @classmethod
        def _strip(cls, v: str) -> str:
            return v.strip()

    class Floaty(BaseModel):
        a: float

    spec = plain_spec(Plain, set())
    assert spec == {"a": (frozenset({str}), None), "b": (frozenset({int, type(None)}), None),
                    "c": (frozenset({str}), frozenset({"x", "y"}))}
    for model in (Defaulted, Constrained, Validated, Floaty):
        assert plain_spec(model, set()) is None, model.__name__
    assert plain_spec(Plain, {"missing"}) is None
