"""A fake engine for executor tests: fast, deterministic, and sensitive to batching.

Its text depends on the prompt, on the binding (quant/kernel) and on the group: a
group of K>1 gets a "batch effect" that depends on every co-member's prompt, so a
record taken from the wrong group, position or composition shows up as a different
text. Failures can be injected per group (keyed by the group's first request key).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from batchsafe.runtime.bindings import Binding
from batchsafe.runtime.engine import Capabilities, Engine, EngineError, GenRequest, GenResult


def fake_text(binding: Binding, req: GenRequest, group: list[GenRequest]) -> str:
    """What the fake engine answers for ``req`` when run inside ``group``."""
    content = "\n".join(f"{r}:{c}" for r, c in req.messages)
    parts = [binding.quant or "", binding.kernel or "", content, str(len(group))]
    if len(group) > 1:  # the batch effect: co-members change the output
        parts += ["|".join("\n".join(c for _, c in g.messages) for g in group)]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


class FakeEngine(Engine):
    """Engine stand-in; see the module docstring."""

    name = "fake"
    capabilities = Capabilities(true_batching=True, modes=("sequential", "synchronized", "prompt_list", "concurrent"))

    def __init__(self, binding: Binding, factory: "FakeFactory") -> None:
        self.binding, self.factory = binding, factory
        self.closed = False
        self.warmups: list[str] = []

    def run_group(self, requests: list[GenRequest], mode: str) -> list[GenResult]:
        f = self.factory
        if self.closed:
            raise RuntimeError("run_group on a closed engine")
        first = requests[0].key
        f.calls.append([r.key for r in requests])
        if f.sleep_s and not first.startswith("warmup:"):  # slow groups, fast warmups
            time.sleep(f.sleep_s)
        if f.transient.get(first, 0) > 0:
            f.transient[first] -= 1
            raise EngineError(f"injected transient failure for {first}", transient=True)
        if first in f.permanent:
            raise EngineError(f"injected permanent failure for {first}")
        if first in f.crash:
            raise RuntimeError(f"injected crash for {first}")
        group = requests if mode != "sequential" else None
        out = []
        for r in requests:
            g = group if group is not None else [r]
            text = fake_text(self.binding, r, g)
            n = int(text[:2], 16) % 8 + 1
            out.append(GenResult(key=r.key, text=text, finish_reason="length" if n == 8 else "stop",
                                 prompt_tokens=sum(len(c.split()) for _, c in r.messages), completion_tokens=n,
                                 volatile={"t": time.perf_counter()}))
        if first in f.reorder:
            out.reverse()
        return out

    def warmup(self, requests: list[GenRequest]) -> None:
        self.warmups += [r.key for r in requests]
        super().warmup(requests)

    def describe(self) -> dict[str, Any]:
        return {"engine": "fake", "binding": self.binding.label()}

    def close(self) -> None:
        self.closed = True


class FakeFactory:
    """Callable engine factory recording every engine it builds."""

    def __init__(self, *, sleep_s: float = 0.0, transient: dict[str, int] | None = None,
                 permanent: set[str] | None = None, crash: set[str] | None = None,
                 reorder: set[str] | None = None) -> None:
        self.sleep_s = sleep_s
        self.transient = dict(transient or {})
        self.permanent = set(permanent or ())
        self.crash = set(crash or ())
        self.reorder = set(reorder or ())
        self.engines: list[FakeEngine] = []
        self.calls: list[list[str]] = []

    def __call__(self, binding: Binding) -> FakeEngine:
        e = FakeEngine(binding, self)
        self.engines.append(e)
        return e
