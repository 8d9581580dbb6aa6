"""Pretraining checkpoints of other formats -> PaddleVideo names and layouts.

  paddle      a PaddleVideo checkpoint (.pdparams): a whole model, or the backbone weights its
              `pretrained=` option loads (names without `backbone.`, which is then added)
  paddleclas  a PaddleClas image checkpoint (ViT / Swin 2D / ResNet-vd .pdparams): `backbone.`
              added; its classifier is never loaded
  big_vision  a big_vision / google ViT .npz: renamed to PaddleClas's ViT names
  timm        a timm ViT .safetensors: PaddleClas's names, torch Linear weights transposed

The engine (vidtx.convert.engine.init_from) then maps the Paddle names onto the model.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from vidtx.convert.readers import load_npz, load_pdparams, load_safetensors
from vidtx.errors import VidtxError

INIT_FORMATS = ("paddle", "paddleclas", "big_vision", "timm")


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


def read_pretrained(path: str, fmt: str) -> dict[str, np.ndarray]:
  """A pretraining checkpoint -> {PaddleVideo name ('backbone.X' / 'head.X'): Paddle-layout array}."""
  readers = {"paddle": load_pdparams, "paddleclas": load_pdparams, "big_vision": load_npz,
             "timm": load_safetensors}
  if fmt not in readers:
    raise VidtxError(f"config.init_from.format={fmt!r}; expected one of {list(INIT_FORMATS)}")
  return pretrained_state(readers[fmt](path), fmt, path)


def pretrained_state(arrays: Mapping[str, np.ndarray], fmt: str, where: str = "(in memory)"
                     ) -> dict[str, np.ndarray]:
  """Loaded arrays of format `fmt` -> PaddleVideo names and layouts (see `read_pretrained`)."""
  if fmt == "big_vision":
    state = _vit_from_big_vision(arrays, where)
  elif fmt == "timm":
    state = _from_timm(arrays)
  elif fmt in ("paddle", "paddleclas"):
    state = dict(arrays)
  else:
    raise VidtxError(f"config.init_from.format={fmt!r}; expected one of {list(INIT_FORMATS)}")
  if any(k.startswith("backbone.") for k in state):  # already a PaddleVideo backbone
    return state
  return {"backbone." + k: v for k, v in state.items()}
