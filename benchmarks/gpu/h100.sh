#!/usr/bin/env bash
# benchmarks/gpu/h100.sh MODE — runs ON the lent GPU machine (device tool), from the repo root.
#
#   stage    copy the carried pieces (.gpu/part.NN, .gpu/q/qwen.NN, .gpu/SHA256SUMS) to /root/stage
#   install  install the vLLM 0.26.0 payload (../shared/gpu/device_install.sh) and gguf, join
#            the Qwen GGUF and convert it to the bf16 HF folder the plan pins; prints its digest
#   run      install batchsafe and its runtime wheels (.gpu/bs312.tar) into /tmp/bs and the
#            launcher's interpreter wrapper /root/stage/vllm-python; batchsafe run
#            .gpu/h100.lock.json into /root/run (resumes a run a previous call left; SIGINT
#            before the call's 600 s), then packs /root/run into $OUT/run.tgz
#   bench    benchmarks/gpu/h100_bench.py (batchsafe vs raw client loop; the throughput cost of
#            VLLM_BATCH_INVARIANT=1) into $OUT/bench.json
# Every mode is idempotent while the machine stays warm; see benchmarks/gpu/README.md.
set -euo pipefail
MODE=${1:?mode: stage|install|run|bench}
STAGE=/root/stage
MODEL_DIR=/root/models/qwen2.5-coder-0.5b
GGUF_SHA=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
RUN_BUDGET_S=${RUN_BUDGET_S:-520}
OUT=${OUT:-/tmp/out}
mkdir -p "$STAGE/qwen" "$OUT"
t0=$SECONDS
log() { echo "[h100 +$((SECONDS - t0))s] $*"; }

stage() {
  shopt -s nullglob
  local q=(.gpu/q/qwen.[0-9]*)
  shopt -u nullglob
  if ((${#q[@]})); then cp -f "${q[@]}" "$STAGE/qwen/"; fi
  bash .gpu/device_install.sh --from .gpu --stage-only
  log "qwen pieces staged: $(ls "$STAGE/qwen" | tr '\n' ' ')"
}

bs_env() {
  # batchsafe and its runtime wheels (.gpu/bs312.tar, carried with the plan) into /tmp/bs, once.
  if [[ ! -f /tmp/bs/.done ]]; then
    rm -rf /tmp/bs /tmp/bs-wheels && mkdir -p /tmp/bs /tmp/bs-wheels
    tar -xf .gpu/bs312.tar -C /tmp/bs-wheels
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/bs /tmp/bs-wheels/*.whl
    touch /tmp/bs/.done
  fi
  # The launcher starts `<launch.python> -m vllm.entrypoints.openai.api_server`: this wrapper
  # gives that interpreter the payload's packages and nothing of batchsafe's.
  printf '#!/bin/sh\nPYTHONPATH=/tmp/site exec python3 "$@"\n' > "$STAGE/vllm-python"
  chmod 755 "$STAGE/vllm-python"
  # batchsafe's interpreter: its wheels first, then the payload's (pydantic & co.); -P keeps
  # the repo's own batchsafe/ folder off sys.path.
  export PYTHONPATH=/tmp/bs:/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
  python3 -P -c "import batchsafe.cli, batchsafe.runtime.executor, batchsafe.runtime.engines.vllm" || exit 3
}

case $MODE in
  stage) stage ;;
  install)
    stage
    bash .gpu/device_install.sh
    mkdir -p /tmp/gguf
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/gguf .gpu/cache/model/gguf-*.whl
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    PYTHONPATH=/tmp/site:/tmp/gguf HF_HUB_OFFLINE=1 python3 -P benchmarks/gpu/convert_gguf.py \
      /root/gguf/qwen.gguf "$MODEL_DIR" --pieces "$STAGE"/qwen/qwen.* --sha256 "$GGUF_SHA" | tee "$OUT/convert.json"
    log "install done" ;;
  run)
    bs_env
    resume=(); [[ -d ${RUN_DIR:-/root/run} ]] && resume=(--resume)  # a previous call's unfinished run
    set +e
    timeout -s INT -k 30 "$RUN_BUDGET_S" python3 -P -m batchsafe.cli run "${PLAN:-.gpu/h100.lock.json}" --out "${RUN_DIR:-/root/run}" \
      "${resume[@]}" --no-progress
    rc=$?
    set -e
    log "batchsafe run exit $rc"
    tar -czf "$OUT/run.tgz" -C "$(dirname "${RUN_DIR:-/root/run}")" "$(basename "${RUN_DIR:-/root/run}")"
    ls -la "$OUT"
    exit $rc ;;
  bench)
    bs_env
    python3 -P benchmarks/gpu/h100_bench.py .gpu/h100.lock.json "$OUT/bench.json" ;;
  *) echo "unknown mode $MODE" >&2; exit 2 ;;
esac
