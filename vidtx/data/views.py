"""Evaluation views of one video: its test clips x crops, as eval, validation and predict see them.

Whole frames are resized (short side to eval_short_side; the long side in proportion, or
4:3 where config.data.fixed_ratio is set), then square image_size crops are cut (exact).
`eval_views` is the same transform for a video held in memory (predict.py).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from vidtx.data import augment, clips
from vidtx.data import config as data_config_lib
from vidtx.errors import VidtxError


def check_views(num_clips: int, num_crops: int) -> None:
  if int(num_clips) < 1:
    raise VidtxError(f"num_clips={num_clips} must be >= 1")
  if num_crops not in (1, 3):
    raise VidtxError(f"num_crops={num_crops} must be 1 (centre) or 3 (along the longer side)")


def from_jpegs(jpegs: tf.Tensor, data, num_clips: int, num_crops: int) -> tf.Tensor:
  """jpegs: the test clips' [clips * T] JPEG strings → uint8 [clips * crops, T, S, S, 3]."""
  num_frames, size = data.num_frames, data.image_size
  frames = tf.stack([tf.io.decode_jpeg(jpegs[i], channels=3)
                     for i in range(num_clips * num_frames)])
  height, width = resized_hw(tf.shape(frames)[1], tf.shape(frames)[2], data)
  frames = augment.resize(frames, height, width)
  crops = [frames[:, y:y + size, x:x + size]
           for y, x in crop_offsets(height, width, size, num_crops)]
  stacked = tf.stack(crops, axis=1)  # [clips * T, crops, S, S, 3]
  stacked = tf.reshape(stacked, [num_clips, num_frames, num_crops, size, size, 3])
  stacked = tf.transpose(stacked, [0, 2, 1, 3, 4, 5])
  return tf.reshape(stacked, [num_clips * num_crops, num_frames, size, size, 3])


def resized_hw(height, width, data):
  """Short side to eval_short_side; long side kept in proportion (rounded) or 4:3."""
  short, long = tf.minimum(height, width), tf.maximum(height, width)
  side = data.eval_short_side
  if data.fixed_ratio:
    new_long = tf.constant(side * 4 // 3, tf.int32)
  else:
    new_long = tf.cast(tf.math.floor(tf.cast(long * side, tf.float64) / tf.cast(short, tf.float64)
                                     + 0.5), tf.int32)
  portrait = height > width
  return tf.where(portrait, new_long, side), tf.where(portrait, side, new_long)


def crop_offsets(height, width, size: int, num_crops: int):
  """(y, x) of square crops: 1 = centre; 3 = along the longer side.

  Three crops follow PaddleVideo's UniformCrop: [left, right, centre] (landscape)
  or [top, bottom, centre] (portrait), at 0, 2 * step, step with
  step = (long - size) // 2; the other axis is centred.
  """
  dy, dx = (height - size) // 2, (width - size) // 2
  if num_crops == 1:
    return [(dy, dx)]
  portrait = height > width
  offsets = []
  for k in (0, 2, 1):
    offsets.append((tf.where(portrait, k * dy, dy), tf.where(portrait, dx, k * dx)))
  return offsets


def eval_views(jpeg_frames: Sequence[bytes], data, num_clips: int, num_crops: int,
               *, fps: float = 30.0) -> np.ndarray:
  """The eval transform of one in-memory video: uint8 `[V, T, H, W, 3]`, V = clips * crops.

  jpeg_frames: the video's frames as encoded JPEGs, in order (what a prepared dataset
  stores, what `vidtx.data.decode` gives). `fps` matters only where config.data.target_fps
  is set. Identical to the views of `pipeline.make_eval_dataset`.
  """
  data_config_lib.check(data, dataset=False)
  check_views(num_clips, num_crops)
  if len(jpeg_frames) == 0:
    raise VidtxError("eval_views: the video has no frames")
  video = tf.constant(list(jpeg_frames), tf.string)
  indices = clips.test_indices(tf.shape(video)[0], tf.constant(fps, tf.float32), data, num_clips)
  return from_jpegs(tf.gather(video, indices), data, num_clips, num_crops).numpy()
