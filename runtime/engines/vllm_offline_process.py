"""The vLLM offline worker as a process group with JSON-lines pipes.

Start, stop and cleanup are the server launcher's (:class:`~batchsafe.runtime.launch.process.ServerProcess`:
own session, ``PR_SET_PDEATHSIG``, SIGTERM then SIGKILL to the group, stopped at exit and on
SIGTERM); only readiness differs: the worker is ready when it answers its first line, not
when an HTTP health URL does.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from typing import Any

from batchsafe.runtime.engine import EngineError
from batchsafe.runtime.launch import process as proc_mod
from batchsafe.runtime.launch.process import LaunchError, ServerProcess, log_tail


class WorkerProcess(ServerProcess):
    """The worker as a process group with JSON-lines pipes; stop/cleanup are the server launcher's."""

    def start(self, ready_timeout_s: float) -> None:  # type: ignore[override]
        """Start the worker (ready is its first answer, not an HTTP health check)."""
        proc_mod._install_handlers()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- batchsafe: starting {self.label}: {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=log, start_new_session=True,
                                             preexec_fn=proc_mod._die_with_parent if sys.platform == "linux" else None)
            except OSError as exc:
                raise LaunchError(f"{self.label}: cannot execute {self.argv[0]}: {exc.strerror or exc}") from None
        self.started_unix = time.time()
        with proc_mod._LIVE_LOCK:
            proc_mod._LIVE.add(self)
        self.lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in iter(stream.readline, b""):
            self.lines.put(line)
        self.lines.put(b"")  # EOF

    def call(self, msg: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send one request line and wait for its answer; EngineError (transient) if the worker dies."""
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the worker is gone; the wait below reports how it ended
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    line = b""
                elif time.monotonic() > deadline:
                    raise EngineError(f"{self.label} gave no answer within {timeout_s:g} s (log {self.log_path})",
                                      transient=True) from None
                else:
                    continue
            if not line:
                code = self.proc.wait(timeout=30) if self.proc.poll() is None else self.proc.returncode
                raise EngineError(f"{self.label} (pid {self.proc.pid}) died with exit code {code} (log "
                                  f"{self.log_path}); last lines:\n{log_tail(self.log_path, 12)}", transient=True)
            try:
                return json.loads(line)
            except ValueError:
                raise EngineError(f"{self.label} answered a line that is not JSON: {line[:200]!r}") from None
