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
    from batchsafe.compiler.spec import spec_json_schema

    return spec_json_schema()


MODELS: dict[str, str] = {
    "plan.schema.json": "batchsafe.compiler.plan:Plan",
    "manifest.schema.json": "batchsafe.bundles.manifest:Manifest",
    "scored_sample.schema.json": "batchsafe.analysis.records:ScoredSample",
    "flip_row.schema.json": "batchsafe.analysis.records:FlipRow",
    "rescore_row.schema.json": "batchsafe.analysis.rescore:RescoreRow",
    "rescore_audit.schema.json": "batchsafe.analysis.rescore:RescoreAudit",
    "adjudication_label.schema.json": "batchsafe.analysis.adjudication_models:LabelRecord",
    "adjudication_summary.schema.json": "batchsafe.analysis.adjudication_models:AdjudicationSummary",
    "verify_report.schema.json": "batchsafe.verification.report:VerifyReport",
    "launch_record.schema.json": "batchsafe.runtime.launch.record:LaunchRecord",
    "shard_manifest.schema.json": "batchsafe.runtime.shard:ShardManifest",
    "partial_run.schema.json": "batchsafe.runtime.partial:PartialRecord",
}
"""Schema file -> the pydantic model (module:Class) it is generated from."""


def _generator(name: str, ref: str) -> Callable[[], dict[str, Any]]:
    def gen() -> dict[str, Any]:
        import importlib

        module, cls = ref.split(":")
        return _model_schema(getattr(importlib.import_module(module), cls), name)
    return gen


GENERATORS: dict[str, Callable[[], dict[str, Any]]] = {
    "spec.schema.json": _spec, **{name: _generator(name, ref) for name, ref in MODELS.items()}}


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
