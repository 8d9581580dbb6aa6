"""vidtx.convert: the safe .pdparams reader, Paddle <-> ours round trips, pretraining loaders."""
import json
import pickle
import struct
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
import scipy.ndimage
from flax import traverse_util

import torch_writer
from vidtx import convert, models
from vidtx.errors import VidtxError
from vidtx.models import resize

# Every registered family with each of its tiny test variants.
VARIANTS = [(name, variant) for name in sorted(models.MODELS) for variant in models.get_family(name).tiny]
# The width the name and pretraining tests below are written for: one block of width 16.
SMALL_VIT = dict(hidden_size=16, depth=1, num_heads=2)


def tiny(family: str, variant: str | None = None, **overrides) -> ml_collections.ConfigDict:
  """Family `family`'s tiny test variant: 3 classes, float32."""
  return ml_collections.ConfigDict(models.tiny_config(family, variant,
                                                      **{"num_classes": 3, "dtype": "float32", **overrides}))


def random_variables(config, seed=0) -> dict:
  rng = np.random.default_rng(seed)
  flat = {p: rng.normal(size=s).astype(np.float32) for p, s in convert.model_shapes(config).items()}
  variables = traverse_util.unflatten_dict(flat)
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def assert_same_tree(a, b):
  fa, fb = traverse_util.flatten_dict(a), traverse_util.flatten_dict(b)
  assert sorted(fa) == sorted(fb)
  for path in fa:
    np.testing.assert_array_equal(np.asarray(fa[path]), np.asarray(fb[path]), err_msg=str(path))


# ----------------------------------------------------------------------------- the .pdparams reader

def test_unpickler_refuses_code_and_does_not_run_it(tmp_path):
  marker = tmp_path / "pwned"
  path = tmp_path / "evil.pdparams"
  path.write_bytes(pickle.dumps({"w": np.zeros(2), "x": torch_writer.RunsCommand(marker)}, protocol=4))
  with pytest.raises(VidtxError) as error:
    convert.load_pdparams(str(path))
  assert str(path) in str(error.value)
  assert "system" in str(error.value)  # names the refused global (posix.system / nt.system)
  assert not marker.exists()


def test_unpickler_loads_arrays_and_drops_paddle_bookkeeping(tmp_path):
  from collections import OrderedDict
  state = OrderedDict([("backbone.w", np.arange(6, dtype=np.float32).reshape(2, 3)),
                       ("backbone.relative_position_index", np.eye(3, dtype=np.int64)),
                       ("StructuredToParameterName@@", {"backbone.w": "linear_0.w_0"})])
  for protocol in (2, 4):
    path = tmp_path / f"ok{protocol}.pdparams"
    path.write_bytes(pickle.dumps(state, protocol=protocol))
    loaded = convert.load_pdparams(str(path))
    assert sorted(loaded) == ["backbone.relative_position_index", "backbone.w"]
    np.testing.assert_array_equal(loaded["backbone.w"], state["backbone.w"])
    assert loaded["backbone.relative_position_index"].dtype == np.int64


def test_unpickler_rejects_garbage_and_non_dicts(tmp_path):
  garbage = tmp_path / "garbage.pdparams"
  garbage.write_bytes(b"not a pickle")
  with pytest.raises(VidtxError, match="garbage.pdparams"):
    convert.load_pdparams(str(garbage))
  listed = tmp_path / "list.pdparams"
  listed.write_bytes(pickle.dumps([np.zeros(1)]))
  with pytest.raises(VidtxError, match="dict"):
    convert.load_pdparams(str(listed))
  with pytest.raises(VidtxError, match="does not exist"):
    convert.load_pdparams(str(tmp_path / "missing.pdparams"))
  objects = tmp_path / "objects.pdparams"
  objects.write_bytes(pickle.dumps({"w": np.array(["a", 1], dtype=object)}))
  with pytest.raises(VidtxError, match="numeric numpy array"):
    convert.load_pdparams(str(objects))


def test_distillation_checkpoint_keeps_the_student(tmp_path):
  state = {"Student.0.cls_token": np.ones(1), "Student.1.fc.weight": np.ones(2),
           "Teacher.0.cls_token": np.zeros(1)}
  path = tmp_path / "distill.pdparams"
  convert.save_pdparams(state, str(path))
  assert sorted(convert.load_pdparams(str(path))) == ["backbone.cls_token", "head.fc.weight"]
  student = {"0.cls_token": np.ones(1), "1.fc.weight": np.ones(2)}  # *_student.pdparams
  convert.save_pdparams(student, str(path))
  assert sorted(convert.load_pdparams(str(path))) == ["backbone.cls_token", "head.fc.weight"]


# ----------------------------------------------------------------------------- Paddle round trips
@pytest.mark.parametrize("family,variant", VARIANTS)
def test_round_trip_through_paddle_layout(family, variant, tmp_path):
  config = tiny(family, variant)
  variables = random_variables(config)
  state = convert.to_paddle(variables, config)
  assert all(k.startswith(("backbone.", "head.")) for k in state)
  path = str(tmp_path / f"{family}.pdparams")
  convert.save_pdparams(state, path)
  assert_same_tree(convert.from_paddle(path, config), variables)


def test_paddle_names_and_layouts():
  small_vit = tiny("timesformer", **SMALL_VIT)
  vit = convert.to_paddle(random_variables(small_vit), small_vit)
  assert vit["backbone.blocks.0.attn.qkv.weight"].shape == (16, 48)  # Linear [in, out]
  assert vit["backbone.patch_embed.proj.weight"].shape == (16, 3, 16, 16)  # Conv2D [out, in, kh, kw]
  assert vit["head.fc.weight"].shape == (16, 3)
  assert "backbone.blocks.0.temporal_fc.weight" in vit and "backbone.time_embed" in vit
  small_swin = tiny("swin", embed_dim=8, depths=(2, 1), num_heads=(1, 2))
  swin = convert.to_paddle(random_variables(small_swin), small_swin)
  assert swin["backbone.patch_embed.proj.weight"].shape == (8, 3, 2, 4, 4)  # Conv3D
  assert swin["backbone.layers.0.blocks.1.attn.relative_position_bias_table"].shape == (3 * 7 * 7, 1)
  assert swin["backbone.layers.0.blocks.0.attn.relative_position_index"].shape == (32, 32)
  assert "backbone.layers.0.downsample.reduction.weight" in swin
  tsm = convert.to_paddle(random_variables(tiny("tsm")), tiny("tsm"))
  for leaf in ("weight", "bias", "_mean", "_variance"):
    assert f"backbone.bb_0_0.conv0._batch_norm.{leaf}" in tsm
  assert tsm["backbone.conv1_1._conv.weight"].shape == (4, 3, 3, 3)


def test_mismatched_checkpoint_lists_missing_unexpected_and_shapes():
  config = tiny("timesformer", **SMALL_VIT)
  state = convert.to_paddle(random_variables(config), config)
  del state["backbone.blocks.0.norm2.bias"]
  state["backbone.blocks.7.attn.qkv.weight"] = np.zeros((16, 48), np.float32)
  state["head.fc.weight"] = np.zeros((16, 5), np.float32)
  with pytest.raises(VidtxError) as error:
    convert.from_paddle(state, config)
  message = str(error.value)
  assert "1 missing keys: backbone.blocks.0.norm2.bias" in message
  assert "1 unexpected keys: backbone.blocks.7.attn.qkv.weight" in message
  assert "1 shape mismatches: head.fc.weight [16, 5] vs model [16, 3]" in message


def test_swin_relative_position_index_is_checked():
  config = tiny("swin")
  state = convert.to_paddle(random_variables(config), config)
  key = "backbone.layers.1.blocks.0.attn.relative_position_index"
  state[key] = state[key][::-1].copy()
  with pytest.raises(VidtxError, match="relative_position_index: differs"):
    convert.from_paddle(state, config)


def test_from_paddle_resizes_time_embed_and_says_so(capsys):
  eight = tiny("timesformer", num_frames=4)
  state = convert.to_paddle(random_variables(eight), eight)
  variables = convert.from_paddle(state, tiny("timesformer", num_frames=8))
  np.testing.assert_array_equal(variables["params"]["time_embed"][0],
                                state["backbone.time_embed"][0][[0, 0, 1, 1, 2, 2, 3, 3]])
  assert "backbone.time_embed: resizing 4 -> 8 frames" in capsys.readouterr().out


def test_experiment_config_is_accepted():
  experiment = ml_collections.ConfigDict({"model": tiny("tokshift").to_dict()})
  variables = random_variables(tiny("tokshift"))
  assert_same_tree(convert.from_paddle(convert.to_paddle(variables, experiment), experiment), variables)


# ----------------------------------------------------------------------------- resizing and inflation
def test_inflation_average_and_central_frame():
  kernel = np.random.default_rng(0).normal(size=(4, 4, 3, 5)).astype(np.float32)
  average = resize.inflate_kernel(kernel, 2, "average")
  assert average.shape == (2, 4, 4, 3, 5)
  np.testing.assert_allclose(average.sum(0), kernel, rtol=1e-6)  # a static clip gives the 2D response
  central = resize.inflate_kernel(kernel, 3, "central_frame")
  np.testing.assert_array_equal(central[1], kernel)
  assert not central[0].any() and not central[2].any()
  with pytest.raises(VidtxError, match="inflate"):
    resize.inflate_kernel(kernel, 2, "mean")


def test_pos_embed_resize_keeps_cls_and_zooms_linearly():
  pos = np.random.default_rng(0).normal(size=(1, 1 + 16, 6)).astype(np.float32)
  resized = resize.resize_pos_embed(pos, (6, 6), "linear")
  assert resized.shape == (1, 37, 6)
  np.testing.assert_array_equal(resized[:, 0], pos[:, 0])
  grid = pos[0, 1:].reshape(4, 4, 6)
  np.testing.assert_allclose(resized[0, 1:].reshape(6, 6, 6),
                             scipy.ndimage.zoom(grid, (1.5, 1.5, 1), order=1))
  np.testing.assert_array_equal(resized[0, 1:].reshape(6, 6, 6)[[0, -1]][:, [0, -1]],
                                grid[[0, -1]][:, [0, -1]])  # corners are kept (align corners)
  assert resize.resize_pos_embed(pos, (4, 4), "linear") is pos


def test_time_embed_nearest():
  time = np.arange(8, dtype=np.float32).reshape(1, 8, 1)
  assert resize.resize_time_embed(time, 16)[0, :, 0].tolist() == [i // 2 for i in range(16)]
  assert resize.resize_time_embed(time, 4)[0, :, 0].tolist() == [0, 2, 4, 6]


def test_bicubic_matches_paddle():
  # paddle.nn.functional.interpolate(x, size=(5, 5), mode='bicubic') of x = arange(9).reshape(3, 3).
  x = np.arange(9, dtype=np.float32).reshape(3, 3, 1)
  expected = [[-0.384, 0.028, 0.712, 1.396, 1.808],
              [0.852, 1.264, 1.948, 2.632, 3.044],
              [2.904, 3.316, 4.0, 4.684, 5.096],
              [4.956, 5.368, 6.052, 6.736, 7.148],
              [6.192, 6.604, 7.288, 7.972, 8.384]]
  np.testing.assert_allclose(resize.resize_bicubic(x, (5, 5))[..., 0], expected, atol=1e-4)


# ----------------------------------------------------------------------------- pretraining loaders
def _big_vision_vit(rng, dim=16, heads=2, depth=1, patch=16, grid=2, new_names=False):
  """A synthetic big_vision / google ViT checkpoint (flat '/'-joined keys, as in the .npz)."""
  hd = dim // heads
  a = lambda *s: rng.normal(size=s).astype(np.float32)
  out = {"embedding/kernel": a(patch, patch, 3, dim), "embedding/bias": a(dim), "cls": a(1, 1, dim),
         "Transformer/encoder_norm/scale": a(dim), "Transformer/encoder_norm/bias": a(dim),
         "head/kernel": a(dim, 10), "head/bias": a(10)}
  if new_names:
    out["pos_embedding"] = a(1, grid * grid, dim)
  else:
    out["Transformer/posembed_input/pos_embedding"] = a(1, 1 + grid * grid, dim)
  ln2, mha, mlp = ("LayerNorm_1", "MultiHeadDotProductAttention_0", "MlpBlock_0") if new_names else (
      "LayerNorm_2", "MultiHeadDotProductAttention_1", "MlpBlock_3")
  for i in range(depth):
    p = f"Transformer/encoderblock_{i}/"
    for ln in ("LayerNorm_0", ln2):
      out[p + ln + "/scale"], out[p + ln + "/bias"] = a(dim), a(dim)
    for n in ("query", "key", "value"):
      out[p + f"{mha}/{n}/kernel"], out[p + f"{mha}/{n}/bias"] = a(dim, heads, hd), a(heads, hd)
    out[p + f"{mha}/out/kernel"], out[p + f"{mha}/out/bias"] = a(heads, hd, dim), a(dim)
    out[p + f"{mlp}/Dense_0/kernel"], out[p + f"{mlp}/Dense_0/bias"] = a(dim, 4 * dim), a(4 * dim)
    out[p + f"{mlp}/Dense_1/kernel"], out[p + f"{mlp}/Dense_1/bias"] = a(4 * dim, dim), a(dim)
  return out


def _init(path, fmt, **options):
  return ml_collections.ConfigDict(dict(path=str(path), format=fmt, options=options))


def test_big_vision_npz_initialises_timesformer(tmp_path):
  rng = np.random.default_rng(0)
  npz = _big_vision_vit(rng)
  path = tmp_path / "vit.npz"
  np.savez(path, **npz)
  config = tiny("timesformer", image_size=48, **SMALL_VIT)  # 3x3 grid from the checkpoint's 2x2
  fresh = random_variables(config, seed=1)
  params = convert.init_from(_init(path, "big_vision"), fresh, config)["params"]
  block = params["blocks_0"]
  p = "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/"
  q, k, v = (npz[p + f"{n}/kernel"].reshape(16, 16) for n in ("query", "key", "value"))
  np.testing.assert_array_equal(block["attn"]["qkv"]["kernel"], np.concatenate([q, k, v], 1))
  np.testing.assert_array_equal(block["attn"]["proj"]["kernel"], npz[p + "out/kernel"].reshape(16, 16))
  np.testing.assert_array_equal(block["temporal_attn"]["qkv"]["kernel"], block["attn"]["qkv"]["kernel"])
  np.testing.assert_array_equal(block["temporal_norm1"]["scale"], block["norm1"]["scale"])
  np.testing.assert_array_equal(block["norm2"]["scale"], npz["Transformer/encoderblock_0/LayerNorm_2/scale"])
  assert not block["temporal_fc"]["kernel"].any() and not params["time_embed"].any()
  np.testing.assert_array_equal(params["patch_embed"]["proj"]["kernel"], npz["embedding/kernel"])
  pos = npz["Transformer/posembed_input/pos_embedding"]
  assert params["pos_embed"].shape == (1, 10, 16)
  np.testing.assert_array_equal(params["pos_embed"][:, 0], pos[:, 0])
  np.testing.assert_array_equal(params["cls_token"], npz["cls"])
  np.testing.assert_array_equal(params["head"]["fc"]["kernel"], fresh["params"]["head"]["fc"]["kernel"])
  zeros = convert.init_from(_init(path, "big_vision", temporal_init="zeros"), fresh, config)["params"]
  assert not zeros["blocks_0"]["temporal_attn"]["qkv"]["kernel"].any()


def test_big_vision_attention_mapping_matches_flax_attention(tmp_path):
  """The q/k/v/out kernels mapped into our fused qkv give flax MultiHeadDotProductAttention's output."""
  import flax.linen as nn
  import jax
  from vidtx.models import vit
  x = np.random.default_rng(0).normal(size=(2, 5, 16)).astype(np.float32)
  theirs = nn.MultiHeadDotProductAttention(num_heads=2)
  their_params = theirs.init(jax.random.key(0), x, x)["params"]
  npz = _big_vision_vit(np.random.default_rng(1), new_names=True)
  prefix = "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/"
  for n in ("query", "key", "value", "out"):
    for leaf in ("kernel", "bias"):
      npz[f"{prefix}{n}/{leaf}"] = np.asarray(their_params[n][leaf])
  state = convert.pretrained_state(npz, "big_vision")
  ours = {m: {"kernel": state[f"backbone.blocks.0.attn.{m}.weight"],
              "bias": state[f"backbone.blocks.0.attn.{m}.bias"]} for m in ("qkv", "proj")}
  got = vit.Attention(num_heads=2).apply({"params": ours}, x, train=False)
  np.testing.assert_allclose(got, theirs.apply({"params": their_params}, x, x), atol=1e-5)
  assert state["backbone.pos_embed"].shape == (1, 5, 16) and not state["backbone.pos_embed"][:, 0].any()


def _write_safetensors(path, arrays, bf16=()):
  header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
  for name, array in arrays.items():
    if name in bf16:
      data, dtype = (array.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes(), "BF16"
    else:
      data, dtype = array.tobytes(), {np.float32: "F32", np.int64: "I64"}[array.dtype.type]
    header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
    chunks.append(data)
    offset += len(data)
  blob = json.dumps(header).encode()
  path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"".join(chunks))


def test_safetensors_reader(tmp_path):
  arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(3, dtype=np.int64),
            "c": np.array([1.5, -2.0], np.float32)}
  path = tmp_path / "x.safetensors"
  _write_safetensors(path, arrays, bf16=("c",))
  loaded = convert.load_safetensors(str(path))
  np.testing.assert_array_equal(loaded["a"], arrays["a"])
  np.testing.assert_array_equal(loaded["b"], arrays["b"])
  np.testing.assert_array_equal(loaded["c"], arrays["c"])  # exact in bfloat16
  (tmp_path / "bad.safetensors").write_bytes(b"\x05")
  with pytest.raises(VidtxError, match="bad.safetensors"):
    convert.load_safetensors(str(tmp_path / "bad.safetensors"))


def test_timm_safetensors_initialises_tokshift(tmp_path):
  config = tiny("tokshift", **SMALL_VIT)
  source = convert.to_paddle(random_variables(config, seed=3), config)
  timm = {k[len("backbone."):]: (v.T if k.endswith(".weight") and v.ndim == 2 else v)
          for k, v in source.items() if k.startswith("backbone.")}  # torch Linear is [out, in]
  timm["head.weight"] = np.zeros((1000, 16), np.float32)
  path = tmp_path / "vit.safetensors"
  _write_safetensors(path, timm)
  fresh = random_variables(config, seed=4)
  params = convert.init_from(_init(path, "timm"), fresh, config)["params"]
  np.testing.assert_array_equal(params["blocks_0"]["mlp"]["fc1"]["kernel"],
                                source["backbone.blocks.0.mlp.fc1.weight"])
  np.testing.assert_array_equal(params["pos_embed"], source["backbone.pos_embed"])
  np.testing.assert_array_equal(params["head"]["fc"]["kernel"], fresh["params"]["head"]["fc"]["kernel"])


def test_paddleclas_vit_initialises_vivit(tmp_path):
  image = tiny("tokshift", **SMALL_VIT)
  source = convert.to_paddle(random_variables(image, seed=5), image)
  paddleclas = {k[len("backbone."):]: v for k, v in source.items() if k.startswith("backbone.")}
  path = tmp_path / "vit.pdparams"
  convert.save_pdparams(paddleclas, str(path))
  config = tiny("vivit", **SMALL_VIT)
  fresh = random_variables(config, seed=6)
  params = convert.init_from(_init(path, "paddleclas", inflate="central_frame"), fresh, config)["params"]
  kernel = params["patch_embed"]["proj"]["kernel"]  # [2, 16, 16, 3, D]
  np.testing.assert_array_equal(kernel[1], np.transpose(paddleclas["patch_embed.proj.weight"], (2, 3, 1, 0)))
  assert not kernel[0].any()
  np.testing.assert_array_equal(params["temporal_blocks_0"]["attn"]["qkv"]["kernel"],
                                params["blocks_0"]["attn"]["qkv"]["kernel"])
  np.testing.assert_array_equal(params["spatial_norm"]["scale"], paddleclas["norm.weight"])
  np.testing.assert_array_equal(params["temporal_cls_token"], fresh["params"]["temporal_cls_token"])
  np.testing.assert_array_equal(params["time_embed"], fresh["params"]["time_embed"])


def test_paddleclas_swin_2d_is_inflated(tmp_path):
  config = tiny("swin")
  source = convert.to_paddle(random_variables(config, seed=7), config)
  rng = np.random.default_rng(8)
  swin2d = {}
  for k, v in source.items():
    k = k[len("backbone."):] if k.startswith("backbone.") else k
    if k == "patch_embed.proj.weight":
      v = v[:, :, 0]
    elif k.endswith("relative_position_bias_table"):
      v = rng.normal(size=(49, v.shape[1])).astype(np.float32)  # 2D window 4
    elif k.endswith("relative_position_index"):
      v = np.zeros((16, 16), np.int64)
      swin2d[k.replace("relative_position_index", "attn_mask")] = np.zeros((4, 16, 16), np.float32)
    swin2d[k] = v
  path = tmp_path / "swin2d.pdparams"
  convert.save_pdparams(swin2d, str(path))
  params = convert.init_from(_init(path, "paddleclas"), random_variables(config, seed=9), config)["params"]
  kernel = params["patch_embed"]["proj"]["kernel"]
  np.testing.assert_allclose(kernel[0], np.transpose(swin2d["patch_embed.proj.weight"], (2, 3, 1, 0)) / 2)
  np.testing.assert_array_equal(kernel[0], kernel[1])
  table = params["layers_0"]["blocks_1"]["attn"]["relative_position_bias_table"]
  table_2d = swin2d["layers.0.blocks.1.attn.relative_position_bias_table"]
  np.testing.assert_array_equal(table, np.tile(table_2d, (3, 1)))


def test_paddleclas_resnet_initialises_tsm_batch_stats(tmp_path):
  config = tiny("tsm")
  source = convert.to_paddle(random_variables(config, seed=10), config)
  resnet = {k[len("backbone."):]: v for k, v in source.items() if k.startswith("backbone.")}
  resnet["fc_0.w_0"] = np.zeros((64, 1000), np.float32)
  path = tmp_path / "resnet.pdparams"
  convert.save_pdparams(resnet, str(path))
  fresh = random_variables(config, seed=11)
  variables = convert.init_from(_init(path, "paddleclas"), fresh, config)
  np.testing.assert_array_equal(variables["batch_stats"]["bb_1_0"]["short"]["bn"]["var"],
                                resnet["bb_1_0.short._batch_norm._variance"])
  np.testing.assert_array_equal(variables["params"]["conv1_2"]["conv"]["kernel"],
                                np.transpose(resnet["conv1_2._conv.weight"], (2, 3, 1, 0)))
  np.testing.assert_array_equal(variables["params"]["head"]["fc"]["kernel"],
                                fresh["params"]["head"]["fc"]["kernel"])


def test_paddle_backbone_weights_get_the_backbone_prefix(tmp_path):
  """PaddleVideo's `pretrained=` files (e.g. ResNet50_vd_ssld_v2 for PP-TSM) hold backbone names."""
  config = tiny("tsm")
  source = convert.to_paddle(random_variables(config, seed=16), config)
  backbone = {k[len("backbone."):]: v for k, v in source.items() if k.startswith("backbone.")}
  path = tmp_path / "backbone.pdparams"
  convert.save_pdparams(backbone, str(path))
  fresh = random_variables(config, seed=17)
  variables = convert.init_from(_init(path, "paddle"), fresh, config)
  np.testing.assert_array_equal(variables["params"]["conv1_1"]["conv"]["kernel"],
                                np.transpose(backbone["conv1_1._conv.weight"], (2, 3, 1, 0)))
  np.testing.assert_array_equal(variables["params"]["head"]["fc"]["kernel"],
                                fresh["params"]["head"]["fc"]["kernel"])


def test_training_from_a_vit_checkpoint_says_what_it_loaded(smoke_data_dir, tmp_path, capsys):
  """train.py --config configs/tokshift_ucf101.py:smoke=True with init_from a small big_vision ViT
  prints how many tensors were loaded, left fresh and unused, and the position-grid resize."""
  from configs import tokshift_ucf101
  from vidtx import trainer
  config = tokshift_ucf101.get_config("smoke=True")
  m = config.model
  npz = _big_vision_vit(np.random.default_rng(0), dim=m.hidden_size, heads=m.num_heads, depth=m.depth,
                        patch=m.patch_size, grid=2)
  path = tmp_path / "vit.npz"
  np.savez(path, **npz)
  config.data.dir = smoke_data_dir
  config.init_from.update(path=str(path), format="big_vision")
  config.train.update(num_steps=1, val_every=1, checkpoint_every=1)
  trainer.train_and_evaluate(config, str(tmp_path / "run"))
  out = capsys.readouterr().out
  grid = m.image_size // m.patch_size
  assert f"backbone.pos_embed: resizing the position grid 2x2 -> {grid}x{grid}" in out
  # cls, pos, patch kernel and bias, 12 per block, final norm 2; the head (2) stays fresh.
  loaded = 4 + 12 * m.depth + 2
  assert (f"init_from {path}: {loaded} variables loaded, 2 left fresh (params/head/fc/") in out
  assert "0 checkpoint entries unused" in out


def test_paddle_video_checkpoint_for_fine_tuning_drops_a_different_head(tmp_path):
  k400 = tiny("timesformer", num_classes=7)
  path = str(tmp_path / "k400.pdparams")
  convert.save_pdparams(convert.to_paddle(random_variables(k400, seed=12), k400), path)
  fresh = random_variables(tiny("timesformer"), seed=13)
  params = convert.init_from(_init(path, "paddle"), fresh, tiny("timesformer"))["params"]
  np.testing.assert_array_equal(params["head"]["fc"]["kernel"], fresh["params"]["head"]["fc"]["kernel"])
  assert not np.array_equal(params["cls_token"], fresh["params"]["cls_token"])


def test_init_from_errors(tmp_path):
  path = tmp_path / "other.pdparams"
  convert.save_pdparams({"something.else": np.zeros(3, np.float32)}, str(path))
  config = tiny("tokshift", **SMALL_VIT)
  fresh = random_variables(config)
  with pytest.raises(VidtxError, match="no entry matches"):
    convert.init_from(_init(path, "paddleclas"), fresh, config)
  with pytest.raises(VidtxError, match="format"):
    convert.init_from(_init(path, "onnx"), fresh, config)
  with pytest.raises(VidtxError, match="options: unknown"):
    convert.init_from(_init(path, "paddleclas", window_size=(2, 4, 4)), fresh, config)
  wide = tiny("tokshift", **dict(SMALL_VIT, hidden_size=32))
  convert.save_pdparams({k[9:]: v for k, v in convert.to_paddle(random_variables(wide), wide).items()
                         if k.startswith("backbone.")}, str(path))
  with pytest.raises(VidtxError, match="shape mismatches"):
    convert.init_from(_init(path, "paddleclas"), fresh, config)


# ----------------------------------------------------------------------------- CLI
def test_cli_writes_a_checkpoint_eval_can_restore(tmp_path):
  from vidtx import checkpoint
  config_file = tmp_path / "tiny_config.py"
  config_file.write_text(
      "import ml_collections\n"
      "def get_config(arg=None):\n"
      f"  return ml_collections.ConfigDict({{'model': {tiny('tokshift').to_dict()!r}}})\n")
  variables = random_variables(tiny("tokshift"))
  source = tmp_path / "tokshift.pdparams"
  convert.save_pdparams(convert.to_paddle(variables, tiny("tokshift")), str(source))
  (tmp_path / "labels.txt").write_text("2 c\n0 a\n1 b\n")
  out = tmp_path / "converted"
  run = subprocess.run(
      [sys.executable, "-m", "vidtx.convert", "paddle", f"--config={config_file}", f"--input={source}",
       f"--output={out}", f"--labels={tmp_path / 'labels.txt'}"],
      capture_output=True, text=True, timeout=120)
  assert run.returncode == 0, run.stderr
  meta = checkpoint.read_meta(str(out))
  assert meta["label_names"] == ["a", "b", "c"] and meta["model"]["name"] == "tokshift"
  restored, _ = checkpoint.restore_variables(str(out), checkpoint.abstract(variables))
  assert_same_tree(restored, variables)
  again = subprocess.run(
      [sys.executable, "-m", "vidtx.convert", "paddle", f"--config={config_file}", f"--input={source}",
       f"--output={out}"], capture_output=True, text=True, timeout=120)
  assert again.returncode == 1 and "not empty" in again.stderr


def test_paddle_video_swin_checkpoint_initialises_as_is(tmp_path):
  config = tiny("swin")
  source = random_variables(config, seed=14)
  path = str(tmp_path / "swin3d.pdparams")
  convert.save_pdparams(convert.to_paddle(source, config), path)
  params = convert.init_from(_init(path, "paddle"), random_variables(config, seed=15), config)["params"]
  assert_same_tree(params, source["params"])
