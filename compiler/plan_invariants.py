"""Invariants every compiled plan must satisfy, asserted before a plan is returned or written.

The spec checks should make these impossible (``compiler.spec_checks`` rejects duplicate
axis values, which once scheduled two samples under one id); this is the net under
them, so that a scheduling bug surfaces as an error at compile time instead of as a
bundle whose coverage can never verify.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from batchsafe.core.errors import EXIT_FAIL, BatchsafeError

__all__ = ["PlanInvariantError", "plan_problems", "assert_plan_invariants"]


class PlanInvariantError(BatchsafeError):
    """The compiler produced an inconsistent plan (a bug, not bad input): nothing is written."""

    exit_code = EXIT_FAIL


def plan_problems(plan: Any) -> list[str]:
    """What breaks the invariants: unique sample, group and prompt ids; samples in their group."""
    out: list[str] = []
    for what, ids in (("sample", [s.id for s in plan.samples]), ("group", [g.id for g in plan.groups]),
                      ("prompt", [p.id for p in plan.prompts])):
        dup = [i for i, n in Counter(ids).items() if n > 1]
        if dup:
            out.append(f"{len(dup)} {what} id(s) occur more than once (first: {dup[0]})")
    groups = {g.id: g for g in plan.groups}
    for s in plan.samples:
        g = groups.get(s.group)
        if g is None or not 0 <= s.position < len(g.members) or g.members[s.position].sample != s.id:
            out.append(f"sample {s.id} is not member {s.position} of group {s.group}")
            break
    return out


def assert_plan_invariants(plan: Any) -> None:
    """Raise PlanInvariantError naming every broken invariant of ``plan``."""
    problems = plan_problems(plan)
    if problems:
        raise PlanInvariantError("internal error: the compiled plan is inconsistent: " + "; ".join(problems)
                                 + " (please report this with the spec)")
