"""The tensor-parallel axis: one server per TP size, what the plan records, and its checks.

A phase's ``axes.tensor_parallel: [1, 2]`` makes the TP size part of every condition
(``Condition.tensor_parallel``), so samples at TP 2 are compared with their TP 1
baseline exactly like batch sizes are compared with batch size 1. TP is not a request
parameter: it is how the server was started. So, like a kernel-flag variant, each TP
size gets its own launched server, started with ``--tensor-parallel-size N``; the axis
is the outermost one of the schedule (``compiler.schedule.AXIS_ORDER``), so all groups
of one size run consecutively on one server, one server at a time, in plan order.

What a TP size adds to the server is recorded in the plan (``PhaseSummary.tensor_parallel``,
identity, in the plan hash) as a variant ``{"size", "flags", "env"}``, and the launcher
and ``verify``'s stack stage both read it from there:

* flags: ``--tensor-parallel-size N`` (also for N = 1, so every launch record says it);
* env, for N > 1: NVLink multicast off (:data:`MULTICAST_OFF_ENV`). Lent multi-GPU
  machines may not support NVLS / multicast objects; NCCL, torch symmetric memory and
  NVSHMEM try them by default and then fail or hang at the first all-reduce. On CPU the
  variables are inert, so they are set whatever the device: one rule, no device guess.

Checks at compile time (positioned diagnostics): sizes are integers >= 1 (schema), no
size is listed twice, the engine kind declares TP support in the engine catalogue (:data:`TP_ENGINE_KINDS`),
the engine launches its servers (an external server cannot be restarted with another
size), and neither the engine nor a kernel variant sets the flag or changes the
multicast variables itself. Whether a size divides the model's attention heads is only
known from the model directory, so the launcher's preflight checks that
(``runtime.launch.tensor_parallel``).
"""

from __future__ import annotations

from typing import Any

from batchsafe.runtime.engines.catalogue import ENGINES

TP_FLAG = "--tensor-parallel-size"
"""The vLLM server flag that sets the TP size (``-tp`` is its short alias)."""
TP_FLAG_ALIASES = (TP_FLAG, "-tp")
MULTICAST_OFF_ENV: dict[str, str] = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}
"""Server environment of every TP > 1 server: NVLink SHARP / multicast off in NCCL, torch
symmetric memory and NVSHMEM (see the module docstring)."""
TP_ENGINE_KINDS = frozenset(k for k, e in ENGINES.items() if e.capabilities.tensor_parallel)
"""Engine kinds that can start a server at a given TP size, as the engine catalogue declares
them (``Capabilities.tensor_parallel``: vLLM)."""
MAX_TP = 64


def tp_variant(size: int) -> dict[str, Any]:
    """What TP size ``size`` adds to a launched server: ``{"size", "flags", "env"}``."""
    return {"size": int(size), "flags": [TP_FLAG, str(int(size))], "env": dict(MULTICAST_OFF_ENV) if size > 1 else {}}


def phase_variants(phase: Any) -> list[dict[str, Any]]:
    """The TP variants of a spec phase, in axis order (empty without the axis)."""
    return [tp_variant(n) for n in (phase.axes.tensor_parallel or [])]


def plan_variant(plan: Any, engine: str, size: int | None) -> dict[str, Any] | None:
    """The TP variant ``size`` of ``engine`` as the plan records it (None: no TP axis or size)."""
    if size is None:
        return None
    return next((v for p in plan.phases if p.engine == engine for v in getattr(p, "tensor_parallel", None) or []
                 if v.get("size") == size), None)


def _sets_flag(flags: list[Any]) -> int | None:
    """Index of a TP flag in ``flags`` (``--tensor-parallel-size``, ``-tp``, or their ``=`` forms)."""
    for j, f in enumerate(map(str, flags)):
        if f.split("=", 1)[0] in TP_FLAG_ALIASES:
            return j
    return None


def check_phase(checker: Any, i: int, phase: Any, engine: Any, engine_name: str) -> None:
    """Compile-time checks of phase ``i``'s TP axis; problems go to ``checker.error``."""
    sizes = phase.axes.tensor_parallel
    if not sizes:
        return
    at = ("phases", i, "axes", "tensor_parallel")
    seen: dict[int, int] = {}
    for j, n in enumerate(sizes):
        if n in seen:
            checker.error(at + (j,), "duplicate-id", f"tensor_parallel size {n} is listed twice",
                          f"first listed at index {seen[n]}")
        seen.setdefault(n, j)
    if engine.kind not in TP_ENGINE_KINDS:
        checker.error(at, "invalid-value", f"engine {engine_name!r} (kind {engine.kind}) cannot run a tensor_parallel "
                      "axis", "engine kinds that start servers at a TP size: " + ", ".join(sorted(TP_ENGINE_KINDS)))
        return
    launch = engine.launch.kind if getattr(engine, "launch", None) else "external"
    if launch == "external":
        checker.error(at, "invalid-value", f"engine {engine_name!r} attaches to an external server, which batchsafe "
                      "cannot restart at another TP size",
                      f"set engines.{engine_name}.launch.kind to process (or container)")
    j = _sets_flag(engine.flags)
    if j is not None:
        checker.error(("engines", engine_name, "flags", j), "invalid-value",
                      f"engine {engine_name!r} sets {engine.flags[j]} itself, but phase {phase.id!r} has a "
                      "tensor_parallel axis, which sets it per server", f"remove it; the axis adds {TP_FLAG} N")
    for k, var in enumerate(phase.axes.kernel or []):
        j = _sets_flag(var.flags)
        if j is not None:
            checker.error(("phases", i, "axes", "kernel", k, "flags", j), "invalid-value",
                          f"kernel variant {var.id!r} sets {var.flags[j]}, which the tensor_parallel axis sets",
                          "remove it from the variant's flags")
    if any(n > 1 for n in sizes):
        for key, want in MULTICAST_OFF_ENV.items():
            for where, env in ((("engines", engine_name, "env", key), engine.env),
                               *((("phases", i, "axes", "kernel", k, "env", key), v.env)
                                 for k, v in enumerate(phase.axes.kernel or []))):
                if key in env and str(env[key]) != want:
                    checker.error(where, "invalid-value", f"{key}={env[key]} turns NVLink multicast on for a "
                                  f"tensor-parallel server; TP > 1 servers run with {key}={want}",
                                  f"remove {key} (the axis sets it)")
