"""ViViT (scenic semantics; mx-mark/VideoTransformer-pytorch for names and embeddings).

model:
  - 'factorised_encoder' (model 2): tubelet Conv3D (tubelet_size, p, p); a spatial encoder
    (`blocks_i`, `depth` layers) runs on each temporal index with a per-frame CLS and
    `pos_embed` [1, 1+N, D]; the frame representation goes to a temporal encoder
    (`temporal_blocks_i`, `temporal_depth` layers) with its own `temporal_cls_token` and
    `time_embed` [1, 1+T', D]; final LN `norm`, CLS -> `head/fc`. `temporal_depth=0`: no
    temporal encoder, the frame representations are averaged (with `tubelet_size=1`, a
    model blind to frame order: the "temporal mixing off" baseline).
    Frame representation (`frame_repr`): 'cls' (default, scenic) = the spatial encoder's CLS
    after `spatial_norm`; 'mean' (mx-mark) = the mean of the frame's patch tokens, no LN.
    The temporal encoder's class token (`temporal_cls`): 'learned' (default, scenic) = its own
    `temporal_cls_token`; 'first_slice' (mx-mark) = the spatial encoder's CLS output of the
    sample's first tubelet slice (no LN). mx-mark takes it as `x[:b, 0]` of a (b t)-ordered
    tensor, so for batch > 1 every sample gets sample 0's slices (a bug); we take each sample's
    own first slice, which is the same at batch 1. mx-mark's ViViT-B = frame_repr 'mean',
    temporal_cls 'first_slice', norm_epsilon 1e-5 (configs/vivit_k400.py:recipe=mxmark).
  - 'spatio_temporal' (model 1): joint attention over the CLS and all T'*N tubelet tokens;
    factorised embeddings: `pos_embed` [1, 1+N, D] per frame plus `time_embed` [1, T', D].
    With `time_embedding=False` and `tubelet_size=1` it is blind to frame order (joint
    attention over a set of tokens): the "temporal mixing off" baseline of the demo.

Parameter names: patch_embed/proj/{kernel DHWIO [t,p,p,3,D], bias}, cls_token, pos_embed,
time_embed, temporal_cls_token, blocks_i/..., temporal_blocks_i/... (same sub-names as
vit.Block: norm1, attn/{qkv,proj}, norm2, mlp/{fc1,fc2}), spatial_norm, norm, head/fc.
`norm_epsilon`: LayerNorm eps inside the blocks (scenic 1e-6, mx-mark 1e-5); `norm` is 1e-6.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from vidtx.errors import VidtxError
from vidtx.models import explain, resize, vit
from vidtx.models.family import Family, Published

MODELS = ("factorised_encoder", "spatio_temporal")
FRAME_REPRS = ("cls", "mean")
TEMPORAL_CLS = ("learned", "first_slice")


class ViViT(nn.Module):
  """video [B, T, H, W, 3] -> logits [B, num_classes] (float32)."""
  num_classes: int = 400
  num_frames: int = 32
  image_size: int = 224
  dtype: str = "bfloat16"
  model: str = "factorised_encoder"
  patch_size: int = 16
  tubelet_size: int = 2
  hidden_size: int = 768
  depth: int = 12
  temporal_depth: int = 4
  num_heads: int = 12
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_path_rate: float = 0.1
  dropout_rate: float = 0.0
  frame_repr: str = "cls"
  temporal_cls: str = "learned"  # 'first_slice': mx-mark's temporal CLS (see the module doc)
  time_embedding: bool = True  # False: no `time_embed`; spatio_temporal with tubelet_size=1 is then order-blind
  norm_epsilon: float = vit.LN_EPS
  attention_impl: str = "xla"
  remat: str = "none"  # set from config.train.remat by the trainer (vit.REMAT_POLICIES)
  scan_blocks: bool = False  # set from config.train.scan_blocks by the trainer (vit.run_blocks)

  def encoder(self, x, prefix: str, depth: int, *, train: bool, dtype):
    """`depth` pre-norm blocks named `{prefix}_{i}`; x: [N, L, D]."""
    return vit.run_blocks(
        self, vit.Block, prefix, vit.drop_path_rates(self.drop_path_rate, depth), x, train=train,
        remat=self.remat, scan=self.scan_blocks, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio,
        qkv_bias=self.qkv_bias, dropout_rate=self.dropout_rate, attention_impl=self.attention_impl,
        norm_epsilon=self.norm_epsilon, dtype=dtype)

  @nn.compact
  def __call__(self, video, *, train: bool):
    vit.check_video(video, "vivit")
    vit.check_choice("vivit", "model", self.model, MODELS)
    vit.check_choice("vivit", "frame_repr", self.frame_repr, FRAME_REPRS)
    vit.check_choice("vivit", "temporal_cls", self.temporal_cls, TEMPORAL_CLS)
    vit.check_choice("vivit", "attention_impl", self.attention_impl, vit.ATTENTION_IMPLS)
    dtype = vit.compute_dtype(self.dtype)
    b, t, h, w, _ = video.shape
    if t % self.tubelet_size:
      raise VidtxError(f"vivit: {t} frames is not a multiple of tubelet_size={self.tubelet_size}")
    d = self.hidden_size
    video = vit.constrain(video.astype(dtype), "act_batch", "act_time", None, None, None)
    x = vit.PatchEmbed(d, (self.tubelet_size, self.patch_size, self.patch_size), dtype=dtype,
                       name="patch_embed")(video)
    tt = x.shape[1]
    x = x.reshape(b, tt, -1, d)
    n = x.shape[2]
    grid = (self.image_size // self.patch_size,) * 2
    cls = vit.embedding_param(self, "cls_token", (1, 1, d)).astype(dtype)
    pos = vit.embedding_param(self, "pos_embed", (1, 1 + grid[0] * grid[1], d))
    pos = resize.resize_pos_embed(pos, (h // self.patch_size, w // self.patch_size)).astype(dtype)
    dropout = nn.Dropout(self.dropout_rate)
    frames = self.num_frames // self.tubelet_size

    if self.model == "spatio_temporal":
      x = x + pos[:, None, 1:]
      if self.time_embedding:
        time = vit.embedding_param(self, "time_embed", (1, frames, d))
        x = x + resize.resize_time_embed(time, tt)[:, :, None].astype(dtype)
      x = jnp.concatenate([jnp.broadcast_to(cls + pos[:, :1], (b, 1, d)), x.reshape(b, tt * n, d)], 1)
      x = self.encoder(dropout(x, deterministic=not train), "blocks", self.depth, train=train, dtype=dtype)
    else:
      x = jnp.concatenate([jnp.broadcast_to(cls, (b * tt, 1, d)), x.reshape(b * tt, n, d)], 1) + pos
      x = self.encoder(dropout(x, deterministic=not train), "blocks", self.depth, train=train, dtype=dtype)
      first_slice_cls = x.reshape(b, tt, n + 1, d)[:, 0, :1]  # each sample's own first slice
      if self.frame_repr == "cls":
        x = vit.layer_norm(dtype=dtype, name="spatial_norm")(x)[:, 0]
      else:
        x = x[:, 1:].mean(axis=1)
      x = vit.constrain(x.reshape(b, tt, d), "act_batch", "act_len", "act_embed")
      if not self.temporal_depth:
        # No temporal encoder: the frame representations are averaged (blind to frame order).
        x = vit.layer_norm(dtype=dtype, name="norm")(x.mean(axis=1))
        return vit.Head(self.num_classes, dtype=dtype, name="head")(x)
      if self.temporal_cls == "learned":
        temporal_cls = vit.embedding_param(self, "temporal_cls_token", (1, 1, d)).astype(dtype)
        temporal_cls = jnp.broadcast_to(temporal_cls, (b, 1, d))
      else:
        temporal_cls = first_slice_cls
      x = jnp.concatenate([temporal_cls, x], axis=1)
      if self.time_embedding:
        time = vit.embedding_param(self, "time_embed", (1, 1 + frames, d))
        x = x + jnp.concatenate([time[:, :1], resize.resize_time_embed(time[:, 1:], tt)], axis=1).astype(dtype)
      x = self.encoder(dropout(x, deterministic=not train), "temporal_blocks", self.temporal_depth,
                       train=train, dtype=dtype)
    x = vit.layer_norm(dtype=dtype, name="norm")(x)[:, 0]
    return vit.Head(self.num_classes, dtype=dtype, name="head")(x)


def fit_embeddings(value, path, shape, name, model):
  """vit.fit_embeddings; the factorised encoder's time_embed starts with its temporal CLS row."""
  return vit.fit_embeddings(value, path, shape, name, time_cls=model.model == "factorised_encoder")


def mxmark_name(path: tuple, model: ViViT) -> str | None:
  """Our variable path -> mx-mark's name: the factorised encoder's spatial blocks are its
  `transformer_layers.0`, the temporal ones `transformer_layers.1`."""
  if model.model == "factorised_encoder":
    blocks = {"blocks": "model.transformer_layers.0.layers",
              "temporal_blocks": "model.transformer_layers.1.layers"}
  else:
    blocks = {"blocks": "model.transformer_layers.layers"}
  return vit.mxmark_name(path, blocks)


def cls_attention_map(model: ViViT, variables, video, *, data_config=None) -> explain.Maps:
  """The last block's CLS attention: over space and time (spatio-temporal), else the spatial
  CLS attention of each time step weighted by the temporal encoder's CLS attention over the
  time steps (equal weights without a temporal encoder).  video: float [1, T, H, W, 3]."""
  last = explain.last_qkv("blocks", model.depth)
  if model.model == "spatio_temporal":
    return explain.cls_attention_maps(model, variables, video, last, layout="time_first",
                                      frames_per_step=model.tubelet_size)
  time = explain.last_qkv("temporal_blocks", model.temporal_depth) if model.temporal_depth else None
  return explain.cls_attention_maps(model, variables, video, last, layout="frames",
                                    frames_per_step=model.tubelet_size, time_qkv=time)


FAMILY = Family(
    module=ViViT,
    tiny={"factorised": dict(vit.TINY, temporal_depth=1),
          "factorised_mean": dict(vit.TINY, temporal_depth=1, frame_repr="mean"),
          "spatio_temporal": dict(vit.TINY, model="spatio_temporal"),
          "mxmark": dict(vit.TINY, temporal_depth=1, frame_repr="mean", temporal_cls="first_slice",
                         norm_epsilon=1e-5)},
    published=(
        Published("ViViT-B FE 32x224", dict(num_classes=400, num_frames=32, image_size=224),
                  params=115.1e6, gmacs=284.4, source="ViViT paper (Arnab et al., 2021)"),
    ),
    fit_checkpoint=fit_embeddings,
    # From an image ViT (scenic's rule): the temporal encoder starts as the first image blocks,
    # the frame representation's norm as the image model's final norm.
    init_copies=(("backbone.temporal_blocks_", "backbone.blocks."),
                 ("backbone.spatial_norm.", "backbone.norm.")),
    block_lists=("blocks", "temporal_blocks"),
    mxmark_name=mxmark_name,
    explain=cls_attention_map,
)
