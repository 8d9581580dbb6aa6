"""The shards of `vidtx.data.prepare` written by an Apache Beam pipeline (runner 'beam').

`prepare.prepare_dataset` makes the plan (which videos go in which shard, from the sorted
video list) before the pipeline, and finishes the dataset after it; the pipeline only runs
`prepare._run_shard` on every shard left to do: one element per shard, so one worker writes
a shard, into a temporary name renamed on success, then its done-marker. A worker lost
mid-shard leaves no shard visible; the runner's retry, or a re-run of the command, redoes
just the shards without a marker. So the dataset is the one the local pool writes.

A decoder that kills its worker process (a crash, the OOM killer) cannot be caught inside
the worker: each shard keeps a journal, `<split>-<index>.attempts.json`, of the video it is
decoding, and a video that two attempts died on is skipped and reported (one death may be a
preemption, which is no fault of the video).

Needs the `[beam]` extra (`pip install -e '.[beam]'`); the local path never imports this.
"""
from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence

try:
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions
except ImportError:  # pragma: no cover  (the extra is not installed)
  raise ImportError("--runner beam needs Apache Beam: pip install -e '.[beam]' (or "
                    "pip install apache-beam) in this environment") from None

import tensorflow as tf

from vidtx.data import prepare
from vidtx.errors import VidtxError

# Attempts that died on one video before it is skipped (one may be a preemption or a kill).
DEATHS_TO_BLAME = 2


class _Journal:
  """Which video each attempt at one shard was on: the report of `prepare._run_shard`."""

  def __init__(self, work_dir: str, split: str, index: int):
    self.path = os.path.join(work_dir, f"{split}-{index:05d}.attempts.json")
    journal = prepare._read_json(self.path) or {}
    self.died = dict(journal.get("died", {}))
    if journal.get("current"):  # the last attempt stopped while decoding it
      self.died[journal["current"]] = self.died.get(journal["current"], 0) + 1
      self._write(None)

  def blamed(self) -> dict[str, str]:
    """Videos to skip: path -> reason."""
    return {video: f"the worker decoding it died {n} times (Beam retried it)"
            for video, n in self.died.items() if n >= DEATHS_TO_BLAME}

  def _write(self, current: str | None) -> None:
    prepare._write_json(self.path, {"current": current, "died": self.died})

  def start(self, video: str) -> None:
    self._write(video)

  def done(self, ok: bool) -> None:
    del ok

  def close(self) -> None:
    tf.io.gfile.remove(self.path)


class _WriteShard(beam.DoFn):
  """A shard (prepare._Shard) -> its (split, index), once its part and done-marker are written."""

  def __init__(self, frames, work_dir: str, video_timeout: float | None, skip: Mapping[str, str]):
    super().__init__()
    self.frames, self.work_dir, self.video_timeout = frames, work_dir, video_timeout
    self.skip = dict(skip)

  def setup(self):
    try:
      prepare._one_thread_per_worker()
    except RuntimeError:  # TensorFlow already running in this process (the in-process runner)
      pass

  def process(self, shard):
    if prepare._completed_marker(self.work_dir, shard) is None:  # else: an earlier attempt did it
      journal = _Journal(self.work_dir, shard.split, shard.index)
      prepare._run_shard(shard, {**self.skip, **journal.blamed()}, journal, frames=self.frames,
                         work_dir=self.work_dir, video_timeout=self.video_timeout)
      journal.close()
    yield shard.split, shard.index


def pipeline_options(beam_options: str) -> PipelineOptions:
  """PipelineOptions from a flag string ('--runner=FlinkRunner --parallelism=8'); a flag Beam
  does not know is an error (Beam itself would drop it with a warning)."""
  flags = shlex.split(beam_options)
  if not any(f.startswith("--default_sdk_harness_log_level") for f in flags):
    flags.append("--default_sdk_harness_log_level=WARNING")  # not a line per worker start and stop
  options = PipelineOptions(flags)
  unknown = [f for f in options.get_all_options(retain_unknown_options=True, drop_default=True)
             if f not in options.get_all_options(drop_default=True)]
  if unknown:
    raise VidtxError(f"--beam_options: Apache Beam does not know {sorted(unknown)}; see "
                     "python -m apache_beam.examples.wordcount --help for its options")
  return options


def run_shards(shards: Sequence, beam_options: str, *, frames, work_dir: str,
               video_timeout: float | None, skip: Mapping[str, str]) -> None:
  """Writes `shards` (prepare._Shard) with a Beam pipeline; returns once it finished.

  `beam_options`: Beam's PipelineOptions flags (default: the DirectRunner, in this process).
  """
  if not shards:
    return
  options = pipeline_options(beam_options)
  try:
    with beam.Pipeline(options=options) as pipeline:
      _ = (pipeline
           | "Shards" >> beam.Create(list(shards))
           | "Spread" >> beam.Reshuffle()  # one shard per element, spread over the workers
           | "WriteShard" >> beam.ParDo(_WriteShard(frames, work_dir, video_timeout, skip)))
  except VidtxError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (the runner's error, in one line)
    first = (str(e).strip().splitlines() or [""])[0][:300]
    raise VidtxError(f"the Beam pipeline failed ({type(e).__name__}: {first}); finished shards are "
                     "kept, re-run the same command to resume") from e
