"""Model registry: `build(config.model)` turns a model config into a Flax module.

A new model family is one module in this package that declares `FAMILY = Family(...)`
(vidtx/models/family.py), plus one line in `MODELS`.
"""
from __future__ import annotations

import dataclasses
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidtx.errors import VidtxError
from vidtx.models.family import Family, Published  # noqa: F401  (re-exported)

# name -> module declaring FAMILY (imported on first use, so one family's import cost is not
# everyone's).
MODELS = {
    "tokshift": "vidtx.models.tokshift",
    "timesformer": "vidtx.models.timesformer",
    "vivit": "vidtx.models.vivit",
    "swin": "vidtx.models.swin",
    "tsm": "vidtx.models.tsm",
    "videomae": "vidtx.models.videomae",
}


def get_family(name: str) -> Family:
  """The family registered as `name` (config.model.name)."""
  if name not in MODELS:
    raise VidtxError(f"config.model.name={name!r} is not a model; known: {sorted(MODELS)}")
  declared = getattr(importlib.import_module(MODELS[name]), "FAMILY", None)
  if not isinstance(declared, Family):
    raise VidtxError(f"model {name!r}: {MODELS[name]} declares no FAMILY = Family(...)")
  return declared


def family_of(model: nn.Module) -> Family:
  """The family whose module `model` is an instance of."""
  for name in MODELS:
    if isinstance(model, get_family(name).module):
      return get_family(name)
  raise VidtxError(f"{type(model).__name__} is no registered model family's module")


def model_class(name: str) -> type[nn.Module]:
  return get_family(name).module


def tiny_config(name: str, variant: str | None = None, **overrides) -> dict:
  """A model config of family `name`'s tiny test variant (the first when `variant` is None)."""
  variants = get_family(name).tiny
  if variant is None:
    variant = next(iter(variants))
  return {"name": name, **variants[variant], **overrides}


def _plain(value):
  """ConfigDict values -> hashable module fields (lists become tuples)."""
  if isinstance(value, (list, tuple)):
    return tuple(_plain(v) for v in value)
  return value


# Module fields set by the trainer, not by config.model (they change how a step runs, not the model).
TRAINING_FIELDS = ("remat", "scan_blocks")


def build(model_config, *, remat: str = "none", scan_blocks: bool = False) -> nn.Module:
  """Builds the model that `model_config` (config.model) describes.

  `model_config.name` picks the class; every other key must be a field of it. `remat`
  (config.train.remat, a `vit.REMAT_POLICIES` name) rematerialises the family's blocks;
  `scan_blocks` (config.train.scan_blocks) runs them as one scanned block (vit.run_blocks).
  """
  config = dict(model_config)
  name = config.pop("name", None)
  if name is None:
    raise VidtxError("config.model.name is missing")
  cls = model_class(name)
  fields = {f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")}
  unknown = sorted(set(config) - (fields - set(TRAINING_FIELDS)))
  if unknown:
    raise VidtxError(
        f"config.model has keys that model {name!r} does not take: {unknown}; "
        f"its fields are {sorted(fields - set(TRAINING_FIELDS))}")
  if remat != "none":
    from vidtx.models import vit  # pylint: disable=g-import-not-at-top
    if remat not in vit.REMAT_POLICIES:
      raise VidtxError(f"config.train.remat={remat!r}; expected one of {list(vit.REMAT_POLICIES)}")
    if "remat" not in fields:
      raise VidtxError(f"config.train.remat={remat!r}: model {name!r} has no rematerialisable "
                       "blocks (its module has no `remat` field); use 'none'")
    config["remat"] = remat
  if scan_blocks:
    if "scan_blocks" not in fields:
      raise VidtxError(f"config.train.scan_blocks=True: model {name!r} does not scan its blocks "
                       "(TokShift, TimeSformer and ViViT do); set it to False")
    config["scan_blocks"] = True
  return cls(**{k: _plain(v) for k, v in config.items()})


def dummy_video(model_config, batch: int = 1) -> jax.ShapeDtypeStruct:
  """The shape of a float video batch the model described by `model_config` takes."""
  size = model_config["image_size"]
  return jax.ShapeDtypeStruct((batch, model_config["num_frames"], size, size, 3), jnp.float32)


def abstract_variables(model: nn.Module, model_config, rng=None, batch: int = 1) -> dict:
  """Shapes of the model's variables on a `dummy_video`, still boxed with their logical axis
  names; nothing is allocated or computed."""
  rng = jax.random.key(0) if rng is None else rng
  return jax.eval_shape(lambda r, v: model.init({"params": r, "dropout": r}, v, train=False),
                        rng, dummy_video(model_config, batch))


def jit_init(fun, **jit_kwargs):
  """`jax.jit` for a program run once to draw initial weights (`model.init`, a fresh train state).

  XLA:CPU spends seconds optimising the unrolled threefry of every initializer for a program that
  runs in milliseconds (the smoke PP-TSM's: 7.7 s to compile, 17 ms to run). On the CPU it is
  compiled without backend optimisation (2.1 s); the bits drawn are the same.
  """
  if jax.default_backend() == "cpu":
    jit_kwargs["compiler_options"] = {"xla_backend_optimization_level": 0}
  return jax.jit(fun, **jit_kwargs)
