"""core.fastmodel.construct: models equal to validated ones, sharing one fields set safely."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from batchsafe.core.fastmodel import construct


class Row(BaseModel):
    model_config = ConfigDict(frozen=True)
    a: int
    b: str | None


class Mutable(BaseModel):
    a: int
    b: str


def test_construct_equals_validation_and_shares_the_fields_set():
    x, y = construct(Row, a=1, b="x"), construct(Row, a=2, b=None)
    assert x == Row(a=1, b="x") and y == Row(a=2, b=None)
    assert x.__pydantic_fields_set__ is y.__pydantic_fields_set__ == {"a", "b"}
    assert x.model_dump(exclude_unset=True) == {"a": 1, "b": "x"}


def test_changes_never_reach_the_shared_set():
    x, y = construct(Mutable, a=1, b="x"), construct(Mutable, a=2, b="y")
    shared = set(y.__pydantic_fields_set__)
    z = x.model_copy(update={"a": 5})
    x.a = 7  # pydantic adds "a" to x's fields set: already there
    assert z.a == 5 and x.a == 7 and y.a == 2
    assert y.__pydantic_fields_set__ == shared == {"a", "b"}
