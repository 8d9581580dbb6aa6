"""The synthetic motion dataset (vidtx.data.synthetic): real files, UCF101 layout, motion-only classes."""
import os
import time

import av
import numpy as np
import pytest

from vidtx.data import synthetic
from vidtx.errors import VidtxError

SEED = 3


def object_mask(frames, class_index, group, clip=1, seed=SEED):
  """[T, H, W] bool: pixels that differ from the video's background (the moving object)."""
  # The background is a function of (seed, class, group, clip): rebuild it to find the object.
  background, _, _ = synthetic._look(synthetic.look_generator(seed, class_index, group, clip),
                                     frames.shape[1])
  return np.abs(frames.astype(np.float32) - np.clip(background, 0, 255)).max(-1) > 40


def track(mask):
  """Per frame: centroid x, y (pixels), area, principal-axis angle (radians, image axes), elongation."""
  out = []
  for m in mask:
    y, x = np.nonzero(m)
    cx, cy = x.mean(), y.mean()
    mu20, mu02, mu11 = ((x - cx) ** 2).mean(), ((y - cy) ** 2).mean(), ((x - cx) * (y - cy)).mean()
    eig = np.linalg.eigvalsh([[mu20, mu11], [mu11, mu02]])
    out.append((cx, cy, len(x), 0.5 * np.arctan2(2 * mu11, mu20 - mu02), eig[1] / eig[0]))
  return np.array(out)


def total_rotation(angles):
  steps = np.diff(angles)
  return float(np.sum((steps + np.pi / 2) % np.pi - np.pi / 2))  # axes: angles modulo pi


def motion(class_index, group, clip=1, num_frames=16):
  frames = synthetic.render_video(class_index, size=64, num_frames=num_frames, seed=SEED,
                                  group=group, clip=clip)
  return track(object_mask(frames, class_index, group, clip))


@pytest.mark.parametrize("name, dx, dy", [
    ("MoveLeft", -1, 0), ("MoveRight", 1, 0), ("MoveUp", 0, -1), ("MoveDown", 0, 1),
    ("MoveUpLeft", -1, -1), ("MoveDownRight", 1, 1), ("MoveUpRight", 1, -1), ("MoveDownLeft", -1, 1)])
def test_translations_move_the_right_way(name, dx, dy):
  index = synthetic.ALL_CLASS_NAMES.index(name)
  for group in (1, 2, 3):
    t = motion(index, group)
    move = t[-1, :2] - t[0, :2]
    for d, m in zip((dx, dy), move):
      assert (m > 5) if d > 0 else (m < -5) if d < 0 else abs(m) < 2, (name, group, move)


def test_approach_grows_and_recede_shrinks():
  for group in (1, 2, 3):
    assert motion(6, group)[-1, 2] > 3 * motion(6, group)[0, 2]
    assert motion(7, group)[0, 2] > 3 * motion(7, group)[-1, 2]


def test_rotations_turn_the_right_way():
  checked = 0
  for group in range(1, 12):
    for index, sign in ((4, 1), (5, -1)):  # clockwise on screen = increasing angle (y points down)
      t = motion(index, group)
      if t[:, 4].min() < 1.5:  # the principal axis of a near-isotropic shape says nothing
        continue
      assert sign * total_rotation(t[:, 3]) > 0.5, (index, group)
      checked += 1
  assert checked >= 6


def test_pairs_have_the_same_frames_but_opposite_order():
  """Over all frames MoveLeft and MoveRight look alike; only the order tells them apart."""
  left = np.stack([motion(0, g, c) for g in range(1, 11) for c in (1, 2)])
  right = np.stack([motion(1, g, c) for g in range(1, 11) for c in (1, 2)])
  assert abs(left[:, :, 0].mean() - right[:, :, 0].mean()) < 2.5
  assert abs(left[:, :, 0].std() - right[:, :, 0].std()) < 2.5
  assert left[:, 0, 0].mean() - right[:, 0, 0].mean() > 12  # MoveLeft starts on the right
  reversed_left = left[:, ::-1, 0]
  assert np.all(reversed_left[:, -1] > reversed_left[:, 0])  # played backwards: moves right


def test_class_count_limits():
  assert synthetic.class_names(8)[-2:] == ["Approach", "Recede"]
  assert len(synthetic.class_names(synthetic.MAX_CLASSES)) == synthetic.MAX_CLASSES
  for bad in (1, synthetic.MAX_CLASSES + 1):
    with pytest.raises(VidtxError, match=f"2 to {synthetic.MAX_CLASSES}"):
      synthetic.class_names(bad)


def test_layout_puts_about_a_quarter_in_test():
  for n in (4, 8, 40, 48, 100, 200):
    plan = synthetic.layout(n)
    share = sum(is_test for _, _, is_test in plan) / n
    assert 0.15 <= share <= 0.3, (n, share)
    assert len({(g, c) for g, c, _ in plan}) == n and max(g for g, _, _ in plan) <= 25
    assert all(not is_test for g, _, is_test in plan if g > max(g for g, _, t in plan if t))


def test_writes_decodable_videos_in_the_ucf101_layout_deterministically(tmp_path):
  kwargs = dict(num_classes=4, videos_per_class=4, seed=SEED, size=32, num_frames=12, verbose=False)
  synthetic.write_synthetic_videos(str(tmp_path / "a"), **kwargs)
  synthetic.write_synthetic_videos(str(tmp_path / "b"), **kwargs)
  root = tmp_path / "a"
  assert (root / "annotations" / "classInd.txt").read_text().splitlines() == [
      "1 MoveLeft", "2 MoveRight", "3 MoveUp", "4 MoveDown"]
  train = (root / "annotations" / "trainlist01.txt").read_text().splitlines()
  test = (root / "annotations" / "testlist01.txt").read_text().splitlines()
  assert len(train) == 12 and len(test) == 4
  assert "MoveUp/v_MoveUp_g02_c01.avi 3" in train and "MoveUp/v_MoveUp_g01_c01.avi" in test
  files = sorted(os.path.relpath(os.path.join(d, f), root / "videos")
                 for d, _, fs in os.walk(root / "videos") for f in fs)
  assert files == sorted([x.split()[0] for x in train] + test)
  for rel in files:
    a, b = (open(tmp_path / r / "videos" / rel, "rb").read() for r in "ab")
    assert a == b, rel
  with av.open(str(root / "videos" / files[0])) as container:
    codec = container.streams.video[0].codec_context.name
    frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
  assert len(frames) == 12 and frames[0].shape == (32, 32, 3) and codec == "mpeg4"


def test_encoded_video_keeps_the_motion(tmp_path):
  path = str(tmp_path / "left.mp4")
  frames = synthetic.render_video(0, size=64, num_frames=16, seed=SEED, group=1)
  synthetic.write_video(path, frames, codec="h264")
  with av.open(path) as container:
    decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
  t = track(object_mask(decoded, 0, 1))
  assert t[-1, 0] - t[0, 0] < -5


def test_ensure_synthetic_dataset_prepares_once_and_refuses_other_settings(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path / "synthetic")
  kwargs = dict(num_classes=2, videos_per_class=4, seed=SEED, size=32, num_frames=8,
                short_side=24, verbose=False)
  assert synthetic.ensure_synthetic_dataset(data_dir, **kwargs) == data_dir
  builder = tfds.builder_from_directory(data_dir)
  assert builder.info.features["label"].names == ["MoveLeft", "MoveRight"]
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 6, "test": 2}
  ex = next(iter(builder.as_dataset(split="train")))
  assert ex["video"].shape == (8, 24, 24, 3)
  start = time.monotonic()
  synthetic.ensure_synthetic_dataset(data_dir, **kwargs)
  assert time.monotonic() - start < 0.5
  with pytest.raises(VidtxError, match="already holds"):
    synthetic.ensure_synthetic_dataset(data_dir, **dict(kwargs, seed=SEED + 1))
