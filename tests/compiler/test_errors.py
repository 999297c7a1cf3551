"""Golden tests: the exact text a user sees for each kind of bad spec.

Each ``test_errors/NAME.yaml`` is compiled against the compiler fixture data; its
stderr must equal ``NAME.expected`` and the exit code must be 2. Regenerate after a
deliberate wording change with ``BATCHSAFE_REGEN_GOLDEN=1 pytest tests/compiler/test_errors.py``
and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from batchsafe.cli import main

ROOT = Path(__file__).resolve().parents[2]
CASES = sorted((Path(__file__).parent / "test_errors").glob("*.yaml"))
DATA = "tests/compiler/test_compile/data"


@pytest.mark.parametrize("case", [c for c in CASES if c.name != "cycle_b.yaml"], ids=lambda c: c.stem)
def test_golden_error_text(case: Path, capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COLUMNS", "200")
    rel = case.relative_to(ROOT).as_posix()
    code = main(["compile", rel, "--data-dir", DATA, "-o", str(tmp_path / "plan.json")])
    err = capsys.readouterr().err
    expected = case.with_suffix(".expected")
    if os.environ.get("BATCHSAFE_REGEN_GOLDEN"):
        expected.write_text(err)
    assert code == 2
    assert err == expected.read_text()
    assert "Traceback" not in err
    assert not (tmp_path / "plan.json").exists()


def test_every_required_error_kind_has_a_golden_case() -> None:
    codes = "".join(c.with_suffix(".expected").read_text() for c in CASES if c.with_suffix(".expected").exists())
    for code in ("yaml-syntax", "unknown-key", "wrong-type", "out-of-range", "unknown-name", "missing-file",
                 "hash-mismatch", "selection-too-large", "duplicate-id", "extends-cycle"):
        assert f"error[{code}]" in codes, code
