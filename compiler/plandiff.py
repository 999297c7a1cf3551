"""diff_plans(a, b) -> PlanDiff: what changed between two locked plans.

Compared by identity, not by position: inputs by path, prompts and samples by
their content-derived ids, engines and models by name. Two plans with the same
plan_hash have an empty diff.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .plan import Plan


class Change(BaseModel):
    """One changed value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    where: str
    """What changed, e.g. inputs/advbench/harmful_behaviors.csv or engines/vllm/flags."""
    a: Any = None
    b: Any = None


class PlanDiff(BaseModel):
    """Differences between plan A and plan B, by section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = 1
    same: bool
    plan_hash: tuple[str, str]
    settings: list[Change] = Field(default_factory=list)
    """Seed, decoding, analysis, experiment, batchsafe version."""
    inputs: list[Change] = Field(default_factory=list)
    prompts_added: list[str] = Field(default_factory=list)
    prompts_removed: list[str] = Field(default_factory=list)
    samples_added: int = 0
    samples_removed: int = 0
    samples_regrouped: int = 0
    """Samples present in both plans whose group members or position changed."""
    phases: list[Change] = Field(default_factory=list)
    engines: list[Change] = Field(default_factory=list)
    models: list[Change] = Field(default_factory=list)


def _dict_changes(prefix: str, a: dict[str, Any], b: dict[str, Any]) -> list[Change]:
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            out.append(Change(where=f"{prefix}/{key}", a=a.get(key), b=b.get(key)))
    return out


def _by_name(items: list[BaseModel], key: str) -> dict[str, dict[str, Any]]:
    return {getattr(i, key): i.model_dump(mode="json") for i in items}


def diff_plans(a: Plan, b: Plan) -> PlanDiff:
    """Compare two plans section by section."""
    settings = []
    for field in ("seed", "decoding", "analysis", "experiment", "batchsafe_version"):
        va, vb = getattr(a, field), getattr(b, field)
        if isinstance(va, dict):
            settings += _dict_changes(field, va, vb)
        elif va != vb:
            settings.append(Change(where=field, a=va, b=vb))
    inputs = _dict_changes("inputs", {i.path: i.sha256 for i in a.inputs}, {i.path: i.sha256 for i in b.inputs})
    pa, pb = {p.id for p in a.prompts}, {p.id for p in b.prompts}
    sa, sb = {s.id: s for s in a.samples}, {s.id: s for s in b.samples}
    ga, gb = {g.id: g for g in a.groups}, {g.id: g for g in b.groups}

    def members(plan_groups: dict[str, Any], sample: Any) -> list[str]:
        return [m.prompt for m in plan_groups[sample.group].members]

    regrouped = sum(1 for sid in sa.keys() & sb.keys()
                    if sa[sid].position != sb[sid].position or members(ga, sa[sid]) != members(gb, sb[sid]))
    engines = []
    ea, eb = _by_name(a.engines, "name"), _by_name(b.engines, "name")
    for name in sorted(ea.keys() | eb.keys()):
        if name not in ea or name not in eb:
            engines.append(Change(where=f"engines/{name}", a=ea.get(name), b=eb.get(name)))
        else:
            engines += _dict_changes(f"engines/{name}", ea[name]["config"] | {"kind": ea[name]["kind"]},
                                     eb[name]["config"] | {"kind": eb[name]["kind"]})
    models = []
    ma, mb = _by_name(a.models, "name"), _by_name(b.models, "name")
    for name in sorted(ma.keys() | mb.keys()):
        if name not in ma or name not in mb:
            models.append(Change(where=f"models/{name}", a=ma.get(name), b=mb.get(name)))
        else:
            models += _dict_changes(f"models/{name}", ma[name], mb[name])
    phases = _dict_changes("phases", _by_name(a.phases, "id"), _by_name(b.phases, "id"))
    return PlanDiff(
        same=a.plan_hash == b.plan_hash,
        plan_hash=(a.plan_hash, b.plan_hash),
        settings=settings,
        inputs=inputs,
        prompts_added=sorted(pb - pa),
        prompts_removed=sorted(pa - pb),
        samples_added=len(sb.keys() - sa.keys()),
        samples_removed=len(sa.keys() - sb.keys()),
        samples_regrouped=regrouped,
        phases=phases,
        engines=engines,
        models=models,
    )
