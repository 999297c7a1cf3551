"""Run one composition group: targets arrive on the plan's schedule into a server under background load.

A composition group is one (model, load level) session of a ``composition`` phase (see
``compiler.composition``). :func:`run_composition`:

1. starts ``load`` background slots; each sends its locked prompt sequence one request at
   a time (closed loop: the next one goes out as soon as the previous answer is in), so
   ``load`` background requests are in flight for the whole session;
2. submits each target at its planned arrival offset (seconds from the session start),
   each from its own thread (independent clients);
3. when every target has its answer, stops the slots (each finishes its request in flight)
   and returns the targets' results in the group's member order.

What really happened is recorded, never assumed: for every target, how many other targets
and background requests the client had in flight when it was submitted, when it finished
and at most while it ran; and the server's own view, ``vllm:num_requests_running`` /
``_waiting`` sampled from ``/metrics`` through the session (running at submit, most while
it ran). That goes to ``volatile/composition.jsonl`` (one line per finished group; a
retried or resumed group may add another line, the last one counts) and the results'
volatile, never into outputs: targets' outputs stay deterministic-comparable, background
outputs are only digested there.

Resume: the executor journals the group only after this returns, so a session killed
half-way is run again whole on resume (no target lost or journaled twice).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from bisect import bisect_right
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batchsafe.compiler.composition import plan_schedule
from batchsafe.compiler.plan import Group, Plan
from batchsafe.runtime.bindings import build_requests
from batchsafe.runtime.engine import Engine, EngineError, GenRequest, GenResult

VOLATILE_FILE = "volatile/composition.jsonl"
"""Per-session co-residency records (volatile: timing-dependent)."""
POLL_S = 0.1
"""Interval of the /metrics samples (a page render costs the server CPU; see vllm_metrics.POLL_S)."""


def is_composition(plan: Plan, group: Group) -> bool:
    """Whether ``group`` belongs to a composition phase (its plan summary locks a schedule)."""
    return group.condition.load is not None and plan_schedule(plan, group.phase) is not None


class _Tracker:
    """Client-side in-flight counts, and per target the most it saw while it ran."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inflight: dict[str, str] = {}  # key -> "target" | "background"
        self.max_seen: dict[str, dict[str, int]] = {}

    def _counts(self, exclude: str) -> dict[str, int]:
        kinds = [k for key, k in self.inflight.items() if key != exclude]
        return {"targets": kinds.count("target"), "background": kinds.count("background")}

    def start(self, key: str, kind: str) -> dict[str, int]:
        with self.lock:
            self.inflight[key] = kind
            for tkey in self.max_seen:  # every target in flight now sees one more
                if tkey in self.inflight:
                    c = self._counts(tkey)
                    m = self.max_seen[tkey]
                    m["targets"], m["background"] = max(m["targets"], c["targets"]), max(m["background"], c["background"])
            counts = self._counts(key)
            if kind == "target":
                self.max_seen[key] = dict(counts)
            return counts

    def finish(self, key: str) -> dict[str, int]:
        with self.lock:
            counts = self._counts(key)
            self.inflight.pop(key, None)
            return counts


class _ServerSeries:
    """``/metrics`` samples (time, running, waiting) through a session; empty for servers without it."""

    def __init__(self, base_url: str | None, model: str | None, t0: float) -> None:
        self.url, self.model, self.t0 = (base_url.rstrip("/") + "/metrics") if base_url else None, model, t0
        self.times: list[float] = []
        self.values: list[tuple[float | None, float | None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        import httpx

        from batchsafe.runtime.engines.vllm_metrics import parse_gauges

        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while not self._stop.is_set():
                try:
                    r = client.get(self.url)  # type: ignore[arg-type]
                except httpx.HTTPError:
                    r = None
                if r is not None and r.status_code == 404:
                    return
                if r is not None and r.status_code == 200:
                    running, waiting = parse_gauges(r.text, self.model)
                    if running is not None:
                        self.times.append(time.perf_counter() - self.t0)
                        self.values.append((running, waiting))
                self._stop.wait(POLL_S)

    def __enter__(self) -> _ServerSeries:
        if self.url:
            self._thread = threading.Thread(target=self._loop, name="batchsafe-composition-metrics", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def view(self, start: float, end: float) -> dict[str, Any]:
        """The server's counts at ``start`` (last sample before it) and the most during [start, end]."""
        if not self.times:
            return {"server_running_at_submit": None, "server_running_max": None, "server_waiting_max": None}
        i = bisect_right(self.times, start) - 1
        at = self.values[i][0] if i >= 0 else None
        inside = [v for t, v in zip(self.times, self.values) if start <= t <= end]
        if i >= 0:
            inside.append(self.values[i])
        run = [v[0] for v in inside if v[0] is not None]
        wait = [v[1] for v in inside if v[1] is not None]
        return {"server_running_at_submit": None if at is None else int(at),
                "server_running_max": int(max(run)) if run else None,
                "server_waiting_max": int(max(wait)) if wait else None}


def _sender(engine: Engine) -> Callable[[GenRequest], GenResult]:
    """One request, one answer. On a vLLM server: one chat call on its own connection (many
    may run at once, and no per-call /metrics sampler is started); elsewhere: the engine's
    sequential path (fakes and other engines in tests)."""
    client = getattr(engine, "client", None)
    if client is not None and all(hasattr(engine, a) for a in ("served_model", "_messages", "_sampling", "_chat_result")):
        def send(req: GenRequest) -> GenResult:
            call = client.prepare("POST", "/v1/chat/completions", {"model": engine.served_model,  # type: ignore[attr-defined]
                                                                     "messages": engine._messages(req),  # type: ignore[attr-defined]
                                                                     **engine._sampling(req)})  # type: ignore[attr-defined]
            body, timing = call.exchange()
            return engine._chat_result(req, body, {"latency_s": timing["recv"] - timing["send"]})  # type: ignore[attr-defined]
        return send
    return lambda req: engine.run_group([req], "sequential")[0]


def run_composition(plan: Plan, group: Group, engine: Engine, run_dir: Path | None) -> list[GenResult]:
    """Run the session of ``group`` (see the module docstring); results in member order.

    Raises the first EngineError of a target or background request (transient ones are
    retried by the executor: the whole session runs again).
    """
    sched = plan_schedule(plan, group.phase)
    if sched is None or group.condition.load is None:
        raise EngineError(f"group {group.id} is not a composition group")
    level = int(group.condition.load)
    offsets = {t["prompt"]: float(t["offset_s"]) for t in sched["targets"]}
    slots: list[list[str]] = sched["background"].get(str(level), [])
    if len(slots) != level:
        raise EngineError(f"the plan locks {len(slots)} background slots for load {level} in phase {group.phase}")
    prompts = {p.id: p for p in plan.prompts}
    targets = build_requests(plan, group, prompts)
    bg_base = [_bg_request(plan, prompts, pid) for pid in {p for seq in slots for p in seq}]
    bg_by_prompt = {r[0]: r[1] for r in bg_base}
    send = _sender(engine)
    tracker = _Tracker()
    stop = threading.Event()
    errors: list[BaseException] = []
    results: dict[str, GenResult] = {}
    trecs: dict[str, dict[str, Any]] = {}
    brecs: list[dict[str, Any]] = []
    started = datetime.now(UTC).isoformat(timespec="milliseconds")
    t0 = time.perf_counter()
    base_url = getattr(getattr(engine, "client", None), "base_url", None)
    series = _ServerSeries(base_url, getattr(engine, "served_model", None), t0)

    def background(slot: int, seq: list[str]) -> None:
        k = 0
        while not stop.is_set() and not errors:
            pid = seq[k % len(seq)]
            key = f"background:{group.id}:{slot}:{k}"
            req = dataclasses.replace(bg_by_prompt[pid], key=key)
            sub = tracker.start(key, "background")
            ts = time.perf_counter() - t0
            try:
                res = send(req)
            except BaseException as exc:  # recorded and re-raised by the session
                errors.append(exc)
                stop.set()  # wakes targets still waiting for their offset: the session is lost
                return
            finally:
                tracker.finish(key)
            brecs.append({"slot": slot, "n": k, "prompt": pid, "submit_s": round(ts, 4),
                          "finish_s": round(time.perf_counter() - t0, 4), "in_flight_at_submit": sub,
                          "completion_tokens": res.completion_tokens,
                          "output_sha256": "sha256:" + hashlib.sha256(res.text.encode()).hexdigest()})
            k += 1

    def target(req: GenRequest, prompt: str) -> None:
        planned = offsets[prompt]
        delay = planned - (time.perf_counter() - t0)
        if delay > 0 and stop.wait(delay):
            return
        if errors:
            return
        sub = tracker.start(req.key, "target")
        ts = time.perf_counter() - t0
        try:
            res = send(req)
        except BaseException as exc:
            errors.append(exc)
            stop.set()
            return
        finally:
            fin = tracker.finish(req.key)
        tf = time.perf_counter() - t0
        results[req.key] = res
        trecs[req.key] = {"sample": req.key, "prompt": prompt, "planned_offset_s": planned, "submit_s": round(ts, 4),
                          "lateness_s": round(ts - planned, 4), "finish_s": round(tf, 4), "in_flight_at_submit": sub,
                          "in_flight_at_finish": fin, "in_flight_max": dict(tracker.max_seen.get(req.key, {})),
                          "completion_tokens": res.completion_tokens}

    with series:
        bg_threads = [threading.Thread(target=background, args=(j, seq), daemon=True, name=f"composition-bg-{j}")
                      for j, seq in enumerate(slots)]
        for th in bg_threads:
            th.start()
        t_threads = [threading.Thread(target=target, args=(req, m.prompt), daemon=True, name="composition-target")
                     for req, m in zip(targets, group.members)]
        for th in t_threads:
            th.start()
        for th in t_threads:
            th.join()
        stop.set()
        for th in bg_threads:
            th.join()
    wall = time.perf_counter() - t0
    if errors:
        first = next((e for e in errors if not (isinstance(e, EngineError) and e.transient)), errors[0])
        if isinstance(first, EngineError):
            raise first
        raise EngineError(f"composition session of group {group.id}: {type(first).__name__}: {first}") from first
    out = []
    for req in targets:
        rec = trecs[req.key]
        rec.update(series.view(rec["submit_s"], rec["finish_s"]))
        res = results[req.key]
        res.volatile.update({"composition": rec})
        out.append(res)
    if out:  # the executor's per-group batching evidence (timings.jsonl) reads the first result
        run = [v[0] for v in series.values if v[0] is not None]
        out[0].volatile.update({"server_running_max": int(max(run)) if run else None,
                                "server_waiting_max": max((int(v[1]) for v in series.values if v[1] is not None),
                                                          default=None),
                                "metrics_samples": len(series.times)})
    if run_dir is not None:
        _record(Path(run_dir), group, level, started, wall, [trecs[r.key] for r in targets], brecs, series)
    return out


def _bg_request(plan: Plan, prompts: dict[str, Any], pid: str) -> tuple[str, GenRequest]:
    from batchsafe.runtime.bindings import _request

    return pid, _request(plan, prompts[pid], f"background:{pid}")


def summarize(targets: list[dict[str, Any]], level: int) -> dict[str, Any]:
    """Co-residency summary of one session: mean background requests and other targets in flight at
    target submission, and the share of targets that had the full load (``level``) in flight then."""
    n = len(targets)
    bg = [t["in_flight_at_submit"]["background"] for t in targets]
    server = [t.get("server_running_at_submit") for t in targets if t.get("server_running_at_submit") is not None]
    others = [t["in_flight_at_submit"].get("targets", 0) for t in targets]
    return {"targets": n, "load": level,
            "mean_background_at_submit": (sum(bg) / n) if n else None,
            "mean_other_targets_at_submit": (sum(others) / n) if n else None,
            "full_load_at_submit": (sum(b >= level for b in bg) / n) if n else None,
            "mean_server_running_at_submit": (sum(server) / len(server)) if server else None,
            "max_lateness_s": max((t["lateness_s"] for t in targets), default=None)}


def _record(run_dir: Path, group: Group, level: int, started: str, wall: float, targets: list[dict[str, Any]],
            background: list[dict[str, Any]], series: _ServerSeries) -> None:
    run = [v[0] for v in series.values if v[0] is not None]
    line = {"group": group.id, "index": group.index, "phase": group.phase, "model": group.model, "load": level,
            "started": started, "wall_s": round(wall, 4), "summary": summarize(targets, level),
            "server": {"metrics_samples": len(series.times), "running_max": int(max(run)) if run else None},
            "targets": targets, "background": sorted(background, key=lambda b: (b["slot"], b["n"]))}
    path = run_dir / VOLATILE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        fh.write(json.dumps(line, sort_keys=True).encode() + b"\n")
