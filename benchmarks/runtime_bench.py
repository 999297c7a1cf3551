"""Runtime benchmark: the executor's overhead over a raw llama-cpp-python loop.

Both arms decode the same groups of the quickstart plan (phase ``p1_batch_size`` at batch
sizes 1 and 4) with the same model file, context settings and warmup:

(a) ``batchsafe``: :func:`runtime.executor.run_plan` on a reduced plan that holds only
    those groups (progress off) into a fresh temporary run directory: preflight, model
    store look-up, engine load, warmup, chat template, tokenization, true-batched greedy
    decoding, result checks, record building, one fsynced journal line per group,
    volatile timings/logs, coverage check, outputs/, environment.json.
(b) ``raw``: a plain loop written directly against llama_cpp's low-level API: load the
    model, one context, the GGUF chat template through llama-cpp-python's own
    ``Jinja2ChatFormatter``, ``llama_tokenize``, one ``llama_batch`` per step with one
    sequence id per group member, argmax of the float32 logits, stop on an
    end-of-generation token or ``max_tokens``, ``llama_detokenize``. Nothing written.

Arms alternate (a, b, a, b, ...); the report gives the median wall times, the overhead
``(a - b) / b``, per-part timings of both arms, and a cProfile of one extra run of (a)
(top non-llama costs). The generated texts of every run of both arms must be
byte-identical (asserted), which also proves the raw loop decodes the same thing.
"""

from __future__ import annotations

import cProfile
import ctypes
import importlib
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from batchsafe.compiler.plan import Plan

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "quickstart.yaml"
PHASE = "p1_batch_size"
GROUPS_PER_BATCH_SIZE: dict[int, int | None] = {1: 16, 4: 5}
"""Batch size -> how many of its groups (the first in plan order; None: all): about 60 s of
decoding per arm on 2 idle cores (a bs=1 group of 40 tokens takes ~2 s, a bs=4 one ~7 s)."""
TARGET_PCT = 3.0


# --- the reduced plan ----------------------------------------------------------------


def reduced_plan(plan: Plan, groups_per_bs: dict[int, int | None] | None = None, phase: str = PHASE) -> Plan:
    """``plan`` restricted to the first groups of ``phase`` at each batch size of
    ``groups_per_bs`` (batch size -> count, None: all), with their samples and prompts;
    the phase summary and plan_hash are recomputed."""
    want = GROUPS_PER_BATCH_SIZE if groups_per_bs is None else groups_per_bs
    groups, taken = [], {b: 0 for b in want}
    for g in sorted(plan.groups, key=lambda g: g.index):
        bs = g.condition.batch_size
        if g.phase == phase and bs in want and (want[bs] is None or taken[bs] < want[bs]):  # type: ignore[operator]
            taken[bs] += 1
            groups.append(g)
    ids = {g.id for g in groups}
    samples = [s for s in plan.samples if s.group in ids]
    used = {m.prompt for g in groups for m in g.members}
    prompts = [p for p in plan.prompts if p.id in used]
    phases = [p.model_copy(update={"samples": len(samples), "groups": len(groups)})
              for p in plan.phases if p.id == phase]
    experiment = {**plan.experiment, "id": f"{plan.experiment.get('id')}_runtime_bench"}
    return plan.model_copy(update={"groups": groups, "samples": samples, "prompts": prompts, "phases": phases,
                                   "experiment": experiment, "targets": []}).with_hash()


def _engine_settings(plan: Plan) -> dict[str, Any]:
    """The model file and context settings the default engine factory uses for ``plan``
    (fetching the model into the cache if needed, outside any timing)."""
    from batchsafe.runtime.bindings import DefaultEngineFactory, binding_for

    group = min(plan.groups, key=lambda g: g.index)
    binding = binding_for(plan, group)
    path, _sha = DefaultEngineFactory(plan).model_file(binding)
    cfg = next(e.config for e in plan.engines if e.name == binding.engine)
    return {"model_path": path, "n_ctx": cfg.get("n_ctx", 2048), "n_batch": cfg.get("n_batch", 512),
            "n_threads": cfg.get("n_threads") or max(1, (os.cpu_count() or 2) - 1),
            "n_seq_max": max(len(g.members) for g in plan.groups if g.engine == binding.engine)}


def _warmup_prompts(plan: Plan) -> list[str]:
    """The prompt ids of the plan's warmup: the first ``decoding.warmup`` distinct prompts
    of the first group's phase, in plan order (what the executor warms up with)."""
    want = int(plan.decoding.get("warmup", 0) or 0)
    ordered = sorted(plan.groups, key=lambda g: g.index)
    ids: list[str] = []
    for g in ordered:
        if g.phase == ordered[0].phase:
            ids += [m.prompt for m in g.members if m.prompt not in ids]
    return ids[:want]


# --- time spent inside llama.cpp ------------------------------------------------------

_C_CALLS = ("llama_decode", "llama_memory_clear", "llama_model_load_from_file", "llama_init_from_model",
            "llama_free", "llama_model_free")
"""llama.cpp C functions timed in both arms (both call them as ``llama_cpp.<name>`` at call
time, so wrapping the module attribute catches every call); wall time outside them is
Python, I/O and waiting."""


@contextmanager
def _c_timers() -> Iterator[dict[str, list[float]]]:
    """Wrap the ``_C_CALLS`` of ``llama_cpp`` with perf_counter timers: name -> [seconds, calls]."""
    import llama_cpp as ll

    acc: dict[str, list[float]] = {n: [0.0, 0] for n in _C_CALLS}
    saved = {n: getattr(ll, n) for n in _C_CALLS}

    def wrap(name: str, fn: Any) -> Any:
        slot = acc[name]

        def timed(*args: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args)
            finally:
                slot[0] += time.perf_counter() - t
                slot[1] += 1
        return timed

    for n, fn in saved.items():
        setattr(ll, n, wrap(n, fn))
    try:
        yield acc
    finally:
        for n, fn in saved.items():
            setattr(ll, n, fn)


def _measure(fn: Any) -> dict[str, Any]:
    """Run an arm under the C timers; add its wall and CPU time (up to the arm's own end
    marks ``t_end``/``cpu_end``, so reading results back is not counted) and the load."""
    load0 = os.getloadavg()[0]
    with _c_timers() as acc:
        c0, t0 = time.process_time(), time.perf_counter()
        res = fn()
        wall, cpu = res.pop("t_end") - t0, res.pop("cpu_end") - c0
    c_s = sum(v[0] for v in acc.values())
    return {**res, "wall_s": wall, "cpu_s": cpu, "llama_c_s": c_s, "outside_llama_s": wall - c_s,
            "c_calls": {n: {"s": round(v[0], 4), "calls": v[1]} for n, v in acc.items()},
            "load": (load0, os.getloadavg()[0])}


# --- arm (a): batchsafe ------------------------------------------------------------


def run_batchsafe(plan: Plan) -> dict[str, Any]:
    """One ``run_plan`` into a fresh temporary run directory: texts, tokens, parts (s).

    Run it through :func:`_measure`; reading back the outputs is not timed."""
    from batchsafe.runtime.executor import run_plan

    with tempfile.TemporaryDirectory(prefix="batchsafe-bench-") as tmp:
        run_dir = Path(tmp) / "run"
        summary = run_plan(plan, run_dir, progress=False)
        t_end, cpu_end = time.perf_counter(), time.process_time()
        assert summary.complete
        rows = []
        for name in ("samples", "fillers"):
            for line in summary.outputs[name].read_bytes().splitlines():
                r = json.loads(line)
                rows.append(((r["group"], r["position"]), r["text"], r["completion_tokens"]))
        index = {g.id: g.index for g in plan.groups}
        rows.sort(key=lambda x: (index[x[0][0]], x[0][1]))
        eng = json.loads((run_dir / "volatile" / "engines.jsonl").read_bytes().splitlines()[0])
        timings = (run_dir / "volatile" / "timings.jsonl").read_bytes().splitlines()
        groups_s = sum(json.loads(x)["wall_s"] for x in timings)
    return {"t_end": t_end, "cpu_end": cpu_end, "texts": [(k, t) for k, t, _ in rows],
            "tokens": sum(n for _, _, n in rows),
            "parts": {"engine_load_s": eng["load_s"], "warmup_s": eng["warmup_s"], "groups_s": groups_s}}


# --- arm (b): raw llama-cpp-python ---------------------------------------------------------


_LOG_SINK: Any = None


def _quiet(ll: Any) -> None:
    """Drop llama.cpp's log lines except errors (as the engine does): printing pages of
    model-loading logs would be a cost of the raw arm only."""
    global _LOG_SINK
    if _LOG_SINK is None:
        def sink(level: int, text: bytes, _user: Any) -> None:
            if level == 4:
                os.write(2, text)
        _LOG_SINK = ll.llama_log_callback(sink)
    ll.llama_log_set(_LOG_SINK, ctypes.c_void_p(0))


def _trim_partial_utf8(data: bytes) -> bytes:
    """Drop an incomplete UTF-8 character at the very end (max_tokens may cut one)."""
    for n in range(1, min(4, len(data)) + 1):
        b = data[-n]
        if b & 0xC0 != 0x80:
            need = 1 if b < 0x80 else 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return data[:-n] if need > n else data
    return data


def run_raw(plan: Plan, settings: dict[str, Any]) -> dict[str, Any]:
    """The same groups through a plain low-level llama-cpp-python loop (see the module doc)."""
    import llama_cpp as ll
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    t0 = time.perf_counter()
    _quiet(ll)
    ll.llama_backend_init()
    mp = ll.llama_model_default_params()
    mp.n_gpu_layers = 0
    model = ll.llama_model_load_from_file(os.fsencode(settings["model_path"]), mp)
    n_ctx, n_batch, n_seq = settings["n_ctx"], settings["n_batch"], settings["n_seq_max"]
    cp = ll.llama_context_default_params()
    cp.n_ctx = n_ctx * n_seq  # n_ctx cells for each of n_seq sequences
    cp.n_batch = cp.n_ubatch = n_batch
    cp.n_seq_max = n_seq
    cp.n_threads = cp.n_threads_batch = settings["n_threads"]
    cp.kv_unified = False
    cp.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_DISABLED
    cp.no_perf = True
    ctx = ll.llama_init_from_model(model, cp)
    assert model and ctx, "llama.cpp could not load the model"
    vocab = ll.llama_model_get_vocab(model)
    n_vocab = ll.llama_vocab_n_tokens(vocab)
    mem = ll.llama_get_memory(ctx)
    batch = ll.llama_batch_init(n_batch, 0, 1)

    def text_of(tok: int) -> str:
        return ll.llama_vocab_get_text(vocab, tok).decode() if tok >= 0 else ""

    fmt = Jinja2ChatFormatter(ll.llama_model_chat_template(model, None).decode(),
                              eos_token=text_of(ll.llama_vocab_eos(vocab)),
                              bos_token=text_of(ll.llama_vocab_bos(vocab)))

    def tokenize(text: str) -> list[int]:
        raw = text.encode()
        buf = (ll.llama_token * (len(raw) + 16))()
        n = ll.llama_tokenize(vocab, raw, len(raw), buf, len(raw) + 16, False, True)
        return list(buf[:n])

    def decode(entries: list[tuple[int, int, int, bool]]) -> list[int]:
        """(token, pos, seq, logits?) in n_batch chunks -> argmax of each logits row."""
        out = []
        for start in range(0, len(entries), n_batch):
            chunk = entries[start:start + n_batch]
            for i, (tok, pos, seq, want) in enumerate(chunk):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = tok, pos, 1, want
                batch.seq_id[i][0] = seq
            batch.n_tokens = len(chunk)
            assert ll.llama_decode(ctx, batch) == 0
            for i, e in enumerate(chunk):
                if e[3]:
                    row = np.ctypeslib.as_array(ll.llama_get_logits_ith(ctx, i), shape=(n_vocab,))
                    out.append(int(np.argmax(row)))
        return out

    def generate(prompt_ids: list[str], max_tokens: int) -> list[tuple[str, int]]:
        """Greedy-decode the prompts together, one sequence id each; (text, tokens) each."""
        toks = [tokenize(fmt(messages=[{"role": m.role, "content": m.content} for m in prompts[p].messages]).prompt)
                for p in prompt_ids]
        ll.llama_memory_clear(mem, True)
        nxt = decode([(t, j, s, j == len(p) - 1) for s, p in enumerate(toks) for j, t in enumerate(p)])
        live, gen, finish = list(range(len(toks))), [[] for _ in toks], [""] * len(toks)
        while live:
            step = []
            for s, tok in zip(live, nxt):
                if ll.llama_vocab_is_eog(vocab, tok):
                    finish[s] = "stop"
                    continue
                gen[s].append(tok)
                if len(gen[s]) >= max_tokens:
                    finish[s] = "length"
                    continue
                step.append((tok, len(toks[s]) + len(gen[s]) - 1, s, True))
            live = [e[2] for e in step]
            nxt = decode(step) if step else []
        out = []
        for g, f in zip(gen, finish):
            arr = (ll.llama_token * max(1, len(g)))(*g)
            buf = ctypes.create_string_buffer(16 * len(g) + 16)
            n = ll.llama_detokenize(vocab, arr, len(g), buf, len(buf), False, False) if g else 0
            data = buf.raw[:n]
            out.append(((_trim_partial_utf8(data) if f == "length" else data).decode("utf-8", "replace"), len(g)))
        return out

    prompts = {p.id: p for p in plan.prompts}
    max_tokens = int(plan.decoding["max_tokens"])
    assert not plan.decoding.get("stop") and float(plan.decoding.get("temperature", 0.0)) == 0.0
    t1 = time.perf_counter()
    for pid in _warmup_prompts(plan):
        generate([pid], max_tokens)
    t2 = time.perf_counter()
    texts, tokens = [], 0
    for g in sorted(plan.groups, key=lambda g: g.index):
        assert g.mode in ("sequential", "synchronized", "prompt_list")
        ids = [m.prompt for m in g.members]
        # sequential: one sequence at a time; synchronized/prompt_list: one true batch
        if g.mode == "sequential":
            res = [r for p in ids for r in generate([p], max_tokens)]
        else:
            res = generate(ids, max_tokens)
        texts += [((g.id, i), t) for i, (t, _) in enumerate(res)]
        tokens += sum(n for _, n in res)
    t3 = time.perf_counter()
    ll.llama_batch_free(batch)
    ll.llama_free(ctx)
    ll.llama_model_free(model)
    return {"t_end": time.perf_counter(), "cpu_end": time.process_time(), "texts": texts, "tokens": tokens,
            "parts": {"engine_load_s": t1 - t0, "warmup_s": t2 - t1, "groups_s": t3 - t2}}


# --- profile of arm (a) ------------------------------------------------------------------

# Functions whose own time is llama.cpp C code called through ctypes (cProfile charges a
# ctypes call to the Python caller): the decode step, model/context loading and freeing.
_LLAMA_OWN = {("runtime/engines/llamacpp.py", "_decode"), ("runtime/engines/llamacpp.py", "__init__"),
              ("runtime/engines/llamacpp.py", "close")}
# Named executor/engine pieces whose cumulative time is reported.
_PIECES = {
    ("runtime/executor.py", "run_plan"): "run_plan (everything)",
    ("runtime/executor.py", "_preflight"): "preflight",
    ("runtime/journal.py", "claim_run_dir"): "claim run dir (lock, run.json)",
    ("runtime/bindings.py", "model_file"): "model store look-up + GGUF name check",
    ("runtime/engines/llamacpp.py", "__init__"): "engine __init__ (llama load + GGUF metadata)",
    ("runtime/gguf.py", "gguf_metadata"): "  GGUF metadata parsing (runtime/gguf.py, Python)",
    ("runtime/model_store.py", "gguf_summary"): "  model_store.gguf_summary (GGUF parse)",
    ("runtime/engines/llamacpp.py", "warmup"): "warmup",
    ("runtime/engine.py", "warmup"): "warmup",
    ("runtime/engines/llamacpp.py", "describe"): "engine describe()",
    ("runtime/executor.py", "_run_group"): "groups: engine run_group + checks",
    ("runtime/engines/llamacpp.py", "_decode"): "  llama_decode + argmax (_decode)",
    ("runtime/engines/llamacpp.py", "render"): "  chat template render",
    ("runtime/engines/llamacpp.py", "tokenize"): "  tokenize",
    ("runtime/engines/llamacpp.py", "_piece"): "  token_to_piece per token (stop-string check)",
    ("runtime/engines/llamacpp.py", "_text"): "  detokenize + text",
    ("runtime/bindings.py", "build_requests"): "build_requests",
    ("runtime/bindings.py", "check_results"): "check_results",
    ("runtime/bindings.py", "group_records"): "group_records",
    ("runtime/journal.py", "entry_line"): "journal entry_line (canonical JSON + digest)",
    ("runtime/journal.py", "append"): "journal append (write + fsync)",
    ("runtime/executor.py", "_append_jsonl"): "volatile jsonl appends",
    ("runtime/executor.py", "__call__"): "run.log lines",
    ("runtime/executor.py", "_progress"): "progress bar (rich) setup",
    ("runtime/executor.py", "finalize"): "finalize (outputs + environment.json + run.json)",
    ("runtime/journal.py", "write_outputs"): "  write_outputs (re-read journal, coverage, outputs/)",
    ("runtime/environment.py", "capture_environment"): "  capture_environment",
}


def _rel(path: str) -> str:
    p = Path(path)
    try:
        return p.resolve().relative_to(ROOT).as_posix()
    except (ValueError, OSError):
        return path


def profile_batchsafe(plan: Plan, top: int = 15) -> dict[str, Any]:
    """cProfile one run of arm (a): named pieces (cumulative s) and top non-llama own times."""
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(run_batchsafe, plan)
    wall = time.perf_counter() - t0
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    pieces: dict[str, float] = {}
    own: list[tuple[float, int, str]] = []
    llama_own = 0.0
    for (file, line, func), (_cc, nc, tt, ct, _callers) in stats.items():
        rel = _rel(file)
        name = _PIECES.get((rel, func))
        if name:
            pieces[name] = pieces.get(name, 0.0) + ct
        if "llama_cpp" in file or (rel, func) in _LLAMA_OWN:
            llama_own += tt
            continue
        label = f"{rel}:{line}({func})" if file != "~" else func
        own.append((tt, nc, label))
    own.sort(reverse=True)
    total = sum(tt for tt, _, _ in own) + llama_own
    return {"profiled_wall_s": round(wall, 3),
            "llama_own_s": round(llama_own, 3),
            "non_llama_own_s": round(total - llama_own, 3),
            "pieces_cumulative_s": {k: round(v, 4) for k, v in sorted(pieces.items(), key=lambda kv: -kv[1])},
            "top_non_llama_own_s": [{"s": round(tt, 4), "calls": nc, "function": label}
                                    for tt, nc, label in own[:top]]}


def fixed_costs(model_path: str) -> dict[str, float]:
    """Unprofiled one-off timings (s) of the executor's non-llama pieces that the profile
    shows on top: the GGUF header parses done per engine build (bindings.model_file and
    the engine's __init__ each call ``gguf_summary``; the engine also reads the chat
    template with ``gguf_metadata(keep_array=0)``), ``capture_environment`` (finalize),
    and one journal line's write + fsync."""
    from batchsafe.runtime import journal as jr
    from batchsafe.runtime import model_store
    from batchsafe.runtime.environment import capture_environment

    def once(fn: Any) -> float:
        t = time.perf_counter()
        fn()
        return round(time.perf_counter() - t, 4)

    out = {"gguf_summary_s": once(lambda: model_store.gguf_summary(model_path)),
           "gguf_metadata_keep0_s": once(lambda: model_store.gguf_metadata(model_path, keep_array=0)),
           "capture_environment_s": once(lambda: capture_environment([]))}
    line = b"x" * 4000 + b"\n"  # about one bs=4 group's journal line
    with tempfile.TemporaryDirectory(prefix="batchsafe-bench-") as tmp, jr.Journal(Path(tmp) / "j.jsonl") as j:
        ts = [once(lambda: j.append(line)) for _ in range(10)]
    out["journal_append_fsync_s"] = round(statistics.median(ts), 4)
    return out


# --- the benchmark ------------------------------------------------------------------------


def run(repeat: int = 2, profile: bool = True, groups_per_bs: dict[int, int | None] | None = None
        ) -> dict[str, Any]:
    """Alternate arms (a, b) ``repeat`` times each; medians, overhead and (once) a profile of (a)."""
    from batchsafe.compiler.compile import compile_spec  # here: the GPU bench imports this module without ruamel

    full = compile_spec(SPEC)
    plan = reduced_plan(full, groups_per_bs)
    settings = _engine_settings(plan)
    # Import both arms' modules first: neither arm's first run should pay for imports.
    for mod in ("llama_cpp.llama_chat_format", "rich.progress", "batchsafe.runtime.engines.llamacpp", "batchsafe.runtime.environment",
                "batchsafe.runtime.executor"):
        importlib.import_module(mod)
    runs: dict[str, list[dict[str, Any]]] = {"batchsafe": [], "raw": []}
    reference = None
    for _ in range(repeat):
        for arm, fn in (("batchsafe", lambda: run_batchsafe(plan)), ("raw", lambda: run_raw(plan, settings))):
            r = _measure(fn)
            if reference is None:
                reference = r
            assert [k for k, _ in r["texts"]] == [k for k, _ in reference["texts"]], f"{arm}: other members"
            diff = [k for (k, t), (_, u) in zip(r["texts"], reference["texts"]) if t.encode() != u.encode()]
            assert not diff, f"{arm}: texts differ from the first run at {len(diff)} members (first {diff[0]})"
            assert r["tokens"] == reference["tokens"], f"{arm}: {r['tokens']} tokens, first run {reference['tokens']}"
            runs[arm].append(r)
            print(f"runtime bench: {arm} {r['wall_s']:.2f} s wall, {r['cpu_s']:.2f} s CPU, "
                  f"{r['outside_llama_s']:.3f} s outside llama.cpp, {r['tokens']} tokens, "
                  f"load avg {r['load'][0]:.2f}->{r['load'][1]:.2f}", file=sys.stderr)
    assert reference is not None

    def med(arm: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[arm])

    def pct(a: float, b: float) -> float:
        return round(100 * (a - b) / b, 2)

    a, b = med("batchsafe", "wall_s"), med("raw", "wall_s")
    parts: dict[str, dict[str, float]] = {}
    for arm, rs in runs.items():
        parts[arm] = {k: round(statistics.median(r["parts"][k] for r in rs), 3)
                      for k in ("engine_load_s", "warmup_s", "groups_s")}
        parts[arm]["rest_s"] = round(med(arm, "wall_s") - sum(parts[arm].values()), 3)
        parts[arm]["llama_c_s"] = round(med(arm, "llama_c_s"), 3)
        parts[arm]["outside_llama_s"] = round(med(arm, "outside_llama_s"), 3)
        parts[arm]["c_calls"] = rs[-1]["c_calls"]
    out_a, out_b = med("batchsafe", "outside_llama_s"), med("raw", "outside_llama_s")
    by_bs: dict[int, int] = {}
    for g in plan.groups:
        by_bs[g.condition.batch_size or 0] = by_bs.get(g.condition.batch_size or 0, 0) + 1
    report: dict[str, Any] = {
        "plan": {"spec": "specs/quickstart.yaml", "phase": PHASE, "groups_by_batch_size": by_bs,
                 "members": sum(len(g.members) for g in plan.groups), "samples": len(plan.samples),
                 "max_tokens": plan.decoding["max_tokens"], "warmup": plan.decoding.get("warmup", 0),
                 "plan_hash": plan.plan_hash},
        "engine": {**{k: v for k, v in settings.items() if k != "model_path"},
                   "model": Path(settings["model_path"]).name},
        "rounds": repeat,
        "tokens_generated": reference["tokens"],
        "texts_identical": True,
        "batchsafe_wall_s": [round(r["wall_s"], 3) for r in runs["batchsafe"]],
        "raw_wall_s": [round(r["wall_s"], 3) for r in runs["raw"]],
        "median_batchsafe_s": round(a, 3),
        "median_raw_s": round(b, 3),
        "overhead_pct": pct(a, b),
        "overhead_pct_per_round": [pct(x["wall_s"], y["wall_s"]) for x, y in zip(runs["batchsafe"], runs["raw"])],
        "overhead_cpu_pct": pct(med("batchsafe", "cpu_s"), med("raw", "cpu_s")),
        # Load-independent view: wall time outside llama.cpp's C calls (Python, I/O, fsync),
        # the part the executor can add; its difference relative to the raw arm's wall time.
        "outside_llama_s": {"batchsafe": round(out_a, 3), "raw": round(out_b, 3)},
        "overhead_outside_llama_pct": round(100 * (out_a - out_b) / b, 2),
        "target_pct": TARGET_PCT,
        "parts_median_s": parts,
        "tokens_per_s_raw": round(reference["tokens"] / b, 2),
        "load_avg_1m": {arm: [[round(x, 2) for x in r["load"]] for r in runs[arm]] for arm in runs},
    }
    report["executor_pieces_s"] = fixed_costs(settings["model_path"])
    if profile:
        report["profile_batchsafe"] = profile_batchsafe(plan)
    return report


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--groups", type=int, default=None,
                    help=f"first N groups of each batch size (default: {GROUPS_PER_BATCH_SIZE})")
    ap.add_argument("--no-profile", action="store_true")
    args = ap.parse_args()
    per_bs = None if args.groups is None else {b: args.groups for b in GROUPS_PER_BATCH_SIZE}
    print(json.dumps(run(args.repeat, not args.no_profile, per_bs), indent=2))
