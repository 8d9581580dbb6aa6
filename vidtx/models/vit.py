"""Shared transformer pieces: patch embedding, attention, MLP, drop path, pre-norm block.

TokShift, TimeSformer, ViViT and Video Swin build on these; none keeps its own copy.

Parameter layout (what `vidtx.convert` relies on):
  - Dense kernels are `[in, out]`, which is Paddle's `Linear.weight` as is.
  - Conv kernels are HWIO (2D) / DHWIO (3D): Paddle `[out, in, (d,) h, w]` transposed.
  - `attn/qkv` is one Dense `dim -> 3 * dim` whose output is ordered `(3, heads, head_dim)`,
    exactly as Paddle's `qkv.weight`, so it copies without reshuffling.
  - LayerNorm `scale`/`bias` are Paddle's `weight`/`bias`.

Logical axis names shared by every family (vidtx.sharding.DEFAULT_RULES maps them; a family
declares its own extra ones): parameters `embed`, `mlp`, `heads` (the fused qkv output and the
attention projection input), `classes`, `norm` (LayerNorm / BatchNorm); kernel spatial dims,
table rows and the RGB input channels are None. Activations `act_batch`, `act_time`, `act_len`,
`act_embed`, `act_mlp`, `act_heads`.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidtx import messages
from vidtx.errors import VidtxError
from vidtx.models import resize

LN_EPS = 1e-6
ATTENTION_IMPLS = ("xla", "cudnn")
# A ViT that runs on a 4-frame 32x32 clip on a CPU in seconds (the ViT families' tiny variants).
TINY = dict(num_frames=4, image_size=32, patch_size=16, hidden_size=32, depth=2, num_heads=4)

trunc_normal = nn.initializers.truncated_normal

# config.train.remat: what a block keeps for the backward pass (the rest is recomputed).
REMAT_POLICIES = {
    "none": None,  # keep everything (no rematerialisation)
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@functools.cache
def remat_block(cls: type[nn.Module], policy: str) -> type[nn.Module]:
  """`cls` (a block called as `block(x, *, train, **static)`) with its activations recomputed in
  the backward pass under the named policy (jax.checkpoint); same variables, same results."""
  check_choice("model", "remat", policy, tuple(REMAT_POLICIES))
  if policy == "none":
    return cls

  def call(module, x, train, static):
    return cls.__call__(module, x, train=train, **dict(static))

  rematerialised = nn.remat(call, policy=REMAT_POLICIES[policy], static_argnums=(2, 3))

  def __call__(self, x, *, train: bool, **static):  # `train` and callables are static for jax
    return rematerialised(self, x, train, tuple(sorted(static.items())))

  return type(cls.__name__, (cls,), {"__call__": __call__, "__doc__": cls.__doc__})


def run_blocks(parent: nn.Module, cls: type[nn.Module], prefix: str, rates: Sequence[float], x, *,
               train: bool, remat: str = "none", scan: bool = False, **fields_and_static):
  """Applies blocks `{prefix}_i` = cls(drop_path=rates[i], **fields) to x in order.

  `fields_and_static`: the block's constructor fields, and the static keyword arguments of its
  call (those that are not fields, e.g. TokShift's `mix`). `remat`: a REMAT_POLICIES name.
  `scan` (config.train.scan_blocks): once initialised, the blocks run as one `lax.scan` over
  their stacked parameters, so XLA compiles one block instead of `len(rates)`. The variables
  stay `{prefix}_i` (checkpoints, conversions and sharding rules are the same either way;
  nn.scan would stack them into one variable tree); results equal the unrolled blocks', and so
  do gradients, except that dropout / drop-path draw other random numbers.
  """
  names = {f.name for f in dataclasses.fields(cls)}
  fields = {k: v for k, v in fields_and_static.items() if k in names}
  static = {k: v for k, v in fields_and_static.items() if k not in names}
  if not scan or parent.is_initializing() or len(rates) < 2:
    for i, rate in enumerate(rates):
      x = remat_block(cls, remat)(drop_path=rate, **fields, name=f"{prefix}_{i}")(
          x, train=train, **static)
    return x
  params = parent.variables["params"]
  stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves),
                         *[params[f"{prefix}_{i}"] for i in range(len(rates))])
  varying = train and any(rate != rates[0] for rate in rates)
  keys = None
  if train and parent.has_rng("dropout"):
    keys = jax.random.split(parent.make_rng("dropout"), len(rates))

  def body(carry, xs):
    block_params, rate, key = xs
    block = cls(drop_path=rate if varying else rates[0], **fields, parent=None)
    return block.apply({"params": block_params}, carry, train=train,
                       rngs=None if key is None else {"dropout": key}, **static), None

  if remat != "none":
    body = jax.checkpoint(body, policy=REMAT_POLICIES[remat], prevent_cse=False)
  per_block = jnp.asarray(rates, jnp.float32) if varying else None
  x, _ = jax.lax.scan(body, x, (stacked, per_block, keys))
  return x


def compute_dtype(name: str) -> jnp.dtype:
  """'bfloat16' | 'float32' -> dtype (the model's compute dtype; params stay float32)."""
  if name not in ("bfloat16", "float32", "float16"):
    raise VidtxError(f"config.model.dtype={name!r}; expected 'bfloat16' or 'float32'")
  return jnp.dtype(name)


def constrain(x: jax.Array, *names: str | None) -> jax.Array:
  """Logical sharding constraint; a no-op outside a mesh / rules context."""
  return nn.with_logical_constraint(x, names)


def token_names(ndim: int, last: str) -> tuple[str | None, ...]:
  """Logical names for a [batch, (len | spatial dims...), features] activation."""
  if ndim == 3:
    return ("act_batch", "act_len", last)
  return ("act_batch",) + (None,) * (ndim - 2) + (last,)


def check_video(video: jax.Array, model: str) -> None:
  if video.ndim != 5 or video.shape[-1] != 3:
    raise VidtxError(f"{model}: video must be [batch, time, height, width, 3], got shape {video.shape}")


def check_choice(model: str, field: str, value, choices: Sequence) -> None:
  if value not in choices:
    raise VidtxError(f"{model}: {field}={value!r}; expected one of {list(choices)}")


def dense(features: int, names: tuple[str | None, str | None], *, dtype, name: str,
          use_bias: bool = True, kernel_init=trunc_normal(0.02),
          bias_init=nn.initializers.zeros) -> nn.Dense:
  """nn.Dense with float32 params and logical names `names` on the `[in, out]` kernel."""
  return nn.Dense(
      features, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32, name=name,
      kernel_init=nn.with_logical_partitioning(kernel_init, names),
      bias_init=nn.with_logical_partitioning(bias_init, names[1:]))


def layer_norm(*, dtype, name: str, epsilon: float = LN_EPS) -> nn.LayerNorm:
  return nn.LayerNorm(
      epsilon=epsilon, dtype=dtype, param_dtype=jnp.float32, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))


def embedding_param(module: nn.Module, name: str, shape: tuple[int, ...], init=trunc_normal(0.02)):
  """A `[1, ..., embed]` learned embedding (cls token, position / time embedding)."""
  names = (None,) * (len(shape) - 1) + ("embed",)
  return module.param(name, nn.with_logical_partitioning(init, names), shape, jnp.float32)


def fit_embeddings(value: np.ndarray, path: tuple, shape: tuple, name: str, model=None, *,
                   time_cls: bool = False) -> np.ndarray:
  """A checkpoint's position / time embedding -> the model's grid / frame count (a Family hook).

  pos_embed [1, 1 + s*s, D]: the patch grid zoomed linearly (PaddleVideo's load rule), CLS kept;
  time_embed [1, T0, D]: nearest. `time_cls`: the time embedding's first row belongs to a
  temporal CLS token and is kept. Anything else is returned as is.
  """
  del model  # the shapes say it all
  if value.shape == shape or value.ndim != 3 or len(shape) != 3 or value.shape[2] != shape[2]:
    return value
  if path[-1] == "time_embed":
    keep = 1 if time_cls else 0
    messages.say(f"{name}: resizing {value.shape[1] - keep} -> {shape[1] - keep} frames (nearest)")
    return np.concatenate([value[:, :keep], resize.resize_time_embed(value[:, keep:], shape[1] - keep)], 1)
  side = int(round((shape[1] - 1) ** 0.5))
  if path[-1] == "pos_embed" and side * side == shape[1] - 1:
    old = int(round((value.shape[1] - 1) ** 0.5))
    messages.say(f"{name}: resizing the position grid {old}x{old} -> {side}x{side} (linear zoom, "
                 "CLS kept)")
    return resize.resize_pos_embed(value, (side, side), "linear", name)
  return value


# mx-mark/VideoTransformer-pytorch's names for the parts of a pre-norm block (its
# `BasicTransformerBlock`: `attentions.i` = norm + fused-qkv attention, `ffns.0` = norm + MLP).
MXMARK_BLOCK = {("norm1",): "attentions.0.norm", ("attn", "qkv"): "attentions.0.attn.qkv",
                ("attn", "proj"): "attentions.0.attn.proj", ("norm2",): "ffns.0.norm",
                ("mlp", "fc1"): "ffns.0.layers.0.0", ("mlp", "fc2"): "ffns.0.layers.1"}


def mxmark_name(path: tuple, blocks: Mapping[str, str],
                block_parts: Mapping[tuple, str] = MXMARK_BLOCK) -> str | None:
  """Our variable path -> mx-mark's Lightning state-dict name (None: it has no such variable).

  The backbone is `model.`, the classifier `cls_head.cls_head.`; `blocks` maps our block lists
  to theirs ('blocks' -> 'model.transformer_layers.layers'), `block_parts` a block's parts.
  Leaves: kernel / scale -> weight (layouts: vidtx.convert.mxmark).
  """
  *modules, leaf = path[1:]
  leaf = "weight" if leaf in ("kernel", "scale") else leaf
  if modules[:1] == ["head"]:
    return f"cls_head.cls_head.{leaf}"
  if modules == ["patch_embed", "proj"]:
    return f"model.patch_embed.projection.{leaf}"
  block = re.match(r"^(\w+)_(\d+)$", modules[0]) if modules else None
  if block and block[1] in blocks:
    part = block_parts.get(tuple(modules[1:]))
    return f"{blocks[block[1]]}.{block[2]}.{part}.{leaf}" if part else None
  return "model." + ".".join(modules + [leaf])


def dot_product_attention(q, k, v, bias=None, *, impl: str = "xla"):
  """Softmax attention.

  q, k, v: [..., L, heads, head_dim]; bias: broadcastable to [..., heads, Lq, Lk].
  Returns [..., Lq, heads, head_dim]. 'xla' is an einsum with a float32 softmax;
  'cudnn' is jax.nn.dot_product_attention's fused cuDNN kernel (bf16/fp16 on a GPU); elsewhere
  (a CPU or TPU, or float32) the same call falls back to jax.nn's XLA implementation.
  """
  scale = q.shape[-1] ** -0.5
  if impl == "cudnn":
    return _fused_attention(q, k, v, bias, scale)
  # Logits leave the matmul in the compute dtype and are widened for the softmax: asking the
  # matmul for float32 output would make its backward matmuls float32 too.
  logits = jnp.einsum("...qhd,...khd->...hqk", q, k).astype(jnp.float32) * scale
  if bias is not None:
    logits = logits + bias.astype(jnp.float32)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("...hqk,...khd->...qhd", probs, v)


def _fused_attention(q, k, v, bias, scale):
  """jax.nn.dot_product_attention (cuDNN's kernel on a GPU) of [..., L, heads, head_dim] inputs.

  Its inputs are [B, L, N, head_dim] with a bias broadcastable to [B, N, L, L]. Leading dims the
  bias varies over (Swin's windows: the shift mask) join the heads, the others the batch, so the
  bias is never broadcast over the batch: [1, nW * heads, L, L], not [B * nW, heads, L, L].
  """
  lead = q.shape[:-3]
  length, heads, head_dim = q.shape[-3:]
  per_bias = ()
  if bias is not None:
    bias = bias.reshape((1,) * (len(lead) + 3 - bias.ndim) + bias.shape)
    per_bias = tuple(i for i, n in enumerate(bias.shape[:len(lead)]) if n != 1)
  shared = tuple(i for i in range(len(lead)) if i not in per_bias)
  n = len(lead)
  # [*shared, L, *per_bias, heads, head_dim] -> [B, L, N, head_dim]
  order = shared + (n,) + per_bias + (n + 1, n + 2)
  to_batch = lambda a: a.transpose(order).reshape(
      (math.prod(lead[i] for i in shared), length, -1, head_dim))
  if bias is not None:  # [1.., nW.., heads, L, L] -> [1, nW * heads, L, L]
    bias = jnp.broadcast_to(bias, tuple(1 if i in shared else lead[i] for i in range(n))
                            + (heads, length, k.shape[-3]))
    bias = bias.reshape((1, -1) + bias.shape[-2:]).astype(q.dtype)
  fused = jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
  out = jax.nn.dot_product_attention(to_batch(q), to_batch(k), to_batch(v), bias=bias, scale=scale,
                                     implementation="cudnn" if fused else None)
  out = out.reshape(tuple(lead[i] for i in shared) + (length,) + tuple(lead[i] for i in per_bias)
                    + (heads, head_dim))
  return out.transpose(tuple(order.index(i) for i in range(n + 3)))


class DropPath(nn.Module):
  """Stochastic depth: zeroes whole rows of x (leading axis) with prob `rate`, scales the rest by 1/keep.

  As in Paddle/timm, a "sample" is whatever the leading axis holds where it is applied
  (a frame in TokShift, a (video, patch) pair in TimeSformer's temporal branch).
  """
  rate: float

  @nn.compact
  def __call__(self, x, *, train: bool):
    if not train or (isinstance(self.rate, (int, float)) and self.rate == 0.0):
      return x  # (a rate that is an array: scanned blocks with per-block rates, run_blocks)
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros_like(x))


class Attention(nn.Module):
  """Multi-head self-attention with one fused qkv Dense; x: [..., L, D] -> [..., L, D].

  `bias` (optional, [..., heads, L, L]) is added to the logits (Swin's relative position bias
  and shift mask). Subclasses add parameters by overriding `attention_bias`.
  """
  num_heads: int
  qkv_bias: bool = True
  dropout_rate: float = 0.0
  attention_impl: str = "xla"
  dtype: jnp.dtype = jnp.float32

  def attention_bias(self, length: int):
    return None

  @nn.compact
  def __call__(self, x, *, train: bool, bias=None):
    dim = x.shape[-1]
    head_dim = dim // self.num_heads
    qkv = dense(3 * dim, ("embed", "heads"), dtype=self.dtype, use_bias=self.qkv_bias, name="qkv")(x)
    qkv = qkv.reshape(x.shape[:-1] + (3, self.num_heads, head_dim))
    q, k, v = (qkv[..., i, :, :] for i in range(3))
    names = ("act_batch",) + (None,) * (q.ndim - 4) + ("act_len", "act_heads", None)
    q, k, v = (constrain(t, *names) for t in (q, k, v))
    own = self.attention_bias(x.shape[-2])
    if own is not None:
      bias = own if bias is None else own + bias
    out = dot_product_attention(q, k, v, bias, impl=self.attention_impl)
    out = dense(dim, ("heads", "embed"), dtype=self.dtype, name="proj")(out.reshape(x.shape))
    return nn.Dropout(self.dropout_rate)(out, deterministic=not train)


class Mlp(nn.Module):
  """fc1 -> GELU (exact, erf) -> dropout -> fc2 -> dropout; x: [..., D] -> [..., D]."""
  hidden: int
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    dim = x.shape[-1]
    y = dense(self.hidden, ("embed", "mlp"), dtype=self.dtype, name="fc1")(x)
    y = constrain(y, *token_names(y.ndim, "act_mlp"))
    y = nn.Dropout(self.dropout_rate)(nn.gelu(y, approximate=False), deterministic=not train)
    y = dense(dim, ("mlp", "embed"), dtype=self.dtype, name="fc2")(y)
    return nn.Dropout(self.dropout_rate)(y, deterministic=not train)


class PatchEmbed(nn.Module):
  """Non-overlapping patches (2D or 3D tubelets) -> embeddings, optionally followed by LayerNorm.

  x: [N, (T,) H, W, 3] -> [N, (T',) H', W', D]. Kernel HWIO / DHWIO named `proj`.
  """
  embed_dim: int
  patch_size: tuple[int, ...]
  norm: bool = False
  norm_epsilon: float = 1e-5
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    names = (None,) * (len(self.patch_size) + 1) + ("embed",)
    x = nn.Conv(
        self.embed_dim, kernel_size=self.patch_size, strides=self.patch_size, padding="VALID",
        dtype=self.dtype, param_dtype=jnp.float32, name="proj",
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), names),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))(x)
    if self.norm:
      x = layer_norm(dtype=self.dtype, epsilon=self.norm_epsilon, name="norm")(x)
    return x


class Block(nn.Module):
  """Pre-norm transformer block; x: [N, L, D].

  `mix` (optional) is applied to the residual stream before each sub-layer (TokShift's
  token shift): x = mix(x); x += DP(attn(norm1 x)); x = mix(x); x += DP(mlp(norm2 x)).
  """
  num_heads: int
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_path: float = 0.0
  dropout_rate: float = 0.0
  attention_impl: str = "xla"
  norm_epsilon: float = LN_EPS
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool, mix: Callable | None = None):
    mix = mix or (lambda y: y)
    dim = x.shape[-1]
    drop = DropPath(self.drop_path)
    x = mix(x)
    y = layer_norm(dtype=self.dtype, epsilon=self.norm_epsilon, name="norm1")(x)
    y = Attention(self.num_heads, self.qkv_bias, self.dropout_rate, self.attention_impl,
                  self.dtype, name="attn")(y, train=train)
    x = mix(x + drop(y, train=train))
    y = layer_norm(dtype=self.dtype, epsilon=self.norm_epsilon, name="norm2")(x)
    y = Mlp(int(dim * self.mlp_ratio), self.dropout_rate, self.dtype, name="mlp")(y, train=train)
    x = x + drop(y, train=train)
    return constrain(x, "act_batch", "act_len", "act_embed")


def sinusoid_table(positions: int, dim: int) -> np.ndarray:
  """The fixed sine-cosine position table [positions, dim] of MAE / VideoMAE: position p,
  channel j -> sin (j even) / cos (j odd) of p / 10000 ** (2 * (j // 2) / dim) (float64 maths)."""
  angles = np.arange(positions)[:, None] / np.power(10000.0, 2 * (np.arange(dim) // 2) / dim)[None]
  return np.where(np.arange(dim) % 2 == 0, np.sin(angles), np.cos(angles)).astype(np.float32)


def drop_path_rates(rate: float, depth: int) -> list[float]:
  """Stochastic-depth rate per block: linspace(0, rate, depth) as Paddle."""
  return [float(r) for r in np.linspace(0.0, rate, depth)]


class Head(nn.Module):
  """`head/fc`: features [..., D] -> float32 logits [..., num_classes], the matmul in `dtype`
  (init: trunc-normal or normal with `stddev`)."""
  num_classes: int
  stddev: float = 0.02
  truncated: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    init = trunc_normal(self.stddev) if self.truncated else nn.initializers.normal(self.stddev)
    fc = dense(self.num_classes, ("embed", "classes"), dtype=self.dtype, kernel_init=init, name="fc")
    return fc(x.astype(self.dtype)).astype(jnp.float32)
