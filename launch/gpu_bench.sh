#!/usr/bin/env bash
# The one-command accelerator benchmark: vidtx's train step for every seed model (levers on, and
# off for the two reference models), then the PyTorch peers at the same batch and input.
#
#   bash launch/gpu_bench.sh --fetch-wheels   # here, once: the wheels the GPU image lacks -> .whl/
#   bash launch/gpu_bench.sh OUT_DIR          # on the GPU machine, from the repo root (~8 min)
#   bash launch/gpu_bench.sh OUT_DIR --dry-run  # anywhere: smoke sizes, 1 step, no torch.compile
#
# Writes OUT_DIR/zoo.json, zoo.md (vidtx), peers.json (PyTorch), env.txt, and prints the tables.
# The GPU image has jax[cuda], flax, optax, orbax and chex but no TensorFlow, ml_collections or
# dm-pix: vidtx's step path needs no TensorFlow, and the two small wheels travel in .whl/.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--fetch-wheels" ]; then
  mkdir -p .whl
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl ml-collections dm-pix
  ls -l .whl
  exit 0
fi

out=${1:?usage: bash launch/gpu_bench.sh OUT_DIR [--dry-run] | --fetch-wheels}
dry=${2:-}
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/vidtx_site .whl/*.whl && export PYTHONPATH=/tmp/vidtx_site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
# One GPU: the latency-hiding scheduler overlaps the few collectives there are with compute.
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"

{
  date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
  python3 -c "import jax, flax, optax; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__)"
  python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" 2>/dev/null
} | tee "$out/env.txt"

if [ "$dry" = "--dry-run" ]; then
  zoo_args=(--smoke --steps 1 --warmup 0); peer_args=(--smoke --steps 1 --warmup 0 --no_compile)
  budget_zoo=900; budget_off=900; budget_peer=300
else
  zoo_args=(--batch 8 --steps 10 --warmup 3); peer_args=(--steps 10 --warmup 3)
  budget_zoo=240; budget_off=90; budget_peer=150
fi

# 1. Every seed model with the best levers, the reference models first (a timeout keeps the rest).
# --only takes exact labels (vidtx.bench_step.ZOO); $GPU_BENCH_MODELS and $GPU_BENCH_OFF_MODELS
# choose others for phases 1 and 2 (the test suite's dry run: two, and one).
all_models="TimeSformer-B 8x224,Swin-B 32x224,TokShift-B 8x256,ViViT-B FE 32x224,PP-TSM R50 8x224"
all_models+=",Swin-T 32x224,Swin-S 32x224,PP-TimeSformer-B 8x224,PP-TimeSformer-B 16x224"
all_models+=",TimeSformer-B space-only 8x224,PP-TSM R101 8x224"
python3 -m vidtx.bench_step --zoo "${zoo_args[@]}" --levers best --time_budget_s $budget_zoo \
  --only "${GPU_BENCH_MODELS:-$all_models}" \
  --output "$out/zoo.json" --markdown "$out/zoo.md"
# 2. TimeSformer-B and Swin-B with the levers off, lean (scanned blocks, bf16 moments) and remat.
python3 -m vidtx.bench_step --zoo "${zoo_args[@]}" --levers off,lean,remat --time_budget_s $budget_off \
  --only "${GPU_BENCH_OFF_MODELS:-TimeSformer-B 8x224,Swin-B 32x224}" \
  --output "$out/zoo_off.json" --markdown "$out/zoo_off.md"
# 3. PyTorch peers at the same per-device batch (8) and input.
if python3 -c "import torch, torchvision" 2>/dev/null; then
  python3 launch/torch_peer_bench.py "${peer_args[@]}" --time_budget_s $budget_peer --output "$out/peers.json"
else
  echo "torch/torchvision not installed: no peer comparison" | tee "$out/peers.json"
fi
cat "$out/zoo.md" "$out/zoo_off.md" 2>/dev/null
