"""Output byte identity against baselines: the first thing to look at after a run.

Needs only the plan and the outputs (no scorer): for every non-baseline sample, is its
text byte-identical to its baseline sample's text?
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchsafe.compiler.plan import Plan


@dataclass(frozen=True)
class IdentityRow:
    """Byte identity of one (phase, model, condition) cell against its baselines."""

    phase: str
    model: str
    condition: str
    compared: int
    identical: int

    @property
    def differing(self) -> int:
        """Samples whose output differs from their baseline's."""
        return self.compared - self.identical


def read_outputs(path: Path) -> dict[str, dict[str, Any]]:
    """Sample records of outputs/samples.jsonl by sample id."""
    records = {}
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                rec = json.loads(line)
                records[rec["sample"]] = rec
    return records


def output_identity(plan: Plan, outputs: dict[str, dict[str, Any]]) -> list[IdentityRow]:
    """Identity per (phase, model, condition), in plan order; samples without outputs are skipped."""
    cells: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    order: list[tuple[str, str, str]] = []
    for s in plan.samples:
        if s.baseline is None or s.id not in outputs or s.baseline not in outputs:
            continue
        key = (s.phase, s.model, s.condition.label())
        if key not in cells:
            order.append(key)
        cell = cells[key]
        cell[0] += 1
        cell[1] += outputs[s.id]["text"] == outputs[s.baseline]["text"]
    return [IdentityRow(*k, *cells[k]) for k in order]


def total_differing(rows: Iterable[IdentityRow]) -> int:
    """Number of compared samples whose output differs from the baseline."""
    return sum(r.differing for r in rows)
