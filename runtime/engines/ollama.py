"""Ollama adapter: an already-running Ollama server, over its native HTTP API.

API as documented in https://github.com/ollama/ollama/blob/main/docs/api.md
(``GET /api/version``, ``GET /api/tags``, ``POST /api/chat`` with ``"stream": false``).

On construction the adapter checks the server against the plan:

* ``GET /api/version`` is recorded and, when the plan's engine sets ``version``, must
  equal it (permanent error otherwise).
* ``GET /api/tags`` must list the tag the plan gives for the binding's quant. Its
  ``digest`` (the manifest digest, bare hex) must equal the plan's pinned digest when
  there is one; an unpinned tag's digest is recorded in ``describe()`` (the plan lists
  such tags under ``resolved_at_run``). When the server reports the tag's
  ``details.quantization_level``, it must match the binding's quant.

Requests are ``POST /api/chat`` with ``stream`` false, ``keep_alive`` (default 30m, so
the model stays loaded between groups), and options ``temperature`` 0, ``seed`` (plan
seed), ``num_predict`` (max_tokens), ``stop`` (when the request has stop strings; an
empty list would replace the Modelfile's stop parameters), then the plan's engine
options on top (the spec merges them over the decoding policy). Options the plan does
not set take the server's defaults merged with the model's Modelfile parameters; note
that Ollama's defaults (api/types.go ``DefaultOptions``) include ``repeat_penalty``
1.1, which applies before the greedy choice unless the plan's options set it to 1.

Modes: ``sequential`` (one request at a time) and ``concurrent`` (K requests from K
threads, connections opened first and sends released together by a barrier). Whether
Ollama then runs them in parallel depends on the server's ``OLLAMA_NUM_PARALLEL``,
which it does not report: the value from the plan's engine env is recorded as expected.
Per-request send/receive times and the server's eval counts and durations (ns) go into
``volatile``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from batchsafe.core.strict import Scalar
from batchsafe.compiler.plan_lookup import model_of
from batchsafe.runtime.engine import Engine, EngineError, GenRequest, GenResult, plan_engine
from batchsafe.runtime.engines.catalogue import engine
from batchsafe.runtime.engines.config import CheckContext, EngineConfig

# httpx is imported where requests are made: the compiler imports this module for its spec block.

DEFAULT_ENDPOINT = "http://127.0.0.1:11434"
DEFAULT_KEEP_ALIVE = "30m"
SERVER_FIELDS = ("created_at", "total_duration", "load_duration", "prompt_eval_count",
                 "prompt_eval_duration", "eval_count", "eval_duration")
"""Server-side facts kept per request in ``volatile`` (durations in nanoseconds)."""


def _bare(digest: str | None) -> str | None:
    return None if digest is None else digest.split(":", 1)[-1].lower()


def _full_name(tag: str) -> str:
    """Ollama's name rule: a name without a tag means ``:latest``."""
    return tag if ":" in tag.rsplit("/", 1)[-1] else tag + ":latest"


class OllamaEngineConfig(EngineConfig):
    """An Ollama server."""

    kind: Literal["ollama"]
    version: str | None = None
    """Ollama server version the plan expects; checked at run time when set."""
    env: dict[str, str] = Field(default_factory=dict)
    """Server environment, e.g. OLLAMA_NUM_PARALLEL: '8'."""
    options: dict[str, Scalar] = Field(default_factory=dict)
    """Request options (num_ctx, seed, ...), merged over the decoding policy."""
    endpoint: str = DEFAULT_ENDPOINT
    """Base URL of the running server (a locator)."""

    def check_binding(self, ctx: CheckContext, path: tuple[Any, ...], name: str, model: Any, phase: Any) -> None:
        """The model needs an ollama tag for every quant the phase runs; an undigested tag is
        resolved by the server and recorded at run time."""
        if model.ollama is None:
            ctx.error(path, "missing-key", f"model {name!r} has no ollama reference, needed by engine kind ollama")
            return
        for quant in phase.axes.quants or list(model.ollama.tags)[:1]:
            if quant not in model.ollama.tags:
                ctx.error(path, "missing-key", f"model {name!r} has no ollama tag for quant {quant}",
                          f"add models.{name}.ollama.tags.{quant}")
            elif quant not in model.ollama.digests:
                ctx.resolved_at_run.append(f"models.{name}.ollama.tags.{quant} {model.ollama.tags[quant]}")


@engine("ollama", config=OllamaEngineConfig, display="Ollama", summary="an Ollama server; tag digests checked or recorded",
        modes=("sequential", "concurrent"), concurrency=True, quant_variants=True,
        default_endpoint=DEFAULT_ENDPOINT, health_path="/api/version")
class OllamaEngine(Engine):
    """An already-running Ollama server (see the module docstring)."""

    version = "1"

    def __init__(self, endpoint: str, tag: str, *, seed: int = 0, quant: str | None = None,
                 digest: str | None = None, expected_version: str | None = None,
                 options: dict[str, Any] | None = None, env: dict[str, str] | None = None,
                 keep_alive: str | int = DEFAULT_KEEP_ALIVE, timeout_s: float = 600.0) -> None:
        """Check the server at ``endpoint`` has ``tag`` (with ``digest`` when pinned).

        options: the plan's request options (merged over temperature/seed/num_predict/
        stop). env: the server environment the plan expects (recorded, not readable).
        """
        self.tag, self.seed, self.quant = tag, seed, quant
        self.digest_pinned = _bare(digest)
        self.expected_version = expected_version
        self.options = dict(options or {})
        self.env = dict(env or {})
        self.keep_alive = keep_alive
        base = {"temperature": 0.0, "seed": seed}
        if float({**base, **self.options}["temperature"]) != 0.0:
            raise EngineError(f"the plan's Ollama options set temperature {self.options['temperature']}; "
                              "this adapter implements greedy decoding (temperature 0) only")
        hint = (f"this adapter talks to a running server and does not start one; start it with `ollama serve`"
                f"{' (env ' + ' '.join(f'{k}={v}' for k, v in sorted(self.env.items())) + ')' if self.env else ''}"
                f" and fetch the model with `ollama pull {tag}`")
        from batchsafe.runtime.engines.http import ServerClient

        self.client = ServerClient(endpoint, "Ollama", timeout_s=timeout_s, hint=hint, warm_path="/api/version")
        got = self.client.get("/api/version")
        self.server_version = str(got.get("version")) if isinstance(got, dict) and got.get("version") else None
        if expected_version and self.server_version != expected_version:
            raise EngineError(f"Ollama server at {endpoint} is version {self.server_version}, "
                              f"the plan expects {expected_version}")
        self.entry = self._find_tag(self.client.get("/api/tags"))
        self.digest = _bare(str(self.entry.get("digest") or "")) or None
        if self.digest_pinned and self.digest != self.digest_pinned:
            raise EngineError(f"Ollama server at {endpoint} has {tag} at digest {self.digest}, the plan pins "
                              f"{self.digest_pinned} (re-pull the pinned version, or recompile the plan)")
        level = (self.entry.get("details") or {}).get("quantization_level")
        if quant and level and str(level).upper() != quant.upper():
            raise EngineError(f"Ollama tag {tag} is quantized {level} on the server at {endpoint}, "
                              f"the plan uses it for {quant}")

    @classmethod
    def from_plan(cls, plan: Any, binding: Any, *, run_dir: Any = None, **kwargs: Any) -> OllamaEngine:
        """The engine of ``binding``: the tag (and pinned digest) of its quant, the plan's
        endpoint, expected version, env and options."""
        eng = plan_engine(plan, binding)
        model = model_of(plan, binding.model)
        if model is None or not model.ollama_tags:
            raise EngineError(f"model {binding.model!r} has no ollama tags; the ollama engine needs one per quant")
        if binding.kernel:
            raise EngineError(f"engine {binding.engine!r} (ollama) cannot apply kernel variant {binding.kernel!r}: "
                              "Ollama's kernels are fixed by its build and server environment")
        quant = binding.quant
        if quant is None:
            if len(model.ollama_tags) != 1:
                raise EngineError(f"group of model {binding.model!r} names no quant and the model has ollama tags for "
                                  f"{', '.join(sorted(model.ollama_tags))}; give the phase a quants axis")
            quant = next(iter(model.ollama_tags))
        tag = model.ollama_tags.get(quant)
        if tag is None:
            raise EngineError(f"model {binding.model!r} has no ollama tag for quant {quant} "
                              f"(it has {', '.join(sorted(model.ollama_tags))})")
        cfg = eng.config
        return cls(plan.locators.endpoints.get(binding.engine) or DEFAULT_ENDPOINT, tag, seed=plan.seed, quant=quant,
                   digest=model.ollama_digests.get(quant), expected_version=cfg.get("version"),
                   options=cfg.get("options"), env=cfg.get("env"), **kwargs)

    def _find_tag(self, listing: Any) -> dict[str, Any]:
        models = listing.get("models") if isinstance(listing, dict) else None
        if not isinstance(models, list):
            raise EngineError(f"Ollama server at {self.client.base_url}: GET /api/tags is not a model list: "
                              f"{str(listing)[:200]}")
        want = _full_name(self.tag)
        for m in models:
            if want in (_full_name(str(m.get("name") or "")), _full_name(str(m.get("model") or ""))):
                return dict(m)
        have = ", ".join(sorted(str(m.get("name")) for m in models)) or "no models"
        raise EngineError(f"Ollama server at {self.client.base_url} does not have the plan's tag {self.tag} "
                          f"(it has {have}); fetch it with `ollama pull {self.tag}`")

    def describe(self) -> dict[str, Any]:
        """Server version, the tag's resolved digest and details, and the request settings."""
        return {
            "engine": self.name, "engine_version": self.version, "endpoint": self.client.base_url,
            "server_version": self.server_version, "expected_version": self.expected_version,
            "tag": self.tag, "quant": self.quant, "digest": self.digest, "digest_pinned": self.digest_pinned,
            "digest_status": "pinned, matched" if self.digest_pinned else "unpinned, resolved at run",
            "model": {k: self.entry.get(k) for k in ("name", "size", "modified_at", "details")},
            "options": {"temperature": 0.0, "seed": self.seed, **self.options},
            "per_request_options": ["num_predict (max_tokens)", "stop (when set)"],
            "keep_alive": self.keep_alive,
            "server_env_expected": self.env,
            "OLLAMA_NUM_PARALLEL": self.env.get("OLLAMA_NUM_PARALLEL"),
            "server_env_note": "Ollama does not report its environment; these values are the plan's, not read back",
            "server_defaults_note": "options not set above take the Modelfile's parameters, then Ollama's "
                                    "DefaultOptions (repeat_penalty 1.1, repeat_last_n 64, top_k 40, top_p 0.9)",
        }

    def _body(self, req: GenRequest) -> dict[str, Any]:
        if req.temperature != 0.0:
            raise EngineError(f"{req.key}: only greedy decoding (temperature 0) is implemented")
        opts: dict[str, Any] = {"temperature": 0.0, "seed": self.seed, "num_predict": req.max_tokens}
        if req.stop:
            opts["stop"] = list(req.stop)
        return {"model": self.tag, "messages": [{"role": r, "content": c} for r, c in req.messages],
                "stream": False, "keep_alive": self.keep_alive, "options": {**opts, **self.options}}

    def _result(self, req: GenRequest, body: Any, timing: dict[str, Any], num_predict: int) -> GenResult:
        where = f"Ollama chat of {req.key}"
        if not isinstance(body, dict) or body.get("done") is not True or not isinstance(body.get("message"), dict):
            raise EngineError(f"{where}: not a finished chat answer: {str(body)[:200]}")
        evals = body.get("eval_count")
        if type(evals) is not int or evals < 0:
            raise EngineError(f"{where}: the answer has no eval_count: {str(body)[:200]}")
        vol = {**timing, "server": {k: body.get(k) for k in SERVER_FIELDS}}
        reason = body.get("done_reason")
        if reason is None:  # servers before done_reason existed
            reason = "length" if num_predict > 0 and evals >= num_predict else "stop"
            vol["done_reason_inferred"] = True
        if reason not in ("stop", "length"):
            raise EngineError(f"{where}: unexpected done_reason {reason!r}", transient=reason == "unload")
        prompt = body.get("prompt_eval_count")
        if type(prompt) is not int:
            # Ollama before mid-2024 omitted it when the prompt came from its cache (ollama#2068).
            prompt = 0
            vol["prompt_eval_count_missing"] = True
        return GenResult(key=req.key, text=body["message"].get("content") or "", finish_reason=reason,
                         prompt_tokens=prompt, completion_tokens=evals, volatile=vol)

    def run_group(self, requests: list[GenRequest], mode: str) -> list[GenResult]:
        """``sequential`` or ``concurrent`` (barrier-released); results in request order."""
        if mode not in self.capabilities.modes:
            raise EngineError(f"ollama engine does not implement dispatch mode {mode!r} "
                              f"(it implements {', '.join(self.capabilities.modes)})")
        reqs = list(requests)
        if not reqs:
            return []
        bodies = [self._body(r) for r in reqs]
        calls = [self.client.prepare("POST", "/api/chat", b) for b in bodies]
        from batchsafe.runtime.engines.http import fan_out, group_timing, sequential

        answers = sequential(calls) if mode == "sequential" else fan_out(calls, aligned=True)
        shared = group_timing([t for _, t in answers], mode)
        return [self._result(r, body, {**timing, **shared}, int(b["options"].get("num_predict") or 0))
                for r, b, (body, timing) in zip(reqs, bodies, answers)]

    def close(self) -> None:
        """Nothing to release: the model's residency is governed by keep_alive."""
