"""Plain-text tables of registry results for the CLI (tabulate), and their JSON form.

Bundle ids are shortened to ``sha256:`` plus 12 hex digits in tables (still enough to
pass back to ``bundle show``); ``as_json`` keeps everything in full.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel
from tabulate import tabulate

from batchsafe.core.canonical import canonical_bytes

from .models import BundleInfo, PromptFlipSummary, PromptHistory

ID_CHARS = 19
"""Characters of a bundle id shown in tables: ``sha256:`` + 12 hex."""


def short(bundle_id: str | None) -> str:
    """A bundle id cut for a table (``-`` for None)."""
    return "-" if bundle_id is None else bundle_id[:ID_CHARS]


def _join(items: Sequence[str], limit: int = 4, sep: str = ", ") -> str:
    shown = sep.join(items[:limit])
    return shown + (f" (+{len(items) - limit})" if len(items) > limit else "")


def _score(x: float) -> str:
    return f"{x:g}"


def as_json(value: BaseModel | Sequence[BaseModel]) -> bytes:
    """Canonical JSON of one result or a list of them (what ``--json`` prints)."""
    if isinstance(value, BaseModel):
        return canonical_bytes(value.model_dump(mode="json"))
    return canonical_bytes([v.model_dump(mode="json") for v in value])


def render_query(results: Sequence[PromptFlipSummary], *, n_bundles: int | None = None) -> str:
    """One line per prompt: flipped/observed bundles, rows, task, models, conditions, directions.

    ``n_bundles`` (the registry's bundle count) goes into the closing line when given.
    """
    if not results:
        return "no prompts match" + (f" ({n_bundles} bundles registered)" if n_bundles is not None else "") + "\n"
    rows = [[r.prompt, f"{r.bundles_flipped}/{r.bundles_observed}", f"{r.flipped_rows}/{r.observed_rows}", r.task,
             _join(r.models), _join(r.conditions, sep="; "), _join(r.directions)] for r in results]
    table = tabulate(rows, headers=["prompt", "bundles", "rows", "task", "models", "conditions", "directions"],
                     tablefmt="simple", disable_numparse=True)
    tail = f"{len(results)} prompt{'s' if len(results) != 1 else ''}"
    if n_bundles is not None:
        tail += f" across {n_bundles} registered bundle{'s' if n_bundles != 1 else ''}"
    return f"{table}\n{tail}\n"


def render_show(history: PromptHistory) -> str:
    """The prompt's metadata, then one line per row across bundles (flipped rows marked ``*``)."""
    p = history.prompt
    head = [f"prompt   {p.prompt}", f"task     {p.task} ({p.domain})",
            f"dataset  {p.dataset or '-'}" + (f"  records {', '.join(p.records)}" if p.records else "")]
    if p.preview:
        head.append(f"text     {p.preview}")
    head.append(f"flipped in {history.bundles_flipped} of {history.bundles_observed} bundles")
    rows = [["*" if r.flipped else "", short(r.bundle), r.experiment_id or "-", r.phase, r.model, r.condition,
             f"{r.baseline_label} -> {r.label}", f"{_score(r.baseline_score)} -> {_score(r.score)}", r.direction,
             "yes" if r.identical else "no"] for r in history.rows]
    table = tabulate(rows, headers=["", "bundle", "experiment", "phase", "model", "condition", "label", "score",
                                    "direction", "identical"], tablefmt="simple", disable_numparse=True)
    return "\n".join(head) + "\n\n" + table + "\n"


def render_bundles(bundles: Sequence[BundleInfo]) -> str:
    """One line per registered bundle, in add order."""
    if not bundles:
        return "registry is empty\n"
    rows = [[str(b.order), short(b.bundle), b.kind, short(b.parent), b.experiment_id or "-",
             "-" if b.samples is None else str(b.samples), str(b.flip_rows), str(b.flipped)] for b in bundles]
    return tabulate(rows, headers=["#", "bundle", "kind", "parent", "experiment", "samples", "flip rows", "flipped"],
                    tablefmt="simple", disable_numparse=True) + "\n"
