"""Parameter and multiply-accumulate counts, from the traced program (no real compute).

`count_macs` walks the jaxpr of a function and counts the MACs of every `dot_general` and
`conv_general_dilated` (fvcore convention: matmuls and convolutions only; norms, softmax and
elementwise ops are free). Published video "GFLOPs" are such GMACs.

  python -m vidtx.flops --config configs/videoswin_k400.py:variant=base [--config.model.x=y]
  python -m vidtx.flops --published        # the table in docs/models.md (each family's figures)
"""
from __future__ import annotations

import collections
import math

import flax.linen as nn
import jax
import jax.extend.core as jex
import numpy as np

from vidtx import models

# Primitives whose sub-jaxprs run once per trip; scan's `length` multiplies its body.
_LOOP_LENGTH_PARAM = {"scan": "length"}


def _dot_general_macs(eqn) -> int:
  lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
  (_, rhs_contract), (_, rhs_batch) = eqn.params["dimension_numbers"]
  rhs_free = [d for i, d in enumerate(rhs) if i not in rhs_contract and i not in rhs_batch]
  return math.prod(lhs) * math.prod(rhs_free)


def _conv_macs(eqn) -> int:
  out = eqn.outvars[0].aval.shape
  kernel = eqn.invars[1].aval.shape
  spec = eqn.params["dimension_numbers"].rhs_spec  # (out_feature, in_feature, *spatial)
  # Per output element: kernel window x input features of its group (kernel's in dim).
  return math.prod(out) * math.prod(kernel[i] for i in spec[2:]) * kernel[spec[1]]


def _sub_jaxprs(value):
  if isinstance(value, jex.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jex.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for v in value:
      yield from _sub_jaxprs(v)


def jaxpr_macs(jaxpr) -> collections.Counter:
  """MACs per kind in `jaxpr`: 'matmul' (dot_general without batch dims: dense layers),
  'batched_matmul' (with batch dims: attention's q.k and p.v), 'conv'. Recurses into
  sub-jaxprs (pjit, remat, custom_jvp/vjp; scan x length; cond: its costliest branch)."""
  total = collections.Counter()
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      batched = bool(eqn.params["dimension_numbers"][1][0])
      total["batched_matmul" if batched else "matmul"] += _dot_general_macs(eqn)
    elif name == "conv_general_dilated":
      total["conv"] += _conv_macs(eqn)
    elif name == "cond":
      total += max((jaxpr_macs(b.jaxpr) for b in eqn.params["branches"]), key=lambda c: c.total())
    else:
      trips = eqn.params.get(_LOOP_LENGTH_PARAM.get(name, ""), 1)
      for sub in (j for v in eqn.params.values() for j in _sub_jaxprs(v)):
        for kind, macs in jaxpr_macs(sub).items():
          total[kind] += macs * trips
  return total


def macs_by_kind(fn, *args) -> collections.Counter:
  """MACs of one call `fn(*args)` per kind (see `jaxpr_macs`); args may be ShapeDtypeStructs."""
  return jaxpr_macs(jax.make_jaxpr(fn)(*args).jaxpr)


def count_macs(fn, *args) -> int:
  """Multiply-accumulates of one call `fn(*args)` (matmuls and convolutions, fvcore-style)."""
  return macs_by_kind(fn, *args).total()


def count_params(params) -> int:
  """Number of scalars in a (possibly logically boxed, possibly abstract) parameter tree."""
  leaves = jax.tree_util.tree_leaves(nn.meta.unbox(params))
  return int(sum(math.prod(np.shape(x)) for x in leaves))


def measure(model: nn.Module, num_frames: int, image_size: int,
            batch: int = 1) -> tuple[int, collections.Counter]:
  """(parameters, forward MACs by kind) of `model` on a [batch, T, S, S, 3] clip, abstractly."""
  clip = {"num_frames": num_frames, "image_size": image_size}
  variables = models.abstract_variables(model, clip, batch=batch)
  macs = macs_by_kind(lambda var, v: model.apply(var, v, train=False), variables,
                      models.dummy_video(clip, batch))
  return count_params(variables["params"]), macs


def published() -> list[tuple[str, models.Published]]:
  """(family name, figure) for every published figure of every registered family."""
  return [(name, entry) for name in models.MODELS for entry in models.get_family(name).published]


# Dense bfloat16 peak FLOP/s per JAX device (vendor figures, no sparsity), by a piece of
# `jax.Device.device_kind`; the first match wins (so "H100 PCIe" before "H100"). TPU v2 and v3
# chips (45 and 123 TFLOP/s) are two devices each, one per TensorCore: half a chip each; v4 and
# v5p run their two cores as one megacore device.
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12),
    ("B200", 2250e12), ("A100", 312e12), ("V100", 125e12), ("L4", 121e12),
    ("TPU v2", 22.5e12), ("TPU v3", 61.5e12), ("TPU v4", 275e12), ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12), ("TPU v5", 459e12), ("TPU v6 lite", 918e12), ("TPU v6e", 918e12),
)


def peak_flops(device_kind: str) -> float | None:
  """Dense bf16 peak FLOP/s of one device of this kind, or None where it is not known (CPUs)."""
  return next((peak for name, peak in PEAK_BF16_FLOPS if name.lower() in device_kind.lower()), None)


def train_flops_per_clip(forward_macs: float) -> float:
  """FLOPs of one training clip: 2 FLOPs per MAC, forward + backward = 3 forwards."""
  return 6.0 * forward_macs


def _relative(measured: float, published: float | None) -> str:
  return "—" if not published else f"{100.0 * (measured - published) / published:+.1f}%"


def published_table() -> str:
  """Markdown table: measured vs published params and GMACs for every family's published figures."""
  rows = ["| model | params (ours) | published | Δ | GMACs (ours) | of which attention | published "
          "| Δ | source |", "|---|---|---|---|---|---|---|---|---|"]
  for name, entry in published():
    cfg = dict(entry.model, name=name)
    params, macs = measure(models.build(cfg), cfg["num_frames"], cfg["image_size"])
    gmacs = macs.total() / 1e9
    pub_p, pub_g = entry.params, entry.gmacs
    rows.append(
        f"| {entry.label} | {params / 1e6:.2f}M | {'—' if pub_p is None else f'{pub_p / 1e6:.1f}M'} "
        f"| {_relative(params, pub_p)} | {gmacs:.1f} | {macs['batched_matmul'] / 1e9:.1f} "
        f"| {'—' if pub_g is None else f'{pub_g:g}'} | {_relative(gmacs, pub_g)} | {entry.source} |")
  return "\n".join(rows)


def _main(argv) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from vidtx import cli, messages  # pylint: disable=g-import-not-at-top
  del argv
  f = flags.FLAGS
  if f.published:
    messages.say(published_table())
    return
  cli.require(f, "config")
  model_config = f.config.model
  params, macs = measure(models.build(model_config), model_config.num_frames,
                         model_config.image_size, f.batch)
  messages.say(f"model {model_config.name}: {model_config.num_frames}x{model_config.image_size}, "
               f"batch {f.batch}")
  messages.say(f"params {params:,} ({params / 1e6:.2f}M)")
  messages.say(f"forward GMACs {macs.total() / 1e9:.4g} (attention matmuls "
               f"{macs['batched_matmul'] / 1e9:.4g}; GFLOPs = 2 x GMACs, a train step ~ 3 x forward)")


def main() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from vidtx import cli  # pylint: disable=g-import-not-at-top
  cli.define_config_flag()
  flags.DEFINE_integer("batch", 1, "Clips per forward pass.")
  flags.DEFINE_bool("published", False, "Print the measured-vs-published table of the model zoo.")
  cli.run(_main)


if __name__ == "__main__":
  main()
