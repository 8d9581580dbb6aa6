"""Video files -> prepared dataset: parallel, resumable, never stopped by one bad video.

`prepare_dataset` writes splits of `VideoEntry`s in the format of `vidtx.data.format`, each
video decoded by `vidtx.data.decode`, the shards written by the worker processes of
`vidtx.data.workers`:

    <out>/vidtx-<split>.tfrecord-*      the shards (videos that decoded)
    <out>/frame_index/<shard>.npz       where each JPEG lies in its shard (vidtx.data.frame_index)
    <out>/label_map.txt, dataset_info.json, features.json
    <out>/prepare_report.txt            every video that was skipped, and why
    <out>/prepare_info.json             how the dataset was made (source, settings, counts)
    <out>/.prepare/                     work in progress: one part + done-marker per shard,
                                        fatal.json (videos that hung or killed their worker
                                        process: they fail on redo without being decoded)

The shards are written by the local pool of worker processes (`vidtx.data.workers`,
runner 'local') or by an Apache Beam pipeline (`vidtx.data.prepare_beam`, runner 'beam':
Flink, Spark, Dataflow), from the same plan and the same shard function, so both write the
same dataset. Paths may be local or anything tf.io.gfile reads (gs://, s3:// with a plugin).

The shard plan is a pure function of the entries and settings, so re-running an
interrupted command redoes only the shards without a marker and ends with the
same bytes as an uninterrupted run.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import functools
import hashlib
import json
import os
import re
import shlex
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from vidtx import messages
from vidtx.data import decode
from vidtx.data import format as data_format
from vidtx.data import frame_index, workers
from vidtx.data.sources import Failure, VideoEntry  # noqa: F401  (part of this API too)
from vidtx.errors import VidtxError

REPORT_FILE = "prepare_report.txt"
WORK_DIR = ".prepare"
# In the work dir: videos whose worker hung (and was killed) or died on them (path -> reason).
_FATAL_FILE = "fatal.json"
RUNNERS = ("local", "beam")
# Bump when the bytes written for the same input and settings change: stale markers then redo.
_PLAN_VERSION = 4


@dataclasses.dataclass(frozen=True)
class Settings:
  """How videos become a prepared dataset (the data_prep flags of the same names).

  short_side: frames resized so the short side has this many pixels (None or 0: as stored).
  fps: resampled to this frame rate (None: every frame). max_frames: at most this many per
  video (None: all). jpeg_quality: 1-100. pixel_aspect: 'ignore' keeps the stored pixel grid
  (as the seeds' decoders), 'apply' stretches frames to the display aspect. workers: worker
  processes (None: every core; 1: in this process, without the watchdog). runner: 'local' (that
  pool) or 'beam' (an Apache Beam pipeline; `beam_options`: its PipelineOptions flags). video_timeout: seconds one video may take (None or 0:
  no limit). videos_per_shard, or num_shards per split: the shard size. overwrite: replace a
  dataset in the output directory that was made from other videos or settings.
  """
  short_side: int | None = 256
  fps: float | None = None
  max_frames: int | None = None
  jpeg_quality: int = 90
  pixel_aspect: str = "ignore"
  workers: int | None = None
  video_timeout: float | None = 300
  videos_per_shard: int = 32
  num_shards: int | None = None
  overwrite: bool = False
  runner: str = "local"
  beam_options: str = ""

  def check(self) -> None:
    """A VidtxError naming the first bad setting."""
    if self.short_side is not None and self.short_side < 0:
      raise VidtxError(f"short_side must be positive (or 0 to keep the size), got {self.short_side}")
    if self.fps is not None and self.fps <= 0:
      raise VidtxError(f"fps must be positive, got {self.fps}")
    if self.max_frames is not None and self.max_frames < 1:
      raise VidtxError(f"max_frames must be at least 1, got {self.max_frames}")
    if not 1 <= self.jpeg_quality <= 100:
      raise VidtxError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
    if self.pixel_aspect not in decode.PIXEL_ASPECTS:
      raise VidtxError(f"pixel_aspect must be one of {decode.PIXEL_ASPECTS}, got "
                       f"{self.pixel_aspect!r}")
    if self.workers is not None and self.workers < 1:
      raise VidtxError(f"workers must be at least 1, got {self.workers}")
    if self.video_timeout is not None and self.video_timeout < 0:
      raise VidtxError(f"video_timeout must be positive (or 0 for no limit), got {self.video_timeout}")
    if self.videos_per_shard < 1 or (self.num_shards is not None and self.num_shards < 1):
      raise VidtxError("videos_per_shard and num_shards must be at least 1")
    if self.runner not in RUNNERS:
      raise VidtxError(f"runner must be one of {RUNNERS}, got {self.runner!r}")
    if self.beam_options and self.runner != "beam":
      raise VidtxError("beam_options are for runner 'beam' (--runner beam)")


# ----------------------------------------------------------------------------- the plan
@dataclasses.dataclass(frozen=True)
class _Frames:
  """What a shard's bytes depend on besides its videos (fingerprinted: field names included)."""
  short_side: int | None
  fps: float | None
  max_frames: int | None
  jpeg_quality: int
  pixel_aspect: str
  class_names: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _Shard:
  split: str
  index: int
  entries: tuple[VideoEntry, ...]
  fingerprint: str

  def __str__(self) -> str:
    return f"shard {self.index} of split {self.split!r}"


def _sha256(obj) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _absolute(path: str) -> str:
  """`path` made absolute where it is local; a URL (gs://...) as it is."""
  return path if "://" in path else os.path.abspath(path)


def _temporary(path: str) -> str:
  # Unique per writer: a Beam runner may run one shard twice at once (retries, backups).
  return f"{path}.tmp-{uuid.uuid4().hex[:12]}"


def _size(path: str) -> int:
  return tf.io.gfile.stat(path).length


def _id_order(entry: VideoEntry) -> tuple[str, str]:
  # Hash order spreads the classes over the shards (a sorted list would give one-class shards).
  return hashlib.sha256(entry.video_id.encode()).hexdigest(), entry.path


def _plan_shards(split: str, entries: Sequence[VideoEntry], frames: _Frames, *,
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
        "version": _PLAN_VERSION, "settings": dataclasses.asdict(frames), "split": split,
        "entries": [[e.path, e.label, e.video_id] for e in chunk]})
    shards.append(_Shard(split, i, chunk, fingerprint))
  return shards


def _part_path(work_dir: str, shard: _Shard) -> str:
  return os.path.join(work_dir, f"{shard.split}-{shard.index:05d}.tfrecord")


def _marker_path(work_dir: str, shard: _Shard) -> str:
  return os.path.join(work_dir, f"{shard.split}-{shard.index:05d}.json")


def _write_json(path: str, obj) -> None:
  tmp = _temporary(path)
  with tf.io.gfile.GFile(tmp, "w") as f:
    f.write(json.dumps(obj, indent=1, sort_keys=True) + "\n")
  tf.io.gfile.rename(tmp, path, overwrite=True)


def _read_json(path: str) -> dict | None:
  try:
    with tf.io.gfile.GFile(path) as f:
      return json.load(f)
  except (OSError, ValueError, tf.errors.OpError):
    return None


def _completed_marker(work_dir: str, shard: _Shard) -> dict | None:
  """The done-marker of `shard` if it belongs to this plan and its part is intact."""
  marker = _read_json(_marker_path(work_dir, shard))
  if not marker or marker.get("fingerprint") != shard.fingerprint:
    return None
  if marker["count"] == 0:
    return marker
  part = _part_path(work_dir, shard)
  if (tf.io.gfile.exists(part) and _size(part) == marker["bytes"]
      and tf.io.gfile.exists(frame_index.index_path(part))):
    return marker
  return None


# ----------------------------------------------------------------------------- one shard
@functools.lru_cache(maxsize=4)
def _features(class_names: tuple[str, ...]):
  return data_format.features(class_names)


@contextlib.contextmanager
def _local_copy(path: str):
  """`path` where PyAV can open it: a local path as it is, a URL (gs://...) copied to a temp file."""
  if "://" not in path:
    yield path
    return
  with tempfile.TemporaryDirectory() as folder:
    local = os.path.join(folder, os.path.basename(path))
    try:
      tf.io.gfile.copy(path, local)
    except tf.errors.NotFoundError:
      raise decode.VideoError(path, "file not found") from None
    except tf.errors.OpError as e:
      raise decode.VideoError(path, f"cannot be copied here ({e.message})") from None
    yield local


def _run_shard(shard: _Shard, skip: Mapping[str, str], report, *, frames: _Frames,
               work_dir: str, video_timeout: float | None) -> dict:
  """Decodes the videos of `shard`, writes its part atomically, then its done-marker.

  `skip`: path -> reason of videos that hung or killed a worker before; they fail without
  decoding. `report` hears of each video (see vidtx.data.workers).
  """
  spec = _features(frames.class_names)
  failures, codecs, frame_counts = [], collections.Counter(), []

  def fail(entry, reason):
    failures.append(dataclasses.asdict(Failure(shard.split, entry.video_id, entry.path, reason)))
    report.done(False)

  def records():
    for entry in shard.entries:
      if entry.path in skip:
        fail(entry, skip[entry.path])
        continue
      report.start(entry.path)
      try:
        with _local_copy(entry.path) as path:
          video = decode.decode_video(path, short_side=frames.short_side, fps=frames.fps,
                                      max_frames=frames.max_frames,
                                      jpeg_quality=frames.jpeg_quality, timeout=video_timeout,
                                      pixel_aspect=frames.pixel_aspect)
      except Exception as e:  # pylint: disable=broad-except  (one bad file never stops the run)
        fail(entry, e.reason if isinstance(e, decode.VideoError) else f"{type(e).__name__}: {e}")
        continue
      codecs[video.codec] += 1
      frame_counts.append(len(video.jpeg_frames))
      report.done(True)
      yield data_format.serialize_example(spec, jpeg_frames=video.jpeg_frames, label=entry.label,
                                          video_id=entry.video_id, fps=video.fps,
                                          source=video.source.to_json())

  part = _part_path(work_dir, shard)
  count = data_format.write_shard(part, records())
  frame_index.write(part)
  marker = {"fingerprint": shard.fingerprint, "split": shard.split, "index": shard.index,
            "count": count, "bytes": _size(part), "failures": failures,
            "codecs": dict(codecs), "frames": frame_counts}
  _write_json(_marker_path(work_dir, shard), marker)
  return marker


# Beam: attempts that died on one video before it is skipped (one may be a preemption or a kill).
DEATHS_TO_BLAME = 2


class _AttemptJournal:
  """Which video each attempt at one shard was on (a `_run_shard` report): under Beam a decoder
  that kills its worker cannot be caught, so the next attempt learns of it from here."""

  def __init__(self, work_dir: str, split: str, index: int):
    self.path = os.path.join(work_dir, f"{split}-{index:05d}.attempts.json")
    journal = _read_json(self.path) or {}
    self.died = dict(journal.get("died", {}))
    if journal.get("current"):  # the last attempt stopped while decoding it
      self.died[journal["current"]] = self.died.get(journal["current"], 0) + 1
      self._write(None)

  def blamed(self) -> dict[str, str]:
    """Videos to skip: path -> reason."""
    return {video: f"the worker decoding it died {n} times (Beam retried it)"
            for video, n in self.died.items() if n >= DEATHS_TO_BLAME}

  def _write(self, current: str | None) -> None:
    _write_json(self.path, {"current": current, "died": self.died})

  def start(self, video: str) -> None:
    self._write(video)

  def done(self, ok: bool) -> None:
    del ok

  def close(self) -> None:
    tf.io.gfile.remove(self.path)


def _write_shard_once(shard: _Shard, *, frames: _Frames, work_dir: str,
                      video_timeout: float | None, skip: Mapping[str, str]) -> None:
  """One Beam worker's job on one shard: write it unless an earlier attempt finished it."""
  if _completed_marker(work_dir, shard) is None:
    journal = _AttemptJournal(work_dir, shard.split, shard.index)
    _run_shard(shard, {**skip, **journal.blamed()}, journal, frames=frames, work_dir=work_dir,
               video_timeout=video_timeout)
    journal.close()


def _beam_worker_setup() -> None:
  try:
    _one_thread_per_worker()
  except RuntimeError:  # TensorFlow already running in this process (the in-process runner)
    pass


def _one_thread_per_worker() -> None:
  tf.config.threading.set_intra_op_parallelism_threads(1)  # one process per core already
  tf.config.threading.set_inter_op_parallelism_threads(1)


def _completed_markers(work_dir: str, shards: Sequence[_Shard]) -> dict[tuple[str, int], dict]:
  """The done-markers of those of `shards` that are complete, by (split, index)."""
  markers = {}
  for shard in shards:
    marker = _completed_marker(work_dir, shard)
    if marker is not None:
      markers[(shard.split, shard.index)] = marker
  return markers


def _run_shards(shards: Sequence[_Shard], frames: _Frames, work_dir: str, processes: int | None,
                video_timeout: float | None, status: messages.Status,
                warn: Callable[[str], None]) -> dict[tuple[str, int], dict]:
  """Runs the shards in this process (processes=None) or in worker processes; their markers.

  A video that hung or killed its worker is recorded in fatal.json: its shard starts over
  without it, and so does a re-run of the command.
  """
  fatal_path = os.path.join(work_dir, _FATAL_FILE)
  fatal = _read_json(fatal_path) or {}
  counts = collections.defaultdict(lambda: [0, 0])  # shard -> [videos done, failed] this try

  def on_done(index, ok):
    counts[index][0] += 1
    counts[index][1] += not ok
    status.update(advance=1, extra=f"{sum(c[1] for c in counts.values())} failed")

  def on_lost(index, video, reason):
    _write_json(fatal_path, fatal)  # `fatal` holds the video already
    status.close()
    warn(f"{video}: {reason}. Its shard starts over without it.")
    status.restart_rate(status.done - counts.pop(index, [0, 0])[0])

  run = functools.partial(_run_shard, frames=frames, work_dir=work_dir,
                          video_timeout=video_timeout)
  done = workers.run_shards(shards, run, processes=processes, video_timeout=video_timeout,
                            skip=fatal, on_done=on_done, on_lost=on_lost,
                            worker_setup=_one_thread_per_worker)
  return {(shard.split, shard.index): marker for shard, marker in zip(shards, done)}


# ----------------------------------------------------------------------------- finishing
def _vidtx_version() -> str:
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    return metadata.version("vidtx")
  except Exception:  # pylint: disable=broad-except
    return "unknown"


_SHARD_FILE = re.compile(rf"^{data_format.DATASET_NAME}-\w+\.tfrecord-\d{{5}}-of-\d{{5}}$")


def _write_report(path: str, failures: Sequence[dict], total: int) -> None:
  tmp = _temporary(path)
  with tf.io.gfile.GFile(tmp, "w") as f:
    if failures:
      f.write(f"# {len(failures)} of {total} videos were skipped\n")
      f.write("# split\tvideo_id\tpath\treason\n")
      for x in failures:
        f.write(f"{x['split']}\t{x['video_id']}\t{x['path']}\t{x['reason']}\n")
    else:
      f.write(f"# all {total} videos were prepared; none was skipped\n")
  tf.io.gfile.rename(tmp, path, overwrite=True)


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
            info: dict, warn: Callable[[str], None]) -> dict:
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
  tf.io.gfile.makedirs(index_dir)
  for folder, suffix in ((out_dir, ""), (index_dir, ".npz")):
    for name in tf.io.gfile.listdir(folder):
      path = os.path.join(folder, name)
      if _SHARD_FILE.match(name.removesuffix(suffix)) and path not in targets:
        tf.io.gfile.remove(path)  # a shard (or its index) of an earlier, different preparation
  for part, final in moves:
    if tf.io.gfile.exists(part):
      tf.io.gfile.rename(part, final, overwrite=True)

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
    warn(f"split {split!r} has no usable video and is not written (see {report})")
  data_format.write_metadata(out_dir, info["class_names"], description=info["source"],
                             split_sizes=split_sizes)
  tf.io.gfile.rmtree(work_dir)
  return info


def _recover(out_dir: str, work_dir: str) -> None:
  """Undoes a finishing step that was interrupted: shards go back to their parts."""
  finish = _read_json(os.path.join(work_dir, "finish.json"))
  if not finish:
    return
  for part, final in finish["moves"]:
    if not tf.io.gfile.exists(part) and tf.io.gfile.exists(final):
      tf.io.gfile.rename(final, part, overwrite=True)
  tf.io.gfile.remove(os.path.join(work_dir, "finish.json"))


def _already_prepared(out_dir: str, fingerprint: str) -> dict | None:
  """prepare_info.json of a complete dataset in `out_dir` made by this very plan, else None."""
  if not _is_prepared(out_dir):
    return None
  info = data_format.read_prepare_info(out_dir)
  if info.get("fingerprint") != fingerprint:
    return None
  for split, summary in info["splits"].items():
    n = summary["shards"]
    if not all(tf.io.gfile.exists(data_format.shard_path(out_dir, split, i, n)) for i in range(n)):
      return None
  return info


def _is_prepared(out_dir: str) -> bool:
  """data_format.is_prepared, for any path tf.io.gfile reads."""
  return all(tf.io.gfile.exists(os.path.join(out_dir, name))
             for name in ("dataset_info.json", data_format.LABEL_MAP_FILE))


def _check_splits(splits: Mapping[str, Sequence[VideoEntry]], class_names: Sequence[str]) -> None:
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


def _quiet(text: str) -> None:
  del text


def prepare_dataset(out_dir: str, splits: Mapping[str, Sequence[VideoEntry]],
                    class_names: Sequence[str], settings: Settings = Settings(), *,
                    failures: Sequence[Failure] = (), source: str = "",
                    details: Mapping | None = None, command: str | None = None,
                    verbose: bool = True) -> dict:
  """Decodes every entry of `splits` and writes a prepared dataset to `out_dir`.

  `splits`: split name -> videos; labels index `class_names` (one label map for all
  splits). `settings`: see `Settings`; one worker process writes one shard at a time,
  and a worker process stuck in the decoder longer than video_timeout is killed and its
  video fails, as does a video on which a worker process dies (a decoder crash, the OOM
  killer): the run goes on without it. `failures`: videos already known to be unusable
  (e.g. clips missing from a download), reported like decoding failures. `source`,
  `details`: what the videos are, and `command` (default: this process's command line), how
  the dataset was made: for prepare_info.json. A video that fails is skipped
  and listed in prepare_report.txt. Re-running after an interruption keeps the finished
  shards. Returns the contents of prepare_info.json.
  """
  say, warn = (messages.say, messages.warn) if verbose else (_quiet, _quiet)
  _check_splits(splits, class_names)
  settings.check()
  frames = _Frames(settings.short_side or None, float(settings.fps) if settings.fps else None,
                   settings.max_frames, int(settings.jpeg_quality), settings.pixel_aspect,
                   tuple(class_names))
  known = list(failures)
  plan = {}
  for split, entries in splits.items():
    unique, seen = [], {}
    for e in entries:
      e = dataclasses.replace(e, path=_absolute(e.path))
      if e.video_id in seen:
        known.append(Failure(split, e.video_id, e.path,
                             f"duplicate video id (also {seen[e.video_id]}); the first is kept"))
        continue
      seen[e.video_id] = e.path
      unique.append(e)
    plan[split] = _plan_shards(split, unique, frames, videos_per_shard=settings.videos_per_shard,
                               num_shards=settings.num_shards)
  fingerprint = _sha256({"shards": {s: [x.fingerprint for x in v] for s, v in plan.items()},
                         "known": sorted(dataclasses.astuple(f) for f in known)})

  done = _already_prepared(out_dir, fingerprint)
  if done is not None:
    say(f"{out_dir} is already prepared with these videos and settings; nothing to do")
    return done
  if _is_prepared(out_dir):
    if not settings.overwrite:
      raise VidtxError(
          f"{out_dir} already holds a prepared dataset made from other videos or settings; "
          "choose another output directory or pass overwrite (--overwrite) to replace it")
    for name in ("dataset_info.json", "features.json", data_format.LABEL_MAP_FILE,
                 data_format.PREPARE_INFO_FILE):
      if tf.io.gfile.exists(os.path.join(out_dir, name)):
        tf.io.gfile.remove(os.path.join(out_dir, name))

  work_dir = os.path.join(out_dir, WORK_DIR)
  tf.io.gfile.makedirs(work_dir)
  _recover(out_dir, work_dir)
  shards = [s for split_shards in plan.values() for s in split_shards]
  markers = _completed_markers(work_dir, shards)
  todo = [s for s in shards if (s.split, s.index) not in markers]
  total = sum(len(s.entries) for s in shards)
  # One worker runs in this process; more run in worker processes (a pool of one where only
  # one shard is left), where a decoder that hangs or crashes loses one video, not the run.
  requested = settings.workers or workers.usable_cores()
  num_workers = max(1, min(requested, len(todo)))
  beam = settings.runner == "beam"
  if markers:
    say(f"resuming: {len(markers)} of {len(shards)} shards are already done")
  sizes = ", ".join(f"{k}: {sum(len(s.entries) for s in v)}" for k, v in plan.items())
  say(f"preparing {total} videos ({len(class_names)} classes; {sizes}) into {out_dir} " +
      (f"on Apache Beam ({settings.beam_options or 'DirectRunner'})" if beam
       else f"with {num_workers} worker(s)"))
  start = time.monotonic()
  if beam:
    from vidtx.data import prepare_beam  # pylint: disable=g-import-not-at-top  (the [beam] extra)
    write_shard = functools.partial(
        _write_shard_once, frames=frames, work_dir=work_dir, video_timeout=settings.video_timeout,
        skip=_read_json(os.path.join(work_dir, _FATAL_FILE)) or {})
    prepare_beam.run_shards(todo, settings.beam_options, write_shard=write_shard,
                            setup=_beam_worker_setup)
    markers.update(_completed_markers(work_dir, todo))
    missing = [str(s) for s in todo if (s.split, s.index) not in markers]
    if missing:
      raise VidtxError(f"the Beam pipeline ended without writing {len(missing)} shard(s) "
                       f"({missing[0]}, ...); finished shards are kept, re-run the same command "
                       "to resume")
  else:
    status = messages.Status("prepare", total, unit="videos", enabled=verbose,
                             done=total - sum(len(s.entries) for s in todo))
    status.extra = "0 failed"
    try:
      markers.update(_run_shards(todo, frames, work_dir, None if requested == 1 else num_workers,
                                 settings.video_timeout, status, warn))
    except KeyboardInterrupt:
      status.close()
      say("interrupted: finished shards are kept; re-run the same command to resume")
      raise
    status.close()
  elapsed = time.monotonic() - start

  info = {
      "source": source, "details": dict(details or {}),
      "short_side": frames.short_side, "fps": frames.fps, "max_frames": settings.max_frames,
      "jpeg_quality": frames.jpeg_quality, "pixel_aspect": frames.pixel_aspect,
      "num_classes": len(class_names),
      "class_names": list(class_names),
      "command": command if command is not None else shlex.join(sys.argv),
      "vidtx_version": _vidtx_version(),
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "runner": settings.runner, "workers": None if beam else num_workers,
      "video_timeout": settings.video_timeout or None,
      "seconds": round(elapsed, 1), "fingerprint": fingerprint,
  }
  info = _finish(out_dir, work_dir, plan, markers, known, info, warn)
  summary = ", ".join(f"{k}: {v['videos']} videos" + (f" ({v['failed']} failed)" if v["failed"] else "")
                      for k, v in info["splits"].items())
  skipped = f"; skipped videos are listed in {os.path.join(out_dir, REPORT_FILE)}" if info["failed"] else ""
  done_now = sum(len(s.entries) for s in todo)
  how = "on Apache Beam" if beam else f"with {num_workers} worker(s)"
  say(f"prepared {out_dir}: {summary}; {len(todo)} shard(s), {done_now} videos in {elapsed:.1f}s "
      f"({done_now / max(elapsed, 1e-9):.2f} videos/s {how}){skipped}")
  return info
