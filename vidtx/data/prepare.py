"""Video files -> prepared dataset: parallel, resumable, never stopped by one bad video.

`decode_video` turns one file into upright, resized JPEG frames. `prepare_dataset` writes
splits of `VideoEntry`s in the format of `vidtx.data.format`:

    <out>/vidtx-<split>.tfrecord-*      the shards (videos that decoded)
    <out>/frame_index/<shard>.npz       where each JPEG lies in its shard (vidtx.data.frame_index)
    <out>/label_map.txt, dataset_info.json, features.json
    <out>/prepare_report.txt            every video that was skipped, and why
    <out>/prepare_info.json             how the dataset was made (source, settings, counts)
    <out>/.prepare/                     work in progress: one part + done-marker per shard,
                                        fatal.json (videos that hung or killed their worker
                                        process: they fail on redo without being decoded)

The shard plan is a pure function of the entries and settings, so re-running an
interrupted command redoes only the shards without a marker and ends with the
same bytes as an uninterrupted run.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import datetime
import functools
import hashlib
import json
import math
import multiprocessing
import os
import re
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import av
import numpy as np
import tensorflow as tf
from av.video.reformatter import VideoReformatter

from vidtx.data import format as data_format
from vidtx.data import frame_index
from vidtx.data.sources import Failure, VideoEntry  # noqa: F401  (part of this API too)
from vidtx.errors import VidtxError

REPORT_FILE = "prepare_report.txt"
WORK_DIR = ".prepare"
# In the work dir: videos whose worker hung (and was killed) or died on them (path -> reason).
_FATAL_FILE = "fatal.json"
# A worker this long past video_timeout on one video is stuck in C code, where no deadline stops it.
_HANG_GRACE = 30.0
# Bump when the bytes written for the same input and settings change: stale markers then redo.
_PLAN_VERSION = 3
# A stream that yields fewer frames than this share of what its header promises is truncated.
_TRUNCATED_SHARE = 0.9


class VideoError(VidtxError):
  """A video file that cannot be used; `reason` says why (the message also names the file)."""

  def __init__(self, path: str, reason: str):
    super().__init__(f"{path}: {reason}")
    self.path = path
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class DecodedVideo:
  """One decoded video: `jpeg_frames` in display order at `fps`, each `height` x `width`."""
  jpeg_frames: list[bytes]
  fps: float
  height: int
  width: int
  codec: str


# ----------------------------------------------------------------------------- decoding
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
  if not os.path.exists(path):
    raise VideoError(path, "no such file")
  if os.path.isdir(path):
    raise VideoError(path, "is a directory, not a video file")
  if os.path.getsize(path) == 0:
    raise VideoError(path, "empty file (0 bytes)")


def _ffmpeg_reason(error: Exception) -> str:
  return getattr(error, "strerror", None) or str(error)


class _FrameEncoder:
  """Resizes decoded frames to the output size, turns them upright and encodes them as JPEG.

  The size and the rotation come from the first frame (its display matrix, as a player
  shows it) and the stream's sample aspect ratio; a frame that resampling repeats is
  encoded once.
  """

  def __init__(self, stream, short_side: int | None, quality: int):
    self.stream, self.short_side, self.quality = stream, short_side, quality
    self.reformatter = VideoReformatter()  # keeps its scaler between frames: much faster
    self.size = None  # (width, height, interpolation) as displayed
    self.turns = 0  # quarter turns counter-clockwise from stored to displayed
    self.last = (-1, b"")  # (source index, JPEG)

  def __call__(self, frame, index: int) -> bytes:
    if self.last[0] == index:
      return self.last[1]
    if self.size is None:
      sar = self.stream.codec_context.sample_aspect_ratio
      display_width = round(frame.width * float(sar)) if sar and float(sar) > 0 else frame.width
      self.turns = round(frame.rotation / 90) % 4  # FFmpeg's rotation is counter-clockwise
      shown = (frame.height, display_width) if self.turns % 2 else (display_width, frame.height)
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
    self.last = (index, tf.io.encode_jpeg(rgb, quality=self.quality).numpy())
    return self.last[1]


def decode_video(path: str, *, short_side: int | None = 256, fps: float | None = None,
                 max_frames: int | None = None, jpeg_quality: int = 90,
                 timeout: float | None = None) -> DecodedVideo:
  """Decodes `path` to JPEG frames as a player shows them, the short side resized to `short_side`.

  Frames are turned upright by the display matrix (phone videos stored landscape
  with a rotation come out portrait). `fps`: resample to this frame rate by
  timestamp (output frame k shows the source frame on screen at k / fps; None
  keeps every frame at the source rate). `max_frames`: keep at most this many
  output frames. `timeout`: give up after this many seconds (checked between
  frames; None or 0: no limit). Raises `VideoError` (a `VidtxError`) for a
  missing, empty, truncated or undecodable file, one without video frames, or
  one that takes too long.
  """
  path = os.fspath(path)
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
    encode = _FrameEncoder(stream, short_side, jpeg_quality)
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
    return DecodedVideo(jpeg_frames=jpegs, fps=float(fps or rate), height=height, width=width,
                        codec=stream.codec_context.name)


# ----------------------------------------------------------------------------- the plan
@dataclasses.dataclass(frozen=True)
class _Settings:
  short_side: int | None
  fps: float | None
  max_frames: int | None
  jpeg_quality: int
  class_names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _Shard:
  split: str
  index: int
  entries: tuple[VideoEntry, ...]
  fingerprint: str


def _sha256(obj) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _id_order(entry: VideoEntry) -> tuple[str, str]:
  # Hash order spreads the classes over the shards (a sorted list would give one-class shards).
  return hashlib.sha256(entry.video_id.encode()).hexdigest(), entry.path


def _plan_shards(split: str, entries: Sequence[VideoEntry], settings: _Settings, *,
                videos_per_shard: int, num_shards: int | None = None) -> list[_Shard]:
  """The shards of one split: entries in hash-of-id order, cut into contiguous runs."""
  ordered = sorted(entries, key=_id_order)
  if not ordered:
    return []
  count = num_shards or -(-len(ordered) // videos_per_shard)
  count = max(1, min(count, len(ordered)))
  bounds = [round(i * len(ordered) / count) for i in range(count + 1)]
  shards = []
  for i in range(count):
    chunk = tuple(ordered[bounds[i]:bounds[i + 1]])
    fingerprint = _sha256({
        "version": _PLAN_VERSION, "settings": dataclasses.asdict(settings), "split": split,
        "entries": [[e.path, e.label, e.video_id] for e in chunk]})
    shards.append(_Shard(split, i, chunk, fingerprint))
  return shards


def _part_path(work_dir: str, shard: _Shard) -> str:
  return os.path.join(work_dir, f"{shard.split}-{shard.index:05d}.tfrecord")


def _marker_path(work_dir: str, shard: _Shard) -> str:
  return os.path.join(work_dir, f"{shard.split}-{shard.index:05d}.json")


def _write_json(path: str, obj) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


def _read_json(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _completed_marker(work_dir: str, shard: _Shard) -> dict | None:
  """The done-marker of `shard` if it belongs to this plan and its part is intact."""
  marker = _read_json(_marker_path(work_dir, shard))
  if not marker or marker.get("fingerprint") != shard.fingerprint:
    return None
  if marker["count"] == 0:
    return marker
  part = _part_path(work_dir, shard)
  if (os.path.exists(part) and os.path.getsize(part) == marker["bytes"]
      and os.path.exists(frame_index.index_path(part))):
    return marker
  return None


# ----------------------------------------------------------------------------- one shard
@functools.lru_cache(maxsize=4)
def _features(class_names: tuple[str, ...]):
  return data_format.features(class_names)


def _run_shard(shard: _Shard, settings: _Settings, work_dir: str, video_timeout: float | None,
               fatal: Mapping[str, str], on_start: Callable[[str], None],
               on_done: Callable[[bool], None]) -> dict:
  """Decodes the videos of `shard`, writes its part atomically, then its done-marker.

  `fatal`: path -> reason of videos that hung or killed a worker before; they fail without
  decoding.
  `on_start(path)` and `on_done(ok)` tell the progress of each video.
  """
  spec = _features(settings.class_names)
  failures, codecs, frames = [], collections.Counter(), []

  def fail(entry, reason):
    failures.append(dataclasses.asdict(Failure(shard.split, entry.video_id, entry.path, reason)))
    on_done(False)

  def records():
    for entry in shard.entries:
      if entry.path in fatal:
        fail(entry, fatal[entry.path])
        continue
      on_start(entry.path)
      try:
        video = decode_video(entry.path, short_side=settings.short_side, fps=settings.fps,
                             max_frames=settings.max_frames, jpeg_quality=settings.jpeg_quality,
                             timeout=video_timeout)
      except Exception as e:  # pylint: disable=broad-except  (one bad file never stops the run)
        fail(entry, e.reason if isinstance(e, VideoError) else f"{type(e).__name__}: {e}")
        continue
      codecs[video.codec] += 1
      frames.append(len(video.jpeg_frames))
      on_done(True)
      yield data_format.serialize_example(spec, jpeg_frames=video.jpeg_frames, label=entry.label,
                                          video_id=entry.video_id, fps=video.fps)

  part = _part_path(work_dir, shard)
  count = data_format.write_shard(part, records())
  frame_index.write(part)
  marker = {"fingerprint": shard.fingerprint, "split": shard.split, "index": shard.index,
            "count": count, "bytes": os.path.getsize(part), "failures": failures,
            "codecs": dict(codecs), "frames": frames}
  _write_json(_marker_path(work_dir, shard), marker)
  return marker


_worker_queue = None


def _init_worker(progress_queue) -> None:
  global _worker_queue
  _worker_queue = progress_queue
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the workers
  tf.config.threading.set_intra_op_parallelism_threads(1)  # one process per core already
  tf.config.threading.set_inter_op_parallelism_threads(1)


def _run_shard_in_worker(shard: _Shard, settings: _Settings, work_dir: str,
                         video_timeout: float | None, fatal: Mapping[str, str]) -> dict:
  """_run_shard in a worker: progress messages are ("start", pid, path) and ("done", pid, ok)."""
  pid = os.getpid()
  return _run_shard(shard, settings, work_dir, video_timeout, fatal,
                    on_start=lambda path: _worker_queue.put(("start", pid, path)),
                    on_done=lambda ok: _worker_queue.put(("done", pid, ok)))


# ----------------------------------------------------------------------------- progress
class _Progress:
  """One status line on stderr: done/total, failures, videos/s, ETA (redrawn on a terminal)."""

  def __init__(self, total: int, already: int, enabled: bool):
    self.total, self.done, self.failed = total, already, 0
    self.enabled = enabled
    self.tty = sys.stderr.isatty()
    self.first = None  # (time, done) at the first video of this run: worker start-up is not speed
    self.last_print = time.monotonic()

  def update(self, ok: bool) -> None:
    self.done += 1
    self.failed += not ok
    if self.first is None:
      self.first = (time.monotonic(), self.done)
    self.show()

  def rewind(self, done: int, failed: int) -> None:
    """Back to these counts when unfinished shards start over; the speed is measured anew."""
    self.done, self.failed, self.first = done, failed, None

  def line(self) -> str:
    rate = 0.0
    if self.first is not None and self.done > self.first[1]:
      rate = (self.done - self.first[1]) / max(time.monotonic() - self.first[0], 1e-9)
    eta = str(datetime.timedelta(seconds=round((self.total - self.done) / rate))) if rate else "?"
    return (f"prepare: {self.done}/{self.total} videos ({self.failed} failed), "
            f"{rate:.1f} videos/s, ETA {eta}")

  def show(self, force: bool = False) -> None:
    if not self.enabled:
      return
    now = time.monotonic()
    if not force and now - self.last_print < (0.5 if self.tty else 10.0):
      return
    self.last_print = now
    print(("\r" + self.line()) if self.tty else self.line(), end="" if self.tty else "\n",
          file=sys.stderr, flush=True)

  def close(self) -> None:
    if self.enabled:
      self.show(force=True)
      if self.tty:
        print(file=sys.stderr)


def _say(message: str, enabled: bool = True) -> None:
  if enabled:
    print(message, file=sys.stderr, flush=True)


def _completed_markers(work_dir: str, shards: Sequence[_Shard]) -> dict[tuple[str, int], dict]:
  """The done-markers of those of `shards` that are complete, by (split, index)."""
  markers = {}
  for shard in shards:
    marker = _completed_marker(work_dir, shard)
    if marker is not None:
      markers[(shard.split, shard.index)] = marker
  return markers


def _run_shards(shards: Sequence[_Shard], settings: _Settings, work_dir: str, workers: int | None,
                video_timeout: float | None, progress: _Progress) -> dict[tuple[str, int], dict]:
  """Runs the shards in this process (workers=None) or in `workers` worker processes.

  Returns their markers.

  A worker that dies on a video (a decoder crash, the kernel's OOM killer) or stays on one
  video_timeout + _HANG_GRACE seconds (and is killed) loses that video: it is recorded in
  fatal.json and the unfinished shards start over without it.
  """
  fatal_path = os.path.join(work_dir, _FATAL_FILE)
  fatal = _read_json(fatal_path) or {}
  if workers is None:
    return {(shard.split, shard.index): _run_shard(shard, settings, work_dir, video_timeout, fatal,
                                                    on_start=lambda path: None,
                                                    on_done=progress.update)
            for shard in shards}
  markers, todo = {}, list(shards)
  while True:
    new_markers, lost = _run_pool(todo, settings, work_dir, workers, video_timeout, fatal,
                                  progress)
    markers.update(new_markers)
    if not lost:
      return markers
    fatal.update(lost)  # lost videos are new ones (fatal ones are never decoded): this loop ends
    _write_json(fatal_path, fatal)
    markers.update(_completed_markers(work_dir, todo))  # finished as the pool broke
    todo = [s for s in todo if (s.split, s.index) not in markers]
    progress.close()
    for video, reason in lost.items():
      _say(f"warning: {video}: {reason}. The {len(todo)} unfinished shard(s) start over "
           "without it.", progress.enabled)
    progress.rewind(done=progress.total - sum(len(s.entries) for s in todo),
                    failed=sum(len(m["failures"]) for m in markers.values()))


# The signal that ended a worker -> the likely cause, for the report.
_SIGNAL_CAUSES = {signal.SIGKILL: "out of memory?", signal.SIGSEGV: "decoder crash",
                  signal.SIGBUS: "decoder crash", signal.SIGILL: "decoder crash",
                  signal.SIGFPE: "decoder crash", signal.SIGABRT: "decoder crash"}


def _how_it_died(exitcode: int) -> str:
  """multiprocessing's exit code in words: -9 -> 'killed by signal 9, SIGKILL: out of memory?'."""
  if exitcode >= 0:
    return f"exited with code {exitcode}"
  try:
    name = signal.Signals(-exitcode).name
  except ValueError:
    return f"killed by signal {-exitcode}"
  cause = _SIGNAL_CAUSES.get(-exitcode)
  return f"killed by signal {-exitcode}, {name}" + (f": {cause}" if cause else "")


def _videos_lost(exitcodes: Mapping[int, int | None], decoding: Mapping[int, str],
                 hung: Mapping[int, str], hang_reason: str) -> tuple[dict[str, str], list[str]]:
  """After a pool broke: the videos its dead workers were on, and how the others died.

  `exitcodes`: pid -> exit code of every worker once joined (negative: the signal);
  `decoding`: pid -> the video a worker started and did not finish; `hung`: pid -> the
  video of the worker the watchdog killed. Returns (video -> reason, how each dead
  worker that was on no video died). The broken pool stops the survivors with SIGTERM.
  """
  lost, unexplained = {}, []
  for pid, code in sorted(exitcodes.items()):
    if pid in hung:
      lost[hung[pid]] = hang_reason
    elif code is None or code == -signal.SIGTERM:
      continue
    elif pid in decoding:
      lost[decoding[pid]] = f"the worker decoding it died ({_how_it_died(code)})"
    else:
      unexplained.append(_how_it_died(code))
  return lost, unexplained


def _run_pool(shards: Sequence[_Shard], settings: _Settings, work_dir: str, workers: int,
              video_timeout: float | None, fatal: Mapping[str, str],
              progress: _Progress) -> tuple[dict[tuple[str, int], dict], dict[str, str]]:
  """Runs `shards` in a pool of worker processes; returns their markers and the videos lost.

  No video is lost when every shard is done. Otherwise a worker died on each lost video
  (path -> reason), or the watchdog killed it there; that broke the pool: the other
  workers were stopped and their shards left unfinished. A pool that breaks with no
  video to blame (a worker died between videos) is an error; re-running resumes.
  """
  # forkserver: workers start from a clean process with TensorFlow imported once, never a
  # fork of a caller that may already run TensorFlow or JAX threads.
  if "forkserver" in multiprocessing.get_all_start_methods():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
  else:
    context = multiprocessing.get_context("spawn")
  # SimpleQueue.put writes before it returns (Queue's thread may not): a worker that crashes
  # right after ("start", pid, path) has still told which video it was on.
  progress_queue = context.SimpleQueue()
  pool = concurrent.futures.ProcessPoolExecutor(
      max_workers=workers, mp_context=context, initializer=_init_worker,
      initargs=(progress_queue,))
  started = {}  # worker pid -> (video, when the parent heard that it started)

  def drain():
    while not progress_queue.empty():
      kind, pid, value = progress_queue.get()
      if kind == "start":
        started[pid] = (value, time.monotonic())
      else:
        started.pop(pid, None)  # a fatal video fails without a start
        progress.update(value)

  markers, hung, broken = {}, {}, None  # hung: pid -> video of the worker the watchdog killed
  try:
    futures = {pool.submit(_run_shard_in_worker, shard, settings, work_dir, video_timeout,
                           fatal): shard for shard in shards}
    remaining = set(futures)
    while remaining:
      done, remaining = concurrent.futures.wait(
          remaining, timeout=0.25, return_when=concurrent.futures.FIRST_COMPLETED)
      drain()
      for future in done:
        shard = futures[future]
        try:
          markers[(shard.split, shard.index)] = future.result()
        except concurrent.futures.process.BrokenProcessPool as e:  # a worker died: see below
          broken = e
        except Exception as e:  # the worker could not write: keep what is done
          raise VidtxError(
              f"preparing shard {shard.index} of split {shard.split!r} failed "
              f"({type(e).__name__}: {e}); finished shards are kept, re-run the same command "
              "to resume") from e
      if video_timeout and broken is None and not hung:
        now = time.monotonic()
        for pid, (video, since) in started.items():
          if now - since > video_timeout + _HANG_GRACE:
            os.kill(pid, signal.SIGKILL)  # SIGTERM cannot stop a process stuck in C code
            hung[pid] = video
            break
    processes = dict(pool._processes or {})  # pylint: disable=protected-access  (shutdown drops)
    pool.shutdown(wait=True)  # joins the workers: their exit codes are final
    drain()
  except BaseException:
    # Stop now rather than after the running shards: their parts are written atomically.
    for process in list((pool._processes or {}).values()):  # pylint: disable=protected-access
      process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    raise
  finally:
    progress_queue.close()
  if broken is None:
    return markers, {}
  hang_reason = (f"decoder hung: no progress for {video_timeout + _HANG_GRACE:g} s; killed"
                 if hung else "")
  lost, unexplained = _videos_lost(
      {pid: process.exitcode for pid, process in processes.items()},
      {pid: video for pid, (video, _) in started.items()}, hung, hang_reason)
  if not lost:
    died = "a worker process died" + (f" ({'; '.join(unexplained)})" if unexplained else "")
    raise VidtxError(f"{died} while on no video, so no video is to blame "
                     f"({type(broken).__name__}: {broken}); finished shards are kept, re-run the "
                     "same command to resume") from broken
  return markers, lost


# ----------------------------------------------------------------------------- finishing
def _vidtx_version() -> str:
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    return metadata.version("vidtx")
  except Exception:  # pylint: disable=broad-except
    return "unknown"


_SHARD_FILE = re.compile(rf"^{data_format.DATASET_NAME}-\w+\.tfrecord-\d{{5}}-of-\d{{5}}$")


def _write_report(path: str, failures: Sequence[dict], total: int) -> None:
  with open(path + ".tmp", "w") as f:
    if failures:
      f.write(f"# {len(failures)} of {total} videos were skipped\n")
      f.write("# split\tvideo_id\tpath\treason\n")
      for x in failures:
        f.write(f"{x['split']}\t{x['video_id']}\t{x['path']}\t{x['reason']}\n")
    else:
      f.write(f"# all {total} videos were prepared; none was skipped\n")
  os.replace(path + ".tmp", path)


def _split_summary(markers: Sequence[dict], known_failures: int) -> dict:
  frames = [n for m in markers for n in m["frames"]]
  summary = {"videos": sum(m["count"] for m in markers),
             "failed": sum(len(m["failures"]) for m in markers) + known_failures,
             "shards": sum(1 for m in markers if m["count"]),
             "bytes": sum(m["bytes"] for m in markers if m["count"])}
  if frames:
    summary.update(frames_min=min(frames), frames_max=max(frames),
                   frames_mean=round(float(np.mean(frames)), 2))
  return summary


def _finish(out_dir: str, work_dir: str, plan: Mapping[str, Sequence[_Shard]],
            markers: Mapping[tuple[str, int], dict], known: Sequence[Failure],
            info: dict, verbose: bool) -> dict:
  """Moves the non-empty parts (and their frame indexes) to their TFDS names; writes report,
  info, then metadata."""
  moves, split_sizes, splits_info, codecs, failures = [], {}, {}, collections.Counter(), []
  for split, shards in plan.items():
    split_markers = [markers[(split, s.index)] for s in shards]
    filled = [(s, m) for s, m in zip(shards, split_markers) if m["count"]]
    for i, (shard, _) in enumerate(filled):
      part, final = _part_path(work_dir, shard), data_format.shard_path(out_dir, split, i, len(filled))
      moves += [(part, final), (frame_index.index_path(part), frame_index.index_path(final))]
    if filled:
      split_sizes[split] = ([m["count"] for _, m in filled], sum(m["bytes"] for _, m in filled))
    splits_info[split] = _split_summary(split_markers, sum(f.split == split for f in known))
    for m in split_markers:
      codecs.update(m["codecs"])
      failures.extend(m["failures"])
  failures.extend(dataclasses.asdict(f) for f in known)
  total = sum(len(s.entries) for shards in plan.values() for s in shards) + len(known)

  # Interrupted after this point, a re-run moves the shards back first (see _recover).
  _write_json(os.path.join(work_dir, "finish.json"), {"moves": moves})
  targets = {final for _, final in moves}
  index_dir = os.path.join(out_dir, frame_index.INDEX_DIR)
  os.makedirs(index_dir, exist_ok=True)
  for folder, suffix in ((out_dir, ""), (index_dir, ".npz")):
    for name in os.listdir(folder):
      path = os.path.join(folder, name)
      if _SHARD_FILE.match(name.removesuffix(suffix)) and path not in targets:
        os.remove(path)  # a shard (or its index) of an earlier, different preparation
  for part, final in moves:
    if os.path.exists(part):
      os.replace(part, final)

  report = os.path.join(out_dir, REPORT_FILE)
  _write_report(report, failures, total)
  empty = sorted(split for split in plan if split not in split_sizes)
  info = dict(info, splits=splits_info, codecs=dict(sorted(codecs.items())),
              failed=len(failures), empty_splits=empty, report=REPORT_FILE)
  _write_json(os.path.join(out_dir, data_format.PREPARE_INFO_FILE), info)
  if not split_sizes:
    raise VidtxError(f"no video could be prepared into {out_dir} ({len(failures)} failed); "
                     f"the reasons are in {report}")
  for split in empty:
    _say(f"warning: split {split!r} has no usable video and is not written (see {report})",
         verbose)
  data_format.write_metadata(out_dir, info["class_names"], description=info["source"],
                             split_sizes=split_sizes)
  shutil.rmtree(work_dir, ignore_errors=True)
  return info


def _recover(out_dir: str, work_dir: str) -> None:
  """Undoes a finishing step that was interrupted: shards go back to their parts."""
  finish = _read_json(os.path.join(work_dir, "finish.json"))
  if not finish:
    return
  for part, final in finish["moves"]:
    if not os.path.exists(part) and os.path.exists(final):
      os.replace(final, part)
  os.remove(os.path.join(work_dir, "finish.json"))


def _already_prepared(out_dir: str, fingerprint: str) -> dict | None:
  """prepare_info.json of a complete dataset in `out_dir` made by this very plan, else None."""
  if not data_format.is_prepared(out_dir):
    return None
  info = data_format.read_prepare_info(out_dir)
  if info.get("fingerprint") != fingerprint:
    return None
  for split, summary in info["splits"].items():
    n = summary["shards"]
    if not all(os.path.exists(data_format.shard_path(out_dir, split, i, n)) for i in range(n)):
      return None
  return info


def _validate(splits: Mapping[str, Sequence[VideoEntry]], class_names: Sequence[str], *,
              short_side, fps, max_frames, jpeg_quality, video_timeout, videos_per_shard,
              num_shards) -> None:
  if not class_names:
    raise VidtxError("no class names: a dataset needs at least one class")
  duplicates = sorted(n for n, c in collections.Counter(class_names).items() if c > 1)
  if duplicates:
    raise VidtxError(f"class names must be unique; repeated: {duplicates}")
  bad = [n for n in class_names if not n or "\n" in n]
  if bad:
    raise VidtxError(f"class names must be non-empty single lines; got {bad!r}")
  if not splits:
    raise VidtxError("no splits to prepare")
  for split, entries in splits.items():
    if not re.fullmatch(r"[A-Za-z0-9_]+", split):
      raise VidtxError(f"split name {split!r} must be letters, digits or '_'")
    for e in entries:
      if not 0 <= e.label < len(class_names):
        raise VidtxError(f"{e.path}: label {e.label} is outside 0..{len(class_names) - 1}")
  if short_side is not None and short_side < 0:
    raise VidtxError(f"short_side must be positive (or 0 to keep the size), got {short_side}")
  if fps is not None and fps <= 0:
    raise VidtxError(f"fps must be positive, got {fps}")
  if max_frames is not None and max_frames < 1:
    raise VidtxError(f"max_frames must be at least 1, got {max_frames}")
  if not 1 <= jpeg_quality <= 100:
    raise VidtxError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
  if video_timeout is not None and video_timeout < 0:
    raise VidtxError(f"video_timeout must be positive (or 0 for no limit), got {video_timeout}")
  if videos_per_shard < 1 or (num_shards is not None and num_shards < 1):
    raise VidtxError("videos_per_shard and num_shards must be at least 1")


def default_workers() -> int:
  """All the CPU cores this process may use."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def prepare_dataset(out_dir: str, splits: Mapping[str, Sequence[VideoEntry]],
                    class_names: Sequence[str], *, short_side: int | None = 256,
                    fps: float | None = None, max_frames: int | None = None,
                    jpeg_quality: int = 90, workers: int | None = None,
                    video_timeout: float | None = 300, videos_per_shard: int = 32,
                    num_shards: int | None = None,
                    source: str = "", details: Mapping | None = None,
                    failures: Sequence[Failure] = (), command: str | None = None,
                    overwrite: bool = False, verbose: bool = True) -> dict:
  """Decodes every entry of `splits` and writes a prepared dataset to `out_dir`.

  `splits`: split name -> videos; labels index `class_names` (one label map for all
  splits). `failures`: videos already known to be unusable (e.g. clips missing from a
  download), reported like decoding failures. `videos_per_shard` (or `num_shards`
  per split) sets the shard size; one worker process writes one shard at a time
  (`workers=1`: in this process). `video_timeout`: seconds one video may take (None
  or 0: no limit); a worker process stuck in the decoder longer than that is killed
  and its video fails, as does a video on which a worker process dies (a decoder
  crash, the OOM killer): the run goes on without it. A video that fails is skipped
  and listed in prepare_report.txt. Re-running after an interruption keeps the
  finished shards. Returns the contents of prepare_info.json.
  """
  _validate(splits, class_names, short_side=short_side, fps=fps, max_frames=max_frames,
            jpeg_quality=jpeg_quality, video_timeout=video_timeout,
            videos_per_shard=videos_per_shard, num_shards=num_shards)
  settings = _Settings(short_side or None, float(fps) if fps else None, max_frames,
                       int(jpeg_quality), tuple(class_names))
  known = list(failures)
  plan = {}
  for split, entries in splits.items():
    unique, seen = [], {}
    for e in entries:
      e = dataclasses.replace(e, path=os.path.abspath(e.path))
      if e.video_id in seen:
        known.append(Failure(split, e.video_id, e.path,
                             f"duplicate video id (also {seen[e.video_id]}); the first is kept"))
        continue
      seen[e.video_id] = e.path
      unique.append(e)
    plan[split] = _plan_shards(split, unique, settings, videos_per_shard=videos_per_shard,
                               num_shards=num_shards)
  fingerprint = _sha256({"shards": {s: [x.fingerprint for x in v] for s, v in plan.items()},
                         "known": sorted(dataclasses.astuple(f) for f in known)})

  done = _already_prepared(out_dir, fingerprint)
  if done is not None:
    _say(f"{out_dir} is already prepared with these videos and settings; nothing to do", verbose)
    return done
  if data_format.is_prepared(out_dir):
    if not overwrite:
      raise VidtxError(
          f"{out_dir} already holds a prepared dataset made from other videos or settings; "
          "choose another output directory or pass overwrite (--overwrite) to replace it")
    for name in ("dataset_info.json", "features.json", data_format.LABEL_MAP_FILE,
                 data_format.PREPARE_INFO_FILE):
      if os.path.exists(os.path.join(out_dir, name)):
        os.remove(os.path.join(out_dir, name))

  work_dir = os.path.join(out_dir, WORK_DIR)
  os.makedirs(work_dir, exist_ok=True)
  _recover(out_dir, work_dir)
  shards = [s for split_shards in plan.values() for s in split_shards]
  markers = _completed_markers(work_dir, shards)
  todo = [s for s in shards if (s.split, s.index) not in markers]
  total = sum(len(s.entries) for s in shards)
  # One worker runs in this process; more run in worker processes (a pool of one where only
  # one shard is left), where a decoder that hangs or crashes loses one video, not the run.
  in_process = (workers or default_workers()) == 1
  workers = max(1, min(workers or default_workers(), len(todo)))
  if markers:
    _say(f"resuming: {len(markers)} of {len(shards)} shards are already done", verbose)
  sizes = ", ".join(f"{k}: {sum(len(s.entries) for s in v)}" for k, v in plan.items())
  _say(f"preparing {total} videos ({len(class_names)} classes; {sizes}) into {out_dir} "
       f"with {workers} worker(s)", verbose)
  progress = _Progress(total, total - sum(len(s.entries) for s in todo), verbose)
  start = time.monotonic()
  try:
    markers.update(_run_shards(todo, settings, work_dir, None if in_process else workers,
                               video_timeout, progress))
  except KeyboardInterrupt:
    progress.close()
    _say("interrupted: finished shards are kept; re-run the same command to resume", verbose)
    raise
  progress.close()
  elapsed = time.monotonic() - start

  info = {
      "source": source, "details": dict(details or {}),
      "short_side": settings.short_side, "fps": settings.fps, "max_frames": max_frames,
      "jpeg_quality": settings.jpeg_quality, "num_classes": len(class_names),
      "class_names": list(class_names),
      "command": command if command is not None else shlex.join(sys.argv),
      "vidtx_version": _vidtx_version(),
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "workers": workers, "video_timeout": video_timeout or None, "seconds": round(elapsed, 1),
      "fingerprint": fingerprint,
  }
  info = _finish(out_dir, work_dir, plan, markers, known, info, verbose)
  summary = ", ".join(f"{k}: {v['videos']} videos" + (f" ({v['failed']} failed)" if v["failed"] else "")
                      for k, v in info["splits"].items())
  skipped = f"; skipped videos are listed in {os.path.join(out_dir, REPORT_FILE)}" if info["failed"] else ""
  done_now = sum(len(s.entries) for s in todo)
  _say(f"prepared {out_dir}: {summary}; {len(todo)} shard(s), {done_now} videos in {elapsed:.1f}s "
       f"({done_now / max(elapsed, 1e-9):.2f} videos/s with {workers} worker(s)){skipped}", verbose)
  return info
