"""One video file -> its frames as a player shows them: upright, resampled, resized, JPEG.

PyAV decodes; the display matrix turns phone videos upright; `pixel_aspect='apply'` stretches
frames by the sample aspect ratio to the displayed width ('ignore', the default, keeps the
stored pixel grid, as the seeds' decoders do); `fps` resamples by timestamp; the short side
is resized;
every kept frame is encoded as JPEG (what a prepared dataset stores, and what
predict.py feeds the eval views; PNG where a converted checkpoint decodes as its seed), with the facts a seed's test protocol needs
(`protocol.Source`: frame size before the resize, frame rate, stream duration, timestamps).
Used by `vidtx.data.prepare` and predict.py.
"""
from __future__ import annotations

import dataclasses
import errno
import math
import os
import stat
import sys
import time

import av
import numpy as np
import tensorflow as tf
from av.video.reformatter import VideoReformatter

from vidtx.data import protocol
from vidtx.errors import VidtxError

# A stream that yields fewer frames than this share of what its header promises is truncated.
_TRUNCATED_SHARE = 0.9
PIXEL_ASPECTS = ("ignore", "apply")


class VideoError(VidtxError):
  """A video file that cannot be used; `reason` says why (the message also names the file)."""

  def __init__(self, path: str, reason: str):
    super().__init__(f"{path}: {reason}")
    self.path = path
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class DecodedVideo:
  """One decoded video: `jpeg_frames` (JPEG, or PNG where decoded lossless) in display order at `fps`, each `height` x `width`;
  `source`: what the source's decoder knew (for the test protocols)."""
  jpeg_frames: list[bytes]
  fps: float
  height: int
  width: int
  codec: str
  source: protocol.Source


def output_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
  """(width, height) with the short side scaled to `short_side` (None or 0: unchanged)."""
  if not short_side:
    return width, height
  if width <= height:
    return short_side, max(1, round(height * short_side / width))
  return max(1, round(width * short_side / height)), short_side


def frames_before(start: float, fps: float, t: float) -> int:
  """How many output frames at `fps`, the first at time `start`, come before time `t`."""
  return max(0, math.ceil((t - start) * fps - 1e-6))


def _stream_rate(stream) -> float | None:
  for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
    if rate and float(rate) > 0:
      return float(rate)
  return None


def _check_file(path: str) -> None:
  try:
    status = os.stat(path)
  except FileNotFoundError:
    if os.path.islink(path):
      raise VideoError(path, f"a broken symbolic link (to {os.readlink(path)})") from None
    raise VideoError(path, "no such file") from None
  except OSError as e:
    if e.errno == errno.ELOOP:
      raise VideoError(path, "a symbolic link loop (it leads back to itself)") from None
    raise VideoError(path, f"cannot be read ({e.strerror})") from None
  mode = status.st_mode
  if stat.S_ISDIR(mode):
    raise VideoError(path, "is a directory, not a video file")
  if not stat.S_ISREG(mode):
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device")
    raise VideoError(path, f"is {kind}, not a video file")
  if status.st_size == 0:
    raise VideoError(path, "empty file (0 bytes)")


def _ffmpeg_reason(error: Exception) -> str:
  return getattr(error, "strerror", None) or str(error)


class _FrameEncoder:
  """Resizes decoded frames to the output size, turns them upright and encodes them as JPEG.

  The size and the rotation come from the first frame (its display matrix, as a player
  shows it) and the stream's sample aspect ratio; a frame that resampling repeats is
  encoded once.
  """

  def __init__(self, stream, short_side: int | None, quality: int | None, pixel_aspect: str):
    self.stream, self.short_side, self.quality = stream, short_side, quality
    self.pixel_aspect = pixel_aspect
    self.shown = None  # (width, height) upright, before the short-side resize
    self.reformatter = VideoReformatter()  # keeps its scaler between frames: much faster
    self.size = None  # (width, height, interpolation) as displayed
    self.turns = 0  # quarter turns counter-clockwise from stored to displayed
    self.last = (-1, b"")  # (source index, JPEG)

  def __call__(self, frame, index: int) -> bytes:
    if self.last[0] == index:
      return self.last[1]
    if self.size is None:
      sar = self.stream.codec_context.sample_aspect_ratio
      stretch = self.pixel_aspect == "apply" and sar and float(sar) > 0
      display_width = round(frame.width * float(sar)) if stretch else frame.width
      self.turns = round(frame.rotation / 90) % 4  # FFmpeg's rotation is counter-clockwise
      shown = (frame.height, display_width) if self.turns % 2 else (display_width, frame.height)
      self.shown = shown
      width, height = output_size(*shown, self.short_side)
      # AREA filters properly when shrinking; when enlarging (UCF101's 240 -> 256) BILINEAR is
      # as good at such small factors and half the cost of BICUBIC.
      smaller = width * height < frame.width * frame.height
      self.size = (width, height, "AREA" if smaller else "BILINEAR")
    width, height, interpolation = self.size
    if self.turns % 2:  # scale in the stored orientation, then turn
      width, height = height, width
    rgb = self.reformatter.reformat(frame, width=width, height=height, format="rgb24",
                                    interpolation=interpolation).to_ndarray()
    rgb = np.rot90(rgb, self.turns)
    encoded = (tf.io.encode_png(rgb, compression=1) if self.quality is None  # lossless
               else tf.io.encode_jpeg(rgb, quality=self.quality))
    self.last = (index, encoded.numpy())
    return self.last[1]


def decode_video(path: str, *, short_side: int | None = 256, fps: float | None = None,
                 max_frames: int | None = None, jpeg_quality: int | None = 90,
                 timeout: float | None = None, pixel_aspect: str = "ignore") -> DecodedVideo:
  """Decodes `path` to JPEG frames as a player shows them, the short side resized to `short_side`.

  Frames are turned upright by the display matrix (phone videos stored landscape
  with a rotation come out portrait). `fps`: resample to this frame rate by
  timestamp (output frame k shows the source frame on screen at k / fps; None
  keeps every frame at the source rate). `max_frames`: keep at most this many
  output frames. `jpeg_quality` None: frames are kept lossless (PNG, which the
  views' JPEG decoder also reads), as a seed's decoder hands them on. `timeout`: give
  up after this many seconds (checked between frames; None or 0: no limit). `pixel_aspect`: 'ignore' keeps the stored pixel grid (the
  seeds' decoders: what their checkpoints saw), 'apply' stretches to the display aspect.
  Raises `VideoError` (a `VidtxError`) for a
  missing, empty, truncated or undecodable file, one without video frames, or
  one that takes too long.
  """
  path = os.fspath(path)
  if pixel_aspect not in PIXEL_ASPECTS:
    raise VidtxError(f"pixel_aspect={pixel_aspect!r} is not one of {PIXEL_ASPECTS}")
  _check_file(path)
  deadline = time.monotonic() + timeout if timeout else None
  try:
    container = av.open(path, metadata_errors="ignore")
  except (av.FFmpegError, OSError, ValueError) as e:
    raise VideoError(path, "cannot be opened as a video: not a video file, or truncated "
                     f"({_ffmpeg_reason(e)})") from None
  with container:
    if not container.streams.video:
      raise VideoError(path, "has no video stream")
    stream = container.streams.video[0]
    rate = _stream_rate(stream)
    encode = _FrameEncoder(stream, short_side, jpeg_quality, pixel_aspect)
    pts: list[int] = []  # timestamps of the kept frames (fps=None), in the stream's time base
    limit = max_frames or sys.maxsize
    jpegs: list[bytes] = []
    times: list[float] = []  # presentation time of every decoded frame
    held = None  # resampling: (frame, index) is shown until the next frame's time
    try:
      for index, frame in enumerate(container.decode(stream)):
        t = float(frame.time) if frame.time is not None else index / (rate or 25.0)
        if times and t <= times[-1]:  # a broken timestamp: step by the nominal rate instead
          t = times[-1] + 1.0 / (rate or 25.0)
        times.append(t)
        if fps is None:
          jpegs.append(encode(frame, index))
          pts.append(frame.pts if frame.pts is not None else index)
        elif held is not None:
          while len(jpegs) < min(frames_before(times[0], fps, t), limit):
            jpegs.append(encode(*held))
        held = (frame, index)
        if len(jpegs) >= limit:
          break
        if deadline is not None and time.monotonic() > deadline:
          raise VideoError(path, f"decoding took longer than {timeout:g} s (--video_timeout); "
                           "a slow or pathological file, or an overloaded machine")
    except av.FFmpegError as e:
      raise VideoError(path, f"decoding failed after {len(times)} frames, the file is truncated "
                       f"or corrupt ({_ffmpeg_reason(e)})") from None
    if not times:
      raise VideoError(path, "no frames could be decoded")
    stopped_early = len(jpegs) >= limit
    if not stopped_early and stream.frames and len(times) < _TRUNCATED_SHARE * stream.frames:
      raise VideoError(path, f"truncated: decoded {len(times)} of the {stream.frames} frames "
                       "in its header")
    if rate is None:  # no rate in the container: measure it
      span = times[-1] - times[0]
      rate = (len(times) - 1) / span if span > 0 else 25.0
    if fps is not None and not stopped_early:
      end = times[-1] + 1.0 / rate  # the last frame lasts one source frame period
      while len(jpegs) < min(frames_before(times[0], fps, end), limit):
        jpegs.append(encode(*held))
    width, height, _ = encode.size
    if fps is None:
      average = stream.average_rate
      rate_ratio = ((average.numerator, average.denominator) if average and average > 0
                       else protocol.rate_fraction(rate))
      source = protocol.Source(
          height=encode.shown[1], width=encode.shown[0], rate=rate_ratio,
          stream_duration=-1 if stream.duration is None else int(stream.duration),
          stream_frames=int(stream.frames or 0), pts=tuple(int(p) for p in pts))
    else:  # resampled: a constant-rate video at `fps`
      source = protocol.Source.fallback(len(jpegs), fps, encode.shown[1], encode.shown[0])
    return DecodedVideo(jpeg_frames=jpegs, fps=float(fps or rate), height=height, width=width,
                        codec=stream.codec_context.name, source=source)
