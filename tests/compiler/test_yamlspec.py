"""Tests for compiler.yamlspec: loading, extends-merging, schema errors with exact positions.

Golden cases live in ``test_yamlspec/``: each ``NAME.yaml`` has a ``NAME.expected``
holding the exact formatted diagnostics.  Files under ``test_yamlspec/bases/`` are
only reached through ``extends``.  Regenerate (then review the diff!) with
``BATCHSAFE_REGEN_GOLDEN=1 pytest tests/compiler/test_yamlspec.py``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from ruamel.yaml import YAML

from batchsafe.compiler.diagnostics import Diagnostic, SpecError, format_path
from batchsafe.compiler.schema_errors import validate_schema
from batchsafe.compiler.yamlspec import LocatedDoc, diag_at, load_located, resolve_spec

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_suffix("")  # tests/compiler/test_yamlspec/
GOLDEN_REL = GOLDEN.relative_to(REPO).as_posix()


# --------------------------------------------------------------------------- toy schema
# Small, but it exercises every mapping in validate_schema: extra="forbid" (unknown-key),
# required fields, ints with bounds, Literal enums and consts, Optional (anyOf+null),
# a discriminated union (oneOf+discriminator), a plain union, a pattern with and without
# a description, uniqueItems (set), minItems, minLength and pattern-keyed mappings.


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Engine(_Strict):
    name: str
    max_tokens: int = Field(gt=0)


class Axes(_Strict):
    batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    seed: Optional[int] = None


class SweepPhase(_Strict):
    kind: Literal["sweep"]
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$",
                    description="Phase ids are lower-case identifiers. They name output files.")
    axes: Axes


class ProbePhase(_Strict):
    kind: Literal["probe"]
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    prompts: int = Field(ge=1, le=1000)


class ToySpec(_Strict):
    name: str = Field(min_length=1)
    engine: Engine = Field(description="Which engine serves the requests. Required.")
    phases: list[Annotated[Union[SweepPhase, ProbePhase], Field(discriminator="kind")]]
    tags: set[str] = Field(default_factory=set)
    notes: Optional[str] = None
    timeout_s: Optional[float] = Field(None, gt=0, description="Wall-clock limit in seconds.")
    fallback: Optional[Union[int, Literal["auto"]]] = None
    limits: dict[Annotated[str, StringConstraints(pattern=r"^[a-z_]+$", max_length=12)],
                 Annotated[int, Field(ge=0)]] = Field(default_factory=dict)


SCHEMA = ToySpec.model_json_schema()
# pydantic checks dict keys itself but only emits patternProperties + maxLength; close the
# mapping the way compiler/spec.py does, so key-name errors go through propertyNames too.
SCHEMA["properties"]["limits"]["additionalProperties"] = False


# --------------------------------------------------------------------------- golden


def _run(rel: str) -> str:
    """Everything a user would see for one spec: load/extends errors, else schema errors."""
    try:
        doc = resolve_spec(rel)
    except SpecError as e:
        return str(e) + "\n"
    diags = validate_schema(doc, SCHEMA)
    return "".join(d.format() + "\n" for d in diags) or "OK\n"


CASES = sorted(p.stem for p in GOLDEN.glob("*.expected"))


def test_every_case_has_both_files() -> None:
    yamls = {p.stem for p in GOLDEN.glob("*.yaml")}
    assert yamls == set(CASES), "each NAME.yaml needs a NAME.expected and vice versa"
    assert len(CASES) >= 17


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # expected files hold repo-relative paths
    got = _run(f"{GOLDEN_REL}/{name}.yaml")
    expected_file = GOLDEN / f"{name}.expected"
    if os.environ.get("BATCHSAFE_REGEN_GOLDEN"):
        expected_file.write_text(got, encoding="utf-8")
    assert got == expected_file.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- unit


def _write(tmp: Path, name: str, text: str) -> str:
    (tmp / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp / name).write_text(text, encoding="utf-8")
    return str(tmp / name)


def test_positions_are_exact(tmp_path: Path) -> None:
    text = (
        "a: |\n"
        "  block\n"
        "b: 'quoted'\n"
        "c: [1, {d: 2}]\n"
        "e:\n"
        "f:\n"
        "  - x\n"
        "  - g: 1\n"
        "    h: >-\n"
        "      folded\n"
    )
    doc = load_located(_write(tmp_path, "p.yaml", text))
    f = doc.files[0]
    assert doc.data == {"a": "block\n", "b": "quoted", "c": [1, {"d": 2}], "e": None,
                        "f": ["x", {"g": 1, "h": "folded"}]}
    assert doc.value_pos[("a",)] == (f, 1, 4)  # the block indicator
    assert doc.value_pos[("b",)] == (f, 3, 4)  # the opening quote
    assert doc.value_pos[("c",)] == (f, 4, 4)  # the '['
    assert doc.value_pos[("c", 1)] == (f, 4, 8)  # the '{'
    assert doc.value_pos[("c", 1, "d")] == (f, 4, 12)
    assert doc.key_pos[("c", 1, "d")] == (f, 4, 9)
    assert doc.value_pos[("e",)] == (f, 5, 1)  # empty value: at its key, not the next line
    assert doc.key_pos[("f", 1)] == doc.value_pos[("f", 1)] == (f, 8, 5)
    assert doc.key_pos[("f", 1, "h")] == (f, 9, 5)
    assert doc.value_pos[("f", 1, "h")] == (f, 9, 8)
    assert doc.pos(("f", 1, "h", "nope", 3)) == (f, 9, 8)  # nearest known ancestor
    assert doc.pos(("zzz",), key=True) == doc.key_pos[()]
    assert doc.texts == {f: text} and doc.files == [f]


def test_crlf_bom_and_aliases(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_bytes("\ufeffbase: &b {x: 1}\r\nd:\r\n  <<: *b\r\n  y: 2\r\ne: *b\r\n".encode())
    doc = load_located(path)
    assert doc.data == {"base": {"x": 1}, "d": {"y": 2, "x": 1}, "e": {"x": 1}}
    assert doc.value_pos[("d", "y")][1:] == (4, 6)
    # Reached through the alias: positioned where it is used, the anchor side kept for the note.
    assert doc.value_pos[("d", "x")][1:] == (3, 7)
    assert doc.origin[("d", "x")][1:] == (1, 14)
    assert doc.value_pos[("e",)][1:] == (5, 4) and doc.origin[("e",)][1:] == (1, 7)
    assert doc.texts[str(path)].encode() == path.read_bytes()  # exact text, hashable as-is


def test_relative_file_names_stay_relative(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    doc = resolve_spec(f"{GOLDEN_REL}/extends_merge.yaml")
    assert doc.files == [f"{GOLDEN_REL}/extends_merge.yaml", f"{GOLDEN_REL}/bases/merge_base.yaml"]
    assert all(not os.path.isabs(f) for f in doc.texts)


def test_extends_merge_data_and_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    doc = resolve_spec(Path(GOLDEN_REL) / "extends_merge.yaml")
    base, child = f"{GOLDEN_REL}/bases/merge_base.yaml", f"{GOLDEN_REL}/extends_merge.yaml"
    assert doc.data == {
        "name": "child",  # scalar replaced; `notes: null` deleted the base key; `extends` dropped
        "engine": {"name": "llama", "max_tokens": 64},
        "phases": [  # merged by id: base order kept, new ids appended
            {"kind": "sweep", "id": "warmup", "axes": {"batch_sizes": [0]}},
            {"kind": "sweep", "id": "main", "axes": {"batch_sizes": [8, 16], "dtype": "fp13"}},
            {"kind": "probe", "id": "extra", "prompts": 0},
        ],
    }
    assert doc.key_pos[("engine", "max_tokens")] == (base, 5, 3)  # inherited: base file
    assert doc.value_pos[("phases", 0, "axes", "batch_sizes", 0)] == (base, 10, 21)
    assert doc.value_pos[("phases", 1, "axes", "batch_sizes")] == (base, 14, 20)
    assert doc.value_pos[("phases", 1, "axes", "dtype")] == (child, 8, 14)  # overridden: child
    assert doc.key_pos[("phases", 2)] == (child, 9, 5)
    assert doc.value_pos[("name",)] == (child, 3, 7)


def test_merge_rules(tmp_path: Path) -> None:
    _write(tmp_path, "base.yaml", "l: [1, 2]\nids: [{id: a, v: 1}, {id: b, v: 2}]\nm: {x: 1, y: 2}\n"
                                  "keep: [{id: a}]\nmixed: [{id: a}, 3]\n")
    doc = resolve_spec(_write(tmp_path, "child.yaml", "extends: base.yaml\nl: [3]\n"
                                                     "ids: [{id: b, w: 3}, {id: c}]\nm: {y: null, z: null}\n"
                                                     "keep: []\nmixed: [{id: a, v: 1}]\n"))
    assert doc.data == {
        "l": [3],  # plain lists are replaced
        "ids": [{"id": "a", "v": 1}, {"id": "b", "v": 2, "w": 3}, {"id": "c"}],
        "m": {"x": 1, "z": None},  # null deletes a base key, is kept for a new one
        "keep": [],  # [] clears an id list
        "mixed": [{"id": "a", "v": 1}],  # not all items have ids: replaced
    }
    assert doc.files == [str(tmp_path / "child.yaml"), str(tmp_path / "base.yaml")]


def test_duplicate_ids_refuse_by_id_merge(tmp_path: Path) -> None:
    _write(tmp_path, "base.yaml", "p:\n  - id: a\n  - id: a\n")
    with pytest.raises(SpecError) as err:
        resolve_spec(_write(tmp_path, "c.yaml", "extends: base.yaml\np: [{id: a}]\n"))
    [d] = err.value.diagnostics
    assert (d.line, d.col, d.path, d.code) == (3, 9, "p[1].id", "duplicate-id")


def test_no_traceback_for_garbage(tmp_path: Path) -> None:
    cases = ["a: [1, 2\n", "{", "a: &x [*x]\n", "a: *nope\n", "a: 1\n---\nb: 2\n", "a: \x07\n",
             "? [a]\n: 1\n", "[" * 5000, "a: !!int abc\n", "a: .nan\n", "%YAML 9.9\n---\na: 1\n", "a: b: c\n"]
    for i, text in enumerate(cases):
        with pytest.raises(SpecError) as err:
            load_located(_write(tmp_path, f"g{i}.yaml", text))
        assert all(d.line >= 1 and d.col >= 1 and "\n" not in d.message for d in err.value.diagnostics)
    (tmp_path / "bad.yaml").write_bytes(b"a: 1\nb: \xff\n")
    with pytest.raises(SpecError) as err:
        load_located(tmp_path / "bad.yaml")
    assert err.value.diagnostics[0].format().startswith(f"{tmp_path / 'bad.yaml'}:2:4: error[encoding]:")
    with pytest.raises(SpecError, match=r"error\[missing-file\]"):
        load_located(tmp_path / "absent.yaml")
    with pytest.raises(SpecError, match=r"error\[unreadable-file\]"):
        load_located(tmp_path)


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    with pytest.raises(SpecError, match=r"error\[too-large\]"):
        load_located(_write(tmp_path, "bomb.yaml", "\n".join(lines) + "\n"))


def test_diagnostic_format_and_spec_error() -> None:
    d1 = Diagnostic("s.yaml", 3, 5, "phases[2].axes", "wrong-type", "expected integer,\ngot string", "hint")
    d2 = Diagnostic("s.yaml", 1, 1, "", "yaml-syntax", "bad")
    assert d1.format() == "s.yaml:3:5: error[wrong-type] phases[2].axes: expected integer, got string\n    hint: hint"
    assert d2.format() == "s.yaml:1:1: error[yaml-syntax]: bad"
    err = SpecError([d1, d2, d1])
    assert err.diagnostics == [d2, d1] and str(err) == d2.format() + "\n" + d1.format()
    with pytest.raises(ValueError):
        SpecError([])
    assert format_path(("phases", 2, "axes")) == "phases[2].axes"
    assert format_path(()) == "" and format_path((0, "a")) == "[0].a"
    assert format_path(("datasets", "my.data", "files")) == "datasets['my.data'].files"


def test_diag_at_falls_back_to_ancestor() -> None:
    doc = LocatedDoc({"a": {"b": 1}}, {(): ("f", 1, 1), ("a",): ("f", 2, 1), ("a", "b"): ("f", 3, 3)},
                     {(): ("f", 1, 1), ("a",): ("f", 3, 3), ("a", "b"): ("f", 3, 6)}, ["f"], {"f": ""})
    assert diag_at(doc, ("a", "b", "c"), "unknown-name", "no such thing").format() == \
        "f:3:6: error[unknown-name] a.b.c: no such thing"
    assert diag_at(doc, ("a", "x"), "missing-file", "m", "h", key=True).format() == \
        "f:2:1: error[missing-file] a.x: m\n    hint: h"


def test_union_description_scoping(tmp_path: Path) -> None:
    class Inner(_Strict):
        level: int = Field(ge=1)

    class Outer(_Strict):
        inner: Optional[Inner] = Field(None, description="Inner settings.")
        sizes: Optional[list[Annotated[int, Field(ge=1)]]] = Field(None, description="Sizes per group.")

    doc = load_located(_write(tmp_path, "d.yaml", "inner: {level: 0}\nsizes: [2, 0]\n"))
    got = {d.path: d.hint for d in validate_schema(doc, Outer.model_json_schema())}
    # A list's description still explains its items; a mapping's does not explain its keys.
    assert got == {"inner.level": "", "sizes[1]": "Sizes per group."}


def test_valid_spec_has_no_diagnostics(tmp_path: Path) -> None:
    doc = load_located(_write(tmp_path, "ok.yaml", "name: demo\nengine: {name: llama, max_tokens: 8}\n"
                                                   "phases:\n  - {kind: probe, id: p, prompts: 3}\n"
                                                   "fallback: auto\nnotes: null\n"))
    assert validate_schema(doc, SCHEMA) == []


# --------------------------------------------------------------------------- properties

# Surrogates cannot be written as UTF-8; NEL/LS/PS are YAML 1.1 line breaks that ruamel's
# dumper writes raw inside scalars and its reader then folds (a ruamel round-trip quirk).
_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x85\u2028\u2029")
_keys = st.text(_chars, max_size=8)
_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(_chars, max_size=12))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
                       max_leaves=20)
_docs = st.dictionaries(_keys.filter(lambda k: k != "extends"), _values, max_size=5)


def _dump(data: Any, path: Path) -> None:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False  # block style: the layout users write
    with path.open("w", encoding="utf-8") as fh:
        yaml.dump(data, fh)


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else []
    for k, v in items:
        out += _paths(v, prefix + (k,))
    return out


_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(_docs)
def test_round_trip(data: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "doc.yaml"
        _dump(data, path)
        doc = load_located(path)
    assert doc.data == data
    for p in _paths(data):
        assert doc.key_pos[p][1] >= 1 and doc.value_pos[p][1] >= 1
        assert doc.key_pos[p][2] >= 1 and doc.value_pos[p][2] >= 1


@_SETTINGS
@given(_docs)
def test_merge_identities(data: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        _dump({}, d / "empty.yaml")
        _dump(data, d / "x.yaml")
        _dump({"extends": "empty.yaml", **data}, d / "x_over_empty.yaml")
        _dump({"extends": "x.yaml"}, d / "empty_over_x.yaml")
        assert resolve_spec(d / "x_over_empty.yaml").data == data
        assert resolve_spec(d / "empty_over_x.yaml").data == data
