"""Selection from a prior bundle: the records whose prompts flipped, or scored near the boundary.

A task's ``select.from_bundle`` names a stored bundle by its full id. The compiler reads
that bundle from the bundle store, verifies every file against its manifest, and reads its
``plan.lock.json`` and its own ``analysis/flips.jsonl`` (pick ``flipped``) or
``analysis/scores.jsonl`` (pick ``boundary``); an analysis child bundle is as good as a
run bundle, since its analysis files are the ones that count. The picked prompts are
mapped back to the dataset records they were rendered from (``Prompt.records``), and only
those records stay candidates of the task. The id is part of the resolved spec, so the
plan hash changes with the bundle.

Every problem is a :class:`PriorError` carrying a diagnostic code and the key under
``select.from_bundle`` it is about; the compiler positions it in the spec.
"""

from __future__ import annotations

from batchsafe.core import layout
from batchsafe.core.errors import BatchsafeError

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .diagnostics import did_you_mean, join_names
from .plan import Plan
from .spec import FromBundle

STORE_ENV = "BATCHSAFE_STORE"
DEFAULT_STORE = "runs/store"
"""Default store, relative to the working directory (as ``batchsafe.pipeline.default_store`` with the default --out)."""

PLAN_FILE, FLIPS_FILE, SCORES_FILE = layout.PLAN, layout.FLIPS, layout.SCORES


@dataclass
class PriorError(BatchsafeError):
    """Why a prior bundle cannot be used; ``at`` is the key path below ``select.from_bundle``."""

    code: str
    message: str
    hint: str = ""
    at: tuple[str | int, ...] = ()


def store_location(store: Any) -> tuple[str, Path, Any]:
    """(label for messages, root, the BundleStore if one was given) of a store argument.

    ``None`` means ``$BATCHSAFE_STORE``, else ``runs/store`` relative to the working
    directory. The label is the store as given, so messages hold no machine-specific path
    that the user did not write.
    """
    from batchsafe.bundles.store import BundleStore

    if isinstance(store, BundleStore):
        return str(store.root), store.root, store
    given = os.fspath(store) if store is not None else (os.environ.get(STORE_ENV) or DEFAULT_STORE)
    return given, Path(given), None


@dataclass
class PriorBundle:
    """One verified prior bundle: its plan and, read on first use, its analysis records."""

    bundle_id: str
    plan: Plan
    names: set[str]
    _store: Any
    _cache: dict[str, list[Any]] = field(default_factory=dict)

    def records(self, name: str) -> list[Any]:
        """FlipRow (flips) or ScoredSample (scores) records of the bundle's own analysis."""
        from batchsafe.analysis.flips import RecordError, read_flips, read_scored

        if name not in self._cache:
            if name not in self.names:
                raise PriorError("bundle-incomplete", f"bundle {self.bundle_id} has no {name}",
                                 f"analyse it first (batchsafe analyze {self.bundle_id}) and select from the child bundle",
                                 ("bundle",))
            reader = read_flips if name == FLIPS_FILE else read_scored
            try:
                self._cache[name] = reader(self._store.read(self.bundle_id, name))
            except RecordError as exc:
                raise PriorError("bundle-damaged", f"bundle {self.bundle_id}: {str(exc).replace('<bytes>', name, 1)}",
                                 "the bundle's analysis records cannot be read: re-run batchsafe analyze on it",
                                 ("bundle",)) from None
        return self._cache[name]


class PriorReader:
    """Opens prior bundles from one store, each once per compile (several tasks may name the same one)."""

    def __init__(self, store: Any = None) -> None:
        """``store``: a store path or ``BundleStore``; None: ``$BATCHSAFE_STORE``, else ``runs/store``."""
        self.label, self.root, self._store = store_location(store)
        self._opened: dict[str, PriorBundle | PriorError] = {}

    def open(self, bundle_id: str) -> PriorBundle:
        """The verified bundle ``bundle_id``; raises PriorError (not found, damaged, no plan)."""
        if bundle_id not in self._opened:
            try:
                self._opened[bundle_id] = self._open(bundle_id)
            except PriorError as exc:
                self._opened[bundle_id] = exc
            except OSError as exc:  # unreadable store files (permissions, I/O): a message, not a traceback
                self._opened[bundle_id] = PriorError(
                    "bundle-damaged", f"bundle {bundle_id} in the store {self.label} cannot be read: "
                    f"{exc.strerror or exc}", "check the store's files and permissions", ("bundle",))
        got = self._opened[bundle_id]
        if isinstance(got, PriorError):
            raise got
        return got

    def _open(self, bid: str) -> PriorBundle:
        from batchsafe.bundles.store import BundleError, BundleStore
        from batchsafe.compiler.plan import PlanError, plan_from_bytes

        # Look before opening: BundleStore creates its directories, and a compile must not
        # turn a mistyped --store into an empty store.
        if not layout.manifest_path(self.root, bid).is_file():
            where = f"the store {self.label}" + ("" if self.root.is_dir() else " (which does not exist)")
            raise PriorError("bundle-not-found", f"bundle {bid} is not in {where}",
                             f"import it with batchsafe bundle unpack ARCHIVE --store {self.label}, "
                             f"or point --store / ${STORE_ENV} at the store that holds it", ("bundle",))
        store = self._store or BundleStore(self.root)
        self._store = store
        damaged = "re-import it from its archive (batchsafe bundle unpack ARCHIVE) and compile again"
        problems = store.verify(bid)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise PriorError("bundle-damaged", f"bundle {bid} in the store {self.label} is damaged: {problems[0]}{more}",
                             damaged, ("bundle",))
        names = {e.name for e in store.manifest(bid).files}
        if PLAN_FILE not in names:
            raise PriorError("bundle-incomplete", f"bundle {bid} has no {PLAN_FILE}",
                             "select from a run bundle (batchsafe bundle make) or an analysis child of one", ("bundle",))
        try:
            plan = plan_from_bytes(store.read(bid, PLAN_FILE), f"bundle {bid}: {PLAN_FILE}")
        except (PlanError, BundleError) as exc:
            raise PriorError("bundle-damaged", str(exc), damaged, ("bundle",)) from None
        return PriorBundle(bid, plan, names, store)


def _known(prior: PriorBundle, fb: FromBundle) -> list[PriorError]:
    """Filter values that the prior bundle does not have at all (a typo would silently narrow the pick)."""
    plan = prior.plan
    tables = {"models": sorted({m.name for m in plan.models}), "phases": [p.id for p in plan.phases],
              "conditions": sorted({s.condition.label() for s in plan.samples})}
    errors = []
    for key, singular in (("models", "model"), ("phases", "phase"), ("conditions", "condition")):
        for j, value in enumerate(getattr(fb, key) or []):
            if value not in tables[key]:
                errors.append(PriorError("unknown-name", f"bundle {prior.bundle_id} has no {singular} {value!r}",
                                         did_you_mean(value, tables[key]) or f"its {key}: {join_names(tables[key])}",
                                         (key, j)))
    return errors


def _keep(row: Any, fb: FromBundle) -> bool:
    return ((fb.models is None or row.model in fb.models) and (fb.phases is None or row.phase in fb.phases)
            and (fb.conditions is None or row.condition.label() in fb.conditions))


def pick_records(prior: PriorBundle, fb: FromBundle, task: str,
                 dataset: str) -> tuple[list[PriorError], list[tuple[str, ...]]]:
    """(every problem, record-id tuples of the prior prompts that ``fb`` picks for ``task``).

    ``task`` is this spec's task name (the prior task defaults to it) and ``dataset`` its
    dataset name, which the prior prompts must come from. The tuples are the prompts'
    ``Prompt.records`` (two ids for jailbreak prompts), sorted, without duplicates; they
    are empty when there are problems.
    """
    bid = prior.bundle_id
    name = fb.task or task
    at_task: tuple[str, ...] = ("task",) if fb.task else ("bundle",)
    prompts = {p.id: p for p in prior.plan.prompts if p.task == name}
    if not prompts:
        tasks = sorted({p.task for p in prior.plan.prompts})
        mean = did_you_mean(name, tasks)
        return [PriorError("unknown-name", f"bundle {bid} has no prompts of task {name!r}",
                           (f"{mean} " if mean else "") + f"its tasks: {join_names(tasks)}", at_task)], []
    others = sorted({p.dataset for p in prompts.values()} - {dataset})
    if others:
        return [PriorError("invalid-value", f"task {name!r} of bundle {bid} selected from dataset "
                           f"{', '.join(map(repr, others))}, this task's dataset is {dataset!r}",
                           "records are matched by id within one dataset, so both tasks must name the same dataset",
                           at_task)], []
    errors = _known(prior, fb)
    if errors:
        return errors, []
    try:
        if fb.pick == "flipped":
            flips = Counter(r.prompt for r in prior.records(FLIPS_FILE)
                            if r.flipped and r.prompt in prompts and _keep(r, fb)
                            and (fb.directions is None or r.direction in fb.directions))
            chosen = {p for p, n in flips.items() if n >= fb.min_flips}
        else:
            lo, hi = fb.score_range or (0.0, 1.0)
            scores: dict[str, list[float]] = defaultdict(list)
            for r in prior.records(SCORES_FILE):
                if r.prompt in prompts and _keep(r, fb):
                    scores[r.prompt].append(r.score)
            chosen = {p for p, v in scores.items() if lo <= sum(v) / len(v) <= hi}
    except PriorError as exc:
        return [exc], []
    if not chosen:
        filters = [k for k in ("directions", "models", "phases", "conditions") if getattr(fb, k) is not None]
        with_filters = f" (filtered by {', '.join(filters)})" if filters else ""
        if fb.pick == "flipped":
            times = f" in at least {fb.min_flips} rows" if fb.min_flips > 1 else ""
            msg = f"no prompt of task {name!r} flipped{times} in bundle {bid}{with_filters}"
            hint = "widen the filters or lower min_flips, or pick boundary prompts by mean score"
        else:
            lo, hi = fb.score_range or (0.0, 1.0)
            msg = f"no prompt of task {name!r} in bundle {bid} has a mean score in [{lo:g}, {hi:g}]{with_filters}"
            hint = "widen score_range or the filters"
        return [PriorError("empty-selection", msg, hint, ())], []
    return [], sorted({tuple(prompts[p].records) for p in chosen})
