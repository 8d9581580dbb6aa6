"""Model registry: `build(config.model)` turns a model config into a Flax module.

A new model is one file in this package plus one line in `MODELS`.
"""
from __future__ import annotations

import dataclasses
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidtx.errors import VidtxError

# name -> "module:Class" (imported on first use, so one family's import cost is not everyone's).
MODELS = {
    "tokshift": "vidtx.models.tokshift:TokShift",
    "timesformer": "vidtx.models.timesformer:TimeSformer",
    "vivit": "vidtx.models.vivit:ViViT",
    "swin": "vidtx.models.swin:SwinTransformer3D",
    "tsm": "vidtx.models.tsm:TSM",
}


def model_class(name: str) -> type[nn.Module]:
  if name not in MODELS:
    raise VidtxError(f"config.model.name={name!r} is not a model; known: {sorted(MODELS)}")
  module_name, class_name = MODELS[name].split(":")
  return getattr(importlib.import_module(module_name), class_name)


def _plain(value):
  """ConfigDict values -> hashable module fields (lists become tuples)."""
  if isinstance(value, (list, tuple)):
    return tuple(_plain(v) for v in value)
  return value


def build(model_config) -> nn.Module:
  """Builds the model that `model_config` (config.model) describes.

  `model_config.name` picks the class; every other key must be a field of it.
  """
  config = dict(model_config)
  name = config.pop("name", None)
  if name is None:
    raise VidtxError("config.model.name is missing")
  cls = model_class(name)
  fields = {f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")}
  unknown = sorted(set(config) - fields)
  if unknown:
    raise VidtxError(
        f"config.model has keys that model {name!r} does not take: {unknown}; "
        f"its fields are {sorted(fields)}")
  return cls(**{k: _plain(v) for k, v in config.items()})


def dummy_video(model_config, batch: int = 1) -> jax.ShapeDtypeStruct:
  """The shape of a float video batch the model described by `model_config` takes."""
  size = model_config.image_size
  return jax.ShapeDtypeStruct((batch, model_config.num_frames, size, size, 3), jnp.float32)


def abstract_variables(model: nn.Module, model_config, rng) -> dict:
  """Shapes of the model's variables, still boxed with their logical axis names."""
  return jax.eval_shape(
      lambda r: model.init({"params": r, "dropout": r}, jnp.zeros(dummy_video(model_config).shape),
                           train=False), rng)
