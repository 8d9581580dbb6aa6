"""Data: preparing datasets, reading them with tf.data, and the on-device ops.

Preparation (video files -> prepared dataset; data_prep/ calls it):
  sources      list a dataset's videos (UCF101, Kinetics, a folder), no decoding
  decode       one video file -> upright, resampled, resized JPEG frames (PyAV)
  workers      worker processes and the watchdog for hung or crashing decoders
  prepare      shard plan, shards, resume, report, prepare_info.json (prepare.Settings)
  format       the prepared-dataset format (TFRecords, TFDS metadata, label map)
  frame_index  where each JPEG lies in its shard (python -m vidtx.data.frame_index DIR)
Reading (prepared dataset -> uint8 batches; config.data):
  config       config.data checked once (defaults: configs/common.py data_config)
  keys         one config.data key read, with a clear error (config's and augment's checks)
  sampling     frame samplers, pure integer functions (numpy or tf.experimental.numpy)
  clips        the samplers set by config.data, seeded per clip inside tf.data
  reading      host shares of a split; whole records or only the sampled frames
  augment      training crop ops by name (config.data.train_aug), flip
  views        evaluation views: test clips x crops (also for predict.py)
  pipeline     make_train_dataset / make_eval_dataset
On the accelerator: device (normalise, mixup / cutmix, colour jitter; jax only).
Tools: synthetic (the built-in motion dataset), info, bench, bench_sources.

This package's __init__ imports nothing heavy: `vidtx.data.device` (jax only)
must stay importable on machines without TensorFlow.
"""

import os

from vidtx.errors import VidtxError

LABEL_MAP_FILE = "label_map.txt"


def is_prepared(data_dir: str) -> bool:
  """Whether `data_dir` holds a prepared dataset's metadata and label map."""
  return (os.path.exists(os.path.join(data_dir, "dataset_info.json"))
          and os.path.exists(os.path.join(data_dir, LABEL_MAP_FILE)))


def require_prepared(data_dir: str) -> None:
  """A clear error unless `data_dir` is a prepared dataset (checked without TensorFlow)."""
  if not os.path.isdir(data_dir):
    raise VidtxError(f"dataset directory {data_dir} does not exist")
  if not is_prepared(data_dir):
    raise VidtxError(
        f"{data_dir} is not a prepared dataset (no dataset_info.json / {LABEL_MAP_FILE}); "
        "make one with data_prep/")
