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

POLL_S = 0.02
"""Interval between two samples (one small GET on loopback)."""
_LINE = re.compile(r'^(vllm:num_requests_(running|waiting))\{([^}]*)\}\s+([0-9.eE+-]+)\s*$', re.M)


def parse_gauges(text: str, model: str | None) -> tuple[float | None, float | None]:
    """(running, waiting) summed over the series of ``model`` (all series when None)."""
    running = waiting = None
    for m in _LINE.finditer(text):
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

    def __init__(self, base_url: str, model: str | None, poll_s: float = POLL_S) -> None:
        """``model``: the served model id whose series count."""
        self.url, self.model, self.poll_s = base_url.rstrip("/") + "/metrics", model, poll_s
        self.samples = 0
        self.running_max: float | None = None
        self.waiting_max: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        with httpx.Client(timeout=2.0, trust_env=False) as client:
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
        return {"server_running_max": as_int(self.running_max), "server_waiting_max": as_int(self.waiting_max),
                "metrics_samples": self.samples}
