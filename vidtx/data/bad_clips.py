"""config.data.on_bad_clip='skip' on the training side: clips dropped, counted and named.

The pipeline (vidtx.data.pipeline, "Bad clips") hands each batch the number and names of the
clips dropped before its examples (`bad_clips` [B], `bad_names` [B]). `Tracker` takes them out
of the batches as they are read, and when a batch is trained on (`step`) names its dropped
clips in the log, adds them to the run's count (metrics.jsonl `bad_clips`) and moves its
input streams' positions on by the examples and the dropped clips. A checkpoint records the
positions (`record`), so a resume reads every stream from where it was: the same batches, and
losses, as an uninterrupted run. More than config.data.max_bad_clips dropped in the run
stops it as any input failure does (saved at the step every process agrees on, one line).

With on_bad_clip='stop' the tracker changes nothing (positions: examples / streams).
"""
from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence

import numpy as np

from vidtx import messages
from vidtx.errors import VidtxError

KEYS = ("bad_clips", "bad_names")  # batch entries that stay on the host


class Tracker:
  """The bad clips of one process's input streams (`streams`: their numbers of K = len(positions)).

  `positions`: every stream's start position (examples and dropped clips read); `count`: the
  run's dropped clips so far (a resume's, on process 0 only: the others start at 0).
  """

  def __init__(self, data, streams: Sequence[int], per_stream: int, positions: Sequence[int],
               count: int = 0):
    self.skip = data.on_bad_clip == "skip"
    self.limit = int(data.max_bad_clips)
    self.streams, self.per_stream = list(streams), per_stream
    self.positions = [int(p) for p in positions]
    self.count = int(count)  # this process's share of the run's count, up to the trained batch
    self._read = int(count)  # ... up to the batch read last (read ahead of training)
    self._pending: collections.deque = collections.deque()

  def batches(self, local_batches: Iterator[dict]) -> Iterator[dict]:
    """The batches, their dropped clips noted; past the limit, a VidtxError (an input failure)."""
    for batch in local_batches:
      if self.skip:
        dropped = np.asarray(batch["bad_clips"]).reshape(len(self.streams), self.per_stream).sum(1)
        names = [n for text in np.asarray(batch["bad_names"]).ravel()
                 for n in (text.decode() if isinstance(text, bytes) else str(text)).splitlines()]
        self._read += int(dropped.sum())
        if self._read > self.limit:
          raise VidtxError(
              f"{self._read} bad training clips skipped, more than config.data.max_bad_clips="
              f"{self.limit} (the last: {names[-1] if names else '?'}); restore or re-prepare the "
              "dataset, or raise the limit")
        self._pending.append((dropped, names))
      yield batch

  def step(self) -> None:
    """The oldest batch read is trained on now: its dropped clips are logged and counted."""
    if not self.skip:
      return
    dropped, names = self._pending.popleft()
    for k, n in zip(self.streams, dropped):
      self.positions[k] += self.per_stream + int(n)
    self.count += int(dropped.sum())
    for name in names:
      messages.warn(f"skipped a bad training clip: {name} (config.data.on_bad_clip='skip'; "
                    f"{self.count} so far)")

  def _all_processes(self) -> tuple[list[int], int]:
    """(every stream's position, the run's count), gathered from every process."""
    import jax  # pylint: disable=g-import-not-at-top
    if jax.process_count() == 1:
      return self.positions, self.count
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    mine = np.zeros(len(self.positions) + 1, np.int64)
    mine[self.streams] = [self.positions[k] for k in self.streams]
    mine[-1] = self.count
    gathered = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1, len(mine)).sum(0)
    return [int(p) for p in gathered[:-1]], int(gathered[-1])

  def record(self) -> dict:
    """For a checkpoint's meta["input"] (every process calls it at the same step)."""
    if not self.skip:
      return {}
    positions, count = self._all_processes()
    return {"positions": positions, "bad_clips": count}

  def scalars(self) -> dict[str, int]:
    """metrics.jsonl's bad_clips: the clips skipped in the run so far (every process calls it)."""
    return {"bad_clips": self._all_processes()[1]} if self.skip else {}


def resume_point(recorded: dict, examples: int, streams: int, process_index: int) -> tuple[list[int], int]:
  """(every stream's position, this process's start count) from a checkpoint's meta["input"]."""
  positions = recorded.get("positions") or [examples // streams] * streams
  return [int(p) for p in positions], int(recorded.get("bad_clips", 0)) if process_index == 0 else 0
