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
      device_batch_size=_unset(int),  # per-device micro-batch cap; unset = no accumulation
      num_steps=_unset(int), num_epochs=_unset(float),
      label_smoothing=0.0,
      # What each block keeps for the backward pass: none (everything), full, dots_saveable,
      # dots_with_no_batch_dims_saveable (vidtx.models.vit.REMAT_POLICIES): memory for compute.
      remat="none",
      # Identical blocks run as one scanned block (compiled once: faster compiles on deep
      # models); the parameters and checkpoints are the same as unscanned (vidtx.models.vit).
      scan_blocks=False,
      log_every=50,
      val_every=500,            # steps; 0 = only at the end
      checkpoint_every=500,
      keep_checkpoints=3,
      # The input is this many independent streams (at least one per process), each global batch
      # an equal share of each: every process count dividing it sees the same batches, so a run
      # moves between them (vidtx/multihost.py). More streams, more pipelines per host.
      input_streams=2,
      precise_bn_batches=0,     # > 0: PaddleVideo's precise BN over this many batches before validating
      peak_flops_per_device=0.0,  # for MFU; 0: from the device kind (vidtx.flops.PEAK_BF16_FLOPS)
      # > 0: a jax.profiler trace of this many steps after warm-up, in <workdir>/profile
      # (TensorBoard's profile plugin reads it).
      profile_steps=0,
      mix=ml_collections.ConfigDict(dict(kind="none", mixup_alpha=0.2, cutmix_alpha=1.0, cutmix_prob=0.5)),
      # On the accelerator (dm-pix), one draw per clip; each applied with probability `prob`.
      color_jitter=ml_collections.ConfigDict(dict(brightness=0.0, contrast=0.0, saturation=0.0,
                                                  hue=0.0, prob=1.0)),
  ))
  c.optim = ml_collections.ConfigDict(dict(
      name="sgd", lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.0,
      b1=0.9, b2=0.999, eps=1e-8,
      schedule="warmup_cosine", warmup_steps=_unset(int), warmup_epochs=_unset(float),
      warmup_init_lr=0.0, end_lr=0.0,
      milestones_epochs=None, milestones_steps=None, gamma=0.1,
      clip_grad_norm=_unset(float),
      # Optimizer moments (momentum; Adam's first moment) in bfloat16 halve their memory;
      # float32 is the seeds' recipe.
      moments_dtype="float32",
      no_decay=[], no_decay_1d=False, lr_mults=[],
      weight_decay_end=_unset(float),  # set: weight decay follows a cosine to it over the run
      layer_decay=1.0,  # < 1: layer-wise LR decay, decay ** (blocks + 1 - depth) (vidtx.optim)
      # Partial fine-tuning: parameters matching a regex ('/'-joined paths) are frozen (no update,
      # no optimizer state, no weight decay); linear_probe: everything but head/ is frozen.
      freeze=[], linear_probe=False,
      # Stochastic weight averaging from start_(steps|epochs), every every_(steps|epochs) (1 step);
      # its weights are validated and kept in <workdir>/swa. Off while no start is set.
      swa=ml_collections.ConfigDict(dict(start_steps=_unset(int), start_epochs=_unset(float),
                                         every_steps=_unset(int), every_epochs=_unset(float))),
  ))
  # Distillation: a frozen teacher checkpoint (a workdir or checkpoint directory of a model that
  # takes the same clips and classes); loss = (1 - weight) * CE + weight * T^2 KL(teacher || student).
  c.distill = ml_collections.ConfigDict(dict(teacher="", weight=0.5, temperature=1.0))
  c.eval = ml_collections.ConfigDict(dict(batch_size=16, averaging="score"))
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.sharding = ml_collections.ConfigDict(dict(rules=None))
  c.init_from = ml_collections.ConfigDict(dict(path="", format="", options={}))
  return c


def _unset(kind: type):
  """A field that is None until set, and can be set from the command line (--config.x=3)."""
  return ml_collections.config_dict.placeholder(kind)


def data_root() -> str:
  """Default parent of prepared real datasets ($VIDTX_DATA, else ~/vidtx_data)."""
  return os.environ.get("VIDTX_DATA", os.path.join(os.path.expanduser("~"), "vidtx_data"))


def data_config(**overrides) -> ml_collections.ConfigDict:
  """A `config.data` section with the common defaults: the one schema of config.data.

  Every key the data code reads is here; `vidtx.data.config.check` validates the section once
  when a pipeline is made. An override of a key that is not here is an error (a typo).
  """
  d = ml_collections.ConfigDict(dict(
      name="prepared",          # "synthetic": made on first use from `synthetic` (below)
      dir="",                   # the prepared dataset (data_prep/)
      synthetic=None,           # name="synthetic": vidtx.data.synthetic.ensure_synthetic_dataset kwargs
      train_split="train", val_split="validation", test_split="validation",
      # Clips (vidtx.data.sampling): sampling "segment" | "dense" | "linspace"; frame_interval:
      # dense stride, or linspace window = num_frames * frame_interval frames (0: whole video),
      # scaled by fps / target_fps where target_fps > 0.
      num_frames=8, sampling="segment", frame_interval=0, target_fps=0.0,
      test_sampling="",  # "" = the training sampling mode
      test_window_placement="centre",  # test windows of dense / linspace: "centre" | "linspace"
      image_size=224,
      # Training crop: a crop op of vidtx.data.augment, and the keys of each op.
      train_aug="scale_jitter",
      scale_jitter=(256, 320),  # scale_jitter: short side drawn from [min, max]
      rrc_area=(0.08, 1.0), rrc_ratio=(3 / 4, 4 / 3),  # random_resized_crop
      msc_scales=(1, .875, .75, .66),  # multi_scale_crop; msc_size below
      flip=True,
      auto_augment="",  # "rand-m9-n2": RandAugment per clip after the crop (vidtx.data.randaugment)
      fixed_ratio=False,  # Paddle Scale(fixed_ratio=True): frames squashed to 4:3 first
      eval_short_side=256, test_clips=1, test_crops=1,
      # Test protocol (vidtx.data.protocol, docs/protocols.md): named window, sampler, resize
      # and crop functions; the seed configs name those that reproduce their seed's.
      test_window="whole",      # "whole" | "pyav_test" (PaddleVideo's pyav decoder, test mode)
      test_window_seconds=0.0,  # pyav_test: sampling_rate * num_seg / target_fps (32 * 8 / 30)
      test_sampler="vidtx",     # "vidtx": vidtx.data.sampling in mode test_sampling
      test_resize="round",      # short side eval_short_side, long side rounded (4:3: fixed_ratio)
      test_crop="vidtx",        # 1: centre; 3: along the longer side (PaddleVideo UniformCrop)
      test_interpolation="bilinear",  # or "bilinear_antialias" (PIL's BILINEAR)
      # How predict decodes a video for a checkpoint that records no preparation (converted):
      # "vidtx" (its defaults) | the seed's decoder ("paddle_pyav", "paddle_decord", "mxmark_decord").
      test_decoder="vidtx",
      mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225),
      shuffle_buffer=256,
      num_threads=_unset(int),  # tf.data private thread pool; unset = tf.data's shared pool
      read_sampled_frames=True,  # where the dataset has a frame index (object stores: False)
  ))
  # Paddle's MultiScaleCrop(256) before RandomCrop(224); follows image_size unless set.
  d.msc_size = d.get_ref("image_size") * 8 // 7
  unknown = sorted(set(overrides) - set(d))
  if unknown:
    raise ValueError(f"data_config: unknown key(s) {unknown}; known: {sorted(d)}")
  d.update(overrides)
  return d


def apply_smoke(c: ml_collections.ConfigDict, **model_overrides) -> ml_collections.ConfigDict:
  """Shrinks an experiment to seconds on a CPU: a tiny model, the tiny synthetic dataset, 4 steps.

  The data section keeps its sampling, augmentation and test views (so they are exercised),
  at sizes the synthetic frames (short side 40) allow.
  """
  c.model.update(num_classes=5, image_size=32, dtype="float32", **model_overrides)
  c.data.num_frames = c.model.num_frames
  c.data.update(
      name="synthetic", dir=os.path.join(cache_dir(), "synthetic_motion_smoke"),
      train_split="train", val_split="test", test_split="test",
      image_size=32, scale_jitter=(32, 40), eval_short_side=32, test_clips=min(c.data.test_clips, 2))
  c.data.synthetic = dict(num_classes=5, videos_per_class=4, seed=0, size=64, num_frames=32, short_side=40)
  c.data.msc_size = 36  # image_size * 8 // 7, also where a config set it (PP-TSM: 256)
  c.train.update(batch_size=8, device_batch_size=None, num_steps=4, num_epochs=None,
                 log_every=2, val_every=4, checkpoint_every=4,
                 precise_bn_batches=min(c.train.precise_bn_batches, 2))
  c.optim.update(warmup_steps=1, warmup_epochs=None, milestones_epochs=None, milestones_steps=[3])
  c.eval.batch_size = 8
  c.init_from.path = ""
  return c
