#!/usr/bin/env bash
# Multi-node GPU training under SLURM: one process per node, all its GPUs in that process.
#   sbatch --nodes=4 --gpus-per-node=8 launch/slurm_gpu.sh configs/videoswin_k400.py:variant=base /shared/runs/swin_b
# jax.distributed.initialize() reads the coordinator and process ids from the SLURM environment.
# SLURM sends SIGTERM before a time limit or a preemption (--signal, KillWait): every process
# saves at the same step and exits 0; resubmitting the same command resumes (docs/reliability.md).
#SBATCH --job-name=vidtx
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
set -euo pipefail
config=${1:?usage: sbatch launch/slurm_gpu.sh CONFIG WORKDIR [--config.key=value ...]}
workdir=${2:?usage: sbatch launch/slurm_gpu.sh CONFIG WORKDIR [--config.key=value ...]}
shift 2
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
srun --kill-on-bad-exit=1 python train.py --distributed --config "$config" --workdir "$workdir" "$@"
