"""PaddleVideo's precise BN: BatchNorm statistics recomputed for given weights as the true average
of per-batch statistics (config.train.precise_bn_batches), instead of training's running average."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vidtx import models
from vidtx.data import device as device_ops
from vidtx.errors import VidtxError


def make_batch_stats_step(model, data_config):
  """jitted (params, batch) -> this batch's BatchNorm statistics (mean, biased variance)."""
  momentum = models.family_of(model).bn_momentum
  if momentum is None:
    raise VidtxError(f"precise BN: {type(model).__name__}'s family declares no bn_momentum")

  def batch_stats(params, zero_stats, batch):
    video = device_ops.normalize(batch["video"], data_config.mean, data_config.std)
    _, updates = model.apply({"params": params, "batch_stats": zero_stats}, video, train=True,
                             mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
    # From zero running statistics one update leaves (1 - momentum) * the batch's.
    return jax.tree.map(lambda s: s / (1.0 - momentum), updates["batch_stats"])

  return jax.jit(batch_stats)


def precise_batch_stats(batch_stats_step, variables: dict, batches) -> dict:
  """PaddleVideo's precise BN: the true average of the per-batch BatchNorm statistics of
  `variables['params']` over `batches` (instead of the running average kept in training)."""
  zero = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
  total, count = zero, 0
  for batch in batches:
    total = jax.tree.map(jnp.add, total, batch_stats_step(variables["params"], zero, batch))
    count += 1
  if not count:
    raise VidtxError("precise BN got no batches")
  return jax.tree.map(lambda t: t / count, total)
