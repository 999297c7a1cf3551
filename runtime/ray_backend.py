"""Ray backend: one actor per shard, each writing a partial run, then one merge in the driver.

The driver shards the plan (``runtime/shard.py``), starts one actor per non-empty shard
that is not already complete, and waits. Each actor holds its engine for as long as its
shard runs (``num_gpus`` from the manifest when the engine needs GPUs, CPU otherwise) and
runs :func:`~batchsafe.runtime.partial.run_shard` with ``resume=True``, so:

* a worker that dies (OOM, SIGKILL, node loss) is restarted by Ray (``max_restarts``) and
  its task retried (``max_task_retries``); the new process resumes the shard's fsynced
  journal: groups journaled before the death are kept, the group that was running is run
  again, nothing is lost or doubled;
* a driver that is killed takes its local cluster with it; running the same command
  again (``--resume``) skips completed shards (``partial.json``) and resumes the others.

Partials live in ``<out>.shards/shard-<i>-of-<n>/`` (on each worker's node; with no shared
filesystem the driver receives each finished partial's files from its actor). When every
shard is complete the driver merges them into ``<out>`` (``runtime/merge.py``).

A local cluster is started on 127.0.0.1 with usage stats off and no dashboard; with
``address`` the driver joins an existing cluster (``ray start --head`` on the head node).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchsafe.compiler.plan import Plan
from batchsafe.core.atomic import atomic_write
from batchsafe.core.errors import EXIT_USAGE, BatchsafeError
from batchsafe.runtime import journal as jr
from batchsafe.runtime.merge import MergeSummary, merge_partials
from batchsafe.runtime.partial import PARTIAL_FILE, PartialError, partial_dir_name, read_partial, run_shard
from batchsafe.runtime.shard import ShardManifest, shard_plan

MAX_RESTARTS = 3
"""Worker deaths tolerated per shard before the run fails (resumable)."""
POLL_S = 0.5


class RayBackendError(BatchsafeError):
    """Ray is missing, or the output/partials directories are not usable as asked."""

    exit_code = EXIT_USAGE


@dataclass
class RayRunSummary:
    """What a Ray run did."""

    out_dir: Path
    partials_dir: Path
    manifest: ShardManifest
    merge: MergeSummary | None = None
    shards_run: list[int] = field(default_factory=list)
    """Shards that ran in this call (the others were complete already)."""
    restarts: dict[int, int] = field(default_factory=dict)
    """Shard -> worker processes seen replaced (deaths recovered)."""
    already_complete: bool = False


class ShardWorker:
    """The actor: one shard's partial run in one worker process, holding its engine."""

    def __init__(self, plan_bytes: bytes, shard: int, workers: int, run_dir: str) -> None:
        """Parse the plan (the worker needs nothing else from the driver)."""
        from batchsafe.compiler.plan import Plan as _Plan

        self.plan = _Plan.model_validate_json(plan_bytes)
        self.shard, self.workers, self.run_dir = shard, workers, Path(run_dir)
        self._offset, self._groups, self._samples = 0, 0, 0

    def pid(self) -> int:
        """This worker's process id (the driver notices restarts by it; tests kill it)."""
        return os.getpid()

    def run(self) -> dict[str, bytes]:
        """Run (or resume) the shard; return the finished partial's files by relative name."""
        run_shard(self.plan, self.run_dir, self.shard, self.workers, resume=True, progress=False)
        return {p.relative_to(self.run_dir).as_posix(): p.read_bytes() for p in sorted(self.run_dir.rglob("*"))
                if p.is_file() and not p.is_symlink() and p.name != ".lock"}

    def progress(self) -> tuple[int, int, int]:
        """(pid, groups journaled, samples journaled), read incrementally from the shard's journal."""
        path = self.run_dir / jr.JOURNAL_FILE
        try:
            with open(path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return os.getpid(), 0, 0
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            self._groups += 1
            self._samples += line.count(b'"sample":')
        self._offset += end
        return os.getpid(), self._groups, self._samples


def _ray(local: bool) -> Any:
    """Import Ray with usage stats off and, for a local cluster, every address on the loopback."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # before import: never phone home
    if local:
        # Ray reads this flag at import: when off, it takes 127.0.0.1 as the node address instead
        # of the address of the interface its route to a public IP leaves by (it would bind there).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as exc:
        raise RayBackendError(f"--backend ray needs Ray: pip install 'batchsafe[ray]' ({exc})") from None
    return ray


def _init(ray: Any, address: str | None, num_cpus: int | None, num_gpus: int | None) -> bool:
    """Start a local cluster on 127.0.0.1 (True: ours to shut down) or join ``address``.

    The local cluster has ``num_cpus`` (default 2) CPU slots; each worker takes one, so
    shards beyond that wait for a finished worker to be released.
    """
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
        return True
    ray.init(address="local", num_cpus=num_cpus or 2, num_gpus=num_gpus, include_dashboard=False,
             _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)
    return True


def _receive(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write a finished partial's files where the driver can merge them (skipped when already there)."""
    for rel, data in files.items():
        dest = run_dir / rel
        if not (dest.is_file() and dest.read_bytes() == data):
            atomic_write(dest, data)


def run_ray(plan: Plan, out_dir: Path, *, workers: int, resume: bool = False, address: str | None = None,
            partials_dir: Path | None = None, num_cpus: int | None = None, gpus: float | None = None,
            progress: bool = True, max_restarts: int = MAX_RESTARTS,
            on_poll: Callable[[dict[int, tuple[int, int, int]]], None] | None = None) -> RayRunSummary:
    """Run ``plan`` over ``workers`` Ray actors and merge into ``out_dir``.

    ``gpus``: GPUs per worker instead of the manifest's. ``on_poll``: called in the driver
    at every poll with shard -> (pid, groups, samples) of the running workers.
    """
    out_dir = Path(out_dir).absolute()
    pdir = Path(partials_dir or out_dir.with_name(out_dir.name + ".shards")).absolute()
    manifest = shard_plan(plan, workers)
    summary = RayRunSummary(out_dir=out_dir, partials_dir=pdir, manifest=manifest)
    if (out_dir / jr.RUN_FILE).is_file():
        if not resume:
            raise RayBackendError(f"{out_dir} is not empty; pass --resume to continue, or choose another --out")
        if jr.check_run_info(out_dir, plan).get("completed"):
            summary.already_complete = True
            return summary
        # Merge writes --out whole (renamed into place), so an unfinished run there is someone else's.
        raise RayBackendError(f"{out_dir} holds an unfinished single-process run; resume it with "
                              "`batchsafe run PLAN --out DIR --resume`, or choose another --out")
    started = [d for d in (pdir / partial_dir_name(s.index, workers) for s in manifest.shards) if d.exists()]
    if started and not resume:
        raise RayBackendError(f"{pdir} holds partial runs; pass --resume to continue them, or choose another --out")
    todo = []
    for s in manifest.shards:
        d = pdir / partial_dir_name(s.index, workers)
        if s.groups and not _complete(d, plan):
            todo.append(s)
    if todo:
        _run_actors(plan, manifest, todo, pdir, summary, address=address, num_cpus=num_cpus, gpus=gpus,
                    progress=progress, max_restarts=max_restarts, on_poll=on_poll)
    dirs = [pdir / partial_dir_name(s.index, workers) for s in manifest.shards if s.groups]
    summary.merge = merge_partials(plan, dirs, out_dir)
    return summary


def _complete(run_dir: Path, plan: Plan) -> bool:
    if not (run_dir / PARTIAL_FILE).exists():
        return False
    try:
        read_partial(run_dir, plan)
        return True
    except PartialError:
        return False  # resumed by its worker, which refuses it with the reason if it cannot


def _run_actors(plan: Plan, manifest: ShardManifest, todo: list[Any], pdir: Path, summary: RayRunSummary, *,
                address: str | None, num_cpus: int | None, gpus: float | None, progress: bool, max_restarts: int,
                on_poll: Callable[[dict[int, tuple[int, int, int]]], None] | None) -> None:
    ray = _ray(local=not address)
    from ray.exceptions import GetTimeoutError, RayActorError, RayError

    from batchsafe.runtime.executor import RunError, _progress

    ours = _init(ray, address, num_cpus, None)
    # max_concurrency=2: progress() answers while run() holds the other thread.
    Worker = ray.remote(max_restarts=max_restarts, max_task_retries=max_restarts, max_concurrency=2)(ShardWorker)
    plan_bytes = plan.to_bytes()
    actors: dict[int, Any] = {}
    try:
        for s in todo:
            need = s.gpus if gpus is None else gpus
            d = pdir / partial_dir_name(s.index, manifest.workers)
            actors[s.index] = Worker.options(num_cpus=1, num_gpus=need).remote(plan_bytes, s.index, manifest.workers,
                                                                               str(d))
        refs = {actors[i].run.remote(): i for i in actors}
        pids: dict[int, int] = {}
        prog = _progress(progress)
        bars = {s.index: prog.add_task(f"shard {s.index}", total=s.samples) for s in todo}
        with prog:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S)
                for ref in done:
                    i = refs.pop(ref)
                    try:
                        files = ray.get(ref)
                    except RayActorError as exc:
                        raise RunError(f"shard {i}: its worker died {max_restarts + 1} times ({exc}); the partial "
                                       "journal is kept: run the same command with --resume") from None
                    except RayError as exc:
                        raise RunError(f"shard {i} failed: {exc}") from None
                    _receive(pdir / partial_dir_name(i, manifest.workers), files)
                    ray.kill(actors.pop(i), no_restart=True)  # frees its CPU/GPU for a shard still queued
                    summary.shards_run.append(i)
                    prog.update(bars[i], completed=manifest.shards[i].samples)
                state: dict[int, tuple[int, int, int]] = {}
                for i in set(refs.values()):
                    try:
                        state[i] = ray.get(actors[i].progress.remote(), timeout=1)
                    except (GetTimeoutError, RayError):
                        continue  # restarting: it answers again once its new process is up
                    if pids.get(i) not in (None, state[i][0]):
                        summary.restarts[i] = summary.restarts.get(i, 0) + 1
                    pids[i] = state[i][0]
                    prog.update(bars[i], completed=state[i][2])
                if on_poll is not None and state:
                    on_poll(state)
    finally:
        for a in actors.values():
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # already gone
                pass
        if ours:
            ray.shutdown()
