"""Pieces every experiment config shares: argument parsing and the default sections.

A config file exposes `get_config(arg=None)`; `arg` is a comma-separated
`key=value` string (`configs/videoswin_k400.py:variant=small,smoke=True`).
"""
from __future__ import annotations

import os

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """`'a=1,b=x'` -> ConfigDict, typed like `defaults`; unknown keys are an error."""
  result = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep:
      raise ValueError(f"config argument {item!r} is not key=value")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
    default = defaults[key]
    if isinstance(default, bool):
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"config argument {key} must be true or false, got {value!r}")
      result[key] = value.lower() in ("true", "1")
    else:
      result[key] = type(default)(value) if default is not None else value
  return result


def cache_dir() -> str:
  """Where prepared built-in datasets are cached ($VIDTX_CACHE, else ~/.cache/vidtx)."""
  return os.environ.get("VIDTX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "vidtx"))


def base_config() -> ml_collections.ConfigDict:
  """Defaults for the sections every experiment has; configs override what they need."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.train = ml_collections.ConfigDict(dict(
      batch_size=64,            # global, over all devices and accumulation steps
      device_batch_size=None,   # per-device micro-batch cap; None = no accumulation
      num_steps=None, num_epochs=None,
      label_smoothing=0.0,
      log_every=50,
      val_every=500,            # steps; 0 = only at the end
      checkpoint_every=500,
      keep_checkpoints=3,
      mix=ml_collections.ConfigDict(dict(kind="none", mixup_alpha=0.2, cutmix_alpha=1.0, cutmix_prob=0.5)),
  ))
  c.optim = ml_collections.ConfigDict(dict(
      name="sgd", lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.0,
      b1=0.9, b2=0.999, eps=1e-8,
      schedule="warmup_cosine", warmup_steps=None, warmup_epochs=None, warmup_init_lr=0.0, end_lr=0.0,
      milestones_epochs=None, milestones_steps=None, gamma=0.1,
      clip_grad_norm=None,
      no_decay=[], no_decay_1d=False, lr_mults=[],
  ))
  c.eval = ml_collections.ConfigDict(dict(batch_size=16, averaging="score"))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.sharding = ml_collections.ConfigDict(dict(rules=None))
  c.init_from = ml_collections.ConfigDict(dict(path="", format="", options={}))
  return c
