"""GGUF -> bf16 Hugging Face folder, identical bytes on any machine with the same transformers.

Usage: ``python convert_gguf.py GGUF OUT_DIR`` (GGUF may be given as ``part.*`` pieces via
``--pieces``, which are concatenated first). Prints one JSON line: the folder's weights
digest exactly as batchsafe's launcher computes it (``runtime/launch/weights.py``: sha256
of the canonical JSON ``{relative path: hex sha256}``), the per-file digests and the
converter's package versions.

Runs on the CPU side (to pin ``hf.weights_sha256`` in ``specs/h100_vllm.yaml``) and on the
lent GPU machine (to build the folder the server loads); both use transformers 5.17.0, so
the digest predicted here is the one the launcher checks there. It imports only torch,
transformers and the standard library, since the GPU image has no batchsafe dependencies.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path


def file_sha256(path: Path) -> str:
    """Hex sha256 of one file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_digest(folder: Path) -> tuple[str, dict[str, str]]:
    """(``sha256:`` digest, per-file hex) as ``batchsafe.runtime.launch.weights`` computes them."""
    files = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and rel.as_posix() != "batchsafe-model.json" and not any(s.startswith(".") for s in rel.parts):
            files[rel.as_posix()] = file_sha256(p)
    # batchsafe.core.canonical.canonical_bytes: sorted keys, no whitespace, UTF-8, final newline
    canon = (json.dumps(files, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
    return "sha256:" + hashlib.sha256(canon).hexdigest(), files


def convert(gguf: Path, out: Path) -> None:
    """De-quantize ``gguf`` to a bf16 HF folder at ``out`` (replaced atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
        model = model.to(torch.bfloat16)
        model.hf_quantizer = None  # already de-quantized; save_pretrained refuses otherwise
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp))
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(tmp))
        for p in tmp.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Join pieces if asked, convert unless the folder exists, print the digest line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf", type=Path, help="the GGUF file (written from --pieces when given)")
    ap.add_argument("out", type=Path, help="output HF folder")
    ap.add_argument("--pieces", nargs="*", type=Path, default=None, help="pieces to concatenate into GGUF first")
    ap.add_argument("--sha256", default=None, help="expected hex sha256 of the GGUF")
    args = ap.parse_args(argv)
    if args.pieces:
        args.gguf.parent.mkdir(parents=True, exist_ok=True)
        with open(args.gguf, "wb") as dst:
            for piece in sorted(args.pieces):
                with open(piece, "rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 20)
    if args.sha256 and file_sha256(args.gguf) != args.sha256:
        print(f"error: {args.gguf} does not have sha256 {args.sha256}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not (args.out / "config.json").is_file():
        convert(args.gguf, args.out)
    digest, files = folder_digest(args.out)
    print(json.dumps({"weights_sha256": digest, "files": files,
                      "versions": {d: version(d) for d in ("transformers", "torch", "gguf", "safetensors")}},
                     sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
