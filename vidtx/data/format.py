"""The prepared-dataset format: sharded TFRecords of JPEG frames, readable by TFDS.

A prepared dataset is one directory:

    <dir>/dataset_info.json, features.json     TFDS metadata (tfds.builder_from_directory)
    <dir>/label_map.txt                         one class name per line, line i = label i
    <dir>/vidtx-<split>.tfrecord-XXXXX-of-YYYYY  one tf.train.Example per video

Every example has the features in `features()`: `video` (one JPEG per frame),
`label` (ClassLabel, 0-based), `label_text`, `video_id`, `fps`, `num_frames`.
The same label map serves every split.
"""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging as absl_logging
from etils import epath

from vidtx.data import LABEL_MAP_FILE, is_prepared, require_prepared  # noqa: F401  (is_prepared re-exported)
from vidtx.errors import VidtxError

DATASET_NAME = "vidtx"
FILENAME_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"


def features(class_names: Sequence[str]) -> tfds.features.FeaturesDict:
  """The TFDS feature spec of a prepared dataset with these classes."""
  return tfds.features.FeaturesDict({
      "video": tfds.features.Video(shape=(None, None, None, 3), encoding_format="jpeg"),
      "label": tfds.features.ClassLabel(names=list(class_names)),
      "label_text": tfds.features.Text(),
      "video_id": tfds.features.Text(),
      "fps": tfds.features.Scalar(dtype=np.float32),
      "num_frames": tfds.features.Scalar(dtype=np.int32),
      # What the source's decoder knew: vidtx.data.protocol.Source as JSON (test protocols).
      "source": tfds.features.Text(),
  })


def shard_path(data_dir: str, split: str, shard: int, num_shards: int) -> str:
  """Path of one TFRecord shard, in the layout TFDS reads."""
  return os.path.join(
      data_dir, f"{DATASET_NAME}-{split}.tfrecord-{shard:05d}-of-{num_shards:05d}")


def serialize_example(spec: tfds.features.FeaturesDict, *, jpeg_frames: Sequence[bytes],
                      label: int, video_id: str, fps: float, source: str = "") -> bytes:
  """One video as a serialized tf.train.Example. `jpeg_frames`: encoded JPEGs, in order;
  `source`: its `protocol.Source` as JSON."""
  class_names = spec["label"].names
  serialized = spec.serialize_example({
      "video": list(jpeg_frames),
      "label": int(label),
      "label_text": class_names[int(label)],
      "video_id": video_id,
      "fps": np.float32(fps),
      "num_frames": np.int32(len(jpeg_frames)),
      "source": source,
  })
  # The feature map's order otherwise depends on the process: same input, same bytes.
  return tf.train.Example.FromString(serialized).SerializeToString(deterministic=True)


def write_shard(path: str, serialized: Iterable[bytes]) -> int:
  """Writes records to `path` (any tf.io.gfile path) atomically: a temp file of this writer,
  then a rename. Returns the count."""
  tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
  count = 0
  with tf.io.TFRecordWriter(tmp) as writer:
    for record in serialized:
      writer.write(record)
      count += 1
  tf.io.gfile.rename(tmp, path, overwrite=True)
  return count


def write_label_map(data_dir: str, class_names: Sequence[str]) -> None:
  with tf.io.gfile.GFile(os.path.join(data_dir, LABEL_MAP_FILE), "w") as f:
    f.write("".join(f"{name}\n" for name in class_names))


def read_label_map(data_dir: str) -> list[str]:
  """Class names of a prepared dataset, index = label."""
  path = os.path.join(data_dir, LABEL_MAP_FILE)
  if not os.path.exists(path):
    raise VidtxError(f"{data_dir} is not a prepared dataset: {LABEL_MAP_FILE} is missing")
  with open(path) as f:
    return [line.rstrip("\n") for line in f if line.strip()]


def write_metadata(data_dir: str, class_names: Sequence[str], *, description: str = "",
                   split_sizes: Mapping[str, tuple[Sequence[int], int]] | None = None) -> None:
  """Writes the TFDS metadata for the shards already in `data_dir`.

  `split_sizes`: split -> (examples per shard, total bytes), when the writer knows
  them; without it every shard is read to count its examples.
  """
  spec = features(class_names)
  split_infos = None
  if split_sizes is not None:
    split_infos = [
        tfds.core.SplitInfo(
            name=split, shard_lengths=[int(n) for n in lengths], num_bytes=int(num_bytes),
            filename_template=tfds.core.ShardedFileTemplate(
                data_dir=epath.Path(data_dir), template=FILENAME_TEMPLATE,
                dataset_name=DATASET_NAME, split=split, filetype_suffix="tfrecord"))
        for split, (lengths, num_bytes) in sorted(split_sizes.items())
    ]
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)  # TFDS warns about its own deprecated calls here
  try:
    tfds.folder_dataset.write_metadata(
        data_dir=data_dir,
        features=spec,
        split_infos=split_infos,  # None: computed from the shards on disk
        filename_template=FILENAME_TEMPLATE,
        check_data=True,
        description=description,
    )
  finally:
    absl_logging.set_verbosity(verbosity)
  write_label_map(data_dir, class_names)


PREPARE_INFO_FILE = "prepare_info.json"


def read_prepare_info(data_dir: str) -> dict:
  """How the dataset was made (prepare_info.json), or {} for a dataset without the record."""
  path = os.path.join(data_dir, PREPARE_INFO_FILE)
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def builder(data_dir: str) -> tfds.core.DatasetBuilder:
  """The TFDS builder of a prepared dataset, with a clear error where there is none."""
  require_prepared(data_dir)
  return tfds.builder_from_directory(data_dir)
