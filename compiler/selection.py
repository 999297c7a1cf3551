"""Seeded, language-independent prompt selection.

Ordering is by ``sha256("<seed>:<purpose>:<id>")`` rather than by a PRNG, so the
same spec selects the same prompts in any Python version or any other language:
the rule is one line of text, not an implementation detail of ``random``.

Selection is lazy: candidates are walked in rank order and rendered only until
the requested count is reached, skipping renders that are too long or whose
content duplicates an earlier prompt (datasets contain verbatim duplicates).
"""

from __future__ import annotations

from batchsafe.core.errors import BatchsafeError

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .plan import Prompt
from .spec import Selection


def rank_key(seed: int, purpose: str, item: str) -> bytes:
    """The sort key of ``item`` for a seeded ordering named ``purpose``."""
    return hashlib.sha256(f"{seed}:{purpose}:{item}".encode()).digest()


def seeded_order(items: Iterable[str], seed: int, purpose: str) -> list[str]:
    """``items`` sorted by their seeded rank key (ties impossible in practice; broken by item)."""
    return sorted(items, key=lambda it: (rank_key(seed, purpose, it), it))


@dataclass(slots=True)
class Candidate:
    """A selectable unit: one record, or one jailbreak template x goal pair."""

    id: str
    """Selection id (record id, or '<template>+<goal>')."""
    records: list[str]
    fields: dict[str, Any]
    goal: str | None = None


@dataclass
class SelectionError(BatchsafeError):
    """Why a selection failed; ``index`` points into ``select.ids`` when relevant."""

    code: str
    message: str
    hint: str = ""
    index: int | None = None
    extra: list["SelectionError"] = field(default_factory=list)
    at: tuple[str, ...] | None = None
    """Key path below ``select`` the error is about, when neither ``ids`` nor ``count`` is."""


def matches(fields: dict[str, Any], where: dict[str, Any]) -> bool:
    """Whether a record passes the equality filters (a list value means any of)."""
    for key, want in where.items():
        have = fields.get(key)
        if isinstance(want, list):
            if have not in want:
                return False
        elif have != want:
            return False
    return True


def allocate(sizes: dict[str, int], count: int) -> dict[str, int]:
    """Largest-remainder allocation of ``count`` across strata proportional to their sizes.

    Remainders are handed out by largest fractional part, then larger stratum,
    then stratum name, so the allocation is a pure function of its inputs.
    """
    total = sum(sizes.values())
    quotas = {s: count * n / total for s, n in sizes.items()}
    alloc = {s: int(q) for s, q in quotas.items()}
    left = count - sum(alloc.values())
    order = sorted(sizes, key=lambda s: (-(quotas[s] - alloc[s]), -sizes[s], s))
    for s in order[:left]:
        alloc[s] += 1
    return alloc


def select(
    task_name: str,
    sel: Selection,
    candidates: Sequence[Candidate],
    seed: int,
    render: Callable[[Candidate], Prompt],
) -> list[Prompt]:
    """Select and render prompts for one task, in seeded rank order.

    With ``from_bundle`` the candidates are the records picked from the prior bundle, and
    a missing ``count`` takes all of them (still in seeded order, duplicates dropped).
    """
    eligible = [c for c in candidates if matches(c.fields, sel.where)]
    if sel.ids is not None:
        return _explicit(sel, eligible, render)
    prior = sel.from_bundle
    if prior is not None and not eligible:
        raise SelectionError("empty-selection", f"select.where leaves none of the {len(candidates)} records picked "
                             f"from bundle {prior.bundle}", "widen select.where", at=("where",))
    if prior is not None and sel.count is not None and sel.count > len(eligible):
        after = " after select.where" if sel.where else ""
        raise SelectionError("selection-too-large", f"selection asks for {sel.count} prompts but bundle {prior.bundle} "
                             f"provides only {len(eligible)} candidates{after}",
                             "lower select.count, or leave it out to take every candidate")
    assert sel.count is not None or prior is not None
    if sel.count is not None and sel.count > len(eligible):
        raise SelectionError(
            "selection-too-large",
            f"selection asks for {sel.count} prompts but the pool has only {len(eligible)}",
            "lower select.count or widen select.where",
        )
    purpose = f"select:{task_name}"
    key = {c.id: rank_key(sel.seed if sel.seed is not None else seed, purpose, c.id) for c in eligible}
    ranked = sorted(eligible, key=lambda c: (key[c.id], c.id))
    seen: set[str] = set()

    def take(pool: list[Candidate], n: int | None) -> list[Prompt]:
        out: list[Prompt] = []
        for cand in pool:
            if len(out) == n:
                break
            prompt = render(cand)
            if prompt.id in seen:
                continue
            if sel.max_prompt_chars and sum(len(m.content) for m in prompt.messages) > sel.max_prompt_chars:
                continue
            seen.add(prompt.id)
            out.append(prompt)
        if n is not None and len(out) < n:
            raise SelectionError(
                "selection-too-large",
                f"selection asks for {n} prompts but only {len(out)} remain after dropping duplicates"
                + (f" and prompts over {sel.max_prompt_chars} characters" if sel.max_prompt_chars else ""),
                "lower select.count or relax select.max_prompt_chars",
            )
        return out

    if sel.count is None:
        everything = take(ranked, None)  # every candidate: strata would only reorder them
        if not everything:
            raise SelectionError("empty-selection", f"all {len(ranked)} candidates are over {sel.max_prompt_chars} characters",
                                 "raise select.max_prompt_chars", at=("max_prompt_chars",))
        return everything
    if not sel.stratify_by:
        return take(ranked, sel.count)
    strata: dict[str, list[Candidate]] = {}
    for cand in ranked:
        strata.setdefault(str(cand.fields.get(sel.stratify_by)), []).append(cand)
    alloc = allocate({s: len(v) for s, v in strata.items()}, sel.count)
    chosen = [p for s in sorted(strata) for p in take(strata[s], alloc[s])]
    # Interleave strata by rank so the prompt list is not grouped by stratum.
    return sorted(chosen, key=lambda p: rank_key(sel.seed if sel.seed is not None else seed, purpose, "+".join(p.records)))


def _explicit(sel: Selection, eligible: Sequence[Candidate], render: Callable[[Candidate], Prompt]) -> list[Prompt]:
    by_id = {c.id: c for c in eligible}
    errors: list[SelectionError] = []
    first_seen: dict[str, int] = {}
    prompts: list[Prompt] = []
    for i, ident in enumerate(sel.ids or []):
        if ident in first_seen:
            errors.append(SelectionError("duplicate-id", f"id {ident!r} is listed twice", f"first listed at select.ids[{first_seen[ident]}]", i))
            continue
        first_seen[ident] = i
        cand = by_id.get(ident)
        if cand is None:
            errors.append(SelectionError("unknown-name", f"no record with id {ident!r} in the pool", "ids are record ids such as harmful_behaviors:17", i))
            continue
        prompts.append(render(cand))
    if errors:
        head = errors[0]
        head.extra = errors[1:]
        raise head
    return prompts
