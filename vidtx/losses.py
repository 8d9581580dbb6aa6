"""Losses and metrics, computed in float32 whatever the compute dtype."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def smoothed_targets(labels: jax.Array, num_classes: int, label_smoothing: float) -> jax.Array:
  """(1 - eps) * onehot + eps / K, as Paddle's `ls_eps`.  labels: [B] -> [B, K]."""
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  return onehot * (1.0 - label_smoothing) + label_smoothing / num_classes


def cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy with soft targets.  logits, targets: [B, K] -> [B]."""
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def correct_topk(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """[B] bool: whether the label is among the k highest logits (ties count against)."""
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  return jnp.sum(logits > label_logit, axis=-1) < k


def distillation(student_logits: jax.Array, teacher_logits: jax.Array,
                 temperature: float = 1.0) -> jax.Array:
  """Per-example T^2 * KL(softmax(teacher / T) || softmax(student / T)) (Hinton et al.). [B, K] -> [B].

  The T^2 keeps the gradient's scale independent of T.
  """
  t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature)
  s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature)
  return temperature ** 2 * jnp.sum(jnp.exp(t) * (t - s), axis=-1)


def is_label_free(model) -> bool:
  """Whether `model` (a Flax module) returns its own per-example loss [B] instead of class
  logits [B, K]: its `objective` says so (VideoMAE pretraining: 'reconstruct'); the trainer
  then minimises that output's mean and validation reports it as `val_loss`."""
  return getattr(model, "objective", "classify") != "classify"
