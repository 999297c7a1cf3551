"""Sharding a locked plan over workers: a pure function of the plan, recorded in a manifest.

``shard_plan(plan, n)`` cuts the plan's groups into ``n`` shards. The same plan and ``n``
always give the same manifest (byte for byte), on any machine, so a worker that is given
only the plan, ``i`` and ``n`` runs exactly the groups the driver (or ``merge``) expects.

What must stay together is decided per group by a *block key*:

* ``server:<engine>:<kernel>``: groups sent to a server (external or launched) run on one
  worker, one after another. Two workers sending to one server would share its batches
  (the batch composition is what the study measures), and a launched server stands for
  one kernel variant: its groups stay on the worker that launches it.
* ``ordered:<phase>:<binding>``: phases whose schedule order is the measurement
  (``repeat_floor``: the same engine instance repeats requests) stay on one worker.
* ``binding:<binding>``: embedded engines are deterministic per group, so these blocks may
  be cut into consecutive pieces to balance the load; each piece still runs one engine
  binding from start to end, so a worker loads an engine once per piece.

Blocks are cut so that no piece exceeds the ideal load (total / n), then placed largest
first on the least-loaded shard (ties: lower shard index). Load is counted in sequences
(group members, fillers included): what an engine decodes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from batchsafe.compiler.plan import Plan
from batchsafe.compiler.plan_lookup import engine_of, kernel_variant
from batchsafe.core.artifact import artifact
from batchsafe.core.atomic import atomic_write
from batchsafe.core.canonical import canonical_bytes, hash_obj
from batchsafe.core.errors import EXIT_USAGE, BatchsafeError
from batchsafe.runtime.bindings import binding_for
from batchsafe.runtime.engines.catalogue import ENGINES

SHARD_SCHEMA_VERSION = 1
MANIFEST_FILE = "shard_manifest.json"
"""File name of the manifest in partial and merged run directories (and bundles)."""
POLICY = "blocks-lpt/1"
"""Name and version of the assignment rule; a change of rule is a new version."""
ORDERED_PHASES = frozenset({"repeat_floor"})
"""Phase kinds whose groups must run in schedule order on one engine instance."""
EMBEDDED_KINDS = frozenset(k for k, e in ENGINES.items() if e.embedded)
"""Engine kinds that run inside the worker (no server shared between workers)."""


class ShardError(BatchsafeError):
    """A bad shard request (``--shard`` out of range, manifest of another plan)."""

    exit_code = EXIT_USAGE


class Shard(BaseModel):
    """One worker's part of the plan."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    index: int
    """0-based shard index."""
    groups: list[str]
    """Group ids in plan order."""
    samples: int
    """Scored samples in these groups."""
    sequences: int
    """Sequences (group members, fillers included): the load measure."""
    bindings: list[str]
    """Engine bindings the worker runs, in first-use order (labels)."""
    gpus: float
    """GPUs a worker for this shard reserves (Ray ``num_gpus``); 0 for CPU engines and clients of servers."""


# Not a layout file: partial runs hold it as shard_manifest.json, merged runs as volatile/shard_manifest.json
# (informational to verify: the outputs do not depend on how the run was spread).
@artifact("shard manifest", version=SHARD_SCHEMA_VERSION, error=ShardError)
class ShardManifest(BaseModel):
    """How a plan is cut over ``workers`` workers (``shard_manifest.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    schema_version: Literal[1] = SHARD_SCHEMA_VERSION
    """Version of this format; readers refuse newer versions."""
    plan_hash: str
    """The plan this manifest shards."""
    workers: int
    """Number of shards."""
    policy: str = POLICY
    """Assignment rule that produced it."""
    shards: list[Shard]
    """Exactly ``workers`` shards, by index; a shard may be empty when there are fewer blocks than workers."""

    def to_bytes(self) -> bytes:
        """Canonical JSON plus a newline (the file's exact content)."""
        return canonical_bytes(self.model_dump(mode="json")) + b"\n"

    def digest(self) -> str:
        """``sha256:`` of the canonical content: partial runs name the manifest they ran."""
        return hash_obj(self.model_dump(mode="json"))

    def write(self, run_dir: Path) -> Path:
        """Write ``shard_manifest.json`` atomically into ``run_dir``."""
        path = Path(run_dir) / MANIFEST_FILE
        atomic_write(path, self.to_bytes())
        return path

    @classmethod
    def read(cls, path: Path) -> ShardManifest:
        """Parse a manifest file (ShardError when unreadable, malformed or newer: the artifacts floor's gate)."""
        return cls.from_path(path)  # type: ignore[attr-defined, no-any-return]


# --- the pure core: items -> shards ---------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One group as the partitioner sees it."""

    id: str
    index: int
    """Plan order."""
    weight: int
    """Load (sequences)."""
    key: str
    """Block key: items with one key form one block."""
    splittable: bool
    """Whether the block may be cut into consecutive pieces."""


def _pieces(items: Sequence[Item], target: int) -> list[list[Item]]:
    """Blocks in first-index order; splittable ones cut into consecutive pieces of weight <= target."""
    blocks: dict[str, list[Item]] = {}
    for it in sorted(items, key=lambda i: i.index):
        blocks.setdefault(it.key, []).append(it)
    out: list[list[Item]] = []
    for block in blocks.values():
        if not block[0].splittable:
            out.append(block)
            continue
        cur: list[Item] = []
        load = 0
        for it in block:
            if cur and load + it.weight > target:
                out.append(cur)
                cur, load = [], 0
            cur.append(it)
            load += it.weight
        out.append(cur)
    return out


def partition(items: Sequence[Item], n: int) -> list[list[str]]:
    """Item ids per shard (``n`` lists, each in index order): every item in exactly one list.

    Deterministic and independent of the order of ``items``.
    """
    if n < 1:
        raise ShardError(f"the number of shards must be at least 1, not {n}")
    keys: dict[str, bool] = {}
    for it in items:
        if keys.setdefault(it.key, it.splittable) != it.splittable:
            raise ValueError(f"block {it.key!r} is both splittable and not")
    total = sum(it.weight for it in items)
    target = max(1, math.ceil(total / n))
    pieces = _pieces(items, target)
    # Largest first (longest-processing-time rule); equal weights keep plan order.
    pieces.sort(key=lambda p: (-sum(i.weight for i in p), p[0].index))
    loads = [0] * n
    shards: list[list[Item]] = [[] for _ in range(n)]
    for piece in pieces:
        k = min(range(n), key=lambda s: (loads[s], s))
        shards[k].extend(piece)
        loads[k] += sum(i.weight for i in piece)
    return [[it.id for it in sorted(s, key=lambda i: i.index)] for s in shards]


# --- the plan side ----------------------------------------------------------------------


def _phase_kinds(plan: Plan) -> dict[str, str]:
    return {p.id: p.kind for p in plan.phases}


def block_key(plan: Plan, group: Any, kinds: dict[str, str] | None = None) -> tuple[str, bool]:
    """(block key, splittable) of a group; see the module docstring for the rules."""
    b = binding_for(plan, group)
    if b.kind not in EMBEDDED_KINDS:
        return f"server:{b.engine}:{b.kernel or '-'}", False
    kinds = kinds if kinds is not None else _phase_kinds(plan)
    if kinds.get(group.phase) in ORDERED_PHASES:
        return f"ordered:{group.phase}:{b.label()}", False
    return f"binding:{b.label()}", True


def gpus_for(plan: Plan, engine: str, kernel: str | None = None) -> float:
    """GPUs a worker needs for an engine: launched GPU servers reserve their tensor-parallel size.

    Embedded engines here run on CPU; clients of an external server need none; a launched
    vLLM reserves ``--tensor-parallel-size`` x ``--pipeline-parallel-size`` GPUs unless its
    env targets the CPU (``VLLM_TARGET_DEVICE=cpu``).
    """
    eng = engine_of(plan, engine)
    if eng is None:
        return 0.0
    cfg = eng.config
    if eng.kind in EMBEDDED_KINDS:
        return 1.0 if int(cfg.get("n_gpu_layers") or 0) != 0 or str(cfg.get("device", "")).startswith("cuda") else 0.0
    if (cfg.get("launch") or {}).get("kind") not in ("process", "container"):
        return 0.0
    var = kernel_variant(plan, kernel, engine=engine) or {}
    env = {**(cfg.get("env") or {}), **(var.get("env") or {})}
    if str(env.get("VLLM_TARGET_DEVICE", "")).lower() == "cpu":
        return 0.0
    flags = [str(f) for f in [*(cfg.get("flags") or []), *(var.get("flags") or [])]]
    size = 1
    for name in ("--tensor-parallel-size", "--pipeline-parallel-size"):
        size *= int(_flag(flags, name) or 1)
    return float(size)


def _flag(flags: list[str], name: str) -> str | None:
    for i, f in enumerate(flags):
        if f == name and i + 1 < len(flags):
            return flags[i + 1]
        if f.startswith(name + "="):
            return f.split("=", 1)[1]
    return None


def shard_plan(plan: Plan, workers: int) -> ShardManifest:
    """The shard manifest of ``plan`` over ``workers`` workers (a pure function of both)."""
    if workers < 1:
        raise ShardError(f"--workers must be at least 1, not {workers}")
    kinds = _phase_kinds(plan)
    by_id = {g.id: g for g in plan.groups}
    items = []
    for g in plan.groups:
        key, splittable = block_key(plan, g, kinds)
        items.append(Item(id=g.id, index=g.index, weight=len(g.members), key=key, splittable=splittable))
    shards = []
    for i, ids in enumerate(partition(items, workers)):
        groups = [by_id[x] for x in ids]
        labels: list[str] = []
        gpus = 0.0
        for g in groups:
            b = binding_for(plan, g)
            if b.label() not in labels:
                labels.append(b.label())
            gpus = max(gpus, gpus_for(plan, b.engine, b.kernel))
        shards.append(Shard(index=i, groups=ids, samples=sum(1 for g in groups for m in g.members if m.sample),
                            sequences=sum(len(g.members) for g in groups), bindings=labels, gpus=gpus))
    return ShardManifest(plan_hash=plan.plan_hash, workers=workers, shards=shards)


_SHARD_ARG = re.compile(r"^(\d+)/(\d+)$")


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` (0-based i) -> (i, N); ShardError naming the rule otherwise."""
    m = _SHARD_ARG.match(text.strip())
    if not m:
        raise ShardError(f"--shard {text!r}: expected i/N, e.g. 0/2 (shards are numbered from 0)")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise ShardError(f"--shard {text}: i must be 0..{n - 1} for N={n} (shards are numbered from 0)")
    return i, n
