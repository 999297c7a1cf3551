"""The "concurrent" dispatch mode of the embedded engine: llama_cpp.server under K clients.

llama-cpp-python's own OpenAI-compatible server (``llama_cpp.server``: its FastAPI app,
its request lock, its ``Llama``) runs as a subprocess on 127.0.0.1 with the engine's model
file and n_ctx/n_threads/n_batch; the K requests of a group come from K client threads
released together by a ``threading.Barrier``.

Why a launcher (``python -m runtime.engines.llamacpp_server``) instead of ``python -m
llama_cpp.server``: the app is the same object, but the launcher (1) binds the port itself
(port 0, no free-port race), (2) wraps ``Llama.create_completion``/``generate`` to log, per
request, the server-side execution interval (CLOCK_MONOTONIC, shared with the client on
Linux), how many completions were executing at once, the prompt tokens the server really
evaluated, how much KV prefix it reused from the previous request, and every token it
generated, served on GET /batchsafe/exec_log, and (3) exits when its parent dies.
Serialization is thus measured, not assumed (client-side intervals overlap trivially:
all K are sent at once and wait).

Exactness: requests go to /v1/completions with the prompt text the engine's own template
rendered (the server's chat path would apply its own template); ``add_bos_token`` is
overridden to false so the server tokenizes exactly that text (specials parsed, no BOS
added: the template writes one when the model wants it), and the client checks the
server's prompt tokens against the engine's. Sampling: temperature 0 selects llama.cpp's
greedy sampler (first maximum), repeat_penalty 1.0 (the server's default 1.1 would change
outputs), no frequency/presence penalty. The server's generation loop has quirks the engine
does not (text cut at the first *listed* stop string rather than the earliest; after a
token that ends inside a UTF-8 character it skips the max_tokens check and may overrun), so
the result is built from the server's generated token ids with the engine's rules
(:func:`replay`); the server's own text/finish/usage are kept in ``volatile`` and
``server_text_differs`` says when they disagree.
"""

from __future__ import annotations

from batchsafe.core.atomic import atomic_write

import atexit
import http.client
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from batchsafe.runtime.engine import EngineError, GenRequest

SERVER_PACKAGES = ("llama-cpp-python", "fastapi", "starlette", "uvicorn", "sse-starlette",
                   "starlette-context", "pydantic-settings", "anyio")
"""Distributions the server stack runs on (recorded in describe())."""
_IMPORTS = ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")
EXEC_LOG = "/batchsafe/exec_log"
SERIALIZED = "concurrent requests are serialized by llama_cpp.server"
_LIVE: "weakref.WeakSet[LlamaCppServer]" = weakref.WeakSet()


def server_versions() -> dict[str, str | None]:
    """Installed versions of the server stack (None: not installed)."""
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {name: version(name) for name in SERVER_PACKAGES}


def sampling_params(req: GenRequest, seed: int) -> dict[str, Any]:
    """The /v1/completions sampling fields that make the server's decoding exact greedy."""
    return {"max_tokens": req.max_tokens, "stop": list(req.stop), "temperature": 0.0, "top_k": 1,
            "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0, "frequency_penalty": 0.0,
            "presence_penalty": 0.0, "seed": seed, "stream": False}


class LlamaCppServer:
    """One llama_cpp.server subprocess (own process group) and its concurrent client."""

    def __init__(self, model_path: str | os.PathLike[str], *, n_ctx: int, n_threads: int, n_batch: int,
                 seed: int, flash_attn: bool = False, startup_timeout_s: float = 120.0,
                 request_timeout_s: float = 600.0) -> None:
        """Nothing starts until :meth:`start` (or the first :meth:`run_group`)."""
        self.settings = {"model": str(model_path), "n_ctx": n_ctx, "n_batch": n_batch, "n_ubatch": n_batch,
                         "n_threads": n_threads, "n_threads_batch": n_threads, "seed": seed,
                         # logits_all (the server's default: true) off, as in the engine: logits of
                         # the last prompt token only; mlock off: it needs privileges, changes nothing.
                         "n_gpu_layers": 0, "flash_attn": flash_attn, "use_mlock": False, "logits_all": False,
                         "kv_overrides": ["tokenizer.ggml.add_bos_token=bool:false"], "verbose": False}
        self.seed = seed
        self.startup_timeout_s, self.request_timeout_s = startup_timeout_s, request_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.effective: dict[str, Any] = {}
        """The server's own ModelSettings/ServerSettings dump, as it reported them."""
        self.summaries: list[dict[str, Any]] = []
        """One summary per concurrent group run (see :meth:`run_group`)."""
        self.starts = 0
        self._dir: str | None = None

    # --- lifecycle -----------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the server and wait until it answers; EngineError with its stderr tail if not."""
        if self.alive():
            return
        self.stop()
        missing = [m for m in _IMPORTS if importlib.util.find_spec(m) is None]
        if missing:
            raise EngineError(f"dispatch mode 'concurrent' needs llama-cpp-python's server extra (missing: "
                              f"{', '.join(missing)}); install with: pip install 'llama-cpp-python[server]'")
        self._dir = tempfile.mkdtemp(prefix="batchsafe-llama-server-")
        ready = Path(self._dir, "ready.json")
        cfg = {"settings": self.settings, "ready_file": str(ready), "parent_pid": os.getpid()}
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(Path(self._dir, "server.log"), "wb") as log:
            # A new session = a new process group: stop() can kill everything it spawned.
            self.proc = subprocess.Popen([sys.executable, "-m", "batchsafe.runtime.engines.llamacpp_server", json.dumps(cfg)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True, close_fds=True)
        self.starts += 1
        _LIVE.add(self)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail(f"llama_cpp.server exited during startup (code {self.proc.returncode})", transient=False)
            if self.port is None and ready.exists():
                info = json.loads(ready.read_text())
                self.port, self.effective = info["port"], info["settings"]
            if self.port is not None:
                try:
                    if self._get("/v1/models", 2.0)[0] == 200:
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        self._fail(f"llama_cpp.server did not become ready within {self.startup_timeout_s:g} s", transient=True)

    def stop(self) -> None:
        """Stop the server: SIGTERM to its process group, SIGKILL after 3 s, reap (idempotent)."""
        proc, self.proc, self.port = self.proc, None, None
        if proc is not None:
            for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass  # the group is gone
                try:
                    proc.wait(wait)  # reaps: no zombie left behind
                    break
                except subprocess.TimeoutExpired:
                    continue
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # anything the server itself spawned
            except (ProcessLookupError, PermissionError):
                pass
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        _LIVE.discard(self)

    close = stop

    def stderr_tail(self, n: int = 2000) -> str:
        """The last ``n`` characters of the server's stdout+stderr."""
        try:
            data = Path(self._dir or "/nonexistent", "server.log").read_bytes()
        except OSError:
            return ""
        return data[-n:].decode("utf-8", "replace").strip()

    def _fail(self, what: str, *, transient: bool) -> None:
        tail = self.stderr_tail()
        self.stop()
        raise EngineError(f"{what}; server output tail:\n{tail or '(empty)'}", transient=transient)

    def __del__(self) -> None:
        try:
            self.stop()
        except Exception:
            pass

    # --- client --------------------------------------------------------------

    def _get(self, path: str, timeout: float) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def run_group(self, requests: list[GenRequest], prompts: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """POST the K rendered prompts from K threads at once; (per-request replies in request
        order, group summary). A reply holds the server's JSON, the server-side exec record
        (``exec``: tokens, interval, in_flight, KV prefix reuse) and client times."""
        self.start()
        k = len(requests)
        barrier = threading.Barrier(k)
        out: list[dict[str, Any]] = [{} for _ in requests]
        rids = [str(uuid.uuid4()) for _ in requests]

        def client(i: int) -> None:
            rec = out[i]
            body = json.dumps({"prompt": prompts[i], **sampling_params(requests[i], self.seed)}).encode()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.request_timeout_s)
            try:
                conn.connect()  # connect first so that only the POSTs are synchronized
                barrier.wait(30.0)
                rec["send"] = time.monotonic()
                conn.request("POST", "/v1/completions", body,
                             {"Content-Type": "application/json", "X-Request-ID": rids[i]})
                resp = conn.getresponse()
                rec["status"], rec["body"] = resp.status, resp.read()
                rec["recv"] = time.monotonic()
            except (OSError, http.client.HTTPException, threading.BrokenBarrierError) as exc:
                rec["error"] = f"{type(exc).__name__}: {exc}"
                barrier.abort()  # never leave the others waiting for a thread that failed
            finally:
                conn.close()

        t0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(k)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        errors = [f"{requests[i].key}: {r['error']}" for i, r in enumerate(out) if "error" in r]
        if errors:
            try:  # a dropped connection arrives before the exit status does: give it a moment
                if self.proc is not None:
                    self.proc.wait(2.0)
            except subprocess.TimeoutExpired:
                pass
            if not self.alive():
                code = self.proc.returncode if self.proc else None
                self._fail(f"llama_cpp.server (pid {self.pid}) died during a concurrent group "
                           f"(exit code {code}): {'; '.join(errors)}", transient=True)
            self._fail(f"concurrent group failed: {'; '.join(errors)}", transient=True)
        for i, r in enumerate(out):
            if r["status"] != 200:
                raise EngineError(f"{requests[i].key}: llama_cpp.server answered HTTP {r['status']}: "
                                  f"{r['body'][:500].decode('utf-8', 'replace')}", transient=r["status"] >= 500)
            r["json"] = json.loads(r.pop("body"))
        try:
            status, data = self._get(EXEC_LOG, 10.0)
            log = {e["rid"]: e for e in json.loads(data)} if status == 200 else {}
        except OSError as exc:
            self._fail(f"could not read the server's exec log: {exc}", transient=True)
        for i, r in enumerate(out):
            if rids[i] not in log:
                raise EngineError(f"{requests[i].key}: the server logged no execution for request {rids[i]}")
            r["exec"] = log[rids[i]]
        summary = summarize(out, wall)
        summary["server_pid"], summary["server_start"] = self.pid, self.starts
        self.summaries.append(summary)
        return out, summary


def summarize(replies: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    """What really happened in one group: client intervals, server execution intervals."""
    sends, recvs = [r["send"] for r in replies], [r["recv"] for r in replies]
    ex = sorted((r["exec"]["start"], r["exec"]["end"], i) for i, r in enumerate(replies))
    disjoint = all(b[0] >= a[1] for a, b in zip(ex, ex[1:]))
    in_flight = max(r["exec"]["in_flight"] for r in replies)
    return {
        "k": len(replies), "clock": "CLOCK_MONOTONIC (time.monotonic, shared by client and server on Linux)",
        "group_wall_s": wall, "send_spread_s": max(sends) - min(sends),
        # All K were in flight together iff the last send precedes the first receive.
        "client_intervals_overlap": max(sends) < min(recvs),
        "server_exec_intervals_overlap": not disjoint,
        "server_max_in_flight": in_flight,
        "serialized": disjoint and in_flight == 1,
        "server_exec_order": [i for _, _, i in ex],
        "server_exec_s": [r["exec"]["end"] - r["exec"]["start"] for r in replies],
        "server_queue_wait_s": [r["exec"]["start"] - r["send"] for r in replies],
        "kv_prefix_reused": [r["exec"]["prefix_reused"] for r in replies],
    }


def replay(tokens: list[int], max_tokens: int, stops: tuple[str, ...], piece: Callable[[int], bytes],
           is_eog: Callable[[int], bool]) -> tuple[list[int], str] | None:
    """Apply the engine's stopping rules (LlamaCppEngine.decode_group, kept in step with it)
    to the tokens the server generated: (kept tokens, finish) or None when the server
    stopped before any rule of the engine would have."""
    kept: list[int] = []
    raw = bytearray()
    bstops = [x.encode("utf-8") for x in stops if x]
    longest = max((len(x) for x in bstops), default=0)
    for tok in tokens:
        if is_eog(tok):
            return kept, "stop"
        kept.append(tok)
        before = len(raw)
        raw += piece(tok)
        if any(x in raw[max(0, before - longest):] for x in bstops):
            return kept, "stop"
        if len(kept) >= max_tokens:
            return kept, "length"
    return None


def describe(server: LlamaCppServer | None) -> dict[str, Any]:
    """The concurrent mode's record: stack versions, launch settings, measured behaviour
    (``server_settings``: the server's own parse of them, once it has started)."""
    sums = server.summaries if server else []
    n, ser = len(sums), sum(1 for s in sums if s["serialized"])
    if not n:
        behaviour = "not measured yet: no concurrent group has run on this engine instance"
    elif ser == n:
        behaviour = SERIALIZED
    else:
        behaviour = f"server execution intervals overlapped in {n - ser} of {n} concurrent groups"
    return {"transport": "llama_cpp.server subprocess on 127.0.0.1, POST /v1/completions with the "
                         "engine-rendered prompt (add_bos_token overridden false), K client threads "
                         "released by a barrier; results rebuilt from the server's token ids",
            "versions": server_versions(), "behaviour": behaviour,
            "measured": {"groups": n, "serialized_groups": ser,
                         "max_server_in_flight": max((s["server_max_in_flight"] for s in sums), default=None),
                         "groups_with_kv_prefix_reuse": sum(1 for s in sums if any(s["kv_prefix_reused"]))},
            "sampling": {k: v for k, v in sampling_params(GenRequest("x", (), 1), 0).items()
                         if k not in ("max_tokens", "stop", "seed")},
            "launch": dict(server.settings) if server else None,
            "server_settings": server.effective if server else None,
            "server_starts": server.starts if server else 0}


@atexit.register
def _stop_all() -> None:
    """Never leave a server behind when the runtime exits normally."""
    for s in list(_LIVE):
        s.stop()


# --- the server side (runs in the subprocess) ---------------------------------


def _instrument(llama_cls: Any) -> list[dict[str, Any]]:
    """Wrap Llama.create_completion/generate to log each request's execution (see module doc)."""
    from starlette_context import context, errors

    log: list[dict[str, Any]] = []
    lock, local, busy = threading.Lock(), threading.local(), [0]
    orig_cc, orig_gen = llama_cls.create_completion, llama_cls.generate

    def create_completion(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            rid = context.get("X-Request-ID")
        except errors.ContextDoesNotExistError:
            rid = None
        with lock:
            busy[0] += 1
            entry = {"rid": rid, "start": time.monotonic(), "in_flight": busy[0], "prompt": None,
                     "prefix_reused": 0, "tokens": []}
        local.entry = entry
        try:
            return orig_cc(self, *args, **kwargs)
        finally:
            with lock:
                busy[0] -= 1
                entry["end"] = time.monotonic()
                log.append(entry)
            local.entry = None

    def generate(self: Any, tokens: Any, *args: Any, **kwargs: Any) -> Any:
        entry = getattr(local, "entry", None)
        toks = list(tokens)
        if entry is not None:
            # What Llama.generate is about to keep of the previous request's KV cache.
            n = 0
            for a, b in zip(self._input_ids[:self.n_tokens].tolist(), toks):
                if a != b:
                    break
                n += 1
            entry["prompt"], entry["prefix_reused"] = toks, n
        for tok in orig_gen(self, toks, *args, **kwargs):
            if entry is not None:
                entry["tokens"].append(int(tok))
            yield tok

    llama_cls.create_completion, llama_cls.generate = create_completion, generate
    return log


def _serve(cfg: dict[str, Any]) -> None:
    import socket

    parent = cfg["parent_pid"]

    def watchdog() -> None:  # the parent died without stopping us (SIGKILL, crash)
        while os.getppid() == parent:
            time.sleep(0.5)
        shutil.rmtree(Path(cfg["ready_file"]).parent, ignore_errors=True)  # its stop() never will
        os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()
    import llama_cpp
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # loopback only; the kernel picks a free port: no race
    sock.listen(128)
    port = sock.getsockname()[1]
    log = _instrument(llama_cpp.Llama)
    model = ModelSettings(**cfg["settings"])
    server = ServerSettings(host="127.0.0.1", port=port, api_key=None, interrupt_requests=False)
    app = create_app(server_settings=server, model_settings=[model])  # loads the model

    def exec_log() -> list[dict[str, Any]]:
        taken = list(log)
        del log[:len(taken)]
        return taken

    app.add_api_route(EXEC_LOG, exec_log, methods=["GET"])
    # The effective settings as the server parsed them (port left out: it differs every run).
    settings = {"model": model.model_dump(mode="json"), "server": server.model_dump(mode="json", exclude={"port"})}
    atomic_write(cfg["ready_file"], json.dumps({"port": port, "settings": settings}).encode(), durable=False)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1)).run(sockets=[sock])


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
