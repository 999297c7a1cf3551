"""A minimal, pure-Python GGUF (v2/v3) header reader: metadata keys and tensor types.

Used to check a model file's identity claims (``general.name``, ``general.file_type``,
chat template presence) without loading the model.
"""

from __future__ import annotations

from batchsafe.core.errors import BatchsafeError

import copy
import functools
import hashlib
import os
import struct
from typing import IO, Any


class GGUFError(BatchsafeError, ValueError):
    """A file that is not a readable GGUF model."""


_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
           10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

FTYPES: dict[str, int] = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10,
    "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16,
    "Q5_K_M": 17, "Q6_K": 18, "IQ2_XXS": 19, "IQ2_XS": 20, "Q2_K_S": 21, "IQ3_XS": 22,
    "IQ3_XXS": 23, "IQ1_S": 24, "IQ4_NL": 25, "IQ3_S": 26, "IQ3_M": 27, "IQ2_S": 28,
    "IQ2_M": 29, "IQ4_XS": 30, "IQ1_M": 31, "BF16": 32, "TQ1_0": 36, "TQ2_0": 37,
}
"""llama.cpp ``LLAMA_FTYPE_*`` values (``general.file_type``), by short name."""
FTYPE_NAMES = {v: k for k, v in FTYPES.items()}
GGML_TYPES = dict(enumerate("f32 f16 q4_0 q4_1 4 5 q5_0 q5_1 q8_0 q8_1 q2_K q3_K q4_K q5_K q6_K "
                            "q8_K iq2_xxs iq2_xs iq3_xxs iq1_s iq4_nl iq3_s iq2_s iq4_xs i8 i16 "
                            "i32 i64 f64 iq1_m bf16".split()))
"""ggml tensor type names by id (ids 4 and 5 are retired Q4_2/Q4_3)."""


def _rd(f: IO[bytes], fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise GGUFError("truncated GGUF header")
    return struct.unpack(fmt, data)[0]


def _rd_str(f: IO[bytes]) -> str:
    n = _rd(f, "<Q")
    return f.read(n).decode("utf-8", errors="replace")


def _rd_value(f: IO[bytes], vtype: int, keep_array: int) -> Any:
    if vtype in _SCALAR:
        return _rd(f, _SCALAR[vtype])
    if vtype == _STRING:
        return _rd_str(f)
    if vtype == _ARRAY:
        itype, n = _rd(f, "<I"), _rd(f, "<Q")
        if n <= keep_array:
            return [_rd_value(f, itype, 0) for _ in range(n)]
        # Large arrays (vocabularies, merges) are skipped: only their length is kept.
        if itype in _SCALAR:
            f.seek(n * struct.calcsize(_SCALAR[itype]), os.SEEK_CUR)
        elif itype == _STRING:
            for _ in range(n):
                f.seek(_rd(f, "<Q"), os.SEEK_CUR)
        else:
            for _ in range(n):
                _rd_value(f, itype, 0)
        return {"array_len": n, "item_type": itype}
    raise GGUFError(f"unknown GGUF value type {vtype}")


def gguf_metadata(path: str | os.PathLike[str], *, keep_array: int = 16) -> dict[str, Any]:
    """Read the key/value section of a GGUF (v2/v3) file, without loading tensors.

    Arrays longer than ``keep_array`` are summarised as ``{"array_len", "item_type"}``.
    Two pseudo-keys are added: ``GGUF.version`` and ``GGUF.tensor_count``. Results are
    memoised by (path, size, mtime, inode): reading a 150k-token vocabulary in Python
    costs ~0.2 s and an engine build asks several times.
    """
    st = os.stat(path)
    return copy.deepcopy(_read_cached(os.fspath(path), st.st_size, st.st_mtime_ns, st.st_ino, keep_array))


@functools.lru_cache(maxsize=32)
def _read_cached(path: str, size: int, mtime_ns: int, ino: int, keep_array: int) -> dict[str, Any]:
    return _read(path, keep_array)


def _read(path: str, keep_array: int) -> dict[str, Any]:
    with open(path, "rb", buffering=1 << 20) as f:
        if f.read(4) != b"GGUF":
            raise GGUFError(f"{path}: not a GGUF file (bad magic)")
        version = _rd(f, "<I")
        if version < 2:
            raise GGUFError(f"{path}: GGUF version {version} is not supported")
        n_tensors, n_kv = _rd(f, "<Q"), _rd(f, "<Q")
        meta: dict[str, Any] = {"GGUF.version": version, "GGUF.tensor_count": n_tensors}
        for _ in range(n_kv):
            key = _rd_str(f)
            meta[key] = _rd_value(f, _rd(f, "<I"), keep_array)
        # Tensor infos: the real per-tensor types (file_type is only the nominal mix).
        types: dict[str, int] = {}
        for _ in range(n_tensors):
            f.seek(_rd(f, "<Q"), os.SEEK_CUR)  # name
            f.seek(8 * _rd(f, "<I"), os.SEEK_CUR)  # dims
            t = _rd(f, "<I")
            types[GGML_TYPES.get(t, str(t))] = types.get(GGML_TYPES.get(t, str(t)), 0) + 1
            f.seek(8, os.SEEK_CUR)  # offset
        meta["GGUF.tensor_types"] = dict(sorted(types.items()))
    return meta


def gguf_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The facts recorded about a model file: name, architecture, file type, template."""
    m = gguf_metadata(path)
    ft = m.get("general.file_type")
    tmpl = m.get("tokenizer.chat_template")
    return {
        "name": m.get("general.name"),
        "architecture": m.get("general.architecture"),
        "file_type": ft,
        "file_type_name": FTYPE_NAMES.get(ft) if isinstance(ft, int) else None,
        "has_chat_template": isinstance(tmpl, str),
        "chat_template_sha256": hashlib.sha256(tmpl.encode()).hexdigest() if isinstance(tmpl, str) else None,
        "gguf_version": m["GGUF.version"],
        "tensor_count": m["GGUF.tensor_count"],
        "tensor_types": m["GGUF.tensor_types"],
        "size": os.path.getsize(path),
    }


# --- quantization variants -------------------------------------------------
