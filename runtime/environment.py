"""What the run ran on: interpreter, packages, OS, CPU, memory, GPU, source tree, engines.

Recorded in ``run_dir/environment.json`` so that a result can be traced to the machine
and software that produced it. Only whitelisted environment variables are recorded
(never the whole environment: it holds tokens and keys), and even whitelisted names
that look like credentials have their value redacted.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

ENV_NAMES = ("CUBLAS_WORKSPACE_CONFIG", "OMP_NUM_THREADS", "CMAKE_ARGS", "CUDA_VISIBLE_DEVICES",
             "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PYTHONHASHSEED")
"""Environment variables recorded by exact name (they can change numerics or threading)."""
ENV_PREFIXES = ("VLLM_", "OLLAMA_", "GGML_")
"""Environment variable prefixes recorded (engine knobs)."""
_SECRETISH = re.compile(r"KEY|TOKEN|SECRET|PASSW|AUTH|CREDENTIAL", re.IGNORECASE)
REDACTED = "<redacted>"
_TIMEOUT_S = 10


def _sorted(obj: Any) -> Any:
    """Recursively sort dict keys so the JSON is written in one order everywhere."""
    if isinstance(obj, dict):
        return {k: _sorted(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [_sorted(v) for v in obj]
    return obj


def relevant_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Whitelisted environment variables; credential-looking names are redacted."""
    env = os.environ if environ is None else environ
    out = {}
    for name, value in env.items():
        if name in ENV_NAMES or name.startswith(ENV_PREFIXES):
            out[name] = REDACTED if _SECRETISH.search(name) else value
    return dict(sorted(out.items()))


def packages() -> list[str]:
    """Every installed distribution as ``name==version``, sorted case-insensitively."""
    seen = set()
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            seen.add(f"{name}=={dist.version}")
    return sorted(seen, key=str.lower)


def _cpuinfo() -> dict[str, Any]:
    model = flags = None
    try:
        # The first processor block is enough: a host has one CPU model (hybrid cores aside).
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                model = value.strip()
            elif key in ("flags", "Features"):  # x86 / arm spelling
                flags = sorted(value.split())
    except OSError:
        pass
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {"model": model or platform.processor() or None, "flags": flags,
            "cores": os.cpu_count(), "cores_usable": affinity}


def _memory_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _run(cmd: list[str]) -> str | None:
    try:
        p = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout if p.returncode == 0 else None


def gpu_info() -> dict[str, Any] | None:
    """GPUs, driver and CUDA version from nvidia-smi; None when nvidia-smi is absent or fails."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,uuid",
                  "--format=csv,noheader,nounits"])
    if query is None:
        return None
    gpus = []
    for line in query.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 4:
            gpus.append({"name": parts[0], "driver": parts[1], "memory_mib": parts[2], "uuid": parts[3]})
    header = _run(["nvidia-smi"]) or ""
    cuda = re.search(r"CUDA Version:\s*([0-9.]+)", header)
    return {"gpus": gpus, "driver": gpus[0]["driver"] if gpus else None,
            "cuda": cuda.group(1) if cuda else None}


def source_info() -> dict[str, Any]:
    """batchsafe version, and the git commit and dirty flag of its checkout (None if not one)."""
    from batchsafe.core import version

    repo = Path(version.__file__).resolve().parents[2]  # batchsafe/core/version.py -> the checkout
    commit = dirty = None
    top = _run(["git", "-C", str(repo), "rev-parse", "--show-toplevel"])
    # Only the checkout that holds this very package counts (not a repo it is installed into).
    if top is not None and Path(top.strip()).resolve() == repo:
        head = _run(["git", "-C", str(repo), "rev-parse", "HEAD"])
        status = _run(["git", "-C", str(repo), "status", "--porcelain"])
        commit = head.strip() if head else None
        dirty = bool(status.strip()) if status is not None else None
    return {"version": version.__version__, "git_commit": commit, "git_dirty": dirty}


def engine_records(log: Path) -> list[dict[str, Any]]:
    """Distinct ``{binding, describe}`` of the engine instances in a run's volatile engines log
    (every session of a resumed run appends to it; repeats are recorded once)."""
    seen: dict[str, dict[str, Any]] = {}
    if log.exists():
        for line in log.read_bytes().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a torn volatile line loses a description, never a result
            item = {"binding": rec.get("binding"), "describe": rec.get("describe")}
            seen.setdefault(json.dumps(item, sort_keys=True), item)
    return list(seen.values())


def capture_environment(engines: list[dict[str, Any]]) -> dict[str, Any]:
    """The environment record: deterministic key order, whitelisted env vars only.

    ``engines``: each engine's ``describe()`` output (with whatever the caller adds,
    e.g. its binding), recorded as given.
    """
    uname = platform.uname()
    return _sorted({
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "compiler": platform.python_compiler(), "executable": sys.executable},
        "packages": packages(),
        "os": {"system": uname.system, "release": uname.release, "version": uname.version,
               "machine": uname.machine, "platform": platform.platform(),
               "libc": " ".join(platform.libc_ver()).strip() or None},
        "cpu": _cpuinfo(),
        "memory_total_bytes": _memory_total(),
        "gpu": gpu_info(),
        "batchsafe": source_info(),
        "env": relevant_env(),
        "engines": engines,
    })
