"""VideoMAE: tube masking, per-tube targets, the label-free pretraining objective through the
trainer, pretrain -> fine-tune with init_from format 'vidtx', official-checkpoint conversion
(golden files from MCG-NJU/VideoMAE's own code: tests/golden/make_videomae.py) and the
reconstruction picture. CPU, tiny shapes."""
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vidtx import losses, models
from vidtx.errors import VidtxError
from vidtx.models import videomae

TINY_PRETRAIN = dict(pretrain=True, mask_ratio=0.5, decoder_hidden_size=16, decoder_depth=1,
                     decoder_num_heads=2)


@pytest.fixture(autouse=True)
def fast_compile(request):
  """XLA optimisation passes dominate CPU compile time for these tiny models; skip them here."""
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


def tiny(**overrides):
  return models.tiny_config("videomae", **{"num_classes": 5, "dtype": "float32", **overrides})


def clip(seed=0, batch=2, frames=4, size=32):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(batch, frames, size, size, 3)), jnp.float32)


def test_tube_mask_hides_the_same_places_in_every_time_slot_and_is_deterministic():
  draw = jax.jit(videomae.tube_mask, static_argnums=(1, 2, 3))
  mask = np.asarray(draw(jax.random.key(1), 3, (4, 3, 5), 0.6))
  assert mask.shape == (3, 60) and mask.dtype == bool
  per_slot = mask.reshape(3, 4, 15)
  assert (per_slot == per_slot[:, :1]).all()           # a tube: the same spatial mask each slot
  assert (per_slot.sum(-1) == int(0.6 * 15)).all()     # ratio of the spatial positions, rounded down
  assert not (per_slot[0, 0] == per_slot[1, 0]).all()  # each example its own
  np.testing.assert_array_equal(mask, draw(jax.random.key(1), 3, (4, 3, 5), 0.6))


def test_patchify_round_trip_and_per_tube_targets_by_hand():
  video = clip(batch=1)
  tubes = videomae.patchify(video, 2, 16)
  assert tubes.shape == (1, 2 * 2 * 2, 2 * 16 * 16, 3)
  # token 3 = time slot 0, row 1, column 1; pixel (dt=1, y=2, x=5) is its element 1*256 + 2*16 + 5
  np.testing.assert_array_equal(tubes[0, 3, 256 + 37], video[0, 1, 18, 21])
  np.testing.assert_array_equal(videomae.unpatchify(tubes, (2, 2, 2), 2, 16), video)
  targets, mean, std = videomae.normalised_tubes(video, 2, 16)
  one = np.asarray(video[0, 2:4, 16:32, 0:16, 1], np.float64).ravel()  # token 6 (slot 1, row 1, col 0), green
  expected = (one - one.mean()) / (one.std(ddof=1) + 1e-6)
  np.testing.assert_allclose(np.asarray(targets[0, 6]).reshape(-1, 3)[:, 1], expected, rtol=1e-4, atol=1e-5)


def test_pretrain_encoder_sees_only_visible_tokens_and_loss_is_masked_mse():
  config = tiny(**TINY_PRETRAIN)
  model = models.build(config)
  video = clip()
  variables = models.jit_init(lambda v: model.init(jax.random.key(0), v, train=False))(video)
  mask = videomae.tube_mask(jax.random.key(5), 2, (2, 2, 2), 0.5)
  run = jax.jit(lambda v, m: (model.apply(variables, v, train=False, mask=m, reconstruct=True),
                              model.apply(variables, v, train=False, mask=m)))
  (predictions, targets, got_mask), loss = run(video, mask)
  assert predictions.shape == targets.shape == (2, 4, 3 * 2 * 16 * 16)
  np.testing.assert_array_equal(got_mask, mask)
  np.testing.assert_allclose(loss, np.mean((predictions - targets) ** 2, axis=(1, 2)), rtol=1e-5)
  # Visible tubes are all the encoder sees: changing a hidden tube's pixels changes the target only.
  hidden_token = int(np.argmax(np.asarray(mask[0])))
  t, r, c = hidden_token // 4, hidden_token // 2 % 2, hidden_token % 2
  changed = video.at[0, 2 * t:2 * t + 2, 16 * r:16 * r + 16, 16 * c:16 * c + 16].add(3.0)
  (p2, t2, _), _ = run(changed, mask)
  np.testing.assert_allclose(p2, predictions, rtol=1e-5, atol=1e-6)
  assert not np.allclose(t2[0], targets[0])
  # normalize_target=False (same parameters): the hidden tubes' input pixels as they are.
  plain = models.build(tiny(**TINY_PRETRAIN, normalize_target=False))
  _, plain_targets, _ = jax.jit(lambda v, m: plain.apply(variables, v, train=False, mask=m, reconstruct=True))(
      video, mask)
  hidden_tubes = np.asarray(videomae.patchify(video, 2, 16))[np.asarray(mask)].reshape(2, 4, -1)
  np.testing.assert_array_equal(plain_targets, hidden_tubes)
  # Without a mask: training draws from the dropout rng, evaluation uses a fixed one.
  masks = jax.jit(lambda v, key: (
      model.apply(variables, v, train=False, reconstruct=True)[2],
      model.apply(variables, v, train=True, rngs={"dropout": key}, reconstruct=True)[2]))
  a, b = masks(video, jax.random.key(9))
  np.testing.assert_array_equal(a, masks(video, jax.random.key(10))[0])
  assert not np.array_equal(a, b)
  assert losses.is_label_free(model) and not losses.is_label_free(models.build(tiny()))


def test_pretraining_does_a_fifth_of_the_full_token_forward_work():
  """ViT-B 16x224: the encoder on the 10 % visible tubes plus the light decoder is 35.4 GMACs,
  the same encoder on every tube 180.3 (the paper's 180); the step's speed-up is measured in
  docs/benchmarks.md."""
  from configs import videomae_k400
  from vidtx import flops
  macs = {mode: flops.measure(models.build(videomae_k400.get_config(mode).model), 16, 224)[1].total()
          for mode in ("pretrain", "finetune")}
  assert macs["finetune"] / 1e9 == pytest.approx(180.34, abs=0.01)
  assert macs["finetune"] / macs["pretrain"] == pytest.approx(5.09, abs=0.01)


def test_finetune_head_starts_small_and_bad_shapes_say_so():
  model = models.build(tiny())
  variables = models.jit_init(lambda v: model.init(jax.random.key(0), v, train=False))(clip())
  kernel = np.asarray(variables["params"]["head"]["fc"]["kernel"].value)
  assert 0 < np.abs(kernel).max() <= 2 * 0.02 * 0.001  # official init_scale 0.001
  with pytest.raises(VidtxError, match="tubelets"):
    jax.eval_shape(lambda v: model.apply(variables, v, train=False), clip(frames=3))
  with pytest.raises(VidtxError, match="mask_ratio"):
    models.abstract_variables(models.build(tiny(**dict(TINY_PRETRAIN, mask_ratio=0.1))), tiny())


def test_pretrain_through_the_trainer_then_finetune_init(smoke_data_dir, tmp_path, capsys):
  """Label-free pretraining runs in the ordinary trainer (validation reports the reconstruction
  loss, no top-1); the fine-tune model starts from its encoder (init_from format vidtx) and says
  what it loaded, left fresh and did not use. (The fine-tune config's own smoke run is
  tests/test_configs.py's.)"""
  from configs import videomae_k400
  from vidtx import convert, trainer
  config = videomae_k400.get_config("pretrain,smoke=True")
  config.data.dir = smoke_data_dir
  config.train.update(num_steps=1, val_every=1, checkpoint_every=1, log_every=1)
  pretrain_dir = str(tmp_path / "pretrain")
  last = trainer.train_and_evaluate(config, pretrain_dir)
  assert "val_loss" in last and "val_top1" not in last and "train_top1" not in last
  assert 0.1 < last["val_loss"] < 10 and np.isfinite(last["loss"])
  assert "(label-free objective)" in capsys.readouterr().out

  finetune = videomae_k400.get_config("finetune,smoke=True")
  model = models.build(finetune.model)
  start = models.jit_init(lambda v: model.init(jax.random.key(1), v, train=False))(clip())
  init = ml_collections.ConfigDict(dict(path=pretrain_dir, format="vidtx", options={}))
  params = convert.init_from(init, start, finetune.model)["params"]
  out = capsys.readouterr().out
  depth = finetune.model.depth
  # patch embedding (2) + 12 per block; fc_norm (2) and head (2) fresh; the encoder's final norm
  # (2) and the decoder's 2 + 12 + 2 + 2 + 1 entries (to_decoder, mask token) unused.
  assert (f"init_from {pretrain_dir}: {2 + 12 * depth} variables loaded, 4 left fresh "
          "(params/fc_norm/bias, params/fc_norm/scale, params/head/fc/bias, params/head/fc/kernel)"
          ) in out
  assert "checkpoint entries unused (backbone.decoder_blocks.0." in out
  from vidtx import checkpoint
  abstract = nn.unbox(models.abstract_variables(models.build(config.model), config.model))
  saved, _ = checkpoint.restore_variables(pretrain_dir, checkpoint.abstract(
      {"params": abstract["params"], "batch_stats": {}}))
  np.testing.assert_array_equal(np.asarray(params["blocks_1"]["mlp"]["fc2"]["kernel"].value),
                                saved["params"]["blocks_1"]["mlp"]["fc2"]["kernel"])


def test_pretrained_encoder_into_vivit_where_shapes_allow(tmp_path, capsys):
  from vidtx import checkpoint, convert
  config = ml_collections.ConfigDict(tiny(**TINY_PRETRAIN))
  model = models.build(config)
  variables = models.jit_init(lambda v: model.init(jax.random.key(0), v, train=False))(clip())
  variables = {"params": jax.tree.map(lambda x: x.value if hasattr(x, "value") else x,
                                      variables["params"], is_leaf=lambda x: hasattr(x, "value")),
               "batch_stats": {}}
  checkpoint.save_variables(str(tmp_path / "mae"), variables, {"model": config.to_dict(), "step": 0})
  vivit = ml_collections.ConfigDict(models.tiny_config("vivit", "spatio_temporal", num_classes=5,
                                                       dtype="float32"))
  fresh = convert.model_shapes(vivit)
  init = ml_collections.ConfigDict(dict(path=str(tmp_path / "mae"), format="vidtx", options={}))
  vivit_model = models.build(vivit)
  start = models.jit_init(lambda v: vivit_model.init(jax.random.key(1), v, train=False))(clip())
  params = convert.init_from(init, start, vivit)["params"]
  out = capsys.readouterr().out
  np.testing.assert_array_equal(np.asarray(params["blocks_1"]["attn"]["qkv"]["kernel"].value),
                                variables["params"]["blocks_1"]["attn"]["qkv"]["kernel"])
  np.testing.assert_array_equal(np.asarray(params["patch_embed"]["proj"]["kernel"].value),
                                variables["params"]["patch_embed"]["proj"]["kernel"])
  assert "a vidtx checkpoint of model 'videomae'" in out
  assert "left fresh" in out and "params/pos_embed" in out and "params/cls_token" in out
  assert len(fresh) > 0


# ----------------------------------------------------------------------------- official checkpoints
GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "videomae")


def golden_config(pretrain: bool) -> ml_collections.ConfigDict:
  """The tiny models of tests/golden/make_videomae.py."""
  return ml_collections.ConfigDict(dict(
      name="videomae", num_classes=5, num_frames=16 if pretrain else 4, image_size=16,
      dtype="float32", patch_size=8, tubelet_size=2, hidden_size=32, depth=2, num_heads=4,
      drop_path_rate=0.0, pretrain=pretrain, mask_ratio=0.5, decoder_hidden_size=16,
      decoder_depth=1, decoder_num_heads=2))


def test_official_checkpoints_give_the_official_logits_and_reconstructions():
  """Released-layout .pth files made by MCG-NJU/VideoMAE's own code load without torch, and give
  its logits (fine-tuned, {'module': ...}) and reconstructions (pretraining with a fixed tube
  mask, {'model': ...})."""
  from vidtx import convert
  golden = np.load(os.path.join(GOLDEN, "outputs.npz"))
  to_ours = lambda video: jnp.asarray(video.transpose(0, 2, 3, 4, 1))  # B C T H W -> B T H W C

  config = golden_config(pretrain=False)
  variables = convert.from_videomae(os.path.join(GOLDEN, "finetune.pth"), config)
  logits = jax.jit(lambda v, x: models.build(config).apply(v, x, train=False))(
      variables, to_ours(golden["finetune_video"]))
  np.testing.assert_allclose(logits, golden["finetune_logits"], rtol=1e-5, atol=1e-6)

  config = golden_config(pretrain=True)
  variables = convert.from_videomae(os.path.join(GOLDEN, "pretrain.pth"), config)
  model = models.build(config)
  predictions, targets, _ = jax.jit(lambda v, x, m: model.apply(v, x, train=False, mask=m, reconstruct=True))(
      variables, to_ours(golden["pretrain_video"]), jnp.asarray(golden["pretrain_mask"]))
  np.testing.assert_allclose(predictions, golden["pretrain_reconstruction"], rtol=1e-5, atol=1e-6)
  # Their targets de-normalise (ImageNet mean / std) first: the same up to where the 1e-6 sits.
  np.testing.assert_allclose(targets, golden["pretrain_targets"], rtol=1e-4, atol=1e-4)
  assert "torch" not in sys.modules

  with pytest.raises(VidtxError, match="a pretraining VideoMAE checkpoint.*videomae_k400.py:pretrain"):
    convert.from_videomae(os.path.join(GOLDEN, "pretrain.pth"), golden_config(pretrain=False))
  other = golden_config(False)
  other.update(depth=3)
  with pytest.raises(VidtxError, match=r"12 missing keys: blocks\.2\.attn\.proj\.bias"):
    convert.from_videomae(os.path.join(GOLDEN, "finetune.pth"), other)


def test_convert_cli_takes_a_videomae_file(tmp_path):
  """python -m vidtx.convert videomae FILE.pth --config ... --output DIR writes a checkpoint."""
  config = tmp_path / "tiny.py"
  config.write_text("import ml_collections\nfrom configs import videomae_k400\n"
                    "def get_config(arg=None):\n  c = videomae_k400.get_config('finetune')\n"
                    f"  c.model = ml_collections.ConfigDict({golden_config(False).to_dict()!r})\n"
                    "  return c\n")
  result = subprocess.run(
      [sys.executable, "-m", "vidtx.convert", "videomae", os.path.join(GOLDEN, "finetune.pth"),
       f"--config={config}", f"--output={tmp_path / 'out'}"],
      capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)),
      env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "wrote" in result.stdout + result.stderr and os.listdir(tmp_path / "out")


# ----------------------------------------------------------------------------- the picture
def test_explain_shows_masked_input_reconstruction_and_original(tmp_path):
  config = tiny(**TINY_PRETRAIN)
  model = models.build(config)
  video = clip(batch=1)
  variables = models.jit_init(lambda v: model.init(jax.random.key(0), v, train=False))(video)
  data = ml_collections.ConfigDict(dict(mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225)))
  rec = videomae.explain(model, variables, video, data_config=data)
  assert rec.masked.shape == rec.reconstruction.shape == rec.original.shape == (4, 32, 32, 3)
  assert rec.mask.shape == (2, 2, 2) and rec.mask.sum() == 4
  hidden = np.repeat(np.repeat(np.repeat(rec.mask, 2, 0), 16, 1), 16, 2)  # [T, H, W]
  np.testing.assert_allclose(rec.original, np.clip(np.asarray(video[0]) * 0.225 + 0.45, 0, 1), atol=1e-6)
  np.testing.assert_array_equal(rec.reconstruction[~hidden], rec.original[~hidden])
  np.testing.assert_allclose(rec.masked[hidden], 0.5, atol=1e-6)
  np.testing.assert_array_equal(rec.masked[~hidden], rec.original[~hidden])
  # The first hidden tube: its prediction times the tube's own std, plus its mean (per channel).
  mask = videomae.tube_mask(jax.random.key(0), 1, (2, 2, 2), 0.5)
  predictions, _, _ = model.apply(variables, video, train=False, mask=mask, reconstruct=True)
  first = int(np.argmax(np.asarray(mask[0])))
  t, r, c = first // 4, first // 2 % 2, first % 2
  tube = np.asarray(video[0, 2 * t:2 * t + 2, 16 * r:16 * r + 16, 16 * c:16 * c + 16], np.float64)
  pixels = tube.reshape(-1, 3)
  guess = np.asarray(predictions[0, 0]).reshape(-1, 3) * (pixels.std(0, ddof=1) + 1e-6) + pixels.mean(0)
  expected = np.clip(guess.reshape(tube.shape) * 0.225 + 0.45, 0, 1)
  np.testing.assert_allclose(rec.reconstruction[2 * t:2 * t + 2, 16 * r:16 * r + 16, 16 * c:16 * c + 16],
                             expected, rtol=1e-4, atol=1e-5)
  uint8 = np.round(rec.original * 255).astype(np.uint8)
  paths = rec.write(str(tmp_path), "clip", uint8, ["a", "b"])
  from PIL import Image
  image = Image.open(paths["png"])
  assert image.size[0] > 4 * 96 and image.size[1] > 3 * 96   # 4 frames x 3 rows, enlarged
  np.testing.assert_array_equal(np.load(paths["npz"])["mask"], rec.mask)
  with pytest.raises(VidtxError, match="fine-tuned VideoMAE reconstructs nothing"):
    videomae.explain(models.build(tiny()), variables, video, data_config=data)
