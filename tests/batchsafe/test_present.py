"""The CLI's tables fit an 80-column terminal without cutting identifiers short."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import fake_run
import pytest
from rich.console import Console

from batchsafe import present
from batchsafe.analysis.analyze import analyze_run
from batchsafe.analysis.identity import output_identity, read_outputs
from batchsafe.compiler.compile import compile_spec

ROOT = Path(__file__).resolve().parents[2]


def _render(table, width: int = 80) -> str:
    con = Console(width=width, record=True, file=io.StringIO())
    con.print(table)
    return con.export_text()


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("present")
    store, bid, plan = fake_run.make_bundle(root)
    return root, store, bid, plan


def _fits(text: str) -> None:
    assert max(len(line) for line in text.splitlines()) <= 80


def test_plan_table_shows_every_identifier_whole() -> None:
    plan = compile_spec(ROOT / "specs" / "quickstart.yaml")
    text = _render(present.plan_table(plan))
    _fits(text)
    assert "…" not in text
    words = set(text.split())
    for p in plan.phases:
        assert {p.id, p.kind, p.engine, p.dispatch, *p.models} <= words, p.id
    assert plan.plan_hash in words


def test_manifest_identity_and_headline_tables_fit(mini) -> None:
    root, store, bid, plan = mini
    manifest = store.manifest(bid)
    text = _render(present.manifest_table(manifest))
    _fits(text)
    words = set(text.split())
    assert {f.name for f in manifest.files} <= words
    # The one deliberate shortening: digests, 16 hex digits (bundle show --json has them whole).
    assert text.count("…") == len(manifest.files)
    assert all(f.sha256[:present.DIGEST_SHOWN] + "…" in words for f in manifest.files)

    rows = output_identity(plan, read_outputs(root / "run" / "outputs" / "samples.jsonl"))
    text = _render(present.identity_table(rows))
    _fits(text)
    assert "…" not in text and {r.condition for r in rows} <= set(text.split())
    text = _render(present.headline_table(analyze_run(plan, root / "run", plots=False)))
    _fits(text)
    assert "…" not in text


def test_long_identifiers_wrap_instead_of_ending_in_an_ellipsis(mini) -> None:
    root, _, _, plan = mini
    rows = output_identity(plan, read_outputs(root / "run" / "outputs" / "samples.jsonl"))
    long = "meta-llama-3.1-8b-instruct-awq-int4-g128-with-a-very-long-name"
    rows = [dataclasses.replace(r, model=long) for r in rows]
    text = _render(present.identity_table(rows))
    _fits(text)
    assert "…" not in text
    # Folded: the name's pieces, in order, on consecutive lines of its column.
    pieces = [t for t in text.split() if len(t) > 3 and t in long]
    assert long not in text.split() and long in "".join(pieces)
