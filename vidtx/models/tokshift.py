"""TokShift Transformer (PaddleVideo `TokenShiftVisionTransformer` + `TokenShiftHead`).

A ViT applied to every frame with its own CLS token; in every block the CLS token is
shifted along time (1/4 of the channels from t+1, 1/4 from t-1) on the residual stream,
before the attention and again before the MLP. Logits: per-frame CLS -> fc, averaged over T.
`shift=False` turns the temporal mixing off (a space-only ViT per frame).

Parameter names (Paddle `backbone.X` / `head.X` -> ours; '.' -> '/', `blocks.i` -> `blocks_i`):
  cls_token [1,1,D], pos_embed [1,1+N,D], patch_embed/proj/{kernel HWIO, bias},
  blocks_i/{norm1,norm2}/{scale,bias}, blocks_i/attn/{qkv,proj}/{kernel [in,out], bias},
  blocks_i/mlp/{fc1,fc2}/{kernel,bias}, norm/{scale,bias}, head/fc/{kernel [D,C], bias}.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidtx.models import explain, resize, vit
from vidtx.models.family import Family, Published


def token_shift(x: jax.Array, num_frames: int, fold_div: int = 4) -> jax.Array:
  """Shifts the CLS token (index 0) of each frame along time.

  x: [B*T, L, C] (frames of a video consecutive). Channels [0, C/fold_div) take x[t+1]
  (zero at the last frame), [C/fold_div, 2C/fold_div) take x[t-1] (zero at the first);
  the other channels and all patch tokens are unchanged.
  """
  bt, length, channels = x.shape
  fold = channels // fold_div
  x = x.reshape(bt // num_frames, num_frames, length, channels)
  cls = x[:, :, 0]
  zero = jnp.zeros_like(cls[:, :1, :fold])
  from_next = jnp.concatenate([cls[:, 1:, :fold], zero], axis=1)
  from_prev = jnp.concatenate([zero, cls[:, :-1, fold:2 * fold]], axis=1)
  cls = jnp.concatenate([from_next, from_prev, cls[:, :, 2 * fold:]], axis=-1)
  x = jnp.concatenate([cls[:, :, None], x[:, :, 1:]], axis=2)
  return x.reshape(bt, length, channels)


class TokShift(nn.Module):
  """video [B, T, H, W, 3] -> logits [B, num_classes] (float32)."""
  num_classes: int = 101
  num_frames: int = 8
  image_size: int = 256
  dtype: str = "bfloat16"
  patch_size: int = 16
  hidden_size: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_path_rate: float = 0.1
  dropout_rate: float = 0.0
  shift: bool = True
  fold_div: int = 4
  norm_epsilon: float = vit.LN_EPS
  attention_impl: str = "xla"
  remat: str = "none"  # set from config.train.remat by the trainer (vit.REMAT_POLICIES)
  scan_blocks: bool = False  # set from config.train.scan_blocks by the trainer (vit.run_blocks)

  @nn.compact
  def __call__(self, video, *, train: bool):
    vit.check_video(video, "tokshift")
    vit.check_choice("tokshift", "attention_impl", self.attention_impl, vit.ATTENTION_IMPLS)
    dtype = vit.compute_dtype(self.dtype)
    b, t, h, w, _ = video.shape
    video = vit.constrain(video.astype(dtype), "act_batch", "act_time", None, None, None)
    grid = (self.image_size // self.patch_size,) * 2
    x = vit.PatchEmbed(self.hidden_size, (self.patch_size,) * 2, dtype=dtype, name="patch_embed")(
        video.reshape(b * t, h, w, 3))
    x = x.reshape(b * t, -1, self.hidden_size)
    cls = vit.embedding_param(self, "cls_token", (1, 1, self.hidden_size))
    pos = vit.embedding_param(self, "pos_embed", (1, 1 + grid[0] * grid[1], self.hidden_size))
    x = jnp.concatenate([jnp.broadcast_to(cls.astype(dtype), (b * t, 1, self.hidden_size)), x], 1)
    x = x + resize.resize_pos_embed(pos, (h // self.patch_size, w // self.patch_size)).astype(dtype)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    mix = functools.partial(token_shift, num_frames=t, fold_div=self.fold_div) if self.shift else None
    x = vit.run_blocks(
        self, vit.Block, "blocks", vit.drop_path_rates(self.drop_path_rate, self.depth), x,
        train=train, remat=self.remat, scan=self.scan_blocks, num_heads=self.num_heads,
        mlp_ratio=self.mlp_ratio, qkv_bias=self.qkv_bias, dropout_rate=self.dropout_rate,
        attention_impl=self.attention_impl, norm_epsilon=self.norm_epsilon, dtype=dtype, mix=mix)
    x = vit.layer_norm(dtype=dtype, name="norm")(x)[:, 0]
    logits = vit.Head(self.num_classes, dtype=dtype, name="head")(x)
    return logits.reshape(b, t, self.num_classes).mean(axis=1)


def cls_attention_map(model: TokShift, variables, video, *, data_config=None) -> explain.Maps:
  """The last block's CLS attention in each frame; frames weigh equally (the logits are their
  mean).  video: float [1, T, H, W, 3]."""
  last = explain.last_qkv("blocks", model.depth)
  return explain.cls_attention_maps(model, variables, video, last,
                                    layout="frames", frames_per_step=1)


FAMILY = Family(
    module=TokShift,
    tiny={"default": vit.TINY, "no_shift": dict(vit.TINY, shift=False)},
    published=(
        Published("TokShift-B 8x256 (UCF101)", dict(num_classes=101, num_frames=8, image_size=256),
                  params=86.0e6, gmacs=175.8,
                  source="TokShift-Transformer README (GFLOPs); ViT-B/16 has ~86M parameters; "
                  "counts no attention matmuls"),
    ),
    fit_checkpoint=vit.fit_embeddings,
    explain=cls_attention_map,
)
