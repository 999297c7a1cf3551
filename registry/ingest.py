"""Turn one bundle into registry rows: its identity, every flip-registry row, its prompts' metadata.

Bundles come from strangers, so everything is validated before the database is touched:
``analysis/flips.jsonl`` row by row (``analysis.records.FlipRow``; newer schema versions
refused), the plan's prompts (``compiler.plan.Prompt``), sample ids unique, and every
row's prompt and task present in the plan. A bad file raises ``BundleContentError``
naming the bundle, the file and the line; nothing has been written by then.

Parsing is orjson plus one pydantic-core validation pass over the whole list, so the
31,410-sample TR138 registry reads in well under a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from batchsafe.analysis.flips import FLIP_SCHEMA_VERSION
from batchsafe.analysis.records import FlipRow
from batchsafe.core import layout
from batchsafe.core.canonical import canonical_bytes
from batchsafe.core.jsonl import JsonLineError, parse_lines
from batchsafe.compiler.plan import Condition, Message, Prompt, plan_header
from batchsafe.verification.source import BundleSource

from .migrations import RegistryError

FLIPS_FILE, PLAN_FILE, SCORES_FILE = layout.FLIPS, layout.PLAN, layout.SCORES
PREVIEW_CHARS = 80
"""Length of a prompt's text preview (the last user message)."""

_FLIPS = TypeAdapter(list[FlipRow])
_PROMPTS = TypeAdapter(list[Prompt])


class BundleContentError(RegistryError):
    """A bundle the registry cannot use: no flips.jsonl, a malformed row, a plan that does not match."""


@dataclass
class BundleRows:
    """Everything ``Registry.add`` inserts for one bundle (already validated)."""

    bundle: tuple[Any, ...]
    """(id, kind, parent, experiment_id, experiment_title, plan_hash, n_samples, n_flip_rows, n_flipped)."""
    flips: list[tuple[Any, ...]] = field(default_factory=list)
    """One tuple per flip row, in ``FLIP_COLUMNS`` order."""
    prompts: list[tuple[Any, ...]] = field(default_factory=list)
    """(id, task, domain, dataset, records JSON, preview) per distinct prompt of the rows."""


FLIP_COLUMNS = ("bundle", "sample", "baseline", "phase", "phase_kind", "model", "task", "domain", "condition",
                "condition_label", "prompt", "identical", "baseline_score", "score", "baseline_label", "label",
                "flipped", "direction")


def canonical_text(obj: Any) -> str:
    """Canonical JSON of ``obj`` as stored in a column (``canonical_bytes`` without its newline)."""
    return canonical_bytes(obj)[:-1].decode("utf-8")


def preview(messages: Sequence[Message], width: int = PREVIEW_CHARS) -> str | None:
    """The last user message with whitespace collapsed, cut to ``width`` characters (… marks a cut)."""
    text = next((m.content for m in reversed(messages) if m.role == "user"), None)
    if text is None:
        return None
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _error_text(exc: ValidationError) -> tuple[int | None, str]:
    err = exc.errors(include_url=False)[0]
    loc = list(err["loc"])
    index = loc.pop(0) if loc and isinstance(loc[0], int) else None
    where = ".".join(str(x) for x in loc)
    return index, f"{where}: {err['msg']}" if where else err["msg"]


def parse_flips(raw: bytes, where: str) -> list[tuple[int, FlipRow]]:
    """(line number, row) of every non-blank line of a flips.jsonl; ``BundleContentError`` names the bad line."""
    try:
        numbered = parse_lines(raw, where, "flip row", FLIP_SCHEMA_VERSION)
    except JsonLineError as exc:
        raise BundleContentError(str(exc)) from None
    data = [obj for _, obj in numbered]
    try:
        rows = _FLIPS.validate_python(data)
    except ValidationError as exc:
        index, text = _error_text(exc)
        line = numbered[index][0] if index is not None else "?"
        raise BundleContentError(f"{where}:{line}: invalid flip row: {text}") from None
    return [(n, r) for (n, _), r in zip(numbered, rows)]


def parse_plan(raw: bytes, where: str) -> tuple[dict[str, Any], dict[str, Prompt], int]:
    """(experiment, prompts by id, number of samples) of a plan.lock.json.

    Parsed and version-gated by the plan's own ``plan_header``; only what the registry
    records is validated beyond that (a partial view, for speed on 30k-sample plans): the
    plan hash is ``batchsafe verify``'s business (the registry records the hash the plan
    declares).
    """
    plan, _ = plan_header(raw, where, BundleContentError)
    experiment, samples = plan.get("experiment"), plan.get("samples")
    if not isinstance(experiment, dict) or not isinstance(samples, list) or not isinstance(plan.get("plan_hash"), str):
        raise BundleContentError(f"{where}: plan lacks experiment, samples or plan_hash")
    try:
        prompts = _PROMPTS.validate_python(plan.get("prompts"))
    except ValidationError as exc:
        index, text = _error_text(exc)
        raise BundleContentError(f"{where}: prompts[{index}]: {text}") from None
    return {**experiment, "plan_hash": plan["plan_hash"]}, {p.id: p for p in prompts}, len(samples)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def read_bundle(src: BundleSource) -> BundleRows:
    """Validated rows of bundle ``src`` (see the module docstring)."""
    bid = src.bundle_id
    if not src.has(FLIPS_FILE):
        raise BundleContentError(f"bundle {bid} ({src.where}) has no {FLIPS_FILE}: analyse it first "
                                 f"(batchsafe analyze) and add the analysed bundle")
    experiment: dict[str, Any] = {}
    plan_prompts: dict[str, Prompt] | None = None
    n_samples: int | None = None
    if src.has(PLAN_FILE):
        experiment, plan_prompts, n_samples = parse_plan(src.read(PLAN_FILE), f"bundle {bid}: {PLAN_FILE}")
    elif src.has(SCORES_FILE):
        n_samples = sum(1 for line in src.read(SCORES_FILE).splitlines() if line.strip())
    where = f"bundle {bid}: {FLIPS_FILE}"
    parsed = parse_flips(src.read(FLIPS_FILE), where)

    conditions: dict[Condition, tuple[str, str]] = {}
    seen: set[str] = set()
    prompts: dict[str, tuple[Any, ...]] = {}
    out = BundleRows(bundle=())
    n_flipped = 0
    for n, r in parsed:
        if r.sample in seen:
            raise BundleContentError(f"{where}:{n}: sample {r.sample} appears twice")
        seen.add(r.sample)
        # Frozen models hash by value; a run has few distinct conditions, so dump and label each once.
        if r.condition not in conditions:
            conditions[r.condition] = (canonical_text(r.condition.model_dump(mode="json")), r.condition.label())
        cond_text, label = conditions[r.condition]
        if r.prompt not in prompts:
            if plan_prompts is None:
                prompts[r.prompt] = (r.prompt, r.task, r.domain, None, "[]", None)
            else:
                p = plan_prompts.get(r.prompt)
                if p is None:
                    raise BundleContentError(f"{where}:{n}: prompt {r.prompt} of sample {r.sample} is not in "
                                             f"{PLAN_FILE}")
                if (p.task, p.domain) != (r.task, r.domain):
                    raise BundleContentError(f"{where}:{n}: sample {r.sample} says task {r.task!r} ({r.domain}) but "
                                             f"{PLAN_FILE} has prompt {r.prompt} in {p.task!r} ({p.domain})")
                prompts[r.prompt] = (p.id, p.task, p.domain, p.dataset, canonical_text(p.records),
                                     preview(p.messages))
        elif prompts[r.prompt][1:3] != (r.task, r.domain):
            raise BundleContentError(f"{where}:{n}: sample {r.sample} puts prompt {r.prompt} in task {r.task!r} "
                                     f"({r.domain}), an earlier row in {prompts[r.prompt][1]!r}")
        n_flipped += r.flipped
        out.flips.append((bid, r.sample, r.baseline, r.phase, r.phase_kind, r.model, r.task, r.domain, cond_text,
                          label, r.prompt, int(r.identical), r.baseline_score, r.score, r.baseline_label, r.label,
                          int(r.flipped), r.direction))
    out.prompts = list(prompts.values())
    m = src.manifest
    out.bundle = (bid, m.kind, m.parent, _opt_str(experiment.get("id")), _opt_str(experiment.get("title")),
                  experiment.get("plan_hash"), n_samples, len(out.flips), n_flipped)
    return out
