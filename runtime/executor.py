"""The executor: run exactly the plan, record exactly what happened, survive kill -9.

Groups run in plan order. After each group ONE journal line (its scored records and,
separately, its fillers) is appended with a single write and fsynced before the next
group starts, so the journal is always a resumable prefix of the run. Everything that
varies between two identical runs (timings, throughput, warmups, engine descriptions,
human logs) goes under ``volatile/`` and ``logs/``; ``journal.jsonl`` and ``outputs/``
hold deterministic content only, so two runs of one plan on one machine give
byte-identical outputs.

Layout of a run directory::

    run.json                 plan_hash, batchsafe version, started/completed (atomic)
    journal.jsonl            one fsynced line per completed group (append-only)
    outputs/samples.jsonl    canonical records sorted by (group index, position)
    outputs/fillers.jsonl    non-scored co-batch members, same order
    environment.json         machine, packages, engines (written when the run completes)
    volatile/timings.jsonl   one line per group: wall time, ISO times, tokens/s, attempts
    volatile/engines.jsonl   one line per engine instance: binding, load/warmup, describe()
    logs/run.log             human log
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batchsafe.compiler.plan import Group, Plan
from batchsafe.core import layout
from batchsafe.core.errors import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_USAGE, BatchsafeError
from batchsafe.runtime import journal as jr
from batchsafe.runtime.bindings import (Binding, binding_for, build_requests, check_results, default_engine_factory,
                              group_records, warmup_requests)
from batchsafe.runtime.composition import is_composition, run_composition
from batchsafe.runtime.engine import Engine, EngineError, GenResult


class RunError(BatchsafeError):
    """The run stopped on a failure (engine error, coverage check); the journal stays resumable."""

    exit_code = EXIT_FAIL


class RunSetupError(RunError):
    """The run could not start: bad run directory, plan mismatch, unreadable journal."""

    exit_code = EXIT_USAGE


class RunInterrupted(BatchsafeError):
    """The run stopped cleanly before the end (Ctrl-C or ``stop_after_groups``); resume continues it."""

    def __init__(self, summary: RunSummary, *, abandoned: bool = False) -> None:
        """``abandoned``: a second Ctrl-C dropped the group that was running (nothing partial kept)."""
        super().__init__(f"interrupted after {summary.groups_done}/{summary.groups_total} groups")
        self.summary = summary
        self.abandoned = abandoned

    exit_code = EXIT_INTERRUPTED

    def render(self) -> list[str]:
        """How far the run got and how to resume it."""
        s = self.summary
        return [f"interrupted after {s.groups_done}/{s.groups_total} groups; run the same command again to resume"]


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff for transient engine errors."""

    attempts: int = 4
    """Tries per group in all (the first one included)."""
    base_delay_s: float = 0.5
    """Delay after the first failure; doubled after each further one (0.5, 1, 2 s)."""
    max_delay_s: float = 8.0
    """Cap of one delay."""
    sleep: Callable[[float], None] = time.sleep
    """Injectable for tests."""

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after ``failed_attempts`` consecutive failures."""
        return min(self.max_delay_s, self.base_delay_s * 2 ** (failed_attempts - 1))


@dataclass
class RunSummary:
    """What a call to :func:`run_plan` did."""

    run_dir: Path
    plan_hash: str
    groups_total: int
    groups_done: int
    """Groups in the journal (this call's and earlier ones')."""
    groups_run: int = 0
    """Groups run by this call."""
    samples_total: int = 0
    samples_done: int = 0
    """Scored samples journaled so far."""
    fillers_done: int = 0
    warmups: int = 0
    """Warmup requests run by this call (not recorded as samples)."""
    retries: int = 0
    """Transient failures retried by this call."""
    complete: bool = False
    """Every group is done and outputs/ is written."""
    outputs: dict[str, Path] = field(default_factory=dict)
    """Output name -> path (samples, fillers, environment), once complete."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class _Log:
    """Human log lines in logs/run.log (volatile; flushed per line, not fsynced)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        jr.repair_tail(path)
        self._fh = open(path, "a", encoding="utf-8")

    def __call__(self, msg: str) -> None:
        self._fh.write(f"{_now()} {msg}\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class _Stop:
    """SIGINT handling: the first Ctrl-C asks to stop after the current group, the second
    abandons it at once, except inside the journal write (deferred to right after it)."""

    def __init__(self) -> None:
        self.requests = 0
        self.critical = False
        self.pending = False

    def handler(self, signum: int, frame: Any) -> None:
        self.requests += 1
        if self.requests == 1:
            # os.write: print() from a signal handler can hit a reentrant-call error.
            os.write(2, b"\nstopping after the current group (Ctrl-C again to abandon it)\n")
        elif self.critical:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def leave_critical(self) -> None:
        self.critical = False
        if self.pending:
            raise KeyboardInterrupt


def _append_jsonl(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        fh.write(json.dumps(obj, sort_keys=True).encode() + b"\n")


def _with_retries(fn: Callable[[], Any], policy: RetryPolicy, on_retry: Callable[[int, Exception, float], None]
                  ) -> tuple[Any, int]:
    """Call ``fn``; retry transient EngineErrors with backoff. Returns (value, attempts).

    Raises ``_Failed`` with the last error; anything but a transient EngineError is permanent.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn(), attempt
        except EngineError as exc:
            if exc.transient and attempt < policy.attempts:
                delay = policy.delay(attempt)
                on_retry(attempt, exc, delay)
                policy.sleep(delay)
                continue
            raise _Failed(exc, attempt) from exc
        except Exception as exc:  # a bug or crash inside an engine is not retried
            raise _Failed(exc, attempt) from exc


class _Failed(Exception):
    def __init__(self, exc: Exception, attempts: int) -> None:
        super().__init__(str(exc))
        self.exc, self.attempts = exc, attempts

    def describe(self) -> str:
        if isinstance(self.exc, EngineError) and self.exc.transient:
            return f"{self.exc} (transient, gave up after {self.attempts} attempts)"
        return _what(self.exc)


def _progress(enabled: bool) -> Any:
    """Samples done/total, samples/s and ETA on stderr; off when not asked for or not a TTY (CI)."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                               TimeRemainingColumn)
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.2f} samples/s" if speed else "- samples/s")

    prog = Progress(TextColumn("[bold]run"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"), Rate(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True),
                    disable=not (enabled and sys.stderr.isatty()))
    return prog


def finalize(plan: Plan, run_dir: Path) -> dict[str, Path]:
    """Write outputs/ (after the coverage check), environment.json, and mark run.json completed.

    Raises RunError when a plan sample is missing, duplicated, unknown or misplaced.
    """
    try:
        paths = jr.write_outputs(plan, run_dir)
    except jr.CoverageError as exc:
        raise RunError(str(exc)) from None
    from batchsafe.runtime.environment import capture_environment, engine_records

    paths["environment"] = run_dir / layout.ENVIRONMENT
    env = capture_environment(engine_records(run_dir / "volatile" / "engines.jsonl"))
    jr.write_atomic(paths["environment"], json.dumps(env, indent=2, sort_keys=True).encode() + b"\n")
    jr.write_run_info(run_dir, plan, completed=True)
    return paths


def _preflight(factory: Any, groups: list[Group]) -> None:
    """Ask the factory (when it offers ``preflight``) what would stop these groups; raise RunError."""
    check = getattr(factory, "preflight", None)
    problems = check(groups) if (groups and callable(check)) else []
    if problems:
        raise RunError("cannot start the run:\n  " + "\n  ".join(problems))


def run_plan(plan: Plan, run_dir: Path, *, resume: bool = False,
             engine_factory: Callable[[Binding], Engine] | None = None, progress: bool = True,
             stop_after_groups: int | None = None, retry: RetryPolicy | None = None,
             groups: Collection[str] | None = None) -> RunSummary:
    """Run every group of ``plan`` not yet journaled in ``run_dir``, then finalise the outputs.

    ``groups``: run only these group ids (one shard, see ``runtime/shard.py``). The run
    directory is then a partial run: nothing is finalised (``runtime/merge.py`` does that
    for all shards at once) and ``complete`` means every selected group is journaled.

    Raises RunSetupError (refused: occupied directory, other plan, bad journal),
    RunError (an engine failed permanently or ran out of retries; resumable), or
    RunInterrupted (Ctrl-C or ``stop_after_groups``; resumable). Returns the summary
    of a complete run.
    """
    run_dir = Path(run_dir)
    policy = retry or RetryPolicy()
    factory = engine_factory or default_engine_factory(plan)
    if hasattr(factory, "run_dir"):  # launched servers keep their logs and records in the run
        factory.run_dir = run_dir
    ordered = sorted(plan.groups, key=lambda g: g.index)
    if groups is not None:
        wanted = frozenset(groups)
        ordered = [g for g in ordered if g.id in wanted]
    fresh = not (run_dir.exists() and any(run_dir.iterdir()))
    if fresh:  # fail early and leave nothing behind: the user fixes the cause and runs the same command
        _preflight(factory, ordered)
    try:
        lock = jr.claim_run_dir(plan, run_dir, resume=resume)
    except jr.JournalError as exc:
        raise RunSetupError(str(exc)) from None
    log = _Log(run_dir / "logs" / "run.log")
    try:
        try:
            state = jr.read_journal(run_dir / jr.JOURNAL_FILE, plan, repair=True)
        except jr.JournalError as exc:
            raise RunSetupError(str(exc)) from None
        for name in ("timings.jsonl", "engines.jsonl"):
            jr.repair_tail(run_dir / "volatile" / name)
        info = jr.read_run_info(run_dir)
        from batchsafe.core.version import __version__

        log(f"session start: plan {plan.plan_hash}, resume={resume}, {len(state.entries)}/{len(plan.groups)} "
            f"groups already journaled" + (f", truncated a torn journal line of {state.torn_bytes} bytes"
                                           if state.torn_bytes else ""))
        if info.get("batchsafe_version") != __version__:
            log(f"warning: run started by batchsafe {info.get('batchsafe_version')}, resumed by {__version__}")
        if groups is not None and (stray := sorted(set(state.entries) - wanted)):
            raise RunSetupError(f"{run_dir} journals group {stray[0]} (and {len(stray) - 1} more) outside the "
                                "shard asked for: it is another shard's partial run")
        pending = [g for g in ordered if g.id not in state.entries]
        total = len(plan.samples) if groups is None else sum(1 for g in ordered for m in g.members if m.sample)
        summary = RunSummary(run_dir=run_dir, plan_hash=plan.plan_hash, groups_total=len(ordered),
                             groups_done=len(state.entries), samples_total=total,
                             samples_done=sum(len(e["records"]) for e in state.entries.values()),
                             fillers_done=sum(len(e["fillers"]) for e in state.entries.values()))
        if not fresh:
            _preflight(factory, pending)
        _Session(plan, run_dir, factory, policy, summary, log).run(pending, progress, stop_after_groups)
        if summary.groups_done < summary.groups_total:
            raise RunInterrupted(summary)
        if groups is not None:  # a shard: merge finalises once every shard is journaled
            summary.complete = True
            log(f"shard complete: {summary.samples_done} samples in {summary.groups_total} groups")
            return summary
        summary.outputs = finalize(plan, run_dir)
        summary.complete = True
        log(f"complete: {summary.samples_done} samples, {summary.fillers_done} fillers, "
            f"{summary.groups_total} groups")
        return summary
    except RunInterrupted as exc:
        log(f"interrupted after {exc.summary.groups_done}/{exc.summary.groups_total} groups"
            + (" (the running group was abandoned)" if exc.abandoned else ""))
        raise
    except RunError as exc:
        log(f"error: {exc}")
        raise
    finally:
        log.close()
        os.close(lock)  # also releases the flock


class _Session:
    """One call's group loop: engines by binding, retries, journal, volatile logs, Ctrl-C."""

    def __init__(self, plan: Plan, run_dir: Path, factory: Callable[[Binding], Engine], policy: RetryPolicy,
                 summary: RunSummary, log: _Log) -> None:
        self.plan, self.run_dir, self.factory, self.policy = plan, run_dir, factory, policy
        self.summary, self.log = summary, log
        self.prompts = {p.id: p for p in plan.prompts}
        self.samples = {s.id: s for s in plan.samples}
        self.engine: Engine | None = None
        self.binding: Binding | None = None

    def run(self, pending: list[Group], progress: bool, stop_after: int | None) -> None:
        """Run ``pending`` in order; stop early on Ctrl-C or after ``stop_after`` groups."""
        stop = _Stop()
        main = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGINT, stop.handler) if main else None
        s = self.summary
        prog = _progress(progress)
        task = prog.add_task("run", total=s.samples_total, completed=s.samples_done)
        try:
            with prog, jr.Journal(self.run_dir / jr.JOURNAL_FILE) as journal:
                for group in pending:
                    if stop.requests or (stop_after is not None and s.groups_run >= stop_after):
                        break
                    want = binding_for(self.plan, group)
                    if want != self.binding or self.engine is None:
                        self._close()
                        self.engine = self._start_engine(want, group)
                        self.binding = want
                    started, t0 = _now(), time.perf_counter()
                    results, attempts = self._run_group(group, self.engine, want)
                    wall = time.perf_counter() - t0
                    records, fillers = group_records(self.plan, group, results, self.samples)
                    line = jr.entry_line(group, records, fillers)
                    stop.critical = True  # a second Ctrl-C waits until the line is durable
                    journal.append(line)
                    s.groups_done, s.groups_run = s.groups_done + 1, s.groups_run + 1
                    s.samples_done, s.fillers_done = s.samples_done + len(records), s.fillers_done + len(fillers)
                    stop.leave_critical()
                    tokens = sum(r.completion_tokens for r in results)
                    _append_jsonl(self.run_dir / "volatile" / "timings.jsonl", {
                        "group": group.id, "index": group.index, "wall_s": round(wall, 6), "started": started,
                        "ended": _now(), "attempts": attempts, "members": len(results),
                        "completion_tokens": tokens, "tokens_per_s": round(tokens / wall, 3) if wall > 0 else None,
                        **_batching_evidence(results)})
                    prog.update(task, completed=s.samples_done)
        except KeyboardInterrupt:
            raise RunInterrupted(s, abandoned=True) from None
        finally:
            self._close()
            if main:
                signal.signal(signal.SIGINT, old)

    def _close(self) -> None:
        if self.engine is not None:
            engine, self.engine = self.engine, None
            # Describe again at the end: some facts are only measured while groups run
            # (e.g. whether a server really ran concurrent requests in parallel).
            try:
                desc: Any = engine.describe()
            except Exception as exc:  # informative, never fatal
                desc = {"error": _what(exc)}
            _append_jsonl(self.run_dir / "volatile" / "engines.jsonl",
                          {"binding": self.binding.as_dict() if self.binding else None, "closed": _now(),
                           "describe": desc})
            engine.close()

    def _run_group(self, group: Group, engine: Engine, binding: Binding) -> tuple[list[GenResult], int]:
        where = _where(group)
        requests = build_requests(self.plan, group, self.prompts)

        def on_retry(n: int, exc: Exception, delay: float) -> None:
            self.summary.retries += 1
            self.log(f"{where}: attempt {n} failed ({exc}); retrying in {delay:g} s")

        call = lambda: check_results(requests, engine.run_group(list(requests), group.mode))  # noqa: E731
        if is_composition(self.plan, group):  # targets on the plan's schedule under background load
            call = lambda: check_results(requests, run_composition(self.plan, group, engine, self.run_dir))  # noqa: E731
        try:
            return _with_retries(call, self.policy, on_retry)
        except _Failed as f:
            s = self.summary
            raise RunError(f"{where} failed on engine {binding.label()}: {f.describe()}; {s.groups_done}/"
                           f"{s.groups_total} groups are journaled in {self.run_dir}: fix the cause and resume "
                           "with --resume") from f.exc

    def _start_engine(self, binding: Binding, group: Group) -> Engine:
        """Build the engine of a binding, run its warmups, record both in the volatile logs."""
        where = _where(group)
        t0 = time.perf_counter()
        try:
            engine = self.factory(binding)
        except Exception as exc:  # any failure to build is permanent; nothing ran yet
            raise RunError(f"could not start engine {binding.label()} for {where}: {_what(exc)}") from exc
        load_s = time.perf_counter() - t0
        warm = warmup_requests(self.plan, group.phase, self.prompts)
        t1 = time.perf_counter()
        try:
            if warm:
                _with_retries(lambda: engine.warmup(warm), self.policy,
                              lambda n, e, d: self.log(f"warmup attempt {n} failed ({e}); retrying in {d:g} s"))
        except _Failed as f:
            engine.close()
            raise RunError(f"warmup before {where} failed on engine {binding.label()}: {f.describe()}") from f.exc
        self.summary.warmups += len(warm)
        try:
            desc: Any = engine.describe()
        except Exception as exc:  # a description is informative, never fatal
            desc = {"error": _what(exc)}
        _append_jsonl(self.run_dir / "volatile" / "engines.jsonl",
                      {"binding": binding.as_dict(), "started": _now(), "load_s": round(load_s, 6),
                       "warmups": len(warm), "warmup_s": round(time.perf_counter() - t1, 6), "describe": desc})
        self.log(f"engine {binding.label()} loaded in {load_s:.2f} s; {len(warm)} warmup requests")
        return engine


#: Per-group facts an engine measured on the server side (vLLM /metrics), kept in timings.jsonl.
BATCHING_KEYS = ("server_running_max", "server_waiting_max", "metrics_samples")


def _batching_evidence(results: list[GenResult]) -> dict[str, Any]:
    """What the server reported while the group ran (absent when the engine measures nothing)."""
    vol = results[0].volatile if results else {}
    got = {k: vol[k] for k in BATCHING_KEYS if k in vol}
    return {"batching": got} if got else {}


def _where(group: Group) -> str:
    return f"group {group.id} (index {group.index}, phase {group.phase})"


def _what(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
