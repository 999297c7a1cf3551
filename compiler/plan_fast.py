"""The plan's samples and groups built column by column, with pydantic as the schema of record.

A 300k-sample plan holds about a million small models (samples, groups, members and a
condition in each sample and group). Validating them one by one with pydantic costs
seconds and a gigabyte, mostly for per-instance bookkeeping (each model's own
``__pydantic_fields_set__`` and its own copy of a condition shared by thousands).

:func:`fast_samples_groups` accepts only records whose validity it can prove from the
models' declarations: every record a dict with exactly the model's fields, every plain
field of an exact type its annotation allows (``bool`` is not an ``int``), every
``Literal`` among its values. Conditions are validated by pydantic once per distinct
JSON text and the resulting (frozen) model shared. Anything else, or a model that grows
a field this module cannot read (a constraint, a default, a validator), returns None,
and the caller validates the whole plan with pydantic as before, for its messages. The
result equals pydantic's (``tests/compiler/test_plan_fast.py`` compares them).
"""

from __future__ import annotations

import types
import typing
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

PlainSpec = dict[str, "tuple[frozenset[type], frozenset[Any] | None] | None"]
"""Per field: (allowed exact types, allowed values for a Literal) or None for a field read separately."""


def plain_spec(cls: type[BaseModel], special: set[str]) -> PlainSpec | None:
    """Each field's exact types (and Literal values) from ``cls``'s annotations; None if one is not plain.

    ``special`` names the fields the caller validates itself (nested models). A field with
    a default, metadata (constraints) or any validator on the model makes the model
    unreadable here, so a future field the fast path does not understand falls back to
    pydantic instead of being checked too loosely.
    """
    if any(getattr(cls.__pydantic_decorators__, kind) for kind in (
            "validators", "field_validators", "root_validators", "model_validators")):
        return None
    spec: PlainSpec = {}
    for name, f in cls.model_fields.items():
        if not f.is_required() or f.metadata or f.alias is not None:
            return None
        if name in special:
            spec[name] = None
            continue
        plain = _plain_types(f.annotation)
        if plain is None:
            return None
        spec[name] = plain
    return spec if special <= spec.keys() else None


def _plain_types(ann: Any) -> tuple[frozenset[type], frozenset[Any] | None] | None:
    if ann in (str, int):
        return frozenset({ann}), None
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        values = typing.get_args(ann)
        if not all(type(v) is str for v in values):
            return None
        return frozenset({str}), frozenset(values)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(ann)
        if all(a in (str, int, type(None)) for a in args):
            return frozenset(args), None
    return None


def _columns_ok(records: list[Any], spec: PlainSpec) -> bool:
    """Every record a dict with exactly ``spec``'s keys, and each plain column of allowed exact types."""
    keys = spec.keys()
    if not all(type(r) is dict and r.keys() == keys for r in records):
        return False
    for name, plain in spec.items():
        if plain is None:
            continue
        allowed, values = plain
        if not {type(r[name]) for r in records} <= allowed:
            return False
        if values is not None and not {r[name] for r in records} <= values:
            return False
    return True


def _shared(cls: type[BaseModel], fields_set: set[str], rows: list[dict[str, Any]]) -> list[Any]:
    """Models of ``cls`` holding ``rows`` (already in field order), sharing one fields set.

    Sharing is safe because plan models are frozen: pydantic copies the set before any
    change (``model_copy``), and nothing sets attributes on a frozen model.
    """
    new, setattr_ = cls.__new__, object.__setattr__
    out = []
    for row in rows:
        obj = new(cls)
        setattr_(obj, "__dict__", row)
        setattr_(obj, "__pydantic_fields_set__", fields_set)
        setattr_(obj, "__pydantic_extra__", None)
        setattr_(obj, "__pydantic_private__", None)
        out.append(obj)
    return out


def _conditions(records: list[dict[str, Any]], condition: type[BaseModel], cache: dict[bytes, Any]) -> list[Any] | None:
    """The validated condition model of each record, one pydantic validation per distinct JSON text."""
    out = []
    try:
        for r in records:
            c = r["condition"]
            key = orjson.dumps(c)
            m = cache.get(key)
            if m is None:
                if type(c) is not dict:
                    return None
                m = cache[key] = condition.model_validate(c)
            out.append(m)
    except (orjson.JSONEncodeError, ValidationError):
        return None
    return out


def fast_samples_groups(raw: dict[str, Any], sample: type[BaseModel], group: type[BaseModel],
                        member: type[BaseModel], condition: type[BaseModel]) -> tuple[list[Any], list[Any]] | None:
    """The plan's ``samples`` and ``groups`` as models, or None when pydantic must validate them."""
    s_spec = plain_spec(sample, {"condition"})
    g_spec = plain_spec(group, {"condition", "members"})
    m_spec = plain_spec(member, set())
    samples, groups = raw.get("samples"), raw.get("groups")
    if s_spec is None or g_spec is None or m_spec is None or type(samples) is not list or type(groups) is not list:
        return None
    if not (_columns_ok(samples, s_spec) and _columns_ok(groups, g_spec)):
        return None
    if not all(type(g["members"]) is list for g in groups):
        return None
    members = [m for g in groups for m in g["members"]]
    if not _columns_ok(members, m_spec):
        return None
    cache: dict[bytes, Any] = {}
    s_cond, g_cond = _conditions(samples, condition, cache), _conditions(groups, condition, cache)
    if s_cond is None or g_cond is None:
        return None
    m_fields, s_fields, g_fields = list(m_spec), list(s_spec), list(g_spec)
    m_models = _shared(member, set(m_fields), [{k: m[k] for k in m_fields} for m in members])
    s_rows = [{k: r[k] for k in s_fields} for r in samples]
    for row, c in zip(s_rows, s_cond):
        row["condition"] = c
    g_rows = [{k: g[k] for k in g_fields} for g in groups]
    at = 0
    for row, c in zip(g_rows, g_cond):
        row["condition"] = c
        n = len(row["members"])
        row["members"], at = m_models[at:at + n], at + n
    return _shared(sample, set(s_fields), s_rows), _shared(group, set(g_fields), g_rows)
