"""Adjudication-corrected rates of the protocol's Study A, for an adjudication child bundle.

Seed 003: "adjudication of 63 candidate rows leaves only 17 genuine behavioral flips,
implying a corrected full-set rate of 0.16 %". Here the candidates are the flipped rows
of the parent's discovery phases (``analysis.protocol.discovery``), the full set is all
of those phases' flip rows, and a candidate counts as labelled when its raters' majority
decided it (ties and "unclear" are unresolved, as in ``adjudication_stats``). Confirmed
= the majority label differs from the baseline's label. Rates (overall and per domain)
come from :func:`.stats.protocol_stats.corrected_rate`. A pure function of the plan's
settings, the flip rows and the labels, so verify recomputes it from the child bundle.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from .adjudication_stats import majority
from .stats._num import clean
from .stats.protocol_stats import corrected_rate


def protocol_adjudication(analysis: Mapping[str, Any], records: Sequence[Any], flips: Sequence[Any]) -> dict[str, Any] | None:
    """Corrected rates of the discovery phases (None when the plan has no protocol or no discovery phases)."""
    phases = list(((analysis or {}).get("protocol") or {}).get("discovery") or [])
    if not phases:
        return None
    alpha = float((analysis or {}).get("alpha", 0.05))
    rows = [f for f in flips if f.phase in set(phases)]
    labels: dict[str, list[str]] = defaultdict(list)
    for r in records:
        labels[r.item].append(r.human_label)
    out: dict[str, Any] = {"schema_version": 1, "phases": phases, "alpha": alpha}
    for scope, keep in (("overall", lambda f: True), ("safety", lambda f: f.domain == "safety"),
                        ("capability", lambda f: f.domain == "capability")):
        mine = [f for f in rows if keep(f)]
        cands = [f for f in mine if f.flipped]
        verdicts = {f.sample: majority(labels[f.sample]) for f in cands if f.sample in labels}
        decided = {s: v for s, v in verdicts.items() if v is not None}
        by_sample = {f.sample: f for f in cands}
        confirmed = sum(v != by_sample[s].baseline_label for s, v in decided.items())
        out[scope] = corrected_rate(len(cands), len(decided), confirmed, len(mine), alpha)
    return clean(out)
