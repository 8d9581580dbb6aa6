"""Where a pipeline's videos come from: a host's share of a split, read one of two ways.

`WholeRecords` reads each video's record and parses it; `IndexedFrames` reads only the
sampled JPEGs' bytes where every shard has a frame index (`vidtx.data.frame_index`;
written by prepare): same clips, same order, a fraction of the CPU for long videos. Both
give the same `Video` for an element of `elements()`, so this module is the one place
where the pipelines touch shard files.

Host shares. With at least as many shard files as processes, process p reads files
p, p + P, ...; otherwise every process reads all files and keeps the examples whose
position in the split is p modulo P.
"""
from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from vidtx.data import frame_index
from vidtx.errors import VidtxError

# Fixed (not autotuned) so the record order never depends on the machine.
READ_CYCLE_LENGTH = 16
# A record holds a whole video (several MB); reading it through a 1 MiB buffer instead of
# the default 256 KiB costs 9-14% less CPU (measured on 6-16 MB records).
READ_BUFFER_BYTES = 1 << 20

# The serialized features the pipelines read (see format.features(); TFDS stores a
# Video as one bytes_list of encoded frames). Parsing these directly is ~3x
# cheaper than FeaturesDict.deserialize_example.
_PARSE_SPEC = {
    "video": tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "fps": tf.io.FixedLenFeature([], tf.float32),
    # What the source's decoder knew (vidtx.data.protocol.Source as JSON; "" in datasets
    # prepared before it was recorded).
    "source": tf.io.FixedLenFeature([], tf.string, default_value=""),
}


@dataclasses.dataclass(frozen=True)
class Video:
  """One video inside a tf.data map: its length, frame rate, label and a frame reader."""
  length: tf.Tensor  # int32 scalar: frames
  fps: tf.Tensor  # float32 scalar
  label: tf.Tensor  # int32 scalar
  frames: Callable[[tf.Tensor], tf.Tensor]  # frame indices [N] -> their JPEG strings [N]
  source: tf.Tensor  # string scalar: protocol.Source as JSON, or "" where not recorded


# ----------------------------------------------------------------------------- shares
def split_files(builder, split: str) -> tuple[list[str], list[int]]:
  """Shard paths of `split` and their example counts."""
  splits = builder.info.splits
  if split not in splits:
    raise VidtxError(f"{builder.data_dir} has no split {split!r} (it has {sorted(splits.keys())})")
  info = splits[split]
  return [str(p) for p in info.filepaths], [int(n) for n in info.shard_lengths]


@dataclasses.dataclass(frozen=True)
class Share:
  """The records of one split that one process reads."""
  paths: tuple[str, ...]
  offsets: tuple[int, ...]  # position in the split of each file's first record
  lengths: tuple[int, ...]  # records in each file
  num_examples: int
  keep_modulo: tuple[int, int] | None  # (process_count, process_index): record-level share

  def records(self, order: tf.Tensor | None = None) -> tf.data.Dataset:
    """(position in split int64, serialized record) in file order (or `order`)."""
    paths = tf.constant(self.paths, tf.string)
    offsets = tf.constant(self.offsets, tf.int64)

    def read_file(file):
      return tf.data.TFRecordDataset(paths[file], buffer_size=READ_BUFFER_BYTES).enumerate().map(
          lambda i, record: (offsets[file] + i, record))

    return self._interleave(read_file, order)

  def videos(self, order: tf.Tensor | None = None) -> tf.data.Dataset:
    """(position in split, file index in `paths`, record index in the file), all int64, in
    the order of `records` without reading anything."""
    offsets = tf.constant(self.offsets, tf.int64)
    lengths = tf.constant(self.lengths, tf.int64)

    def file_videos(file):
      return tf.data.Dataset.range(lengths[file]).map(
          lambda i: (offsets[file] + i, file, i))

    return self._interleave(file_videos, order)

  def _interleave(self, per_file, order: tf.Tensor | None) -> tf.data.Dataset:
    """Files (in `order`) read round-robin, one element each, by `per_file(file index)`."""
    files = tf.range(len(self.paths), dtype=tf.int64)
    if order is not None:
      files = tf.gather(files, order)
    cycle = min(READ_CYCLE_LENGTH, len(self.paths))
    ds = tf.data.Dataset.from_tensor_slices(files).interleave(
        per_file, cycle_length=cycle, block_length=1, num_parallel_calls=cycle,
        deterministic=True)
    if self.keep_modulo is not None:
      count, index = self.keep_modulo
      ds = ds.filter(lambda position, *_: position % count == index)
    return ds


def host_share(paths: Sequence[str], lengths: Sequence[int], process_index: int,
               process_count: int) -> Share:
  """The part of a split (shard `paths` with `lengths` examples) that one process reads."""
  if not 0 <= process_index < process_count:
    raise VidtxError(f"process_index={process_index} is not in [0, process_count={process_count})")
  offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int).tolist()
  if len(paths) >= process_count:
    mine = slice(process_index, None, process_count)
    return Share(tuple(paths[mine]), tuple(offsets[mine]), tuple(lengths[mine]),
                 sum(lengths[mine]), None)
  count = len(range(process_index, sum(lengths), process_count))
  return Share(tuple(paths), tuple(offsets), tuple(lengths), count,
               (process_count, process_index))


# ----------------------------------------------------------------------------- read paths
class WholeRecords:
  """Reads whole records: elements (position, record); parsing keeps the wanted JPEGs."""

  def __init__(self, share: Share):
    self.share = share

  def elements(self, order: tf.Tensor | None = None) -> tf.data.Dataset:
    return self.share.records(order)

  def video(self, record: tf.Tensor) -> Video:
    ex = tf.io.parse_single_example(record, _PARSE_SPEC)
    jpegs = ex["video"]
    return Video(length=tf.shape(jpegs)[0], fps=ex["fps"], label=tf.cast(ex["label"], tf.int32),
                 frames=lambda indices: tf.gather(jpegs, indices), source=ex["source"])


class IndexedFrames:
  """Reads only chosen frames, straight from the shard files by the frame index (os.pread).

  Elements are (position, file, record): no byte is read until `Video.frames`. Per video
  `num_frames`, `fps`, `label` (tensors), videos numbered file after file;
  `first_video[f]` is the number of file f's first video.
  """

  def __init__(self, share: Share, indexes: Sequence[dict]):
    self.share = share
    self.paths = list(share.paths)
    self.indexes = list(indexes)
    counts = [len(index["label"]) for index in indexes]
    self.first_video = tf.constant(np.concatenate([[0], np.cumsum(counts)[:-1]]), tf.int64)
    self.num_frames = tf.constant(np.concatenate([np.diff(i["starts"]) for i in indexes]), tf.int32)
    self.fps = tf.constant(np.concatenate([i["fps"] for i in indexes]), tf.float32)
    self.label = tf.constant(np.concatenate([i["label"] for i in indexes]), tf.int32)
    # Source facts (JSON, with every frame's timestamp): a Python list, looked up only where
    # a pipeline uses them (eval), so training holds no tensor of them.
    self.sources = [bytes(x) for i in indexes
                    for x in (i["source"] if "source" in i else [b""] * len(i["label"]))]
    self._files = {}
    self._lock = threading.Lock()

  @classmethod
  def load(cls, share: Share) -> IndexedFrames | None:
    """The reader of the share's shard files, or None unless every one has a frame index."""
    indexes = [frame_index.load(path) for path in share.paths]
    if any(index is None for index in indexes):
      return None
    return cls(share, indexes)

  def elements(self, order: tf.Tensor | None = None) -> tf.data.Dataset:
    return self.share.videos(order)

  def video(self, file: tf.Tensor, record: tf.Tensor) -> Video:
    number = self.first_video[file] + record

    def frames(indices):
      jpegs = tf.numpy_function(self.read, [file, record, indices], tf.string, stateful=False)
      return tf.ensure_shape(jpegs, indices.shape)

    return Video(length=tf.gather(self.num_frames, number), fps=tf.gather(self.fps, number),
                 label=tf.gather(self.label, number), frames=frames,
                 source=tf.numpy_function(lambda n: self.sources[n], [number], tf.string,
                                          stateful=False))

  def read(self, file, record, indices) -> np.ndarray:
    """The JPEG bytes of frames `indices` of record `record` of file `file`."""
    index = self.indexes[file]
    rows = index["frames"][index["starts"][record] + indices]
    fd = self._fd(int(file))
    jpegs = [os.pread(fd, int(length), int(offset)) for offset, length in rows]
    for frame, jpeg in zip(indices, jpegs):
      # A JPEG starts with SOI and ends with EOI: bytes overwritten across a frame break one.
      if jpeg[:2] != b"\xff\xd8" or jpeg[-2:] != b"\xff\xd9":
        raise VidtxError(f"shard {self.paths[file]}, record {record}: frame {frame} is damaged "
                         "(not a JPEG); restore the shard or prepare the dataset again")
    return np.array(jpegs, object)

  def _fd(self, file: int) -> int:
    with self._lock:
      if file not in self._files:
        self._files[file] = open(self.paths[file], "rb")  # closed with the reader
      return self._files[file].fileno()


def video_ids(builder, split: str) -> list[str]:
  """The id of every video of `split`, by position in the split (eval --save_scores).

  From the frame index where every shard's has them (a few bytes per video), else by reading
  every record of the split once (`python -m vidtx.data.frame_index DIR` adds them to an
  index written before they were recorded)."""
  paths, lengths = split_files(builder, split)
  indexes = [frame_index.load(path) for path in paths]
  if all(index is not None and "video_id" in index for index in indexes):
    return [bytes(x).decode() for index in indexes for x in index["video_id"]]
  spec = {"video_id": tf.io.FixedLenFeature([], tf.string, default_value="")}
  ids = []
  for path in paths:
    for record in tf.data.TFRecordDataset(path, buffer_size=READ_BUFFER_BYTES):
      ids.append(tf.io.parse_single_example(record, spec)["video_id"].numpy().decode())
  if len(ids) != sum(lengths):
    raise VidtxError(f"split {split!r} of {builder.data_dir}: {len(ids)} records, "
                     f"{sum(lengths)} in its metadata")
  return ids


def reader(share: Share, builder, sampled_frames: bool) -> WholeRecords | IndexedFrames:
  """`IndexedFrames` where `sampled_frames` and every shard of the share has an index, else
  `WholeRecords`; `builder`: the dataset's (checked to have the features read here)."""
  serialized = builder.info.features.get_serialized_info()
  missing = [key for key in _PARSE_SPEC if key not in serialized and key != "source"]
  if missing:
    raise VidtxError(f"{builder.data_dir} is not a vidtx prepared dataset: no {missing} features")
  indexed = IndexedFrames.load(share) if sampled_frames else None
  return indexed if indexed is not None else WholeRecords(share)
