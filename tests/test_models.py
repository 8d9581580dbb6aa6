"""Model zoo: shapes, the temporal-mixing semantics of each family, Swin's index/mask, counts.

CPU, tiny shapes. Expected values come from hand-written examples or brute-force loops,
never from the code under test.
"""
import dataclasses
import itertools
import math
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import cli_runner

from vidtx import checkpoint, convert, flops, models, sharding
from vidtx.errors import VidtxError
from vidtx.models import resize, swin, timesformer, tokshift, tsm, vit

# Every registered family with each of its tiny test variants.
VARIANTS = [(name, variant) for name in sorted(models.MODELS) for variant in models.get_family(name).tiny]


def tiny(name, variant=None, **overrides):
  """Family `name`'s tiny test variant with 5 classes."""
  return models.tiny_config(name, variant, **{"num_classes": 5, **overrides})


@pytest.fixture(autouse=True, scope="module")
def fast_compile():
  """XLA optimisation passes dominate CPU compile time for these tiny models; skip them here."""
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


def video(batch=2, frames=4, size=32, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch, frames, size, size, 3), jnp.float32)


def random_variables(model, clip, seed=0, scale=0.2):
  """Variables with the init's structure but random values (no compile: built from eval_shape)."""
  abstract = nn.meta.unbox(jax.eval_shape(lambda v: model.init(jax.random.key(0), v, train=False), clip))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "var":
      return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), jnp.float32)
    value = rng.normal(0.0, scale, leaf.shape)
    return jnp.asarray(value + (name == "scale"), jnp.float32)
  return jax.tree_util.tree_map_with_path(fill, abstract)


def forward(model, variables, clip, **kw):
  return jax.jit(lambda var, v: model.apply(var, v, train=False, **kw))(variables, clip)


# ----------------------------------------------------------------------------- every model

@pytest.mark.parametrize("name,variant", VARIANTS)
def test_output_shape_and_axis_names(name, variant):
  config = tiny(name, variant)
  model = models.build(config)
  clip = models.dummy_video(config, batch=2)
  boxed = models.abstract_variables(model, config)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.default_rules(name)):  # constraints must match activation ranks
    apply = lambda var, v: model.apply(var, v, train=False)
    out = jax.eval_shape(apply, boxed, clip)
    assert "sharding_constraint" in str(jax.make_jaxpr(apply)(boxed, clip))
  assert out.shape == (2, 5) and out.dtype == jnp.float32
  for path, leaf in jax.tree_util.tree_leaves_with_path(
      boxed["params"], is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)):
    assert isinstance(leaf, nn.LogicallyPartitioned), jax.tree_util.keystr(path)
    assert len(leaf.names) == leaf.value.ndim, jax.tree_util.keystr(path)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_bf16_compute_float32_params_and_drop_path_only_in_training(name):
  fields = {f.name for f in dataclasses.fields(models.model_class(name))}
  rate = "drop_path_rate" if "drop_path_rate" in fields else "dropout_rate"
  config = tiny(name, dtype="bfloat16", **{rate: 0.5})
  model = models.build(config)
  clip = video(frames=config["num_frames"], size=config["image_size"])
  variables = models.jit_init(lambda v: model.init(jax.random.key(0), v, train=False))(clip)
  assert {x.dtype for x in jax.tree_util.tree_leaves(nn.meta.unbox(variables))} == {jnp.dtype("float32")}
  apply = lambda var, v: model.apply(var, v, train=False)
  jaxpr = jax.make_jaxpr(apply)(variables, clip).jaxpr
  operand_dtypes = [e.invars[0].aval.dtype for e in _all_eqns(jaxpr)
                    if e.primitive.name in ("dot_general", "conv_general_dilated")]
  assert operand_dtypes and set(operand_dtypes) == {jnp.dtype("bfloat16")}  # the classifier too

  eval_logits = jax.jit(apply)(variables, clip)
  assert eval_logits.shape == (2, 5) and eval_logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(eval_logits)).all()
  np.testing.assert_array_equal(eval_logits, jax.jit(apply)(variables, clip))  # no rng needed at eval
  train = jax.jit(lambda var, v, key: model.apply(var, v, train=True, rngs={"dropout": key},
                                                  mutable=["batch_stats"])[0])
  a, b = train(variables, clip, jax.random.key(1)), train(variables, clip, jax.random.key(2))
  assert not np.allclose(a, b)  # stochastic depth / dropout active in training


def test_registry_collects_each_familys_declaration():
  for name in models.MODELS:
    family = models.get_family(name)
    assert isinstance(family, models.Family) and issubclass(family.module, nn.Module)
    assert family.tiny, name
    model = models.build(tiny(name))
    assert models.family_of(model) is family and models.model_class(name) is family.module
    for field in family.non_structural:   # every declared key is a field of some family's module
      assert any(hasattr(models.get_family(n).module, field) for n in models.MODELS), (name, field)
  with pytest.raises(VidtxError, match="not a model"):
    models.get_family("no_such_model")


def _changed(value):
  """Another value of a run-time key's type (dtype names swap; rates grow)."""
  if value in ("bfloat16", "float32"):
    return "float32" if value == "bfloat16" else "bfloat16"
  return value + 0.25


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_run_time_keys_keep_the_parameters_and_the_checkpoint(name):
  """A family's non-structural keys change no parameter, and overriding them (e.g. Swin's
  head_dropout_rate at eval) still finds the checkpoint belongs to the model."""
  saved = ml_collections.ConfigDict(tiny(name))
  model = models.build(saved)
  keys = [k for k in models.get_family(name).non_structural
          if hasattr(model, k) and k != "attention_impl"]   # cudnn does not trace on a CPU
  assert "dtype" in keys
  ours = ml_collections.ConfigDict(saved.to_dict())
  for key in keys:
    ours[key] = _changed(getattr(model, key))
  assert convert.model_shapes(ours) == convert.model_shapes(saved)
  checkpoint.check_model_matches({"model": saved.to_dict()}, ours, "ckpt")
  ours.num_classes = 6
  with pytest.raises(VidtxError, match="another model: config.model.num_classes"):
    checkpoint.check_model_matches({"model": saved.to_dict()}, ours, "ckpt")


def test_swin_head_dropout_rate_is_not_structural():
  saved = ml_collections.ConfigDict(tiny("swin"))
  ours = ml_collections.ConfigDict(dict(saved.to_dict(), head_dropout_rate=0.0))
  checkpoint.check_model_matches({"model": saved.to_dict()}, ours, "ckpt")


def _all_eqns(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in flops._sub_jaxprs(value):
        yield from _all_eqns(sub)


# ----------------------------------------------------------------------------- TokShift

def test_token_shift_hand_example():
  # One video, T=2 frames, 2 tokens (CLS + 1 patch), 4 channels, fold_div 4 -> fold 1.
  x = np.array([[[1, 2, 3, 4], [5, 6, 7, 8]],            # frame 0: CLS, patch
                [[11, 12, 13, 14], [15, 16, 17, 18]]],   # frame 1
               np.float32)
  expected = np.array([[[11, 0, 3, 4], [5, 6, 7, 8]],     # ch0 <- next frame, ch1 <- (none)
                       [[0, 2, 13, 14], [15, 16, 17, 18]]],  # ch0 <- (none), ch1 <- previous
                      np.float32)
  np.testing.assert_array_equal(tokshift.token_shift(jnp.asarray(x), num_frames=2), expected)


def test_token_shift_matches_loop_definition():
  b, t, length, c, fold_div = 2, 3, 3, 8, 4
  x = np.random.default_rng(0).normal(size=(b * t, length, c)).astype(np.float32)
  out = np.asarray(tokshift.token_shift(jnp.asarray(x), num_frames=t, fold_div=fold_div))
  fold = c // fold_div
  v = x.reshape(b, t, length, c)
  expected = v.copy()
  for i, f, ch in itertools.product(range(b), range(t), range(2 * fold)):
    src = f + 1 if ch < fold else f - 1
    expected[i, f, 0, ch] = v[i, src, 0, ch] if 0 <= src < t else 0.0
  np.testing.assert_array_equal(out, expected.reshape(b * t, length, c))


def test_tokshift_without_shift_ignores_frame_order():
  clip = video()
  perm = clip[:, ::-1]
  for shift, invariant in ((False, True), (True, False)):
    model = models.build(tiny("tokshift", shift=shift, dtype="float32"))
    variables = random_variables(model, clip)
    same = np.allclose(forward(model, variables, clip), forward(model, variables, perm), atol=1e-5)
    assert same == invariant, f"shift={shift}"


# ----------------------------------------------------------------------------- TimeSformer

def test_divided_block_equals_explicit_per_frame_computation():
  b, t, n, d, heads = 1, 3, 3, 16, 2
  block = timesformer.DividedBlock(num_frames=t, num_heads=heads)
  x = jax.random.normal(jax.random.key(0), (b, 1 + n * t, d))
  params = random_variables(block, x)["params"]
  out = np.asarray(block.apply({"params": params}, x, train=False))

  norm = lambda p, y: vit.layer_norm(dtype=jnp.float32, name=None).apply({"params": p}, y)
  attn = lambda p, y: vit.Attention(heads).apply({"params": p}, y, train=False)
  fc = lambda p, y: y @ p["kernel"] + p["bias"]
  mlp = lambda p, y: vit.Mlp(4 * d).apply({"params": p}, y, train=False)
  expected = np.zeros_like(out)
  for i in range(b):
    cls, tokens = x[i, 0], x[i, 1:].reshape(n, t, d)       # tokens (n, t), time fastest
    # Temporal attention per patch over its t frames, CLS excluded.
    tokens = jnp.stack([tokens[j] + fc(params["temporal_fc"], attn(params["temporal_attn"],
                        norm(params["temporal_norm1"], tokens[j]))) for j in range(n)])
    # Spatial attention per frame with the CLS; CLS outputs averaged over frames.
    cls_out, new_tokens = [], tokens
    for f in range(t):
      frame = jnp.concatenate([cls[None], tokens[:, f]], axis=0)
      res = attn(params["attn"], norm(params["norm1"], frame))
      cls_out.append(res[0])
      new_tokens = new_tokens.at[:, f].add(res[1:])
    y = jnp.concatenate([(cls + jnp.mean(jnp.stack(cls_out), axis=0))[None],
                         new_tokens.reshape(n * t, d)], axis=0)
    expected[i] = y + mlp(params["mlp"], norm(params["norm2"], y))
  np.testing.assert_allclose(out, expected, atol=2e-5)


def test_jit_init_draws_the_weights_plain_jit_draws():
  """models.jit_init compiles the initialisation without XLA:CPU backend optimisation: the same bits."""
  model = models.build(tiny("tsm", dtype="float32"))
  init = lambda v: nn.meta.unbox(model.init(jax.random.key(0), v, train=False))
  clip = video()
  cheap, plain = models.jit_init(init)(clip), jax.jit(init)(clip)
  assert jax.tree.structure(cheap) == jax.tree.structure(plain)
  for a, b in zip(jax.tree.leaves(cheap), jax.tree.leaves(plain)):
    np.testing.assert_array_equal(a, b)


def test_temporal_fc_zero_init_makes_temporal_branch_inert():
  model = models.build(tiny("timesformer", "divided", dtype="float32"))
  clip = video()
  variables = nn.meta.unbox(models.jit_init(lambda v: model.init(jax.random.key(0), v, train=False))(clip))
  for i in range(vit.TINY["depth"]):
    fc = variables["params"][f"blocks_{i}"]["temporal_fc"]
    assert not np.any(fc["kernel"]) and not np.any(fc["bias"])
  perturbed = jax.tree_util.tree_map_with_path(
      lambda p, x: x + 1.0 if "temporal_attn" in jax.tree_util.keystr(p) else x, variables)
  np.testing.assert_allclose(forward(model, variables, clip), forward(model, perturbed, clip), atol=1e-6)


def test_space_only_ignores_frame_order_divided_does_not():
  clip = video()
  perm = clip[:, jnp.array([2, 0, 3, 1])]
  for variant, invariant in (("space_only", True), ("divided", False)):
    model = models.build(tiny("timesformer", variant, dtype="float32"))
    variables = random_variables(model, clip)
    same = np.allclose(forward(model, variables, clip), forward(model, variables, perm), atol=1e-5)
    assert same == invariant, variant


def test_time_embed_nearest_resize():
  emb = jnp.arange(4.0).reshape(1, 4, 1)
  np.testing.assert_array_equal(resize.resize_time_embed(emb, 8)[0, :, 0], [0, 0, 1, 1, 2, 2, 3, 3])
  np.testing.assert_array_equal(resize.resize_time_embed(emb, 2)[0, :, 0], [0, 2])
  model = models.build(tiny("timesformer", "divided"))   # num_frames=4, clip of 8 frames
  clip = jax.ShapeDtypeStruct((1, 8, 32, 32, 3), jnp.float32)
  out = jax.eval_shape(lambda v: model.apply(model.init(jax.random.key(0), v, train=False), v,
                                             train=False), clip)
  assert out.shape == (1, 5)


def test_nearest_resize_is_paddles_float32_index_on_numpy_and_jax():
  # Paddle / torch: index = int(float32(src / dst) * i); exact arithmetic would give 1 at i=41.
  assert resize.nearest_indices(2, 82)[41] == int(np.float32(2 / 82) * np.float32(41)) == 0
  pos = np.random.default_rng(0).normal(size=(1, 1 + 9, 4)).astype(np.float32)
  on_numpy = resize.resize_pos_embed(pos, (5, 4))
  on_jax = jax.jit(lambda p: resize.resize_pos_embed(p, (5, 4)))(jnp.asarray(pos))
  np.testing.assert_array_equal(on_numpy, on_jax)
  grid = pos[0, 1:].reshape(3, 3, 4)
  expected = grid[[0, 0, 1, 1, 2]][:, [0, 0, 1, 2]]    # floor(i * 3/5), floor(j * 3/4)
  np.testing.assert_array_equal(on_numpy[0, 1:].reshape(5, 4, 4), expected)
  np.testing.assert_array_equal(on_numpy[:, 0], pos[:, 0])


# ----------------------------------------------------------------------------- TSM

def test_temporal_shift_hand_example_both_directions():
  # One video, T=3, 1x1 pixels, 8 channels, ratio 1/8 -> channel 0 and channel 1 move.
  x = np.array([[10 * f + c for c in range(8)] for f in range(3)], np.float32).reshape(3, 1, 1, 8)
  paddle = np.asarray(tsm.temporal_shift(jnp.asarray(x), 3, 1 / 8, "paddle")).reshape(3, 8)
  np.testing.assert_array_equal(paddle, [[0, 11, 2, 3, 4, 5, 6, 7],      # ch0 <- t-1, ch1 <- t+1
                                         [0, 21, 12, 13, 14, 15, 16, 17],
                                         [10, 0, 22, 23, 24, 25, 26, 27]])
  original = np.asarray(tsm.temporal_shift(jnp.asarray(x), 3, 1 / 8, "original")).reshape(3, 8)
  np.testing.assert_array_equal(original, [[10, 0, 2, 3, 4, 5, 6, 7],    # ch0 <- t+1, ch1 <- t-1
                                           [20, 1, 12, 13, 14, 15, 16, 17],
                                           [0, 11, 22, 23, 24, 25, 26, 27]])


def test_avg_pool_ceil_mode_on_odd_size():
  x = np.arange(9.0, dtype=np.float32).reshape(1, 3, 3, 1)
  expected = [[(0 + 1 + 3 + 4) / 4, (2 + 5) / 2], [(6 + 7) / 2, 8]]
  np.testing.assert_allclose(np.asarray(tsm.avg_pool_ceil(jnp.asarray(x)))[0, :, :, 0], expected)


# ----------------------------------------------------------------------------- Swin

def _brute_index(window, table_window):
  td, th, tw = table_window
  coords = list(itertools.product(*[range(w) for w in window]))
  out = np.zeros((len(coords), len(coords)), np.int64)
  for i, q in enumerate(coords):
    for j, k in enumerate(coords):
      dd, dh, dw = q[0] - k[0], q[1] - k[1], q[2] - k[2]
      out[i, j] = (dd + td - 1) * (2 * th - 1) * (2 * tw - 1) + (dh + th - 1) * (2 * tw - 1) + (dw + tw - 1)
  return out


def test_relative_position_index_vs_brute_force():
  full = swin.relative_position_index((8, 7, 7))
  assert full.shape == (392, 392) and full.max() == 2534 and full.min() == 0
  np.testing.assert_array_equal(full, _brute_index((8, 7, 7), (8, 7, 7)))
  # Paddle example: (dd, dh, dw) -> (dd+7)*169 + (dh+6)*13 + (dw+6)
  q, k = (3 * 49 + 2 * 7 + 5), (1 * 49 + 6 * 7 + 0)   # (3,2,5) vs (1,6,0)
  assert full[q, k] == (2 + 7) * 169 + (-4 + 6) * 13 + (5 + 6)
  for window in ((2, 7, 7), (8, 3, 5)):   # clipped windows index the full-size table
    np.testing.assert_array_equal(swin.relative_position_index(window, (8, 7, 7)),
                                  _brute_index(window, (8, 7, 7)))
  n = 2 * 49   # time-only clipping equals Paddle's relative_position_index[:N, :N]
  np.testing.assert_array_equal(swin.relative_position_index((2, 7, 7), (8, 7, 7)), full[:n, :n])
  # The attention uses Paddle's slice everywhere, also where it differs (spatial clipping).
  np.testing.assert_array_equal(swin.paddle_window_index((2, 7, 7), (8, 7, 7)), full[:n, :n])
  n = 8 * 3 * 5
  np.testing.assert_array_equal(swin.paddle_window_index((8, 3, 5), (8, 7, 7)), full[:n, :n])
  assert not np.array_equal(full[:n, :n], _brute_index((8, 3, 5), (8, 7, 7)))


def _region(x, size, window, shift):
  if shift == 0:
    return 0
  return 0 if x < size - window else (1 if x < size - shift else 2)


@pytest.mark.parametrize("dims,window,shift", [((4, 6, 6), (2, 3, 3), (1, 1, 1)),
                                               ((4, 8, 6), (2, 4, 3), (1, 2, 0))])
def test_shifted_window_mask_vs_brute_force(dims, window, shift):
  mask = swin.shifted_window_mask(dims, window, shift)
  grid = [range(0, s, w) for s, w in zip(dims, window)]
  offsets = list(itertools.product(*[range(w) for w in window]))
  expected = np.zeros((math.prod(len(g) for g in grid), len(offsets), len(offsets)), np.float32)
  for wi, origin in enumerate(itertools.product(*grid)):
    regions = [tuple(_region(o + off, s, w, sh) for o, off, s, w, sh in
                     zip(origin, offset, dims, window, shift)) for offset in offsets]
    for i, j in itertools.product(range(len(offsets)), repeat=2):
      expected[wi, i, j] = 0.0 if regions[i] == regions[j] else -100.0
  np.testing.assert_array_equal(mask, expected)
  assert set(np.unique(mask)) <= {0.0, -100.0}


def _np_layer_norm(p, x, eps=1e-5):
  x = np.asarray(x, np.float64)
  return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * p["scale"] + p["bias"]


def test_swin_block_equals_per_window_loop():
  """Shifted-window block vs a loop over windows of the rolled grid, with the bias and the
  mask written out from coordinates."""
  dims, window, shift, heads, c = (4, 6, 6), (2, 3, 3), (1, 1, 1), 2, 8
  block = swin.SwinBlock(heads, window, window, shift)
  x = jax.random.normal(jax.random.key(0), (1,) + dims + (c,))
  params = random_variables(block, x)["params"]
  out = np.asarray(block.apply({"params": params}, x, train=False), np.float64)

  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  y = np.roll(_np_layer_norm(p["norm1"], x[0]), [-s for s in shift], axis=(0, 1, 2))
  table, hd = p["attn"]["relative_position_bias_table"], c // heads
  attended = np.zeros_like(y)
  for origin in itertools.product(*[range(0, n, w) for n, w in zip(dims, window)]):
    pos = [tuple(o + d for o, d in zip(origin, off)) for off in itertools.product(*map(range, window))]
    tokens = np.stack([y[q] for q in pos])
    qkv = (tokens @ p["attn"]["qkv"]["kernel"] + p["attn"]["qkv"]["bias"]).reshape(len(pos), 3, heads, hd)
    region = [tuple(_region(a, n, w, s) for a, n, w, s in zip(q, dims, window, shift)) for q in pos]
    out_tokens = np.zeros((len(pos), heads, hd))
    for h in range(heads):
      logits = qkv[:, 0, h] @ qkv[:, 1, h].T / np.sqrt(hd)
      for i, j in itertools.product(range(len(pos)), repeat=2):
        dd, dh, dw = (a - b for a, b in zip(pos[i], pos[j]))
        row = (dd + 1) * 5 * 5 + (dh + 2) * 5 + (dw + 2)   # table for a (2,3,3) window
        logits[i, j] += table[row, h] + (0.0 if region[i] == region[j] else -100.0)
      probs = np.exp(logits - logits.max(-1, keepdims=True))
      out_tokens[:, h] = (probs / probs.sum(-1, keepdims=True)) @ qkv[:, 2, h]
    proj = out_tokens.reshape(len(pos), c) @ p["attn"]["proj"]["kernel"] + p["attn"]["proj"]["bias"]
    for q, v in zip(pos, proj):
      attended[q] = v
  z = x[0] + np.roll(attended, shift, axis=(0, 1, 2))
  hidden = _np_layer_norm(p["norm2"], z) @ p["mlp"]["fc1"]["kernel"] + p["mlp"]["fc1"]["bias"]
  hidden = 0.5 * hidden * (1 + np.vectorize(math.erf)(hidden / np.sqrt(2)))
  expected = z + hidden @ p["mlp"]["fc2"]["kernel"] + p["mlp"]["fc2"]["bias"]
  np.testing.assert_allclose(out[0], expected, atol=1e-4)


def test_mask_has_27_regions_and_window_clipping():
  regions = swin.window_regions((16, 14, 14), (8, 7, 7), (4, 3, 3))
  assert len(np.unique(regions)) == 27
  assert swin.clip_window((16, 56, 56), (8, 7, 7), (4, 3, 3)) == ((8, 7, 7), (4, 3, 3))
  assert swin.clip_window((16, 7, 7), (8, 7, 7), (4, 3, 3)) == ((8, 7, 7), (4, 0, 0))
  assert swin.clip_window((4, 56, 56), (8, 7, 7), (4, 3, 3)) == ((4, 7, 7), (0, 3, 3))
  x = np.arange(2 * 4 * 6 * 6 * 3).reshape(2, 4, 6, 6, 3)
  np.testing.assert_array_equal(swin.window_reverse(swin.window_partition(x, (2, 3, 3)), (2, 3, 3),
                                                    (4, 6, 6)), x)


def test_swin_runs_on_sizes_that_need_padding():
  model = models.build(tiny("swin"))
  clip = jax.ShapeDtypeStruct((1, 3, 28, 20, 3), jnp.float32)   # pads time to 4, tokens 7x5
  out = jax.eval_shape(lambda v: model.apply(model.init(jax.random.key(0), v, train=False), v,
                                             train=False), clip)
  assert out.shape == (1, 5)


# ----------------------------------------------------------------------------- counts

@pytest.mark.slow
@pytest.mark.parametrize("name,entry", [(n, e) for n, e in flops.published() if e.params or e.gmacs],
                         ids=lambda x: getattr(x, "label", x))
def test_full_size_params_and_macs_match_published(name, entry):
  cfg = dict(entry.model, name=name)
  params, macs = flops.measure(models.build(cfg), cfg["num_frames"], cfg["image_size"])
  if entry.params:
    assert abs(params - entry.params) / entry.params < 0.015, params
  if entry.gmacs:
    assert abs(macs.total() / 1e9 - entry.gmacs) / entry.gmacs < 0.08, macs


def test_count_macs_dense_conv_and_nested():
  x = jax.ShapeDtypeStruct((2, 5, 7), jnp.float32)
  dense = nn.Dense(11)
  dense_vars = jax.eval_shape(dense.init, jax.random.key(0), x)
  assert flops.count_macs(dense.apply, dense_vars, x) == 2 * 5 * 7 * 11

  img = jax.ShapeDtypeStruct((2, 9, 9, 6), jnp.float32)
  conv = nn.Conv(8, (3, 3), strides=2, padding=((1, 1), (1, 1)), feature_group_count=2)
  conv_vars = jax.eval_shape(conv.init, jax.random.key(0), img)
  assert flops.count_macs(conv.apply, conv_vars, img) == 2 * 5 * 5 * 8 * (3 * 3 * 6 // 2)

  w = jax.ShapeDtypeStruct((7, 7), jnp.float32)
  def looped(w, x):   # scan x3 of a jitted, rematerialised matmul
    step = jax.checkpoint(jax.jit(lambda c: c @ w))
    return jax.lax.scan(lambda c, _: (step(c), None), x, None, length=3)[0]
  assert flops.count_macs(looped, w, x) == 3 * 2 * 5 * 7 * 7
  attention = lambda q: jnp.einsum("bqd,bkd->bqk", q, q)   # batched matmul: counted apart
  assert flops.macs_by_kind(attention, x) == {"batched_matmul": 2 * 5 * 5 * 7}
  assert flops.count_params({"a": jnp.zeros((3, 4)), "b": {"c": jnp.zeros(5)}}) == 17


@pytest.mark.parametrize("kind,peak", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-40GB", 312e12), ("TPU v4", 275e12), ("TPU v5 lite", 197e12),
    ("TPU v5p", 459e12), ("TPU v5", 459e12), ("TPU v6 lite", 918e12),
    ("TPU v3", 61.5e12), ("TPU v2", 22.5e12), ("cpu", None)])  # v2 / v3: per core (device)
def test_peak_flops_by_device_kind(kind, peak):
  assert flops.peak_flops(kind) == peak


def test_flops_cli_reads_a_config_file_with_overrides(tmp_path):
  path = tmp_path / "tiny.py"
  path.write_text(textwrap.dedent(f"""
      import ml_collections
      def get_config(arg=None):
        config = ml_collections.ConfigDict()
        config.model = ml_collections.ConfigDict({tiny('tokshift')!r})
        config.model.depth = 1 if arg == 'depth=1' else 2
        return config
      """))
  run = cli_runner.run_main("-m", "vidtx.flops", f"--config={path}:depth=1",
                            "--config.model.hidden_size=16")
  assert run.returncode == 0, run.stderr
  model = models.build(tiny("tokshift", depth=1, hidden_size=16))
  params, _ = flops.measure(model, 4, 32)
  assert f"params {params:,}" in run.stdout and "GMACs" in run.stdout


@pytest.mark.parametrize("variant,off", [
    ("factorised_encoder", dict(tubelet_size=1, temporal_depth=0)),
    ("spatio_temporal", dict(tubelet_size=1, time_embedding=False))])
def test_vivit_without_temporal_parts_ignores_frame_order(variant, off):
  """One-frame tubelets and no temporal encoder / no time embedding: blind to frame order."""
  clip = video()
  perm = clip[:, ::-1]
  for temporal, invariant in ((False, True), (True, False)):
    overrides = dict(model=variant) if temporal else dict(model=variant, **off)
    model = models.build(tiny("vivit", "factorised", dtype="float32", **overrides))
    variables = random_variables(model, clip)
    same = np.allclose(forward(model, variables, clip), forward(model, variables, perm), atol=1e-5)
    assert same == invariant, f"temporal={temporal}"


# ----------------------------------------------------------------------------- performance levers
def _reference_attention(q, k, v, bias):
  """Softmax attention written out in float64 numpy: q, k, v [B, L, H, D], bias [H, L, L]."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1]) + np.asarray(bias, np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", probs, v)


@pytest.mark.parametrize("impl", vit.ATTENTION_IMPLS)
def test_attention_implementations_agree_with_a_reference(impl):
  """Both paths (the einsum one, and the fused one's call, which falls back to jax.nn's XLA
  kernel off a GPU) equal attention written out by hand, with a Swin-style bias and -100 mask."""
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(3, 10, 2, 8)), jnp.float32) for _ in range(3))
  bias = rng.normal(size=(2, 10, 10)) + np.where(rng.random((1, 10, 10)) < 0.3, swin.MASK_VALUE, 0.0)
  expected = _reference_attention(q, k, v, bias)
  got = vit.dot_product_attention(q, k, v, jnp.asarray(bias, jnp.float32), impl=impl)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)
  half = vit.dot_product_attention(*(a.astype(jnp.bfloat16) for a in (q, k, v)),
                                   jnp.asarray(bias, jnp.float32), impl=impl)
  assert half.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(half, np.float32), expected, atol=0.05)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_remat_gives_the_same_loss_and_gradients(name):
  """config.train.remat recomputes each block in the backward pass: the jaxpr has the
  checkpoints, the variables, loss and gradients are those of the plain model (float32: in
  bf16 the recomputation may round differently)."""
  config = tiny(name, dtype="float32")
  clip = video(frames=config["num_frames"], size=config["image_size"])
  plain = models.build(config)
  variables = random_variables(plain, clip)
  labels = jnp.arange(clip.shape[0]) % 5

  def loss_and_grads(model):
    def loss(params):
      logits, _ = model.apply({**variables, "params": params}, clip, train=True,
                              rngs={"dropout": jax.random.key(3)}, mutable=["batch_stats"])
      return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).mean()
    return jax.jit(jax.value_and_grad(loss))(variables["params"]), jax.make_jaxpr(jax.grad(loss))(
        variables["params"])

  (loss, grads), plain_jaxpr = loss_and_grads(plain)
  for policy in ("dots_saveable",):
    rematted = models.build(config, remat=policy)
    assert jax.tree.map(jnp.shape, random_variables(rematted, clip)) == jax.tree.map(jnp.shape, variables)
    (loss_r, grads_r), jaxpr = loss_and_grads(rematted)
    assert "checkpoint" in str(jaxpr) or "remat" in str(jaxpr)
    assert "checkpoint" not in str(plain_jaxpr) and "remat" not in str(plain_jaxpr)
    np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), grads_r, grads)


def test_remat_is_a_training_setting_not_a_model_key():
  with pytest.raises(VidtxError, match="does not take"):
    models.build(tiny("tokshift", remat="full"))
  with pytest.raises(VidtxError, match="config.train.remat"):
    models.build(tiny("tokshift"), remat="sometimes")


def test_fused_attention_path_keeps_the_bias_per_window_not_per_clip():
  """attention_impl=cudnn (jax.nn.dot_product_attention; its XLA fallback here) equals the einsum
  path with Swin's biases (relative position [heads, L, L], shift mask [1, nW, 1, L, L]) and
  their gradients, and the bias it passes is [1, nW * heads, L, L]: not broadcast over the batch."""
  keys = jax.random.split(jax.random.key(0), 5)
  b, windows, length, heads, dim = 3, 4, 10, 2, 8
  q, k, v = (jax.random.normal(keys[i], (b, windows, length, heads, dim)) for i in range(3))
  table = jax.random.normal(keys[3], (heads, length, length))
  mask = jnp.where(jax.random.uniform(keys[4], (windows, length, length)) > 0.7, -100.0, 0.0)
  mask = mask[None, :, None]
  for bias in (None, table, table + mask, mask):
    np.testing.assert_allclose(vit.dot_product_attention(q, k, v, bias, impl="cudnn"),
                               vit.dot_product_attention(q, k, v, bias, impl="xla"), atol=2e-6)
  grad = lambda impl: jax.grad(lambda t: vit.dot_product_attention(q, k, v, t + mask, impl=impl).sum())
  np.testing.assert_allclose(grad("cudnn")(table), grad("xla")(table), atol=2e-5)
  jaxpr = str(jax.make_jaxpr(lambda t: vit.dot_product_attention(q, k, v, t + mask, impl="cudnn"))(table))
  assert f"f32[1,{windows * heads},{length},{length}]" in jaxpr
  assert f"[{b * windows},{heads},{length},{length}]" not in jaxpr
