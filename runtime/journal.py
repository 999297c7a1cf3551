"""The run journal: an append-only, fsynced record of completed dispatch groups.

One line per completed group, written with a single ``write()`` and made durable with
``fsync`` before the executor moves on, so that a ``kill -9`` at any instant leaves
either the whole line or a torn tail (a prefix without its newline). Resuming
truncates a torn tail (that group runs again) and refuses anything else that does not
check out: a corrupt line before the end, a line whose digest does not match its
content, a group twice, a group the plan does not contain. Each line carries the
sha256 of its own canonical body, so a flipped byte that still parses as JSON is
caught too.

The run directory also holds ``run.json`` (written atomically before the first group)
that binds the journal to one plan through ``plan_hash``.
"""

from __future__ import annotations

from batchsafe.core.errors import EXIT_FAIL, BatchsafeError

import fcntl
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchsafe.core import layout
from batchsafe.core.canonical import canonical_bytes, hash_obj
from batchsafe.compiler.plan import Group, Plan
from batchsafe.core.atomic import atomic_write, fsync_dir

JOURNAL_VERSION = 1
RUN_FILE = layout.RUN
JOURNAL_FILE = "journal.jsonl"


class JournalError(BatchsafeError):
    """A run directory or journal that cannot be resumed safely (refused, never repaired)."""


class CoverageError(BatchsafeError):
    """The journal does not hold every plan sample exactly once (or not where the plan put it)."""

    exit_code = EXIT_FAIL


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (``batchsafe.core.atomic``)."""
    atomic_write(path, data)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a regular file may take a short write)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def repair_tail(path: Path) -> int:
    """Cut a file back to its last newline (drops a torn final line); return bytes removed.

    Used for the journal on resume and for the append-only volatile logs.
    """
    if not path.exists():
        return 0
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep == len(data):
        return 0
    with open(path, "r+b") as fh:
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    return len(data) - keep


# --- run.json ------------------------------------------------------------------


def run_info(plan: Plan, *, completed: bool = False) -> dict[str, Any]:
    """The content of ``run.json``: which plan this run directory belongs to (no timestamps)."""
    from batchsafe.core.version import __version__

    return {
        "batchsafe_version": __version__,
        "completed": completed,
        "experiment": plan.experiment.get("id"),
        "groups": len(plan.groups),
        "journal_version": JOURNAL_VERSION,
        "plan_hash": plan.plan_hash,
        "samples": len(plan.samples),
        "started": True,
    }


def write_run_info(run_dir: Path, plan: Plan, *, completed: bool = False) -> None:
    """Write ``run.json`` atomically."""
    write_atomic(run_dir / RUN_FILE, json.dumps(run_info(plan, completed=completed), indent=2,
                                                sort_keys=True).encode() + b"\n")


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """Read ``run.json``; JournalError when it is missing or unreadable."""
    path = run_dir / RUN_FILE
    try:
        info = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise JournalError(f"{run_dir} is not a batchsafe run directory (no {RUN_FILE})") from None
    except (OSError, ValueError) as exc:
        raise JournalError(f"{path}: unreadable: {exc}") from None
    if not isinstance(info, dict) or "plan_hash" not in info:
        raise JournalError(f"{path}: not a batchsafe run file")
    return info


def check_run_info(run_dir: Path, plan: Plan) -> dict[str, Any]:
    """Refuse to resume a run directory that belongs to another plan."""
    info = read_run_info(run_dir)
    if info["plan_hash"] != plan.plan_hash:
        raise JournalError(
            f"{run_dir} holds a run of plan {info['plan_hash']}, but the plan given is {plan.plan_hash}; "
            "resume it with the plan it was started with, or choose another --out"
        )
    if info.get("journal_version", JOURNAL_VERSION) > JOURNAL_VERSION:
        raise JournalError(f"{run_dir / RUN_FILE}: journal version {info['journal_version']} is newer "
                           f"than this batchsafe understands ({JOURNAL_VERSION})")
    return info


def claim_run_dir(plan: Plan, run_dir: Path, *, resume: bool) -> int:
    """Check the run directory is ours (writing run.json for a fresh run) and lock it.

    Without ``resume`` a non-empty directory is refused; with it, a directory holding
    another plan's run (or no run at all) is refused. Returns the fd holding an exclusive
    ``flock`` on ``run_dir/.lock`` (closing it releases the lock; so does any death of
    the process, kill -9 included), so two runs never write one journal.
    """
    occupied = run_dir.exists() and any(run_dir.iterdir())
    if occupied and not resume:
        raise JournalError(f"run directory {run_dir} is not empty; pass --resume to continue the run in it, "
                           "or choose another --out")
    if occupied:
        check_run_info(run_dir, plan)
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_run_info(run_dir, plan)  # first, so that a journal is always bound to its plan
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalError(f"another batchsafe run is using {run_dir}") from None
    return fd


# --- journal lines -------------------------------------------------------------


def entry_line(group: Group, records: list[dict[str, Any]], fillers: list[dict[str, Any]]) -> bytes:
    """The journal line of one completed group (canonical JSON + its own digest + newline)."""
    body = {"v": JOURNAL_VERSION, "group": group.id, "index": group.index,
            "records": records, "fillers": fillers}
    return canonical_bytes({**body, "digest": hash_obj(body)})


@dataclass
class JournalState:
    """What a journal says has been done."""

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Group id -> journal entry (without its digest), in journal order."""
    torn_bytes: int = 0
    """Length of a torn final line that was found (and truncated when repairing)."""


def _check_entry(entry: Any, lineno: int, groups: dict[str, Group]) -> dict[str, Any]:
    where = f"journal line {lineno}"
    if not isinstance(entry, dict) or "digest" not in entry:
        raise JournalError(f"{where}: not a journal entry")
    body = {k: v for k, v in entry.items() if k != "digest"}
    if hash_obj(body) != entry["digest"]:
        raise JournalError(f"{where}: digest does not match the content (the line was altered)")
    if body.get("v") != JOURNAL_VERSION:
        raise JournalError(f"{where}: journal version {body.get('v')!r} is not {JOURNAL_VERSION}")
    group = groups.get(body.get("group"))  # type: ignore[arg-type]
    if group is None:
        raise JournalError(f"{where}: group {body.get('group')!r} is not in the plan")
    if body.get("index") != group.index:
        raise JournalError(f"{where}: group {group.id} has index {body.get('index')!r}, the plan says {group.index}")
    want_samples = [(i, m.sample) for i, m in enumerate(group.members) if m.sample is not None]
    want_fillers = [i for i, m in enumerate(group.members) if m.sample is None]
    got_samples = [(r.get("position"), r.get("sample")) for r in body.get("records", [])]
    got_fillers = [r.get("position") for r in body.get("fillers", [])]
    if got_samples != want_samples or got_fillers != want_fillers:
        raise JournalError(f"{where}: the records of group {group.id} do not match the plan's members")
    return body


def read_journal(path: Path, plan: Plan, *, repair: bool = False) -> JournalState:
    """Read and verify a journal against the plan.

    A final line without its newline is a torn write (kill -9 during ``write``): it is
    ignored and, with ``repair=True``, truncated away. Everything else that does not
    verify raises JournalError naming the line.
    """
    state = JournalState()
    if not path.exists():
        return state
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    state.torn_bytes = len(data) - complete
    groups = {g.id: g for g in plan.groups}
    for lineno, raw in enumerate(data[:complete].splitlines(), start=1):
        try:
            entry = json.loads(raw)
        except ValueError:
            raise JournalError(f"{path}: journal line {lineno} is corrupt (not JSON); "
                               "it is not the last line, so it is not a torn write: refusing to resume") from None
        body = _check_entry(entry, lineno, groups)
        if body["group"] in state.entries:
            raise JournalError(f"{path}: journal line {lineno}: group {body['group']} is journaled twice")
        state.entries[body["group"]] = body
    if repair and state.torn_bytes:
        repair_tail(path)
    return state


class Journal:
    """Appender of journal lines: one ``write()`` per group, then fsync, before returning."""

    def __init__(self, path: Path) -> None:
        """Open (creating if needed) the journal at ``path`` for appending."""
        created = not path.exists()
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if created:
            fsync_dir(path.parent)  # the file's directory entry must survive a crash too

    def append(self, line: bytes) -> None:
        """Append one complete line durably (returns only after fsync)."""
        write_all(self._fd, line)
        os.fsync(self._fd)

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- outputs -------------------------------------------------------------------


def write_outputs(plan: Plan, run_dir: Path) -> dict[str, Path]:
    """Write ``outputs/samples.jsonl`` and ``outputs/fillers.jsonl`` from a complete journal.

    Canonical JSON lines sorted by (group index, position), written atomically. Checks
    coverage first: every plan sample exactly once, at its planned group/position/prompt
    (0 lost, 0 duplicated, 0 unknown), else CoverageError and nothing is written.
    """
    state = read_journal(run_dir / JOURNAL_FILE, plan)
    index = {g.id: g.index for g in plan.groups}
    missing = [g.id for g in plan.groups if g.id not in state.entries]
    if missing or state.torn_bytes:
        raise CoverageError(f"cannot finalise {run_dir}: {len(missing)} groups are not journaled")
    order = lambda r: (index[r["group"]], r["position"])
    records = sorted((r for e in state.entries.values() for r in e["records"]), key=order)
    fillers = sorted((r for e in state.entries.values() for r in e["fillers"]), key=order)
    counts = Counter(r["sample"] for r in records)
    planned = {s.id: s for s in plan.samples}
    lost = [sid for sid in planned if sid not in counts]
    dup = [sid for sid, n in counts.items() if n > 1]
    unknown = [sid for sid in counts if sid not in planned]
    misplaced = [r["sample"] for r in records if r["sample"] in planned
                 and (planned[r["sample"]].group, planned[r["sample"]].position, planned[r["sample"]].prompt)
                 != (r["group"], r["position"], r["prompt"])]
    if lost or dup or unknown or misplaced:
        raise CoverageError(f"coverage check failed for {run_dir}: {len(lost)} lost, {len(dup)} duplicated, "
                            f"{len(unknown)} not in the plan, {len(misplaced)} misplaced "
                            f"(first: {(lost + dup + unknown + misplaced)[0]})")
    paths = {"samples": run_dir / "outputs" / "samples.jsonl", "fillers": run_dir / "outputs" / "fillers.jsonl"}
    write_atomic(paths["samples"], b"".join(canonical_bytes(r) for r in records))
    write_atomic(paths["fillers"], b"".join(canonical_bytes(r) for r in fillers))
    return paths
