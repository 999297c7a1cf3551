"""Continuous-batch composition (seed 003's Study C): the spec config and its locked schedule.

A ``composition`` phase submits its target prompts into ONE continuous-batching server
session per load level, instead of in synchronized groups. For load level L the runtime
keeps L background requests in flight (closed loop: a slot that finishes submits its next
prompt at once) and submits each target at its scheduled arrival offset (seconds from the
start of the session). The load level is the phase's axis (``Condition.load``); load 0 is
the baseline.

What the plan locks (``PhaseSummary.composition``), deterministic from the seed through a
``numpy.random.Generator`` (``default_rng(derived seed)``):

* the target order and each target's arrival offset, the SAME for every load level, so a
  target's samples differ only in the load around them (paired design);
* per load level, each background slot's prompt sequence (a seeded order of the
  background pool, rotated per slot; a slot that exhausts it starts over).

Because the background is closed-loop, the moments a background request is submitted
depend on how long the earlier ones ran; the plan fixes *which* prompts each slot sends in
which order, and the run records *when* (``volatile/composition.jsonl``).

Group layout: one group per (model, load level) holding every target as a scored member
in arrival order; the background is load, not measured, so it has no members and its
outputs go to the volatile record only (outputs stay deterministic-comparable).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from batchsafe.core.fastmodel import construct

from .composition_spec import BackgroundPool, CompositionConfig  # noqa: F401  (re-exported)
from .plan import Condition, Group, Member, Sample
from .schedule import PhaseSchedule
from .selection import seeded_order

#: The phase kind this module schedules.
KIND = "composition"
#: Decimal places arrival offsets are rounded to: the plan must not depend on float printing.
OFFSET_DECIMALS = 6


def derived_seed(seed: int, purpose: str) -> int:
    """A 64-bit seed for ``purpose`` derived from ``seed`` (sha256, as the plan's other derived seeds)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{purpose}".encode()).digest()[:8], "big")


def arrival_offsets(n: int, schedule: str, rate_per_s: float, start_s: float, seed: int) -> list[float]:
    """Arrival offsets in seconds of ``n`` targets, rounded to OFFSET_DECIMALS; deterministic from ``seed``."""
    if n <= 0:
        return []
    if schedule == "fixed":
        raw = start_s + np.arange(n, dtype=float) / rate_per_s
    else:
        gaps = np.random.default_rng(seed).exponential(1.0 / rate_per_s, size=n)
        raw = start_s + np.concatenate([[0.0], np.cumsum(gaps[1:])])
    return [round(float(x), OFFSET_DECIMALS) for x in raw]


def background_slots(pool: Sequence[str], level: int, seed: int) -> list[list[str]]:
    """Per slot, the background prompt sequence at ``level``: one seeded permutation, rotated per slot
    (so slots start on different prompts); empty at level 0 or with an empty pool."""
    if level == 0 or not pool:
        return []
    perm = [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))]
    step = max(1, len(perm) // level)
    return [perm[(j * step) % len(perm):] + perm[:(j * step) % len(perm)] for j in range(level)]


class CompositionError(ValueError):
    """A composition config that cannot be scheduled; ``path`` is relative to the phase."""

    def __init__(self, code: str, message: str, path: tuple[Any, ...], hint: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.path, self.hint = code, message, path, hint


def problems(phase: Any) -> list[CompositionError]:
    """What is wrong with a composition phase's settings (empty when sound), paths relative to the phase.

    Checked: the config is present for kind composition and only there; load levels include
    0 and none repeats; the phase sets no other grouping axis (the load level is its axis),
    no repeats and no baseline (load 0 is the baseline); dispatch is concurrent.
    """
    cfg = getattr(phase, "composition", None)
    out: list[CompositionError] = []
    if phase.kind != KIND:
        if cfg is not None:
            out.append(CompositionError("invalid-value", f"composition settings need kind composition, not "
                                        f"{phase.kind}", ("composition",), "set kind: composition or remove them"))
        return out
    if cfg is None:
        return [CompositionError("missing-key", "a composition phase needs a composition block", (),
                                 "add composition: {load_levels: [0, 4], rate_per_s: 2, background: {tasks: [...]}}")]
    seen: dict[int, int] = {}
    for j, level in enumerate(cfg.load_levels):
        if level in seen:
            out.append(CompositionError("duplicate-id", f"load level {level} is listed twice",
                                        ("composition", "load_levels", j), f"first listed at index {seen[level]}"))
        seen.setdefault(level, j)
    if 0 not in seen:
        out.append(CompositionError("invalid-value", "load_levels must include 0, the baseline without background load",
                                    ("composition", "load_levels"), "e.g. load_levels: [0, 4, 8]"))
    ax = phase.axes
    for axis in ("batch_sizes", "cobatch", "quants", "concurrency", "kernel", "tensor_parallel"):
        if getattr(ax, axis) is not None:
            out.append(CompositionError("invalid-value", f"a composition phase has the load level as its axis; "
                                        f"axes.{axis} is not allowed here", ("axes", axis),
                                        "put other axes in a phase of their own"))
    if ax.repeats != 1:
        out.append(CompositionError("invalid-value", "a composition phase runs each load level once (axes.repeats 1)",
                                    ("axes", "repeats")))
    if phase.baseline:
        out.append(CompositionError("invalid-value", "a composition phase's baseline is load level 0; remove baseline",
                                    ("baseline",)))
    if phase.dispatch != "concurrent":
        out.append(CompositionError("invalid-value", f"a composition phase submits requests as independent clients: "
                                    f"dispatch must be concurrent, not {phase.dispatch!r}", ("dispatch",),
                                    "dispatch: concurrent"))
    return out


def check_phase(checker: Any, i: int, phase: Any, engine: Any) -> None:
    """Compile-time checks of phase ``i``: :func:`problems`, background task references, a vLLM engine."""
    for p in problems(phase):
        checker.error(("phases", i) + p.path, p.code, p.message, p.hint)
    cfg = getattr(phase, "composition", None)
    if phase.kind != KIND or cfg is None:
        return
    for j, task in enumerate(cfg.background.tasks):
        checker.ref(("phases", i, "composition", "background", "tasks", j), task, "tasks")
    if engine is not None and engine.kind != "vllm":
        checker.error(("phases", i, "engine"), "invalid-value", f"a composition phase needs a continuous-batching "
                      f"server: engine kind vllm, not {engine.kind}", "use a vllm engine")


def _ident(prefix: str, *parts: str) -> str:
    return prefix + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def schedule_composition(phase: Any, targets: Sequence[Any], background: Sequence[Any], seed: int,
                         start_index: int) -> tuple[Any, dict[str, Any]]:
    """Samples and groups of a composition phase, plus the locked schedule for its PhaseSummary.

    ``targets``: the phase tasks' prompts; ``background``: the background pool's prompts.
    Returns (``compiler.schedule.PhaseSchedule``, schedule dict). Raises CompositionError.
    """
    if errs := problems(phase):
        raise errs[0]
    cfg = phase.composition
    sseed = seed if cfg.seed is None else cfg.seed
    order = seeded_order({p.id for p in targets}, seed, f"order:{phase.id}")
    offsets = arrival_offsets(len(order), cfg.schedule, cfg.rate_per_s, cfg.start_s,
                              derived_seed(sseed, f"arrivals:{phase.id}"))
    pool = [p.id for p in background if p.id not in set(order)]
    pool = list(dict.fromkeys(pool))
    if not pool and any(cfg.load_levels):
        raise CompositionError("selection-too-large", "the background pool is empty once the targets are taken out",
                               ("composition", "background", "tasks"), "name tasks whose prompts are not the targets")
    levels = list(cfg.load_levels)
    bg = {str(level): background_slots(sorted(pool), level, derived_seed(sseed, f"background:{phase.id}:{level}"))
          for level in levels}
    samples, groups = [], []
    index = start_index
    base_key = Condition(load=0).model_dump_json()
    for model in phase.models:
        for level in levels:
            cond = Condition(load=level)
            ckey = cond.model_dump_json()
            gid = _ident("g_", phase.id, model, ckey, "concurrent", *(f"{pid}:1" for pid in order))
            members = []
            for pos, pid in enumerate(order):
                sid = _ident("s_", phase.id, model, ckey, pid)
                base = None if level == 0 else _ident("s_", phase.id, model, base_key, pid)
                members.append(construct(Member, prompt=pid, sample=sid))
                samples.append(construct(Sample, id=sid, phase=phase.id, model=model, engine=phase.engine,
                                         condition=cond, prompt=pid, baseline=base, group=gid, position=pos))
            groups.append(construct(Group, id=gid, index=index, phase=phase.id, model=model, engine=phase.engine,
                                    mode="concurrent", condition=cond, members=members))
            index += 1
    summary = {"schedule": cfg.schedule, "rate_per_s": cfg.rate_per_s, "start_s": cfg.start_s, "seed": sseed,
               "load_levels": levels, "targets": [{"prompt": pid, "offset_s": off} for pid, off in zip(order, offsets)],
               "background": bg}
    sched = PhaseSchedule(samples=samples, groups=groups, targets=len(order), conditions=len(levels))
    return sched, summary


def plan_schedule(plan: Any, phase_id: str) -> dict[str, Any] | None:
    """The locked composition schedule of ``phase_id`` in ``plan`` (None when it is not a composition phase)."""
    for p in plan.phases:
        if p.id == phase_id:
            return getattr(p, "composition", None)
    return None
