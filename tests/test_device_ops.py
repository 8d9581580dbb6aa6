"""Accelerator-side ops: normalise, mixup / cutmix / VideoMix, colour jitter."""
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from vidtx.data import device


def labelled_batch(batch=6, frames=3, height=16, width=20):
  """Video whose sample b is the constant b (so a mixed pixel tells its source), labels = b."""
  labels = jnp.arange(batch, dtype=jnp.int32)
  video = jnp.broadcast_to(labels.astype(jnp.float32)[:, None, None, None, None],
                           (batch, frames, height, width, 3))
  return video, labels


def test_normalize():
  video = jnp.array([0, 255, 51], jnp.uint8).reshape(1, 1, 1, 1, 3)
  out = device.normalize(video, mean=(0.5, 0.5, 0.2), std=(0.5, 0.25, 0.1), dtype=jnp.bfloat16)
  assert out.dtype == jnp.bfloat16 and out.shape == video.shape
  np.testing.assert_allclose(np.asarray(out, np.float32).ravel(), [-1.0, 2.0, 0.0], atol=1e-2)


def test_mixup_is_a_convex_combination():
  video, labels = labelled_batch()
  mixed, targets = jax.jit(device.mixup, static_argnums=3)(jax.random.key(0), video, labels, 0.2)
  lam = float(targets.lam)
  assert 0.0 <= lam <= 1.0
  np.testing.assert_array_equal(targets.labels_a, labels)
  assert sorted(np.asarray(targets.labels_b).tolist()) == list(range(6))  # a permutation
  expected = lam * labels + (1 - lam) * targets.labels_b
  expected = np.broadcast_to(expected[:, None, None, None, None], mixed.shape)
  np.testing.assert_allclose(mixed, expected, rtol=1e-6, atol=1e-6)


def test_cutmix_box_is_over_height_and_width_and_lam_matches_its_area():
  video, labels = labelled_batch()
  boxes = 0
  for seed in range(8):
    mixed, targets = jax.jit(device.cutmix, static_argnums=3)(jax.random.key(seed), video,
                                                              labels, 1.0)
    mixed = np.asarray(mixed)
    for b in range(6):
      if targets.labels_b[b] == b:
        continue  # pasted from itself: nothing to see
      pasted = mixed[b] != b  # [T, H, W, C]
      np.testing.assert_array_equal(mixed[b][pasted], float(targets.labels_b[b]))
      # Same box for every frame and channel: the cut is over H x W only.
      assert (pasted == pasted[:1, :, :, :1]).all()
      box = pasted[0, :, :, 0]
      rows, cols = np.flatnonzero(box.any(1)), np.flatnonzero(box.any(0))
      area = box.sum()
      if area:
        boxes += 1
        assert area == len(rows) * len(cols)  # a rectangle
        assert np.ptp(rows) + 1 == len(rows) and np.ptp(cols) + 1 == len(cols)
      np.testing.assert_allclose(1 - area / (16 * 20), float(targets.lam), rtol=1e-6)
  assert boxes > 0


def test_videomix_picks_cutmix_or_mixup():
  video, labels = labelled_batch()
  fn = jax.jit(lambda key: device.videomix(key, video, labels, cutmix_prob=0.5))
  kinds = set()
  for seed in range(10):
    mixed, targets = fn(jax.random.key(seed))
    values = np.unique(np.asarray(mixed))
    kinds.add("cutmix" if np.all(np.isin(values, np.arange(6))) else "mixup")
    assert 0.0 <= float(targets.lam) <= 1.0
  assert kinds == {"cutmix", "mixup"}


def test_mixed_targets_weight_both_labels():
  mixed = device.MixedLabels(jnp.array([0, 1]), jnp.array([2, 1]), jnp.float32(0.7))
  targets = device.mixed_targets(mixed, 4, label_smoothing=0.1)
  expected = np.full((2, 4), 0.025)
  expected[0, 0] += 0.7 * 0.9
  expected[0, 2] += 0.3 * 0.9
  expected[1, 1] += 0.9
  np.testing.assert_allclose(targets, expected, rtol=1e-6)


def test_color_jitter_is_one_draw_per_clip():
  video = jnp.full((4, 3, 8, 8, 3), 100, jnp.uint8).at[..., 0].set(180)
  out = jax.jit(lambda key, v: device.color_jitter(key, v, brightness=0.2, saturation=0.4,
                                                   hue=0.1))(jax.random.key(0), video)
  assert out.dtype == jnp.uint8 and out.shape == video.shape
  out = np.asarray(out)
  assert (out == out[:, :1]).all()  # every frame of a clip changed alike
  assert len({out[b, 0, 0, 0].tobytes() for b in range(4)}) > 1  # clips differ
  unchanged = device.color_jitter(jax.random.key(0), video, brightness=0.2, prob=0.0)
  np.testing.assert_array_equal(unchanged, video)


def test_imports_without_tensorflow():
  code = "import sys, vidtx.data.device; assert 'tensorflow' not in sys.modules"
  subprocess.run([sys.executable, "-c", code], check=True)


def test_mixing_partners_stay_on_the_device_that_holds_the_clip():
  """With the batch sharded over 8 devices, every clip is mixed with one of its own device's
  clips (as the seeds mix within one GPU's batch) and the compiled mixing moves no data between
  devices (a batch-wide permutation all-reduced the whole batch every step)."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  from vidtx import plan  # its reader of collectives in compiled HLO
  devices = jax.devices()[:8]
  assert len(devices) == 8
  video, labels = labelled_batch(batch=32, height=8, width=8)
  shard = NamedSharding(Mesh(np.array(devices), ("batch",)), P("batch"))
  video, labels = jax.device_put(video, shard), jax.device_put(labels, shard)
  for kind in ("mixup", "cutmix"):
    op = jax.jit(lambda k, v, l: getattr(device, kind)(k, v, l, 0.8, 8))
    seen_other = False
    for seed in range(4):
      mixed, targets = op(jax.random.key(seed), video, labels)
      partner = np.asarray(targets.labels_b)
      assert sorted(partner.tolist()) == list(range(32))  # still a permutation
      np.testing.assert_array_equal(partner // 4, np.arange(32) // 4)  # 4 clips per device
      seen_other |= bool((partner != np.arange(32)).any())
    assert seen_other
    hlo = op.lower(jax.random.key(0), video, labels).compile().as_text()
    assert plan.collectives(hlo) == {}, kind
  # Without the blocks the same op does move the batch: the check above can fail.
  hlo = jax.jit(lambda k, v, l: device.mixup(k, v, l, 0.8, 1)).lower(
      jax.random.key(0), video, labels).compile().as_text()
  assert plan.collectives(hlo)
