"""Every experiment config builds its model at full size and runs end to end with smoke=True."""
import glob
import importlib
import os

import jax
import numpy as np
import pytest

from vidtx import evaluate, flops, models, sharding, trainer

CONFIGS = sorted(os.path.splitext(os.path.basename(p))[0]
                 for p in glob.glob(os.path.join(os.path.dirname(__file__), "..", "configs", "*.py"))
                 if not os.path.basename(p).startswith(("_", "common")))
# Each config with the arguments that select its variants (the first is its default).
VARIANTS = {
    "pptimesformer_k400": ["frames=8", "frames=16"],
    "pptsm_k400": ["depth=50,sampling=uniform", "depth=101,sampling=dense"],
    "videoswin_k400": ["variant=tiny", "variant=small", "variant=base"],
    "vivit_k400": ["model=factorised_encoder", "model=spatio_temporal", "recipe=mxmark"],
    "timesformer_k400": ["attention=divided_space_time", "attention=joint_space_time", "attention=space_only"],
    "demo": ["temporal=True", "temporal=False"],
    "videomae_k400": ["finetune", "pretrain", "pretrain,variant=large", "variant=small"],
}
EXPECTED = {"demo", "tokshift_ucf101", "timesformer_k400", "pptimesformer_k400", "vivit_k400",
            "timesformer_k600", "pptsm_k400", "videoswin_k400"}


def get_config(name, arg=""):
  return importlib.import_module(f"configs.{name}").get_config(arg)


def test_every_seed_family_has_its_config():
  assert EXPECTED <= set(CONFIGS)


def test_every_registered_family_has_a_config():
  used = {get_config(name, arg).model.name for name in CONFIGS for arg in VARIANTS.get(name, [""])}
  assert set(models.MODELS) <= used, sorted(set(models.MODELS) - used)


@pytest.mark.parametrize("name,arg", [(n, a) for n in CONFIGS for a in VARIANTS.get(n, [""])])
def test_full_size_config_builds_its_model(name, arg):
  config = get_config(name, arg)
  for key in ("num_classes", "num_frames", "image_size", "dtype"):
    assert key in config.model
  assert config.data.num_frames == config.model.num_frames
  assert config.data.image_size == config.model.image_size
  model = models.build(config.model)
  params = models.abstract_variables(model, config.model)
  assert flops.count_params(params["params"]) > 0


# Each experiment trains end to end (the demo's run is the shared one; the others are the slow tier).
@pytest.mark.parametrize("name", [n if n == "demo" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in CONFIGS])
def test_smoke_config_trains_and_validates(name, request, smoke_data_dir, tmp_path):
  if name == "demo":  # the shared trained run (conftest) is the demo's smoke run
    config, workdir, metrics = request.getfixturevalue("trained")
  else:
    config = get_config(name, "smoke=True")
    config.data.dir = smoke_data_dir
    config.train.checkpoint_every = 2  # two checkpoints: the parameters of both are compared
    workdir = str(tmp_path)
    metrics = trainer.train_and_evaluate(config, workdir)
  assert np.isfinite(metrics["loss"]), metrics
  assert 0.0 <= metrics["val_top1"] <= 1.0
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")))
  assert len(steps) >= 2, steps
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  first, last = (jax.device_get(evaluate.restore_model(config, os.path.join(workdir, "checkpoints",
                                                                            str(s)), mesh)[1])
                 for s in (steps[0], steps[-1]))
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(last["params"]))
  changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(first["params"]),
                                                      jax.tree.leaves(last["params"]))]
  assert sum(changed) > len(changed) / 2, f"{sum(changed)} of {len(changed)} parameters changed"
