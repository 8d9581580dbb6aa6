"""Optimizers and learning-rate schedules, assembled from `config.optim` with optax.

Order of the chain (Paddle's): clip the gradient norm, add coupled L2 decay
(SGD), the optimizer with its schedule, per-parameter LR multipliers (`lr_mults`, then
layer-wise decay `layer_decay`), all on the trainable parameters only (`freeze`,
`linear_probe`: frozen ones get no update, no optimizer state and no weight decay), then
stochastic weight averaging (`swa`, when `config.optim.swa` sets a start).
Weight decay follows a cosine from `weight_decay` to `weight_decay_end` where that is set.
Durations are given as `<name>_steps` or `<name>_epochs` (big_vision style).
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from vidtx import messages
from vidtx.errors import VidtxError


def to_steps(section, name: str, steps_per_epoch: int, default=None) -> int | None:
  """Reads `<name>_steps` or `<name>_epochs` from a config section, in steps."""
  steps, epochs = section[f"{name}_steps"], section[f"{name}_epochs"]
  if steps is not None and epochs is not None:
    raise VidtxError(f"give only one of {name}_steps and {name}_epochs")
  if steps is not None:
    return int(steps)
  if epochs is not None:
    return int(round(float(epochs) * steps_per_epoch))
  return default


def make_schedule(optim_config, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
  """The learning rate per optimizer step.

  `warmup_cosine`: linear warmup from `warmup_init_lr` to `lr`, then cosine to `end_lr`.
  `paddle_warmup_cosine`: PaddleVideo's CustomWarmupCosineDecay (cosine over the whole run,
  the warmup joins it where the warmup ends).
  `multistep`: `lr * gamma**k` after the k-th milestone (`milestones_epochs` or `_steps`).
  `constant`: `lr`.
  """
  lr = float(optim_config.lr)
  kind = optim_config.schedule
  warmup = to_steps(optim_config, "warmup", steps_per_epoch, default=0)
  if kind == "constant":
    base = optax.constant_schedule(lr)
  elif kind == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=float(optim_config.warmup_init_lr), peak_value=lr,
        warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1),
        end_value=float(optim_config.end_lr))
  elif kind == "paddle_warmup_cosine":
    # PaddleVideo's CustomWarmupCosineDecay: one cosine over the whole run, starting at step 0;
    # the warmup ramps linearly up to the cosine's value where the warmup ends (no restart).
    cosine = optax.cosine_decay_schedule(lr, max(total_steps, 1), alpha=0.0)
    if not warmup:
      return cosine
    ramp = optax.linear_schedule(float(optim_config.warmup_init_lr), cosine(warmup), warmup)
    return lambda step: jnp.where(step < warmup, ramp(step), cosine(step))
  elif kind == "multistep":
    if optim_config.milestones_epochs is not None:
      milestones = [int(round(e * steps_per_epoch)) for e in optim_config.milestones_epochs]
    else:
      milestones = [int(s) for s in optim_config.milestones_steps or ()]
    gamma = float(optim_config.gamma)
    base = optax.piecewise_constant_schedule(lr, {m: gamma for m in milestones})
  else:
    raise VidtxError(
        f"config.optim.schedule={kind!r} is not a schedule; use constant, warmup_cosine, "
        "paddle_warmup_cosine or multistep")
  if not warmup:
    return base
  warmup_fn = optax.linear_schedule(float(optim_config.warmup_init_lr), lr, warmup)
  return optax.join_schedules([warmup_fn, base], [warmup])


def _path_tree(params) -> dict:
  """The same tree with each leaf replaced by its '/'-joined path (for regex rules); frozen
  places (optax.MaskedNode, see `only_trainable`) stay as they are."""
  flat = traverse_util.flatten_dict(params, sep="/")
  return traverse_util.unflatten_dict(
      {k: v if isinstance(v, optax.MaskedNode) else k for k, v in flat.items()}, sep="/")


def decay_mask(params, optim_config) -> object:
  """True where weight decay applies: not matching any `no_decay` regex (and not 1-D if asked)."""
  patterns = [re.compile(p) for p in optim_config.no_decay]
  skip_1d = bool(optim_config.no_decay_1d)
  paths = _path_tree(params)
  return jax.tree.map(
      lambda path, p: not (any(r.search(path) for r in patterns) or (skip_1d and p.ndim <= 1)),
      paths, params)


def lr_multipliers(params, optim_config) -> object:
  """Per-parameter LR multiplier: the first matching `lr_mults` rule [regex, mult], else 1."""
  rules = [(re.compile(p), float(m)) for p, m in optim_config.lr_mults]

  def mult(path):
    return next((m for r, m in rules if r.search(path)), 1.0)

  return jax.tree.map(mult, _path_tree(params))


def scale_by_tree(multipliers) -> optax.GradientTransformation:
  """Multiplies each update by a fixed per-parameter factor (LR multipliers)."""

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: u * m, updates, multipliers), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def make_weight_decay_schedule(optim_config, total_steps: int) -> optax.Schedule:
  """The weight decay per step: `weight_decay`, or a cosine from it to `weight_decay_end` over
  the run where that is set (mx-mark / DINO's schedule; mx-mark steps it once per epoch)."""
  start, end = float(optim_config.weight_decay), optim_config.weight_decay_end
  if end is None:
    return optax.constant_schedule(start)
  end, total = float(end), max(int(total_steps), 1)
  return lambda step: end + (start - end) * 0.5 * (1.0 + jnp.cos(math.pi * jnp.minimum(step, total) / total))


class DecayState(NamedTuple):
  count: jax.Array  # updates seen (the weight-decay schedule's step)


def add_scheduled_decayed_weights(schedule: optax.Schedule, mask) -> optax.GradientTransformation:
  """updates + schedule(step) * params where `mask` (a tree of bools) is True."""

  def init(params):
    del params
    return DecayState(jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    if params is None:
      raise VidtxError("weight decay needs the parameters: call tx.update(grads, state, params)")
    wd = schedule(state.count)
    updates = jax.tree.map(lambda u, p, m: u + (wd * p).astype(u.dtype) if m else u,
                           updates, params, mask)
    return updates, DecayState(state.count + 1)

  return optax.GradientTransformation(init, update)


def layer_depths(params, block_lists: Sequence[str]) -> tuple[Any, int]:
  """(tree of each parameter's depth, number of blocks) for layer-wise LR decay.

  Blocks are the top-level modules `<list>_<i>` of the family's `block_lists`, input to output
  (ViViT: the spatial `blocks_i`, then the `temporal_blocks_i`): block k of that sequence is at
  depth k + 1; embeddings (`*embed*`, `*token*`: patch / position / time embeddings, class
  tokens) at 0; everything else (final norms, head) at n + 1 (BEiT / mx-mark's rule).
  """
  pattern = re.compile(r"^(\w+)_(\d+)$")
  paths = traverse_util.flatten_dict(params)
  counts = {name: 0 for name in block_lists}
  for path in paths:
    m = pattern.match(path[0])
    if m and m[1] in counts:
      counts[m[1]] = max(counts[m[1]], int(m[2]) + 1)
  offsets, total = {}, 0
  for name in block_lists:
    offsets[name], total = total, total + counts[name]

  def depth(path):
    m = pattern.match(path[0])
    if m and m[1] in offsets:
      return offsets[m[1]] + int(m[2]) + 1
    return 0 if ("embed" in path[0] or "token" in path[0]) else total + 1

  return traverse_util.unflatten_dict(
      {p: v if isinstance(v, optax.MaskedNode) else depth(p) for p, v in paths.items()}), total


def layer_decay_multipliers(params, decay: float, block_lists: Sequence[str]):
  """LR multiplier decay ** (n + 1 - depth) per parameter (`layer_depths`): the head and final
  norm train at the full rate, each block below at `decay` times the one above."""
  depths, total = layer_depths(params, block_lists)
  if not total:
    raise VidtxError(f"config.optim.layer_decay={decay}: the model has no transformer blocks "
                     f"({list(block_lists) or 'its family declares none'}); set it to 1.0")
  return jax.tree.map(lambda d: float(decay) ** (total + 1 - d), depths)


def trainable_mask(params, optim_config):
  """True for the parameters that train: those matching no `freeze` regex ('/'-joined paths);
  `linear_probe` freezes everything but the classifier (`head/`)."""
  patterns = list(optim_config.freeze)
  if optim_config.linear_probe:
    patterns.append(r"^(?!head/)")
  compiled = [re.compile(p) for p in patterns]
  paths = ["/".join(p) for p in traverse_util.flatten_dict(params)]
  for pattern, regex in zip(patterns, compiled):
    if not any(regex.search(path) for path in paths):
      raise VidtxError(f"config.optim.freeze: {pattern!r} matches no parameter "
                       f"(they look like {paths[:3]})")
  mask = jax.tree.map(lambda path: not any(r.search(path) for r in compiled), _path_tree(params))
  if not any(jax.tree.leaves(mask)):
    raise VidtxError("config.optim.freeze / linear_probe freeze every parameter: nothing would train")
  return mask


def _masked(tree, keep: dict):
  """`tree` (nested dicts) with optax.MaskedNode (an empty pytree) where `keep` is False."""
  return traverse_util.unflatten_dict(
      {k: v if keep[k] else optax.MaskedNode() for k, v in traverse_util.flatten_dict(tree).items()})


def only_trainable(inner: optax.GradientTransformation, mask) -> optax.GradientTransformation:
  """`inner` on the parameters where `mask` is True; the others get zero updates and no state
  (so no momentum, Adam moments or weight decay), and take no part in `inner`'s gradient norm.
  `inner` sees optax.MaskedNode in their places (as under optax.masked), so its own per-parameter
  trees must be built on `_masked` parameters."""
  keep = traverse_util.flatten_dict(mask)

  def init(params):
    if not isinstance(params, dict):  # optax.tree_map_params' placeholder
      return inner.init(params)
    return inner.init(_masked(params, keep))

  def update(updates, state, params=None):
    sub, state = inner.update(_masked(updates, keep), state,
                              None if params is None else _masked(params, keep))
    flat, new = traverse_util.flatten_dict(updates), traverse_util.flatten_dict(sub)
    full = {k: new[k] if keep[k] else jnp.zeros_like(v) for k, v in flat.items()}
    return traverse_util.unflatten_dict(full), state

  return optax.GradientTransformation(init, update)


class SwaState(NamedTuple):
  step: jax.Array  # updates seen
  count: jax.Array  # weights averaged so far
  average: Any  # running mean of the weights after the averaged steps (float32, like params)


def swa(start_step: int, every_steps: int = 1) -> optax.GradientTransformation:
  """Stochastic weight averaging (Izmailov et al.) as the last link of an optax chain.

  Leaves the updates alone and keeps, in its state, the running mean of the weights
  after update k for k = start_step, start_step + every_steps, ... (k counts from 1).
  `swa_average(opt_state)` reads it.
  """
  if start_step < 1 or every_steps < 1:
    raise VidtxError(f"SWA needs start >= 1 and every >= 1 step, got {start_step}, {every_steps}")

  def init(params):
    return SwaState(jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32),
                    optax.tree_utils.tree_zeros_like(params))

  def update(updates, state, params=None):
    if params is None:
      raise VidtxError("SWA needs the parameters: call tx.update(grads, state, params)")
    step = state.step + 1
    take = (step >= start_step) & ((step - start_step) % every_steps == 0)
    weight = jnp.where(take, 1.0 / (state.count + 1).astype(jnp.float32), 0.0)
    new_params = optax.apply_updates(params, updates)
    average = jax.tree.map(lambda a, p: a + weight * (p.astype(a.dtype) - a), state.average,
                           new_params)
    return updates, SwaState(step, state.count + take.astype(jnp.int32), average)

  return optax.GradientTransformation(init, update)


def swa_average(opt_state) -> tuple[jax.Array, Any] | None:
  """(number of weights averaged, their mean) from an optimizer state with `swa`; else None."""
  is_swa = lambda node: isinstance(node, SwaState)
  states = [node for node in jax.tree.leaves(opt_state, is_leaf=is_swa) if is_swa(node)]
  return (states[0].count, states[0].average) if states else None


def moments_dtype(optim_config) -> jnp.dtype | None:
  """config.optim.moments_dtype: the momentum / Adam first-moment dtype (None: the parameters').

  Adam's second moment stays float32: optax gives the first moment only a dtype, and the
  second's updates ((1 - b2) g^2 with b2 = 0.999, ~0.1 % of it) are below bfloat16's precision.
  """
  name = optim_config.moments_dtype
  if name not in ("float32", "bfloat16"):
    raise VidtxError(f"config.optim.moments_dtype={name!r}; use 'float32' or 'bfloat16'")
  return jnp.bfloat16 if name == "bfloat16" else None


def make_optimizer(optim_config, params, schedule: optax.Schedule, steps_per_epoch: int = 1, *,
                   total_steps: int = 1, block_lists: Sequence[str] = ()) -> optax.GradientTransformation:
  """The optax chain for `config.optim` (`name`: sgd | adamw; `swa`: see `swa`).

  `total_steps`: the run's length (the weight-decay schedule); `block_lists`: the model family's
  transformer blocks (`Family.block_lists`, for `layer_decay`).
  """
  name = optim_config.name
  trainable = trainable_mask(params, optim_config)
  params = _masked(params, traverse_util.flatten_dict(trainable))
  wd_schedule = make_weight_decay_schedule(optim_config, total_steps)
  scheduled_wd = optim_config.weight_decay_end is not None
  wd = float(optim_config.weight_decay)
  mask = decay_mask(params, optim_config)
  moments = moments_dtype(optim_config)
  parts = []
  if optim_config.clip_grad_norm:
    parts.append(optax.clip_by_global_norm(float(optim_config.clip_grad_norm)))
  if name == "sgd":
    if scheduled_wd:
      parts.append(add_scheduled_decayed_weights(wd_schedule, mask))
    elif wd:  # coupled L2, as Paddle's `L2Decay` regularizer
      parts.append(optax.add_decayed_weights(wd, mask))
    parts.append(optax.sgd(schedule, momentum=optim_config.momentum or None,
                           nesterov=bool(optim_config.nesterov), accumulator_dtype=moments))
  elif name == "adamw":
    if scheduled_wd:  # optax.adamw's own chain with the decay on a schedule (decoupled)
      parts += [optax.scale_by_adam(b1=optim_config.b1, b2=optim_config.b2, eps=optim_config.eps,
                                    mu_dtype=moments),
                add_scheduled_decayed_weights(wd_schedule, mask),
                optax.scale_by_learning_rate(schedule)]
    else:
      parts.append(optax.adamw(schedule, b1=optim_config.b1, b2=optim_config.b2,
                               eps=optim_config.eps, weight_decay=wd, mask=mask, mu_dtype=moments))
  else:
    raise VidtxError(f"config.optim.name={name!r} is not an optimizer; use sgd or adamw")
  if optim_config.lr_mults:
    parts.append(scale_by_tree(lr_multipliers(params, optim_config)))
  if float(optim_config.layer_decay) != 1.0:
    multipliers = layer_decay_multipliers(params, optim_config.layer_decay, block_lists)
    parts.append(scale_by_tree(multipliers))
    low = min(jax.tree.leaves(multipliers))
    messages.say(f"layer-wise LR decay {optim_config.layer_decay}: learning-rate multipliers "
                 f"from {low:.3g} (embeddings) to 1 (head)")
  if not all(jax.tree.leaves(trainable)):
    parts = [only_trainable(optax.chain(*parts), trainable)]
    flat = traverse_util.flatten_dict(trainable)
    frozen = ["/".join(k) for k, v in flat.items() if not v]
    messages.say(f"{len(frozen)} of {len(flat)} parameter arrays frozen (config.optim.freeze"
                 f"{' / linear_probe' if optim_config.linear_probe else ''}): "
                 + ", ".join(frozen[:6]) + (", ..." if len(frozen) > 6 else ""))
  if scheduled_wd:
    messages.say(f"weight decay: cosine from {wd} to {optim_config.weight_decay_end} over "
                 f"{total_steps} steps")
  swa_config = optim_config.swa
  swa_start = to_steps(swa_config, "start", steps_per_epoch)
  if swa_start is not None:
    parts.append(swa(swa_start, to_steps(swa_config, "every", steps_per_epoch, default=1)))
  return optax.chain(*parts)
