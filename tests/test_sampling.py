"""Frame-index samplers against hand-computed indices (PaddleVideo / mmaction formulas)."""
import subprocess
import sys

import numpy as np
import pytest

from vidtx.data import sampling
from vidtx.errors import VidtxError


def test_segment_train_offsets_are_random_within_each_segment():
  rand = np.array([0, 9, 10, 19, 3, 2**31 - 1, 7, 123456])
  idx = sampling.sample_segment_indices(80, 8, rand=rand)  # avg = 10
  np.testing.assert_array_equal(idx, [[0, 19, 20, 39, 43, 57, 67, 76]])
  rng = np.random.default_rng(0)
  for length in (8, 17, 80, 301):
    avg = length // 8
    for _ in range(20):
      rand = rng.integers(0, sampling.RAND_RANGE, 8)
      idx = sampling.sample_segment_indices(length, 8, rand=rand)[0]
      np.testing.assert_array_equal(idx // avg, np.arange(8))  # offset in [0, avg - 1]


def test_segment_test_takes_the_middle_of_each_segment():
  np.testing.assert_array_equal(sampling.sample_segment_indices(80, 8),
                                [[4, 14, 24, 34, 44, 54, 64, 74]])
  # avg = 11: (11 - 1) // 2 = 5; leftover frames at the end are never used (as Paddle).
  np.testing.assert_array_equal(sampling.sample_segment_indices(95, 8)[0], 5 + 11 * np.arange(8))
  # Two test clips shift the offset inside each segment: 10 / 4 - 0.5 and 30 / 4 - 0.5, floored.
  np.testing.assert_array_equal(sampling.sample_segment_indices(80, 8, num_clips=2)[:, 0], [2, 7])


def test_segment_shorter_than_num_frames_wraps_like_paddle():
  expected = [[0, 1, 2, 3, 4, 0, 1, 2]]  # idx = i % length
  np.testing.assert_array_equal(sampling.sample_segment_indices(5, 8), expected)
  np.testing.assert_array_equal(sampling.sample_segment_indices(5, 8, rand=np.arange(8) * 7),
                                expected)


def test_linspace_matches_numpy_linspace_of_the_window():
  for length in (1, 7, 64, 300, 301):
    expected = np.linspace(0, length - 1, 8).astype(int)
    np.testing.assert_array_equal(sampling.sample_linspace_indices(length, 8)[0], expected)
  # A 24-frame window in a 100-frame video: train start uniform over 77 starts.
  idx = sampling.sample_linspace_indices(100, 4, 24, rand=np.array([80]))
  np.testing.assert_array_equal(idx, [[3, 10, 18, 26]])  # start 80 % 77 = 3, + floor(i * 23 / 3)
  # Test: 'linspace' placement puts one clip at frame 0 (PaddleVideo TimeSformer test) ...
  np.testing.assert_array_equal(sampling.sample_linspace_indices(100, 4, 24, placement="linspace"),
                                [[0, 7, 15, 23]])
  # ... and 'centre' the centred window (start floor(77 / 2) = 38).
  np.testing.assert_array_equal(sampling.sample_linspace_indices(100, 4, 24), [[38, 45, 53, 61]])
  # Three windows evenly spaced from the first to the last start.
  np.testing.assert_array_equal(
      sampling.sample_linspace_indices(100, 4, 24, num_clips=3, placement="linspace")[:, 0],
      [0, 38, 76])
  # A window longer than the video is clipped to the video.
  np.testing.assert_array_equal(sampling.sample_linspace_indices(10, 4, 24), [[0, 3, 6, 9]])


def test_dense_train_start_and_wrap_around():
  # Paddle dense_sample: start in [0, max(1, L - window)), then stride frame_interval.
  idx = sampling.sample_dense_indices(100, 8, 8, rand=np.array([40]))
  np.testing.assert_array_equal(idx, [[4 + 8 * i for i in range(8)]])  # 40 % 36 = 4
  rng = np.random.default_rng(1)
  starts = {int(sampling.sample_dense_indices(100, 8, 8, rand=rng.integers(0, 2**31, 1))[0, 0])
            for _ in range(500)}
  assert min(starts) == 0 and max(starts) == 35
  # A video shorter than num_frames * frame_interval wraps around modulo its length.
  idx = sampling.sample_dense_indices(20, 8, 4, rand=np.array([12345]))
  np.testing.assert_array_equal(idx, [[0, 4, 8, 12, 16, 0, 4, 8]])


def test_dense_test_clips():
  # Video Swin (mmaction SampleFrames test): 4 clips at int(avg * (j + 0.5)),
  # avg = (L - 64 + 1) / 4.
  length, window = 100, 64
  avg = (length - window + 1) / 4
  expected = [int(avg * (j + 0.5)) for j in range(4)]
  idx = sampling.sample_dense_indices(length, 32, 2, num_clips=4)
  np.testing.assert_array_equal(idx[:, 0], expected)
  np.testing.assert_array_equal(idx[0], (expected[0] + 2 * np.arange(32)) % length)
  # PP-TSM dense test: 10 starts np.linspace(0, sample_pos - 1, 10, dtype=int).
  for length in (64, 65, 300):
    sample_pos = max(1, 1 + length - 64)
    starts = np.linspace(0, sample_pos - 1, num=10, dtype=int)
    idx = sampling.sample_dense_indices(length, 8, 8, num_clips=10, placement="linspace")
    np.testing.assert_array_equal(idx, (starts[:, None] + 8 * np.arange(8)) % length)
  # Short video: every clip starts at 0 and wraps.
  np.testing.assert_array_equal(sampling.sample_dense_indices(20, 8, 4, num_clips=2),
                                [[0, 4, 8, 12, 16, 0, 4, 8]] * 2)


def test_numpy_and_tensorflow_backends_agree():
  tf = pytest.importorskip("tensorflow")
  tnp = tf.experimental.numpy
  rng = np.random.default_rng(2)
  for mode in sampling.MODES:
    for length in (1, 5, 8, 31, 64, 65, 300):
      rand = rng.integers(0, sampling.RAND_RANGE, sampling.num_random(mode, 8))
      for kwargs in ({"rand": rand}, {"num_clips": 3}, {"num_clips": 4, "placement": "linspace"}):
        expected = sampling.sample_indices(mode, length, 8, frame_interval=4, window=24, **kwargs)
        tf_kwargs = dict(kwargs, rand=tf.constant(rand)) if "rand" in kwargs else kwargs
        got = sampling.sample_indices(mode, tf.constant(length), 8, frame_interval=4,
                                      window=tf.constant(24), xp=tnp, **tf_kwargs)
        np.testing.assert_array_equal(got.numpy(), expected)
        assert expected.min() >= 0 and expected.max() < length


def test_bad_mode_and_placement_are_clear_errors():
  with pytest.raises(VidtxError, match="sampling"):
    sampling.sample_indices("uniform", 10, 8)
  with pytest.raises(VidtxError, match="placement"):
    sampling.sample_dense_indices(100, 8, 2, placement="middle")


def test_imports_without_tensorflow():
  code = "import sys, vidtx.data.sampling; assert 'tensorflow' not in sys.modules"
  subprocess.run([sys.executable, "-c", code], check=True)
