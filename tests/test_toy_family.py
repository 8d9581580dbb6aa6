"""A new model family is one module, one registry entry and one config: a toy family declared in a
temporary module goes through train -> eval -> predict -> visualize -> to_paddle / from_paddle,
and nothing else in the repository knows about it."""
import dataclasses
import importlib.util
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from flax import traverse_util

from vidtx import convert, evaluate, flops, models, sharding, trainer, visualize
from vidtx.errors import VidtxError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TOY_MODULE = '''
"""Toy: a per-frame 3x3 conv with BatchNorm, averaged over time and space, and a classifier."""
import flax.linen as nn

from vidtx.models import explain, vit
from vidtx.models.family import Family, Published


class Toy(nn.Module):
  num_classes: int = 5
  num_frames: int = 4
  image_size: int = 32
  dtype: str = "float32"
  width: int = 8
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, video, *, train: bool):
    dtype = vit.compute_dtype(self.dtype)
    x = nn.Conv(self.width, (1, 3, 3), dtype=dtype, name="stem", kernel_init=nn.with_logical_partitioning(
        nn.initializers.lecun_normal(), (None, None, None, None, "toy_channels")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("toy_channels",)))(video.astype(dtype))
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=dtype, name="bn",
                     scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
                     bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))(x)
    x = nn.Dropout(self.dropout_rate)(nn.relu(x).mean(axis=(1, 2, 3)), deterministic=not train)
    return vit.Head(self.num_classes, name="head")(x)


def grad_cam_map(model, variables, video, *, data_config):
  return explain.grad_cam_maps(model, variables, video, ("bn",))


FAMILY = Family(
    module=Toy,
    tiny={"default": dict(num_frames=4, image_size=32, width=8)},
    # Counted by hand: conv 3*3*3*8 + 8, BatchNorm 2*8, head 8*5 + 5; MACs 4*32*32*8 * 27 + 8*5.
    published=(Published("Toy 4x32", dict(num_classes=5, num_frames=4, image_size=32, width=8),
                         params=285, gmacs=884776e-9, source="counted by hand"),),
    non_structural=("dtype", "dropout_rate"),
    bn_momentum=0.9,
    axis_rules=(("toy_channels", "fsdp"),),
    paddle_renames={"stem": "conv1"},
    explain=grad_cam_map,
)
'''

TOY_CONFIG = '''
import ml_collections

from configs import common


def get_config(arg=None):
  c = common.base_config()
  c.model = ml_collections.ConfigDict(dict(name="toy", num_classes=5, num_frames=4, image_size=32,
                                           dtype="float32", width=8))
  c.data = common.data_config(num_frames=4, image_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
  c.train.precise_bn_batches = 2  # its BatchNorm momentum comes from the family
  common.apply_smoke(c)
  c.train.update(num_steps=2, val_every=2, checkpoint_every=2, log_every=1)
  return c
'''


@pytest.fixture
def toy(tmp_path, monkeypatch, smoke_data_dir):
  """The toy family registered as `toy` (one module, one registry entry) and its config."""
  (tmp_path / "toy_family.py").write_text(TOY_MODULE)
  (tmp_path / "toy_config.py").write_text(TOY_CONFIG)
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.setitem(models.MODELS, "toy", "toy_family")
  spec = importlib.util.spec_from_file_location("toy_config", tmp_path / "toy_config.py")
  toy_config = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(toy_config)
  config = toy_config.get_config()
  config.data.dir = smoke_data_dir
  yield config, tmp_path
  sys.modules.pop("toy_family", None)


def test_toy_family_trains_evaluates_predicts_and_converts(toy, smoke_data_dir, capsys):
  config, tmp_path = toy
  family = models.get_family("toy")
  assert sharding.default_rules("toy")[-1] == ("toy_channels", "fsdp")
  (name, entry), = [(n, e) for n, e in flops.published() if n == "toy"]
  params, macs = flops.measure(models.build(dict(entry.model, name=name)), 4, 32)
  assert params == entry.params and math.isclose(macs.total() / 1e9, entry.gmacs)

  workdir = str(tmp_path / "run")
  metrics = trainer.train_and_evaluate(config, workdir)
  assert np.isfinite(metrics["loss"]) and 0.0 <= metrics["val_top1"] <= 1.0
  assert "precise BN" in capsys.readouterr().out
  mesh = sharding.make_mesh(config.mesh)
  result = evaluate.test_protocol(config, workdir, mesh)
  assert result["num_videos"] > 0 and 0.0 <= result["top1"] <= 1.0

  # predict.py itself, in a process that adds the same registry entry before running it.
  video = sorted(p for d, _, files in os.walk(smoke_data_dir + "_videos") for p in
                 (os.path.join(d, f) for f in files) if p.endswith(".avi"))[0]
  script = textwrap.dedent(f"""
      import runpy, sys
      sys.path.insert(0, {str(tmp_path)!r})
      from vidtx import models
      models.MODELS["toy"] = "toy_family"
      sys.argv = ["predict.py", "--config={tmp_path / 'toy_config.py'}",
                  "--config.data.dir={smoke_data_dir}", "--checkpoint={workdir}", {video!r}]
      runpy.run_path("predict.py", run_name="__main__")
      """)
  run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
  assert run.returncode == 0, run.stderr
  assert run.stdout.startswith(f"{video}:") and "%" in run.stdout

  model, variables, _ = evaluate.restore_model(config, workdir, mesh)
  assert models.family_of(model) is family
  clip = np.random.RandomState(0).randint(0, 255, (4, 32, 32, 3)).astype(np.uint8)
  picture = visualize.model_maps(model, variables, clip, config.data)
  assert picture.kind == "grad-cam" and picture.maps.shape == (4, 32, 32)
  written = picture.write(str(tmp_path / "maps"), "clip", clip, [f"c{i}" for i in range(5)])
  assert list(written) == ["predicted", "grad-cam map in"] and (tmp_path / "maps" / "clip.gif").exists()
  state = convert.to_paddle(variables, config)
  assert state["backbone.conv1.weight"].shape == (8, 3, 1, 3, 3)   # renamed, Paddle's layout
  assert {"backbone.bn._mean", "backbone.bn._variance", "head.fc.weight"} <= set(state)
  path = str(tmp_path / "toy.pdparams")
  convert.save_pdparams(state, path)
  back = traverse_util.flatten_dict(convert.from_paddle(path, config))
  ours = traverse_util.flatten_dict({k: variables[k] for k in ("params", "batch_stats")})
  assert sorted(back) == sorted(ours)
  for key, value in ours.items():
    np.testing.assert_array_equal(back[key], np.asarray(value), err_msg=str(key))


def test_a_family_without_a_picture_is_one_clear_line(toy, monkeypatch):
  import toy_family  # pylint: disable=g-import-not-at-top  (the fixture's module)
  monkeypatch.setattr(toy_family, "FAMILY", dataclasses.replace(toy_family.FAMILY, explain=None))
  model = models.build(models.tiny_config("toy"))
  with pytest.raises(VidtxError, match="model Toy has no picture: its family declares no Family.explain"):
    visualize.video_maps(model, {}, np.zeros((1, 4, 32, 32, 3), np.float32))
