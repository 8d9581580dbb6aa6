"""Evaluation views of one video: its test clips x crops, as eval, validation and predict see them.

Which frames, the resized size and where the crops lie come from the config's test
protocol (`vidtx.data.protocol.plan`: named window, sampler, resize and crop functions);
whole frames are resized to that size with `config.data.test_interpolation`, then the
square image_size crops are cut (exact). `test_indices` and `test_geometry` run it inside
tf.data; `eval_views` is the same transform for a video held in memory (predict.py).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from vidtx.data import augment, protocol
from vidtx.data import config as data_config_lib
from vidtx.errors import VidtxError


def check_views(num_clips: int, num_crops: int) -> None:
  if int(num_clips) < 1:
    raise VidtxError(f"num_clips={num_clips} must be >= 1")
  if num_crops not in (1, 3):
    raise VidtxError(f"num_crops={num_crops} must be 1 (centre) or 3 (along the longer side)")


def test_indices(video, data, num_clips: int) -> tf.Tensor:
  """The frame indices [clips * T] (int64) of a `reading.Video`'s test clips, inside tf.data,
  by `protocol.frame_indices`. A video prepared without its source facts (`video.source`
  empty) is taken as constant-rate at its fps."""

  def indices(source, length, fps):
    if source:
      return protocol.frame_indices(protocol.Source.from_json(source), int(length), data,
                                    num_clips)
    fallback = protocol.Source.fallback(int(length), float(fps), 1, 1)
    return protocol.frame_indices(fallback, int(length), data, num_clips, fps=float(fps))

  out = tf.numpy_function(indices, [video.source, video.length, video.fps], tf.int64,
                          stateful=False)
  return tf.ensure_shape(out, [num_clips * data.num_frames])


def test_geometry(video, jpegs: tf.Tensor, data, num_crops: int):
  """(resized (h, w) int32 [2], crops (y, x) int32 [crops, 2]) of a `reading.Video` by
  `protocol.crop_plan`, from its source frame size (without source facts: the stored size
  of `jpegs[0]`, a sampled frame)."""
  stored_hw = tf.io.extract_jpeg_shape(jpegs[0])[:2]

  def geometry(source, hw):
    if source:
      src = protocol.Source.from_json(source)
      hw = (src.height, src.width)
    resized, crops = protocol.crop_plan(hw[0], hw[1], data, num_crops)
    return np.asarray(resized, np.int32), np.asarray(crops, np.int32)

  resized, crops = tf.numpy_function(geometry, [video.source, stored_hw], [tf.int32, tf.int32],
                                     stateful=False)
  return tf.ensure_shape(resized, [2]), tf.ensure_shape(crops, [num_crops, 2])


def from_jpegs(jpegs: tf.Tensor, data, num_clips: int, num_crops: int, resized_hw,
               crops) -> tf.Tensor:
  """jpegs: the test clips' [clips * T] JPEG strings → uint8 [clips * crops, T, S, S, 3],
  clip-major; frames resized to `resized_hw` [2], then the crops at `crops` [crops, 2] (y, x)."""
  num_frames, size = data.num_frames, data.image_size
  frames = tf.stack([tf.io.decode_jpeg(jpegs[i], channels=3)
                     for i in range(num_clips * num_frames)])
  frames = augment.resize(frames, resized_hw[0], resized_hw[1],
                          antialias=data.test_interpolation == "bilinear_antialias")
  crops = [frames[:, crops[k, 0]:crops[k, 0] + size, crops[k, 1]:crops[k, 1] + size]
           for k in range(num_crops)]
  stacked = tf.stack(crops, axis=1)  # [clips * T, crops, S, S, 3]
  stacked = tf.reshape(stacked, [num_clips, num_frames, num_crops, size, size, 3])
  stacked = tf.transpose(stacked, [0, 2, 1, 3, 4, 5])
  return tf.reshape(stacked, [num_clips * num_crops, num_frames, size, size, 3])


def eval_views(jpeg_frames: Sequence[bytes], data, num_clips: int, num_crops: int,
               *, source: protocol.Source | None = None, fps: float = 30.0) -> np.ndarray:
  """The eval transform of one in-memory video: uint8 `[V, T, H, W, 3]`, V = clips * crops.

  jpeg_frames: the video's frames as encoded JPEGs, in order (what a prepared dataset
  stores, what `vidtx.data.decode` gives). `source`: the video's source facts
  (`DecodedVideo.source`); without them a constant rate `fps` and the stored frame size
  are assumed. Identical to the views of `pipeline.make_eval_dataset`.
  """
  data_config_lib.check(data, dataset=False)
  check_views(num_clips, num_crops)
  if len(jpeg_frames) == 0:
    raise VidtxError("eval_views: the video has no frames")
  fallback = source is None
  if fallback:
    height, width = tf.io.extract_jpeg_shape(jpeg_frames[0]).numpy()[:2]
    source = protocol.Source.fallback(len(jpeg_frames), fps, int(height), int(width))
  p = protocol.plan(source, len(jpeg_frames), data, num_clips, num_crops,
                    fps=float(fps) if fallback else None)
  jpegs = tf.constant([jpeg_frames[i] for i in p.indices], tf.string)
  return from_jpegs(jpegs, data, num_clips, num_crops, tf.constant(p.resized_hw, tf.int32),
                    tf.constant(p.crops, tf.int32)).numpy()
