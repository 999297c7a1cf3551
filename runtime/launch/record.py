"""The launch record: what really ran, one JSON file per launched server in the run directory.

``launch/<n>-<engine>[-<kernel>][-tp<N>].json`` is written when the server is ready and
rewritten when it stops; the server's log is ``logs/server-<n>-<engine>[-<kernel>][-tp<N>].log``. Both go
into the bundle with the rest of the run directory, and ``batchsafe verify`` checks the
record against the plan (:func:`batchsafe.verification.stack.check_stack`). Times are
volatile; argv, env, versions and digests are what decided the numbers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from batchsafe.core.atomic import atomic_write
from batchsafe.core.canonical import canonical_bytes

LAUNCH_SCHEMA_VERSION = 1
LAUNCH_DIR = "launch"
"""Folder of the run directory (and bundle) holding launch records."""


class ContainerInfo(BaseModel):
    """What the Docker daemon ran for a ``container`` launch (written by
    :mod:`batchsafe.runtime.launch.container`; ``verify`` checks ``repo_digest``)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    image: str
    """The plan's image reference, ``repo@sha256:<digest>``."""
    repo_digest: str
    """The image's repo digest as the daemon listed it for the plan's repository (what ran)."""
    image_id: str
    """The daemon's image id (``sha256:`` of the image config) of the container's image."""
    container_id: str
    """Id of the container (removed after the launch stops)."""
    name: str
    """Name given to the container."""
    entrypoint: list[str] = Field(default_factory=list)
    """The image's entrypoint, which receives ``argv`` as its arguments."""
    command: list[str]
    """The container command: the same list as the record's ``argv``."""
    env: dict[str, str]
    """The complete environment set on the container (nothing is inherited from the caller)."""
    network_mode: str
    """``host``: the server listens on the host's loopback."""
    mounts: list[dict[str, str]] = Field(default_factory=list)
    """Bind mounts: source, target, mode (model folders are mounted read-only)."""
    device_requests: list[dict[str, Any]] = Field(default_factory=list)
    """GPU requests (``--gpus all`` is ``{driver: '', count: -1, capabilities: [['gpu']]}``); empty on CPU."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels batchsafe set, used to remove containers a killed run left behind."""
    daemon_version: str | None = None
    """Docker daemon version (``docker version``)."""
    daemon_api_version: str | None = None
    """Docker Engine API version the daemon speaks."""
    docker_run: str
    """An equivalent ``docker run`` command line, for running it by hand."""


class LaunchRecord(BaseModel):
    """One server launched by the runtime for one binding of the plan."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    schema_version: Literal[1] = LAUNCH_SCHEMA_VERSION
    """Version of this record's format; readers refuse newer versions."""
    seq: int
    """1 for the run's first launch, then 2, 3... (a restart after a crash is a new launch)."""
    engine: str
    """Engine name in the plan."""
    kind: Literal["process", "container"]
    """Launch kind from the plan."""
    kernel: str | None = None
    """Kernel variant this server stands for (its env/flags are in ``env``/``argv``)."""
    tensor_parallel: int | None = Field(None, exclude_if=lambda v: v is None)
    """TP size this server stands for (``--tensor-parallel-size`` in ``argv``); absent without a TP axis."""
    argv: list[str]
    """The exact command line started (process) or the container command (container)."""
    env: dict[str, str]
    """Environment that can change numerics: the plan's env and the variant's, as set."""
    inherited_env: dict[str, str] = Field(default_factory=dict)
    """Numerics-relevant variables inherited from the caller (OMP_*, MKL_*, CUDA_*, ...), recorded not set."""
    endpoint: str
    """Base URL the adapter used."""
    model_dir: str | None = None
    """Model directory served (a locator, recorded for the reader)."""
    weights_files: dict[str, str] = Field(default_factory=dict)
    """{relative path: hex sha256} of the model directory as loaded."""
    weights_digest: str | None = None
    """sha256: of the canonical JSON of ``weights_files``."""
    server_version: str | None = None
    """Version the server reported (vLLM: GET /version)."""
    served_model: str | None = None
    """Model id the server listed on /v1/models."""
    max_model_len: int | None = None
    """max_model_len from the server's model card."""
    dtype: str | None = None
    """dtype from the server's startup log, where it prints one."""
    pid: int | None = None
    """Process id of the server's main process."""
    started_unix: float | None = None
    """Launch time (volatile)."""
    ready_unix: float | None = None
    """First healthy answer (volatile)."""
    stopped_unix: float | None = None
    """Stop time (volatile); None while running."""
    exit_code: int | None = None
    """Exit status after stop (negative: killed by that signal)."""
    stop_reason: str | None = None
    """Why it stopped: closed, failed, died (found dead by the adapter), interrupted."""
    log: str
    """Run-relative name of the server's log file."""
    container: ContainerInfo | None = Field(None, exclude_if=lambda v: v is None)
    """Container launches: image digest, ids, command, env, mounts, GPU requests, daemon version."""

    def file_name(self) -> str:
        """Run-relative file name of this record."""
        return f"{LAUNCH_DIR}/{self.stem()}.json"

    def stem(self) -> str:
        """``<seq>-<engine>[-<kernel>]`` with unsafe characters replaced."""
        raw = "-".join([f"{self.seq:03d}", self.engine, *([self.kernel] if self.kernel else []),
                        *([f"tp{self.tensor_parallel}"] if self.tensor_parallel else [])])
        return re.sub(r"[^A-Za-z0-9_.-]", "_", raw)

    def write(self, run_dir: Path) -> Path:
        """Write the record atomically under ``run_dir``; return its path."""
        path = Path(run_dir) / self.file_name()
        atomic_write(path, canonical_bytes(self.model_dump(mode="json")) + b"\n")
        return path

    @classmethod
    def from_bytes(cls, raw: bytes) -> LaunchRecord:
        """Parse one record (pydantic ValidationError on anything malformed or newer)."""
        import json

        data: Any = json.loads(raw)
        return cls.model_validate(data)


def next_seq(run_dir: Path) -> int:
    """The sequence number of the next launch in ``run_dir`` (1 when none ran yet)."""
    d = Path(run_dir) / LAUNCH_DIR
    seqs = [int(m.group(1)) for p in d.glob("*.json") if (m := re.match(r"(\d+)-", p.name))] if d.is_dir() else []
    return max(seqs, default=0) + 1
