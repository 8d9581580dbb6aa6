"""`config.data` checked once, before a pipeline starts: one clear error naming the key.

The schema is the config itself: `configs/common.py`'s `data_config()` holds every key and
its default. The pipelines then read `config.data.<key>` directly. `check` raises a
VidtxError for a missing key, an unknown sampling mode or augmentation, or a value out of
range; the selected augmentation checks its own keys (`vidtx.data.augment`), both with the
key readers of `vidtx.data.keys`. Imports no TensorFlow until `check` runs (the augmentation
registry needs it).
"""
from __future__ import annotations

from vidtx.data import protocol, sampling
from vidtx.data.keys import one_of, positive_int, value
from vidtx.errors import VidtxError


def test_sampling(data) -> str:
  """The sampling mode of test clips: `test_sampling`, or `sampling` where that is ''."""
  return data.test_sampling or data.sampling


def check(data, *, dataset: bool = True) -> None:
  """Checks every key of `config.data` (a ConfigDict) that the pipelines read.

  `dataset=False`: not the keys that name the dataset (for a video held in memory).
  """
  if dataset:
    if not value(data, "dir"):
      raise VidtxError("config.data.dir is not set: it must name a prepared dataset directory")
    value(data, "train_split")
  positive_int(data, "num_frames")
  one_of(data, "sampling", sampling.MODES)
  if value(data, "test_sampling"):
    one_of(data, "test_sampling", sampling.MODES)
  interval = value(data, "frame_interval")
  if isinstance(interval, bool) or not isinstance(interval, int) or interval < 0:
    raise VidtxError(f"config.data.frame_interval={interval!r} must be an integer >= 0")
  for key, mode in (("sampling", data.sampling), ("test_sampling", test_sampling(data))):
    if mode == "dense" and interval < 1:
      raise VidtxError(f"config.data.frame_interval must be >= 1 for {key}='dense' "
                       f"(got {interval!r})")
  if value(data, "target_fps") < 0:
    raise VidtxError(f"config.data.target_fps={data.target_fps!r} must be >= 0 (0: off)")
  one_of(data, "test_window_placement", sampling.PLACEMENTS)
  image_size = positive_int(data, "image_size")
  eval_short_side = positive_int(data, "eval_short_side")
  if eval_short_side < image_size:
    raise VidtxError(f"config.data.eval_short_side={eval_short_side} is smaller than "
                     f"image_size={image_size}: the eval crops would not fit")
  for key in ("flip", "fixed_ratio", "read_sampled_frames"):
    if not isinstance(value(data, key), bool):
      raise VidtxError(f"config.data.{key}={data[key]!r} must be True or False")
  positive_int(data, "shuffle_buffer")
  threads = value(data, "num_threads")
  if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                              or threads < 1):
    raise VidtxError(f"config.data.num_threads={threads!r} must be a positive integer "
                     "(or None: tf.data's shared pool)")
  protocol.check(data)
  from vidtx.data import augment  # pylint: disable=g-import-not-at-top  (TensorFlow: only to check)
  augment.check(data)
