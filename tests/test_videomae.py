"""VideoMAE: tube masking, per-tube targets, the label-free pretraining objective through the
trainer, pretrain -> fine-tune with init_from format 'vidtx', official-checkpoint conversion
(golden files from MCG-NJU/VideoMAE's own code: tests/golden/make_videomae.py) and the
reconstruction picture. CPU, tiny shapes."""
import json
import os

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
  variables = jax.jit(lambda v: model.init(jax.random.key(0), v, train=False))(video)
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
  # Without a mask: training draws from the dropout rng, evaluation uses a fixed one.
  masks = jax.jit(lambda v, key: (
      model.apply(variables, v, train=False, reconstruct=True)[2],
      model.apply(variables, v, train=True, rngs={"dropout": key}, reconstruct=True)[2]))
  a, b = masks(video, jax.random.key(9))
  np.testing.assert_array_equal(a, masks(video, jax.random.key(10))[0])
  assert not np.array_equal(a, b)
  assert losses.is_label_free(model) and not losses.is_label_free(models.build(tiny()))


def test_finetune_head_starts_small_and_bad_shapes_say_so():
  model = models.build(tiny())
  variables = jax.jit(lambda v: model.init(jax.random.key(0), v, train=False))(clip())
  kernel = np.asarray(variables["params"]["head"]["fc"]["kernel"].value)
  assert 0 < np.abs(kernel).max() <= 2 * 0.02 * 0.001  # official init_scale 0.001
  with pytest.raises(VidtxError, match="tubelets"):
    jax.eval_shape(lambda v: model.apply(variables, v, train=False), clip(frames=3))
  with pytest.raises(VidtxError, match="mask_ratio"):
    models.abstract_variables(models.build(tiny(**dict(TINY_PRETRAIN, mask_ratio=0.1))), tiny())


def _smoke(arg: str, data_dir: str, steps: int = 2) -> ml_collections.ConfigDict:
  from configs import videomae_k400
  config = videomae_k400.get_config(f"{arg},smoke=True")
  config.data.dir = data_dir
  config.train.update(num_steps=steps, val_every=steps, checkpoint_every=steps, log_every=1)
  return config


def test_pretrain_then_finetune_through_the_trainer(smoke_data_dir, tmp_path, capsys):
  """Label-free pretraining runs in the ordinary trainer (validation reports the reconstruction
  loss, no top-1); fine-tuning starts from its encoder (init_from format vidtx) and says what it
  loaded, left fresh and did not use."""
  from vidtx import trainer
  pretrain_dir = str(tmp_path / "pretrain")
  last = trainer.train_and_evaluate(_smoke("pretrain", smoke_data_dir), pretrain_dir)
  assert "val_loss" in last and "val_top1" not in last and "train_top1" not in last
  assert 0.1 < last["val_loss"] < 10
  out = capsys.readouterr().out
  assert "(label-free objective)" in out
  lines = [json.loads(line) for line in open(os.path.join(pretrain_dir, "metrics.jsonl"))]
  assert all(np.isfinite(line["loss"]) for line in lines if "loss" in line)

  config = _smoke("finetune", smoke_data_dir)
  config.init_from.path = pretrain_dir
  last = trainer.train_and_evaluate(config, str(tmp_path / "finetune"))
  assert "val_top1" in last
  out = capsys.readouterr().out
  depth = config.model.depth
  # patch embedding (2) + 12 per block; fc_norm (2) and head (2) fresh; the encoder's final norm
  # (2) and the decoder's 2 + 12 + 2 + 2 + 1 entries (to_decoder, mask token) unused.
  assert (f"init_from {pretrain_dir}: {2 + 12 * depth} variables loaded, 4 left fresh "
          "(params/fc_norm/bias, params/fc_norm/scale, params/head/fc/bias, params/head/fc/kernel)"
          ) in out
  assert "20 checkpoint entries unused (backbone.decoder_blocks.0." in out


def test_pretrained_encoder_into_vivit_where_shapes_allow(tmp_path, capsys):
  from vidtx import checkpoint, convert
  config = ml_collections.ConfigDict(tiny(**TINY_PRETRAIN))
  model = models.build(config)
  variables = jax.jit(lambda v: model.init(jax.random.key(0), v, train=False))(clip())
  variables = {"params": jax.tree.map(lambda x: x.value if hasattr(x, "value") else x,
                                      variables["params"], is_leaf=lambda x: hasattr(x, "value")),
               "batch_stats": {}}
  checkpoint.save_variables(str(tmp_path / "mae"), variables, {"model": config.to_dict(), "step": 0})
  vivit = ml_collections.ConfigDict(models.tiny_config("vivit", "spatio_temporal", num_classes=5,
                                                       dtype="float32"))
  fresh = convert.model_shapes(vivit)
  init = ml_collections.ConfigDict(dict(path=str(tmp_path / "mae"), format="vidtx", options={}))
  vivit_model = models.build(vivit)
  start = jax.jit(lambda v: vivit_model.init(jax.random.key(1), v, train=False))(clip())
  params = convert.init_from(init, start, vivit)["params"]
  out = capsys.readouterr().out
  np.testing.assert_array_equal(np.asarray(params["blocks_1"]["attn"]["qkv"]["kernel"].value),
                                variables["params"]["blocks_1"]["attn"]["qkv"]["kernel"])
  np.testing.assert_array_equal(np.asarray(params["patch_embed"]["proj"]["kernel"].value),
                                variables["params"]["patch_embed"]["proj"]["kernel"])
  assert "a vidtx checkpoint of model 'videomae'" in out
  assert "left fresh" in out and "params/pos_embed" in out and "params/cls_token" in out
  assert len(fresh) > 0
