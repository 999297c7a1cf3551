"""Expand phases into samples and dispatch groups: the exact record of who runs with whom.

Rules (also in ARCHITECTURE.md):

* A phase's target prompts are its tasks' selected prompts in one seeded order
  (``order:<phase>``), shared by every model and condition, so groups mix tasks
  and a batch-size-2 group is always a prefix-aligned half of the batch-size-4 one.
* Conditions are the cross product of the axes that are set, in the fixed axis
  order tensor parallel, kernel, quant, concurrency, batch size, co-batch, repeat
  (server-defining axes first: each TP size, then each kernel variant, is one
  consecutive run of groups on one launched server).
* Batch size / concurrency k: the ordered targets are cut into consecutive groups
  of k; with ``pad_groups`` the last group is filled with non-scored fillers taken
  from the start of the order, so every group really has k sequences.
* Co-batch: one group per target; ``solo`` is the target alone, other conditions
  put the target first and fill the group from the condition's pool, ordered by
  ``filler:<phase>:<condition>:<target>``.
* A one-member group runs in ``sequential`` mode (the K=1 path) whatever the phase's
  dispatch mode, because there is nothing to batch or overlap.
"""

from __future__ import annotations

from batchsafe.core.errors import BatchsafeError

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from batchsafe.core.fastmodel import construct

from .plan import Condition, Group, Member, Prompt, Sample
from .selection import seeded_order
from .spec import Phase

AXIS_ORDER = ("tensor_parallel", "kernel", "quant", "concurrency", "batch_size", "cobatch", "repeat")


class ScheduleError(BatchsafeError, ValueError):
    """A phase that cannot be scheduled; ``path`` is relative to the phase."""

    def __init__(self, code: str, message: str, path: tuple[Any, ...], hint: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.path, self.hint = code, message, path, hint


def axis_values(phase: Phase) -> dict[str, list[Any]]:
    """The values of each axis that is set, keyed by Condition field name."""
    ax = phase.axes
    values: dict[str, list[Any]] = {}
    if ax.tensor_parallel:
        values["tensor_parallel"] = list(ax.tensor_parallel)
    if ax.kernel:
        values["kernel"] = [k.id for k in ax.kernel]
    if ax.quants:
        values["quant"] = list(ax.quants)
    if ax.concurrency:
        values["concurrency"] = list(ax.concurrency)
    if ax.batch_sizes:
        values["batch_size"] = list(ax.batch_sizes)
    if ax.cobatch:
        values["cobatch"] = list(ax.cobatch.conditions)
    values["repeat"] = list(range(ax.repeats))
    return values


def _default_baseline(axis: str, vals: list[Any]) -> Any:
    preferred = {"batch_size": 1, "concurrency": 1, "cobatch": "solo", "repeat": 0, "tensor_parallel": 1}.get(axis)
    return preferred if preferred in vals else vals[0]


def baseline_rule(phase: Phase) -> dict[str, Any]:
    """Axis -> baseline value. An explicit ``baseline`` names only the axes it replaces."""
    values = axis_values(phase)
    if not phase.baseline:
        return {a: _default_baseline(a, v) for a, v in values.items()}
    rule: dict[str, Any] = {}
    for axis, value in phase.baseline.items():
        if axis not in values:
            raise ScheduleError("invalid-value", f"baseline axis {axis!r} is not an axis of this phase",
                                ("baseline", axis), "axes set here: " + ", ".join(values))
        if value not in values[axis]:
            raise ScheduleError("invalid-value", f"baseline {axis} {value!r} is not one of the axis values "
                                f"{', '.join(map(str, values[axis]))}", ("baseline", axis))
        rule[axis] = value
    return rule


def _condition(point: dict[str, Any], phase: Phase) -> Condition:
    data = dict(point)
    if "cobatch" in data:
        data["group_size"] = 1 if data["cobatch"] == "solo" else phase.axes.cobatch.group_size  # type: ignore[union-attr]
    return Condition(**data)


@dataclass
class PhaseSchedule:
    """What one phase contributes to the plan."""

    samples: list[Sample]
    groups: list[Group]
    targets: int
    conditions: int


def schedule_phase(phase: Phase, targets: Sequence[Prompt], fillers: dict[str, Sequence[Prompt]],
                   seed: int, start_index: int) -> PhaseSchedule:
    """Build samples and groups for one phase; group indexes continue from ``start_index``."""
    ax = phase.axes
    if sum(x is not None for x in (ax.batch_sizes, ax.concurrency, ax.cobatch)) > 1:
        raise ScheduleError("invalid-value", "a phase sets at most one of batch_sizes, concurrency and cobatch",
                            ("axes",), "split the study into one phase per grouping axis")
    if ax.cobatch:
        for cond in ax.cobatch.conditions:
            if cond != "solo" and cond not in ax.cobatch.fillers:
                raise ScheduleError("missing-key", f"co-batch condition {cond!r} has no filler pool",
                                    ("axes", "cobatch", "fillers"), f"add fillers.{cond}.tasks")
    by_id = {p.id: p for p in targets}
    order = seeded_order(by_id, seed, f"order:{phase.id}")
    values = axis_values(phase)
    rule = baseline_rule(phase)
    axes = [a for a in AXIS_ORDER if a in values]
    points = [dict(zip(axes, combo)) for combo in itertools.product(*(values[a] for a in axes))]

    # Membership depends on the condition only, so it is computed once and shared by every model.
    conds = [(point, _condition(point, phase)) for point in points]
    cond_key = {id(c): c.model_dump_json() for _, c in conds}
    members_of = {id(c): _groups_for(phase, c, order, fillers, seed) for _, c in conds}
    by_point = {json.dumps(point, sort_keys=True): c for point, c in conds}

    samples: list[Sample] = []
    groups: list[Group] = []
    index = start_index
    for model in phase.models:
        ids: dict[tuple[str, str], str] = {}
        pending: list[tuple[dict[str, Any], str, str, Condition, str, int]] = []
        for point, cond in conds:
            ckey = cond_key[id(cond)]
            for members in members_of[id(cond)]:
                mode = "sequential" if len(members) == 1 else phase.dispatch
                gid = _ident("g_", phase.id, model, ckey, mode, *(f"{pid}:{int(sc)}" for pid, sc in members))
                group_members = []
                for pos, (prompt_id, scored) in enumerate(members):
                    sid = None
                    if scored:
                        sid = _ident("s_", phase.id, model, ckey, prompt_id)
                        ids[(ckey, prompt_id)] = sid
                        pending.append((point, sid, prompt_id, cond, gid, pos))
                    group_members.append(construct(Member, prompt=prompt_id, sample=sid))
                groups.append(construct(Group, id=gid, index=index, phase=phase.id, model=model,
                                                    engine=phase.engine, mode=mode, condition=cond,
                                                    members=group_members))
                index += 1
        for point, sid, prompt_id, cond, gid, pos in pending:
            base_point = {**point, **rule}
            baseline = None
            if base_point != point:
                base_cond = by_point[json.dumps(base_point, sort_keys=True)]
                baseline = ids[(cond_key[id(base_cond)], prompt_id)]
            samples.append(construct(Sample, id=sid, phase=phase.id, model=model, engine=phase.engine,
                                                  condition=cond, prompt=prompt_id, baseline=baseline, group=gid,
                                                  position=pos))
    return PhaseSchedule(samples=samples, groups=groups, targets=len(order), conditions=len(points))


def _ident(prefix: str, *parts: str) -> str:
    """Content-derived id from unit-separated parts (cheaper than canonical JSON, same guarantee)."""
    return prefix + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def _groups_for(phase: Phase, cond: Condition, order: list[str], fillers: dict[str, Sequence[Prompt]],
                seed: int) -> list[list[tuple[str, bool]]]:
    """Member lists (prompt id, scored?) of every group of one condition, in run order."""
    if cond.cobatch is not None:
        out = []
        for target in order:
            if cond.cobatch == "solo":
                out.append([(target, True)])
                continue
            pool = [p.id for p in fillers[cond.cobatch] if p.id != target]
            need = (cond.group_size or 1) - 1
            if len(pool) < need:
                raise ScheduleError("selection-too-large", f"co-batch pool {cond.cobatch!r} has {len(pool)} prompts, "
                                    f"fewer than the {need} fillers a group needs", ("axes", "cobatch", "fillers"))
            chosen = seeded_order(pool, seed, f"filler:{phase.id}:{cond.cobatch}:{target}")[:need]
            out.append([(target, True)] + [(f, False) for f in chosen])
        return out
    k = cond.batch_size or cond.concurrency or 1
    out = []
    for start in range(0, len(order), k):
        chunk = [(pid, True) for pid in order[start:start + k]]
        if phase.pad_groups and len(chunk) < k:
            present = {pid for pid, _ in chunk}
            pad = [pid for pid in order if pid not in present][: k - len(chunk)]
            chunk += [(pid, False) for pid in pad]
        out.append(chunk)
    return out
