"""A converted seed checkpoint predicts as its seed tests: predict.py's views of a video with
non-square pixels equal the views PaddleVideo's own test pipelines give (tests/golden/views/,
made by tests/golden/views/make_views.py from PaddleVideo's pipeline code)."""
import json
import os

import ml_collections
import numpy as np
import pytest
from flax import traverse_util

import predict
from vidtx import convert, export, models
from vidtx.errors import VidtxError

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "views")
VIDEO = os.path.join(GOLDEN, "sar4x3.mp4")


def seed_config(name):
  """The seed config of golden pipeline `name` at the golden files' sizes (crops of 32 pixels,
  as make_views.py scales the YAMLs), 8 frames as the seed's; the model is a tiny TokShift for
  all (the views do not depend on it: one converted checkpoint serves every case)."""
  from configs import pptsm_k400, timesformer_k400, tokshift_ucf101
  module, short_side = {"timesformer": (timesformer_k400, 32), "tokshift": (tokshift_ucf101, 32),
                        "pptsm": (pptsm_k400, 40)}[name]
  config = module.get_config()
  config.model = ml_collections.ConfigDict(models.tiny_config(
      "tokshift", num_classes=3, num_frames=8, image_size=32, dtype="float32"))
  config.data.update(num_frames=8, image_size=32, eval_short_side=short_side, test_clips=1,
                     test_crops=3 if name != "pptsm" else 1)
  return config


def seed_pixels(name, data):
  """The seed's views (normalised floats in its layout) as 0-255 levels [V, T, H, W, 3]."""
  seed = np.load(os.path.join(GOLDEN, "views.npz"))[name].astype(np.float64)
  if name == "pptsm":  # Image2Array tchw, one crop
    views = seed.transpose(0, 2, 3, 1)[None]
  else:  # Image2Array cthw, UniformCrop / MultiCenterCrop concatenate the crops along t
    views = seed.reshape(3, 3, -1, *seed.shape[2:]).transpose(1, 2, 3, 4, 0)
  return (views * np.asarray(data.std) + np.asarray(data.mean)) * 255


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """A .pdparams of random weights converted as `python -m vidtx.convert paddle` does: no
  preparation recorded."""
  config, tmp = seed_config("tokshift"), tmp_path_factory.mktemp("seed")
  rng = np.random.default_rng(0)
  flat = {p: rng.normal(size=s).astype(np.float32) for p, s in convert.model_shapes(config).items()}
  source = str(tmp / "seed.pdparams")
  convert.save_pdparams(convert.to_paddle(traverse_util.unflatten_dict(flat), config), source)
  out = str(tmp / "converted")
  assert convert.convert_checkpoint(config, source, out)["prepared"] == {}
  return out


# Tolerance, in 0-255 levels. With the seed's decoded pixels, resize and crop boxes, what is left
# is arithmetic: Paddle's F.interpolate resizes the normalised floats and keeps them (PyAV
# pipelines), vidtx resizes the same pixels in float and rounds to uint8: at most 0.5 apart.
# PP-TSM's Scale is PIL's antialiased BILINEAR, which rounds to uint8 between its horizontal and
# vertical passes; vidtx's float filter, rounded once, lands at most 1 level away (on ~20% of
# the values here). Plus float32 error of the seed's normalisation.
TOLERANCE = {"timesformer": 0.5, "tokshift": 0.5, "pptsm": 1.0}


@pytest.mark.parametrize("name", ["timesformer", "tokshift", "pptsm"])
def test_converted_checkpoint_predicts_with_the_seed_test_views(name, converted, capsys):
  with open(os.path.join(GOLDEN, "views.json")) as f:
    assert json.load(f)["video"]["sar"] == "4/3"  # non-square pixels: vidtx's defaults go wrong
  config = seed_config(name)
  predictor = predict.from_checkpoint(config, converted)
  assert f"no preparation recorded in {converted}: decoding as PaddleVideo's" in capsys.readouterr().out
  views = predict.video_views(predictor, VIDEO)
  expected = seed_pixels(name, config.data)
  assert views.dtype == np.uint8 and views.shape == expected.shape, (views.shape, expected.shape)
  diff = np.abs(views - expected)
  assert diff.max() <= TOLERANCE[name] + 1e-3, (diff.max(), diff.mean())
  # The golden views can tell: vidtx's own decode defaults (display aspect, short side 256, JPEG)
  # are far from them.
  predictor.decode = export.decode_settings({}, None)
  assert np.abs(predict.video_views(predictor, VIDEO) - expected).mean() > 2


def test_recorded_preparation_is_kept():
  data = seed_config("timesformer").data
  prepared = {"short_side": 128, "jpeg_quality": 80, "pixel_aspect": "apply"}
  assert export.decode_settings(prepared, data) == dict(prepared, fps=None, max_frames=None)
  assert export.decode_settings({}, data)["pixel_aspect"] == "ignore"
  assert export.decode_settings({}, ml_collections.ConfigDict({"test_decoder": "vidtx"}))["short_side"] == 256
  with pytest.raises(VidtxError, match="config.data.test_decoder='ffmpeg'"):
    export.decode_settings({}, ml_collections.ConfigDict({"test_decoder": "ffmpeg"}))
