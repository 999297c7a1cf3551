"""vLLM adapter: an already-running vLLM OpenAI-compatible server, over HTTP.

The adapter never starts a server (containers, GPUs and their flags are out of its
reach); it checks that the server at the plan's endpoint is the one the plan names and
records what it can see. On construction:

* ``GET /v1/models`` must list the plan's model: a served id equal to the HF repo, or a
  card whose ``root`` is the repo (or its HF-cache snapshot path, when the server was
  given ``--served-model-name``). A snapshot path that names a commit must name the
  plan's ``hf_revision``. ``--max-model-len`` in the plan's flags must equal the card's
  ``max_model_len``. Any mismatch is a permanent error naming what was expected and
  what was found.
* ``GET /version`` is recorded (``None`` when the server has no such route).
* The image digest, the other flags and the environment cannot be read over HTTP:
  ``describe()`` lists them as expected-but-unverified.

Decoding is greedy: ``temperature`` 0, ``seed`` = the plan seed, ``max_tokens``, ``stop``,
and neutral penalties sent explicitly (``repetition_penalty`` 1, ``presence_penalty`` and
``frequency_penalty`` 0). Sending the neutral values matters: vLLM's request defaults
are neutral, but with ``--generation-config auto`` (vLLM's default) a field left out is
taken from the model's ``generation_config.json``, which may set a repetition penalty
above 1 (vLLM logs "Default sampling parameters have been overridden ..." when it does).

Dispatch modes:

* ``sequential``: one ``/v1/chat/completions`` request at a time.
* ``synchronized``: K chat requests from K threads; each opens its connection, then a
  ``threading.Barrier`` releases all K sends together, so vLLM's continuous batcher holds
  the K sequences in flight together (send spread recorded in ``volatile``).
* ``concurrent``: K chat requests from K threads, each connecting and sending as soon as
  its thread runs (independent clients: overlap is likely, not arranged).
* ``prompt_list``: ONE ``/v1/completions`` call whose ``prompt`` is the list of the K
  prompts as token ids. Each chat prompt is rendered by the server itself through
  ``POST /tokenize`` with ``{"model", "messages", "add_generation_prompt": true,
  "add_special_tokens": false}`` (vLLM's TokenizeChatRequest, whose defaults mirror the
  chat endpoint's), so the ids are those ``/v1/chat/completions`` would run. Choices are
  mapped back by ``index``; ``return_token_ids`` (vLLM >= 0.10.2) gives each sequence's
  completion token count.

Launch: with ``launch.kind: process`` (or ``container``) in the plan, :meth:`VLLMEngine.from_plan`
starts the server itself (:mod:`batchsafe.runtime.launch.vllm_process`, or the plan's image
by digest through :mod:`batchsafe.runtime.launch.container`): one server per binding, so a
kernel-flag variant (e.g. ``VLLM_BATCH_INVARIANT=1``) gets its own server started with its
env/flags, one at a time in plan order; :meth:`close` stops it. A server found dead after a
transient failure is restarted (at most ``MAX_RESTARTS`` times) and the group retried.

External servers (no launch, or ``launch.kind: external``): kernel-flag variants change how
the server was started, which vLLM does not report, so a variant whose env/flags differ
from the engine's base settings needs its own server, named by the environment variable
``BATCHSAFE_VLLM_ENDPOINT_<VARIANT>`` (variant id upper-cased, non-alphanumerics as ``_``);
without it :meth:`VLLMEngine.from_plan` refuses with a permanent error.

Batching evidence: while a group runs, :class:`~batchsafe.runtime.engines.vllm_metrics.RunningSampler`
polls ``/metrics`` and each result's volatile carries ``server_running_max`` (the most
requests vLLM reported running at once), so "synchronized" is shown, not assumed.
"""

from __future__ import annotations

import os
import re
import time
from typing import Annotated, Any, Literal

from pydantic import Field

from batchsafe.core.strict import IMAGE_PATTERN
from batchsafe.compiler.plan_lookup import engine_of, kernel_variant, model_of
from batchsafe.runtime.engine import Engine, EngineError, GenRequest, GenResult, plan_engine
from batchsafe.runtime.engines.catalogue import engine
from batchsafe.runtime.engines.config import CheckContext, EngineConfig, Launch
from batchsafe.runtime.engines.vllm_support import (VARIANT_ENV_PREFIX, _finish, _flag_value, _tokens,  # noqa: F401
                                                    _tp_variant, start_command, variant_env_name)

# The HTTP client (httpx) is imported where requests are made, not here: the compiler
# imports this module for the spec block below, and compiling needs no HTTP.

DEFAULT_ENDPOINT = "http://127.0.0.1:8000"
NEUTRAL_PENALTIES = {"repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
"""Sent with every request so the model's generation_config cannot add a penalty."""
MAX_RESTARTS = 2
"""Restarts of a launched server that died, per engine instance, before the run stops (resumable)."""


class VLLMEngineConfig(EngineConfig):
    """A vLLM OpenAI-compatible server: a digest-pinned container image, or a pinned vLLM
    version started as a local process."""

    kind: Literal["vllm"]
    image: Annotated[str | None, Field(pattern=IMAGE_PATTERN, exclude_if=lambda v: v is None,
                                       description="A container image, pinned as repo@sha256:<digest>.")] = None
    """Container image; must carry @sha256:<digest> unless compiling with --allow-unpinned
    (required unless ``launch.kind`` is process)."""
    version: str | None = Field(None, exclude_if=lambda v: v is None)
    """vLLM version the server must report on /version (required for process launch: with no
    image digest it is what pins the engine)."""
    launch: Launch | None = Field(None, exclude_if=lambda v: v is None)
    """How the server is obtained; absent means external (an already-running endpoint)."""
    flags: list[str] = Field(default_factory=list)
    """Server arguments after --model, e.g. [--max-model-len, '2048', --dtype, float16]."""
    env: dict[str, str] = Field(default_factory=dict)
    """Server environment, e.g. VLLM_BATCH_INVARIANT: '0'."""
    endpoint: str = DEFAULT_ENDPOINT
    """Base URL of the running server (a locator: not part of the plan's identity)."""

    def check_engine(self, ctx: CheckContext, path: tuple[Any, ...], name: str) -> None:
        """What pins a vLLM stack: the image digest (external, container) or the vLLM
        version (process: no image, so the version the server reports is the pin)."""
        kind = self.launch.kind if self.launch else "external"
        if kind == "process":
            if self.version is None:
                ctx.error(("engines", name), "missing-key", f"engine {name!r} launches a process: it needs version "
                          "(the vLLM version the server must report)", "e.g. version: \"0.32.0\"")
            if self.launch is not None and not self.launch.python:
                ctx.error(("engines", name, "launch"), "missing-key", f"engine {name!r} launches a process: it needs "
                          "launch.python (the interpreter of the venv vLLM is installed in)")
            if self.launch is not None and not self.launch.model_dir:
                ctx.error(("engines", name, "launch"), "missing-key", f"engine {name!r} launches a process: it needs "
                          "launch.model_dir (the HF model directory to serve)")
            return
        if self.image is None:
            ctx.error(("engines", name), "missing-key", f"engine {name!r} ({kind} launch) needs image (repo@sha256:...)")
            return
        ctx.pin(path, f"engines.{name}.image {self.image}", "@sha256:" in self.image)

    def check_phase(self, ctx: CheckContext, path: tuple[Any, ...], phase: Any) -> None:
        """vLLM serves the HF checkpoint as is: no quantization axis."""
        if phase.axes.quants:
            ctx.error(path + ("axes", "quants"), "invalid-value",
                      "vLLM phases serve the HF checkpoint; quants need ollama or llamacpp")

    def check_binding(self, ctx: CheckContext, path: tuple[Any, ...], name: str, model: Any, phase: Any) -> None:
        """The model needs an hf reference, pinned by revision (or, for a server batchsafe
        launches, by the served directory's weights digest)."""
        if model.hf is None:
            ctx.error(path, "missing-key", f"model {name!r} has no hf reference, needed by engine kind vllm")
            return
        launched = self.launch is not None and self.launch.kind in ("process", "container")
        ctx.pin(path, f"models.{name}.hf {model.hf.repo} revision",
                model.hf.revision is not None or (model.hf.weights_sha256 is not None and launched))


@engine("vllm", config=VLLMEngineConfig, display="vLLM",
        summary="vLLM's OpenAI-compatible server, external or launched by batchsafe",
        modes=("sequential", "synchronized", "prompt_list", "concurrent"),
        true_batching=True, concurrency=True, tensor_parallel=True,
        default_endpoint=DEFAULT_ENDPOINT, health_path="/v1/models")
class VLLMEngine(Engine):
    """An already-running vLLM OpenAI-compatible server (see the module docstring)."""

    version = "1"

    def __init__(self, endpoint: str, hf_repo: str, *, hf_revision: str | None = None, seed: int = 0,
                 config: dict[str, Any] | None = None, kernel: dict[str, Any] | None = None,
                 timeout_s: float = 600.0, extra_body: dict[str, Any] | None = None, launched: Any = None) -> None:
        """Connect to the server at ``endpoint`` and check it serves ``hf_repo``.

        config: the plan's engine config (image, flags, env), checked where visible and
        recorded. kernel: the kernel variant (id, env, flags) this server stands for.
        extra_body: fields added to every generation request; meant for OpenAI-compatible
        servers other than vLLM (tests use llama_cpp.server, whose own default
        ``repeat_penalty`` is 1.1), never set from a plan. launched: the
        :class:`~batchsafe.runtime.launch.vllm_process.LaunchedServer` this engine owns.
        """
        self.hf_repo, self.hf_revision, self.seed = hf_repo, hf_revision, seed
        self.config = dict(config or {})
        self.kernel = kernel
        self.flags = [str(f) for f in [*(self.config.get("flags") or []), *((kernel or {}).get("flags") or [])]]
        self.env = {**(self.config.get("env") or {}), **((kernel or {}).get("env") or {})}
        self.extra_body = dict(extra_body or {})
        self.launched, self.restarts, self.timeout_s = launched, 0, timeout_s
        self._tok_cache: dict[tuple[tuple[str, str], ...], list[int]] = {}
        self._connect(endpoint)

    def _connect(self, endpoint: str) -> None:
        """Point the client at ``endpoint`` and check the server there is the plan's."""
        from batchsafe.runtime.engines.http import ServerClient

        hint = ("this adapter talks to a running server and does not start containers; start one, e.g. "
                + start_command(self.config.get("image"), self.hf_repo, self.hf_revision, self.flags, self.env,
                                endpoint))
        if self.launched is not None:  # batchsafe started it: point at its record and log, not at docker run
            hint = f"batchsafe launched it ({self.launched.record.file_name()}; log {self.launched.record.log})"
        self.client = ServerClient(endpoint, "vLLM", timeout_s=self.timeout_s, hint=hint, warm_path="/health")
        self.served_model, self.card, self.revision_verified = self._find_model(self.client.get("/v1/models"))
        self.server_version = self._server_version()
        want_len = _flag_value(self.flags, "--max-model-len")
        got_len = self.card.get("max_model_len")
        if want_len is not None and got_len is not None and str(got_len) != want_len:
            raise EngineError(f"vLLM server at {endpoint} serves {self.served_model!r} with max_model_len {got_len}, "
                              f"the plan's flags say --max-model-len {want_len}")
        self.max_model_len_verified = None if want_len is None or got_len is None else True
        want_version = self.config.get("version")
        if want_version is not None and self.server_version != str(want_version):
            raise EngineError(f"vLLM server at {endpoint} reports version {self.server_version!r} on /version, "
                              f"the plan pins vLLM {want_version}")
        if self.launched is not None:
            self.launched.observed(server_version=self.server_version, served_model=self.served_model,
                                   max_model_len=got_len)

    @classmethod
    def preflight(cls, plan: Any, engine: str, groups: list[Any]) -> list[str] | None:
        """What would stop the servers ``engine`` launches (process, container), found before
        anything starts; None for an external server (preflight probes its endpoint)."""
        cfg = engine_of(plan, engine).config
        kind = (cfg.get("launch") or {}).get("kind")
        if kind == "process":
            from batchsafe.runtime.launch.vllm_process import launch_problems

            return launch_problems(plan, engine, groups)
        if kind == "container":
            from batchsafe.runtime.launch.container import preflight as container_preflight

            return container_preflight(plan, engine, groups)
        return None

    @classmethod
    def from_plan(cls, plan: Any, binding: Any, *, run_dir: Any = None, **kwargs: Any) -> VLLMEngine:
        """The engine of ``binding``: a server launched for it (``launch.kind: process``;
        log and record under ``run_dir``), else the endpoint from the plan's locators (or
        the kernel variant's ``BATCHSAFE_VLLM_ENDPOINT_<VARIANT>``); model from the plan."""
        eng = plan_engine(plan, binding)
        model = model_of(plan, binding.model)
        if model is None or not model.hf_repo:
            raise EngineError(f"model {binding.model!r} has no hf_repo; "
                              "the vllm engine serves Hugging Face checkpoints")
        cfg = dict(eng.config)
        endpoint = plan.locators.endpoints.get(binding.engine) or DEFAULT_ENDPOINT
        kernel = None
        launch_kind = (cfg.get("launch") or {}).get("kind", "external")
        if binding.kernel:
            var = kernel_variant(plan, binding.kernel, engine=binding.engine)
            if var is None:
                raise EngineError(f"kernel variant {binding.kernel!r} is not defined by any phase "
                                  f"of engine {binding.engine!r}")
            base_env = cfg.get("env") or {}
            differs = {k: str(v) for k, v in (var.get("env") or {}).items() if str(base_env.get(k)) != str(v)}
            kernel = {"id": binding.kernel, "env": dict(var.get("env") or {}), "flags": list(var.get("flags") or []),
                      "differs_from_base": {**differs, **({"flags": var["flags"]} if var.get("flags") else {})}}
            if kernel["differs_from_base"] and launch_kind == "external":
                name = variant_env_name(binding.kernel)
                if not os.environ.get(name):
                    want = " ".join([f"{k}={v}" for k, v in differs.items()] + [str(f) for f in kernel["flags"]])
                    cmd = start_command(cfg.get("image"), model.hf_repo, model.hf_revision,
                                        [*map(str, cfg.get("flags") or []), *map(str, kernel["flags"])],
                                        {**base_env, **kernel["env"]}, "http://host:8001")
                    raise EngineError(
                        f"kernel variant {binding.kernel!r} needs a vLLM server started with {want}; the adapter "
                        f"cannot restart a server it did not start, and vLLM does not report its environment. Start "
                        f"one (e.g. {cmd}) and set {name}=http://host:8001 to run this variant against it")
                # Recorded, not refused: the same URL is right if the server was restarted with the variant.
                kernel["same_endpoint_as_base"] = os.environ[name].rstrip("/") == endpoint.rstrip("/")
                endpoint = os.environ[name]
                kernel["endpoint_from"] = name
        if launch_kind == "external":
            if getattr(binding, "tensor_parallel", None):
                raise EngineError(f"engine {binding.engine!r}: tensor_parallel {binding.tensor_parallel} needs a server "
                                  "batchsafe starts (launch.kind process or container); an external one cannot be "
                                  "restarted at another TP size")
            return cls(endpoint, model.hf_repo, hf_revision=model.hf_revision, seed=plan.seed, config=cfg,
                       kernel=kernel, **kwargs)
        if launch_kind not in ("process", "container"):
            raise EngineError(f"engine {binding.engine!r}: launch kind {launch_kind!r} is not implemented in this build")
        if run_dir is None:
            raise EngineError(f"engine {binding.engine!r} launches its server, which needs the run directory "
                              "(for its log and launch record)")
        tp = _tp_variant(plan, binding)
        if launch_kind == "container":
            from batchsafe.runtime.launch import container as launcher
        else:
            from batchsafe.runtime.launch import vllm_process as launcher  # type: ignore[no-redef]
        # Only a TP axis passes tp=, so launchers that predate it keep their signature.
        launched = launcher.start(plan, binding.engine, model, kernel, run_dir, **({"tp": tp} if tp else {}))
        try:
            return cls(launched.endpoint, model.hf_repo, hf_revision=model.hf_revision, seed=plan.seed, config=cfg,
                       kernel=kernel, launched=launched, **kwargs)
        except BaseException:
            launched.finish("failed")
            raise

    # --- identity checks -----------------------------------------------------

    def _find_model(self, listing: Any) -> tuple[str, dict[str, Any], bool | None]:
        cards = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(cards, list):
            raise EngineError(f"vLLM server at {self.client.base_url}: GET /v1/models is not an OpenAI model list: "
                              f"{str(listing)[:200]}")
        snapshot_dir = "models--" + self.hf_repo.replace("/", "--")
        for card in cards:
            root = str(card.get("root") or "")
            if card.get("id") == self.hf_repo or root == self.hf_repo or snapshot_dir in root:
                m = re.search(r"/snapshots/([0-9a-f]{40})", root)
                if m and self.hf_revision and m.group(1) != self.hf_revision:
                    raise EngineError(f"vLLM server at {self.client.base_url} serves {self.hf_repo} at revision "
                                      f"{m.group(1)} (root {root}), the plan pins {self.hf_revision}")
                return str(card["id"]), dict(card), (True if m and self.hf_revision else None)
        found = ", ".join(f"{c.get('id')!r} (root {c.get('root')!r})" for c in cards) or "no models"
        raise EngineError(f"vLLM server at {self.client.base_url} does not serve the plan's model {self.hf_repo!r}"
                          f"{' revision ' + self.hf_revision if self.hf_revision else ''}; it serves {found}")

    def _server_version(self) -> str | None:
        from batchsafe.runtime.engines.http import HttpStatusError

        try:
            got = self.client.get("/version")
        except HttpStatusError as exc:
            if exc.status == 404:  # an OpenAI-compatible server that is not vLLM
                return None
            raise
        return str(got.get("version")) if isinstance(got, dict) and got.get("version") is not None else None

    def describe(self) -> dict[str, Any]:
        """What was checked and what could not be, plus the sampling fields sent."""
        return {
            "engine": self.name, "engine_version": self.version, "endpoint": self.client.base_url,
            "server_version": self.server_version, "served_model": self.served_model,
            "model_card": {k: self.card.get(k) for k in ("id", "root", "max_model_len", "owned_by")},
            "expected": {"hf_repo": self.hf_repo, "hf_revision": self.hf_revision, "image": self.config.get("image"),
                         "flags": self.flags, "env": self.env},
            "verified": {"model": True, "revision": self.revision_verified,
                         "max_model_len": self.max_model_len_verified},
            "not_verifiable_over_http": ["image digest", "flags other than --max-model-len", "server environment",
                                         "revision (unless the served root is an HF snapshot path)"],
            "kernel_variant": self.kernel,
            "launch": None if self.launched is None else {
                "record": self.launched.record.file_name(), "argv": self.launched.record.argv,
                "env": self.launched.record.env, "weights_digest": self.launched.record.weights_digest,
                "dtype": self.launched.record.dtype, "restarts": self.restarts},
            "sampling": {"temperature": 0.0, "seed": self.seed, **NEUTRAL_PENALTIES, **self.extra_body},
            "completion_tokens": "as the server counts them (vLLM includes an end-of-sequence token)",
        }

    # --- requests ------------------------------------------------------------

    def _sampling(self, req: GenRequest) -> dict[str, Any]:
        if req.temperature != 0.0:
            raise EngineError(f"{req.key}: only greedy decoding (temperature 0) is implemented")
        return {"max_tokens": req.max_tokens, "temperature": 0.0, "seed": self.seed, "stop": list(req.stop),
                "n": 1, "stream": False, **NEUTRAL_PENALTIES, **self.extra_body}

    @staticmethod
    def _messages(req: GenRequest) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in req.messages]

    def _chat_result(self, req: GenRequest, body: Any, timing: dict[str, Any]) -> GenResult:
        where = f"chat completion of {req.key}"
        choices = body.get("choices") if isinstance(body, dict) else None
        if not isinstance(choices, list) or len(choices) != 1:
            raise EngineError(f"vLLM {where}: expected one choice, got {str(body)[:200]}")
        msg = choices[0].get("message") or {}
        return GenResult(key=req.key, text=msg.get("content") or "",
                         finish_reason=_finish(choices[0].get("finish_reason"), where),
                         prompt_tokens=_tokens(body.get("usage"), "prompt_tokens", where),
                         completion_tokens=_tokens(body.get("usage"), "completion_tokens", where),
                         volatile={**timing, "request_id": body.get("id")})

    def tokenize(self, req: GenRequest) -> list[int]:
        """The token ids of a chat prompt, rendered by the server (``POST /tokenize``); cached."""
        key = req.messages
        if key not in self._tok_cache:
            got = self.client.post("/tokenize", {"model": self.served_model, "messages": self._messages(req),
                                                 "add_generation_prompt": True, "add_special_tokens": False},
                                   timeout_s=self.client.connect_timeout_s * 6)
            toks = got.get("tokens") if isinstance(got, dict) else None
            if not isinstance(toks, list) or not toks or any(type(t) is not int for t in toks):
                raise EngineError(f"vLLM POST /tokenize for {req.key}: no token list in {str(got)[:200]}")
            self._tok_cache[key] = toks
        return self._tok_cache[key]

    def _prompt_list(self, reqs: list[GenRequest]) -> list[GenResult]:
        from batchsafe.runtime.engines.http import sequential

        if len({(r.max_tokens, r.stop, r.temperature) for r in reqs}) > 1:
            raise EngineError("prompt_list sends one completions call: its requests must share max_tokens and stop")
        t0 = time.perf_counter()
        ids = [self.tokenize(r) for r in reqs]
        tokenize_s = time.perf_counter() - t0
        body = {"model": self.served_model, "prompt": ids, **self._sampling(reqs[0]), "return_token_ids": True}
        [(resp, timing)] = sequential([self.client.prepare("POST", "/v1/completions", body)])
        where = f"completions call of {len(reqs)} prompts"
        choices = resp.get("choices") if isinstance(resp, dict) else None
        by_index = {c.get("index"): c for c in choices} if isinstance(choices, list) else {}
        if set(by_index) != set(range(len(reqs))) or len(choices) != len(reqs):
            raise EngineError(f"vLLM {where}: expected choices with index 0..{len(reqs) - 1}, got "
                              f"{[c.get('index') for c in choices] if isinstance(choices, list) else str(resp)[:200]}")
        sent = sum(map(len, ids))
        if _tokens(resp.get("usage"), "prompt_tokens", where) != sent:
            raise EngineError(f"vLLM {where}: the server counted {resp['usage']['prompt_tokens']} prompt tokens, "
                              f"the adapter sent {sent} token ids (were the prompts re-tokenized?)")
        out = []
        for i, req in enumerate(reqs):
            c = by_index[i]
            tids = c.get("token_ids")
            if isinstance(tids, list):
                n = len(tids)
            elif len(reqs) == 1:
                n = _tokens(resp.get("usage"), "completion_tokens", where)
            else:
                raise EngineError(f"vLLM {where}: choices carry no token_ids (return_token_ids needs vLLM >= 0.10.2), "
                                  "so per-sequence completion tokens are unknown")
            out.append(GenResult(key=req.key, text=c.get("text") or "",
                                 finish_reason=_finish(c.get("finish_reason"), where),
                                 prompt_tokens=len(ids[i]), completion_tokens=n,
                                 volatile={**timing, "request_id": resp.get("id"), "tokenize_s": tokenize_s,
                                           "dispatch": "prompt_list", "group_size": len(reqs),
                                           "group_wall_s": timing["recv_s"]}))
        return out

    def run_group(self, requests: list[GenRequest], mode: str) -> list[GenResult]:
        """Run one group in ``mode`` (see the module docstring); results in request order.

        A transient failure of a launched server that has died restarts the server and is
        re-raised as transient, so the executor retries the whole group on the new one.
        """
        from batchsafe.runtime.engines.vllm_metrics import RunningSampler

        if mode not in self.capabilities.modes:
            raise EngineError(f"vllm engine does not implement dispatch mode {mode!r}")
        reqs = list(requests)
        if not reqs:
            return []
        try:
            # a group of one has nothing to show; sampling it would only load the server
            with RunningSampler(self.client.base_url, self.served_model, enabled=len(reqs) > 1) as sampler:
                out = self._prompt_list(reqs) if mode == "prompt_list" else self._chat_group(reqs, mode)
        except EngineError as exc:
            if self.launched is None or not exc.transient or not self.launched.died():
                raise
            self._restart(exc)
            raise EngineError(f"{exc} (the server had died; restarted as launch "
                              f"{self.launched.record.seq}, the group is retried)", transient=True) from exc
        for r in out:
            r.volatile.update(sampler.evidence())
        return out

    def _restart(self, cause: Exception) -> None:
        old = self.launched
        code = old.exit_status()
        old.finish("died")
        if self.restarts >= MAX_RESTARTS:
            raise EngineError(f"the vLLM server died {self.restarts + 1} times (last exit code {code}; log "
                              f"{old.record.log}); stopping: resume the run once the cause is fixed") from cause
        self.restarts += 1
        self.launched = old.relaunch()
        self._tok_cache.clear()
        try:
            self._connect(self.launched.endpoint)
        except BaseException:
            self.launched.finish("failed")
            raise

    def _chat_group(self, reqs: list[GenRequest], mode: str) -> list[GenResult]:
        from batchsafe.runtime.engines.http import fan_out, group_timing, sequential

        calls = [self.client.prepare("POST", "/v1/chat/completions",
                                     {"model": self.served_model, "messages": self._messages(r), **self._sampling(r)})
                 for r in reqs]
        answers = sequential(calls) if mode == "sequential" else fan_out(calls, aligned=mode == "synchronized")
        shared = group_timing([t for _, t in answers], mode)
        return [self._chat_result(r, body, {**timing, **shared}) for r, (body, timing) in zip(reqs, answers)]

    def close(self) -> None:
        """Stop the launched server, if any (every request used its own connection)."""
        self._tok_cache.clear()
        if self.launched is not None:
            self.launched.finish("closed")
