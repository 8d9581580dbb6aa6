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
import re
import stat
from collections.abc import Sequence

from vidtx.data import LABEL_MAP_FILE
from vidtx.data import frame_index as frame_index_lib
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
      total += os.path.getsize(path)
      indexed = frame_index_lib.indexed_size(path) if frame_index else None
      if indexed is not None:
        frame_index_lib.check_size(path, indexed)
    recorded = int(info.num_bytes or 0)
    # prepare records file bytes; TFDS, when it counts itself, the records without their framing
    if recorded and recorded not in (total, total - TFRECORD_FRAMING * int(info.num_examples)):
      raise VidtxError(f"the shards of split {split!r} in {builder.data_dir} hold {total} bytes, "
                       f"{recorded} when prepared: one is truncated or was replaced; restore it or "
                       "prepare the dataset again")


def _record_starts(path: str):
  """Byte offsets where the records of a TFRecord file start (reads only their length fields)."""
  size, offset = os.path.getsize(path), 0
  with open(path, "rb") as f:
    while offset + TFRECORD_FRAMING <= size:
      yield offset
      f.seek(offset)
      header = f.read(8)
      if len(header) < 8:
        return
      offset += TFRECORD_FRAMING + int.from_bytes(header, "little")


def locate_corrupted_record(paths: Sequence[str], offset: int) -> str | None:
  """'shard <path>, record <r>' for TFRecord's "corrupted record at <offset>", which names no
  file: the shard among `paths` with a record there whose checksum fails."""
  from tensorflow.python.lib.io import _pywrap_record_io  # pylint: disable=g-import-not-at-top

  for path in paths:
    for number, start in enumerate(_record_starts(path)):
      if start > offset:
        break
      if start == offset:
        try:
          _pywrap_record_io.RandomRecordReader(path).read(offset)
        except Exception:  # pylint: disable=broad-except  (its checksum fails: this is the one)
          return f"shard {path}, record {number}"
  return None


def describe_read_error(error: BaseException, paths: Sequence[str] = ()) -> str:
  """One line for an error raised while reading a split (`paths`: its shards): what the reader
  said (a VidtxError raised inside tf.data keeps its text), with the shard and record."""
  text = str(error)
  if isinstance(error, VidtxError):  # raised outside tf.data (e.g. vidtx.data.bad_clips)
    return text
  found = re.search(r"VidtxError: (.*)", text)
  if found:
    return found.group(1).strip()
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  line = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", lines[0] if lines else "")
  line = re.sub(r"\s*\[Op:\w+\].*$", "", line)
  found = re.search(r"corrupted record at (\d+)", line)
  where = locate_corrupted_record(paths, int(found.group(1))) if found and paths else None
  if where:
    return f"{where} is corrupted (its checksum fails); restore the shard or prepare the dataset again"
  return f"{type(error).__name__}: {line}"
