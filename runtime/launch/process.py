"""A server started as a local process group: start, wait until ready, stop, leave no orphans.

:class:`ServerProcess` runs one command line in its own session (``start_new_session``:
its process group is the server and every worker it forks), with stdout and stderr
appended to a log file. Readiness is an HTTP 200 from the health URL within a bounded
time; if the process exits first, or the time runs out, :class:`LaunchError` quotes the
exit code and the log's last lines. :meth:`ServerProcess.stop` sends SIGTERM to the group,
then SIGKILL after a grace period, and is idempotent.

No orphan servers: every live server is stopped at interpreter exit (atexit), on SIGTERM
to the parent (the handler turns it into SystemExit so ``finally`` blocks run), and when
the parent dies without running Python code (``kill -9``): the child is started with
``PR_SET_PDEATHSIG`` = SIGTERM on Linux, and a server that forks workers (vLLM's engine
core) is expected to stop them when its own SIGTERM arrives, as vLLM does.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

import httpx

from batchsafe.core.errors import BatchsafeError

TAIL_LINES = 30
"""Log lines quoted in a launch error."""
STOP_GRACE_S = 20.0
"""SIGTERM-to-SIGKILL grace period of :meth:`ServerProcess.stop`."""
GROUP_GONE_S = 30.0
"""After SIGKILL, how long :meth:`ServerProcess.stop` waits for the whole group to leave /proc."""
_PR_SET_PDEATHSIG = 1


class LaunchError(BatchsafeError, RuntimeError):
    """A server could not be started, did not become ready, or is not the plan's."""

    exit_code = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on ``host:port``."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def log_tail(path: Path, n: int = TAIL_LINES) -> str:
    """The last ``n`` lines of a log file ('' when there is none)."""
    try:
        with open(path, "rb") as fh:
            return b"".join(deque(fh, maxlen=n)).decode("utf-8", "replace").rstrip()
    except OSError:
        return ""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: atexit and the SIGTERM handler still stop the server


_LIVE: set[ServerProcess] = set()
_LIVE_LOCK = threading.Lock()
_HANDLERS_SET = False


def _stop_all() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for srv in live:
        srv.stop()


def _on_sigterm(signum: int, frame: Any) -> None:
    # SystemExit unwinds the stack, so the executor's finally blocks journal and stop engines.
    raise SystemExit(128 + signum)


def _install_handlers() -> None:
    global _HANDLERS_SET
    if _HANDLERS_SET:
        return
    _HANDLERS_SET = True
    atexit.register(_stop_all)
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)



def wait_healthy(url: str, timeout_s: float, label: str, log_path: Path, *,
                 exited: Callable[[], object | None], tail: Callable[[], str]) -> None:
    """Poll ``url`` every 0.5 s until it answers 200; a :class:`LaunchError` naming ``label``,
    the log and its last lines (``tail()``) when ``exited()`` reports an exit code first or
    ``timeout_s`` passes. Shared by process and container launches."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while True:
            code = exited()
            if code is not None:
                raise LaunchError(f"{label} exited with code {code} before it was ready "
                                  f"(log {log_path}); last lines:\n{tail()}")
            try:
                r = client.get(url)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            if time.monotonic() > deadline:
                raise LaunchError(f"{label} was not ready within {timeout_s:g} s (GET {url}: {last}; "
                                  f"log {log_path}); last lines:\n{tail()}")
            time.sleep(0.5)

class ServerProcess:
    """One launched server: its command, log, endpoint and lifetime (see the module docstring)."""

    def __init__(self, argv: list[str], env: dict[str, str], *, endpoint: str, health_path: str,
                 log_path: Path, label: str) -> None:
        """``env`` is the complete environment of the child; ``endpoint`` its base URL."""
        self.argv, self.env, self.endpoint, self.health_path = list(argv), dict(env), endpoint.rstrip("/"), health_path
        self.log_path, self.label = Path(log_path), label
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_unix: float | None = None
        self.ready_unix: float | None = None
        self.stopped_unix: float | None = None
        self.exit_code: int | None = None

    def start(self, ready_timeout_s: float) -> None:
        """Start the process and wait until the health URL answers 200 (LaunchError otherwise)."""
        _install_handlers()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- batchsafe: starting {self.label}: {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True,
                                             preexec_fn=_die_with_parent if sys.platform == "linux" else None)
            except OSError as exc:
                raise LaunchError(f"{self.label}: cannot execute {self.argv[0]}: {exc.strerror or exc}") from None
        self.started_unix = time.time()
        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            self._wait_ready(ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.ready_unix = time.time()

    def _wait_ready(self, timeout_s: float) -> None:
        assert self.proc is not None
        proc = self.proc
        wait_healthy(self.endpoint + self.health_path, timeout_s, self.label, self.log_path,
                     exited=lambda: proc.poll(), tail=lambda: log_tail(self.log_path))

    def alive(self) -> bool:
        """True while the server's main process runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the process group, SIGKILL what is left after ``grace_s``; idempotent."""
        proc = self.proc
        if proc is None or self.stopped_unix is not None:
            return
        pgid = proc.pid  # start_new_session: the child leads its own group
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        # Workers may outlive the leader for a moment: the group gets SIGKILL either way.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if proc.poll() is None:
            proc.wait(timeout=10)
        # SIGKILLed workers still unmap gigabytes of weights and KV cache before they
        # leave /proc: stop() returns only once none of the group is running.
        deadline = time.monotonic() + GROUP_GONE_S
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.exit_code = proc.returncode
        self.stopped_unix = time.time()
        with _LIVE_LOCK:
            _LIVE.discard(self)
        with open(self.log_path, "ab") as log:
            log.write(f"--- batchsafe: stopped {self.label} (exit code {self.exit_code})\n".encode())

    def group_alive(self) -> bool:
        """True while any live (non-zombie) process of the server's group exists."""
        return self.proc is not None and group_alive(self.proc.pid)


def group_alive(pgid: int) -> bool:
    """True while a live process of group ``pgid`` exists. Zombies do not count: a killed
    worker whose reaper (PID 1 of a container) never waits for it is gone, not running."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: signal 0 is the best test there is
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state, ppid, pgrp, ...
        rest = stat.rsplit(")", 1)[-1].split()
        if len(rest) > 2 and rest[2] == str(pgid) and rest[0] not in ("Z", "X"):
            return True
    return False
