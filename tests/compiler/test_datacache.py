"""The parsed-record cache never changes what a compile produces."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchsafe.compiler import datacache
from batchsafe.compiler.compile import compile_spec

HERE = Path(__file__).parent / "test_compile"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("BATCHSAFE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BATCHSAFE_NO_DATA_CACHE", raising=False)
    return tmp_path / "cache" / "datasets"


def test_cached_and_uncached_compiles_are_identical(cache: Path, monkeypatch) -> None:
    cold = compile_spec(HERE / "mini.yaml", HERE / "data")
    entries = sorted(cache.rglob("*.json"))
    assert len(entries) == 7  # one per input file
    warm = compile_spec(HERE / "mini.yaml", HERE / "data")
    monkeypatch.setenv("BATCHSAFE_NO_DATA_CACHE", "1")
    off = compile_spec(HERE / "mini.yaml", HERE / "data")
    assert cold.to_bytes() == warm.to_bytes() == off.to_bytes()


def test_corrupt_entries_are_reparsed_and_a_new_loader_misses(cache: Path, monkeypatch) -> None:
    base = compile_spec(HERE / "mini.yaml", HERE / "data")
    for entry in cache.rglob("*.json"):
        entry.write_bytes(b'[["forged", {"goal": "x"}, "x", 1]')  # truncated JSON
    assert compile_spec(HERE / "mini.yaml", HERE / "data").to_bytes() == base.to_bytes()
    before = set(cache.rglob("*.json"))
    monkeypatch.setattr(datacache, "LOADER_FINGERPRINT", "changed-loader")
    assert compile_spec(HERE / "mini.yaml", HERE / "data").to_bytes() == base.to_bytes()
    assert len(set(cache.rglob("*.json")) - before) == 7


def test_a_changed_file_is_a_different_entry(cache: Path, tmp_path: Path) -> None:
    from batchsafe.core.canonical import hash_file

    csv = tmp_path / "astronomy_test.csv"
    csv.write_text("How many moons does Mars have?,0,1,2,3,C\n")
    first = datacache.load_cached("mmlu_csv", csv, "astronomy_test.csv", hash_file(csv)[0])
    csv.write_text("How many large moons does Mars have?,0,1,2,3,C\n")
    second = datacache.load_cached("mmlu_csv", csv, "astronomy_test.csv", hash_file(csv)[0])
    assert first[0].fields["question"] == "How many moons does Mars have?"
    assert second[0].fields["question"] == "How many large moons does Mars have?"
    assert len(list(cache.rglob("*.json"))) == 2
