"""RandAugment per clip (config.data.auto_augment, vidtx.data.randaugment)."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from configs import common  # noqa: E402
from vidtx.data import augment, randaugment  # noqa: E402
from vidtx.errors import VidtxError  # noqa: E402

LEVEL = 9 / 30  # mx-mark's magnitude 9 of torchvision's 31 bins


def random_frames(t=2, h=16, w=20, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3)).astype(np.float32)


def apply(frames, op, sign=1.0):
  return randaugment._apply(tf.constant(frames), tf.constant(op), tf.constant(LEVEL),  # pylint: disable=protected-access
                            tf.constant(sign)).numpy()


def equalize_reference(channel):
  """torchvision's _scale_channel (PIL's equalize) of one uint8 channel, in numpy."""
  hist = np.bincount(channel.reshape(-1), minlength=256).astype(np.float64)
  nonzero = hist[hist != 0]
  step = np.floor(nonzero[:-1].sum() / 255)
  if step == 0:
    return channel
  lut = np.floor((np.cumsum(hist) + np.floor(step / 2)) / step)
  lut = np.clip(np.concatenate([[0], lut[:-1]]), 0, 255)
  return lut[channel]


def test_policy_strings():
  assert randaugment.parse("") is None
  assert randaugment.parse("rand") == (2, 9)
  assert randaugment.parse("rand-m7-n4") == (4, 7)
  for bad in ("rand-m9-mstd0.5-inc1", "autoaug", "rand-m31"):
    with pytest.raises(VidtxError, match="auto_augment"):
      randaugment.parse(bad)
  data = common.data_config(auto_augment="rand-m40")
  with pytest.raises(VidtxError, match="auto_augment"):
    augment.check(data)


def test_each_op_is_the_same_on_every_frame_and_does_something():
  frame = random_frames(t=1)
  clip = np.concatenate([frame, frame])
  for op, name in enumerate(randaugment._OPS):  # pylint: disable=protected-access
    out = apply(clip, op)
    assert out.shape == clip.shape
    np.testing.assert_array_equal(out[0], out[1], err_msg=name)
    assert out.min() >= 0 and out.max() <= 255
    if name == "identity":
      np.testing.assert_array_equal(out, clip)
    else:
      assert not np.array_equal(out, clip), name


def test_op_values_are_torchvisions():
  x = random_frames()
  ops = {name: i for i, name in enumerate(randaugment._OPS)}  # pylint: disable=protected-access
  np.testing.assert_array_equal(apply(x, ops["posterize"]), np.floor(x / 2) * 2)  # 7 bits at m9
  np.testing.assert_array_equal(apply(x, ops["solarize"]), np.where(x >= 178.5, 255 - x, x))
  np.testing.assert_array_equal(apply(x, ops["brightness"], -1.0), np.floor(x * (1 - 0.27)))
  # Translate x by int(150 / 331 * 20 * 0.3) = 2 pixels, fill 0.
  shifted = apply(x, ops["translate_x"])
  np.testing.assert_array_equal(shifted[:, :, 2:], x[:, :, :-2])
  np.testing.assert_array_equal(shifted[:, :, :2], 0)
  equalized = apply(x, ops["equalize"])
  for t in range(2):
    for c in range(3):
      np.testing.assert_array_equal(equalized[t, ..., c],
                                    equalize_reference(x[t, ..., c].astype(np.int64)))
  # Autocontrast stretches each frame's channels to 0..255 (float32, truncating, as torchvision).
  low = np.full((1, 4, 4, 3), 100.0, np.float32)
  low[0, 0, 0] = 50.0
  low[0, 1, 1] = 60.0
  expected = np.floor((low - 50) * np.float32(255 / np.float32(50)))
  np.testing.assert_array_equal(apply(low, ops["autocontrast"]), expected)
  assert expected.min() == 0 and expected.max() == 255


def test_rand_augment_draws_once_per_clip():
  frame = random_frames(t=1)
  clip = tf.constant(np.concatenate([frame] * 3).astype(np.uint8))
  changed = 0
  for s in range(8):
    out = randaugment.rand_augment(clip, tf.constant([s, 1]), "rand-m9-n2").numpy()
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])
    changed += not np.array_equal(out, clip.numpy())
  assert changed >= 6  # identity twice in a row is 1 in 49
  again = randaugment.rand_augment(clip, tf.constant([3, 1]), "rand-m9-n2").numpy()
  np.testing.assert_array_equal(again, randaugment.rand_augment(clip, tf.constant([3, 1]),
                                                                "rand-m9-n2").numpy())


def test_train_clip_applies_it():
  frames = random_frames(t=4, h=40, w=48).astype(np.uint8)
  jpegs = tf.stack([tf.io.encode_jpeg(f, quality=95) for f in frames])
  plain = common.data_config(num_frames=4, image_size=32, train_aug="scale_jitter",
                             scale_jitter=(40, 40))
  augmented = common.data_config(num_frames=4, image_size=32, train_aug="scale_jitter",
                                 scale_jitter=(40, 40), auto_augment="rand-m9-n2")
  differs = 0
  for s in range(4):
    seed = tf.constant([s, 0])
    a = augment.train_clip(jpegs, seed, plain).numpy()
    b = augment.train_clip(jpegs, seed, augmented).numpy()
    assert a.shape == b.shape == (4, 32, 32, 3)
    differs += not np.array_equal(a, b)
  assert differs >= 3
