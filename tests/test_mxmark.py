"""torch.save files without PyTorch (vidtx.convert.torch_files) and mx-mark checkpoints
(vidtx.convert.from_mxmark). The .pth files are written by tests/torch_writer.py."""
import collections
import json
import pickle

import ml_collections
import numpy as np
import pytest
from flax import traverse_util

import cli_runner
import torch_writer
from vidtx import checkpoint, convert, models
from vidtx.convert import mxmark, torch_files
from vidtx.errors import VidtxError

# Model variants mx-mark has: TimeSformer's three attention types and Conv3d tubelets, ViViT's
# factorised encoder as mx-mark runs it and its joint (spatio-temporal) model.
VARIANTS = [("timesformer", "divided"), ("timesformer", "joint"), ("timesformer", "space_only"),
            ("timesformer", "tubelet"), ("vivit", "mxmark"), ("vivit", "spatio_temporal")]


def tiny(family, variant, **overrides):
  return ml_collections.ConfigDict(models.tiny_config(family, variant, num_classes=3,
                                                      dtype="float32", **overrides))


def random_variables(config, seed=0):
  rng = np.random.default_rng(seed)
  flat = {p: rng.normal(size=s).astype(np.float32) for p, s in convert.model_shapes(config).items()}
  return {"params": traverse_util.unflatten_dict(flat)["params"], "batch_stats": {}}


def lightning_checkpoint(state):
  """A checkpoint as PyTorch Lightning 1.3 (mx-mark's) saves it: callback states keyed by the
  callback class, a MultiStepLR state with a Counter, SGD momentum buffers, the AMP scaler."""
  counter = torch_writer.Call(torch_writer.Global("collections", "Counter"), {5: 1, 11: 1})
  checkpoint_class = torch_writer.Global("pytorch_lightning.callbacks.model_checkpoint",
                                         "ModelCheckpoint")
  return {
      "epoch": 14, "global_step": 96045, "pytorch-lightning_version": "1.3.8",
      "state_dict": collections.OrderedDict(state),
      "callbacks": {checkpoint_class: {"monitor": None, "best_model_path": ""}},
      "optimizer_states": [{"state": {0: {"momentum_buffer": np.ones(3, np.float32)}},
                            "param_groups": [{"lr": 0.005, "params": [0]}]}],
      "lr_schedulers": [{"milestones": counter, "gamma": 0.1}],
      "native_amp_scaling_state": {"scale": 65536.0, "_growth_tracker": 17},
  }


# ----------------------------------------------------------------------------- torch files
@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("transposed", [False, True])
def test_torch_file_dtypes_strides_and_offsets(tmp_path, legacy, transposed):
  rng = np.random.default_rng(0)
  bf16 = torch_writer.BFloat16(rng.normal(size=(2, 3)))
  state = {"f32": rng.normal(size=(3, 4)).astype(np.float32),
           "f16": rng.normal(size=(2, 5)).astype(np.float16),
           "bf16": bf16, "i64": np.arange(6, dtype=np.int64).reshape(2, 3),
           "empty": np.zeros((0, 4), np.float32)}
  path = str(tmp_path / "model.pth")
  torch_writer.save_torch(state, path, legacy=legacy, transposed=transposed)
  loaded = convert.load_torch(path)
  assert sorted(loaded) == sorted(state)
  for name in ("f32", "f16", "i64", "empty"):
    assert loaded[name].dtype == state[name].dtype
    np.testing.assert_array_equal(loaded[name], state[name])
  assert loaded["bf16"].dtype == np.float32  # bfloat16 widened
  np.testing.assert_array_equal(loaded["bf16"], bf16.rounded())


def test_lightning_checkpoint_and_plain_state_dicts(tmp_path):
  weights = {"model.w": np.ones((2, 2), np.float32), "cls_head.cls_head.bias": np.zeros(3, np.float32)}
  path = str(tmp_path / "last_checkpoint.pth")
  torch_writer.save_torch(lightning_checkpoint(weights), path)
  loaded = convert.load_torch(path)
  assert loaded["epoch"] == 14 and loaded["lr_schedulers"][0]["milestones"] == {5: 1, 11: 1}
  callback = next(iter(loaded["callbacks"]))  # a class named, never imported
  assert isinstance(callback, torch_files.Name) and callback.name == "ModelCheckpoint"
  assert sorted(torch_files.state_dict(loaded, path)) == sorted(weights)
  plain = str(tmp_path / "plain.pth")
  torch_writer.save_torch(weights, plain)
  assert sorted(torch_files.state_dict(convert.load_torch(plain), plain)) == sorted(weights)
  mae = str(tmp_path / "mae.pth")
  torch_writer.save_torch({"model": weights, "epoch": 399}, mae)
  assert sorted(torch_files.state_dict(convert.load_torch(mae), mae)) == sorted(weights)


@pytest.mark.parametrize("legacy", [False, True])
def test_torch_reader_refuses_code_and_does_not_run_it(tmp_path, legacy):
  marker = tmp_path / "pwned"
  evil = torch_writer.Call(torch_writer.Global("os", "system"), f"touch {marker}")
  path = str(tmp_path / "evil.pth")
  torch_writer.save_torch({"w": np.zeros(2, np.float32), "x": evil}, path, legacy=legacy)
  with pytest.raises(VidtxError, match="refused to load.*os.system"):
    convert.load_torch(path)
  assert not marker.exists()
  # The same through Python's own pickle (a plain pickle file is not a torch file either way).
  raw = tmp_path / "raw.pth"
  raw.write_bytes(pickle.dumps({"x": torch_writer.RunsCommand(marker)}, protocol=2))
  with pytest.raises(VidtxError):
    convert.load_torch(str(raw))
  assert not marker.exists()



def test_torch_reader_rejects_garbage_and_non_state_dicts(tmp_path):
  garbage = tmp_path / "garbage.pth"
  garbage.write_bytes(b"\x00not a checkpoint" * 10)
  with pytest.raises(VidtxError, match="garbage.pth"):
    convert.load_torch(str(garbage))
  with pytest.raises(VidtxError, match="does not exist"):
    convert.load_torch(str(tmp_path / "missing.pth"))
  listed = str(tmp_path / "list.pth")
  torch_writer.save_torch([np.zeros(2, np.float32)], listed)
  with pytest.raises(VidtxError, match="expected a state dict"):
    torch_files.state_dict(convert.load_torch(listed), listed)


# ----------------------------------------------------------------------------- mx-mark names
def test_mxmark_names_are_theirs():
  """The names and torch layouts of mx-mark's TimeSformer-B and ViViT-B Lightning checkpoints."""
  tsf = ml_collections.ConfigDict(dict(
      models.tiny_config("timesformer", None, num_classes=600, dtype="float32", hidden_size=16,
                         num_heads=2, depth=1, norm_epsilon=1e-5)))
  state = mxmark.to_mxmark(random_variables(tsf), tsf)
  layer = "model.transformer_layers.layers.0."
  expected = {
      "model.cls_token": (1, 1, 16), "model.pos_embed": (1, 5, 16), "model.time_embed": (1, 4, 16),
      "model.patch_embed.projection.weight": (16, 3, 16, 16),
      layer + "attentions.0.norm.weight": (16,), layer + "attentions.0.attn.qkv.weight": (48, 16),
      layer + "attentions.0.attn.proj.weight": (16, 16),
      layer + "attentions.0.temporal_fc.weight": (16, 16),
      layer + "attentions.1.attn.qkv.bias": (48,), layer + "ffns.0.norm.bias": (16,),
      layer + "ffns.0.layers.0.0.weight": (64, 16), layer + "ffns.0.layers.1.weight": (16, 64),
      "model.norm.weight": (16,), "cls_head.cls_head.weight": (600, 16),
  }
  for name, shape in expected.items():
    assert state[name].shape == shape, name
  vivit = tiny("vivit", "mxmark")
  state = mxmark.to_mxmark(random_variables(vivit), vivit)
  assert state["model.patch_embed.projection.weight"].shape == (32, 3, 2, 16, 16)
  assert state["model.time_embed"].shape == (1, 3, 32)  # 1 + 2 tubelet slices
  assert "model.transformer_layers.1.layers.0.attentions.0.attn.qkv.weight" in state
  assert not any("temporal_cls" in name or "spatial_norm" in name for name in state)


@pytest.mark.parametrize("family,variant", VARIANTS)
def test_mxmark_round_trip_through_a_lightning_checkpoint(family, variant, tmp_path):
  config = tiny(family, variant)
  variables = random_variables(config)
  path = str(tmp_path / "model.pth")
  torch_writer.save_torch(lightning_checkpoint(mxmark.to_mxmark(variables, config)), path)
  restored = convert.from_mxmark(path, config)
  a, b = traverse_util.flatten_dict(variables), traverse_util.flatten_dict(restored)
  assert sorted(a) == sorted(b)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=str(key))


def test_mxmark_checkpoint_that_does_not_fit_is_a_clear_error(tmp_path):
  config = tiny("vivit", "mxmark")
  state = mxmark.to_mxmark(random_variables(config), config)
  with pytest.raises(VidtxError, match="missing keys.*temporal_cls_token"):
    convert.from_mxmark(state, tiny("vivit", "factorised_mean"))  # scenic's temporal CLS
  state.pop("model.norm.bias")
  state["model.extra"] = np.zeros(2, np.float32)
  with pytest.raises(VidtxError, match=r"missing keys: model.norm.bias.*unexpected keys: model.extra"):
    convert.from_mxmark(state, config)
  with pytest.raises(VidtxError, match="no mx-mark counterpart"):
    convert.from_mxmark(state, tiny("swin", None))


def test_vivit_first_slice_class_token_is_per_sample():
  """mx-mark's `x[:b, 0]` gives every sample of a batch sample 0's slices; each of ours gets its
  own, so a batch gives the logits of its samples run one at a time."""
  config = tiny("vivit", "mxmark")
  model = models.build(config)
  variables = random_variables(config)
  video = np.random.default_rng(1).normal(size=(2, 4, 32, 32, 3)).astype(np.float32)
  batch = model.apply(variables, video, train=False)
  for i in range(2):
    np.testing.assert_allclose(batch[i], model.apply(variables, video[i:i + 1], train=False)[0],
                               rtol=1e-5, atol=1e-6)
  # The temporal class token is the first slice's: changing only the second slice's frames of
  # sample 1 changes its logits, and not sample 0's.
  other = video.copy()
  other[1, 2:] += 1.0
  changed = model.apply(variables, other, train=False)
  np.testing.assert_array_equal(changed[0], batch[0])
  assert np.abs(changed[1] - batch[1]).max() > 1e-4


def test_mxmark_cli_converts_with_a_json_class_map(tmp_path):
  config_path = "configs/timesformer_k600.py:smoke=True"
  from configs import timesformer_k600  # pylint: disable=g-import-not-at-top
  config = timesformer_k600.get_config("smoke=True")
  variables = random_variables(config.model)
  source = str(tmp_path / "tsf.pth")
  torch_writer.save_torch(lightning_checkpoint(mxmark.to_mxmark(variables, config.model)), source)
  names = ["riding a bike", "abseiling", "yoga", "zumba", "archery"]
  classmap = tmp_path / "classmap.json"
  classmap.write_text(json.dumps({n: i for i, n in enumerate(names)}))
  out = str(tmp_path / "converted")
  run = cli_runner.run_main("-m", "vidtx.convert", "mxmark", "--config", config_path, "--input", source,
                            "--output", out, "--labels", str(classmap))
  assert run.returncode == 0, run.stderr
  meta = checkpoint.read_meta(out)
  assert meta["label_names"] == names and meta["source"]["format"] == "mxmark"
  restored, _ = checkpoint.restore_variables(out, checkpoint.abstract(variables))
  np.testing.assert_array_equal(np.asarray(restored["params"]["head"]["fc"]["kernel"]),
                                variables["params"]["head"]["fc"]["kernel"])


# ----------------------------------------------------------------------------- image inits from .pth
def vit_state(rng, dim=32, depth=2, patch=16, grid=2, mae=False):
  """A timm ViT-B/16-layout state dict of a tiny ViT (torch layouts), or MAE-pytorch's
  pretraining checkpoint of the same encoder ({'model': {'encoder.…', 'decoder.…'}})."""
  r = lambda *shape: rng.normal(size=shape).astype(np.float32)
  state = {"patch_embed.proj.weight": r(dim, 3, patch, patch), "patch_embed.proj.bias": r(dim),
           "norm.weight": r(dim), "norm.bias": r(dim)}
  if not mae:
    state.update({"cls_token": r(1, 1, dim), "pos_embed": r(1, 1 + grid * grid, dim),
                  "head.weight": r(1000, dim), "head.bias": r(1000)})
  for i in range(depth):
    b = f"blocks.{i}."
    state.update({b + "norm1.weight": r(dim), b + "norm1.bias": r(dim), b + "norm2.weight": r(dim),
                  b + "norm2.bias": r(dim), b + "attn.qkv.weight": r(3 * dim, dim),
                  b + "attn.proj.weight": r(dim, dim), b + "attn.proj.bias": r(dim),
                  b + "mlp.fc1.weight": r(4 * dim, dim), b + "mlp.fc1.bias": r(4 * dim),
                  b + "mlp.fc2.weight": r(dim, 4 * dim), b + "mlp.fc2.bias": r(dim)})
    if mae:
      state.update({b + "attn.q_bias": r(dim), b + "attn.v_bias": r(dim)})
    else:
      state[b + "attn.qkv.bias"] = r(3 * dim)
  if not mae:
    return state
  model = {"encoder." + k: v for k, v in state.items()}
  model.update({"decoder.blocks.0.norm1.weight": r(16), "decoder.norm.weight": r(16),
                "decoder.head.weight": r(768, 16), "encoder_to_decoder.weight": r(16, dim),
                "mask_token": r(1, 1, 16)})
  return {"model": model, "epoch": 399, "optimizer": {"state": {}, "param_groups": []}}


# (family, model overrides, conv_type): TimeSformer with 2D patches or tubelets, ViViT as mx-mark
# runs it (Conv3d tubelets) or with one-frame tubelets (Conv2d).
INIT_MODELS = [("timesformer", {}, "Conv2d"), ("timesformer", {"tubelet_size": 2}, "Conv3d"),
               ("vivit", {}, "Conv3d"), ("vivit", {"tubelet_size": 1}, "Conv2d")]
INIT_CASES = [(family, overrides, conv, extend, copy, fmt)
              for family, overrides, conv in INIT_MODELS
              for extend in (("temporal_avg", "center_frame") if conv == "Conv3d" else ("temporal_avg",))
              for copy in ("repeat", "set_zero") for fmt in ("timm", "mae")]


@pytest.mark.parametrize("family,overrides,conv_type,extend,copy,fmt", INIT_CASES)
def test_image_init_from_pth_with_the_seed_options(family, overrides, conv_type, extend, copy, fmt,
                                                    tmp_path, capsys):
  config = tiny(family, "mxmark" if family == "vivit" else None, **overrides)
  rng = np.random.default_rng(3)
  saved = vit_state(rng, mae=fmt == "mae")
  path = str(tmp_path / f"{fmt}.pth")
  torch_writer.save_torch(saved, path)
  vit = ({k[len("encoder."):]: v for k, v in saved["model"].items() if k.startswith("encoder.")}
         if fmt == "mae" else saved)
  fresh = random_variables(config, seed=9)
  init = ml_collections.ConfigDict({"path": path, "format": fmt, "options": {
      "conv_type": conv_type, "extend_strategy": extend, "copy_strategy": copy}})
  params = convert.init_from(init, fresh, config)["params"]
  out = capsys.readouterr().out
  assert "0 checkpoint entries unused (every backbone entry used)" in out
  assert ("the image classifier dropped" in out) == (fmt == "timm")

  # The patch embedding: as it is (Conv2d), or inflated over the tubelet (Conv3d).
  w2d = np.transpose(vit["patch_embed.proj.weight"], (2, 3, 1, 0))
  kernel = np.asarray(params["patch_embed"]["proj"]["kernel"])
  if conv_type == "Conv2d":
    np.testing.assert_array_equal(kernel.reshape(w2d.shape), w2d)
  elif extend == "temporal_avg":
    np.testing.assert_allclose(kernel, np.stack([w2d / 2, w2d / 2]), rtol=1e-6)
  else:  # the centre frame (tubelet // 2 = 1) holds the 2D kernel, the other zeros
    np.testing.assert_array_equal(kernel[1], w2d)
    np.testing.assert_array_equal(kernel[0], 0.0)
  assert "inflated 2D -> 3D" in out if conv_type == "Conv3d" else "inflated" not in out

  # The spatial attention is the image model's; MAE's qkv bias is [q, 0, v].
  qkv_bias = (np.concatenate([vit["blocks.0.attn.q_bias"], np.zeros(32, np.float32),
                              vit["blocks.0.attn.v_bias"]])
              if fmt == "mae" else vit["blocks.0.attn.qkv.bias"])
  np.testing.assert_array_equal(params["blocks_0"]["attn"]["qkv"]["kernel"], vit["blocks.0.attn.qkv.weight"].T)
  np.testing.assert_array_equal(params["blocks_0"]["attn"]["qkv"]["bias"], qkv_bias)
  np.testing.assert_array_equal(params["norm"]["scale"], vit["norm.weight"])
  if fmt == "mae":  # no class token in MAE: fresh; pos_embed from its sine-cosine table
    np.testing.assert_array_equal(params["cls_token"], fresh["params"]["cls_token"])
    np.testing.assert_array_equal(params["pos_embed"][0, 0], 0.0)
  else:
    np.testing.assert_array_equal(params["cls_token"], vit["cls_token"])

  # The temporal parts: copies of the spatial ones (repeat) or zero (set_zero; norms copied).
  if family == "timesformer":
    temporal, image = params["blocks_1"]["temporal_attn"], params["blocks_1"]["attn"]
    np.testing.assert_array_equal(params["blocks_1"]["temporal_fc"]["kernel"], 0.0)
    np.testing.assert_array_equal(params["blocks_1"]["temporal_norm1"]["scale"],
                                  params["blocks_1"]["norm1"]["scale"])
  else:
    temporal, image = params["temporal_blocks_0"]["attn"], params["blocks_0"]["attn"]
    np.testing.assert_array_equal(params["temporal_blocks_0"]["norm1"]["scale"],
                                  params["blocks_0"]["norm1"]["scale"])
  for leaf in ("kernel", "bias"):
    expected = image["qkv"][leaf] if copy == "repeat" else 0.0
    np.testing.assert_array_equal(temporal["qkv"][leaf], expected)


def test_image_init_conv_type_must_name_the_models_tokeniser(tmp_path):
  path = str(tmp_path / "vit.pth")
  torch_writer.save_torch(vit_state(np.random.default_rng(0)), path)
  config = tiny("timesformer", None)
  init = ml_collections.ConfigDict({"path": path, "format": "timm",
                                    "options": {"conv_type": "Conv3d"}})
  with pytest.raises(VidtxError, match="tubelet_size"):
    convert.init_from(init, random_variables(config), config)
  init.options = {"copy_strategy": "repeat", "temporal_init": "zeros"}
  with pytest.raises(VidtxError, match="disagree"):
    convert.init_from(init, random_variables(config), config)
  init.options = {"extend_strategy": "middle"}
  with pytest.raises(VidtxError, match="extend_strategy"):
    convert.init_from(init, random_variables(config), config)


def test_mae_layer_scale_is_folded_into_the_weights():
  rng = np.random.default_rng(4)
  saved = vit_state(rng, depth=1, mae=True)["model"]
  saved["encoder.blocks.0.gamma_1"] = rng.normal(size=32).astype(np.float32)
  saved["encoder.blocks.0.gamma_2"] = rng.normal(size=32).astype(np.float32)
  state = convert.pretrained_state(saved, "mae")
  g1, g2 = saved["encoder.blocks.0.gamma_1"], saved["encoder.blocks.0.gamma_2"]
  np.testing.assert_allclose(state["backbone.blocks.0.attn.proj.weight"],
                             (g1[:, None] * saved["encoder.blocks.0.attn.proj.weight"]).T)
  np.testing.assert_allclose(state["backbone.blocks.0.mlp.fc2.bias"], g2 * saved["encoder.blocks.0.mlp.fc2.bias"])
  assert not any("gamma" in k or "decoder" in k or "mask_token" in k for k in state)
