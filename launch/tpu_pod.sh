#!/usr/bin/env bash
# Training on a Cloud TPU pod slice: the same command on every host of the slice.
#   launch/tpu_pod.sh my-tpu us-central2-b configs/timesformer_k400.py gs://bucket/runs/tsf
# The repository must already be cloned and installed (pip install -e .) at ~/vidtx on each host,
# and the prepared dataset readable from every host (e.g. a gs:// path in config.data.dir).
set -euo pipefail
tpu=${1:?usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]}
zone=${2:?missing ZONE}
config=${3:?missing CONFIG}
workdir=${4:?missing WORKDIR}
shift 4
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command \
  "cd ~/vidtx && python train.py --distributed --config '$config' --workdir '$workdir' $*"
