"""A loopback server speaking Ollama's native API, decoding with real GGUF models.

No Ollama binary is available here, so this shim implements the three routes the
adapter uses, with the shapes of Ollama's API documentation
(https://github.com/ollama/ollama/blob/main/docs/api.md):

* ``GET /api/version`` -> ``{"version": ...}``
* ``GET /api/tags`` -> ``{"models": [{name, model, modified_at, size, digest, details}]}``;
  ``digest`` is the bare-hex sha256 of a manifest naming the model blob (as Ollama's is),
  ``details.quantization_level`` is the GGUF's file type (Q8_0, Q2_K, ...).
* ``POST /api/chat`` with ``stream: false`` -> ``{model, created_at, message, done,
  done_reason, total_duration, load_duration, prompt_eval_count, prompt_eval_duration,
  eval_count, eval_duration}`` (durations in ns); an unknown model answers 404
  ``{"error": "model \\"x\\" not found, try pulling it first"}``.

Each tag is served by an embedded :class:`LlamaCppEngine` on its own GGUF file (real
greedy decoding); ``options`` temperature (must be 0), num_predict and stop are honoured,
the others recorded. One lock serialises decoding, like ``OLLAMA_NUM_PARALLEL=1``.
Durations are measured around the decode (queueing shows as ``load_duration``); the
prompt/generation split is not measured (``prompt_eval_duration`` 0).
``fail`` injects error answers for the next chat requests.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from batchsafe.runtime import model_store as ms
from batchsafe.runtime.engine import GenRequest


def manifest_digest(gguf_sha256: str, size: int) -> str:
    """Bare-hex digest of an Ollama-style manifest whose model layer is the GGUF."""
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "layers": [{"mediaType": "application/vnd.ollama.image.model",
                            "digest": f"sha256:{gguf_sha256}", "size": size}]}
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


class OllamaShim:
    """Serve ``{tag: gguf path}`` on 127.0.0.1 (random port) until :meth:`stop`."""

    def __init__(self, models: dict[str, Path], *, version: str = "0.12.6") -> None:
        from batchsafe.runtime.engines.llamacpp import LlamaCppEngine

        self.version = version
        self.models: dict[str, dict[str, Any]] = {}
        for tag, path in models.items():
            sha = ms.sha256_file(path)
            summary = ms.gguf_summary(path)
            self.models[tag] = {
                "engine": LlamaCppEngine(path, n_ctx=512, n_threads=1, n_seq_max=1, model_sha256=sha),
                "entry": {"name": tag, "model": tag, "modified_at": "2024-01-01T00:00:00Z", "size": summary["size"],
                          "digest": manifest_digest(sha, summary["size"]),
                          "details": {"parent_model": "", "format": "gguf", "family": summary["architecture"],
                                      "families": [summary["architecture"]], "parameter_size": "135M",
                                      "quantization_level": summary["file_type_name"]}}}
        self.lock = threading.Lock()
        self.fail: list[tuple[int, str]] = []
        self.requests: list[dict[str, Any]] = []
        """JSON bodies of the chat requests, in arrival order."""
        self.active = 0
        self.max_active = 0
        self.gate: threading.Barrier | None = None
        """When set, each /api/chat waits here until all parties arrived: proves they were in flight together."""
        """Most chat requests in flight at once (received, not yet answered)."""
        shim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/api/version":
                    self._send(200, {"version": shim.version})
                elif self.path == "/api/tags":
                    self._send(200, {"models": [m["entry"] for m in shim.models.values()]})
                else:
                    self._send(404, {"error": "404 page not found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if self.path != "/api/chat":
                    return self._send(404, {"error": "404 page not found"})
                shim.requests.append(body)
                with shim.lock:
                    shim.active += 1
                    shim.max_active = max(shim.max_active, shim.active)
                gate = shim.gate
                if gate is not None:
                    gate.wait(timeout=30)  # BrokenBarrierError -> 500 below: requests were not concurrent
                try:
                    if shim.fail:
                        status, msg = shim.fail.pop(0)
                        return self._send(status, {"error": msg})
                    status, answer = shim.chat(body)
                    self._send(status, answer)
                finally:
                    with shim.lock:
                        shim.active -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def digest(self, tag: str) -> str:
        """The digest /api/tags reports for ``tag``."""
        return self.models[tag]["entry"]["digest"]

    def stop(self) -> None:
        """Stop serving; free the engines."""
        self.server.shutdown()
        self.server.server_close()
        for m in self.models.values():
            m["engine"].close()

    def chat(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(status, answer) of one non-streamed chat request."""
        tag = body.get("model")
        if tag not in self.models:
            return 404, {"error": f'model "{tag}" not found, try pulling it first'}
        opts = body.get("options") or {}
        if body.get("stream", True) is not False or float(opts.get("temperature", 0.8)) != 0.0:
            return 400, {"error": "shim: only stream=false and options.temperature=0 are implemented"}
        n = int(opts.get("num_predict", -1))
        req = GenRequest(key="shim", messages=tuple((m["role"], m["content"]) for m in body.get("messages") or []),
                         max_tokens=n if n > 0 else 128, stop=tuple(opts.get("stop") or ()))
        eng = self.models[tag]["engine"]
        t0 = time.perf_counter_ns()
        with self.lock:  # like OLLAMA_NUM_PARALLEL=1: one sequence decodes at a time
            t1 = time.perf_counter_ns()
            (res,) = eng.run_group([req], "sequential")
        t2 = time.perf_counter_ns()
        return 200, {"model": tag, "created_at": datetime.now(UTC).isoformat(),
                     "message": {"role": "assistant", "content": res.text}, "done_reason": res.finish_reason,
                     "done": True, "total_duration": t2 - t0, "load_duration": t1 - t0,
                     "prompt_eval_count": res.prompt_tokens, "prompt_eval_duration": 0,
                     "eval_count": res.completion_tokens, "eval_duration": t2 - t1}
