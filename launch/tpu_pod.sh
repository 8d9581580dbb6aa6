#!/usr/bin/env bash
# Training on a Cloud TPU pod slice: the same command on every host of the slice.
#   launch/tpu_pod.sh my-tpu us-central2-b configs/timesformer_k400.py gs://bucket/runs/tsf
#   DRY_RUN=1 launch/tpu_pod.sh ...   prints the command instead of running it
# The repository must already be cloned and installed (pip install -e .) at ~/vidtx on each host,
# and the prepared dataset readable from every host (e.g. a gs:// path in config.data.dir).
# jax.distributed finds the other hosts itself; TPU maintenance sends SIGTERM: every host saves
# at the same step and exits 0, and the same command resumes (docs/reliability.md).
set -euo pipefail
tpu=${1:?usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]}
zone=${2:?missing ZONE}
config=${3:?missing CONFIG}
workdir=${4:?missing WORKDIR}
shift 4
remote="cd ~/vidtx && python train.py --distributed --config $(printf '%q' "$config") --workdir $(printf '%q' "$workdir")"
for arg in "$@"; do remote+=" $(printf '%q' "$arg")"; done
command=(gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "$remote")
if [[ -n ${DRY_RUN:-} ]]; then
  printf '%q ' "${command[@]}"
  echo
  exit 0
fi
"${command[@]}"
