"""A container's lifetime for the ``container`` launch kind: start, follow, wait, stop, remove.

:class:`ContainerHandle` has the interface the launcher uses of a
:class:`~batchsafe.runtime.launch.process.ServerProcess` (start with a bounded readiness
wait, alive, stop, exit code, times, log file), over the Docker SDK. It registers with the
process launcher's live set, so the same atexit and SIGTERM handlers stop containers too.

Nothing outlives the run: :meth:`ContainerHandle.stop` stops (SIGTERM, then SIGKILL) and
removes the container; a reaper process (``python -m batchsafe.runtime.launch.container_handle
reap ID``) removes it when the launching process dies without running Python code
(``kill -9``: the reaper's parent changes); :func:`reap_orphans`, run before every launch,
removes labelled containers whose owner process is gone (a crashed reaper, a reboot).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


from batchsafe.runtime.launch import process

LABEL = "batchsafe.launch"
"""Label on every container batchsafe starts (``docker ps --filter label=batchsafe.launch``)."""
OWNER_LABEL = "batchsafe.owner"
"""``<hostname>:<pid>`` of the launching process; a container whose owner is gone is removed."""
STOP_GRACE_S = 20
TAIL_LINES = 30
HEALTH_PATH = "/v1/models"
"""Ready means the model list answers (vLLM's /health answers earlier; other OpenAI servers lack it)."""


def _owner_gone(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's container on a shared daemon: not ours to judge
    try:
        os.kill(int(pid), 0)
        return False
    except ProcessLookupError:
        return True
    except PermissionError:
        return False


def reap_orphans(client: Any) -> list[str]:
    """Remove labelled containers whose launching process no longer exists; their names."""
    gone = []
    for c in client.containers.list(all=True, filters={"label": LABEL}):
        if _owner_gone(c.labels.get(OWNER_LABEL, "")):
            c.remove(force=True)
            gone.append(c.name)
    return gone


class ContainerHandle:
    """One container's lifetime, with the interface the launcher uses of a ServerProcess."""

    proc = None

    def __init__(self, client: Any, kwargs: dict[str, Any], image: Any, *, endpoint: str, log_path: Path,
                 label: str) -> None:
        self.client, self.kwargs, self.image, self.endpoint = client, kwargs, image, endpoint
        self.log_path, self.label = Path(log_path), label
        self.container: Any = None
        self.started_unix = self.ready_unix = self.stopped_unix = None
        self.exit_code: int | None = None
        self._logs: threading.Thread | None = None
        self._reaper: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout_s: float) -> None:
        """Create and start the container, follow its log, wait until ready (LaunchError otherwise)."""
        process._install_handlers()  # atexit + SIGTERM -> SystemExit, shared with process launches
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- batchsafe: starting {self.label}: container {self.kwargs['name']}\n".encode())
        with process._LIVE_LOCK:
            process._LIVE.add(self)  # type: ignore[arg-type]
        try:
            self.container = self.client.containers.create(self.image.id, **self.kwargs)
            self._reaper = subprocess.Popen(
                [sys.executable, "-m", "batchsafe.runtime.launch.container_handle", "reap", self.container.id],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)  # no parent-death signal: it fires when the launching *thread* ends
            self.container.start()
            self.started_unix = time.time()
            self._logs = threading.Thread(target=self._follow_logs, daemon=True, name=f"logs-{self.kwargs['name']}")
            self._logs.start()
            self._wait_ready(ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.ready_unix = time.time()

    def _follow_logs(self) -> None:
        try:
            with open(self.log_path, "ab") as log:
                for chunk in self.container.logs(stream=True, follow=True):
                    log.write(chunk)
                    log.flush()
        except Exception:  # the container was removed under us: the log ends here
            pass

    def _state(self) -> dict[str, Any]:
        import docker

        if self.stopped_unix is not None:
            return {"Status": "removed"}  # stop() removed it (and closed the client)
        try:
            self.container.reload()
            return self.container.attrs.get("State") or {}
        except docker.errors.NotFound:
            return {"Status": "removed"}

    def logs_tail(self, n: int = TAIL_LINES) -> str:
        """The container log's last lines, from the daemon (the file may lag)."""
        try:
            return self.container.logs(tail=n).decode("utf-8", "replace").rstrip()
        except Exception:
            return process.log_tail(self.log_path, n)

    def _wait_ready(self, timeout_s: float) -> None:
        def exited() -> object | None:
            state = self._state()
            if state.get("Status") not in ("exited", "dead", "removed"):
                return None
            return state.get("ExitCode", "unknown (container removed)")

        process.wait_healthy(self.endpoint + HEALTH_PATH, timeout_s, f"{self.label} (container {self.kwargs['name']})",
                             self.log_path, exited=exited, tail=self.logs_tail)

    def alive(self) -> bool:
        """True while the container runs."""
        return self.container is not None and self._state().get("Status") == "running"

    def exit_status(self) -> int | None:
        """Docker's exit code once the container has exited (128 + signal when killed)."""
        state = self._state() if self.container is not None else {}
        return state.get("ExitCode") if state.get("Status") in ("exited", "dead") else None

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop (SIGTERM, SIGKILL after ``grace_s``) and remove the container; idempotent."""
        import docker

        if self.stopped_unix is not None:
            return
        if self.container is not None:
            try:
                self.container.stop(timeout=int(grace_s))
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError:
                pass  # already stopping or dead: removal below forces it
            self.exit_code = self.exit_status()
            if self._logs is not None:
                self._logs.join(timeout=5)
            try:
                self.container.remove(force=True)
            except docker.errors.NotFound:
                pass
        if self._reaper is not None and self._reaper.poll() is None:
            self._reaper.kill()  # the container is gone: nothing left to reap
            self._reaper.wait(timeout=10)
        self.stopped_unix = time.time()
        self.client.close()  # one client per launch: its connection pool goes with the container
        with process._LIVE_LOCK:
            process._LIVE.discard(self)  # type: ignore[arg-type]
        with open(self.log_path, "ab") as log:
            log.write(f"--- batchsafe: stopped and removed {self.label} (exit code {self.exit_code})\n".encode())

    def group_alive(self) -> bool:
        """True while the container exists (running or not)."""
        return self.container is not None and self._state().get("Status") != "removed"


def _reap(container_id: str) -> int:
    """Reaper process: remove the container when the launching process dies (or on SIGTERM)."""
    parent = os.getppid()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    import docker

    client = docker.from_env(timeout=30)
    while not done.wait(1.0):
        if os.getppid() != parent:
            break  # the launcher died without stopping its container
        try:
            client.containers.get(container_id)
        except docker.errors.NotFound:
            return 0  # stopped and removed by the launcher
    try:
        client.containers.get(container_id).remove(force=True)
    except docker.errors.NotFound:
        pass
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "reap":
        sys.exit(_reap(sys.argv[2]))
    print("usage: python -m batchsafe.runtime.launch.container_handle reap CONTAINER_ID", file=sys.stderr)
    sys.exit(2)
