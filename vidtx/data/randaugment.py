"""RandAugment of a training clip (`config.data.auto_augment`), on the host after the crop.

mx-mark's `-auto_augment` switches on torchvision's `RandAugment()` (2 ops at magnitude 9 of
31 bins; its policy string is not read) instead of the colour jitter, on the [T, C, H, W] clip
tensor: one draw of ops, magnitudes and signs per clip, the same for every frame, while
per-image statistics (contrast mean, autocontrast range, equalize histogram) are each frame's.
This is that: `auto_augment="rand-m9-n2"` (or "rand", the same); "" is off.

The 14 ops and magnitudes are torchvision's (identity; shear x / y up to 0.3; translate x / y
up to 150/331 of the side; rotate up to 30 degrees; brightness, colour, contrast, sharpness
factors 1 +- 0.9; posterize to 8..4 bits; solarize at 255..0; autocontrast; equalize), each
scaled by magnitude / 30, signed ones negated with probability 1/2. Geometric ops use nearest
neighbours and fill 0 (torchvision's defaults). uint8 arithmetic follows torchvision's: blends
truncate, the sharpness kernel's result is rounded.
"""
from __future__ import annotations

import math
import re

import tensorflow as tf

from vidtx.errors import VidtxError

NUM_BINS = 31  # torchvision's num_magnitude_bins
_OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness",
        "color", "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize")


def parse(policy: str) -> tuple[int, int] | None:
  """`config.data.auto_augment` -> (num_ops, magnitude), or None where it is ''."""
  if not policy:
    return None
  match = re.fullmatch(r"rand((?:-[mn]\d+)*)", policy)
  if not match:
    raise VidtxError(f"config.data.auto_augment={policy!r}: expected '' (off) or 'rand-m<M>-n<N>' "
                     "(torchvision's RandAugment, as mx-mark runs it; e.g. 'rand-m9-n2')")
  parts = dict((p[0], int(p[1:])) for p in match[1].split("-") if p)
  magnitude, num_ops = parts.get("m", 9), parts.get("n", 2)
  if not 0 <= magnitude < NUM_BINS or num_ops < 1:
    raise VidtxError(f"config.data.auto_augment={policy!r}: magnitude must be 0..{NUM_BINS - 1}, "
                     "ops >= 1")
  return num_ops, magnitude


def _gray(x):
  """torchvision's rgb_to_grayscale of uint8 frames (truncated to whole levels), float [T,H,W,1]."""
  return tf.floor(0.2989 * x[..., :1] + 0.587 * x[..., 1:2] + 0.114 * x[..., 2:])


def _blend(x, other, factor):
  return tf.floor(tf.clip_by_value(factor * x + (1.0 - factor) * other, 0.0, 255.0))


def _affine(x, matrix):
  """Output pixel (col, row) takes input pixel matrix @ (col, row, 1); nearest, fill 0."""
  transform = tf.concat([tf.reshape(matrix, [6]), tf.zeros([2])], 0)
  transforms = tf.tile(transform[None], [tf.shape(x)[0], 1])
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=x, transforms=transforms, output_shape=tf.shape(x)[1:3], fill_value=0.0,
      interpolation="NEAREST", fill_mode="CONSTANT")


def _rotate(x, degrees):
  h, w = tf.cast(tf.shape(x)[1], tf.float32), tf.cast(tf.shape(x)[2], tf.float32)
  cy, cx = (h - 1) / 2, (w - 1) / 2
  angle = degrees * math.pi / 180  # counter-clockwise on the screen, as torchvision
  c, s = tf.cos(angle), tf.sin(angle)
  return _affine(x, tf.stack([c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy]))


def _sharpness(x, factor):
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  blurred = tf.round(tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "VALID"))
  inner = tf.pad(blurred, [[0, 0], [1, 1], [1, 1], [0, 0]])
  border = tf.pad(tf.ones_like(blurred), [[0, 0], [1, 1], [1, 1], [0, 0]])
  return _blend(x, tf.where(border > 0, inner, x), factor)


def _autocontrast(x):
  low = tf.reduce_min(x, axis=[1, 2], keepdims=True)
  high = tf.reduce_max(x, axis=[1, 2], keepdims=True)
  flat = tf.equal(high, low)
  scale = tf.where(flat, 1.0, 255.0 / tf.where(flat, 1.0, high - low))
  low = tf.where(flat, 0.0, low)
  return tf.floor(tf.clip_by_value((x - low) * scale, 0.0, 255.0))


def _equalize(x):
  """torchvision's equalize of each frame's channels (PIL's algorithm)."""
  t, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
  channels = tf.reshape(tf.transpose(tf.cast(x, tf.int32), [0, 3, 1, 2]), [t * 3, h * w])
  offsets = tf.range(t * 3)[:, None] * 256
  hist = tf.reshape(tf.math.bincount(tf.reshape(channels + offsets, [-1]), minlength=t * 3 * 256,
                                     maxlength=t * 3 * 256), [t * 3, 256])
  hist = tf.cast(hist, tf.float32)
  last = 255 - tf.argmax(tf.reverse(tf.cast(hist > 0, tf.int32), [1]), axis=1, output_type=tf.int32)
  last_count = tf.gather(hist, last, batch_dims=1)
  step = tf.floor((tf.reduce_sum(hist, 1) - last_count) / 255.0)[:, None]
  lut = tf.floor((tf.cumsum(hist, axis=1) + tf.floor(step / 2)) / tf.maximum(step, 1.0))
  lut = tf.clip_by_value(tf.concat([tf.zeros_like(lut[:, :1]), lut[:, :-1]], 1), 0.0, 255.0)
  mapped = tf.gather(lut, channels, batch_dims=1)
  mapped = tf.where(step > 0, mapped, tf.cast(channels, tf.float32))
  return tf.transpose(tf.reshape(mapped, [t, 3, h, w]), [0, 2, 3, 1])


def _apply(x, op, level, sign):
  """Op number `op` at `level` = magnitude / 30 (0..1) with `sign` (+-1) on float frames 0..255."""
  h, w = tf.cast(tf.shape(x)[1], tf.float32), tf.cast(tf.shape(x)[2], tf.float32)
  signed = lambda top: sign * level * top
  shear = lambda: signed(0.3)  # torchvision: a shear angle of atan(m), i.e. a shear factor m
  branches = [
      lambda: x,
      lambda: _affine(x, tf.stack([1.0, shear(), 0.0, 0.0, 1.0, 0.0])),
      lambda: _affine(x, tf.stack([1.0, 0.0, 0.0, shear(), 1.0, 0.0])),
      lambda: _affine(x, tf.stack([1.0, 0.0, -_trunc(signed(150 / 331 * w)), 0.0, 1.0, 0.0])),
      lambda: _affine(x, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, -_trunc(signed(150 / 331 * h))])),
      lambda: _rotate(x, signed(30.0)),
      lambda: _blend(x, 0.0, 1.0 + signed(0.9)),
      lambda: _blend(x, _gray(x), 1.0 + signed(0.9)),
      lambda: _blend(x, tf.reduce_mean(_gray(x), axis=[1, 2, 3], keepdims=True), 1.0 + signed(0.9)),
      lambda: _sharpness(x, 1.0 + signed(0.9)),
      lambda: tf.floor(x / 2 ** (8 - _posterize_bits(level))) * 2 ** (8 - _posterize_bits(level)),
      lambda: tf.where(x >= 255.0 * (1.0 - level), 255.0 - x, x),
      lambda: _autocontrast(x),
      lambda: _equalize(x),
  ]
  return tf.switch_case(op, branches)


def _trunc(x):
  """Towards zero, as Python's int()."""
  return tf.sign(x) * tf.floor(tf.abs(x))


def _posterize_bits(level):
  return 8.0 - tf.round(level * (NUM_BINS - 1) / ((NUM_BINS - 1) / 4))


def rand_augment(clip: tf.Tensor, seed: tf.Tensor, policy: str) -> tf.Tensor:
  """uint8 [T, H, W, 3] -> uint8, `num_ops` random ops of `policy` (see `parse`), one draw per
  clip from the stateless `seed`."""
  num_ops, magnitude = parse(policy)
  level = tf.constant(magnitude / (NUM_BINS - 1), tf.float32)
  x = tf.cast(clip, tf.float32)
  seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 2 * num_ops))
  for op_seed, sign_seed in zip(seeds[::2], seeds[1::2]):
    op = tf.random.stateless_uniform([], op_seed, 0, len(_OPS), tf.int32)
    negative = tf.random.stateless_uniform([], sign_seed, 0, 2, tf.int32)
    x = _apply(x, op, level, tf.cast(1 - 2 * negative, tf.float32))
  return tf.cast(x, tf.uint8)
