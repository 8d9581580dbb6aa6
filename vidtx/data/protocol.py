"""Test protocols as data: which frames and pixels a model's test views are made of.

A protocol is four named pure functions that `config.data` chooses, plus the averaging in
`config.eval`:

  window   (`test_window`)   which stretch of the video the sampler sees
  sampler  (`test_sampler`)  which frames of that window each test clip takes
  resize   (`test_resize`)   the frame size before cropping, from the source frame size
  crops    (`test_crop`)     where the square crops lie in the resized frame

Eval, validation and predict build views with `frame_indices` and `crop_plan` (`plan`:
both) and `vidtx.data.views`, so they cannot diverge. Each seed's config names the
functions that reproduce its seed's test pipeline frame for frame (docs/protocols.md has
the parity table); vidtx's own defaults are `whole`, `vidtx`, `round`, `vidtx`.

A function gets what the seed's decoder knew about the video (`Source`, recorded at
preparation; `Source.fallback` for datasets prepared before it was) and returns plain
integers. Pure numpy: no TensorFlow, so tests and predict run it directly; the tf.data
pipelines call it through `tf.numpy_function`.
"""
from __future__ import annotations

import dataclasses
import fractions
import json
import math
from collections.abc import Callable

import numpy as np

from vidtx.data import sampling
from vidtx.errors import VidtxError


@dataclasses.dataclass(frozen=True)
class Source:
  """What a seed's decoder knows about a video, beside its frames.

  height, width: the frame size before vidtx's short-side resize (PaddleVideo and mx-mark
    resize from the decoded frame, so their resized size and crop boxes follow from it).
  rate: the stream's average frame rate as (numerator, denominator) (PyAV average_rate).
  stream_duration: the stream's duration in its time base; -1 where the container gives
    none (Matroska / WebM: PaddleVideo's pyav decoder then reads the whole video).
  stream_frames: the frame count in the stream header (0: none).
  pts: presentation timestamps of the frames, in order, in the stream's time base.
  """
  height: int
  width: int
  rate: tuple[int, int]
  stream_duration: int
  stream_frames: int
  pts: tuple[int, ...]

  @property
  def fps(self) -> float:
    return self.rate[0] / self.rate[1]  # == float(Fraction): correctly rounded

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

  @classmethod
  def from_json(cls, text: str | bytes) -> Source:
    d = json.loads(text)
    return cls(int(d["height"]), int(d["width"]), tuple(d["rate"]), int(d["stream_duration"]),
               int(d["stream_frames"]), tuple(d["pts"]))

  @classmethod
  def fallback(cls, length: int, fps: float, height: int, width: int) -> Source:
    """A constant-rate stand-in for a video prepared without its source facts."""
    rate = rate_fraction(fps)
    return cls(int(height), int(width), rate, int(length), int(length), tuple(range(int(length))))


def rate_fraction(fps: float) -> tuple[int, int]:
  """A frame rate as (numerator, denominator): NTSC rates exactly, others to 1/1001."""
  for num, den in ((30000, 1001), (24000, 1001), (60000, 1001)):
    if abs(fps - num / den) < 1e-4:
      return num, den
  f = fractions.Fraction(float(fps)).limit_denominator(1001)
  return f.numerator, f.denominator


@dataclasses.dataclass(frozen=True)
class Window:
  """Frames [first, first + count) of the video; `clip_size`: a fractional window length in
  frames where the window has one (PaddleVideo's linspace ends at clip_size - 1)."""
  first: int
  count: int
  clip_size: float | None = None


@dataclasses.dataclass(frozen=True)
class Plan:
  """A video's test views: frame indices [clips * T] (clip after clip), the resized frame
  size, and the (y, x) of each square crop (in view order within a clip)."""
  indices: np.ndarray
  resized_hw: tuple[int, int]
  crops: tuple[tuple[int, int], ...]


# ----------------------------------------------------------------------------- windows
def window_whole(source: Source, length: int, data) -> Window:
  """The whole video."""
  del source, data
  return Window(0, length)


def window_pyav_test(source: Source, length: int, data) -> Window:
  """PaddleVideo VideoDecoder(backend='pyav', mode='test'): the frames with
  0 <= pts <= int((clip_size - 1) * duration / frames) plus the next one, where
  clip_size = test_window_seconds * fps (sampling_rate * num_seg / target_fps * fps,
  fractional). Without a stream duration it reads every frame with pts >= 0."""
  clip_size = float(data.test_window_seconds) * source.fps
  pts = np.asarray(source.pts[:length], np.int64)
  first = int(np.sum(pts < 0))
  if source.stream_duration < 0 or source.stream_frames <= 0:
    return Window(first, max(length - first, 1), clip_size)
  end_pts = int((clip_size - 1) * (source.stream_duration / source.stream_frames))
  inside = int(np.sum((pts >= 0) & (pts <= end_pts)))
  after = int(np.sum(pts > end_pts)) > 0
  return Window(first, max(inside + after, 1), clip_size)


WINDOWS: dict[str, Callable[[Source, int, object], Window]] = {
    "whole": window_whole,
    "pyav_test": window_pyav_test,
}


# ----------------------------------------------------------------------------- samplers
# Each: (window, data, num_clips) -> indices [num_clips, T] relative to window.first.


def sampler_vidtx(window: Window, data, num_clips: int, *, fps: float = 30.0) -> np.ndarray:
  """vidtx's own: `vidtx.data.sampling` in mode config.data.test_sampling (or sampling)."""
  mode = data.test_sampling or data.sampling
  span = data.num_frames * data.frame_interval
  if mode == "linspace" and data.target_fps > 0 and span > 0:
    # float32 as the training pipeline computes it (clips.py), half to even as tf.round
    span = int(np.round(np.float32(span) * np.float32(fps) / np.float32(data.target_fps)))
  return sampling.sample_indices(mode, window.count, data.num_frames, num_clips=num_clips,
                                 frame_interval=data.frame_interval, window=span,
                                 placement=data.test_window_placement)


def sampler_paddle_linspace(window: Window, data, num_clips: int, **_) -> np.ndarray:
  """PaddleVideo Sampler(linspace_sample=True) after the pyav window: floor of
  linspace(0, clip_size - 1, T), clipped to the last frame (short videos repeat it)."""
  _one_clip(num_clips, "paddle_linspace")
  end = (window.clip_size if window.clip_size is not None else window.count) - 1
  offsets = np.linspace(0, end, data.num_frames)
  offsets = np.clip(offsets, 0, window.count - 1).astype(np.int64)
  return (offsets % window.count)[None]


def sampler_paddle_linspace_spread(window: Window, data, num_clips: int, **_) -> np.ndarray:
  """Like paddle_linspace, but spread over the frames the window has: a video shorter than
  the window gives T distinct frames instead of repeating its last one."""
  _one_clip(num_clips, "paddle_linspace_spread")
  end = min(window.clip_size if window.clip_size is not None else window.count,
            window.count) - 1
  return np.linspace(0, end, data.num_frames).astype(np.int64)[None]


def sampler_paddle_clips(window: Window, data, num_clips: int, **_) -> np.ndarray:
  """PaddleVideo Sampler(frame_interval, seg_len=T, num_seg=clips, valid_mode) (Video Swin):
  clip j starts at int(j * a + a / 2), a = (n - T * interval + 1) / clips (0 when the
  video is not longer than T * interval - 1); frames `interval` apart, modulo n."""
  n, span = window.count, data.num_frames * data.frame_interval
  avg = (n - span + 1) / float(num_clips)
  if n > span - 1:
    starts = (np.arange(num_clips) * avg + avg / 2.0).astype(np.int64)
  else:
    starts = np.zeros(num_clips, np.int64)
  steps = np.arange(data.num_frames) * data.frame_interval
  return (starts[:, None] + steps[None]) % n


def sampler_paddle_dense(window: Window, data, num_clips: int, **_) -> np.ndarray:
  """PaddleVideo Sampler(dense_sample=True, valid_mode) (PP-TSM dense): clips start at
  linspace(0, max(1, n - T * interval + 1) - 1, clips) (floored), T frames `interval`
  apart, modulo n (interval = 64 // T in PaddleVideo: 8 for 8 frames)."""
  n, span = window.count, data.num_frames * data.frame_interval
  sample_pos = max(1, 1 + n - span)
  starts = np.linspace(0, sample_pos - 1, num=num_clips, dtype=int).astype(np.int64)
  steps = np.arange(data.num_frames) * data.frame_interval
  return (starts[:, None] + steps[None]) % n


def sampler_mxmark(window: Window, data, num_clips: int, **_) -> np.ndarray:
  """mx-mark TemporalRandomCrop(T * interval) + linspace(begin, end - 1, T, dtype=int):
  begin in [0, max(0, n - T * interval - 1)] (mx-mark draws it at random even at test
  time; here the middle of that range, or 0 with test_window_placement='linspace'),
  end = min(begin + T * interval, n)."""
  _one_clip(num_clips, "mxmark")
  n, span = window.count, data.num_frames * data.frame_interval
  rand_end = max(0, n - span - 1)
  begin = 0 if data.test_window_placement == "linspace" else rand_end // 2
  end = min(begin + span, n)
  return np.linspace(begin, end - 1, data.num_frames, dtype=int).astype(np.int64)[None]


SAMPLERS: dict[str, Callable[..., np.ndarray]] = {
    "vidtx": sampler_vidtx,
    "paddle_linspace": sampler_paddle_linspace,
    "paddle_linspace_spread": sampler_paddle_linspace_spread,
    "paddle_clips": sampler_paddle_clips,
    "paddle_dense": sampler_paddle_dense,
    "mxmark": sampler_mxmark,
}


def _one_clip(num_clips: int, name: str) -> None:
  if num_clips != 1:
    raise VidtxError(f"config.data.test_sampler={name!r} takes one test clip "
                     f"(config.data.test_clips={num_clips})")


# ----------------------------------------------------------------------------- resizes
# Each: (height, width, data) of the source frame -> (height, width) before cropping.


def resize_round(height: int, width: int, data) -> tuple[int, int]:
  """vidtx's own: short side to eval_short_side, long side in proportion (rounded), or 4:3
  where config.data.fixed_ratio is set."""
  side = data.eval_short_side
  short, long = min(height, width), max(height, width)
  new_long = side * 4 // 3 if data.fixed_ratio else math.floor(long * side / short + 0.5)
  return (new_long, side) if height > width else (side, new_long)


def resize_paddle_jitter_scale(height: int, width: int, data) -> tuple[int, int]:
  """PaddleVideo JitterScale(min=max=side): unchanged where the short side is already
  `side`; else the long side floor(long / short * side)."""
  side = data.eval_short_side
  if min(height, width) == side:
    return height, width
  if width < height:
    return int(math.floor((float(height) / width) * side)), side
  return side, int(math.floor((float(width) / height) * side))


def resize_paddle_scale_4_3(height: int, width: int, data) -> tuple[int, int]:
  """PaddleVideo Scale(short_size=side) with its default fixed_ratio: 4:3 (long side
  int(side * 4 / 3)), except that a frame whose short side is already `side` is kept."""
  side = data.eval_short_side
  if (width <= height and width == side) or (height <= width and height == side):
    return height, width
  long = int(side * 4.0 / 3.0)
  return (long, side) if width <= height else (side, long)


def resize_paddle_scale_round(height: int, width: int, data) -> tuple[int, int]:
  """PaddleVideo Scale(side, fixed_ratio=False, keep_ratio=True, do_round=True) (Video Swin):
  both sides int(x * side / short + 0.5); unchanged where the short side is `side`."""
  side = data.eval_short_side
  if (width <= height and width == side) or (height <= width and height == side):
    return height, width
  factor = side / (width if width <= height else height)
  return int(height * float(factor) + 0.5), int(width * float(factor) + 0.5)


def resize_torchvision(height: int, width: int, data) -> tuple[int, int]:
  """torchvision Resize(side): short side `side`, long side int(side * long / short)."""
  side = data.eval_short_side
  short, long = min(height, width), max(height, width)
  new_long = int(side * long / short)
  return (new_long, side) if height > width else (side, new_long)


RESIZES: dict[str, Callable[[int, int, object], tuple[int, int]]] = {
    "round": resize_round,
    "paddle_jitter_scale": resize_paddle_jitter_scale,
    "paddle_scale_4_3": resize_paddle_scale_4_3,
    "paddle_scale_round": resize_paddle_scale_round,
    "torchvision": resize_torchvision,
}


# ----------------------------------------------------------------------------- crops
# Each: (height, width, size, num_crops) of the resized frame -> [(y, x)] in view order.


def crops_vidtx(height: int, width: int, size: int, num_crops: int) -> list[tuple[int, int]]:
  """vidtx's own: 1 = centre; 3 = [left, right, centre] along the longer side (or [top,
  bottom, centre]) at 0, 2 * step, step, step = (long - size) // 2, the other axis centred."""
  dy, dx = (height - size) // 2, (width - size) // 2
  if num_crops == 1:
    return [(dy, dx)]
  if height > width:
    return [(0, dx), (2 * dy, dx), (dy, dx)]
  return [(dy, 0), (dy, 2 * dx), (dy, dx)]


def crops_paddle_multi_center(height: int, width: int, size: int, num_crops: int):
  """PaddleVideo MultiCenterCrop (TokShift, pyav): [centre, left (x=0), right (x=w-size)],
  all at y = int((h - size) / 2); x only, whatever the orientation."""
  _crops(num_crops, 3, "paddle_multi_center")
  y = int((height - size) / 2.0) if height > size else 0
  centre = int((width - size) / 2.0) if width > size else 0
  right = width - size if width > size else 0
  return [(y, centre), (y, 0), (y, right)]


def crops_paddle_uniform(height: int, width: int, size: int, num_crops: int):
  """PaddleVideo UniformCrop: [left, right, centre] at x = 0, 2 * step, step,
  step = (w - size) // 2, where the height is the crop size; else [top, bottom, centre]."""
  _crops(num_crops, 3, "paddle_uniform")
  if height == size:
    step = (width - size) // 2
    return [(0, 0), (0, 2 * step), (0, step)]
  if width == size:
    step = (height - size) // 2
    return [(0, 0), (2 * step, 0), (step, 0)]
  raise VidtxError(f"paddle_uniform crops need one side equal to the crop size {size}; the "
                   f"resized frame is {height}x{width} (config.data.test_resize)")


def crops_paddle_center(height: int, width: int, size: int, num_crops: int):
  """PaddleVideo CenterCrop(do_round=True) / torchvision CenterCrop: one crop at
  int(round((side - size) / 2)) (Python's round: half to even)."""
  _crops(num_crops, 1, "paddle_center")
  return [(int(round((height - size) / 2.0)), int(round((width - size) / 2.0)))]


def crops_paddle_full_res(height: int, width: int, size: int, num_crops: int):
  """PaddleVideo GroupFullResSample (PP-TSM dense): [left, right, centre] at
  x = 0, 4 * ws, 2 * ws, y = 2 * hs, ws = (w - size) // 4, hs = (h - size) // 4."""
  _crops(num_crops, 3, "paddle_full_res")
  ws, hs = (width - size) // 4, (height - size) // 4
  return [(2 * hs, 0), (2 * hs, 4 * ws), (2 * hs, 2 * ws)]


def crops_mxmark_three(height: int, width: int, size: int, num_crops: int):
  """mx-mark ThreeCrop: [left, right, centre] at x = 0, w - size, (w - size) // 2,
  y = (h - size) // 2, whatever the orientation."""
  _crops(num_crops, 3, "mxmark_three")
  y = (height - size) // 2
  return [(y, 0), (y, width - size), (y, (width - size) // 2)]


CROPS: dict[str, Callable[[int, int, int, int], list[tuple[int, int]]]] = {
    "vidtx": crops_vidtx,
    "paddle_multi_center": crops_paddle_multi_center,
    "paddle_uniform": crops_paddle_uniform,
    "paddle_center": crops_paddle_center,
    "paddle_full_res": crops_paddle_full_res,
    "mxmark_three": crops_mxmark_three,
}
CROP_COUNTS = {"vidtx": None, "paddle_multi_center": 3, "paddle_uniform": 3, "paddle_center": 1,
               "paddle_full_res": 3, "mxmark_three": 3}
INTERPOLATIONS = ("bilinear", "bilinear_antialias")

# The seeds' decoders (`test_decoder`): how a checkpoint that records no preparation (converted
# from a seed) decodes a video file. "vidtx": no seed, vidtx's own decode defaults.
DECODERS = {
    "vidtx": None,
    "paddle_pyav": "PaddleVideo's pyav VideoDecoder (frame.to_rgb())",
    "paddle_decord": "PaddleVideo's decord VideoDecoder",
    "mxmark_decord": "mx-mark's decord VideoReader",
}
# What every one of them hands its test pipeline, as `vidtx.data.decode.decode_video` settings:
# PyAV's to_rgb() and decord both convert YUV to RGB with swscale at the stored size and ignore
# the sample aspect ratio; the seed's resize is the only one; no lossy re-encoding.
SEED_DECODE = {"short_side": 0, "fps": None, "max_frames": None, "jpeg_quality": None,
               "pixel_aspect": "ignore"}
SEED_DECODE_TEXT = ("stored pixel grid (sample aspect ratio not applied), source size (the "
                    "protocol's resize is the only one), every frame at the source rate, YUV->RGB "
                    "by swscale at the stored size, frames kept lossless")


def seed_decoder(data) -> str | None:
  """What the seed decoder named by `data.test_decoder` is called (None: vidtx's own)."""
  name = data.get("test_decoder", "vidtx") if data is not None else "vidtx"
  if name not in DECODERS:
    raise VidtxError(f"config.data.test_decoder={name!r} is not one of {tuple(DECODERS)}")
  return DECODERS[name]


def _crops(num_crops: int, expected: int, name: str) -> None:
  if num_crops != expected:
    raise VidtxError(f"config.data.test_crop={name!r} makes {expected} crop(s); "
                     f"config.data.test_crops={num_crops}")


# ----------------------------------------------------------------------------- the plan
def check(data) -> None:
  """A VidtxError naming the key where config.data names an unknown protocol function."""
  for key, table in (("test_window", WINDOWS), ("test_sampler", SAMPLERS),
                     ("test_resize", RESIZES), ("test_crop", CROPS)):
    if key not in data:
      raise VidtxError(f"config.data.{key} is missing; configs/common.py data_config() has "
                       "the defaults")
    if data[key] not in table:
      raise VidtxError(f"config.data.{key}={data[key]!r} is not one of {tuple(table)}")
  seed_decoder(data)
  if data.test_interpolation not in INTERPOLATIONS:
    raise VidtxError(f"config.data.test_interpolation={data.test_interpolation!r} is not one "
                     f"of {INTERPOLATIONS}")
  if data.test_window == "pyav_test" and not data.test_window_seconds > 0:
    raise VidtxError("config.data.test_window='pyav_test' needs test_window_seconds > 0 "
                     "(PaddleVideo: sampling_rate * num_seg / target_fps)")


def frame_indices(source: Source, length: int, data, num_clips: int,
                  *, fps: float | None = None) -> np.ndarray:
  """The frame indices [clips * T] (int64, clip after clip) of a video of `length` stored
  frames. `fps`: the rate vidtx's own sampler scales by (default: the source's)."""
  if length < 1:
    raise VidtxError("the video has no frames")
  window = WINDOWS[data.test_window](source, length, data)
  relative = SAMPLERS[data.test_sampler](window, data, num_clips,
                                         fps=source.fps if fps is None else fps)
  return np.minimum(relative.reshape(-1) + window.first, length - 1).astype(np.int64)


def crop_plan(height: int, width: int, data, num_crops: int):
  """((h, w) to resize to, [(y, x)] of the crops) for frames of `height` x `width` pixels
  before vidtx's resize at preparation (`Source.height`, `Source.width`)."""
  resized = RESIZES[data.test_resize](int(height), int(width), data)
  size = data.image_size
  if min(resized) < size:
    raise VidtxError(f"config.data.test_resize={data.test_resize!r} gives {resized[0]}x"
                     f"{resized[1]} frames, smaller than the {size}-pixel crops")
  name = data.test_crop
  if num_crops == 1 and CROP_COUNTS[name] not in (None, 1):
    name = "vidtx"  # one view (validation) of a multi-crop protocol: the centre crop
  crops = CROPS[name](resized[0], resized[1], size, num_crops)
  return (int(resized[0]), int(resized[1])), tuple((int(y), int(x)) for y, x in crops)


def plan(source: Source, length: int, data, num_clips: int, num_crops: int,
         *, fps: float | None = None) -> Plan:
  """The test views of one video of `length` stored frames, by config.data's protocol."""
  indices = frame_indices(source, length, data, num_clips, fps=fps)
  resized, crops = crop_plan(source.height, source.width, data, num_crops)
  return Plan(indices, resized, crops)
