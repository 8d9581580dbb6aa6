"""Where every JPEG frame lies in the shard files, so the pipelines read only sampled frames.

A record holds a whole video (a 10 s Kinetics clip at 256 pixels is about 16 MB),
and a training clip uses 8 of its 300 frames: reading and parsing the record cost
more CPU than decoding the 8 JPEGs. With an index the pipeline reads just the
sampled frames' bytes (`os.pread`), 30x fewer bytes from disk and page cache.

    <dir>/frame_index/<shard file name>.npz, one per shard:
      frames [F, 2] int64  byte offset in the shard file and length of each frame,
                           video after video, frames in order
      starts [R + 1] int64 video r (the r-th record) has frames[starts[r]:starts[r + 1]]
      label [R] int64, fps [R] float32
      source [R] bytes     each video's protocol.Source as JSON ("" where not recorded)
      video_id [R] bytes   each video's id (eval --save_scores; absent in older indexes)
      shard_bytes int64    the shard's size when indexed (a rewritten shard is stale)

`vidtx.data.prepare` writes the index with each shard; for a dataset made
another way, `python -m vidtx.data.frame_index DIR` builds it. A pipeline holds the index
of its host's share of the shards in memory: 16 bytes per frame (all of Kinetics-400 at
its native frame rate, 72M frames, is 1.2 GB on one host).
"""
from __future__ import annotations

import io
import os
import struct
import uuid
import zipfile
from collections.abc import Sequence

import numpy as np

from vidtx import messages
from vidtx.data import require_prepared
from vidtx.errors import VidtxError

INDEX_DIR = "frame_index"
_HEADER = 12  # TFRecord framing: uint64 length, uint32 masked CRC of the length
_FOOTER = 4  # uint32 masked CRC of the data


def index_path(shard: str) -> str:
  """Where the index of the shard file `shard` lives."""
  return os.path.join(os.path.dirname(shard), INDEX_DIR, os.path.basename(shard) + ".npz")


def _records(path: str):
  """(data offset in the file, serialized record) of each record of a TFRecord file."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (gfile: gs:// too)

  with tf.io.gfile.GFile(path, "rb") as f:
    position = 0
    while True:
      header = f.read(_HEADER)
      if not header:
        return
      if len(header) < _HEADER:
        raise VidtxError(f"{path}: truncated TFRecord header at byte {position}")
      (length,) = struct.unpack("<Q", header[:8])
      data = f.read(length)
      if len(data) < length or len(f.read(_FOOTER)) < _FOOTER:
        raise VidtxError(f"{path}: truncated record at byte {position}")
      yield position + _HEADER, data
      position += _HEADER + length + _FOOTER


def build(shard: str) -> dict[str, np.ndarray]:
  """The index arrays of one shard file (see the module doc)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (after the CLI quiets its logs)

  frames, starts, labels, fps, sources, ids = [], [0], [], [], [], []
  for offset, data in _records(shard):
    feature = tf.train.Example.FromString(data).features.feature
    position = 0
    for jpeg in feature["video"].bytes_list.value:
      # Each frame's bytes sit in the record as they are (a length-prefixed proto field).
      position = data.find(jpeg, position)
      if position < 0:
        raise VidtxError(f"{shard}: a frame of record {len(starts) - 1} is not stored contiguously")
      frames.append((offset + position, len(jpeg)))
      position += len(jpeg)
    starts.append(len(frames))
    labels.append(feature["label"].int64_list.value[0])
    fps.append(feature["fps"].float_list.value[0])
    source = feature["source"].bytes_list.value if "source" in feature else []
    sources.append(source[0] if source else b"")
    video_id = feature["video_id"].bytes_list.value if "video_id" in feature else []
    ids.append(video_id[0] if video_id else b"")
  return {"frames": np.asarray(frames, np.int64).reshape(-1, 2),
          "starts": np.asarray(starts, np.int64), "label": np.asarray(labels, np.int64),
          "fps": np.asarray(fps, np.float32), "source": np.asarray(sources, np.bytes_),
          "video_id": np.asarray(ids, np.bytes_),
          "shard_bytes": np.int64(tf.io.gfile.stat(shard).length)}


def write(shard: str) -> str:
  """Indexes `shard` (any tf.io.gfile path) and writes the index atomically (a temp file of this
  writer, then a rename); returns its path. Same shard, same bytes."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  path = index_path(shard)
  tf.io.gfile.makedirs(os.path.dirname(path))
  data = io.BytesIO()
  with zipfile.ZipFile(data, "w") as archive:  # an .npz, without the time of writing in it
    for key, value in build(shard).items():
      with archive.open(zipfile.ZipInfo(key + ".npy"), "w") as f:
        np.lib.format.write_array(f, np.asanyarray(value))
  tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
  with tf.io.gfile.GFile(tmp, "wb") as f:
    f.write(data.getvalue())
  tf.io.gfile.rename(tmp, path, overwrite=True)
  return path


def _read(shard: str, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
  """Entries `keys` (default all) of the index of `shard`; a file that is not one is a
  VidtxError naming it."""
  path = index_path(shard)
  try:
    with np.load(path, allow_pickle=False) as f:
      return {key: f[key] for key in (keys or f.files)}
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    reason = (str(e).splitlines() or [""])[0][:120]
    raise VidtxError(f"{path} is not a frame index ({type(e).__name__}: {reason}); rebuild it with "
                     f"python -m vidtx.data.frame_index {os.path.dirname(shard) or '.'}") from None


def check_size(shard: str, indexed_bytes: int) -> None:
  """A VidtxError unless `shard` is still the size it had when indexed (else it was cut short,
  or replaced)."""
  size = os.path.getsize(shard)
  if size < indexed_bytes:
    raise VidtxError(f"shard {shard} is truncated ({size} bytes, {indexed_bytes} when prepared); "
                     "restore it or prepare the dataset again")
  if size != indexed_bytes:
    raise VidtxError(f"the frame index of shard {shard} does not match it ({size} bytes, "
                     f"{indexed_bytes} when indexed): restore the shard, or if it was rewritten on "
                     f"purpose rebuild the index with python -m vidtx.data.frame_index "
                     f"{os.path.dirname(shard) or '.'}")


def indexed_size(shard: str) -> int | None:
  """The size `shard` had when indexed (reads only that entry), or None where it has no index."""
  if not os.path.exists(index_path(shard)):
    return None
  return int(_read(shard, ["shard_bytes"])["shard_bytes"])


def load(shard: str) -> dict[str, np.ndarray] | None:
  """The index of `shard`, or None where it has none. A stale or unreadable index is an error."""
  if not os.path.exists(index_path(shard)):
    return None
  index = _read(shard)
  check_size(shard, int(index["shard_bytes"]))
  return index


def shard_files(data_dir: str) -> list[str]:
  """Every TFRecord shard of a prepared dataset, all splits."""
  from vidtx.data import format as data_format  # pylint: disable=g-import-not-at-top

  splits = data_format.builder(data_dir).info.splits
  return sorted(str(p) for split in splits.values() for p in split.filepaths)


def main(argv: Sequence[str]) -> None:
  """python -m vidtx.data.frame_index DIR: indexes every shard of the prepared dataset DIR."""
  if len(argv) != 2:
    raise VidtxError("give one prepared dataset directory: "
                     "python -m vidtx.data.frame_index PREPARED_DATASET_DIR")
  require_prepared(argv[1])  # before TensorFlow loads: a one-line error
  try:
    shards = shard_files(argv[1])
    status = messages.Status("frame_index", len(shards), unit="shards")
    for shard in shards:
      write(shard)
      status.update(advance=1)
    status.close()
  except OSError as e:
    raise VidtxError(f"{argv[1]}: {e}") from None
  messages.say(f"indexed {len(shards)} shard(s) of {argv[1]}")


if __name__ == "__main__":
  from vidtx import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)
