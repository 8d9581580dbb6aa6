"""Train-step levers that must not change results: scanned blocks, bf16 optimizer moments."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vidtx import models, optim
from vidtx.errors import VidtxError
from vidtx.models import vit

SCANNED = [
    ("tokshift", {}),
    ("timesformer", {}),
    ("vivit", {"model": "factorised_encoder", "temporal_depth": 2}),
]


def _config(name, depth=2, **extra):
  return ml_collections.ConfigDict(dict(name=name, num_classes=5, dtype="float32",
                                        **dict(vit.TINY, depth=depth), drop_path_rate=0.1, **extra))


@pytest.mark.parametrize("name,extra", SCANNED, ids=[f"{n}-{'-'.join(map(str, e.values())) or 'default'}"
                                                      for n, e in SCANNED])
def test_scanned_blocks_give_the_unrolled_logits_and_gradients_from_the_same_variables(name, extra):
  config = _config(name, **extra)
  unrolled = models.build(config)
  scanned = models.build(config, scan_blocks=True, remat="full")
  x = jax.random.uniform(jax.random.key(1), (2, 4, 32, 32, 3))
  variables = models.jit_init(lambda: unrolled.init({"params": jax.random.key(0)}, x, train=False))()
  # The scanned model's own init makes the same variable tree (checkpoints are interchangeable).
  own = jax.eval_shape(lambda: scanned.init({"params": jax.random.key(0)}, x, train=False))
  assert jax.tree.structure(own) == jax.tree.structure(variables)

  def loss(params, model):
    return jnp.mean(model.apply({"params": params}, x, train=False) ** 2)

  # Jitted: op-by-op dispatch of these blocks takes several times their compile.
  logits = [jax.jit(lambda v, m=m: m.apply(v, x, train=False))(variables) for m in (scanned, unrolled)]
  np.testing.assert_allclose(logits[0], logits[1], atol=1e-6)
  grads = [jax.jit(jax.grad(loss), static_argnums=1)(variables["params"], m) for m in (unrolled, scanned)]
  for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(a, b, atol=1e-6)
  # Training mode (drop path at per-block rates) runs scanned, and draws its masks.
  apply_train = jax.jit(lambda v, r: scanned.apply(v, x, train=True, rngs={"dropout": r}))
  train = [apply_train(variables, jax.random.key(s)) for s in (1, 2)]
  assert not np.allclose(train[0], train[1])


def test_scanning_compiles_one_block():
  config = _config("timesformer", depth=6)
  x = jnp.zeros((1, 4, 32, 32, 3))
  texts = []
  for scan in (False, True):
    model = models.build(config, scan_blocks=scan)
    params = jax.eval_shape(lambda m=model: m.init({"params": jax.random.key(0)}, x, train=False))["params"]
    step = jax.jit(jax.grad(lambda p, m=model: m.apply({"params": p}, x, train=False).sum()))
    texts.append(step.lower(params).as_text())
  assert "while" not in texts[0] and "while" in texts[1]
  matmuls = [text.count("dot_general") for text in texts]
  assert matmuls[1] * 3 < matmuls[0]  # six blocks' matmuls written out, against one (+ head)


def test_families_that_do_not_scan_say_so():
  config = ml_collections.ConfigDict(dict(name="swin", num_classes=5))
  with pytest.raises(VidtxError, match="does not scan its blocks"):
    models.build(config, scan_blocks=True)


def _optim_config(name, moments):
  return ml_collections.ConfigDict(dict(
      name=name, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4, b1=0.9, b2=0.999,
      eps=1e-8, clip_grad_norm=None, moments_dtype=moments, no_decay=[], no_decay_1d=False,
      lr_mults=[], weight_decay_end=None, layer_decay=1.0, freeze=[], linear_probe=False,
      swa=ml_collections.ConfigDict(dict(start_steps=None, start_epochs=None, every_steps=None,
                                         every_epochs=None))))


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_bf16_moments_halve_the_first_moment_and_train_alike(name):
  target = jax.random.normal(jax.random.key(0), (64,))
  params = {"w": jnp.zeros((64,)), "b": jnp.zeros(())}

  def loss(p):
    return 0.5 * jnp.sum((p["w"] - target) ** 2) + (p["b"] - 1.0) ** 2

  finals = {}
  for moments in ("float32", "bfloat16"):
    tx = optim.make_optimizer(_optim_config(name, moments), params, optax.constant_schedule(0.05))
    state = tx.init(params)
    dtypes = {leaf.dtype for leaf in jax.tree.leaves(state) if getattr(leaf, "ndim", 0) == 1}
    if moments == "bfloat16":
      # sgd: the momentum trace; adamw: mu in bf16, nu stays float32.
      assert jnp.dtype(jnp.bfloat16) in dtypes
      assert (jnp.dtype(jnp.float32) in dtypes) == (name == "adamw")
    else:
      assert dtypes == {jnp.dtype(jnp.float32)}
    p = params
    for _ in range(100):
      updates, state = tx.update(jax.grad(loss)(p), state, p)
      p = optax.apply_updates(p, updates)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(p))
    finals[moments] = float(loss(p))
  assert finals["float32"] < 0.01 * float(loss(params))
  assert finals["bfloat16"] == pytest.approx(finals["float32"], rel=0.1, abs=1e-3)


def test_unknown_moments_dtype_is_a_clear_error():
  with pytest.raises(VidtxError, match="moments_dtype='float16'"):
    optim.make_optimizer(_optim_config("sgd", "float16"), {"w": jnp.zeros(3)},
                         optax.constant_schedule(0.1))
