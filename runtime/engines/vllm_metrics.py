"""Server-side evidence of batching: vLLM's ``/metrics`` sampled while a group runs.

vLLM exports Prometheus gauges ``vllm:num_requests_running`` and
``vllm:num_requests_waiting`` (one series per engine and model). :class:`RunningSampler`
polls them from a background thread during a group and reports the largest values seen,
so a synchronized group of K shows ``server_running_max == K`` when the server really
held the K requests in one batch, and a lower number when it did not. Servers without
``/metrics`` (or another model's series only) give ``None``: no evidence, never a guess.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import httpx

POLL_S = 0.05
"""Interval between two samples. Each sample makes the server render its whole metrics
page (tens of KB), on the CPUs that also run the model: 20 ms cost 8 % of a benchmark's
wall time on 2 cores, 50 ms still gives ~20 samples per second of a group."""
_PREFIX = "vllm:num_requests_"
_LINE = re.compile(r'^(vllm:num_requests_(running|waiting))\{([^}]*)\}\s+([0-9.eE+-]+)\s*$')


def parse_gauges(text: str, model: str | None) -> tuple[float | None, float | None]:
    """(running, waiting) summed over the series of ``model`` (all series when None)."""
    running = waiting = None
    # only the few gauge lines go through the regex: the page has hundreds of others
    for line in text.splitlines():
        if not line.startswith(_PREFIX) or (m := _LINE.match(line)) is None:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3)))
        if model is not None and labels.get("model_name") not in (None, model):
            continue
        v = float(m.group(4))
        if m.group(2) == "running":
            running = (running or 0.0) + v
        else:
            waiting = (waiting or 0.0) + v
    return running, waiting


class RunningSampler:
    """Context manager: sample ``/metrics`` of ``base_url`` until the block ends."""

    def __init__(self, base_url: str, model: str | None, poll_s: float = POLL_S, *, enabled: bool = True) -> None:
        """``model``: the served model id whose series count; ``enabled=False`` samples nothing."""
        self.url, self.model, self.poll_s, self.enabled = base_url.rstrip("/") + "/metrics", model, poll_s, enabled
        self.samples = 0
        self.running_max: float | None = None
        self.waiting_max: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        from batchsafe.runtime.engines.http import _tls

        with httpx.Client(timeout=2.0, trust_env=False, verify=_tls()) as client:
            while not self._stop.is_set():
                try:
                    r = client.get(self.url)
                except httpx.HTTPError:
                    r = None
                if r is not None and r.status_code == 404:
                    return  # not a vLLM server: no evidence
                if r is not None and r.status_code == 200:
                    running, waiting = parse_gauges(r.text, self.model)
                    if running is not None:
                        self.samples += 1
                        self.running_max = max(self.running_max or 0.0, running)
                    if waiting is not None:
                        self.waiting_max = max(self.waiting_max or 0.0, waiting)
                self._stop.wait(self.poll_s)

    def __enter__(self) -> RunningSampler:
        if not self.enabled:
            return self
        self._thread = threading.Thread(target=self._loop, name="batchsafe-vllm-metrics", daemon=True)
        self._thread.start()
        time.sleep(0)  # let the first sample start before the group's requests go out
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def evidence(self) -> dict[str, Any]:
        """What the server reported during the group (volatile: timing-dependent)."""
        as_int = (lambda v: None if v is None else int(v))
        if not self.enabled:
            return {}
        return {"server_running_max": as_int(self.running_max), "server_waiting_max": as_int(self.waiting_max),
                "metrics_samples": self.samples}
