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
preemption, which is no fault of the video): `prepare._write_shard_once`.

Needs the `[beam]` extra (`pip install -e '.[beam]'`); the local path never imports this.
"""
from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence

try:
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions
except ImportError:  # pragma: no cover  (the extra is not installed)
  raise ImportError("--runner beam needs Apache Beam: pip install -e '.[beam]' (or "
                    "pip install apache-beam) in this environment") from None

from vidtx.errors import VidtxError


class _WriteShard(beam.DoFn):
  """A shard -> its (split, index), once `write_shard` wrote it (`vidtx.data.prepare` decides
  how: this module knows Beam, not datasets)."""

  def __init__(self, write_shard: Callable, setup: Callable[[], None]):
    super().__init__()
    self.write_shard, self.setup_worker = write_shard, setup

  def setup(self):
    self.setup_worker()

  def process(self, shard):
    self.write_shard(shard)
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


def run_shards(shards: Sequence, beam_options: str, *, write_shard: Callable,
               setup: Callable[[], None]) -> None:
  """Runs `write_shard(shard)` on each of `shards` in a Beam pipeline, one worker a shard, after
  `setup()` on each worker; returns once it finished. Both must pickle (module-level functions).

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
           | "WriteShard" >> beam.ParDo(_WriteShard(write_shard, setup)))
  except VidtxError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (the runner's error, in one line)
    first = (str(e).strip().splitlines() or [""])[0][:300]
    raise VidtxError(f"the Beam pipeline failed ({type(e).__name__}: {first}); finished shards are "
                     "kept, re-run the same command to resume") from e
