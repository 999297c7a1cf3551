"""The checked-in JSON Schemas are generated from the models and must not drift."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
from ruamel.yaml import YAML

from batchsafe.schemas import SCHEMA_DIR, render_all
from batchsafe.compiler.compile import compile_spec

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_schemas_match_the_models() -> None:
    for name, text in render_all().items():
        path = SCHEMA_DIR / name
        assert path.is_file(), f"schema/{name} missing: run `make schema`"
        assert path.read_text(encoding="utf-8") == text, f"schema/{name} is stale: run `make schema`"


def test_specs_and_plans_validate_against_the_checked_in_schemas() -> None:
    spec_schema = json.loads((SCHEMA_DIR / "spec.schema.json").read_text())
    plan_schema = json.loads((SCHEMA_DIR / "plan.schema.json").read_text())
    for spec in sorted((ROOT / "specs").glob("*.yaml")):
        data = YAML(typ="safe").load(spec.read_text())
        if "extends" not in data:
            jsonschema.Draft202012Validator(spec_schema).validate(data)
    plan = compile_spec(ROOT / "tests/compiler/test_compile/mini.yaml", ROOT / "tests/compiler/test_compile/data")
    jsonschema.Draft202012Validator(plan_schema).validate(json.loads(plan.to_bytes()))


def test_schemas_reject_what_the_models_reject() -> None:
    schema = json.loads((SCHEMA_DIR / "spec.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    assert any(e.validator == "additionalProperties" for e in validator.iter_errors({"schema_version": 1, "bogus": 1}))
    assert any(e.validator == "const" or e.validator == "enum" for e in validator.iter_errors({"schema_version": 2}))
