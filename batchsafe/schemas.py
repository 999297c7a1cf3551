"""Generate the JSON Schemas in schema/ from the pydantic artifact models.

The checked-in files are the contract other tools read; ``tests/batchsafe/test_schemas.py``
fails when a model changes without ``make schema`` being run (as dbt does for its
manifest and run_results schemas).

Usage: ``python -m batchsafe.schemas [--check] [DIR]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"


def _model_schema(model: Any, name: str) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://batchsafe.dev/schema/{name}"
    return schema


def _spec() -> dict[str, Any]:
    from compiler.spec import spec_json_schema

    return spec_json_schema()


def _plan() -> dict[str, Any]:
    from compiler.plan import Plan

    return _model_schema(Plan, "plan.schema.json")


def _manifest() -> dict[str, Any]:
    from bundles.manifest import Manifest

    return _model_schema(Manifest, "manifest.schema.json")


def _scored_sample() -> dict[str, Any]:
    from analysis.records import ScoredSample

    return _model_schema(ScoredSample, "scored_sample.schema.json")


def _flip_row() -> dict[str, Any]:
    from analysis.records import FlipRow

    return _model_schema(FlipRow, "flip_row.schema.json")


GENERATORS: dict[str, Callable[[], dict[str, Any]]] = {
    "spec.schema.json": _spec,
    "plan.schema.json": _plan,
    "manifest.schema.json": _manifest,
    "scored_sample.schema.json": _scored_sample,
    "flip_row.schema.json": _flip_row,
}


def render_all() -> dict[str, str]:
    """File name -> exact text of every generated schema."""
    return {name: json.dumps(gen(), indent=2, sort_keys=True, ensure_ascii=False) + "\n" for name, gen in GENERATORS.items()}


def main(argv: list[str] | None = None) -> int:
    """Write the schemas, or with --check report which checked-in files are stale."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if any checked-in schema differs")
    parser.add_argument("dir", nargs="?", default=str(SCHEMA_DIR))
    args = parser.parse_args(argv)
    out = Path(args.dir)
    stale = []
    for name, text in render_all().items():
        path = out / name
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            out.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print("stale schemas (run `make schema`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
