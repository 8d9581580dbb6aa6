"""VideoMAE (Tong et al., NeurIPS 2022; facts from MCG-NJU/VideoMAE modeling_*.py): a plain ViT
over tubelets, pretrained by masked-video reconstruction and fine-tuned as a classifier.

Encoder: Conv3D tubelets (tubelet_size, p, p) -> tokens in (t, h, w) order + a fixed 1D sine-cosine
position table over all tokens (vit.sinusoid_table, not a parameter) -> `blocks_i` (vit.Block;
the official q/v bias without key bias is our fused qkv bias with its key third at zero, which
stays zero: a key bias shifts every logit of a query equally, so softmax gives it no gradient).

`pretrain=False` (fine-tuning): all tokens -> blocks -> mean over tokens -> `fc_norm` -> `head/fc`
(initialised at head_init_scale x trunc-normal 0.02, as the official init_scale).
video [B, T, H, W, 3] -> logits [B, num_classes].

`pretrain=True`: tube masking keeps the same random `round down(mask_ratio * H'W')` spatial
positions hidden in every time slot; the encoder runs on the visible tokens only, then `norm`;
`encoder_to_decoder` (no bias) -> decoder width; visible tokens + position, then `mask_token` +
position for each hidden token (visible first, each group in token order, as the official code)
-> `decoder_blocks_i` -> `decoder_norm` -> `decoder_head` predicts the hidden tubes' pixels
[3 * tubelet * p * p] ordered (dt, dy, dx, rgb). The target is each tube normalised per
channel over its pixels (mean, unbiased std + 1e-6); `normalize_target=False` (the official
normlize_target=False): the tube's pixels as the model receives them (data-normalised). video -> per-example loss [B] (float32):
the mean squared error over hidden tubes, so the trainer's objective is label-free
(`objective`, vidtx.losses.is_label_free). The model's input is the normalised video; the
per-tube normalisation removes the data normalisation's per-channel shift and scale (the
official code de-normalises first: the same target up to where the 1e-6 sits).

Masks: `mask` [B, N] bool (True = hidden; per example exactly T' * int(mask_ratio * H'W') hidden,
as `tube_mask` draws them) may be given; else drawn from the 'mask' rng, else
the 'dropout' rng in training, else a fixed key (validation sees the same masks every time).

Parameter names: patch_embed/proj, blocks_i/..., fc_norm, head/fc (fine-tune); norm,
encoder_to_decoder, mask_token, decoder_blocks_i/..., decoder_norm, decoder_head (pretrain).
Official checkpoints: vidtx.convert.from_videomae. Fresh initialisation is vit's (trunc-normal
0.02 Dense kernels), not the official pretraining model's xavier-uniform.

`explain(model, variables, video, data_config=...)`: a pretraining model's picture of one clip
(masked input, reconstruction, original: `Reconstruction.write`).
"""
from __future__ import annotations

import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidtx.errors import VidtxError
from vidtx.models import vit
from vidtx.models.family import RUN_TIME_KEYS, Family, Published

TARGET_EPS = 1e-6  # added to each tube's std (official engine_for_pretraining.py)


def tube_mask(rng, batch: int, grid: tuple[int, int, int], ratio: float) -> jax.Array:
  """Tube masks [batch, t*h*w] bool (True = hidden), tokens in (t, h, w) order: per example
  `int(ratio * h * w)` random spatial positions, hidden in every one of the t time slots."""
  t, h, w = grid
  hidden = int(ratio * h * w)
  noise = jax.random.uniform(rng, (batch, h * w))
  rank = jnp.argsort(jnp.argsort(noise, axis=-1), axis=-1)
  return jnp.tile(rank < hidden, (1, t))


def patchify(video: jax.Array, tubelet: int, patch: int) -> jax.Array:
  """video [B, T, H, W, C] -> tubes [B, N, tubelet * patch * patch, C], N in (t, h, w) order."""
  b, t, h, w, c = video.shape
  x = video.reshape(b, t // tubelet, tubelet, h // patch, patch, w // patch, patch, c)
  x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)
  return x.reshape(b, -1, tubelet * patch * patch, c)


def unpatchify(tubes: jax.Array, grid: tuple[int, int, int], tubelet: int, patch: int) -> jax.Array:
  """Inverse of `patchify`: [B, N, tubelet * patch * patch, C] -> [B, T, H, W, C]."""
  b, c = tubes.shape[0], tubes.shape[-1]
  t, h, w = grid
  x = tubes.reshape(b, t, h, w, tubelet, patch, patch, c).transpose(0, 1, 4, 2, 5, 3, 6, 7)
  return x.reshape(b, t * tubelet, h * patch, w * patch, c)


def normalised_tubes(video: jax.Array, tubelet: int, patch: int):
  """(targets [B, N, P * C], mean [B, N, 1, C], std [B, N, 1, C]): each tube normalised per
  channel over its pixels, unbiased std + TARGET_EPS (P = tubelet * patch * patch)."""
  tubes = patchify(video.astype(jnp.float32), tubelet, patch)
  mean = tubes.mean(axis=-2, keepdims=True)
  std = jnp.sqrt(tubes.var(axis=-2, keepdims=True, ddof=1)) + TARGET_EPS
  normed = (tubes - mean) / std
  return normed.reshape(normed.shape[:2] + (-1,)), mean, std


def _gather(x: jax.Array, index: jax.Array) -> jax.Array:
  """x [B, N, D], index [B, M] -> [B, M, D]."""
  return jnp.take_along_axis(x, index[..., None], axis=1)


class VideoMAE(nn.Module):
  """video [B, T, H, W, 3] -> logits [B, num_classes] (fine-tune) or loss [B] (pretrain)."""
  num_classes: int = 400
  num_frames: int = 16
  image_size: int = 224
  dtype: str = "bfloat16"
  patch_size: int = 16
  tubelet_size: int = 2
  hidden_size: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  drop_path_rate: float = 0.1
  dropout_rate: float = 0.0
  head_init_scale: float = 0.001
  pretrain: bool = False
  mask_ratio: float = 0.9
  normalize_target: bool = True  # False: the targets are the input's pixels as they are
  decoder_hidden_size: int = 384
  decoder_depth: int = 4
  decoder_num_heads: int = 6
  norm_epsilon: float = vit.LN_EPS
  attention_impl: str = "xla"
  remat: str = "none"  # set from config.train.remat by the trainer (vit.REMAT_POLICIES)
  scan_blocks: bool = False  # set from config.train.scan_blocks by the trainer (vit.run_blocks)

  @property
  def objective(self) -> str:
    """'reconstruct': the output is the per-example loss (label-free); else 'classify'."""
    return "reconstruct" if self.pretrain else "classify"

  def grid(self, video_shape) -> tuple[int, int, int]:
    _, t, h, w, _ = video_shape
    return t // self.tubelet_size, h // self.patch_size, w // self.patch_size

  def blocks(self, x, prefix: str, depth: int, heads: int, *, train: bool, dtype):
    return vit.run_blocks(
        self, vit.Block, prefix, vit.drop_path_rates(self.drop_path_rate, depth), x, train=train,
        remat=self.remat, scan=self.scan_blocks, num_heads=heads, mlp_ratio=self.mlp_ratio,
        qkv_bias=self.qkv_bias, dropout_rate=self.dropout_rate, attention_impl=self.attention_impl,
        norm_epsilon=self.norm_epsilon, dtype=dtype)

  def draw_mask(self, batch: int, grid, train: bool) -> jax.Array:
    if self.has_rng("mask"):
      rng = self.make_rng("mask")
    elif train and self.has_rng("dropout"):
      rng = self.make_rng("dropout")
    else:
      rng = jax.random.key(0)
    return tube_mask(rng, batch, grid, self.mask_ratio)

  @nn.compact
  def __call__(self, video, *, train: bool, mask=None, reconstruct: bool = False):
    """`reconstruct` (pretrain): returns (predictions [B, M, P*3], targets [B, M, P*3], mask
    [B, N]) for the M hidden tubes in token order instead of the loss."""
    vit.check_video(video, "videomae")
    vit.check_choice("videomae", "attention_impl", self.attention_impl, vit.ATTENTION_IMPLS)
    dtype = vit.compute_dtype(self.dtype)
    b, t, h, w, _ = video.shape
    if t % self.tubelet_size or h % self.patch_size or w % self.patch_size:
      raise VidtxError(f"videomae: a clip of {t}x{h}x{w} does not split into "
                       f"{self.tubelet_size}x{self.patch_size}x{self.patch_size} tubelets")
    d = self.hidden_size
    grid = self.grid(video.shape)
    x = vit.PatchEmbed(d, (self.tubelet_size, self.patch_size, self.patch_size), dtype=dtype,
                       name="patch_embed")(vit.constrain(video.astype(dtype), "act_batch", "act_time",
                                                         None, None, None))
    n = grid[0] * grid[1] * grid[2]
    x = x.reshape(b, n, d) + jnp.asarray(vit.sinusoid_table(n, d), dtype)[None]
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    if not self.pretrain:
      x = self.blocks(x, "blocks", self.depth, self.num_heads, train=train, dtype=dtype)
      x = vit.layer_norm(dtype=dtype, epsilon=self.norm_epsilon, name="fc_norm")(x.mean(axis=1))
      return vit.Head(self.num_classes, stddev=0.02 * self.head_init_scale, dtype=dtype, name="head")(x)

    if mask is None:
      mask = self.draw_mask(b, grid, train)
    hidden = grid[0] * int(self.mask_ratio * grid[1] * grid[2])
    if not 0 < hidden < n:
      raise VidtxError(f"videomae: mask_ratio={self.mask_ratio} hides {hidden} of {n} tubes; "
                       "it must hide some and keep some")
    order = jnp.argsort(mask, axis=-1, stable=True)  # visible tokens first, each group in order
    visible, masked = order[:, :n - hidden], order[:, n - hidden:]
    x = self.blocks(_gather(x, visible), "blocks", self.depth, self.num_heads, train=train, dtype=dtype)
    x = vit.layer_norm(dtype=dtype, epsilon=self.norm_epsilon, name="norm")(x)
    dd = self.decoder_hidden_size
    x = vit.dense(dd, ("embed", None), dtype=dtype, use_bias=False, name="encoder_to_decoder")(x)
    pos = jnp.broadcast_to(jnp.asarray(vit.sinusoid_table(n, dd), dtype)[None], (b, n, dd))
    token = vit.embedding_param(self, "mask_token", (1, 1, dd)).astype(dtype)
    x = jnp.concatenate([x + _gather(pos, visible), token + _gather(pos, masked)], axis=1)
    x = self.blocks(x, "decoder_blocks", self.decoder_depth, self.decoder_num_heads, train=train,
                    dtype=dtype)
    x = vit.layer_norm(dtype=dtype, epsilon=self.norm_epsilon, name="decoder_norm")(x[:, n - hidden:])
    pixels = 3 * self.tubelet_size * self.patch_size ** 2
    predictions = vit.dense(pixels, ("embed", None), dtype=dtype, name="decoder_head")(x)
    predictions = predictions.astype(jnp.float32)
    if self.normalize_target:
      tubes = normalised_tubes(video, self.tubelet_size, self.patch_size)[0]
    else:
      tubes = patchify(video.astype(jnp.float32), self.tubelet_size, self.patch_size)
      tubes = tubes.reshape(tubes.shape[:2] + (-1,))
    targets = _gather(tubes, masked)
    if reconstruct:
      return predictions, targets, mask
    return jnp.mean(jnp.square(predictions - targets), axis=(1, 2))


# ----------------------------------------------------------------------------- the picture
@dataclasses.dataclass
class Reconstruction:
  """A pretraining model's reconstruction of one clip (float [T, H, W, 3] pixels in 0..1)."""
  masked: np.ndarray          # the input with the hidden tubes grey: what the encoder saw
  reconstruction: np.ndarray  # visible tubes as they are, hidden ones as predicted
  original: np.ndarray        # the input, de-normalised
  mask: np.ndarray            # bool [T', h, w], True = hidden
  loss: float                 # the model's loss on this clip (mean squared error, hidden tubes)
  target: str = "per-tube normalised pixels"  # what the loss compares (normalize_target)

  def write(self, out_dir: str, name: str, clip: np.ndarray, label_names=()) -> dict:
    """DIR/<name>.png: rows masked input / reconstruction / original, a column per frame
    (enlarged, nearest, to at least 96 pixels); DIR/<name>.npz: the arrays. `clip` (uint8
    [T, H, W, 3]) is the original row; a pretraining model predicts no class (`label_names`
    unused). Returns the paths {png, npz}."""
    del label_names
    from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top  (matplotlib's dependency)
    os.makedirs(out_dir, exist_ok=True)
    t, h, w = clip.shape[:3]
    scale = max(1, -(-96 // max(h, w)))
    rows = [np.clip(np.round(a * 255), 0, 255).astype(np.uint8)
            for a in (self.masked, self.reconstruction)] + [np.asarray(clip, np.uint8)]
    gap, label_w, title_h = 2, 110, 20
    fh, fw = h * scale, w * scale
    canvas = Image.new("RGB", (label_w + t * (fw + gap), title_h + 3 * (fh + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    hidden = float(self.mask.mean())
    draw.text((4, 4), f"{name}: {hidden:.0%} of the tubes hidden; loss {self.loss:.3f} "
              f"({self.target})", fill="black")
    for r, (label, frames) in enumerate(zip(("masked input", "reconstruction", "original"), rows)):
      y = title_h + r * (fh + gap)
      draw.text((4, y + fh // 2 - 6), label, fill="black")
      for i, frame in enumerate(frames):
        big = np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)
        canvas.paste(Image.fromarray(big), (label_w + i * (fw + gap), y))
    paths = {"png": os.path.join(out_dir, f"{name}.png"), "npz": os.path.join(out_dir, f"{name}.npz")}
    canvas.save(paths["png"])
    np.savez(paths["npz"], masked=self.masked, reconstruction=self.reconstruction,
             original=self.original, mask=self.mask, loss=self.loss)
    return paths


def explain(model: VideoMAE, variables, video, *, data_config, seed: int = 0) -> Reconstruction:
  """The reconstruction picture of a pretraining model (`pretrain=True`) for one normalised clip
  `video` float [1, T, H, W, 3] (data_config.mean / std; None: not normalised), with the tube
  mask of `seed` (Family.explain)."""
  if not model.pretrain:
    raise VidtxError("videomae: a fine-tuned VideoMAE reconstructs nothing; give the pretraining "
                     "checkpoint and config (configs/videomae_k400.py:pretrain)")
  video = jnp.asarray(video, jnp.float32)
  grid = model.grid(video.shape)
  mean = np.asarray(data_config.mean if data_config is not None else (0.0,) * 3, np.float32)
  std = np.asarray(data_config.std if data_config is not None else (1.0,) * 3, np.float32)
  p, tube = model.patch_size, model.tubelet_size

  def run(variables, video):
    mask = tube_mask(jax.random.key(seed), 1, grid, model.mask_ratio)
    predictions, targets, _ = model.apply(variables, video, train=False, mask=mask, reconstruct=True)
    _, tube_mean, tube_std = normalised_tubes(video, tube, p)
    masked_index = jnp.argsort(mask, axis=-1, stable=True)[:, mask.shape[1] - predictions.shape[1]:]
    tubes = patchify(video, tube, p)
    guessed = predictions.reshape(predictions.shape[:2] + (-1, 3))
    if model.normalize_target:  # per tube back to its own scale
      guessed = guessed * jnp.take_along_axis(tube_std, masked_index[..., None, None], 1) + \
          jnp.take_along_axis(tube_mean, masked_index[..., None, None], 1)
    filled = tubes.at[0, masked_index[0]].set(guessed[0])
    grey = tubes.at[0, masked_index[0]].set(jnp.asarray((0.5 - mean) / std))
    loss = jnp.mean(jnp.square(predictions - targets))
    return [unpatchify(x, grid, tube, p)[0] for x in (grey, filled, tubes)], mask, loss

  (masked, filled, original), mask, loss = jax.jit(run)(variables, video)
  pixels = lambda x: np.clip(np.asarray(x) * std + mean, 0, 1)
  return Reconstruction(masked=pixels(masked), reconstruction=pixels(filled), original=pixels(original),
                        mask=np.asarray(mask).reshape(grid), loss=float(loss),
                        target="per-tube normalised pixels" if model.normalize_target else "pixels")


FAMILY = Family(
    module=VideoMAE,
    tiny={"finetune": dict(vit.TINY, num_frames=4, tubelet_size=2),
          "tubelet1": dict(vit.TINY, num_frames=2, tubelet_size=1, depth=1)},
    published=(
        Published("VideoMAE ViT-B 16x224 (fine-tuned)",
                  dict(num_classes=400, num_frames=16, image_size=224),
                  params=87e6, gmacs=180.0, source="VideoMAE paper, Table 6 (87M, 180 GFLOPs x 5 x 3)"),
    ),
    non_structural=RUN_TIME_KEYS + ("mask_ratio", "head_init_scale"),
    block_lists=("blocks", "decoder_blocks"),
    paddle_lists=("blocks", "decoder_blocks"),
    explain=explain,
)
