"""merge: partial runs of one plan -> one run directory, as if one process had run the plan.

A pure step over files: nothing runs. Each partial is checked (``partial.json`` against
the plan hash and its journal's sha256, every journal line's own digest and its group
against the plan), then the partials are checked against each other: a group journaled
by two partials is an *overlap*, a plan group journaled by none is a *gap*, and both are
refused with the groups and shards named. The merged directory is written next to its
destination and renamed into place, so it is either complete or absent.

What makes the result byte-identical to a single-process run: journal lines are the
canonical lines the executor wrote, kept as bytes and ordered by group index (the
single-process journal order), and ``outputs/`` is written from that journal by the same
``journal.write_outputs``. Volatile files are merged and say which shard they came from:
``volatile/timings.jsonl`` (plan order, ``shard`` added), ``volatile/engines.jsonl``,
``logs/run.log`` (one section per shard), ``environment.json`` (shard 0's machine, every
shard's engines, and each shard's environment under ``shards``), launch records
renumbered in shard order with their server logs, ``volatile/shards.json`` and
``volatile/shard_manifest.json``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchsafe.compiler.plan import Plan
from batchsafe.core import layout
from batchsafe.core.atomic import atomic_write, fsync_dir
from batchsafe.core.canonical import hash_file
from batchsafe.core.errors import EXIT_FAIL, EXIT_USAGE, BatchsafeError
from batchsafe.runtime import journal as jr
from batchsafe.runtime.partial import PARTIAL_FILE, PartialRecord, read_partial
from batchsafe.runtime.shard import MANIFEST_FILE, ShardManifest, shard_plan

MERGED_MANIFEST = "volatile/" + MANIFEST_FILE
"""Where the merged run keeps the manifest: how the run was spread over workers is execution
detail (the outputs do not depend on it), so it sits with the timings, not with the results."""
#: Files of a partial that merge rebuilds rather than copies.
_REBUILT = {layout.RUN, jr.JOURNAL_FILE, ".lock", PARTIAL_FILE, MANIFEST_FILE, layout.ENVIRONMENT,
            layout.TIMINGS, "volatile/engines.jsonl", "logs/run.log"}


class MergeError(BatchsafeError):
    """Partials that do not add up to the plan exactly once (exit 1), or a bad destination (exit 2)."""

    exit_code = EXIT_FAIL


class MergeUsageError(MergeError):
    """The destination is not usable (exists and is not empty)."""

    exit_code = EXIT_USAGE


@dataclass
class MergeSummary:
    """What a merge wrote."""

    out_dir: Path
    shards: list[int]
    groups: int
    samples: int
    fillers: int
    outputs_sha256: str
    outputs: dict[str, Path] = field(default_factory=dict)


@dataclass
class _Part:
    dir: Path
    rec: PartialRecord
    lines: dict[str, bytes]
    """Group id -> its journal line (with newline), as written by the worker."""


def _load(plan: Plan, run_dir: Path) -> _Part:
    rec = read_partial(run_dir, plan)
    try:
        state = jr.read_journal(run_dir / jr.JOURNAL_FILE, plan)
    except jr.JournalError as exc:
        raise MergeError(f"{run_dir}: {exc}") from None
    if state.torn_bytes:
        raise MergeError(f"{run_dir}: {jr.JOURNAL_FILE} ends with a torn line")
    raw = (run_dir / jr.JOURNAL_FILE).read_bytes().splitlines(keepends=True)
    lines = {gid: line for gid, line in zip(state.entries, raw)}
    if len(lines) != rec.groups:
        raise MergeError(f"{run_dir}: {PARTIAL_FILE} says {rec.groups} groups, the journal holds {len(lines)}")
    return _Part(dir=Path(run_dir), rec=rec, lines=lines)


def check_partials(plan: Plan, partial_dirs: list[Path]) -> tuple[list[_Part], ShardManifest]:
    """Load and cross-check the partials; MergeError on any overlap, gap or inconsistency."""
    if not partial_dirs:
        raise MergeError("merge needs at least one partial run directory")
    parts = [_load(plan, Path(d)) for d in partial_dirs]
    owner: dict[str, _Part] = {}
    for p in parts:
        for gid in p.lines:
            if gid in owner:
                q = owner[gid]
                raise MergeError(f"overlap: group {gid} is journaled by both {q.dir} (shard {q.rec.shard}/"
                                 f"{q.rec.workers}) and {p.dir} (shard {p.rec.shard}/{p.rec.workers})")
            owner[gid] = p
    manifest = shard_plan(plan, parts[0].rec.workers)
    missing = [g for g in sorted(plan.groups, key=lambda g: g.index) if g.id not in owner]
    if missing:
        where = {i for g in missing for i, s in enumerate(manifest.shards) if g.id in s.groups}
        raise MergeError(f"gap: {len(missing)} of {len(plan.groups)} plan groups are in no partial (first: "
                         f"{missing[0].id}, index {missing[0].index}); missing shard(s) of {manifest.workers}: "
                         f"{', '.join(str(i) for i in sorted(where))}")
    for p in parts:
        if p.rec.manifest != manifest.digest():
            raise MergeError(f"{p.dir}: ran manifest {p.rec.manifest}, but sharding the plan over {manifest.workers} "
                             f"workers gives {manifest.digest()} (partials of different shardings?)")
        if set(p.lines) != set(manifest.shards[p.rec.shard].groups):
            raise MergeError(f"{p.dir}: its groups are not those of shard {p.rec.shard} in the manifest")
    return parts, manifest


def merge_partials(plan: Plan, partial_dirs: list[Path], out_dir: Path) -> MergeSummary:
    """Check the partials and write the merged run directory ``out_dir`` (atomically renamed into place)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise MergeUsageError(f"{out_dir} exists and is not empty; merge writes a new run directory")
    parts, manifest = check_partials(plan, partial_dirs)
    parts.sort(key=lambda p: p.rec.shard)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.merging"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a merge that was killed: it never became the run
    tmp.mkdir()
    try:
        _write(plan, parts, manifest, tmp)
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        os.rename(tmp, out_dir)
        fsync_dir(out_dir.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    samples = out_dir / "outputs" / "samples.jsonl"
    return MergeSummary(out_dir=out_dir, shards=[p.rec.shard for p in parts], groups=len(plan.groups),
                        samples=len(plan.samples), fillers=len(_lines(out_dir / "outputs" / "fillers.jsonl")),
                        outputs_sha256=hash_file(samples)[0],
                        outputs={"samples": samples, "fillers": out_dir / "outputs" / "fillers.jsonl"})


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.is_file() else []


def _json_lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for raw in _lines(path):
        try:
            rec = json.loads(raw)
        except ValueError:
            continue  # a torn volatile line loses a timing, never a result
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _write(plan: Plan, parts: list[_Part], manifest: ShardManifest, d: Path) -> None:
    index = {g.id: g.index for g in plan.groups}
    lines = sorted(((gid, line) for p in parts for gid, line in p.lines.items()), key=lambda x: index[x[0]])
    jr.write_run_info(d, plan)
    atomic_write(d / jr.JOURNAL_FILE, b"".join(line for _, line in lines))
    try:
        jr.write_outputs(plan, d)  # the coverage check again, on the merged journal
    except jr.CoverageError as exc:
        raise MergeError(str(exc)) from None
    atomic_write(d / MERGED_MANIFEST, manifest.to_bytes())
    timings: list[tuple[int, bytes]] = []
    engines: list[bytes] = []
    log: list[str] = []
    envs: list[dict[str, Any]] = []
    for p in parts:
        mine = set(p.lines)
        seen: dict[str, dict[str, Any]] = {}
        for rec in _json_lines(p.dir / "volatile" / "timings.jsonl"):
            if rec.get("group") in mine:
                seen[rec["group"]] = {**rec, "shard": p.rec.shard}  # a rerun after a crash: the last one counts
        timings += [(index[g], _dump(r)) for g, r in seen.items()]
        engines += [_dump({**r, "shard": p.rec.shard}) for r in _json_lines(p.dir / "volatile" / "engines.jsonl")]
        log.append(f"# shard {p.rec.shard}/{p.rec.workers}: {p.rec.groups} groups, {p.rec.samples} samples "
                   f"(from {p.dir.name})\n")
        run_log = p.dir / "logs" / "run.log"
        log.append(run_log.read_text(encoding="utf-8", errors="replace") if run_log.is_file() else "")
        env_path = p.dir / layout.ENVIRONMENT
        envs.append(json.loads(env_path.read_bytes()) if env_path.is_file() else {})
    atomic_write(d / "volatile" / "timings.jsonl", b"".join(line for _, line in sorted(timings, key=lambda t: t[0])))
    atomic_write(d / "volatile" / "engines.jsonl", b"".join(engines))
    atomic_write(d / "logs" / "run.log", "".join(log).encode("utf-8"))
    env = dict(envs[0])
    env["engines"] = [e for x in envs for e in x.get("engines", [])]
    env["shards"] = [{"shard": p.rec.shard, **x} for p, x in zip(parts, envs)]
    atomic_write(d / layout.ENVIRONMENT, json.dumps(env, indent=2, sort_keys=True).encode() + b"\n")
    atomic_write(d / "volatile" / "shards.json", json.dumps(
        [{"shard": p.rec.shard, "workers": p.rec.workers, "groups": p.rec.groups, "samples": p.rec.samples,
          "journal_sha256": p.rec.journal_sha256, "partial": p.dir.name} for p in parts],
        indent=2, sort_keys=True).encode() + b"\n")
    _copy_rest(parts, d)
    jr.write_run_info(d, plan, completed=True)


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True).encode() + b"\n"


def _copy_rest(parts: list[_Part], d: Path) -> None:
    """Launch records (renumbered in shard order, with their server logs) and any other file.

    Each shard numbers its launches from 1, so the merged run renumbers them; a file
    that is neither rebuilt nor a launch record keeps its path when no other shard has
    one there, else goes under ``volatile/shards/<i>/``.
    """
    from batchsafe.runtime.launch.record import LAUNCH_DIR, LaunchRecord

    seq = 0
    taken: set[str] = set()
    for p in parts:
        logs_moved: set[str] = set()
        for path in sorted((p.dir / LAUNCH_DIR).glob("*.json")) if (p.dir / LAUNCH_DIR).is_dir() else []:
            rec = LaunchRecord.from_bytes(path.read_bytes())
            seq += 1
            old_stem = rec.stem()
            new = rec.model_copy(update={"seq": seq})
            new_log = rec.log.replace(old_stem, new.stem()) if old_stem in rec.log else \
                f"logs/shard-{p.rec.shard}-{Path(rec.log).name}"
            new = new.model_copy(update={"log": new_log})
            if (p.dir / rec.log).is_file():
                (d / new_log).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p.dir / rec.log, d / new_log)
                logs_moved.add(rec.log)
            new.write(d)
            taken.update({new.file_name(), new_log})
        for path in sorted(p.dir.rglob("*")):
            rel = path.relative_to(p.dir).as_posix()
            if not path.is_file() or path.is_symlink() or rel in _REBUILT or rel in logs_moved \
                    or rel.startswith(LAUNCH_DIR + "/") or rel.endswith(".tmp"):
                continue
            dest = rel if rel not in taken and not (d / rel).exists() else f"volatile/shards/{p.rec.shard}/{rel}"
            (d / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, d / dest)
            taken.add(dest)
