"""Parameter and multiply-accumulate counts, from the traced program (no real compute).

`count_macs` walks the jaxpr of a function and counts the MACs of every `dot_general` and
`conv_general_dilated` (fvcore convention: matmuls and convolutions only; norms, softmax and
elementwise ops are free). Published video "GFLOPs" are such GMACs.

  python -m vidtx.flops --config configs/videoswin_k400.py:variant=base
  python -m vidtx.flops --published        # the table in docs/models.md
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import math
import os
import sys

import flax.linen as nn
import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np

from vidtx.errors import VidtxError

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
  video = jax.ShapeDtypeStruct((batch, num_frames, image_size, image_size, 3), jnp.float32)
  variables = jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=False), video)
  macs = macs_by_kind(lambda var, v: model.apply(var, v, train=False), variables, video)
  return count_params(variables["params"]), macs


# Published (params, GMACs) for one clip / one view, and where they come from.
PUBLISHED = (
    dict(label="TimeSformer-B divided 8x224", params=121.4e6, gmacs=196.0,
         source="TimeSformer paper; mmaction2 metafile (588G = 3 views)",
         model=dict(name="timesformer", num_classes=400, num_frames=8, image_size=224)),
    dict(label="PP-TimeSformer-B (no qkv bias) 8x224", params=None, gmacs=None,
         source="not published separately (PaddleVideo: 'without increasing parameters')",
         model=dict(name="timesformer", num_classes=400, num_frames=8, image_size=224, qkv_bias=False)),
    dict(label="PP-TimeSformer-B (no qkv bias) 16x224", params=None, gmacs=None,
         source="not published", model=dict(name="timesformer", num_classes=400, num_frames=16,
                                            image_size=224, qkv_bias=False)),
    dict(label="TimeSformer-B space-only 8x224", params=None, gmacs=141.0,
         source="analytic recount in reference/performance.md (not a published figure)",
         model=dict(name="timesformer", num_classes=400, num_frames=8, image_size=224,
                    attention_type="space_only")),
    dict(label="TimeSformer-B joint 8x224", params=None, gmacs=180.0,
         source="analytic recount in reference/performance.md (not a published figure)",
         model=dict(name="timesformer", num_classes=400, num_frames=8, image_size=224,
                    attention_type="joint_space_time")),
    dict(label="TokShift-B 8x256 (UCF101)", params=86.0e6, gmacs=175.8,
         source="TokShift-Transformer README (GFLOPs); SPEC.md ~86M; counts no attention matmuls",
         model=dict(name="tokshift", num_classes=101, num_frames=8, image_size=256)),
    dict(label="ViViT-B FE 32x224", params=115.1e6, gmacs=284.4,
         source="ViViT paper (as quoted in reference/performance.md)",
         model=dict(name="vivit", num_classes=400, num_frames=32, image_size=224)),
    dict(label="Swin-T 32x224", params=28.2e6, gmacs=88.0, source="Video Swin paper; mmaction2",
         model=dict(name="swin", num_classes=400, num_frames=32, image_size=224, embed_dim=96,
                    depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))),
    dict(label="Swin-S 32x224", params=50.0e6, gmacs=166.0, source="Video Swin paper (~50M)",
         model=dict(name="swin", num_classes=400, num_frames=32, image_size=224, embed_dim=96,
                    depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))),
    dict(label="Swin-B 32x224", params=88.0e6, gmacs=282.0, source="Video Swin paper; mmaction2",
         model=dict(name="swin", num_classes=400, num_frames=32, image_size=224, embed_dim=128,
                    depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))),
    dict(label="PP-TSM R50 8x224", params=24.3e6, gmacs=33.0,
         source="mmaction2 TSM-R50 metafile (plain ResNet-50 7x7 stem, not -vd)",
         model=dict(name="tsm", num_classes=400, num_frames=8, image_size=224, depth=50)),
    dict(label="PP-TSM R101 8x224", params=None, gmacs=None,
         source="not published (torchvision ResNet-101 x 8 frames: 7.8 GMACs x 8 = 62.6, plain stem)",
         model=dict(name="tsm", num_classes=400, num_frames=8, image_size=224, depth=101)),
)


# Dense bfloat16 peak FLOP/s per device (vendor figures, no sparsity), by a piece of
# `jax.Device.device_kind`; the first match wins (so "H100 PCIe" before "H100").
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12),
    ("B200", 2250e12), ("A100", 312e12), ("V100", 125e12), ("L4", 121e12),
    ("TPU v2", 45e12), ("TPU v3", 123e12), ("TPU v4", 275e12), ("TPU v5 lite", 197e12),
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
  """Markdown table: measured vs published params and GMACs for every entry of PUBLISHED."""
  from vidtx import models
  rows = ["| model | params (ours) | published | Δ | GMACs (ours) | of which attention | published "
          "| Δ | source |", "|---|---|---|---|---|---|---|---|---|"]
  for entry in PUBLISHED:
    cfg = dict(entry["model"])
    params, macs = measure(models.build(cfg), cfg["num_frames"], cfg["image_size"])
    gmacs = macs.total() / 1e9
    pub_p, pub_g = entry["params"], entry["gmacs"]
    rows.append(
        f"| {entry['label']} | {params / 1e6:.2f}M | {'—' if pub_p is None else f'{pub_p / 1e6:.1f}M'} "
        f"| {_relative(params, pub_p)} | {gmacs:.1f} | {macs['batched_matmul'] / 1e9:.1f} "
        f"| {'—' if pub_g is None else f'{pub_g:g}'} | {_relative(gmacs, pub_g)} | {entry['source']} |")
  return "\n".join(rows)


def load_config(spec: str):
  """'path/to/config.py[:arg]' -> get_config(arg), as train.py reads --config."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise VidtxError(f"--config {path!r}: no such file (expected configs/<name>.py[:args])")
  module_spec = importlib.util.spec_from_file_location("vidtx_flops_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise VidtxError(f"--config {path!r} has no get_config(arg) function")
  return module.get_config(arg or None)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m vidtx.flops", description=__doc__.split("\n")[0])
  parser.add_argument("--config", help="config file, optionally with :arguments")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--published", action="store_true",
                      help="print the measured-vs-published table for the model zoo")
  args = parser.parse_args(argv)
  if args.published:
    print(published_table())
    return 0
  if not args.config:
    parser.error("give --config or --published")
  from vidtx import models
  try:
    model_config = load_config(args.config).model
    params, macs = measure(models.build(model_config), model_config.num_frames,
                           model_config.image_size, args.batch)
  except VidtxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"model {model_config.name}: {model_config.num_frames}x{model_config.image_size}, "
        f"batch {args.batch}")
  print(f"params {params:,} ({params / 1e6:.2f}M)")
  print(f"forward GMACs {macs.total() / 1e9:.4g} (attention matmuls {macs['batched_matmul'] / 1e9:.4g}; "
        f"GFLOPs = 2 x GMACs, a train step ~ 3 x forward)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
