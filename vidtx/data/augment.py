"""Training augmentation: named crop ops that `config.data.train_aug` selects, then a flip.

A crop op picks the box of the source frame that becomes the training clip, the same box
for every frame of the clip; the pipeline cuts it while decoding (`decode_and_crop_jpeg`,
exact) and resizes it to image_size (bilinear, half-pixel centres), then mirrors the whole
clip with probability 1/2 where `config.data.flip` is set. An op is a pure function

    @register("name", check=optional_check)
    def name(work, seed, data):   # work: float32 [2] frame (height, width); seed: [2] int
      return y, x, h, w           # the box, float, in the same (working) coordinates

of the frame size, a stateless seed and `config.data`; `check(data)` raises a VidtxError
for bad values of the keys the op reads. Adding an augmentation is writing one such
function here and putting the keys it reads, with defaults, in configs/common.py
`data_config`. Working coordinates are the frame after Paddle's Scale(fixed_ratio=True)
(short side kept, long side 4:3) where `config.data.fixed_ratio` is set, else the source
frame; `train_box` maps the box back to source pixels.

`scale_jitter` is "resize the short side to s ~ U{a..b}, then crop image_size" expressed as
a box of side image_size * short / s: the same up to rounding the box to whole source
pixels (< 0.3% in scale, < 0.5 px in position) and the interpolation of the outermost
output pixels. `multi_scale_crop` composes Paddle's MultiScaleCrop, resize to msc_size and
RandomCrop into one box the same way.
"""
from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from vidtx.data import clips, keys, randaugment
from vidtx.errors import VidtxError

_CROPS: dict[str, tuple[Callable, Callable | None]] = {}


def register(name: str, check: Callable | None = None):
  """Registers a crop op under `name` (the value of config.data.train_aug that selects it)."""
  def wrap(op):
    if name in _CROPS:
      raise ValueError(f"crop op {name!r} is registered twice")
    _CROPS[name] = (op, check)
    return op
  return wrap


def names() -> tuple[str, ...]:
  """The registered crop ops."""
  return tuple(_CROPS)


def check(data) -> None:
  """A VidtxError unless config.data.train_aug names a registered op whose keys are good."""
  name = keys.one_of(data, "train_aug", names())
  op_check = _CROPS[name][1]
  if op_check is not None:
    op_check(data)
  randaugment.parse(keys.value(data, "auto_augment"))


# ----------------------------------------------------------------------------- the clip
def train_clip(jpegs: tf.Tensor, seed: tf.Tensor, data) -> tf.Tensor:
  """jpegs: [T] JPEG strings -> uint8 [T, image_size, image_size, 3], one geometry per clip."""
  _, crop_seed, flip_seed = clips.clip_seeds(seed)
  size, num_frames = data.image_size, data.num_frames
  box = train_box(tf.io.extract_jpeg_shape(jpegs[0])[:2], crop_seed, data)
  frames = tf.stack([tf.io.decode_and_crop_jpeg(jpegs[t], box, channels=3)
                     for t in range(num_frames)])
  clip = resize(frames, size, size)
  shape = [num_frames, size, size, 3]
  if data.flip:
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    # Reversing rows of a [T * H, W, 3] view is much faster than tf.reverse on axis 2 of 4-D.
    rows = tf.reshape(clip, [-1, size, 3])
    clip = tf.cond(flip, lambda: tf.reshape(tf.reverse(rows, [1]), shape), lambda: clip)
  if data.auto_augment:  # RandAugment, one draw per clip (vidtx.data.randaugment)
    clip = randaugment.rand_augment(clip, tf.random.experimental.stateless_fold_in(seed, 1),
                                    data.auto_augment)
  return tf.ensure_shape(clip, shape)


def resize(frames: tf.Tensor, height, width, *, antialias: bool = False) -> tf.Tensor:
  """Bilinear (half-pixel centres; antialiased when shrinking if `antialias`, as PIL's
  BILINEAR) to uint8; a no-op at the same size."""
  same = tf.logical_and(tf.shape(frames)[1] == height, tf.shape(frames)[2] == width)

  def resized():
    out = tf.image.resize(frames, tf.stack([height, width]), method="bilinear",
                          antialias=antialias)
    return tf.cast(tf.round(out), tf.uint8)

  return tf.cond(same, lambda: frames, resized)


def train_box(source_hw: tf.Tensor, seed: tf.Tensor, data) -> tf.Tensor:
  """The training crop of a frame of `source_hw` pixels: int32 [y, x, h, w] (decode_and_crop_jpeg)."""
  source = tf.cast(source_hw, tf.float32)
  if data.fixed_ratio:
    short = tf.reduce_min(source)
    long = tf.floor(short * 4 / 3)
    work = tf.where(source[0] <= source[1], tf.stack([short, long]), tf.stack([long, short]))
  else:
    work = source
  y, x, h, w = _CROPS[data.train_aug][0](work, seed, data)
  scale = source / work
  return _clip_box(y * scale[0], x * scale[1], h * scale[0], w * scale[1], source_hw)


def _clip_box(y, x, h, w, source_hw):
  """Rounds a float box to whole pixels inside the frame."""
  height, width = source_hw[0], source_hw[1]
  h = tf.clip_by_value(tf.cast(tf.round(h), tf.int32), 1, height)
  w = tf.clip_by_value(tf.cast(tf.round(w), tf.int32), 1, width)
  y = tf.clip_by_value(tf.cast(tf.round(y), tf.int32), 0, height - h)
  x = tf.clip_by_value(tf.cast(tf.round(x), tf.int32), 0, width - w)
  return tf.stack([y, x, h, w])


# ----------------------------------------------------------------------------- the crop ops
def _check_scale_jitter(data) -> None:
  low, high = keys.pair(data, "scale_jitter", int)
  if not 0 < low <= high:
    raise VidtxError(f"config.data.scale_jitter={data.scale_jitter} must be (min, max) short sides")


@register("scale_jitter", check=_check_scale_jitter)
def scale_jitter(work, seed, data):
  """Short side resized to s ~ U{a..b} (config.data.scale_jitter), then a random image_size crop."""
  size_seed, pos_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  low, high = (int(v) for v in data.scale_jitter)
  short_side = tf.random.stateless_uniform([], size_seed, low, high + 1, tf.int32)
  side = data.image_size * tf.reduce_min(work) / tf.cast(short_side, tf.float32)
  side = tf.minimum(side, tf.reduce_min(work))
  u = tf.random.stateless_uniform([2], pos_seed)
  return u[0] * (work[0] - side), u[1] * (work[1] - side), side, side


def _check_random_resized_crop(data) -> None:
  area, ratio = keys.pair(data, "rrc_area", float), keys.pair(data, "rrc_ratio", float)
  if not 0 < area[0] <= area[1] <= 1:
    raise VidtxError(f"config.data.rrc_area={data.rrc_area} must satisfy 0 < min <= max <= 1")
  if not 0 < ratio[0] <= ratio[1]:
    raise VidtxError(f"config.data.rrc_ratio={data.rrc_ratio} must satisfy 0 < min <= max")


@register("random_resized_crop", check=_check_random_resized_crop)
def random_resized_crop(work, seed, data):
  """Inception-style crop (config.data.rrc_area and rrc_ratio ranges), whole frame as fallback."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.concat([tf.cast(work, tf.int32), [3]], 0), tf.zeros([1, 0, 4], tf.float32), seed,
      min_object_covered=0.0, aspect_ratio_range=tuple(float(v) for v in data.rrc_ratio),
      area_range=tuple(float(v) for v in data.rrc_area), max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  begin, size = tf.cast(begin, tf.float32), tf.cast(size, tf.float32)
  return begin[0], begin[1], size[0], size[1]


def _check_multi_scale_crop(data) -> None:
  scales = keys.value(data, "msc_scales")
  try:
    ok = len(scales) > 0 and all(0 < float(x) <= 1 for x in scales)
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise VidtxError(f"config.data.msc_scales={scales} must be fractions in (0, 1]")
  msc_size = keys.positive_int(data, "msc_size")
  if msc_size < data.image_size:
    raise VidtxError(f"config.data.msc_size={msc_size} is smaller than "
                     f"image_size={data.image_size}")


@register("multi_scale_crop", check=_check_multi_scale_crop)
def multi_scale_crop(work, seed, data):
  """PaddleVideo MultiScaleCrop(msc_size) then RandomCrop(image_size), as one box.

  Crop sides int(base * scale) for base = short side (snapped to msc_size within 3 px),
  scale in config.data.msc_scales, (w, h) pairs at most 1 scale apart, offsets from the 13
  fixed positions (allow_duplication=False drops repeats when a step is 0). The msc box is
  resized to msc_size^2 and an image_size crop taken from it; the pipeline cuts the
  corresponding sub-box of the source instead.
  """
  pair_seed, offset_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  scales = tuple(float(v) for v in data.msc_scales)
  msc_size, image_size = data.msc_size, data.image_size
  base = tf.reduce_min(work)
  sides = tf.floor(base * tf.constant(scales))
  sides = tf.where(tf.abs(sides - msc_size) < 3, float(msc_size), sides)
  n = len(scales)
  pairs = [(i, j) for i in range(n) for j in range(n) if abs(i - j) <= 1]  # (h index, w index)
  pick = tf.random.stateless_uniform([], pair_seed, 0, len(pairs), tf.int32)
  crop_h = tf.gather(sides, tf.gather([i for i, _ in pairs], pick))
  crop_w = tf.gather(sides, tf.gather([j for _, j in pairs], pick))
  h_step, w_step = (work[0] - crop_h) / 4, (work[1] - crop_w) / 4
  # (w multiple, h multiple, needs w_step, needs h_step, needs both / either): Paddle's order.
  grid = tf.constant([[0, 0], [4, 0], [0, 4], [4, 4], [2, 2], [0, 2], [4, 2], [2, 4], [2, 0],
                      [1, 1], [3, 1], [1, 3], [3, 3]], tf.float32)
  has_w, has_h = w_step > 0, h_step > 0
  valid = tf.stack([True, has_w, has_h, has_w & has_h, has_w | has_h] + [True] * 8)
  grid = tf.boolean_mask(grid, valid)
  choice = tf.random.stateless_uniform([], offset_seed, 0, tf.shape(grid)[0], tf.int32)
  off_x, off_y = grid[choice][0] * w_step, grid[choice][1] * h_step
  # RandomCrop(image_size) of the msc_size^2 resize, mapped back into the msc box.
  u = tf.random.stateless_uniform([2], crop_seed)
  spare = float(msc_size - image_size)
  ratio_h, ratio_w = crop_h / msc_size, crop_w / msc_size
  y = off_y + tf.floor(u[0] * (spare + 1)) * ratio_h
  x = off_x + tf.floor(u[1] * (spare + 1)) * ratio_w
  return y, x, image_size * ratio_h, image_size * ratio_w
