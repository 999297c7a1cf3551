"""A partial run: one shard of a plan run into its own directory with its own journal.

``run_shard(plan, run_dir, i, n)`` runs the groups of shard ``i`` of ``shard_plan(plan,
n)`` with the ordinary executor (same journal, same kill -9 and resume guarantees), and
when every one of them is journaled writes, last and atomically, ``partial.json``: the
plan hash, the manifest digest, the shard index and the sha256 of the journal. Its
presence is what "this shard is done" means to ``merge`` and to the Ray driver; a
partial without it is resumed, never merged.

Layout of a partial run directory (a run directory minus ``outputs/``)::

    run.json, journal.jsonl, volatile/, logs/, launch/   as the executor writes them
    environment.json      the worker's machine and engines (merge lists every shard's)
    shard_manifest.json   the manifest the shard belongs to
    partial.json          the completion record (PartialRecord)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from batchsafe.compiler.plan import Plan
from batchsafe.core import layout
from batchsafe.core.artifact import artifact
from batchsafe.core.atomic import atomic_write
from batchsafe.core.canonical import canonical_bytes, hash_file
from batchsafe.core.errors import EXIT_FAIL, BatchsafeError
from batchsafe.runtime import journal as jr
from batchsafe.runtime.shard import MANIFEST_FILE, ShardManifest, shard_plan

PARTIAL_SCHEMA_VERSION = 1
PARTIAL_FILE = "partial.json"


class PartialError(BatchsafeError):
    """A partial run directory that cannot be used as it is (incomplete, altered, another plan)."""

    exit_code = EXIT_FAIL


@artifact("partial run record", version=PARTIAL_SCHEMA_VERSION, error=PartialError)  # in partial runs, never bundled
class PartialRecord(BaseModel):
    """``partial.json``: one shard, completely journaled."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    schema_version: Literal[1] = PARTIAL_SCHEMA_VERSION
    """Version of this format; readers refuse newer versions."""
    plan_hash: str
    """The plan run."""
    manifest: str
    """``sha256:`` digest of the shard manifest (``shard_manifest.json``)."""
    shard: int
    """0-based shard index."""
    workers: int
    """Number of shards in the manifest."""
    groups: int
    """Groups journaled (all of the shard's)."""
    samples: int
    """Scored samples journaled."""
    journal_sha256: str
    """``sha256:`` digest of ``journal.jsonl`` as completed; merge refuses a journal changed since."""


def partial_dir_name(shard: int, workers: int) -> str:
    """Conventional directory name of a shard's partial run: ``shard-<i>-of-<n>``."""
    return f"shard-{shard}-of-{workers}"


def run_shard(plan: Plan, run_dir: Path, shard: int, workers: int, *, resume: bool = False,
              engine_factory: Callable[..., Any] | None = None, progress: bool = True,
              manifest: ShardManifest | None = None, **kwargs: Any) -> Any:
    """Run shard ``shard`` of ``workers`` into ``run_dir`` (resumable); return the executor's summary.

    A partial that is already complete (valid ``partial.json``) is returned as is. Extra
    keyword arguments go to :func:`~batchsafe.runtime.executor.run_plan`.
    """
    from batchsafe.runtime.executor import RunSummary, run_plan
    from batchsafe.runtime.shard import ShardError

    run_dir = Path(run_dir)
    manifest = manifest or shard_plan(plan, workers)
    if not 0 <= shard < manifest.workers:
        raise ShardError(f"shard {shard} is not in 0..{manifest.workers - 1}")
    part = manifest.shards[shard]
    if resume and (run_dir / PARTIAL_FILE).exists():
        rec = read_partial(run_dir, plan)
        if (rec.manifest, rec.shard) != (manifest.digest(), shard):
            raise PartialError(f"{run_dir} holds shard {rec.shard}/{rec.workers} of manifest {rec.manifest}, "
                               f"not shard {shard}/{workers} of {manifest.digest()}")
        return RunSummary(run_dir=run_dir, plan_hash=plan.plan_hash, groups_total=rec.groups,
                          groups_done=rec.groups, samples_total=rec.samples, samples_done=rec.samples, complete=True)
    summary = run_plan(plan, run_dir, resume=resume, engine_factory=engine_factory, progress=progress,
                       groups=part.groups, **kwargs)
    _complete(plan, run_dir, manifest, shard, summary.samples_done)
    return summary


def _complete(plan: Plan, run_dir: Path, manifest: ShardManifest, shard: int, samples: int) -> None:
    """Write environment.json, the manifest and, last, partial.json (the completion mark)."""
    from batchsafe.runtime.environment import capture_environment, engine_records

    env = capture_environment(engine_records(run_dir / "volatile" / "engines.jsonl"))
    atomic_write(run_dir / layout.ENVIRONMENT, json.dumps(env, indent=2, sort_keys=True).encode() + b"\n")
    manifest.write(run_dir)
    rec = PartialRecord(plan_hash=plan.plan_hash, manifest=manifest.digest(), shard=shard, workers=manifest.workers,
                        groups=len(manifest.shards[shard].groups), samples=samples,
                        journal_sha256=hash_file(run_dir / jr.JOURNAL_FILE)[0])
    atomic_write(run_dir / PARTIAL_FILE, canonical_bytes(rec.model_dump(mode="json")) + b"\n")


def read_partial(run_dir: Path, plan: Plan) -> PartialRecord:
    """The completion record of a partial run, checked against ``plan`` and the journal's bytes.

    PartialError when it is missing (the shard is not finished), unreadable, of a newer
    version, of another plan, or when the journal changed after completion.
    """
    path = Path(run_dir) / PARTIAL_FILE
    if not path.is_file():
        raise PartialError(f"{run_dir}: not a completed shard (no {PARTIAL_FILE}); finish it with "
                           "batchsafe run PLAN --shard i/N --out DIR --resume")
    rec: PartialRecord = PartialRecord.from_path(path)  # type: ignore[attr-defined]  # the one version gate
    if rec.plan_hash != plan.plan_hash:
        raise PartialError(f"{run_dir}: partial run of plan {rec.plan_hash}, but the plan given is {plan.plan_hash}")
    journal = Path(run_dir) / jr.JOURNAL_FILE
    if not journal.is_file():
        raise PartialError(f"{run_dir}: {jr.JOURNAL_FILE} is missing")
    got = hash_file(journal)[0]
    if got != rec.journal_sha256:
        raise PartialError(f"{run_dir}: {jr.JOURNAL_FILE} has sha256 {got}, {PARTIAL_FILE} recorded "
                           f"{rec.journal_sha256} (changed after the shard completed)")
    mpath = Path(run_dir) / MANIFEST_FILE
    if not mpath.is_file() or ShardManifest.read(mpath).digest() != rec.manifest:
        raise PartialError(f"{run_dir}: {MANIFEST_FILE} is missing or is not the manifest {PARTIAL_FILE} names")
    return rec
