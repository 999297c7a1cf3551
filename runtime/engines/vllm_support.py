"""Helpers of the vLLM adapter (``runtime/engines/vllm.py``): kernel-variant endpoints, the
``docker run`` hint, flag lookup, the TP variant of a binding, answer field checks."""

from __future__ import annotations

import re
import shlex
from typing import Any

from batchsafe.runtime.engine import EngineError

VARIANT_ENV_PREFIX = "BATCHSAFE_VLLM_ENDPOINT_"


def variant_env_name(kernel_id: str) -> str:
    """The environment variable that points a kernel variant at its own server."""
    return VARIANT_ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", kernel_id.upper())


def start_command(image: str | None, repo: str, revision: str | None, flags: list[str],
                  env: dict[str, str], endpoint: str) -> str:
    """A docker command that starts the server the plan expects (for error messages)."""
    port = re.search(r":(\d+)(?:/|$)", endpoint)
    parts = ["docker run --gpus all", f"-p {port.group(1) if port else 8000}:8000"]
    parts += [f"-e {k}={shlex.quote(str(v))}" for k, v in sorted(env.items())]
    parts += [image or "<vllm image>", "--model", repo]
    parts += ["--revision", revision] if revision else []
    return " ".join(parts + [shlex.quote(str(f)) for f in flags])


def _flag_value(flags: list[str], name: str) -> str | None:
    from batchsafe.runtime.launch.vllm_process import flag_value

    return flag_value([str(f) for f in flags], name)


def _tp_variant(plan: Any, binding: Any) -> dict[str, Any] | None:
    """The plan's TP variant of the binding's size (None without a TP axis); EngineError when missing."""
    size = getattr(binding, "tensor_parallel", None)
    if size is None:
        return None
    from batchsafe.compiler.tensor_parallel import plan_variant

    var = plan_variant(plan, binding.engine, size)
    if var is None:
        raise EngineError(f"tensor_parallel {size} is not a size of any phase of engine {binding.engine!r}")
    return var


def _finish(value: Any, where: str) -> str:
    if value in ("stop", "length"):
        return value
    # "abort": the server dropped the request (shutdown, preemption): worth a retry.
    raise EngineError(f"vLLM {where}: unexpected finish_reason {value!r}", transient=value == "abort")


def _tokens(usage: Any, key: str, where: str) -> int:
    v = (usage or {}).get(key) if isinstance(usage, dict) else None
    if type(v) is not int or v < 0:
        raise EngineError(f"vLLM {where}: the answer has no usage.{key} (got {usage!r})")
    return v
