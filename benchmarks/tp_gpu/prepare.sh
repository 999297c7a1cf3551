#!/usr/bin/env bash
# prepare.sh [OUTDIR]  (here, on the CPU side; default OUTDIR=.gpu/tp)
# What the two-GPU tensor-parallel run (specs/tp_gpu.yaml, issue 20) carries besides the
# vLLM 0.26.0 payload of shared/gpu (prepare_vllm_payload.sh .gpu --model-wheel):
#   OUTDIR/plan.lock.json       the plan, compiled here (--allow-unpinned: the converted
#                               model's digest is only known on the device)
#   OUTDIR/wheels/*.whl         batchsafe itself and the runtime dependencies the GPU image
#                               lacks (cp312 manylinux): orjson, rich, pygments,
#                               markdown-it-py, mdurl, gguf (pydantic comes with the payload)
#   OUTDIR/qwen.part.NN         the quickstart's Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF
#                               (491,400,064 bytes) cut into pieces of PIECE_BYTES (60,000,000)
#   OUTDIR/QWEN_SHA256SUMS      sha256 of every piece and of the whole file
# Prints the pieces and the device calls to make. Idempotent (pieces are rewritten).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
OUT=${1:-.gpu/tp}
PIECE=${PIECE_BYTES:-60000000}
QWEN_SHA=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
GGUF=${GGUF:-${BATCHSAFE_CACHE:-$HOME/.cache/batchsafe}/models/sha256/$QWEN_SHA.gguf}
PY=.venv/bin/python

grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >> .git/info/exclude  # pieces must not travel untracked
[[ -f $GGUF ]] || $PY -c "from batchsafe.runtime import model_store as m; print(m.ensure_known('qwen2.5-coder-0.5b-instruct-q4_k_m'))"
echo "$QWEN_SHA  $GGUF" | sha256sum -c --quiet
mkdir -p "$OUT/wheels"
rm -f "$OUT"/qwen.part.* "$OUT"/wheels/*.whl

.venv/bin/batchsafe compile specs/tp_gpu.yaml --allow-unpinned -o "$OUT/plan.lock.json"
$PY -m pip wheel -q --no-deps -w "$OUT/wheels" .
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any -d "$OUT/wheels" \
  orjson==3.13.0 rich==15.0.0 pygments==2.21.0 markdown-it-py==4.3.0 mdurl==0.1.2 gguf==0.19.0

split -b "$PIECE" -d -a 2 "$GGUF" "$OUT/qwen.part."
(cd "$OUT" && sha256sum qwen.part.* > QWEN_SHA256SUMS && echo "$QWEN_SHA  qwen.gguf" >> QWEN_SHA256SUMS)
n=$(ls "$OUT"/qwen.part.* | wc -l)
echo "PIECES=$n ($(du -cb "$OUT"/qwen.part.* | tail -1 | cut -f1) bytes); wheels and plan: $(du -sb "$OUT/wheels" "$OUT/plan.lock.json" | awk '{s+=$1} END {print s}') bytes"
echo "plan_hash $(grep -o '"plan_hash":"[^"]*"' "$OUT/plan.lock.json" | cut -d'"' -f4)"
