"""mx-mark/VideoTransformer-pytorch checkpoints -> vidtx variables.

Their released models are PyTorch Lightning checkpoints (`{'state_dict': ..., 'epoch',
'global_step', 'optimizer_states', ...}`) whose `state_dict` holds the backbone under `model.`
and the classifier under `cls_head.cls_head.`; a plain state dict of the same names works too.
Each family says the name of each of our variables (`Family.mxmark_name`); layouts are
torch's: `Linear.weight` is `[out, in]` (our Dense kernel transposed), `ConvND.weight`
`[out, in, *k]` (as Paddle's).
"""
from __future__ import annotations

import numpy as np
from flax import traverse_util

from vidtx import models
from vidtx.convert import engine, torch_files
from vidtx.errors import VidtxError


def to_our_layout(array: np.ndarray, path: tuple) -> np.ndarray:
  """torch layout -> ours: Linear [out, in] -> [in, out]; convolutions as Paddle's."""
  if path[-1] == "kernel" and array.ndim == 2:
    return array.T
  return engine.to_our_layout(array, path)


def to_torch_layout(array: np.ndarray, path: tuple) -> np.ndarray:
  """Our layout -> torch's (inverse of `to_our_layout`)."""
  if path[-1] == "kernel" and array.ndim == 2:
    return array.T
  return engine.to_paddle_layout(array, path)


def to_mxmark(variables, config) -> dict[str, np.ndarray]:
  """Our variables -> {mx-mark name: array in torch's layout} (the inverse of from_mxmark)."""
  model_config = engine.model_section(config)
  family, model = models.get_family(model_config.name), models.build(model_config)
  state = {}
  for ours, leaf in traverse_util.flatten_dict(variables).items():
    name = family.mxmark_name(ours, model)
    if name is None:
      raise VidtxError(f"{'/'.join(ours)} has no mx-mark counterpart")
    state[name] = to_torch_layout(np.asarray(leaf.value if hasattr(leaf, "unbox") else leaf), ours)
  return state


def read_state(path) -> dict[str, np.ndarray]:
  """A .pth / .ckpt file (or an already loaded {name: array}) -> {name: array}."""
  if isinstance(path, str):
    return torch_files.state_dict(torch_files.load_torch(path), path)
  return dict(path)


def _name(ours, family, model):
  return family.mxmark_name(ours, model)


def from_mxmark(path, config) -> dict:
  """An mx-mark checkpoint -> {'params': ..., 'batch_stats': {}} for `config`'s model.

  `config`: the experiment config or its model section, which must be the mx-mark variant of
  the model (configs/timesformer_k600.py; configs/vivit_k400.py:recipe=mxmark). Every variable
  must be in the checkpoint and every entry used, as `from_paddle`.
  """
  model_config = engine.model_section(config)
  if models.get_family(model_config.name).mxmark_name is None:
    raise VidtxError(f"model {model_config.name!r} has no mx-mark counterpart; mx-mark has "
                     "TimeSformer and ViViT")
  where = path if isinstance(path, str) else "(in memory)"
  return engine.load_named(read_state(path), model_config, _name, to_our_layout, where,
                           "mx-mark checkpoint")
