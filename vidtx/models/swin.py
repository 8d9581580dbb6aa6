"""Video Swin Transformer (PaddleVideo `SwinTransformer3D` + `I3DHead`).

Patch embedding: Conv3D `patch_size` (2,4,4) + LayerNorm. Four stages of shifted-window
blocks (window (8,7,7); odd blocks shift by window // 2 with a -100 mask between the 27
regions); PatchMerging (concat [x(0::2,0::2), x(1::2,0::2), x(0::2,1::2), x(1::2,1::2)],
LN(4C), Linear 4C->2C without bias) after stages 0-2; final LN; I3D head (global average
pool, dropout, fc). Where a token-grid dim is <= its window, the window is clipped to it
and the shift along it is 0. LayerNorm eps 1e-5 (Paddle's default).

Sizes that are not a multiple of the window are padded at the end of each of D, H, W (as
Paddle does; checked against PaddleVideo at 10x56x56 and 19x202x202 inputs).
For a clipped window Paddle slices `relative_position_index[:N, :N]`, which gives the true
offsets only when just the leading (time) dim is clipped; we do the same (a quirk, kept so
converted checkpoints give Paddle's logits at every input size; it never shows at the
published sizes, e.g. 32x224).

Parameter names (Paddle `backbone.X` / `head.X`; '.' -> '/', `layers.i` -> `layers_i`,
`blocks.j` -> `blocks_j`): patch_embed/proj/{kernel DHWIO [2,4,4,3,C], bias},
patch_embed/norm, layers_i/blocks_j/{norm1,norm2}, layers_i/blocks_j/attn/{qkv,proj},
layers_i/blocks_j/attn/relative_position_bias_table [(2Wd-1)(2Wh-1)(2Ww-1), heads],
layers_i/blocks_j/mlp/{fc1,fc2}, layers_i/downsample/{norm, reduction (kernel only)},
norm, head/fc. Paddle's `relative_position_index` buffer equals `relative_position_index()`.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from vidtx import messages
from vidtx.errors import VidtxError
from vidtx.models import explain, family, resize, vit

SWIN_LN_EPS = 1e-5
MASK_VALUE = -100.0


# ----------------------------------------------------------------------------- pure functions

def clip_window(dims, window, shift):
  """Window and shift actually used on a token grid `dims` (D, H, W): clipped where dim <= window."""
  use_window = tuple(d if d <= w else w for d, w in zip(dims, window))
  use_shift = tuple(0 if d <= w else s for d, w, s in zip(dims, window, shift))
  return use_window, use_shift


def relative_position_index(window, table_window=None) -> np.ndarray:
  """[N, N] row of the bias table for each (query, key) pair of a window, N = prod(window).

  Index = (dd + Td-1)(2Th-1)(2Tw-1) + (dh + Th-1)(2Tw-1) + (dw + Tw-1), d* = query - key and
  T = `table_window` (the configured window; defaults to `window`).
  """
  table_window = tuple(table_window or window)
  coords = np.stack(np.meshgrid(*[np.arange(w) for w in window], indexing="ij")).reshape(3, -1)
  rel = coords[:, :, None] - coords[:, None, :] + (np.asarray(table_window) - 1)[:, None, None]
  td, th, tw = (2 * np.asarray(table_window) - 1)
  return (rel[0] * th * tw + rel[1] * tw + rel[2]).astype(np.int64)


def paddle_window_index(window, table_window) -> np.ndarray:
  """The index PaddleVideo uses for a (possibly clipped) window: the configured window's
  index cut to its first N rows and columns, N = prod(window). Equal to the true offsets
  (`relative_position_index(window, table_window)`) unless a spatial dim is clipped."""
  n = int(np.prod(window))
  return relative_position_index(table_window)[:n, :n]


def window_partition(x, window):
  """[B, D, H, W, C] -> [B, nW, N, C], windows in (d, h, w) order (works on numpy and jax)."""
  b, d, h, w, c = x.shape
  wd, wh, ww = window
  x = x.reshape(b, d // wd, wd, h // wh, wh, w // ww, ww, c)
  return x.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, -1, wd * wh * ww, c)


def window_reverse(windows, window, dims):
  """[B, nW, N, C] -> [B, D, H, W, C], the inverse of `window_partition`."""
  (d, h, w), (wd, wh, ww) = dims, window
  b, c = windows.shape[0], windows.shape[-1]
  x = windows.reshape(b, d // wd, h // wh, w // ww, wd, wh, ww, c)
  return x.transpose(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, d, h, w, c)


def window_regions(dims, window, shift) -> np.ndarray:
  """[nW, N] region id (0..26) of each token of each window of the shifted (rolled) grid.

  `dims` must be multiples of `window`. Along each dim the last `window` positions split into
  [-window, -shift) and [-shift, end), as Paddle's `compute_mask` slices.
  """
  ids = np.zeros((1,) + tuple(dims) + (1,), np.int32)
  region = 0
  spans = [(slice(-w), slice(-w, -s), slice(-s, None)) for w, s in zip(window, shift)]
  for sd in spans[0]:
    for sh in spans[1]:
      for sw in spans[2]:
        ids[:, sd, sh, sw, :] = region
        region += 1
  return window_partition(ids, window)[0, :, :, 0]


def shifted_window_mask(dims, window, shift) -> np.ndarray:
  """[nW, N, N] float32: 0 within a region, -100 between regions (Paddle's `compute_mask`)."""
  ids = window_regions(dims, window, shift)
  return np.where(ids[:, :, None] != ids[:, None, :], MASK_VALUE, 0.0).astype(np.float32)


# ----------------------------------------------------------------------------- modules

class WindowAttention(vit.Attention):
  """vit.Attention plus a learned relative position bias table; x: [B, nW, N, C]."""
  window_size: tuple[int, int, int] = (8, 7, 7)
  table_window: tuple[int, int, int] = (8, 7, 7)

  def attention_bias(self, length: int):
    rows = int(np.prod([2 * w - 1 for w in self.table_window]))
    table = self.param("relative_position_bias_table",
                       nn.with_logical_partitioning(vit.trunc_normal(0.02), (None, "heads")),
                       (rows, self.num_heads), jnp.float32)
    index = paddle_window_index(self.window_size, self.table_window)
    return table[index.reshape(-1)].reshape(length, length, -1).transpose(2, 0, 1)


class SwinBlock(nn.Module):
  """(Shifted-)window attention block; x: [B, D, H, W, C]. window/shift already clipped."""
  num_heads: int
  window_size: tuple[int, int, int]
  table_window: tuple[int, int, int]
  shift_size: tuple[int, int, int]
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_path: float = 0.0
  dropout_rate: float = 0.0
  attention_impl: str = "xla"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    b, d, h, w, c = x.shape
    window, shift = self.window_size, self.shift_size
    drop = vit.DropPath(self.drop_path)
    y = vit.layer_norm(dtype=self.dtype, epsilon=SWIN_LN_EPS, name="norm1")(x)
    pads = [(-s) % win for s, win in zip((d, h, w), window)]
    y = jnp.pad(y, ((0, 0), (0, pads[0]), (0, pads[1]), (0, pads[2]), (0, 0)))
    padded = (d + pads[0], h + pads[1], w + pads[2])
    shifted = any(s > 0 for s in shift)
    mask = None
    if shifted:
      y = jnp.roll(y, [-s for s in shift], axis=(1, 2, 3))
      mask = jnp.asarray(shifted_window_mask(padded, window, shift))[None, :, None]
    y = vit.constrain(window_partition(y, window), "act_batch", None, "act_len", "act_embed")
    y = WindowAttention(self.num_heads, self.qkv_bias, self.dropout_rate, self.attention_impl,
                        self.dtype, window_size=window, table_window=self.table_window,
                        name="attn")(y, train=train, bias=mask)
    y = window_reverse(y, window, padded)
    if shifted:
      y = jnp.roll(y, list(shift), axis=(1, 2, 3))
    x = x + drop(y[:, :d, :h, :w], train=train)
    y = vit.layer_norm(dtype=self.dtype, epsilon=SWIN_LN_EPS, name="norm2")(x)
    y = vit.Mlp(int(c * self.mlp_ratio), self.dropout_rate, self.dtype, name="mlp")(y, train=train)
    x = x + drop(y, train=train)
    return vit.constrain(x, "act_batch", "act_time", None, None, "act_embed")


class PatchMerging(nn.Module):
  """2x2 spatial merge: [B, D, H, W, C] -> [B, D, ceil(H/2), ceil(W/2), 2C]."""
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    x = jnp.pad(x, ((0, 0), (0, 0), (0, x.shape[2] % 2), (0, x.shape[3] % 2), (0, 0)))
    x = jnp.concatenate([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2],
                         x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], axis=-1)
    x = vit.layer_norm(dtype=self.dtype, epsilon=SWIN_LN_EPS, name="norm")(x)
    return vit.dense(2 * c, ("mlp", "embed"), dtype=self.dtype, use_bias=False, name="reduction")(x)


class SwinStage(nn.Module):
  """One stage (`layers_i`): `depth` blocks (odd ones shifted), then optional PatchMerging."""
  depth: int
  num_heads: int
  window_size: tuple[int, int, int]
  drop_paths: tuple[float, ...]
  downsample: bool
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  dropout_rate: float = 0.0
  attention_impl: str = "xla"
  dtype: jnp.dtype = jnp.float32
  remat: str = "none"

  @nn.compact
  def __call__(self, x, *, train: bool):
    half = tuple(w // 2 for w in self.window_size)
    window, shift = clip_window(x.shape[1:4], self.window_size, half)
    for j in range(self.depth):
      x = vit.remat_block(SwinBlock, self.remat)(
          self.num_heads, window, self.window_size, shift if j % 2 else (0, 0, 0), self.mlp_ratio,
          self.qkv_bias, self.drop_paths[j], self.dropout_rate, self.attention_impl, self.dtype,
          name=f"blocks_{j}")(x, train=train)
    if self.downsample:
      x = PatchMerging(self.dtype, name="downsample")(x)
    return x


class SwinTransformer3D(nn.Module):
  """video [B, T, H, W, 3] -> logits [B, num_classes] (float32). Defaults: Swin-T, 32x224."""
  num_classes: int = 400
  num_frames: int = 32
  image_size: int = 224
  dtype: str = "bfloat16"
  embed_dim: int = 96
  depths: tuple[int, ...] = (2, 2, 6, 2)
  num_heads: tuple[int, ...] = (3, 6, 12, 24)
  window_size: tuple[int, int, int] = (8, 7, 7)
  patch_size: tuple[int, int, int] = (2, 4, 4)
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_path_rate: float = 0.1
  dropout_rate: float = 0.0
  head_dropout_rate: float = 0.5
  attention_impl: str = "xla"
  remat: str = "none"  # set from config.train.remat by the trainer (vit.REMAT_POLICIES)

  @nn.compact
  def __call__(self, video, *, train: bool):
    vit.check_video(video, "swin")
    vit.check_choice("swin", "attention_impl", self.attention_impl, vit.ATTENTION_IMPLS)
    if len(self.depths) != len(self.num_heads):
      raise VidtxError(f"swin: depths {self.depths} and num_heads {self.num_heads} differ in length")
    dtype = vit.compute_dtype(self.dtype)
    video = vit.constrain(video.astype(dtype), "act_batch", "act_time", None, None, None)
    pads = [(-s) % p for s, p in zip(video.shape[1:4], self.patch_size)]
    video = jnp.pad(video, ((0, 0), (0, pads[0]), (0, pads[1]), (0, pads[2]), (0, 0)))
    x = vit.PatchEmbed(self.embed_dim, tuple(self.patch_size), norm=True, norm_epsilon=SWIN_LN_EPS,
                       dtype=dtype, name="patch_embed")(video)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    rates = vit.drop_path_rates(self.drop_path_rate, sum(self.depths))
    for i, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
      start = sum(self.depths[:i])
      x = SwinStage(depth, heads, tuple(self.window_size), tuple(rates[start:start + depth]),
                    i < len(self.depths) - 1, self.mlp_ratio, self.qkv_bias, self.dropout_rate,
                    self.attention_impl, dtype, self.remat, name=f"layers_{i}")(x, train=train)
    x = vit.layer_norm(dtype=dtype, epsilon=SWIN_LN_EPS, name="norm")(x)
    x = nn.Dropout(self.head_dropout_rate)(x.mean(axis=(1, 2, 3)), deterministic=not train)
    return vit.Head(self.num_classes, stddev=0.01, truncated=False, dtype=dtype, name="head")(x)


# ----------------------------------------------------------------------------- the family

def paddle_buffers(model: SwinTransformer3D) -> dict[str, np.ndarray]:
  """Paddle keeps every block's `attn.relative_position_index` (int64 [N, N]) in its state dict."""
  index = relative_position_index(tuple(model.window_size))
  return {f"backbone.layers.{i}.blocks.{j}.attn.relative_position_index": index
          for i, depth in enumerate(model.depths) for j in range(depth)}


def fit_pretrained(value, path, shape, name, model):
  """An image Swin's 2D relative position bias table -> this model's 3D one (PaddleVideo's rule:
  bicubic resize to the window's plane where the 2D window differs, the same plane for every
  time offset). Anything else, or a table that cannot be one, is returned as is."""
  if path[-1] != "relative_position_bias_table" or value.shape == shape:
    return value
  wd, wh, ww = model.window_size
  side = int(round(value.shape[0] ** 0.5))
  if (value.ndim != 2 or side * side != value.shape[0] or value.shape[1] != shape[1]
      or shape[0] != (2 * wd - 1) * (2 * wh - 1) * (2 * ww - 1)):
    return value
  if (side, side) != (2 * wh - 1, 2 * ww - 1):
    messages.say(f"{name}: bicubic resize of the relative position bias table {side}x{side} -> "
                 f"{2 * wh - 1}x{2 * ww - 1}")
  return resize.inflate_bias_table(value, (wd, wh, ww))


def grad_cam_map(model: SwinTransformer3D, variables, video, *, data_config=None) -> explain.Maps:
  """Grad-CAM of the predicted class on the last stage's output.  video: float [1, T, H, W, 3]."""
  return explain.grad_cam_maps(model, variables, video, (f"layers_{len(model.depths) - 1}",))


_K400 = dict(num_classes=400, num_frames=32, image_size=224)
FAMILY = family.Family(
    module=SwinTransformer3D,
    tiny={"default": dict(num_frames=4, image_size=32, embed_dim=16, depths=(2, 2),
                          num_heads=(2, 4), window_size=(2, 4, 4))},
    published=(
        family.Published("Swin-T 32x224", _K400, params=28.2e6, gmacs=88.0,
                         source="Video Swin paper; mmaction2"),
        family.Published("Swin-S 32x224", dict(_K400, depths=(2, 2, 18, 2)), params=50.0e6,
                         gmacs=166.0, source="Video Swin paper (~50M)"),
        family.Published("Swin-B 32x224", dict(_K400, embed_dim=128, depths=(2, 2, 18, 2),
                                               num_heads=(4, 8, 16, 32)),
                         params=88.0e6, gmacs=282.0, source="Video Swin paper; mmaction2"),
    ),
    non_structural=family.RUN_TIME_KEYS + ("head_dropout_rate",),
    paddle_lists=("layers", "blocks"),
    paddle_buffers=paddle_buffers,
    fit_pretrained=fit_pretrained,
    explain=grad_cam_map,
)
