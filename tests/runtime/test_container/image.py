"""Build the container tests' image locally (no Docker Hub): Debian rootfs + llama_cpp.server.

``python tests/runtime/test_container/image.py`` (``make docker-image``), or :func:`ensure_image`
from the tests. Steps, each cached under ``${BATCHSAFE_CACHE:-~/.cache/batchsafe}/docker``:

1. ``rootfs-bookworm-minbase/``: ``debootstrap --variant=minbase bookworm`` plus python3 and
   libgomp1 from the Debian mirror (about 80 s once; a marker file says it completed);
2. ``smol-server-<key>.tar``: that rootfs without docs, locales and apt caches, plus
   llama-cpp-python and its server's dependencies copied file by file (each distribution's
   RECORD) from the running interpreter's site-packages (the wheel ``make setup`` built:
   Debian 12's python3 is the same 3.11 ABI), and ``serve.py`` as the entrypoint. ``key`` is a
   digest of those inputs, so a changed input builds a new tarball;
3. ``docker import`` of the tarball as ``batchsafe-test/smol-server:<key>`` unless the daemon
   already has that tag (its data root is cached too), then a check that
   ``import llama_cpp.server`` works inside it;
4. the model folder ``models/smollm2-135m-instruct-gguf/`` holding SmolLM2-135M-Instruct's
   Q4_1 GGUF from the model store (hard link), mounted read-only by the launcher.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "libgomp1")  # libgomp: llama.cpp's OpenMP runtime
ROOTS = ("llama-cpp-python", "fastapi", "uvicorn", "sse-starlette", "starlette-context", "pydantic-settings")
"""What ``llama_cpp.server`` imports; their requirements are followed (extras ignored)."""
SITE = "/opt/batchsafe-site"
REPO = "batchsafe-test/smol-server"
DROP = ("usr/share/doc/", "usr/share/man/", "usr/share/locale/", "usr/share/info/", "var/cache/apt/",
        "var/lib/apt/lists/")
SMOL = "smollm2-135m-instruct-q4_1"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def log(msg: str) -> None:
    print(f"[test-image {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    return Path(os.environ.get("BATCHSAFE_CACHE") or Path.home() / ".cache" / "batchsafe").expanduser() / "docker"


def ensure_rootfs(cache: Path) -> Path:
    """The debootstrapped base (built once; ``.batchsafe-done`` records its inputs)."""
    root = cache / f"rootfs-{SUITE}-minbase"
    marker = root / ".batchsafe-done"
    want = {"suite": SUITE, "packages": list(PACKAGES), "variant": "minbase"}
    if marker.is_file() and json.loads(marker.read_text()) == want:
        return root
    if shutil.which("debootstrap") is None:
        raise SystemExit("error: debootstrap is not installed (make docker-install installs it)")
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.monotonic()
    log(f"debootstrap {SUITE} (minbase + {', '.join(PACKAGES)}) into {root}")
    r = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), MIRROR],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"error: debootstrap failed (exit {r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    marker.write_text(json.dumps(want))
    log(f"rootfs ready in {time.monotonic() - t0:.0f} s")
    return root


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure() -> list[metadata.Distribution]:
    """ROOTS and their (non-extra) requirements, as installed in this interpreter."""
    seen: dict[str, metadata.Distribution] = {}
    todo, optional = list(ROOTS), set()
    while todo:
        name = _norm(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if name in optional:
                continue  # a requirement whose marker excludes this Python (exceptiongroup on 3.11)
            raise SystemExit(f"error: {name} is not installed in {sys.executable} (run make setup)") from None
        seen[name] = dist
        for req in dist.requires or []:
            if ";" in req and "extra" in req.split(";", 1)[1]:
                continue
            m = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req)
            if m:
                todo.append(m.group())
                if ";" in req:
                    optional.add(_norm(m.group()))
    return sorted(seen.values(), key=lambda d: _norm(d.metadata["Name"]))


def inputs_key(dists: list[metadata.Distribution]) -> str:
    data = {"suite": SUITE, "packages": PACKAGES, "drop": DROP,
            "dists": [f"{d.metadata['Name']}=={d.version}" for d in dists],
            "serve": hashlib.sha256((HERE / "serve.py").read_bytes()).hexdigest()}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def ensure_tarball(cache: Path, dists: list[metadata.Distribution], key: str) -> Path:
    """The image's root filesystem as a tar (built once per key)."""
    tar_path = cache / f"smol-server-{key}.tar"
    if tar_path.is_file():
        return tar_path
    root = ensure_rootfs(cache)
    t0 = time.monotonic()
    tmp = tar_path.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tf:
        for entry in sorted(root.iterdir()):
            if entry.name == ".batchsafe-done":
                continue
            tf.add(entry, arcname=entry.name, filter=lambda ti: None if any(
                ti.name.startswith(d) for d in DROP) else ti)
        for dist in dists:
            for f in dist.files or []:
                src = Path(dist.locate_file(f))
                if f.parts[0] == ".." or not src.is_file() or "__pycache__" in f.parts:
                    continue  # console scripts live outside site-packages; bytecode is rebuilt
                tf.add(src, arcname=f"{SITE.lstrip('/')}/{f.as_posix()}")
        tf.add(HERE / "serve.py", arcname="usr/local/bin/batchsafe-serve")
    os.replace(tmp, tar_path)
    log(f"rootfs tarball {tar_path.name} ({tar_path.stat().st_size >> 20} MiB) in {time.monotonic() - t0:.0f} s")
    return tar_path


def ensure_image(client=None) -> str:
    """The test image's tag in the daemon, imported from the cached tarball when absent."""
    import docker

    client = client or docker.from_env(timeout=300)
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    dists = closure()
    key = inputs_key(dists)
    tag = f"{REPO}:{key}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    tar_path = ensure_tarball(cache, dists, key)
    t0 = time.monotonic()
    # The docker CLI, not the SDK: the SDK streams the upload chunked, which dockerd 20.10 refuses
    # ("invalid byte in chunk length") for a tarball this size.
    r = subprocess.run(["docker", "import", "--change", 'ENTRYPOINT ["/usr/bin/python3", "/usr/local/bin/batchsafe-serve"]',
                        "--change", f"ENV PYTHONPATH={SITE} PYTHONDONTWRITEBYTECODE=1", str(tar_path), tag],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"error: docker import {tar_path} failed: {r.stderr.strip()[-2000:]}")
    log(f"docker import {tag} in {time.monotonic() - t0:.0f} s")
    out = client.containers.run(tag, entrypoint=["/usr/bin/python3", "-c", "import llama_cpp.server.app; print('ok')"],
                                network_mode="host", remove=True)
    if out.strip() != b"ok":
        raise SystemExit(f"error: the image {tag} cannot import llama_cpp.server: {out[-2000:]!r}")
    return tag


def ensure_model_dir() -> Path:
    """A folder holding only SmolLM2's GGUF (hard link to the model store's verified copy)."""
    sys.path.insert(0, str(HERE.parents[2]))
    from batchsafe.runtime import model_store as ms

    src = Path(ms.ensure_known(SMOL))
    d = cache_dir().parent / "models" / "smollm2-135m-instruct-gguf"
    dst = d / GGUF_NAME
    if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
        d.mkdir(parents=True, exist_ok=True)
        dst.unlink(missing_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    return d


if __name__ == "__main__":
    t0 = time.monotonic()
    tag = ensure_image()
    model = ensure_model_dir()
    print(json.dumps({"image": tag, "model_dir": str(model), "seconds": round(time.monotonic() - t0, 1)}))
