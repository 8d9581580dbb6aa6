"""Tiny prepared datasets with patterned frames, written with `vidtx.data.format`.

Frame t of every video: red = column ramp, green = row ramp, blue = FRAME_STEP * t,
so a decoded frame tells which source frame it was (`frame_index`) and where a
crop came from. Labels are the example's position in its split, so a label
identifies the example.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from vidtx.data import format as fmt
from vidtx.data import frame_index as index_lib

FRAME_STEP = 6  # blue level per frame index; frames 0..42 fit in uint8
HEIGHT, WIDTH = 48, 64


@functools.lru_cache(maxsize=None)
def patterned_jpeg(t: int, height: int = HEIGHT, width: int = WIDTH) -> bytes:
  """Frame t as a JPEG."""
  frame = np.zeros((height, width, 3), np.uint8)
  frame[..., 0] = np.round(np.linspace(0, 255, width))[None, :]
  frame[..., 1] = np.round(np.linspace(0, 255, height))[:, None]
  frame[..., 2] = FRAME_STEP * t
  return tf.io.encode_jpeg(frame, quality=98, chroma_downsampling=False).numpy()


def frame_index(frames: np.ndarray) -> np.ndarray:
  """Source frame index of decoded frames `[..., H, W, 3]` -> `[...]`."""
  return np.round(frames[..., 2].mean(axis=(-1, -2)) / FRAME_STEP).astype(int)


def write_dataset(data_dir: str, videos: Mapping[str, Sequence[int]], *, num_shards: int = 2,
                  height: int = HEIGHT, width: int = WIDTH,
                  corrupt: Callable[[str, int, int], bool] | None = None,
                  index: bool = True) -> str:
  """Writes splits of patterned videos; `videos[split][i]` = frame count of example i.

  corrupt(split, i, t): frames for which it returns True are stored as bytes
  that are not a JPEG, so decoding one fails. index: write the frame index too,
  as `prepare` does.
  """
  os.makedirs(data_dir, exist_ok=True)
  num_classes = max(len(lengths) for lengths in videos.values())
  class_names = [f"class{i:03d}" for i in range(num_classes)]
  spec = fmt.features(class_names)

  def write_shards(is_corrupt):
    for split, lengths in videos.items():
      records = []
      for i, length in enumerate(lengths):
        frames = [b"not a jpeg" if is_corrupt(split, i, t) else patterned_jpeg(t, height, width)
                  for t in range(length)]
        records.append(fmt.serialize_example(spec, jpeg_frames=frames, label=i,
                                             video_id=f"{split}{i}", fps=30.0))
      shards = min(num_shards, len(records))
      # Contiguous shards, so an example's label is also its position in the split.
      bounds = np.linspace(0, len(records), shards + 1).round().astype(int)
      for s in range(shards):
        fmt.write_shard(fmt.shard_path(data_dir, split, s, shards),
                        records[bounds[s]:bounds[s + 1]])

  write_shards(lambda split, i, t: False)
  fmt.write_metadata(data_dir, class_names)  # decodes an example to check the shards
  if corrupt is not None:
    write_shards(corrupt)  # same example counts, so the metadata stays valid
  if index:
    for shard in index_lib.shard_files(data_dir):
      index_lib.write(shard)
  return data_dir


def smoke_config(data_dir: str, **train):
  """The demo's smoke config on the prepared dataset `data_dir`, with `config.train` overrides."""
  from configs import demo  # pylint: disable=g-import-not-at-top
  config = demo.get_config("smoke=True")
  config.data.dir = data_dir
  config.train.update(train)
  return config


def open_files_under(directory: str) -> list[str]:
  """The files under `directory` this process holds open (Linux: /proc/self/fd)."""
  root = os.path.realpath(directory) + os.sep
  names = []
  for fd in os.listdir("/proc/self/fd"):
    try:
      target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # closed since listed (the listing's own descriptor)
      continue
    if target.startswith(root):
      names.append(os.path.relpath(target, root))
  return sorted(names)
