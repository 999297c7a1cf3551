"""Launch kind ``container``: the plan's image, by digest, started through the Docker SDK.

For one binding (engine, model, kernel variant) :func:`prepare` builds a
:class:`ContainerRequest` from the plan: the image ``repo@sha256:<digest>``, the same flags
and env as a process launch (:func:`~batchsafe.runtime.launch.vllm_process.binding_settings`),
and the same server arguments (:func:`~batchsafe.runtime.launch.vllm_process.server_args`),
passed to the image's entrypoint, which in vLLM's images is the OpenAI server module.
:class:`ContainerServer` then

1. finds the image locally by its repo digest or pulls it **by digest**, and refuses an
   image whose repo digest is not the plan's, naming both digests, before any sample runs;
2. checks the mounted model folder's weights digest against the plan's pin;
3. starts the container with ``--network=host`` on a loopback port, the model folder
   mounted read-only at ``/model``, ``--gpus all`` as a device request when the engine asks
   for a GPU (vLLM unless ``VLLM_TARGET_DEVICE=cpu``), only the plan's env (a container
   inherits nothing from the caller) and batchsafe's labels;
4. waits for ``GET /v1/models`` with a bounded timeout (an exit or a timeout is a
   :class:`LaunchError` quoting the exit code and the container log's last lines), sends
   the same first generation and dtype check as a process launch, and writes a
   :class:`~batchsafe.runtime.launch.record.LaunchRecord` with a ``container`` section
   (ids, repo digest, command, env, mounts, device requests, daemon version).

No container outlives its run: :meth:`ContainerHandle.stop` stops and removes it on success,
failure, Ctrl-C and SIGTERM (the process launcher's atexit and SIGTERM handlers cover both
kinds); a reaper process (:mod:`batchsafe.runtime.launch.container_handle`) removes it
when the launching process is killed with ``kill -9`` (it sees its parent change); and
every launch first removes labelled containers whose owner process is gone.
Docker reports a killed container's exit code as 128 + signal (137 for SIGKILL).
"""

from __future__ import annotations

import os
import shlex
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchsafe.runtime.launch.container_handle import LABEL, OWNER_LABEL, ContainerHandle, reap_orphans
from batchsafe.runtime.launch.process import LaunchError, free_port, port_taken
from batchsafe.runtime.launch.record import ContainerInfo, LaunchRecord, next_seq
from batchsafe.runtime.launch.vllm_process import (HOST, RESERVED_FLAGS, LaunchedServer, binding_settings,
                                                   checked_weights, expand_path, launched_engine, server_args)

MODEL_MOUNT = "/model"
HF_MOUNT = "/root/.cache/huggingface"
"""Where vLLM's images keep the Hugging Face cache (HF_HOME of their root user)."""


def split_ref(ref: str) -> tuple[str, str]:
    """``repo@sha256:<hex>`` -> (repo, ``sha256:<hex>``); LaunchError for anything else."""
    repo, sep, digest = ref.partition("@")
    hexpart = digest[7:]
    if not sep or not digest.startswith("sha256:") or len(hexpart) != 64 or not repo or \
            any(c not in "0123456789abcdef" for c in hexpart):
        raise LaunchError(f"image {ref!r} is not pinned as repo@sha256:<64 hex>; a container launch runs images by digest")
    return repo, digest


def wants_gpus(env: dict[str, str]) -> bool:
    """vLLM needs the GPUs unless the plan builds for CPU (``VLLM_TARGET_DEVICE=cpu``)."""
    return env.get("VLLM_TARGET_DEVICE", "cuda").lower() != "cpu"


def daemon_address() -> str:
    """Where the SDK looks for the daemon (for messages)."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock (default; set DOCKER_HOST)"


def connect(timeout_s: float = 30.0) -> Any:
    """A Docker SDK client that has answered a ping; LaunchError saying so when none is reachable."""
    try:
        import docker
    except ImportError as exc:
        raise LaunchError(f"launch kind container needs the docker package ({exc}); "
                          "install with: pip install 'batchsafe[container]'") from None
    try:
        client = docker.from_env(timeout=int(timeout_s))
        client.ping()
        return client
    except Exception as exc:  # DockerException, requests' ConnectionError, PermissionError...
        raise LaunchError(f"no Docker daemon reachable at {daemon_address()}: {str(exc).splitlines()[0][:300]} "
                          "(start one, e.g. `make docker-up` for the private test daemon, or set DOCKER_HOST)") from None


def local_digests(client: Any, repo: str) -> list[str]:
    """Repo digests the daemon holds for ``repo`` (every local image of that repository)."""
    out = set()
    for img in client.images.list():
        for rd in img.attrs.get("RepoDigests") or []:
            if rd.partition("@")[0] == repo:
                out.add(rd.partition("@")[2])
    return sorted(out)


def _registry_digest(client: Any, repo: str, tag: str = "latest") -> str | None:
    try:
        return client.images.get_registry_data(f"{repo}:{tag}").id
    except Exception:  # the tag may not exist; this is only for the message
        return None


def _mismatch(client: Any, ref: str, why: str) -> LaunchError:
    repo, digest = split_ref(ref)
    have = [f"{d} (local)" for d in local_digests(client, repo)]
    latest = _registry_digest(client, repo)
    if latest:
        have.append(f"{latest} (registry, tag latest)")
    found = "; ".join(have) if have else "no other digest of it locally or as its registry's tag latest"
    return LaunchError(f"image {repo}: the plan pins digest {digest}, which {why}; available: {found}. "
                       "Refusing to run an image whose digest is not the plan's (re-pin the spec or push that image)")


def resolve_image(client: Any, ref: str) -> Any:
    """The local image with repo digest ``ref``, pulled by digest when absent (LaunchError otherwise)."""
    import docker

    repo, digest = split_ref(ref)
    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        try:
            image = client.images.pull(ref)
        except docker.errors.NotFound as exc:
            raise _mismatch(client, ref, f"its registry does not have ({str(exc.explanation or exc)[:200]})") from None
        except docker.errors.APIError as exc:
            raise LaunchError(f"image {ref} is not available locally and could not be pulled by digest: "
                              f"{str(exc.explanation or exc)[:300]}") from None
    listed = [rd for rd in image.attrs.get("RepoDigests") or [] if rd.partition("@")[0] == repo]
    if ref not in listed:  # a daemon resolving a digest to another image would be a broken daemon; check anyway
        raise LaunchError(f"image {repo}: the plan pins digest {digest}, the image the daemon returned has "
                          f"{', '.join(d.partition('@')[2] for d in listed) or 'no repo digest'} (image {image.id})")
    return image


@dataclass
class ContainerRequest:
    """Everything needed to start one container for one binding."""

    engine: str
    kernel: str | None
    image: str
    model_dir: Path | None
    served_name: str
    revision: str | None
    port: int | None
    ready_timeout_s: float
    flags: list[str]
    env: dict[str, str]
    weights_sha256: str | None
    gpus: bool
    tensor_parallel: int | None = None
    """TP size of this container's server (its flag and env are in ``flags``/``env``); None without a TP axis."""

    def command(self, port: int) -> list[str]:
        """The container command: the launcher's server arguments, then the plan's flags."""
        if self.model_dir is not None:
            return server_args(MODEL_MOUNT, self.served_name, port, self.flags)
        # No local folder: the server fetches the hub repo at the pinned revision itself.
        return server_args(self.served_name, self.served_name, port, self.flags,
                           ["--revision", self.revision] if self.revision else [])

    def mounts(self) -> list[dict[str, str]]:
        """Read-only bind of the model folder; without one, the host's Hugging Face cache
        (read-write: the server downloads the pinned revision into it, as vLLM's docs run it)."""
        if self.model_dir is None:
            hf = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser()
            return [{"source": str(hf), "target": HF_MOUNT, "mode": "rw"}]
        return [{"source": str(self.model_dir.resolve()), "target": MODEL_MOUNT, "mode": "ro"}]

    def device_requests(self) -> list[dict[str, Any]]:
        """``--gpus all`` as the Engine API's DeviceRequest, when the engine asks for GPUs."""
        return [{"driver": "", "count": -1, "device_ids": [], "capabilities": [["gpu"]], "options": {}}] if self.gpus else []

    def run_kwargs(self, port: int, name: str, labels: dict[str, str]) -> dict[str, Any]:
        """Keyword arguments of ``client.containers.create`` (host network, ro model mount, GPUs)."""
        import docker

        return dict(command=self.command(port), environment=dict(self.env), name=name, labels=labels,
                    init=True,  # docker-init as PID 1 forwards SIGTERM and reaps the server's workers
                    network_mode="host", ipc_mode="host",  # vLLM's workers share memory; the default 64 MB shm is too small
                    volumes={m["source"]: {"bind": m["target"], "mode": m["mode"]} for m in self.mounts()},
                    device_requests=[docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])] if self.gpus else None)

    def docker_run(self, port: int | None = None, name: str | None = None) -> str:
        """The ``docker run`` command a user can run by hand to start the same server."""
        port = port or self.port or 8000
        parts = ["docker", "run", "--rm", "-d", *(["--name", name] if name else []), "--init", "--network", "host",
                 "--ipc", "host", *(["--gpus", "all"] if self.gpus else []), "--label", f"{LABEL}=1"]
        for m in self.mounts():
            parts += ["-v", f"{m['source']}:{m['target']}:{m['mode']}"]
        for k, v in sorted(self.env.items()):
            parts += ["-e", f"{k}={v}"]
        prefix = f"DOCKER_HOST={shlex.quote(os.environ['DOCKER_HOST'])} " if os.environ.get("DOCKER_HOST") else ""
        return prefix + shlex.join([*parts, self.image, *self.command(port)])

    def problems(self, client: Any = None) -> list[str]:
        """What would stop the launch, found without starting anything (preflight)."""
        out, who = [], f"engine {self.engine!r}"
        bad = [f for f in self.flags if f.split("=", 1)[0] in RESERVED_FLAGS]
        if bad:
            out.append(f"{who}: the launcher sets {', '.join(RESERVED_FLAGS)} itself; remove {', '.join(bad)} "
                       "from the plan's flags")
        if self.model_dir is not None and not self.model_dir.is_dir():
            out.append(f"{who}: launch.model_dir {self.model_dir} is not a directory")
        if self.port is not None and port_taken(self.port):
            out.append(f"{who}: launch.port {self.port} on {HOST} is already taken")
        own = client is None
        if own:
            try:
                client = connect(timeout_s=10)
            except LaunchError as exc:
                out.append(f"{who}: {exc}")
        if client is not None:
            out.extend(f"{who}: {p}" for p in image_problems(client, self.image))
            if own:
                client.close()
        if out:
            out.append(f"{who}: the container batchsafe would start, to run by hand: {self.docker_run()}")
        return out


def image_problems(client: Any, ref: str) -> list[str]:
    """Whether ``ref`` is local or its registry can serve it by digest (nothing is pulled)."""
    import docker

    try:
        repo, digest = split_ref(ref)
        client.images.get(ref)
        return []
    except LaunchError as exc:
        return [str(exc)]
    except docker.errors.ImageNotFound:
        pass
    try:
        client.images.get_registry_data(ref)
        return []  # the registry has it: the launch pulls it by digest
    except docker.errors.NotFound:
        return [str(_mismatch(client, ref, "is not available locally and its registry does not have"))]
    except docker.errors.APIError as exc:
        return [f"image {ref} is not available locally and its registry ({repo.split('/')[0]}) cannot be reached: "
                f"{str(exc.explanation or exc)[:300]}"]


def preflight(plan: Any, engine: str, groups: list[Any]) -> list[str]:
    """What would stop ``engine``'s containers for ``groups`` (daemon, image by digest, model
    folder, flags, port), each with the ``docker run`` command to try by hand; nothing starts."""
    models = {m.name: m for m in plan.models}
    first = next((g for g in groups if g.engine == engine), None)
    model = models.get(first.model) if first else None
    if model is None or not model.hf_repo:
        return [f"engine {engine!r} launches a vLLM container, which needs a model with an hf reference"]
    try:
        return prepare(plan, engine, model, None).problems()
    except LaunchError as exc:
        return [str(exc)]


def prepare(plan: Any, engine: str, model: Any, kernel: dict[str, Any] | None, cache_dir: str | None = None,
            tp: dict[str, Any] | None = None) -> ContainerRequest:
    """The container request of ``engine`` serving ``model`` (a plan ResolvedModel) with ``kernel``
    (and the plan's tensor-parallel variant ``tp``, whose flags/env come last, as for processes)."""
    eng = launched_engine(plan, engine)
    loc = plan.locators.launch.get(engine) or {}
    image = eng.config.get("image")
    if not image:
        raise LaunchError(f"engine {engine!r} launches a container but the plan names no image")
    split_ref(image)
    flags, env = binding_settings(eng.config, kernel)
    if tp:
        from batchsafe.runtime.launch import tensor_parallel

        flags, env = tensor_parallel.apply(flags, env, tp)
    return ContainerRequest(engine=engine, kernel=(kernel or {}).get("id"), image=image,
                            model_dir=expand_path(loc["model_dir"], cache_dir) if loc.get("model_dir") else None,
                            served_name=model.hf_repo, revision=getattr(model, "hf_revision", None),
                            port=loc.get("port"), ready_timeout_s=float(loc.get("ready_timeout_s") or 600.0),
                            flags=flags, env=env, weights_sha256=getattr(model, "hf_weights_sha256", None),
                            gpus=wants_gpus(env), tensor_parallel=(tp or {}).get("size"))


class ContainerServer(LaunchedServer):
    """A launched container and its record; :meth:`finish` stops and removes it."""

    def __init__(self, req: ContainerRequest, run_dir: Path) -> None:  # noqa: super().__init__ starts a process
        """Check the image digest and weights, start the container, wait, probe, write the record."""
        self.req, self.run_dir = req, Path(run_dir)
        client = connect()
        reap_orphans(client)
        image = resolve_image(client, req.image)  # refuses another digest before anything starts
        files, digest = checked_weights(req)
        port = req.port or free_port(HOST)
        cmd = req.command(port)
        seq = next_seq(self.run_dir)
        self.record = LaunchRecord(seq=seq, engine=req.engine, kind="container", kernel=req.kernel, argv=cmd,
                                   env=dict(req.env), endpoint=f"http://{HOST}:{port}",
                                   model_dir=str(req.model_dir) if req.model_dir else None, weights_files=files,
                                   weights_digest=digest, log="", tensor_parallel=req.tensor_parallel)
        self.record.log = f"logs/server-{self.record.stem()}.log"
        name = f"batchsafe-{self.record.stem()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        labels = {LABEL: "1", OWNER_LABEL: f"{socket.gethostname()}:{os.getpid()}", "batchsafe.engine": req.engine}
        label = f"vLLM container for engine {req.engine!r}" + (f" (kernel variant {req.kernel!r})" if req.kernel else "")
        self.server = ContainerHandle(client, req.run_kwargs(port, name, labels), image, endpoint=self.record.endpoint,
                                      log_path=self.run_dir / self.record.log, label=label)
        version = client.version()
        self.record.container = ContainerInfo(
            image=req.image, repo_digest=req.image, image_id=image.id, container_id="", name=name,
            entrypoint=list((image.attrs.get("Config") or {}).get("Entrypoint") or []), command=cmd, env=dict(req.env),
            network_mode="host", mounts=req.mounts(), device_requests=req.device_requests(), labels=labels,
            daemon_version=version.get("Version"), daemon_api_version=version.get("ApiVersion"),
            docker_run=req.docker_run(port, name))
        self._start_server(req.ready_timeout_s)
        c = self.server.container
        if c.attrs.get("Image") != image.id:
            self.finish("failed")
            raise LaunchError(f"{label}: container {name} runs image {c.attrs.get('Image')}, not {image.id}")
        self.record.container.container_id = c.id
        self.record.pid = (c.attrs.get("State") or {}).get("Pid") or None
        self._fill_times(None)
        self._check_ready(label)

    def exit_status(self) -> int | None:
        """Docker's exit code once the container has exited."""
        return self.server.exit_status()

    def tail(self) -> str:
        """The container log's last lines."""
        return self.server.logs_tail()


def start(plan: Any, engine: str, model: Any, kernel: dict[str, Any] | None, run_dir: Path,
          cache_dir: str | None = None, tp: dict[str, Any] | None = None) -> ContainerServer:
    """Prepare and start the container of one binding (see the module docstring)."""
    return ContainerServer(prepare(plan, engine, model, kernel, cache_dir, tp), run_dir)
