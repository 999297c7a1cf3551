"""A loopback server speaking vLLM's OpenAI-compatible protocol, decoding with a real model.

It is a protocol shim, not canned answers: every route delegates to the embedded
:class:`LlamaCppEngine` (SmolLM2-135M), so texts and token counts are real greedy
decodes. It implements the parts of vLLM's API the adapter uses, with vLLM's request
and response shapes (vllm/entrypoints/openai/protocol.py):

* ``GET /v1/models``: ModelList with ``id``, ``root``, ``max_model_len``.
* ``GET /version``: ``{"version": ...}``.
* ``POST /tokenize``: TokenizeChatRequest (``model``, ``messages``,
  ``add_generation_prompt``, ``add_special_tokens``) -> ``{count, max_model_len, tokens}``.
* ``POST /v1/completions`` with ``prompt`` a list of token-id lists: the K prompts are
  decoded as ONE true batch (``LlamaCppEngine.decode_group``); choices carry ``index``,
  ``text``, ``finish_reason`` and ``token_ids`` (``return_token_ids``). They are returned
  in REVERSE order on purpose, so a client that ignores ``index`` is caught.
* ``POST /v1/chat/completions``: one chat request (K=1 decode).
* Errors in vLLM's shape ``{"error": {"message", "type", "code"}}``: unknown model (404),
  prompt + max_tokens over ``max_model_len`` (400), injected failures (``fail``) and
  delays (``delay_s``) for the error tests.

Differences from vLLM, on purpose or by necessity: one engine lock serialises requests
(vLLM's continuous batcher would interleave concurrent chat requests), and completion
token ids exclude the end-of-sequence token (vLLM includes it). A real vLLM run is done
separately, on a GPU host.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from batchsafe.runtime.engine import EngineError, GenRequest


class VLLMShim:
    """Serve ``engine`` as ``served_model`` on 127.0.0.1 (random port) until :meth:`stop`."""

    def __init__(self, engine: Any, served_model: str, *, root: str | None = None,
                 max_model_len: int = 512, version: str = "0.11.1+shim") -> None:
        self.engine, self.served_model, self.root = engine, served_model, root or served_model
        self.max_model_len, self.version = max_model_len, version
        self.lock = threading.Lock()  # the engine decodes one group at a time
        self.fail: list[tuple[int, str]] = []
        """(status, message) answers for the next generation requests, consumed in order."""
        self.delay_s = 0.0
        self.requests: list[tuple[str, dict[str, Any]]] = []
        """(path, JSON body) of every POST received, in arrival order."""
        shim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [
                        {"id": shim.served_model, "object": "model", "owned_by": "vllm", "root": shim.root,
                         "parent": None, "max_model_len": shim.max_model_len, "permission": []}]})
                elif self.path == "/version":
                    self._send(200, {"version": shim.version})
                else:
                    self._send(404, {"detail": "Not Found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                shim.requests.append((self.path, body))
                routes = {"/tokenize": shim.tokenize, "/v1/completions": shim.completions,
                          "/v1/chat/completions": shim.chat}
                if self.path not in routes:
                    return self._send(404, {"detail": "Not Found"})
                if self.path != "/tokenize" and shim.fail:
                    status, msg = shim.fail.pop(0)
                    return self._send(status, _error(status, msg))
                time.sleep(shim.delay_s)
                if body.get("model") != shim.served_model:
                    return self._send(404, _error(404, f"The model `{body.get('model')}` does not exist."))
                try:
                    self._send(200, routes[self.path](body))
                except _BadRequest as exc:
                    self._send(400, _error(400, str(exc)))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()

    # --- routes ------------------------------------------------------------------

    def tokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        """TokenizeChatRequest: the chat template applied exactly as the chat route does."""
        if not body.get("add_generation_prompt", True) or body.get("add_special_tokens", False):
            raise _BadRequest("shim: only add_generation_prompt=true, add_special_tokens=false")
        toks = self.engine.tokenize(self.engine.render(_request({**body, "temperature": 0})))
        return {"count": len(toks), "max_model_len": self.max_model_len, "tokens": toks}

    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        """A list of token-id prompts decoded together as one batch."""
        prompts = body.get("prompt")
        if prompts and all(isinstance(t, int) for t in prompts):
            prompts = [prompts]
        if not isinstance(prompts, list) or not all(isinstance(p, list) and p for p in prompts):
            raise _BadRequest("shim: prompt must be a list of token-id lists")
        req = _request({"messages": [], **body})
        for p in prompts:
            self._check_len(len(p), req.max_tokens)
        with self.lock:
            seqs = self.engine.decode_group(prompts, [req.max_tokens] * len(prompts), [req.stop] * len(prompts))
        choices = [{"index": i, "text": self.engine._text(s, req.stop), "finish_reason": s.finish,
                    "stop_reason": None, "token_ids": list(s.tokens) if body.get("return_token_ids") else None,
                    "logprobs": None} for i, s in enumerate(seqs)]
        return {"id": f"cmpl-shim-{len(self.requests)}", "object": "text_completion", "model": self.served_model,
                "choices": choices[::-1], "usage": _usage(sum(map(len, prompts)), sum(len(s.tokens) for s in seqs))}

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """One chat request, decoded alone."""
        req = _request(body)
        self._check_len(len(self.engine.tokenize(self.engine.render(req))), req.max_tokens)
        with self.lock:
            (res,) = self.engine.run_group([req], "sequential")
        return {"id": f"chatcmpl-shim-{len(self.requests)}", "object": "chat.completion", "model": self.served_model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": res.text},
                             "finish_reason": res.finish_reason, "stop_reason": None}],
                "usage": _usage(res.prompt_tokens, res.completion_tokens)}

    def _check_len(self, n_prompt: int, max_tokens: int) -> None:
        if n_prompt + max_tokens > self.max_model_len:  # vLLM's wording
            raise _BadRequest(f"This model's maximum context length is {self.max_model_len} tokens. However, you "
                              f"requested {n_prompt + max_tokens} tokens ({n_prompt} in the messages, {max_tokens} in "
                              "the completion). Please reduce the length of the messages or completion.")


class _BadRequest(Exception):
    pass


def _error(status: int, message: str) -> dict[str, Any]:
    kind = {400: "BadRequestError", 404: "NotFoundError"}.get(status, "InternalServerError")
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _request(body: dict[str, Any]) -> GenRequest:
    """The decoding settings of a request body; the shim decodes greedily only."""
    if float(body.get("temperature", 1.0)) != 0.0:
        raise _BadRequest("shim: only temperature 0 (greedy) is implemented")
    if body.get("n", 1) != 1:
        raise _BadRequest("shim: only n=1")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    try:
        return GenRequest(key="shim", messages=tuple((m["role"], m["content"]) for m in body["messages"]),
                          max_tokens=int(body.get("max_tokens") or 16), stop=tuple(stop))
    except (KeyError, TypeError, EngineError) as exc:
        raise _BadRequest(f"shim: malformed request: {exc}") from None
