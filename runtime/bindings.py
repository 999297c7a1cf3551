"""Which engine instance runs a group, and how the default one is built from the plan.

A :class:`Binding` is everything that selects an engine *instance*: consecutive groups
with the same binding share one loaded model; a change of binding closes the old
engine and builds a new one. The default factory builds the embedded llama.cpp engine
from the plan (model file fetched by sha256 through :mod:`runtime.model_store`,
quantization variants built and checked against the plan's pinned digests), and fails
early and clearly for engine kinds this build cannot run (:func:`preflight`).

It also holds the plan side of a group: the requests built from the plan's prompts and
decoding policy, the check of what an engine returned, and the deterministic records
that go into the journal.
"""

from __future__ import annotations

import importlib
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from batchsafe.compiler.plan import Group, Plan
from batchsafe.compiler.plan_lookup import kernel_variant, model_of
from batchsafe.runtime.engine import (
    Engine,
    EngineError,
    GenRequest,
    GenResult,
    engine_class,
    plan_engine,
    registered_engines,
)
from batchsafe.runtime.engines.catalogue import ENGINES

SERVER_PROBES: dict[str, tuple[str, str, str]] = {
    k: (e.display, e.default_endpoint, e.health_path) for k, e in ENGINES.items() if e.default_endpoint and e.health_path
}
"""Server engine kind -> (display name, default endpoint, health path), from the engine catalogue."""

PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Binding:
    """What selects an engine instance; groups with equal bindings share one engine."""

    engine: str
    """Engine name in the plan."""
    kind: str
    """Engine kind (one of ``runtime/engines/catalogue.py``'s: llamacpp, vllm, ollama)."""
    model: str
    """Model name in the plan."""
    quant: str | None = None
    """Quantization variant of the group's condition (None: the model file as pinned)."""
    kernel: str | None = None
    """Kernel-flag variant id of the group's condition."""
    tensor_parallel: int | None = None
    """Tensor-parallel size of the group's condition (a server of its own per size)."""

    def label(self) -> str:
        """Short human label, e.g. ``local/llamacpp m1 q=Q2_K``."""
        extra = "".join(f" {k}={v}" for k, v in (("q", self.quant), ("k", self.kernel),
                                                   ("tp", self.tensor_parallel)) if v)
        return f"{self.engine}/{self.kind} {self.model}{extra}"

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for logs and environment.json); no TP key without a TP axis, as before it existed."""
        out = asdict(self)
        if self.tensor_parallel is None:
            del out["tensor_parallel"]
        return out


EngineFactory = Callable[[Binding], Engine]
"""Builds the engine instance for a binding."""


def binding_for(plan: Plan, group: Group) -> Binding:
    """The binding of a group: its engine (name and kind), model, quant and kernel variant."""
    kinds = {e.name: e.kind for e in plan.engines}
    return Binding(engine=group.engine, kind=kinds.get(group.engine, "?"), model=group.model,
                   quant=group.condition.quant, kernel=group.condition.kernel,
                   tensor_parallel=group.condition.tensor_parallel)


# --- requests and records: the plan side of a group -------------------------------


def build_requests(plan: Plan, group: Group, prompts: dict[str, Any] | None = None) -> list[GenRequest]:
    """The requests of a group: sample ids as keys, ``filler:<group>:<position>`` for fillers."""
    prompts = prompts if prompts is not None else {p.id: p for p in plan.prompts}
    return [_request(plan, prompts[m.prompt], m.sample or f"filler:{group.id}:{i}")
            for i, m in enumerate(group.members)]


def _request(plan: Plan, prompt: Any, key: str) -> GenRequest:
    dec = plan.decoding
    return GenRequest(key=key, messages=tuple((m.role, m.content) for m in prompt.messages),
                      max_tokens=int(dec["max_tokens"]), stop=tuple(dec.get("stop") or ()),
                      temperature=float(dec.get("temperature", 0.0)))


def warmup_requests(plan: Plan, phase: str, prompts: dict[str, Any] | None = None) -> list[GenRequest]:
    """``plan.decoding['warmup']`` requests: the first distinct prompts of ``phase`` in plan order."""
    prompts = prompts if prompts is not None else {p.id: p for p in plan.prompts}
    want = int(plan.decoding.get("warmup", 0) or 0)
    ids: list[str] = []
    for g in sorted(plan.groups, key=lambda g: g.index):
        if g.phase == phase:
            ids += [m.prompt for m in g.members if m.prompt not in ids]
        if len(ids) >= want:
            break
    return [_request(plan, prompts[pid], f"warmup:{i}") for i, pid in enumerate(ids[:want])]


def check_results(requests: list[GenRequest], results: Any) -> list[GenResult]:
    """One well-formed result per request, in order, with matching keys; else a permanent EngineError."""
    if not isinstance(results, list) or len(results) != len(requests):
        n = len(results) if isinstance(results, list) else type(results).__name__
        raise EngineError(f"engine returned {n} results for {len(requests)} requests")
    for i, (req, res) in enumerate(zip(requests, results)):
        if not isinstance(res, GenResult) or res.key != req.key:
            got = res.key if isinstance(res, GenResult) else type(res).__name__
            raise EngineError(f"result {i} has key {got!r}, expected {req.key!r} (results out of order?)")
        ints = (res.prompt_tokens, res.completion_tokens)
        if (not isinstance(res.text, str) or not isinstance(res.finish_reason, str)
                or any(type(v) is not int or v < 0 for v in ints)):
            raise EngineError(f"result {i} ({req.key}) is malformed: {res!r}")
    return results


def group_records(plan: Plan, group: Group, results: list[GenResult],
                  samples: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(scored records, filler records) of a finished group: deterministic content only."""
    samples = samples if samples is not None else {s.id: s for s in plan.samples}
    members = [m.prompt for m in group.members]
    filler_pos = [i for i, m in enumerate(group.members) if m.sample is None]
    records, fillers = [], []
    for i, (m, r) in enumerate(zip(group.members, results)):
        out = {"text": r.text, "finish_reason": r.finish_reason, "prompt_tokens": r.prompt_tokens,
               "completion_tokens": r.completion_tokens}
        common = {"group": group.id, "position": i, "prompt": m.prompt, "phase": group.phase,
                  "model": group.model, "engine": group.engine}
        if m.sample is None:
            fillers.append({"filler": r.key, **common, "condition": group.condition.model_dump(mode="json"), **out})
        else:
            s = samples[m.sample]
            records.append({"sample": s.id, **common, "phase": s.phase, "model": s.model,
                            "condition": s.condition.model_dump(mode="json"), "group_members": members,
                            "filler_positions": filler_pos, **out})
    return records, fillers


def _bare_hex(digest: str) -> str:
    return digest.split(":", 1)[1] if ":" in digest else digest


def probe_server(kind: str, endpoint: str | None) -> str | None:
    """GET the server's health URL; None when it answers, else why not (one line)."""
    label, default, health = SERVER_PROBES[kind]
    base = (endpoint or default).rstrip("/")
    try:
        with urllib.request.urlopen(base + health, timeout=PROBE_TIMEOUT_S) as resp:
            resp.read(1 << 16)
        return None
    except urllib.error.HTTPError as exc:  # it answered: reachable, but unhappy
        return f"{label} server at {base} answered {health} with HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        text = getattr(reason, "strerror", None) or str(reason)
        return f"{label} server at {base} is not reachable ({str(text).lower()})"


def preflight(plan: Plan, groups: list[Group] | None = None) -> list[str]:
    """Problems that would stop the run, found before anything runs (empty list: go).

    Checks every engine the given groups (default: all) need: server kinds are probed
    over HTTP (2 s timeout) and reported as unavailable in this build; the embedded
    engine needs llama_cpp importable, the dispatch modes it implements, a pinned model
    with a source (or already cached), and no kernel-flag variants.
    """
    groups = plan.groups if groups is None else groups
    problems: list[str] = []
    engines = {e.name: e for e in plan.engines}
    models = {m.name: m for m in plan.models}
    seen: set[Any] = set()
    for g in groups:
        eng = engines.get(g.engine)
        if eng is None:
            _add(problems, f"group {g.id} names engine {g.engine!r}, which the plan does not define")
            continue
        if eng.kind != "llamacpp":
            key = ("kind", eng.name)
            if key in seen:
                continue
            seen.add(key)
            # An adapter with its own preflight (e.g. vLLM's launched servers) says what would
            # stop it; None from it means "an external server: probe it like any other".
            hook = getattr(engine_class(eng.kind), "preflight", None) if eng.kind in ENGINES else None
            found = hook(plan, eng.name, groups) if hook is not None else None
            if found is not None:
                problems.extend(p for p in found if p not in problems)
                continue
            why = None
            if eng.kind in SERVER_PROBES:
                why = probe_server(eng.kind, plan.locators.endpoints.get(eng.name))
            if eng.kind in registered_engines() and hasattr(engine_class(eng.kind), "from_plan"):
                # An adapter exists: a dead server is still found before anything runs;
                # model identity and versions are checked by the adapter when it starts.
                if why:
                    _add(problems, f"engine {eng.name!r}: {why}")
                continue
            _add(problems, f"engine {eng.name!r}: {_unavailable(eng.kind, why)}")
            continue
        if ("llama", None) not in seen:
            seen.add(("llama", None))
            info = ENGINES["llamacpp"]
            try:
                for module in info.requires:
                    importlib.import_module(module)
                info.factory()
            except ImportError as exc:
                _add(problems, f"engine {eng.name!r} (llamacpp) needs llama-cpp-python: {exc}; "
                               f"install with: pip install 'batchsafe[{','.join(info.extras)}]'")
        modes = ENGINES["llamacpp"].modes  # the catalogue's, whether or not llama_cpp imported
        if g.mode not in modes:
            _add(problems, f"engine {eng.name!r} (llamacpp) does not implement dispatch mode {g.mode!r} "
                           f"(group {g.id}, phase {g.phase}); it implements {', '.join(modes)}")
        model = models.get(g.model)
        if model is None or not model.gguf_sha256:
            _add(problems, f"model {g.model!r} has no pinned gguf sha256; the llamacpp engine needs one")
        else:
            from batchsafe.runtime import model_store

            sources = plan.locators.model_sources.get(g.model) or []
            if not model_store.model_path(_bare_hex(model.gguf_sha256)).exists():
                if not sources:
                    _add(problems, f"model {g.model!r} has no source to fetch it from and is not in the model cache")
                elif all(x.get("kind") == "local" and not Path(str(x.get("path"))).is_file() for x in sources):
                    # Only local files and none there: certain to fail, so say it now (remote ones are tried later).
                    paths = ", ".join(str(x.get("path")) for x in sources)
                    _add(problems, f"model {g.model!r} is not in the model cache and its local file is missing: {paths}")
        var = kernel_variant(plan, g.condition.kernel, phase=g.phase)
        if var and (var.get("env") or var.get("flags")):
            _add(problems, f"engine {eng.name!r} (llamacpp) cannot apply kernel variant {g.condition.kernel!r} "
                           "(env/flags are fixed when llama.cpp is built and loaded)")
    return problems


def _unavailable(kind: str, why: str | None) -> str:
    info = ENGINES.get(kind)
    needs = (f"{info.target} with pip install 'batchsafe[{','.join(info.extras)}]'" if info and info.extras
             else info.target if info else "an adapter declared in runtime/engines/catalogue.py")
    msg = f"engine kind {kind} is not available in this build: needs {needs}"
    # An unreachable server is the first thing to fix, so it leads the message.
    return f"{why}; besides, {msg}" if why else msg


def _add(problems: list[str], msg: str) -> None:
    if msg not in problems:  # one line per distinct problem, not per group
        problems.append(msg)


class DefaultEngineFactory:
    """Builds engines from the plan; also offers :meth:`preflight` to the executor."""

    def __init__(self, plan: Plan, cache_dir: str | None = None) -> None:
        """``cache_dir``: model cache root (default: $BATCHSAFE_CACHE or ~/.cache/batchsafe)."""
        self.plan = plan
        self.cache_dir = cache_dir
        self.run_dir: Path | None = None
        """Set by run_plan: where launched servers write their logs and launch records."""

    def preflight(self, groups: list[Group] | None = None) -> list[str]:
        """See :func:`preflight`."""
        return preflight(self.plan, groups)

    def __call__(self, binding: Binding) -> Engine:
        """Build the engine instance of ``binding`` (EngineError, permanent, when it cannot)."""
        if binding.kind == "llamacpp":
            return self._llamacpp(binding)
        if binding.kind in registered_engines() and hasattr(engine_class(binding.kind), "from_plan"):
            # run_dir: where an adapter that starts processes writes their logs and records
            return engine_class(binding.kind).from_plan(self.plan, binding, run_dir=self.run_dir)  # type: ignore[attr-defined]
        why = None
        if binding.kind in SERVER_PROBES:
            why = probe_server(binding.kind, self.plan.locators.endpoints.get(binding.engine))
        raise EngineError(_unavailable(binding.kind, why), transient=False)

    def model_file(self, binding: Binding) -> tuple[str, str]:
        """(path, hex sha256) of the model file the binding runs, fetched/built and verified."""
        from batchsafe.runtime import model_store

        model = model_of(self.plan, binding.model)
        if model is None or not model.gguf_sha256:
            raise EngineError(f"model {binding.model!r} has no pinned gguf sha256")
        sha = _bare_hex(model.gguf_sha256)
        sources = self.plan.locators.model_sources.get(binding.model) or []
        errors: list[str] = []
        path = None
        if model_store.model_path(sha, self.cache_dir).exists() and not sources:
            sources = [{"kind": "local", "path": str(model_store.model_path(sha, self.cache_dir))}]
        for src in sources:
            # The compiler writes optional fields as null; the store's strict models want them absent.
            clean = {k: v for k, v in src.items() if v is not None}
            try:
                path = model_store.ensure_model(sha, clean, self.cache_dir)
                break
            except (model_store.ModelStoreError, ValueError) as exc:
                errors.append(f"{clean.get('kind')}: {exc}")
        if path is None:
            raise EngineError(f"model {binding.model!r} (sha256 {sha}) could not be obtained: "
                              + ("; ".join(errors) or "no sources"))
        if model.gguf_name:
            got = model_store.gguf_summary(path).get("name")
            if got != model.gguf_name:
                raise EngineError(f"model {binding.model!r}: GGUF general.name is {got!r}, the plan expects "
                                  f"{model.gguf_name!r}")
        if not binding.quant or binding.quant == model.gguf_quant:
            return str(path), sha
        try:
            vpath, vsha = model_store.quantize(path, binding.quant, self.cache_dir, src_sha256=sha)
        except model_store.ModelStoreError as exc:
            raise EngineError(f"model {binding.model!r}: building the {binding.quant} variant failed: {exc}") from None
        pinned = model.variants.get(binding.quant)
        if pinned and _bare_hex(pinned) != vsha:
            raise EngineError(f"model {binding.model!r}: the {binding.quant} variant built here has sha256 {vsha}, "
                              f"the plan pins {_bare_hex(pinned)} (a different llama.cpp quantizer?)")
        return str(vpath), vsha

    def _llamacpp(self, binding: Binding) -> Engine:
        try:
            importlib.import_module("batchsafe.runtime.engines.llamacpp")
        except ImportError as exc:
            raise EngineError(f"engine kind llamacpp needs llama-cpp-python: {exc}") from None
        cfg = plan_engine(self.plan, binding).config
        path, sha = self.model_file(binding)
        # One context size for every group of this engine: bs=1 and bs=K run in the same
        # context layout, so groups differ only in what shares the forward pass.
        n_seq = max([len(g.members) for g in self.plan.groups if g.engine == binding.engine] or [1])
        cls = engine_class("llamacpp")
        return cls(path, n_ctx=cfg.get("n_ctx", 2048), n_threads=cfg.get("n_threads"),  # type: ignore[call-arg]
                   n_batch=cfg.get("n_batch", 512), seed=self.plan.seed, chat_template=cfg.get("chat_template"),
                   n_seq_max=n_seq, model_sha256=sha)


def default_engine_factory(plan: Plan) -> DefaultEngineFactory:
    """The engine factory ``run_plan`` uses when none is given (callable: Binding -> Engine)."""
    return DefaultEngineFactory(plan)
