"""Optimizer pieces: schedules, weight-decay masks, LR multipliers, losses, batch plans, mesh shapes."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import common
from vidtx import losses, optim, sharding, trainer
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
