"""Which frames a clip takes, inside tf.data: `vidtx.data.sampling`'s samplers, set by config.data.

Training draws the sampler's random integers from the clip's stateless seed (test clips
come from the config's test protocol, `vidtx.data.protocol`, through `views.plan`). Linspace windows are `num_frames * frame_interval` frames, scaled by
fps / target_fps where `config.data.target_fps` is set (PaddleVideo's pyav window).
"""
from __future__ import annotations

import tensorflow as tf

from vidtx.data import sampling

_tnp = tf.experimental.numpy


def clip_seeds(seed: tf.Tensor) -> list[tf.Tensor]:
  """(sampling, crop, flip) seeds of one training clip."""
  return tf.unstack(tf.random.experimental.stateless_split(seed, 3))


def _indices(data, length, fps, *, rand, num_clips=1) -> tf.Tensor:
  """Frame indices `[1, T]` (int64) of a training clip."""
  mode = data.sampling
  window = data.num_frames * data.frame_interval
  if mode == "linspace" and data.target_fps > 0 and window > 0:
    window = tf.cast(tf.round(window * fps / data.target_fps), tf.int64)
  return sampling.sample_indices(
      mode, length, data.num_frames, rand=rand, num_clips=num_clips,
      frame_interval=data.frame_interval, window=window, placement=data.test_window_placement,
      xp=_tnp)


def train_indices(length: tf.Tensor, fps: tf.Tensor, seed: tf.Tensor, data) -> tf.Tensor:
  """The T frame indices of a training clip of a video of `length` frames at `fps`."""
  rand = tf.random.stateless_uniform(
      [sampling.num_random(data.sampling, data.num_frames)], clip_seeds(seed)[0], 0,
      sampling.RAND_RANGE, tf.int64)
  return _indices(data, length, fps, rand=rand)[0]
