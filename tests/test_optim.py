"""Optimizer pieces: schedules, weight-decay masks, LR multipliers, losses, batch plans, mesh shapes."""
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import common
from vidtx import losses, models, optim, sharding, trainer
from vidtx.errors import VidtxError


def optim_config(**overrides):
  c = common.base_config().optim
  c.update(overrides)
  return c


def test_warmup_cosine_schedule_values():
  sched = optim.make_schedule(optim_config(lr=1.0, schedule="warmup_cosine", warmup_steps=10,
                                           warmup_init_lr=0.1), total_steps=110, steps_per_epoch=11)
  assert float(sched(0)) == pytest.approx(0.1)
  assert float(sched(5)) == pytest.approx(0.55)
  assert float(sched(10)) == pytest.approx(1.0)
  assert float(sched(60)) == pytest.approx(0.5, abs=1e-6)  # half-way through the cosine
  assert float(sched(110)) == pytest.approx(0.0, abs=1e-6)


def test_multistep_schedule_in_epochs_with_warmup():
  sched = optim.make_schedule(optim_config(lr=0.1, schedule="multistep", milestones_epochs=[2, 4],
                                           gamma=0.1, warmup_epochs=1), total_steps=60, steps_per_epoch=10)
  assert float(sched(0)) == pytest.approx(0.0)
  assert float(sched(5)) == pytest.approx(0.05)
  assert float(sched(15)) == pytest.approx(0.1)
  # join_schedules restarts the inner schedule at the warmup boundary: milestones count from there.
  assert float(sched(10 + 20)) == pytest.approx(0.01)
  assert float(sched(10 + 40)) == pytest.approx(0.001)


def test_durations_are_steps_or_epochs_not_both():
  c = ml_collections.ConfigDict({"warmup_steps": 3, "warmup_epochs": None})
  assert optim.to_steps(c, "warmup", 100) == 3
  c = ml_collections.ConfigDict({"warmup_steps": None, "warmup_epochs": 2.5})
  assert optim.to_steps(c, "warmup", 10) == 25
  with pytest.raises(VidtxError, match="only one"):
    optim.to_steps(ml_collections.ConfigDict({"warmup_steps": 1, "warmup_epochs": 1}), "warmup", 10)


def test_unknown_schedule_and_optimizer_are_clear_errors():
  with pytest.raises(VidtxError, match="schedule"):
    optim.make_schedule(optim_config(schedule="cosine_restarts"), 10, 1)
  with pytest.raises(VidtxError, match="optimizer"):
    optim.make_optimizer(optim_config(name="lamb"), {"w": jnp.zeros(2)}, optax.constant_schedule(1.0))


PARAMS = {"blocks_0": {"attn": {"qkv": {"kernel": jnp.ones((4, 12)), "bias": jnp.ones(12)}},
                       "norm1": {"scale": jnp.ones(4)}},
          "pos_embed": jnp.ones((1, 5, 4)), "head": {"fc": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones(3)}}}


def test_decay_mask_by_regex_and_dimension():
  mask = optim.decay_mask(PARAMS, optim_config(no_decay=["pos_embed", "head/fc/bias"], no_decay_1d=False))
  assert mask["pos_embed"] is False and mask["head"]["fc"]["bias"] is False
  assert mask["blocks_0"]["attn"]["qkv"]["bias"] is True
  mask = optim.decay_mask(PARAMS, optim_config(no_decay=[], no_decay_1d=True))
  assert mask["blocks_0"]["norm1"]["scale"] is False and mask["blocks_0"]["attn"]["qkv"]["kernel"] is True


def test_coupled_l2_sgd_step_matches_hand_computation():
  params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([0.5])}
  grads = {"w": jnp.array([0.1, 0.2]), "b": jnp.array([0.3])}
  cfg = optim_config(name="sgd", lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.01, no_decay=["^b$"])
  tx = optim.make_optimizer(cfg, params, optim.make_schedule(cfg, 10, 1))
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["w"], -0.1 * (grads["w"] + 0.01 * params["w"]), rtol=1e-6)
  np.testing.assert_allclose(updates["b"], -0.1 * grads["b"], rtol=1e-6)


def test_lr_multipliers_scale_updates():
  params = {"backbone": {"w": jnp.ones(2)}, "head": {"w": jnp.ones(2)}}
  grads = jax.tree.map(jnp.ones_like, params)
  cfg = optim_config(name="sgd", lr=1.0, momentum=0.0, nesterov=False, lr_mults=[["^head/", 10.0]])
  tx = optim.make_optimizer(cfg, params, optim.make_schedule(cfg, 10, 1))
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["backbone"]["w"], -1.0)
  np.testing.assert_allclose(updates["head"]["w"], -10.0)


def test_label_smoothing_and_topk():
  t = losses.smoothed_targets(jnp.array([2]), 4, 0.1)
  np.testing.assert_allclose(t, [[0.025, 0.025, 0.925, 0.025]], rtol=1e-6)
  logits = jnp.array([[0.1, 0.9, 0.5, 0.2], [3.0, 2.0, 1.0, 0.0]])
  assert losses.correct_topk(logits, jnp.array([2, 0]), 1).tolist() == [False, True]
  assert losses.correct_topk(logits, jnp.array([2, 3]), 2).tolist() == [True, False]


def test_batch_plan_derives_per_device_batch_and_accumulation():
  plan = trainer.batch_plan(256, num_devices=8, process_count=2, device_batch_size=8)
  assert plan == dict(global_batch=256, per_host=128, per_device=32, device_micro_batch=8,
                      accumulation_steps=4)
  assert trainer.batch_plan(16, 1, 1, None)["accumulation_steps"] == 1
  with pytest.raises(VidtxError, match="divisible"):
    trainer.batch_plan(10, 8, 1, None)


def test_mesh_shape():
  assert sharding.mesh_shape({"data": -1, "fsdp": 2, "tensor": 1}, 8) == (4, 2, 1)
  with pytest.raises(VidtxError):
    sharding.mesh_shape({"data": 3, "fsdp": 1, "tensor": 1}, 8)
  with pytest.raises(VidtxError):
    sharding.mesh_shape({"data": -1, "fsdp": -1, "tensor": 1}, 8)


def test_a_dimension_the_fsdp_axis_does_not_divide_is_replicated():
  """Swin-T's 96 channels do not split over fsdp=64: such a dimension stays whole on every device
  (jit refuses uneven argument shardings), the others are still sharded, and the state is made."""
  from configs import timesformer_k400
  config = timesformer_k400.get_config("smoke=True")
  config.model.update(hidden_size=36, num_heads=2)  # 36 channels over fsdp=8 do not divide
  mesh = sharding.make_mesh({"data": 1, "fsdp": 8, "tensor": 1})
  model, rng = models.build(config.model), jax.random.key(0)
  abstract = flax.linen.unbox(models.abstract_variables(model, config.model, rng))["params"]
  tx = optim.make_optimizer(config.optim, abstract, optax.constant_schedule(0.1))
  state, shardings = trainer.create_train_state(model, config.model, tx, mesh, sharding.rules(config), rng)
  specs = {jax.tree_util.keystr(k): s.spec for k, s in jax.tree_util.tree_leaves_with_path(shardings.params)}
  assert specs["['blocks_0']['mlp']['fc1']['kernel']"] == jax.sharding.PartitionSpec(None, "tensor")
  assert "fsdp" not in str(specs)
  assert state.params["blocks_0"]["mlp"]["fc1"]["kernel"].shape[0] == 36
  P = jax.sharding.PartitionSpec
  assert sharding.divisible_spec(P("fsdp", "tensor"), (128, 36), mesh) == P("fsdp", "tensor")
  assert sharding.divisible_spec(P(("data", "fsdp"), None), (12, 5), mesh) == P(None, None)


def test_config_arguments_are_typed_and_checked():
  args = common.parse_arg("smoke=True,frames=16,variant=small", smoke=False, frames=8, variant="base")
  assert args.smoke is True and args.frames == 16 and args.variant == "small"
  with pytest.raises(ValueError, match="unknown config argument"):
    common.parse_arg("colour=red", smoke=False)


def test_swa_averages_the_weights_after_the_chosen_steps_and_leaves_updates_alone():
  # SGD with changing gradients; SWA from step 3, every 2 steps, over 8 steps: steps 3, 5, 7.
  cfg = optim_config(name="sgd", lr=0.5, momentum=0.9, swa={"start_steps": 3, "every_steps": 2})
  params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
  with_swa = optim.make_optimizer(cfg, params, optim.make_schedule(cfg, 8, 1))
  without = optim.make_optimizer(optim_config(name="sgd", lr=0.5, momentum=0.9), params,
                                 optim.make_schedule(cfg, 8, 1))
  p, q = params, params
  s, t = with_swa.init(p), without.init(q)
  trajectory = []
  assert optim.swa_average(t) is None
  for step in range(1, 9):
    grads = jax.tree.map(lambda x: jnp.sin(step * (x + 1.0)), p)
    updates, s = with_swa.update(grads, s, p)
    p = optax.apply_updates(p, updates)
    updates, t = without.update(grads, t, q)
    q = optax.apply_updates(q, updates)
    trajectory.append(p)
  jax.tree.map(np.testing.assert_array_equal, p, q)  # SWA does not change the training path
  count, average = optim.swa_average(s)
  assert int(count) == 3
  expected = jax.tree.map(lambda *xs: np.mean(xs, axis=0), *[trajectory[k - 1] for k in (3, 5, 7)])
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-6), average, expected)


def test_swa_start_in_epochs_and_its_average_is_sharded_like_the_params():
  cfg = optim_config(swa={"start_epochs": 2, "every_epochs": 1})
  params = {"w": jnp.zeros((4, 2))}
  tx = optim.make_optimizer(cfg, params, optim.make_schedule(cfg, 100, 10), steps_per_epoch=10)
  state = tx.init(params)
  mapped = optax.tree_map_params(tx, lambda _: "P", state, transform_non_params=lambda _: "N")
  assert optim.swa_average(mapped) == ("N", {"w": "P"})
  grads = {"w": jnp.ones((4, 2))}
  for _ in range(30):  # averaged after steps 20 and 30
    _, state = tx.update(grads, state, params)
  assert int(optim.swa_average(state)[0]) == 2
  with pytest.raises(VidtxError, match="SWA"):
    optim.swa(0)


def test_distillation_loss_is_temperature_scaled_kl():
  rng = np.random.RandomState(0)
  student, teacher = rng.randn(4, 6).astype(np.float32), rng.randn(4, 6).astype(np.float32)
  for temperature in (1.0, 3.0):
    p = np.exp(teacher / temperature) / np.exp(teacher / temperature).sum(-1, keepdims=True)
    q = np.exp(student / temperature) / np.exp(student / temperature).sum(-1, keepdims=True)
    expected = temperature ** 2 * (p * np.log(p / q)).sum(-1)
    np.testing.assert_allclose(losses.distillation(student, teacher, temperature), expected, rtol=1e-5)
    # Its gradient in the student's logits: T * (softmax(s / T) - softmax(t / T)) per example.
    grad = jax.grad(lambda s: losses.distillation(s, teacher, temperature).sum())(student)
    np.testing.assert_allclose(grad, temperature * (q - p), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(losses.distillation(teacher, teacher), 0.0, atol=1e-6)


# ----------------------------------------------------------------------------- mx-mark's options
def sgd_step(cfg, params, grads, steps=1, **kwargs):
  """The updates of step `steps` (plain SGD, lr from cfg) and the final state."""
  tx = optim.make_optimizer(cfg, params, optim.make_schedule(cfg, 10, 1), **kwargs)
  state = tx.init(params)
  for _ in range(steps):
    updates, state = tx.update(grads, state, params)
  return updates, state


VIT_PARAMS = {"patch_embed": {"proj": {"kernel": jnp.ones((2, 2, 3, 4))}}, "cls_token": jnp.ones((1, 1, 4)),
              "blocks_0": {"mlp": {"kernel": jnp.ones((4, 4))}},
              "blocks_1": {"mlp": {"kernel": jnp.ones((4, 4))}},
              "temporal_blocks_0": {"mlp": {"kernel": jnp.ones((4, 4))}},
              "norm": {"scale": jnp.ones(4)}, "head": {"fc": {"kernel": jnp.ones((4, 3))}}}


def test_layer_decay_scales_each_block_by_its_depth():
  cfg = optim_config(name="sgd", lr=1.0, momentum=0.0, nesterov=False, layer_decay=0.5)
  grads = jax.tree.map(jnp.ones_like, VIT_PARAMS)
  updates, _ = sgd_step(cfg, VIT_PARAMS, grads, block_lists=("blocks", "temporal_blocks"))
  # 3 blocks: head / norm at depth 4 (x1), temporal_blocks_0 at 3, blocks_1 at 2, blocks_0 at 1,
  # embeddings at 0 (x 0.5 ** 4).
  expected = {("head", "fc", "kernel"): 1.0, ("norm", "scale"): 1.0,
              ("temporal_blocks_0", "mlp", "kernel"): 0.5, ("blocks_1", "mlp", "kernel"): 0.25,
              ("blocks_0", "mlp", "kernel"): 0.125, ("patch_embed", "proj", "kernel"): 0.0625,
              ("cls_token",): 0.0625}
  flat = flax.traverse_util.flatten_dict(updates)
  for path, scale in expected.items():
    np.testing.assert_allclose(flat[path], -scale, err_msg=str(path))
  with pytest.raises(VidtxError, match="no transformer blocks"):
    sgd_step(cfg, {"layers_0": {"w": jnp.ones(2)}}, {"layers_0": {"w": jnp.ones(2)}}, block_lists=())


def test_weight_decay_follows_a_cosine_to_its_end_value():
  params = {"w": jnp.array([1.0, -2.0])}
  zero = {"w": jnp.zeros(2)}
  for name in ("sgd", "adamw"):  # coupled L2 / decoupled: with zero gradients both are -lr * wd * w
    cfg = optim_config(name=name, lr=1.0, momentum=0.0, nesterov=False, schedule="constant",
                       weight_decay=0.1, weight_decay_end=0.5)
    for step, wd in ((1, 0.1), (6, 0.3), (11, 0.5), (13, 0.5)):  # over total_steps=10
      updates, _ = sgd_step(cfg, params, zero, steps=step, total_steps=10)
      np.testing.assert_allclose(updates["w"], -wd * params["w"], rtol=1e-5, err_msg=f"{name} {step}")
  schedule = optim.make_weight_decay_schedule(optim_config(weight_decay=0.05), 10)
  assert float(schedule(7)) == pytest.approx(0.05)  # no end value: constant


def test_frozen_parameters_get_no_update_no_state_and_no_weight_decay():
  params = {"backbone": {"w": jnp.full((5,), 2.0)}, "head": {"w": jnp.full((3,), 2.0)}}
  grads = {"backbone": {"w": jnp.ones(5)}, "head": {"w": jnp.ones(3)}}
  cfg = optim_config(name="adamw", lr=0.1, weight_decay=0.5, weight_decay_end=0.7,
                     freeze=["^backbone/"], clip_grad_norm=1.0)
  tx = optim.make_optimizer(cfg, params, optim.make_schedule(cfg, 10, 1), total_steps=10)
  state = tx.init(params)
  current = params
  for _ in range(3):
    updates, state = tx.update(grads, state, current)
    current = optax.apply_updates(current, updates)
  np.testing.assert_array_equal(current["backbone"]["w"], params["backbone"]["w"])
  assert np.all(np.asarray(current["head"]["w"]) < 2.0)
  shapes = [leaf.shape for leaf in jax.tree.leaves(state)]
  assert (3,) in shapes and (5,) not in shapes  # Adam moments for the head only
  # The gradient norm clipped is the trainable parameters' (sqrt(3)), not all of them.
  cfg.update(freeze=[], clip_grad_norm=None, weight_decay=0.0, weight_decay_end=None)
  probe = optim_config(name="sgd", lr=1.0, momentum=0.0, nesterov=False, linear_probe=True,
                       clip_grad_norm=1.0)
  updates, _ = sgd_step(probe, params, grads)
  np.testing.assert_allclose(updates["head"]["w"], -1 / np.sqrt(3), rtol=1e-6)
  np.testing.assert_array_equal(updates["backbone"]["w"], 0.0)


def test_freeze_errors():
  params = {"backbone": {"w": jnp.ones(2)}, "head": {"w": jnp.ones(2)}}
  with pytest.raises(VidtxError, match="matches no parameter"):
    optim.trainable_mask(params, optim_config(freeze=["^blocks_0/"]))
  with pytest.raises(VidtxError, match="nothing would train"):
    optim.trainable_mask(params, optim_config(freeze=["w$"]))


def tiny_sgd_training(model_overrides=None, **optim_overrides):
  """A one-device tiny TimeSformer with SGD: (config, model, mesh, schedule, tx, initial state)."""
  config = common.base_config()
  config.model = ml_collections.ConfigDict(models.tiny_config("timesformer", num_classes=3,
                                                              dtype="float32", **(model_overrides or {})))
  config.data = common.data_config(num_frames=4, image_size=32)
  config.optim.update(name="sgd", lr=0.5, **optim_overrides)
  model = models.build(config.model)
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  schedule = optim.make_schedule(config.optim, 10, 1)
  abstract = flax.linen.unbox(models.abstract_variables(model, config.model))["params"]
  tx = optim.make_optimizer(config.optim, abstract, schedule)
  state, _ = trainer.create_train_state(model, config.model, tx, mesh, sharding.rules(config),
                                        jax.random.key(0))
  return config, model, mesh, schedule, tx, state


def test_frozen_parameters_do_not_change_in_a_train_step():
  config, model, mesh, schedule, tx, state = tiny_sgd_training(
      weight_decay=1e-2, freeze=["^patch_embed/", "^blocks_0/attn/"])
  batch = {"video": np.random.RandomState(0).randint(0, 255, (2, 4, 32, 32, 3)).astype(np.uint8),
           "label": np.arange(2, dtype=np.int32)}
  with jax.set_mesh(mesh), flax.linen.logical_axis_rules(sharding.rules(config)):
    step = jax.jit(trainer.make_train_step(model, tx, schedule, config, 1, mesh))
    new, _ = step(state, batch, jax.random.key(1))
    new, _ = step(new, batch, jax.random.key(2))
  before = flax.traverse_util.flatten_dict(jax.device_get(state.params))
  after = flax.traverse_util.flatten_dict(jax.device_get(new.params))
  for path in before:
    frozen = path[0] == "patch_embed" or path[:2] == ("blocks_0", "attn")
    if frozen:
      np.testing.assert_array_equal(after[path], before[path], err_msg=str(path))
    elif path[-1] == "kernel" and path[0] != "head":
      assert not np.array_equal(after[path], before[path]), path


def test_timesformer_k600_smoke_switches_on_every_mxmark_option():
  """tests/test_configs.py trains configs/timesformer_k600.py:smoke=True; it must have them all."""
  from configs import timesformer_k600  # pylint: disable=g-import-not-at-top
  smoke = timesformer_k600.get_config("smoke=True")
  assert smoke.optim.layer_decay < 1 and smoke.optim.weight_decay_end is not None
  assert smoke.optim.freeze and smoke.data.auto_augment
  assert smoke.model.depth > 1  # more than one block for the layer decay to tell apart
  full = timesformer_k600.get_config()  # the seed's recipe: none of them
  assert full.optim.layer_decay == 1 and not full.optim.freeze and not full.data.auto_augment
  assert full.optim.milestones_epochs == [5, 11] and full.data.frame_interval == 32


def test_accumulated_micro_batches_update_as_the_whole_batch_in_one_step():
  """accumulation_steps=1 runs without the scan (XLA-CPU is 3-4x slower inside a loop); both paths
  must give the update of the mean gradient over the whole batch."""
  config, model, mesh, schedule, tx, state = tiny_sgd_training({"drop_path_rate": 0.0}, weight_decay=0.0)
  batch = {"video": np.random.RandomState(0).randint(0, 255, (4, 4, 32, 32, 3)).astype(np.uint8),
           "label": np.array([0, 1, 2, 0], np.int32)}
  results = {}
  with jax.set_mesh(mesh), flax.linen.logical_axis_rules(sharding.rules(config)):
    for steps in (1, 2):
      step = jax.jit(trainer.make_train_step(model, tx, schedule, config, steps, mesh))
      results[steps] = jax.device_get(step(state, batch, jax.random.key(1)))
  (one, m1), (two, m2) = results[1], results[2]
  assert float(m1["loss"]) == pytest.approx(float(m2["loss"]), rel=1e-5)
  assert float(m1["grad_norm"]) == pytest.approx(float(m2["grad_norm"]), rel=1e-4)
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), one.params, state.params)
  assert max(jax.tree.leaves(moved)) > 1e-3  # the step did something
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), one.params, two.params)
