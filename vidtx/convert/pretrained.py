"""Pretraining checkpoints of other formats -> PaddleVideo names and layouts.

  paddle      a PaddleVideo checkpoint (.pdparams): a whole model, or the backbone weights its
              `pretrained=` option loads (names without `backbone.`, which is then added)
  paddleclas  a PaddleClas image checkpoint (ViT / Swin 2D / ResNet-vd .pdparams): `backbone.`
              added; its classifier is never loaded
  big_vision  a big_vision / google ViT .npz: renamed to PaddleClas's ViT names
  timm        a timm ViT state dict, .safetensors or a torch .pth (also {'model': ...} /
              Lightning-wrapped): PaddleClas's names, torch Linear weights transposed
  vidtx       a vidtx checkpoint (a workdir, checkpoint directory or step) of any family, e.g. a
              VideoMAE pretraining run: its variables in Paddle names (engine.vidtx_state)
  mae         an MAE pretraining checkpoint (MAE-pytorch, which mx-mark's weight_init reads):
              {'model': {'encoder.…', 'decoder.…'}}; the encoder as a ViT (below)

The engine (vidtx.convert.engine.init_from) then maps the Paddle names onto the model.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from vidtx import messages
from vidtx.convert import torch_files
from vidtx.convert.readers import load_npz, load_pdparams, load_safetensors
from vidtx.errors import VidtxError
from vidtx.models.vit import sinusoid_table

INIT_FORMATS = ("paddle", "paddleclas", "big_vision", "timm", "mae", "vidtx")


def _vit_from_big_vision(arrays: Mapping[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
  """big_vision / google ViT .npz -> PaddleClas ViT names and layouts.

  Handles the original ViT names (LayerNorm_0/2, MultiHeadDotProductAttention_1, MlpBlock_3,
  Transformer/posembed_input/pos_embedding with the CLS position) and big_vision's newer
  ones (LayerNorm_0/1, MultiHeadDotProductAttention_0, MlpBlock_0, top-level pos_embedding
  without a CLS position: the CLS position is then zero, which is the same model).
  These models expect pixels in [-1, 1] (data mean = std = 0.5).
  """
  arrays = {re.sub(r"^(params/)?", "", k): v for k, v in arrays.items()}
  if "embedding/kernel" not in arrays:
    raise VidtxError(f"{path}: no 'embedding/kernel'; expected a big_vision / google ViT .npz "
                     f"(keys like Transformer/encoderblock_0/...), got e.g. {sorted(arrays)[:5]}")
  out = {"patch_embed.proj.weight": np.transpose(arrays["embedding/kernel"], (3, 2, 0, 1)),
         "patch_embed.proj.bias": arrays["embedding/bias"]}
  if "cls" in arrays:
    out["cls_token"] = arrays["cls"]
  pos = arrays.get("Transformer/posembed_input/pos_embedding", arrays.get("pos_embedding"))
  if pos is not None:
    n = pos.shape[1]
    if int(round(n ** 0.5)) ** 2 == n:  # no CLS position
      pos = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
    out["pos_embed"] = pos
  for leaf, paddle_leaf in (("scale", "weight"), ("bias", "bias")):
    out[f"norm.{paddle_leaf}"] = arrays[f"Transformer/encoder_norm/{leaf}"]
  blocks = sorted({int(m[1]) for k in arrays if (m := re.match(r"Transformer/encoderblock_(\d+)/", k))})
  for i in blocks:
    p = f"Transformer/encoderblock_{i}/"
    names = {k[len(p):].split("/")[0] for k in arrays if k.startswith(p)}
    pick = lambda *options: next(o for o in options if o in names)
    ln1, ln2 = "LayerNorm_0", pick("LayerNorm_2", "LayerNorm_1")
    mha = pick("MultiHeadDotProductAttention_1", "MultiHeadDotProductAttention_0")
    mlp = pick("MlpBlock_3", "MlpBlock_0")
    for ours, theirs in (("norm1", ln1), ("norm2", ln2)):
      out[f"blocks.{i}.{ours}.weight"] = arrays[p + f"{theirs}/scale"]
      out[f"blocks.{i}.{ours}.bias"] = arrays[p + f"{theirs}/bias"]
    qkv = [arrays[p + f"{mha}/{n}/kernel"] for n in ("query", "key", "value")]  # [D, heads, hd]
    out[f"blocks.{i}.attn.qkv.weight"] = np.concatenate([k.reshape(k.shape[0], -1) for k in qkv], axis=1)
    if p + f"{mha}/query/bias" in arrays:
      out[f"blocks.{i}.attn.qkv.bias"] = np.concatenate(
          [arrays[p + f"{mha}/{n}/bias"].reshape(-1) for n in ("query", "key", "value")])
    proj = arrays[p + f"{mha}/out/kernel"]  # [heads, hd, D]
    out[f"blocks.{i}.attn.proj.weight"] = proj.reshape(-1, proj.shape[-1])
    out[f"blocks.{i}.attn.proj.bias"] = arrays[p + f"{mha}/out/bias"]
    for ours, theirs in (("fc1", "Dense_0"), ("fc2", "Dense_1")):
      out[f"blocks.{i}.mlp.{ours}.weight"] = arrays[p + f"{mlp}/{theirs}/kernel"]
      out[f"blocks.{i}.mlp.{ours}.bias"] = arrays[p + f"{mlp}/{theirs}/bias"]
  return out


def _from_timm(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """timm (torch) names are PaddleClas's; torch Linear weights are [out, in]: transpose them."""
  return {k: (v.T if k.endswith(".weight") and v.ndim == 2 else v) for k, v in arrays.items()}


def plain_blocks(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """MAE / VideoMAE blocks (`…blocks.<i>.`, torch names and layouts) -> plain ViT blocks: the
  attention's `q_bias` / `v_bias` (no key bias) become qkv.bias = [q_bias, 0, v_bias]; layer
  scale (`gamma_1` / `gamma_2`, where trained with init_values > 0) is folded into attn.proj /
  mlp.fc2, which is the same function. Other entries are kept as they are."""
  block = re.compile(r"^(.*blocks\.\d+\.)(attn\.q_bias|attn\.v_bias|gamma_1|gamma_2)$")
  out = {name: value for name, value in state.items() if not block.match(name)}
  for prefix in sorted({m[1] for k in state if (m := block.match(k))}):
    if prefix + "attn.q_bias" in state:
      q = state[prefix + "attn.q_bias"]
      out[prefix + "attn.qkv.bias"] = np.concatenate([q, np.zeros_like(q), state[prefix + "attn.v_bias"]])
    for gamma, layer in (("gamma_1", "attn.proj"), ("gamma_2", "mlp.fc2")):
      if prefix + gamma in state:
        scale = state[prefix + gamma]
        out[prefix + layer + ".weight"] = scale[:, None] * out[prefix + layer + ".weight"]
        out[prefix + layer + ".bias"] = scale * out[prefix + layer + ".bias"]
  return out


def _vit_from_mae(arrays: Mapping[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
  """MAE-pytorch pretraining state -> timm / PaddleClas ViT names (torch layouts).

  The encoder becomes the ViT: `encoder.` dropped; the decoder, `encoder_to_decoder` and
  `mask_token` are pretraining-only. Its attention has `q_bias` / `v_bias` and no key bias:
  qkv.bias = [q_bias, 0, v_bias]. Layer scale (`gamma_1` / `gamma_2`, where trained with
  init_values > 0) is folded into the attention projection / fc2, which is the same function.
  It has no class token (`plain_blocks` makes its blocks plain ViT blocks); its position embedding is a fixed sine-cosine table of the patches
  (not in the file): `pos_embed` = that table after a zero class-token row (a learnable
  `encoder.pos_embed` is taken as it is).
  """
  encoder = {k[len("encoder."):]: v for k, v in arrays.items() if k.startswith("encoder.")}
  if "patch_embed.proj.weight" not in encoder:
    raise VidtxError(f"{path}: no 'encoder.patch_embed.proj.weight'; expected an MAE pretraining "
                     f"checkpoint ({{'model': {{'encoder.…'}}}}), got e.g. {sorted(arrays)[:5]}")
  out = plain_blocks(encoder)
  if "pos_embed" not in out:
    patches = (224 // encoder["patch_embed.proj.weight"].shape[-1]) ** 2  # MAE-pytorch trains at 224
    table = sinusoid_table(patches, encoder["patch_embed.proj.weight"].shape[0])
    out["pos_embed"] = np.concatenate([np.zeros_like(table[:1]), table])[None]
    messages.say(f"{path}: pos_embed from the MAE encoder's fixed sine-cosine table "
                 f"({patches} patches, a zero class-token row)")
  return out


def read_pretrained(path: str, fmt: str) -> dict[str, np.ndarray]:
  """A pretraining checkpoint -> {PaddleVideo name ('backbone.X' / 'head.X'): Paddle-layout array}."""

  def timm(p):
    if p.endswith(".safetensors"):
      return load_safetensors(p)
    return torch_files.state_dict(torch_files.load_torch(p), p)

  readers = {"paddle": load_pdparams, "paddleclas": load_pdparams, "big_vision": load_npz,
             "timm": timm, "mae": timm}
  if fmt not in readers:  # ('vidtx' is read by engine.init_from, which knows the models)
    raise VidtxError(f"config.init_from.format={fmt!r}; expected one of {list(INIT_FORMATS)}")
  return pretrained_state(readers[fmt](path), fmt, path)


def pretrained_state(arrays: Mapping[str, np.ndarray], fmt: str, where: str = "(in memory)"
                     ) -> dict[str, np.ndarray]:
  """Loaded arrays of format `fmt` -> PaddleVideo names and layouts (see `read_pretrained`)."""
  if fmt == "big_vision":
    state = _vit_from_big_vision(arrays, where)
  elif fmt == "timm":
    state = _from_timm(arrays)
  elif fmt == "mae":
    state = _from_timm(_vit_from_mae(arrays, where))
  elif fmt in ("paddle", "paddleclas", "vidtx"):
    state = dict(arrays)
  else:
    raise VidtxError(f"config.init_from.format={fmt!r}; expected one of {list(INIT_FORMATS)}")
  if any(k.startswith("backbone.") for k in state):  # already a PaddleVideo backbone
    return state
  return {"backbone." + k: v for k, v in state.items()}
