"""Frame-index samplers: which frames of a video a clip uses, before anything is decoded.

Every sampler is a pure integer function of the video length, the sampler's
parameters and, for training, random integers drawn by the caller. One
implementation serves both backends: `xp=numpy` (the default; eager, used by
tests, benchmarks and anything without TensorFlow) and
`xp=tf.experimental.numpy` (inside a `tf.data` map, where the pipeline draws the
random integers with `tf.random.stateless_uniform` from a per-example seed).
Only integer arithmetic is used, so both backends give identical indices.

All samplers return indices of shape `[num_clips, num_frames]`, int64, in
`[0, length)`. Training (`rand` given) is always one clip. Test clips
(`rand=None`) are deterministic.

Modes (PaddleVideo / mmaction semantics, see docs/architecture.md):
  segment   TSN/TSM uniform: the video is cut into `num_frames` segments of
            avg = length // num_frames frames; train picks a random frame of each
            segment, test the middle one ((avg - 1) // 2). Videos shorter than
            `num_frames` take frames 0, 1, ... modulo length (Paddle's video branch).
            Test clips k > 1 shift the offset inside each segment.
  dense     `num_frames` frames `frame_interval` apart (window = num_frames *
            frame_interval), wrapping around modulo length for short videos.
            Train start uniform in [0, max(1, length - window)) (Paddle dense_sample).
  linspace  `num_frames` frames evenly spaced (floor of linspace) over a window of
            `window` frames (0: the whole video); the window is clipped to the
            video. Train start uniform over all windows that fit.

Test windows (dense, linspace) are placed by `placement`:
  'centre'    window j starts in the middle of the j-th of num_clips equal parts of
              the valid starts (mmaction / Video Swin); one clip = the centred window.
  'linspace'  starts evenly spaced from the first to the last valid start (DMVR,
              PP-TSM dense test); one clip = the window at frame 0 (PaddleVideo
              TimeSformer test).
"""
from __future__ import annotations

import numpy as np

from vidtx.errors import VidtxError

MODES = ("segment", "dense", "linspace")
PLACEMENTS = ("centre", "linspace")
# Random integers are drawn in [0, RAND_RANGE) and reduced modulo the number of
# choices; the bias is below 1e-4 for any realistic video length.
RAND_RANGE = 2**31


def num_random(mode: str, num_frames: int) -> int:
  """How many random integers one training clip of `mode` needs."""
  _check_mode(mode)
  return num_frames if mode == "segment" else 1


def sample_indices(mode: str, length, num_frames: int, *, rand=None, num_clips: int = 1,
                   frame_interval: int = 1, window=0, placement: str = "centre", xp=np):
  """Frame indices `[num_clips, num_frames]` for one video of `length` frames.

  rand: `[num_random(mode, num_frames)]` random integers in [0, RAND_RANGE) for a
    training clip, or None for deterministic test clips.
  frame_interval: dense mode only. window: linspace mode only (frames; 0 = whole
    video; may be a scalar tensor). placement: test clips of dense / linspace.
  """
  _check_mode(mode)
  if mode == "segment":
    return sample_segment_indices(length, num_frames, rand=rand, num_clips=num_clips, xp=xp)
  if mode == "dense":
    return sample_dense_indices(length, num_frames, frame_interval, rand=rand,
                                num_clips=num_clips, placement=placement, xp=xp)
  return sample_linspace_indices(length, num_frames, window, rand=rand, num_clips=num_clips,
                                 placement=placement, xp=xp)


def sample_segment_indices(length, num_frames: int, *, rand=None, num_clips: int = 1, xp=np):
  """TSN/TSM segment sampling (PaddleVideo `Sampler`, seg_len 1, video format)."""
  length = _as_int64(length, xp)
  steps = xp.arange(num_frames, dtype=xp.int64)
  avg = length // num_frames
  stride = xp.maximum(avg, 1)  # avg == 0: frames 0, 1, 2, ... modulo length
  if rand is not None:
    offsets = (_as_int64(rand, xp) % stride)[None, :]  # one random offset per segment
  else:
    clips = xp.arange(num_clips, dtype=xp.int64)
    # Centre of the j-th of num_clips sub-segments; num_clips=1 gives (avg - 1) // 2.
    offsets = xp.maximum(((2 * clips + 1) * avg - num_clips) // (2 * num_clips), 0)[:, None]
  return (offsets + steps[None, :] * stride) % length


def sample_dense_indices(length, num_frames: int, frame_interval: int, *, rand=None,
                         num_clips: int = 1, placement: str = "centre", xp=np):
  """`num_frames` frames `frame_interval` apart, modulo length (TSM dense, Video Swin)."""
  length = _as_int64(length, xp)
  window = num_frames * frame_interval
  if rand is not None:
    starts = (_as_int64(rand, xp) % xp.maximum(length - window, 1))[:1]
  else:
    starts = window_starts(xp.maximum(length - window, 0) + 1, num_clips, placement, xp=xp)
  steps = xp.arange(num_frames, dtype=xp.int64) * frame_interval
  return (starts[:, None] + steps[None, :]) % length


def sample_linspace_indices(length, num_frames: int, window=0, *, rand=None, num_clips: int = 1,
                            placement: str = "centre", xp=np):
  """`num_frames` frames at floor(linspace(start, start + w - 1)) of a w-frame window.

  w = min(window, length), or length where window is 0 (PaddleVideo linspace_sample
  after its pyav window; mx-mark TemporalRandomCrop + linspace).
  """
  length = _as_int64(length, xp)
  window = _as_int64(window, xp)
  width = xp.where(window > 0, xp.minimum(window, length), length)
  num_starts = length - width + 1
  if rand is not None:
    starts = (_as_int64(rand, xp) % num_starts)[:1]
  else:
    starts = window_starts(num_starts, num_clips, placement, xp=xp)
  steps = xp.arange(num_frames, dtype=xp.int64)
  return starts[:, None] + (steps[None, :] * (width - 1)) // max(num_frames - 1, 1)


def window_starts(num_starts, num_clips: int, placement: str, xp=np):
  """First frames `[num_clips]` of test windows, given `num_starts` >= 1 valid starts."""
  if placement not in PLACEMENTS:
    raise VidtxError(f"test window placement {placement!r} is not one of {PLACEMENTS}")
  num_starts = _as_int64(num_starts, xp)
  clips = xp.arange(num_clips, dtype=xp.int64)
  if placement == "centre":
    return ((2 * clips + 1) * num_starts) // (2 * num_clips)
  return (clips * (num_starts - 1)) // max(num_clips - 1, 1)


def _as_int64(x, xp):
  return xp.asarray(x, dtype=xp.int64)


def _check_mode(mode: str) -> None:
  if mode not in MODES:
    raise VidtxError(f"data.sampling {mode!r} is not one of {MODES}")
