"""Verification stage ``stack``: the servers the runtime launched are the plan's.

For every engine the plan launches (``launch.kind`` process or container), the bundle
must hold a launch record (``launch/*.json``, :class:`~batchsafe.runtime.launch.record.LaunchRecord`)
for each kernel variant its groups ran under, and each record must show:

* the command line the plan implies: the vLLM OpenAI server module, then the launcher's
  own flags, then exactly the plan's flags followed by the variant's;
* exactly the plan's env plus the variant's (nothing from the plan missing or changed);
* the vLLM version the plan pins, as the server reported it on ``/version``;
* the served model id, ``max_model_len`` and logged dtype the flags ask for;
* a weights digest that is the digest of the recorded per-file digests and, when the
  plan pins ``hf.weights_sha256``, equal to it;
* the plan's launch kind; for containers, the plan's image ``repo@sha256:`` as the repo
  digest that ran (a record of another digest fails naming both), read-only model mounts;
* for phases with a ``tensor_parallel`` axis: one record per TP size the groups ran at,
  whose ``--tensor-parallel-size`` is the plan's size (the TP variant's flag and env
  follow the variant's), and for sizes above 1 NVLink multicast off in its env.

Records are parsed as JSON by a pydantic model, never executed.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from batchsafe.runtime.launch import tensor_parallel
from batchsafe.runtime.launch.record import LAUNCH_DIR, LaunchRecord
from batchsafe.runtime.launch.vllm_process import RESERVED_FLAGS, flag_value
from batchsafe.runtime.launch.weights import weights_digest
from batchsafe.compiler.plan_lookup import engine_of, kernel_variant
from batchsafe.core import layout

from .checks import PLAN, Context
from .report import Stage

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
TIMINGS = layout.TIMINGS
_DTYPES = {"half": "float16", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def launched_engines(plan: Any) -> dict[str, Any]:
    """Engines of the plan whose servers the runtime starts."""
    return {e.name: e for e in plan.engines if (e.config.get("launch") or {}).get("kind") in ("process", "container")}


def _variant(plan: Any, engine: str, kernel: str | None) -> dict[str, Any]:
    return kernel_variant(plan, kernel, engine=engine) or {}


def _plan_flags(argv: list[str]) -> list[str] | None:
    """The flags after the launcher's own (``--port N`` is the last of those)."""
    try:
        i = len(argv) - 1 - argv[::-1].index("--port")
    except ValueError:
        return None
    return argv[i + 2:]


def _tp_check(plan: Any, rec: LaunchRecord, flags: list[str], env: dict[str, str],
              st: Stage) -> tuple[list[str], dict[str, str]]:
    """The TP part of a record: its size is one the plan gives the engine, its argv's
    ``--tensor-parallel-size`` is that size, and a TP > 1 server ran with multicast off.
    Returns the wanted flags/env with the plan's TP variant added (as the launcher adds it)."""
    where = rec.file_name()
    got = tensor_parallel.record_tp(rec.argv)
    if rec.tensor_parallel is None:
        if got is not None and tensor_parallel.plan_variant(plan, rec.engine, int(got) if got.isdigit() else -1):
            st.fail(f"{where}: argv says {tensor_parallel.TP_FLAG} {got}, but the record names no TP size")
        return flags, env
    var = tensor_parallel.plan_variant(plan, rec.engine, rec.tensor_parallel)
    if var is None:
        st.fail(f"{where}: tensor_parallel {rec.tensor_parallel} is not a size the plan gives engine {rec.engine!r}")
        return flags, env
    if got != str(var["size"]):
        st.fail(f"{where}: the server ran with {tensor_parallel.TP_FLAG} {got}, the plan says {var['size']}")
    if var["size"] > 1:
        off = {k: v for k, v in tensor_parallel.MULTICAST_OFF_ENV.items() if rec.env.get(k) != v}
        if off:
            st.fail(f"{where}: a tensor_parallel {var['size']} server ran without NVLink multicast off: "
                    + ", ".join(f"{k}={rec.env.get(k)!r} (want {v})" for k, v in sorted(off.items())))
    return tensor_parallel.apply(flags, env, var)


def _container_check(image: str | None, rec: LaunchRecord, st: Stage) -> None:
    """A container record ran the plan's image digest, with the recorded command and env, models read-only."""
    where, c = rec.file_name(), rec.container
    if c is None:
        st.fail(f"{where}: a container launch without its container section (image digest, ids)")
        return
    if c.repo_digest != image or c.image != image:
        got, want = c.repo_digest.partition("@")[2], str(image).partition("@")[2]
        st.fail(f"{where}: the container ran {c.repo_digest} (digest {got or '?'}), the plan pins {image} "
                f"(digest {want or '?'})")
    if c.command != rec.argv or c.env != rec.env:
        st.fail(f"{where}: the container section's command/env differ from the record's argv/env")
    if any(m.get("target") == "/model" and m.get("mode") != "ro" for m in c.mounts):
        st.fail(f"{where}: the model folder was mounted writable: {c.mounts}")


def check_record(plan: Any, rec: LaunchRecord, st: Stage) -> None:
    """Compare one launch record with what the plan says that server must be."""
    where = rec.file_name()
    eng = engine_of(plan, rec.engine)
    if eng is None:
        st.fail(f"{where}: engine {rec.engine!r} is not in the plan")
        return
    var = _variant(plan, rec.engine, rec.kernel)
    want_flags = [*map(str, eng.config.get("flags") or []), *map(str, var.get("flags") or [])]
    want_env = {**{k: str(v) for k, v in (eng.config.get("env") or {}).items()},
                **{k: str(v) for k, v in (var.get("env") or {}).items()}}
    want_flags, want_env = _tp_check(plan, rec, want_flags, want_env, st)
    want_kind = (eng.config.get("launch") or {}).get("kind")
    if rec.kind != want_kind:
        st.fail(f"{where}: a {rec.kind} launch, the plan says launch.kind {want_kind}")
    if rec.kind == "container":
        _container_check(eng.config.get("image"), rec, st)
    elif SERVER_MODULE not in rec.argv:
        st.fail(f"{where}: argv does not run {SERVER_MODULE}")
    got_flags = _plan_flags(rec.argv)
    if got_flags != want_flags:
        st.fail(f"{where}: the server ran with flags {got_flags}, the plan says {want_flags}")
    if any(f.split("=", 1)[0] in RESERVED_FLAGS for f in (got_flags or [])):
        st.fail(f"{where}: plan flags override the launcher's {', '.join(RESERVED_FLAGS)}")
    if rec.env != want_env:
        diff = sorted(set(rec.env.items()) ^ set(want_env.items()))
        st.fail(f"{where}: the server's env differs from the plan's: {diff}")
    want_version = eng.config.get("version")
    if want_version is not None and rec.server_version != str(want_version):
        st.fail(f"{where}: the server reported vLLM {rec.server_version!r}, the plan pins {want_version}")
    model_names = {g.model for g in plan.groups if g.engine == rec.engine}
    models = [m for m in plan.models if m.name in model_names]
    if rec.served_model not in {m.hf_repo for m in models}:
        st.fail(f"{where}: served model {rec.served_model!r} is none of the plan's {sorted(m.hf_repo for m in models)}")
    want_len = flag_value(want_flags, "--max-model-len")
    if want_len is not None and str(rec.max_model_len) != want_len:
        st.fail(f"{where}: max_model_len {rec.max_model_len}, the flags say {want_len}")
    want_dtype = flag_value(want_flags, "--dtype")
    if want_dtype not in (None, "auto") and rec.dtype is not None and \
            _DTYPES.get(want_dtype, want_dtype) != _DTYPES.get(rec.dtype, rec.dtype):
        st.fail(f"{where}: the server logged dtype {rec.dtype}, the flags say {want_dtype}")
    if rec.weights_files and weights_digest(rec.weights_files) != rec.weights_digest:
        st.fail(f"{where}: weights_digest {rec.weights_digest} is not the digest of its weights_files")
    pins = {m.hf_weights_sha256 for m in models if m.hf_weights_sha256}
    if pins and rec.weights_digest not in pins:
        st.fail(f"{where}: the server loaded weights {rec.weights_digest}, the plan pins {sorted(pins)}")


def batching_summary(ctx: Context, launched: dict[str, Any]) -> str:
    """How many multi-sequence synchronized/prompt_list groups the server was seen running
    all together (``server_running_max`` >= K in volatile/timings.jsonl). Informational:
    the sampler can miss a short overlap, so a shortfall is reported, not failed."""
    if ctx.plan is None or not ctx.src.has(TIMINGS) or TIMINGS in ctx.bad:
        return ""
    sizes = {g.id: len(g.members) for g in ctx.plan.groups
             if g.engine in launched and g.mode in ("synchronized", "prompt_list") and len(g.members) > 1}
    seen = together = 0
    try:
        rows = [orjson.loads(x) for x in ctx.src.read(TIMINGS).splitlines() if x.strip()]
    except orjson.JSONDecodeError:
        return "; volatile/timings.jsonl is not JSON lines"
    for row in rows:
        k = sizes.get(row.get("group")) if isinstance(row, dict) else None
        ev = row.get("batching") if k else None
        if isinstance(ev, dict) and isinstance(ev.get("server_running_max"), int):
            seen += 1
            together += ev["server_running_max"] >= k
    return f"; batching evidence: {together}/{seen} multi-sequence groups seen running together" if seen else ""


def check_stack(ctx: Context) -> Stage | None:
    """The ``stack`` stage; None when the plan launches nothing (external servers, embedded engines)."""
    plan = ctx.plan
    if plan is None:
        return None
    launched = launched_engines(plan)
    if not launched:
        return None
    st = Stage(name="stack")
    names = [e.name for e in ctx.src.manifest.files if e.name.startswith(LAUNCH_DIR + "/") and e.name.endswith(".json")]
    seen: set[tuple[str, str | None]] = set()
    n_ok = 0
    for name in names:
        if name in ctx.bad:
            st.fail(f"{name}: failed integrity")
            continue
        try:
            rec = LaunchRecord.from_bytes(ctx.src.read(name))
        except (ValidationError, ValueError) as exc:
            st.fail(f"{name}: not a launch record: {str(exc).splitlines()[0]}")
            continue
        if rec.file_name() != name:
            st.fail(f"{name}: the record inside names itself {rec.file_name()}")
        before = st.n_problems
        check_record(plan, rec, st)
        if rec.stop_reason != "failed":
            seen.add((rec.engine, rec.kernel, rec.tensor_parallel))
        n_ok += st.n_problems == before
    needed = {(g.engine, g.condition.kernel, g.condition.tensor_parallel) for g in plan.groups if g.engine in launched}
    for engine, kernel, tp in sorted(needed - seen, key=str):
        st.fail(f"{PLAN}: engine {engine!r}{' kernel ' + kernel if kernel else ''}"
                f"{f' tensor_parallel {tp}' if tp else ''} ran groups, but no launch record "
                "shows a server started for it")
    st.summary = (f"{len(names)} launch record(s) match the plan's flags, env, version and weights; "
                  f"{len(needed)} launched binding(s) covered" + batching_summary(ctx, launched))
    if st.status == "FAIL":
        st.summary = f"{st.n_problems} problem(s) in {len(names)} launch record(s)"
    return st
