"""Data: prepared-dataset format, preparation, sampling, tf.data pipelines.

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
