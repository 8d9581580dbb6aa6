"""Accelerator-side preprocessing, inside the jitted step: normalise, colour jitter, mixing.

JAX only (no TensorFlow). Every function is jittable and takes its randomness
as an explicit key. Videos are `[B, T, H, W, C]`; one random draw per batch
(mixup / cutmix, as PaddleVideo's Mix collate) or per clip (colour jitter), the
same for every frame of a clip.

Mixing partners come from the same device's share of the batch (`groups`: the number of
contiguous blocks the batch is sharded into): the seeds mix within one GPU's batch (PaddleVideo's
Mix collate, timm's Mixup), and a permutation across devices would move the whole batch between
chips every step (`vidtx.plan` showed 3.7 GiB of all-reduces per step for PP-TimeSformer-B on a
v5p-128 before).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import dm_pix as pix
import jax
import jax.numpy as jnp

from vidtx import losses


class MixedLabels(NamedTuple):
  """Targets of a mixed batch: loss = lam * L(labels_a) + (1 - lam) * L(labels_b)."""
  labels_a: jax.Array  # int32 [B]
  labels_b: jax.Array  # int32 [B]
  lam: jax.Array  # float32 [], weight of labels_a


def normalize(video: jax.Array, mean: Sequence[float], std: Sequence[float],
              dtype=jnp.float32) -> jax.Array:
  """uint8 video (0-255) -> (video / 255 - mean) / std, in `dtype`; mean / std in 0-1 units."""
  x = video.astype(jnp.float32) / 255.0
  x = (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
  return x.astype(dtype)


def partners(rng: jax.Array, batch: int, groups: int = 1) -> jax.Array:
  """int32 [groups, batch // groups]: a random permutation within each of `groups` contiguous
  blocks of the batch (block-local indices)."""
  if batch % groups:
    raise ValueError(f"a batch of {batch} does not split into {groups} device blocks")
  if groups == 1:  # one device: the same draws as a plain permutation of the batch
    return jax.random.permutation(rng, batch)[None]
  return jax.vmap(lambda k: jax.random.permutation(k, batch // groups))(jax.random.split(rng, groups))


def take_partners(x: jax.Array, perms: jax.Array) -> jax.Array:
  """x[perm] within each block: a gather that stays on the device holding the block."""
  groups, size = perms.shape
  blocks = x.reshape((groups, size) + x.shape[1:])
  return jax.vmap(lambda block, perm: block[perm])(blocks, perms).reshape(x.shape)


def mixup(rng: jax.Array, video: jax.Array, labels: jax.Array,
          alpha: float, groups: int = 1) -> tuple[jax.Array, MixedLabels]:
  """lam ~ Beta(alpha, alpha); video = lam * video + (1 - lam) * video[perm]."""
  lam_key, perm_key = jax.random.split(rng)
  lam = jax.random.beta(lam_key, alpha, alpha).astype(jnp.float32)
  perms = partners(perm_key, video.shape[0], groups)
  mixed = lam * video + (1 - lam) * take_partners(video, perms)
  return mixed.astype(video.dtype), MixedLabels(labels, take_partners(labels, perms), lam)


def cutmix(rng: jax.Array, video: jax.Array, labels: jax.Array,
           alpha: float, groups: int = 1) -> tuple[jax.Array, MixedLabels]:
  """Pastes a box of H x W (all frames) from video[perm]; lam = 1 - box area / (H * W).

  The box follows PaddleVideo's Cutmix (side sqrt(1 - lam0) of each axis, random
  centre, clipped to the frame) but over height x width, not the seeds' axes.
  """
  lam_key, perm_key, y_key, x_key = jax.random.split(rng, 4)
  height, width = video.shape[2], video.shape[3]
  lam0 = jax.random.beta(lam_key, alpha, alpha)
  cut = jnp.sqrt(1.0 - lam0)
  cut_h = jnp.floor(height * cut).astype(jnp.int32)
  cut_w = jnp.floor(width * cut).astype(jnp.int32)
  cy = jax.random.randint(y_key, [], 0, height)
  cx = jax.random.randint(x_key, [], 0, width)
  y1, y2 = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
  x1, x2 = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
  rows, cols = jnp.arange(height), jnp.arange(width)
  inside = (((rows >= y1) & (rows < y2))[:, None]) & (((cols >= x1) & (cols < x2))[None, :])
  perms = partners(perm_key, video.shape[0], groups)
  mixed = jnp.where(inside[None, None, :, :, None], take_partners(video, perms), video)
  lam = 1.0 - ((y2 - y1) * (x2 - x1)).astype(jnp.float32) / (height * width)
  return mixed, MixedLabels(labels, take_partners(labels, perms), lam)


def videomix(rng: jax.Array, video: jax.Array, labels: jax.Array, *, cutmix_prob: float = 0.5,
             mixup_alpha: float = 0.2, cutmix_alpha: float = 1.0,
             groups: int = 1) -> tuple[jax.Array, MixedLabels]:
  """PaddleVideo VideoMix: cutmix with probability `cutmix_prob`, else mixup (per batch)."""
  choice_key, mix_key = jax.random.split(rng)
  use_cutmix = jax.random.uniform(choice_key) < cutmix_prob
  return jax.lax.cond(use_cutmix,
                      lambda: cutmix(mix_key, video, labels, cutmix_alpha, groups),
                      lambda: mixup(mix_key, video, labels, mixup_alpha, groups))


def mixed_targets(mixed: MixedLabels, num_classes: int,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Soft targets `[B, num_classes]`: cross-entropy against them equals
  lam * CE(labels_a) + (1 - lam) * CE(labels_b), label smoothing on both terms."""
  return (mixed.lam * losses.smoothed_targets(mixed.labels_a, num_classes, label_smoothing)
          + (1.0 - mixed.lam) * losses.smoothed_targets(mixed.labels_b, num_classes, label_smoothing))


def color_jitter(rng: jax.Array, video: jax.Array, *, brightness: float = 0.0,
                 contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0,
                 prob: float = 1.0) -> jax.Array:
  """Random brightness / contrast / saturation / hue (dm-pix), one draw per clip.

  video: uint8 `[B, T, H, W, 3]` -> uint8. Each adjustment is applied with
  probability `prob` (TokShift uses 0.1 each), in that order; brightness adds a
  delta in [-brightness, brightness] (0-1 units), contrast and saturation scale by
  a factor in [1 - x, 1 + x], hue shifts by up to `hue` turns. Contrast is taken
  about each frame's mean (as tf.image / torchvision per image).
  """
  def jitter_clip(key, clip):
    keys = jax.random.split(key, 8)
    x = clip.astype(jnp.float32) / 255.0
    ops = (
        (brightness, lambda k, x: pix.random_brightness(k, x, brightness)),
        (contrast, lambda k, x: pix.random_contrast(k, x, 1 - contrast, 1 + contrast)),
        (saturation, lambda k, x: pix.random_saturation(k, x, 1 - saturation, 1 + saturation)),
        (hue, lambda k, x: pix.random_hue(k, x, hue)),
    )
    for i, (amount, op) in enumerate(ops):
      if amount:
        apply = jax.random.uniform(keys[2 * i]) < prob
        x = jnp.where(apply, jnp.clip(op(keys[2 * i + 1], x), 0.0, 1.0), x)
    return jnp.round(x * 255.0).astype(jnp.uint8)

  return jax.vmap(jitter_clip)(jax.random.split(rng, video.shape[0]), video)
