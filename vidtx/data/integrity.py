"""Is a prepared dataset whole? Checked when a run starts, so a broken file stops it at once.

  label_names(dir)          the class names, after checking that the three places that record
                            them agree (label_map.txt, TFDS label.labels.txt, prepare_info.json)
  check_splits(builder, splits, frame_index=...)
                            every shard of the splits present, a file, and of the size it had
                            when prepared; its frame index (where there is one) readable

Nothing here reads whole shards: a truncated or missing file is found from sizes and names;
bytes overwritten in place are found when read (the pipeline names the shard and record).
"""
from __future__ import annotations

import json
import os
import stat
import zipfile
from collections.abc import Sequence

import numpy as np

from vidtx.data import LABEL_MAP_FILE
from vidtx.errors import VidtxError

TFDS_LABELS_FILE = "label.labels.txt"  # written by TFDS for the ClassLabel feature `label`
PREPARE_INFO_FILE = "prepare_info.json"
TFRECORD_FRAMING = 16  # bytes around each record: length, its CRC, the data's CRC


def _lines(path: str) -> list[str]:
  with open(path, encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f if line.strip()]


def _first_difference(a: Sequence[str], b: Sequence[str]) -> str:
  for i, (x, y) in enumerate(zip(a, b)):
    if x != y:
      return f"label {i} is {x!r} in one and {y!r} in the other"
  return f"{len(a)} classes in one, {len(b)} in the other"


def label_names(data_dir: str) -> list[str]:
  """The dataset's class names (index = label), once its three records of them agree."""
  path = os.path.join(data_dir, LABEL_MAP_FILE)
  if not os.path.isfile(path):
    raise VidtxError(f"{data_dir} is not a prepared dataset: {LABEL_MAP_FILE} is missing")
  names = _lines(path)
  others = []
  tfds_path = os.path.join(data_dir, TFDS_LABELS_FILE)
  if os.path.isfile(tfds_path):
    others.append((TFDS_LABELS_FILE, _lines(tfds_path)))
  info_path = os.path.join(data_dir, PREPARE_INFO_FILE)
  if os.path.isfile(info_path):
    try:
      with open(info_path, encoding="utf-8") as f:
        recorded = json.load(f).get("class_names")
    except ValueError as e:
      raise VidtxError(f"{info_path} is not valid JSON ({e}); prepare the dataset again") from None
    if recorded is not None:
      others.append((PREPARE_INFO_FILE, list(recorded)))
  for name, other in others:
    if other != names:
      raise VidtxError(
          f"the label maps of {data_dir} disagree: {LABEL_MAP_FILE} and {name} differ "
          f"({_first_difference(names, other)}); one was edited: restore it (prepare writes both)")
  return names


def _index_path(shard: str) -> str:
  from vidtx.data import frame_index  # pylint: disable=g-import-not-at-top  (TensorFlow)
  return frame_index.index_path(shard)


def _indexed_size(index: str) -> int:
  """The shard size recorded in a frame index file, reading only that entry."""
  try:
    with np.load(index, allow_pickle=False) as f:
      return int(f["shard_bytes"])
  except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
    raise VidtxError(f"{index} is not a frame index ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                     f"rebuild it with python -m vidtx.data.frame_index "
                     f"{os.path.dirname(os.path.dirname(index))}") from None


def check_splits(builder, splits: Sequence[str], *, frame_index: bool = True) -> None:
  """Raises one line naming the first shard of `splits` that is missing, not a file, or not the
  size it was prepared with (frame index, where there is one; else the split's recorded bytes)."""
  for split in dict.fromkeys(splits):
    if split not in builder.info.splits:
      raise VidtxError(f"{builder.data_dir} has no split {split!r} "
                       f"(it has {sorted(builder.info.splits.keys())})")
    info = builder.info.splits[split]
    paths = [str(p) for p in info.filepaths]
    total = 0
    for path in paths:
      try:
        mode = os.stat(path).st_mode
      except FileNotFoundError:
        present = sum(os.path.exists(p) for p in paths)
        raise VidtxError(f"shard {path} of split {split!r} is missing ({present} of {len(paths)} "
                         "present); restore it or prepare the dataset again") from None
      if not stat.S_ISREG(mode):
        raise VidtxError(f"shard {path} of split {split!r} is not a regular file")
      size = os.path.getsize(path)
      total += size
      index = _index_path(path)
      if frame_index and os.path.exists(index):
        expected = _indexed_size(index)
        if size != expected:
          change = "truncated" if size < expected else "longer than when prepared"
          raise VidtxError(f"shard {path} of split {split!r} is {change} ({size} bytes, {expected} "
                           "when prepared); restore it or prepare the dataset again")
    recorded = int(info.num_bytes or 0)
    # prepare records file bytes; TFDS, when it counts itself, the records without their framing
    if recorded and recorded not in (total, total - TFRECORD_FRAMING * int(info.num_examples)):
      raise VidtxError(f"the shards of split {split!r} in {builder.data_dir} hold {total} bytes, "
                       f"{recorded} when prepared: one is truncated or was replaced; restore it or "
                       "prepare the dataset again")
