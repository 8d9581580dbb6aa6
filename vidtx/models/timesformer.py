"""TimeSformer and PP-TimeSformer (PaddleVideo `VisionTransformer` / `VisionTransformer_tweaks`).

attention_type:
  - 'divided_space_time': temporal attention over each patch's T tokens (no CLS), a
    zero-initialised `temporal_fc`, then spatial attention per frame with the global CLS
    replicated into every frame and its outputs averaged over T; then the MLP.
  - 'joint_space_time': plain attention over the CLS and all T*N patch tokens.
  - 'space_only': a ViT per frame with a per-frame CLS; the token arrays are averaged over
    frames before the final LayerNorm. No time embedding, so it is invariant to frame order
    (the "temporal mixing off" baseline).
Tokens are ordered (h, w, t), time fastest, as in Paddle. `time_embed` [1, num_frames, D]
is nearest-interpolated when the clip has a different frame count. PP-TimeSformer is
`qkv_bias=False`. `tubelet_size` > 1 embeds tubelets of that many frames (mx-mark's
`conv_type='Conv3d'`); time then counts tubelets (`time_embed` [1, num_frames / tubelet, D]).
`norm_epsilon` is the LayerNorm eps inside the blocks (Paddle 1e-6, mx-mark 1e-5); the final
`norm` is always 1e-6.

Parameter names (Paddle `backbone.X` / `head.X` -> ours; '.' -> '/', `blocks.i` -> `blocks_i`):
  cls_token, pos_embed [1,1+N,D], time_embed [1,T,D] (not in space_only),
  patch_embed/proj/{kernel HWIO, bias}, blocks_i/{norm1,norm2,temporal_norm1}/{scale,bias},
  blocks_i/{attn,temporal_attn}/{qkv,proj}/{kernel [in,out], bias},
  blocks_i/temporal_fc/{kernel,bias}, blocks_i/mlp/{fc1,fc2}, norm, head/fc.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from vidtx.errors import VidtxError
from vidtx.models import explain, resize, vit
from vidtx.models.family import Family, Published

ATTENTION_TYPES = ("divided_space_time", "space_only", "joint_space_time")


class DividedBlock(nn.Module):
  """Divided space-time block. x: [B, 1 + N*T, D], tokens (n, t) with t fastest."""
  num_frames: int
  num_heads: int
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_path: float = 0.0
  dropout_rate: float = 0.0
  attention_impl: str = "xla"
  norm_epsilon: float = vit.LN_EPS
  dtype: jnp.dtype = jnp.float32

  def norm(self, name: str):
    return vit.layer_norm(dtype=self.dtype, epsilon=self.norm_epsilon, name=name)

  def attention(self, name: str):
    return vit.Attention(self.num_heads, self.qkv_bias, self.dropout_rate, self.attention_impl,
                         self.dtype, name=name)

  @nn.compact
  def __call__(self, x, *, train: bool):
    b, length, d = x.shape
    t = self.num_frames
    n = (length - 1) // t
    drop = vit.DropPath(self.drop_path)
    cls, patches = x[:, :1], x[:, 1:]

    # Temporal: each patch attends over its T frames; the CLS token does not take part.
    xt = patches.reshape(b * n, t, d)
    res = drop(self.attention("temporal_attn")(
        self.norm("temporal_norm1")(xt), train=train), train=train)
    res = vit.dense(d, ("heads", "embed"), dtype=self.dtype,
                    kernel_init=nn.initializers.zeros, name="temporal_fc")(res.reshape(b, n * t, d))
    patches = patches + res

    # Spatial: per frame, with the global CLS replicated into every frame.
    xs = patches.reshape(b, n, t, d).transpose(0, 2, 1, 3).reshape(b * t, n, d)
    xs = jnp.concatenate([jnp.repeat(cls, t, axis=0), xs], axis=1)
    res = drop(self.attention("attn")(self.norm("norm1")(xs), train=train),
               train=train)
    res_cls = res[:, :1].reshape(b, t, d).mean(axis=1, keepdims=True)
    res_patches = res[:, 1:].reshape(b, t, n, d).transpose(0, 2, 1, 3).reshape(b, n * t, d)
    x = jnp.concatenate([cls + res_cls, patches + res_patches], axis=1)

    y = self.norm("norm2")(x)
    y = vit.Mlp(int(d * self.mlp_ratio), self.dropout_rate, self.dtype, name="mlp")(y, train=train)
    x = x + drop(y, train=train)
    return vit.constrain(x, "act_batch", "act_len", "act_embed")


class TimeSformer(nn.Module):
  """video [B, T, H, W, 3] -> logits [B, num_classes] (float32)."""
  num_classes: int = 400
  num_frames: int = 8
  image_size: int = 224
  dtype: str = "bfloat16"
  attention_type: str = "divided_space_time"
  patch_size: int = 16
  tubelet_size: int = 1  # > 1: Conv3d tubelets of this many frames (mx-mark's conv_type='Conv3d')
  hidden_size: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_path_rate: float = 0.1
  dropout_rate: float = 0.0
  norm_epsilon: float = vit.LN_EPS
  attention_impl: str = "xla"
  remat: str = "none"  # set from config.train.remat by the trainer (vit.REMAT_POLICIES)
  scan_blocks: bool = False  # set from config.train.scan_blocks by the trainer (vit.run_blocks)

  @nn.compact
  def __call__(self, video, *, train: bool):
    vit.check_video(video, "timesformer")
    vit.check_choice("timesformer", "attention_type", self.attention_type, ATTENTION_TYPES)
    vit.check_choice("timesformer", "attention_impl", self.attention_impl, vit.ATTENTION_IMPLS)
    dtype = vit.compute_dtype(self.dtype)
    b, t, h, w, _ = video.shape
    if t % self.tubelet_size:
      raise VidtxError(f"timesformer: {t} frames is not a multiple of tubelet_size={self.tubelet_size}")
    d = self.hidden_size
    video = vit.constrain(video.astype(dtype), "act_batch", "act_time", None, None, None)
    grid = (self.image_size // self.patch_size,) * 2
    if self.tubelet_size == 1:  # a 2D patch embedding of each frame (Conv2d)
      x = vit.PatchEmbed(d, (self.patch_size,) * 2, dtype=dtype, name="patch_embed")(
          video.reshape(b * t, h, w, 3))
    else:  # tubelets (Conv3d): the transformer sees t / tubelet_size time steps
      x = vit.PatchEmbed(d, (self.tubelet_size, self.patch_size, self.patch_size), dtype=dtype,
                         name="patch_embed")(video)
      t //= self.tubelet_size
    x = x.reshape(b * t, -1, d)
    n = x.shape[1]
    cls = vit.embedding_param(self, "cls_token", (1, 1, d))
    pos = vit.embedding_param(self, "pos_embed", (1, 1 + grid[0] * grid[1], d))
    pos = resize.resize_pos_embed(pos, (h // self.patch_size, w // self.patch_size)).astype(dtype)
    dropout = nn.Dropout(self.dropout_rate)
    space_only = self.attention_type == "space_only"
    if space_only:
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(dtype), (b * t, 1, d)), x], axis=1) + pos
      x = dropout(x, deterministic=not train)
    else:
      # One global CLS (Paddle takes it from the first frame rows, all equal to cls + pos[0]).
      cls = jnp.broadcast_to((cls.astype(dtype) + pos[:, :1]), (b, 1, d))
      patches = (x + pos[:, 1:]).reshape(b, t, n, d).transpose(0, 2, 1, 3)
      steps = self.num_frames // self.tubelet_size
      time = resize.resize_time_embed(vit.embedding_param(self, "time_embed", (1, steps, d),
                                                       nn.initializers.zeros), t)
      patches = patches + time[:, None].astype(dtype)
      x = jnp.concatenate([cls, patches.reshape(b, n * t, d)], axis=1)
      x = dropout(x, deterministic=not train)
    x = vit.constrain(x, "act_batch", "act_len", "act_embed")

    divided = self.attention_type == "divided_space_time"
    x = vit.run_blocks(
        self, DividedBlock if divided else vit.Block, "blocks",
        vit.drop_path_rates(self.drop_path_rate, self.depth), x, train=train, remat=self.remat,
        scan=self.scan_blocks, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio,
        qkv_bias=self.qkv_bias, dropout_rate=self.dropout_rate, attention_impl=self.attention_impl,
        norm_epsilon=self.norm_epsilon, dtype=dtype, **({"num_frames": t} if divided else {}))

    if space_only:
      x = x.reshape(b, t, n + 1, d).mean(axis=1)
    x = vit.layer_norm(dtype=dtype, name="norm")(x)[:, 0]
    return vit.Head(self.num_classes, dtype=dtype, name="head")(x)


# mx-mark's divided block: `attentions.0` is the temporal attention (with `temporal_fc`), which
# runs first, `attentions.1` the spatial one; joint / space-only blocks have only `attentions.0`.
_MXMARK_DIVIDED = {
    **vit.MXMARK_BLOCK,
    ("temporal_norm1",): "attentions.0.norm", ("temporal_attn", "qkv"): "attentions.0.attn.qkv",
    ("temporal_attn", "proj"): "attentions.0.attn.proj", ("temporal_fc",): "attentions.0.temporal_fc",
    ("norm1",): "attentions.1.norm", ("attn", "qkv"): "attentions.1.attn.qkv",
    ("attn", "proj"): "attentions.1.attn.proj"}


def mxmark_name(path: tuple, model: TimeSformer) -> str | None:
  """Our variable path -> mx-mark's name (`model.transformer_layers.layers.N.…`)."""
  parts = _MXMARK_DIVIDED if model.attention_type == "divided_space_time" else vit.MXMARK_BLOCK
  return vit.mxmark_name(path, {"blocks": "model.transformer_layers.layers"}, parts)


def cls_attention_map(model: TimeSformer, variables, video, *, data_config=None) -> explain.Maps:
  """The last block's CLS attention: over space and time (joint; tokens time fastest), else in
  each frame (divided, space-only), frames weighing equally as the CLS takes their mean.
  video: float [1, T, H, W, 3]."""
  joint = model.attention_type == "joint_space_time"
  last = explain.last_qkv("blocks", model.depth)
  return explain.cls_attention_maps(model, variables, video, last,
                                    layout="time_fastest" if joint else "frames",
                                    frames_per_step=model.tubelet_size)


_B8 = dict(num_classes=400, num_frames=8, image_size=224)
FAMILY = Family(
    module=TimeSformer,
    tiny={"divided": vit.TINY, "space_only": dict(vit.TINY, attention_type="space_only"),
          "joint": dict(vit.TINY, attention_type="joint_space_time"),
          "pptimesformer": dict(vit.TINY, qkv_bias=False),
          "tubelet": dict(vit.TINY, tubelet_size=2, norm_epsilon=1e-5)},
    published=(
        Published("TimeSformer-B divided 8x224", _B8, params=121.4e6, gmacs=196.0,
                  source="TimeSformer paper; mmaction2 metafile (588G = 3 views)"),
        Published("PP-TimeSformer-B (no qkv bias) 8x224", dict(_B8, qkv_bias=False), None, None,
                  source="not published separately (PaddleVideo: 'without increasing parameters')"),
        Published("PP-TimeSformer-B (no qkv bias) 16x224", dict(_B8, num_frames=16, qkv_bias=False),
                  None, None, source="not published"),
        Published("TimeSformer-B space-only 8x224", dict(_B8, attention_type="space_only"), None,
                  gmacs=141.0, source="our analytic recount (not a published figure)"),
        Published("TimeSformer-B joint 8x224", dict(_B8, attention_type="joint_space_time"), None,
                  gmacs=180.0, source="our analytic recount (not a published figure)"),
    ),
    fit_checkpoint=vit.fit_embeddings,
    # From an image ViT (PaddleVideo's rules): temporal_fc and time_embed start at zero, the
    # temporal attention and its norm from the spatial ones.
    init_zeros=(".temporal_fc.", "backbone.time_embed"),
    init_copies=((".temporal_attn.", ".attn."), (".temporal_norm1.", ".norm1.")),
    mxmark_name=mxmark_name,
    explain=cls_attention_map,
)
