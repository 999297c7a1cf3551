"""The artifacts floor: one version gate, declared artifacts, bundle file names spelled once."""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest

from batchsafe.core import layout
from batchsafe.core.artifact import ARTIFACTS, ArtifactError, check_version

ROOT = Path(__file__).resolve().parents[2]
DECLARING = ["batchsafe.compiler.plan", "batchsafe.analysis.records", "batchsafe.analysis.rescore",
             "batchsafe.analysis.adjudication_models", "batchsafe.bundles.manifest",
             "batchsafe.verification.report", "batchsafe.verification.diff_models"]


@pytest.mark.parametrize(("data", "required", "message"), [
    ({"schema_version": 3}, False, "f.json: thing schema_version 3 is newer than this batchsafe understands (2)"),
    ({}, True, "f.json: not a thing (no integer schema_version)"),
    ({"schema_version": True}, True, "f.json: not a thing (no integer schema_version)"),
    ({"schema_version": "2"}, True, "f.json: not a thing (no integer schema_version)"),
])
def test_the_gate_refuses_newer_and_missing_versions(data, required, message) -> None:
    with pytest.raises(ArtifactError) as e:
        check_version(data, 2, what="thing", where="f.json", required=required)
    assert str(e.value) == message


def test_the_gate_passes_current_and_older_versions_and_leaves_missing_ones_to_the_model() -> None:
    assert check_version({"schema_version": 2}, 2) == 2 and check_version({"schema_version": 1}, 2) == 1
    assert check_version({}, 2) is None and check_version({"schema_version": True}, 2) is None


def test_every_artifact_declares_its_bundle_file_and_its_models_version() -> None:
    for mod in DECLARING:
        importlib.import_module(mod)
    files = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str)}
    assert {"plan", "scored sample", "flip row", "manifest", "rescore audit", "label record",
            "adjudication summary", "verify report", "bundle diff"} <= set(ARTIFACTS)
    for what, info in ARTIFACTS.items():
        assert info.file is None or info.file in files, what
        # The model's default schema_version is the declared one: no second copy to drift.
        assert info.model.model_fields["schema_version"].default == info.version, what
        assert info.model.ARTIFACT is info


def test_declared_readers_gate_versions_and_name_the_file(tmp_path) -> None:
    from batchsafe.analysis.adjudication_models import AdjudicationError, AdjudicationSummary
    from batchsafe.compiler.plan import Plan, PlanError
    from batchsafe.verification.report import VerifyReport

    with pytest.raises(PlanError, match=r"^x\.json: plan schema_version 2 is newer"):
        Plan.from_bytes(b'{"schema_version": 2}', "x.json")
    with pytest.raises(AdjudicationError, match=r"^adjudication/summary\.json: adjudication summary schema_version 9"):
        AdjudicationSummary.from_bytes(b'{"schema_version": 9}')
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"schema_version": 1, "ok": True, "bundle": "sha256:" + "0" * 64, "stages": []}))
    with pytest.raises(ArtifactError, match=r"r\.json: invalid verify report"):
        VerifyReport.from_path(path)  # fields missing: named as an invalid report, not a traceback


def _literal_bundle_names() -> list[str]:
    """String constants equal to a bundle file name, outside the layout module."""
    names = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str) and ("." in v or "/" in v)}
    hits = []
    for top in ["batchsafe", "compiler", "runtime", "analysis", "bundles", "verification", "registry"]:
        for f in sorted((ROOT / top).rglob("*.py")):
            if f == ROOT / "batchsafe/core/layout.py":
                continue
            tree = ast.parse(f.read_text())
            prose = {id(k.value) for k in ast.walk(tree) if isinstance(k, ast.keyword) and k.arg in ("help", "metavar")}
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and node.value in names and id(node) not in prose:
                    hits.append(f"{f.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    return hits


def test_bundle_file_names_are_spelled_only_in_the_layout_module() -> None:
    # f-strings in messages are fine; a bare constant is a second definition that can drift.
    assert _literal_bundle_names() == [], "use batchsafe.core.layout's names"
