"""MCG-NJU/VideoMAE's released checkpoints (.pth, read without PyTorch) -> vidtx variables.

Fine-tuned classifiers (`{'module': ...}` or `{'model': ...}`): `patch_embed.proj`,
`blocks.<i>.…`, `fc_norm`, `head`; pretraining models (`{'model': ...}`): `encoder.patch_embed`,
`encoder.blocks.<i>.…`, `encoder.norm`, `encoder_to_decoder`, `mask_token`, `decoder.blocks.<i>.…`,
`decoder.norm`, `decoder.head`. Their attention's `q_bias` / `v_bias` become our qkv bias
(pretrained.plain_blocks); the fixed sine-cosine position tables are not in the files (nor
parameters of ours). Layouts are torch's (mxmark.to_our_layout).
"""
from __future__ import annotations

import re

from vidtx.convert import engine, mxmark, pretrained
from vidtx.errors import VidtxError

# Our top-level modules -> the official names, for the pretraining model.
_PRETRAIN = {"patch_embed": "encoder.patch_embed", "norm": "encoder.norm",
             "decoder_norm": "decoder.norm", "decoder_head": "decoder.head"}


def official_name(path: tuple, family=None, model=None) -> str:
  """Our variable path -> the official state-dict name (model: fine-tune or pretraining)."""
  del family
  *modules, leaf = path[1:]
  if not modules:  # mask_token
    return leaf
  leaf = "weight" if leaf in ("kernel", "scale") else leaf
  top, rest = modules[0], modules[1:]
  block = re.match(r"^(decoder_blocks|blocks)_(\d+)$", top)
  if block:
    owner = "decoder." if block[1] == "decoder_blocks" else ("encoder." if model.pretrain else "")
    top = f"{owner}blocks.{block[2]}"
  elif model.pretrain:
    top = _PRETRAIN.get(top, top)
  elif top == "head":
    rest = []  # our head/fc is their `head`
  return ".".join([top, *rest, leaf])


def from_videomae(path, config) -> dict:
  """A VideoMAE checkpoint -> {'params': ..., 'batch_stats': {}} for `config`'s model
  (configs/videomae_k400.py: `pretrain` for the pretraining files, with the decoder).

  `path`: a .pth file (or an already loaded {name: array}); `config`: the experiment config or
  its model section. Every variable must be in the file with its shape and every entry used
  (engine.load_named lists what is missing, unexpected and mismatched).
  """
  model_config = engine.model_section(config)
  if model_config.name != "videomae":
    raise VidtxError(f"config.model.name={model_config.name!r}: VideoMAE checkpoints load into "
                     "model 'videomae' (configs/videomae_k400.py)")
  where = path if isinstance(path, str) else "(in memory)"
  state = pretrained.plain_blocks(mxmark.read_state(path))
  pretraining = any(k.startswith("encoder.") for k in state)
  if pretraining != bool(model_config.pretrain):
    kind, arg = ("a pretraining", "pretrain") if pretraining else ("a fine-tuned", "finetune")
    raise VidtxError(f"{where} is {kind} VideoMAE checkpoint but config.model.pretrain="
                     f"{bool(model_config.pretrain)}: use configs/videomae_k400.py:{arg}")
  return engine.load_named(state, model_config, official_name, mxmark.to_our_layout, where,
                           "VideoMAE checkpoint")
