#!/usr/bin/env bash
# The live benchmarks on a CUDA machine: throughput (batched vs sequential, int8/bf16 vs fp32,
# daemon overhead) and the simulator's fidelity against the GPU worker. Not run in CI (no GPU).
#
#   bash benchmarks/gpu_check.sh            # uses .venv/bin/python if present
#   PYTHON=python3 OUT=/tmp/gpu bash benchmarks/gpu_check.sh
#
# Each benchmark ends with one JSON line; they are collected in $OUT/*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"

"$PYTHON" - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: this script is for GPU machines"
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv || true

run() {  # run NAME CMD...: show the output, keep the last (JSON) line
  local name=$1; shift
  echo "== $name: $*"
  "$@" 2>&1 | tee "$OUT/$name.log"
  tail -n 1 "$OUT/$name.log" > "$OUT/$name.json"
}

# (1) The iteration profile of a GPU worker (what the simulator's `measured` model loads).
"$PYTHON" -m controlplane.cli.bench profile --device cuda --preset medium-llama --grid full \
  --output "$OUT/medium-llama-cuda.json" --no-progress | tee "$OUT/profile.log"

# (2) Precisions on the GPU: bf16 (the default there), fp16, nf4 (bitsandbytes), compiled bf16.
"$PYTHON" -m controlplane.cli.bench bench quant --device cuda --preset medium-llama \
  --variants fp32,bf16,fp16,nf4,bf16+compile --batch-sizes 1,8,32,128 --json "$OUT/quant.json" --no-progress \
  | tee "$OUT/quant.log"

# (3) Throughput: batched through the control plane vs sequential; the daemon's overhead.
#     int8 is torch's CPU dynamic quantization, so on CUDA the low-precision side is nf4 vs bf16.
run live_throughput "$PYTHON" benchmarks/live_throughput.py --device cuda --layers 8 --requests 128 \
  --max-tokens 128 --quant-base bf16 --quant-low nf4 --daemon-pool process

# (4) Fidelity: calibrate on the GPU worker, replay the same slices live and simulated, both traces.
run fidelity_azure "$PYTHON" benchmarks/fidelity.py --device cuda --preset medium-llama \
  --max-prompt-tokens 1024 --prompt-p50 256 --max-output-tokens 256 --output-p50 64 --limit 300 --rounds 2
MOONCAKE=${MOONCAKE:-../shared/data/traces/mooncake_fast25/conversation_trace.jsonl}
if [ -f "$MOONCAKE" ]; then
  run fidelity_mooncake "$PYTHON" benchmarks/fidelity.py --device cuda --preset medium-llama \
    --trace "$MOONCAKE" --format mooncake --max-prompt-tokens 2048 --prompt-p50 512 --max-output-tokens 256 \
    --output-p50 64 --limit 300 --rounds 2
fi
echo "results in $OUT/"
