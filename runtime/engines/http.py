"""Shared HTTP plumbing of the server adapters (vLLM, Ollama), on :mod:`httpx`.

Every call owns one ``httpx.Client`` with a single connection, so a group's K requests
travel on K independent connections and the adapter decides exactly when each one is
sent. Proxy variables are ignored (``trust_env=False``): the servers of a study are on
loopback or the local network, and a proxy in between would add its own queueing to
the timings. Redirects are not followed.

A call can be *warmed* before it is sent: a cheap GET of the server's readiness path
(``warm_path``, e.g. vLLM's ``/health``) opens the connection, which keep-alive then
holds for the real request, so a synchronized send costs no TCP handshake. httpx has
no public "connect only"; a GET the server answers anyway is the honest substitute.

Errors become :class:`EngineError` with one rule (the executor retries transient ones):

* transient: connection refused/reset/closed early, timeouts, HTTP 5xx, 408 and 429;
* permanent: any other HTTP 4xx (the server's own message is quoted), an answer that
  is not JSON, a redirect.

:func:`fan_out` sends K prepared calls from K threads, either aligned by a barrier
after every connection is open (``synchronized``) or each as soon as its thread runs
(``concurrent``), and records per-request send/receive times.
"""

from __future__ import annotations

import functools
import json
import ssl
import threading
import time
import urllib.parse
from typing import Any

import httpx

from batchsafe.runtime.engine import EngineError

TRANSIENT_STATUS = {408, 429}
"""4xx statuses that say "try again later" rather than "this request is wrong"."""


class HttpStatusError(EngineError):
    """The server answered with an HTTP error status (kept in ``status``)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message, transient=status >= 500 or status in TRANSIENT_STATUS)
        self.status = status


def _server_message(raw: bytes) -> str:
    """The human message inside an error body (vLLM, OpenAI, FastAPI and Ollama shapes)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace").strip()[:500] or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])  # OpenAI / vLLM >= 0.10: {"error": {"message": ...}}
        for key in ("error", "message", "detail"):  # Ollama, vLLM < 0.10, FastAPI
            if data.get(key):
                val = data[key]
                return val if isinstance(val, str) else json.dumps(val)[:500]
    return json.dumps(data)[:500]


class ServerClient:
    """JSON over HTTP to one server base URL (e.g. ``http://127.0.0.1:8000``)."""

    def __init__(self, base_url: str, label: str, *, timeout_s: float = 600.0,
                 connect_timeout_s: float = 10.0, hint: str = "", warm_path: str | None = None) -> None:
        """``label`` names the server in errors ("vLLM"); ``hint`` is appended to
        "not reachable" errors (how to start the server). ``timeout_s`` bounds one
        generation call; metadata calls use ``connect_timeout_s``. ``warm_path`` is a
        cheap GET that opens a call's connection ahead of its send (None: connect on send)."""
        parts = urllib.parse.urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EngineError(f"{label} endpoint {base_url!r} is not an http(s) URL")
        self.base_url, self.label, self.hint = base_url.rstrip("/"), label, hint
        self.timeout_s, self.connect_timeout_s, self.warm_path = timeout_s, connect_timeout_s, warm_path

    def call(self, method: str, path: str, body: Any = None, *, timeout_s: float | None = None) -> Any:
        """One request; the decoded JSON answer (EngineError on any failure)."""
        c = self.prepare(method, path, body, timeout_s=timeout_s)
        return c.exchange()[0]

    def get(self, path: str) -> Any:
        """GET with the metadata timeout."""
        return self.call("GET", path, timeout_s=self.connect_timeout_s)

    def post(self, path: str, body: Any, *, timeout_s: float | None = None) -> Any:
        """POST a JSON body (generation timeout unless given)."""
        return self.call("POST", path, body, timeout_s=timeout_s)

    def prepare(self, method: str, path: str, body: Any = None, *, timeout_s: float | None = None) -> Call:
        """A call that can be connected first and sent later (see :func:`fan_out`)."""
        return Call(self, method, path, body, self.timeout_s if timeout_s is None else timeout_s)

    def unreachable(self, why: str) -> EngineError:
        """The transient error of a server that cannot be reached."""
        hint = f"; {self.hint}" if self.hint else ""
        return EngineError(f"{self.label} server at {self.base_url} is not reachable ({why}){hint}", transient=True)


class Call:
    """One HTTP exchange on its own connection: ``connect()`` (optional), then ``exchange()``."""

    def __init__(self, client: ServerClient, method: str, path: str, body: Any, timeout_s: float) -> None:
        self.client, self.method, self.path, self.timeout_s = client, method, path, timeout_s
        self.data = None if body is None else json.dumps(body).encode()
        self.http: httpx.Client | None = None
        self.timing: dict[str, float] = {}

    def where(self) -> str:
        """``POST /v1/completions`` (for messages)."""
        return f"{self.method} {self.path}"

    def _open(self) -> httpx.Client:
        if self.http is None:
            c = self.client
            self.http = httpx.Client(
                base_url=c.base_url, trust_env=False, follow_redirects=False, verify=_tls(),
                timeout=httpx.Timeout(self.timeout_s, connect=c.connect_timeout_s),
                # one connection per call: K calls of a group are K connections
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
        return self.http

    def connect(self) -> None:
        """Open the connection now (a GET of ``warm_path``), so sending later costs no handshake."""
        c = self.client
        http = self._open()
        if c.warm_path is None:
            return
        try:
            http.get(c.warm_path, timeout=c.connect_timeout_s)
        except httpx.TimeoutException:
            self.close()
            raise c.unreachable(f"no answer to GET {c.warm_path} within {c.connect_timeout_s:g} s") from None
        except httpx.TransportError as exc:
            self.close()
            raise c.unreachable(_why(exc)) from None

    def exchange(self) -> tuple[Any, dict[str, float]]:
        """Send, wait for the whole answer, decode it; (json, timing). Always closes."""
        c = self.client
        try:
            http = self._open()
            headers = {"Accept": "application/json", "Connection": "close"}
            if self.data is not None:
                headers["Content-Type"] = "application/json"
            self.timing["send_unix"] = time.time()
            self.timing["send"] = time.perf_counter()
            resp = http.request(self.method, self.path, content=self.data, headers=headers)
            raw = resp.content
            self.timing["recv"] = time.perf_counter()
        except httpx.ConnectTimeout:
            raise c.unreachable(f"no connection within {c.connect_timeout_s:g} s") from None
        except httpx.ConnectError as exc:
            raise c.unreachable(_why(exc)) from None
        except httpx.TimeoutException:
            raise EngineError(f"{c.label} server at {c.base_url} did not answer {self.where()} within "
                              f"{self.timeout_s:g} s", transient=True) from None
        except httpx.TransportError as exc:  # reset, closed early, incomplete body
            raise EngineError(f"{c.label} server at {c.base_url} dropped {self.where()}: "
                              f"{type(exc).__name__}: {exc}", transient=True) from None
        finally:
            self.close()
        status = resp.status_code
        if status >= 300:
            msg = f"{c.label} server at {c.base_url} answered HTTP {status} to {self.where()}: {_server_message(raw)}"
            raise HttpStatusError(msg, status)
        try:
            return json.loads(raw), self.timing
        except ValueError:
            raise EngineError(f"{c.label} server at {c.base_url} answered {self.where()} with non-JSON: "
                              f"{raw[:200]!r}") from None

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self.http is not None:
            self.http.close()
            self.http = None


@functools.cache
def _tls() -> ssl.SSLContext:
    """httpx's default verifying context, built once: a new one per client costs ~35 ms."""
    return httpx.create_ssl_context()


def _why(exc: httpx.TransportError) -> str:
    """"connection refused" from httpx's wrapped OSError, else the exception's text."""
    cause = exc.__context__ or exc.__cause__
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__context__ or cause.__cause__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    text = str(exc).lower()
    return text.split("] ", 1)[-1] if text else type(exc).__name__


_SECONDARY = "released with a request that failed first"


def fan_out(calls: list[Call], *, aligned: bool) -> list[tuple[Any, dict[str, Any]]]:
    """Run K calls from K threads; return (json, timing) per call, in call order.

    ``aligned`` (synchronized): every thread opens its connection, waits at one
    ``threading.Barrier`` until all K are connected, then sends, so the server holds
    all K requests in flight together (the spread of send times is recorded).
    Not aligned (concurrent): each thread connects and sends as soon as it runs,
    like K independent clients; the requests may or may not overlap.

    Timings are seconds relative to the group's start (``send_s``, ``recv_s``) plus
    ``send_unix``. If any call fails the others still finish (or are released from the
    barrier) and one error is raised: a permanent one first, else the first transient.
    """
    k = len(calls)
    barrier = threading.Barrier(k) if aligned and k > 1 else None
    out: list[Any] = [None] * k
    errs: list[BaseException | None] = [None] * k
    t0 = time.perf_counter()

    def worker(i: int) -> None:
        try:
            if barrier is not None:
                calls[i].connect()
                try:
                    barrier.wait(timeout=calls[i].client.connect_timeout_s * 3)
                except threading.BrokenBarrierError:
                    calls[i].close()
                    raise EngineError(_SECONDARY, transient=True) from None
            out[i] = calls[i].exchange()
        except BaseException as exc:  # noqa: BLE001  (re-raised by the calling thread below)
            errs[i] = exc
            if barrier is not None:
                barrier.abort()  # nobody waits forever for a thread that failed

    threads = [threading.Thread(target=worker, args=(i,), name=f"batchsafe-http-{i}", daemon=True) for i in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [(i, e) for i, e in enumerate(errs) if e is not None and str(e) != _SECONDARY]
    if failed or any(errs):
        failed = failed or [(i, e) for i, e in enumerate(errs) if e is not None]
        pick = next(((i, e) for i, e in failed if isinstance(e, EngineError) and not e.transient), failed[0])
        i, exc = pick
        if isinstance(exc, EngineError):
            raise EngineError(f"request {i + 1} of {k}: {exc}" if k > 1 else str(exc), transient=exc.transient) from exc
        raise exc
    results = []
    for body, timing in out:
        results.append((body, {"send_s": timing["send"] - t0, "recv_s": timing["recv"] - t0,
                               "latency_s": timing["recv"] - timing["send"], "send_unix": timing["send_unix"]}))
    return results


def sequential(calls: list[Call]) -> list[tuple[Any, dict[str, Any]]]:
    """Run calls one after the other in this thread; same shape as :func:`fan_out`."""
    t0 = time.perf_counter()
    results = []
    for c in calls:
        body, timing = c.exchange()
        results.append((body, {"send_s": timing["send"] - t0, "recv_s": timing["recv"] - t0,
                               "latency_s": timing["recv"] - timing["send"], "send_unix": timing["send_unix"]}))
    return results


def group_timing(per_request: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """Group facts shared by every result's volatile: size, mode, send spread, wall time."""
    sends = [t["send_s"] for t in per_request]
    return {"group_size": len(per_request), "dispatch": mode,
            "send_spread_s": (max(sends) - min(sends)) if sends else 0.0,
            "group_wall_s": max((t["recv_s"] for t in per_request), default=0.0)}
