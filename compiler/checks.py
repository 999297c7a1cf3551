"""Semantic checks that JSON Schema cannot express: references between sections,
engine/model compatibility and pinning. Every problem becomes a positioned
Diagnostic; all of them are collected before anything is reported.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from batchsafe.analysis.scorers.catalogue import SCORERS, check_ref, parse_ref
from batchsafe.runtime.engines.catalogue import ENGINES

from . import composition, tensor_parallel
from .datasets import format_fields
from .diagnostics import Diagnostic
from .render import SPECIAL_FIELDS, placeholders
from .spec import Phase, Spec
from .yamlspec import LocatedDoc, diag_at

#: Dispatch modes each engine kind implements, as the engine catalogue declares them.
ENGINE_MODES = {kind: info.modes for kind, info in ENGINES.items()}

#: Axes each phase kind must set.
KIND_AXES = {
    "batch_size": ("batch_sizes",),
    "true_batch": ("batch_sizes",),
    "cobatch": ("cobatch",),
    "quant_concurrency": ("quants", "concurrency"),
    "kernel_ablation": ("kernel",),
    "repeat_floor": (),
    "tensor_parallel": ("tensor_parallel",),
    "composition": (),  # its axis is phase.composition.load_levels (compiler.composition checks it)
}


def _hint(name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return "defined: " + (", ".join(known) if known else "(none)")


class Checker:
    """Collects diagnostics for one resolved spec."""

    def __init__(self, spec: Spec, doc: LocatedDoc, allow_unpinned: bool) -> None:
        self.spec, self.doc, self.allow_unpinned = spec, doc, allow_unpinned
        self.diags: list[Diagnostic] = []
        self.unpinned: list[str] = []
        self.resolved_at_run: list[str] = []
        self._pin_seen: set[str] = set()
        self.bad_tasks: set[str] = set()
        """Tasks with problems: the compiler does not load or select them."""

    def error(self, path: tuple[Any, ...], code: str, message: str, hint: str = "") -> None:
        """Record one diagnostic at ``path``."""
        self.diags.append(diag_at(self.doc, path, code, message, hint))

    def ref(self, path: tuple[Any, ...], name: str, section: str) -> bool:
        """Check that ``name`` is a key of the spec section ``section``."""
        table = getattr(self.spec, section)
        if name in table:
            return True
        self.error(path, "unknown-name", f"unknown {section[:-1]} {name!r}", _hint(name, table))
        return False

    def pin(self, path: tuple[Any, ...], what: str, pinned: bool) -> None:
        """Refuse an unpinned reference, or record it under --allow-unpinned."""
        if pinned or what in self._pin_seen:
            return
        self._pin_seen.add(what)  # one report per reference, at its first use
        if self.allow_unpinned:
            self.unpinned.append(what)
        else:
            self.error(path, "unpinned", f"{what} is not pinned", "pin it by digest/revision, or compile with --allow-unpinned")

    def run(self) -> list[Diagnostic]:
        """Run every check; return the diagnostics (empty when the spec is sound)."""
        for name, task in self.spec.tasks.items():
            self.check_task(name, task)
        seen: dict[str, int] = {}
        for i, phase in enumerate(self.spec.phases):
            if phase.id in seen:
                self.error(("phases", i, "id"), "duplicate-id", f"phase id {phase.id!r} is used twice",
                           f"first used at phases[{seen[phase.id]}]")
            seen.setdefault(phase.id, i)
            self.check_phase(i, phase)
        tseen: dict[str, int] = {}
        for i, target in enumerate(self.spec.targets):
            if target.id in tseen:
                self.error(("targets", i, "id"), "duplicate-id", f"target id {target.id!r} is used twice",
                           f"first used at targets[{tseen[target.id]}]")
            tseen.setdefault(target.id, i)
            if target.op == "between":
                if target.low is None or target.high is None:
                    self.error(("targets", i), "missing-key", "op 'between' needs low and high")
            elif target.value is None:
                self.error(("targets", i), "missing-key", f"op {target.op!r} needs a value")
            if target.metric.split(".")[0] not in ("plan", "stats"):
                self.error(("targets", i, "metric"), "invalid-value",
                           f"metric {target.metric!r} must start with plan. or stats.")
        return self.diags

    def check_task(self, name: str, task: Any) -> None:
        """References, scorer registration, template fields and selection shape of one task."""
        before = len(self.diags)
        self._check_task(name, task)
        if len(self.diags) > before:
            self.bad_tasks.add(name)

    def _check_task(self, name: str, task: Any) -> None:
        base = ("tasks", name)
        problem = check_ref(task.scorer)
        if problem:
            sname = parse_ref(task.scorer)[0]
            self.error(base + ("scorer",), "unknown-name", problem, _hint(sname, SCORERS) if sname not in SCORERS else "")
        if not self.ref(base + ("dataset",), task.dataset, "datasets"):
            return
        fmt = self.spec.datasets[task.dataset].format
        fields = set(format_fields(fmt))
        render = task.render
        allowed = fields | SPECIAL_FIELDS[render.kind]
        for field in placeholders(render.template):
            if field not in allowed:
                self.error(base + ("render", "template"), "unknown-name",
                           f"template placeholder {{{field}}} is not a field of {fmt} records", _hint(field, allowed))
        if render.kind == "jailbreak":
            if render.goals is None:
                self.error(base + ("render",), "missing-key", "a jailbreak rendering needs goals")
            elif self.ref(base + ("render", "goals", "dataset"), render.goals.dataset, "datasets"):
                gfmt = self.spec.datasets[render.goals.dataset].format
                if render.goals.field not in format_fields(gfmt):
                    self.error(base + ("render", "goals", "field"), "unknown-name",
                               f"{render.goals.field!r} is not a field of {gfmt} records", _hint(render.goals.field, format_fields(gfmt)))
        sel = task.select
        if sel.from_bundle is not None:
            self._check_from_bundle(base + ("select",), sel)
        elif (sel.count is None) == (sel.ids is None):
            self.error(base + ("select",), "invalid-value", "select needs exactly one of count and ids")
        if sel.ids is not None and (sel.stratify_by or sel.max_prompt_chars):
            self.error(base + ("select",), "invalid-value", "stratify_by and max_prompt_chars apply to count selections only")
        if sel.stratify_by and sel.stratify_by not in fields:
            self.error(base + ("select", "stratify_by"), "unknown-name",
                       f"{sel.stratify_by!r} is not a field of {fmt} records", _hint(sel.stratify_by, fields))
        for key in sel.where:
            if key not in fields:
                self.error(base + ("select", "where", key), "unknown-name", f"{key!r} is not a field of {fmt} records", _hint(key, fields))

    def _check_from_bundle(self, path: tuple[Any, ...], sel: Any) -> None:
        """What the pick needs and what it allows; the bundle itself is read by the compiler."""
        fb = sel.from_bundle
        at = path + ("from_bundle",)
        if sel.ids is not None:
            self.error(path + ("ids",), "invalid-value", "ids cannot be combined with from_bundle",
                       "select from a prior bundle with a count (or none: every candidate)")
        if fb.pick == "boundary":
            if fb.score_range is None:
                self.error(at, "missing-key", "pick boundary needs score_range", "e.g. score_range: [0.25, 0.75]")
            elif fb.score_range[0] > fb.score_range[1]:
                self.error(at + ("score_range",), "invalid-value",
                           f"score_range [{fb.score_range[0]:g}, {fb.score_range[1]:g}] is empty", "write it as [low, high]")
            for key in ("directions", "min_flips"):
                if key in fb.model_fields_set:
                    self.error(at + (key,), "invalid-value", f"{key} applies to pick flipped only")
        elif fb.score_range is not None:
            self.error(at + ("score_range",), "invalid-value", "score_range applies to pick boundary only",
                       "add pick: boundary to select by mean score")

    def check_phase(self, i: int, phase: Phase) -> None:
        """References, axes required by the kind, dispatch support, model references and pins."""
        base = ("phases", i)
        for j, task in enumerate(phase.tasks):
            self.ref(base + ("tasks", j), task, "tasks")
        self._dupes(base + ("tasks",), phase.tasks, "task")
        self._dupes(base + ("models",), phase.models, "model")
        if phase.axes.cobatch:
            for cond, pool in phase.axes.cobatch.fillers.items():
                for j, task in enumerate(pool.tasks):
                    self.ref(base + ("axes", "cobatch", "fillers", cond, "tasks", j), task, "tasks")
        for axis in KIND_AXES[phase.kind]:
            if getattr(phase.axes, axis) is None:
                self.error(base + ("axes",), "missing-key", f"a {phase.kind} phase needs axes.{axis}")
        if phase.kind == "repeat_floor" and phase.axes.repeats < 2:
            self.error(base + ("axes",), "out-of-range", "a repeat_floor phase needs axes.repeats of at least 2")
        if not self.ref(base + ("engine",), phase.engine, "engines"):
            return
        engine = self.spec.engines[phase.engine]
        if phase.dispatch not in ENGINE_MODES[engine.kind]:
            self.error(base + ("dispatch",), "invalid-value",
                       f"engine kind {engine.kind} does not implement dispatch {phase.dispatch!r}",
                       "supported: " + ", ".join(ENGINE_MODES[engine.kind]))
        tensor_parallel.check_phase(self, i, phase, engine, phase.engine)
        composition.check_phase(self, i, phase, engine)
        # The rest is the engine's own (its spec block's checks, in runtime/engines/<kind>.py).
        engine.check_engine(self, base + ("engine",), phase.engine)
        engine.check_phase(self, base, phase)
        for j, model_name in enumerate(phase.models):
            if self.ref(base + ("models", j), model_name, "models"):
                engine.check_binding(self, base + ("models", j), model_name, self.spec.models[model_name], phase)

    def _dupes(self, path: tuple[Any, ...], items: list[str], what: str) -> None:
        seen: dict[str, int] = {}
        for j, item in enumerate(items):
            if item in seen:
                self.error(path + (j,), "duplicate-id", f"{what} {item!r} is listed twice", f"first listed at index {seen[item]}")
            seen.setdefault(item, j)

