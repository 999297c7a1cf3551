"""Spec checks of ``analysis.protocol``: the phases each study names exist and suit the study.

Run by ``spec_checks.spec_only_checks`` (so by ``validate`` and ``compile``); a spec without
the block is not looked at.
"""

from __future__ import annotations

from .diagnostics import Diagnostic, did_you_mean, join_names
from .spec import Spec
from .yamlspec import LocatedDoc, diag_at

KINDS = {"discovery": ("batch_size", "true_batch", "tensor_parallel"), "ablation": ("kernel_ablation",)}
"""Phase kinds a study accepts (studies not listed take any kind)."""
KEY = "protocol"


def protocol_checks(spec: Spec, doc: LocatedDoc) -> list[Diagnostic]:
    """Unknown or unsuitable phases named by the protocol; a phase id that clashes with its stats key."""
    proto = spec.analysis.protocol
    if proto is None:
        return []
    out: list[Diagnostic] = []
    kinds = {p.id: p.kind for p in spec.phases}
    for study in ("discovery", "cross_model", "composition", "ablation"):
        for j, name in enumerate(getattr(proto, study)):
            at = ("analysis", "protocol", study, j)
            if name not in kinds:
                out.append(diag_at(doc, at, "unknown-name", f"analysis.protocol.{study} names phase {name!r}, which the "
                                   "spec does not have", did_you_mean(name, kinds) or "phases: " + join_names(sorted(kinds))))
            elif study in KINDS and kinds[name] not in KINDS[study]:
                out.append(diag_at(doc, at, "invalid-value", f"phase {name!r} is of kind {kinds[name]}; "
                                   f"analysis.protocol.{study} takes {', '.join(KINDS[study])} phases",
                                   "name a phase of a suitable kind"))
    for i, p in enumerate(spec.phases):
        if p.id == KEY:
            out.append(diag_at(doc, ("phases", i, "id"), "invalid-value", f"phase id {KEY!r} clashes with the "
                               "protocol's statistics key (stats.protocol)", "rename the phase"))
    return out
