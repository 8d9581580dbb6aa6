"""The worker processes of data preparation: shards run video by video, a watchdog kills a
worker stuck on one video, and a worker that dies loses only the video it was on.

pebble, not concurrent.futures: a dead worker (killed by the watchdog, a decoder crash, the
OOM killer) fails only its own shard, with its pid and exit code (ProcessExpired), and the pool
replaces it; concurrent.futures breaks the whole pool and tells neither.

A shard function runs as `run_shard(shard, skip, report)`, in a worker process or in this one:
  skip    video -> reason: videos that killed a worker before; they fail without being decoded
  report  `report.start(video)` before decoding a video, `report.done(ok)` after it (also for
          a skipped one)
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

import pebble

from vidtx.errors import VidtxError

# A worker this long past video_timeout on one video is stuck in C code, where no deadline stops it.
HANG_GRACE = 30.0
_POLL_SECONDS = 0.25

# The signal that ended a worker -> the likely cause, for the report.
_SIGNAL_CAUSES = {signal.SIGKILL: "out of memory?", signal.SIGSEGV: "decoder crash",
                  signal.SIGBUS: "decoder crash", signal.SIGILL: "decoder crash",
                  signal.SIGFPE: "decoder crash", signal.SIGABRT: "decoder crash"}


def usable_cores() -> int:
  """All the CPU cores this process may use (the default number of workers)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


class _LocalReport:
  """Progress of a shard run in this process."""

  def __init__(self, index: int, on_done: Callable[[int, bool], None]):
    self.index, self.on_done = index, on_done

  def start(self, video: str) -> None:
    del video

  def done(self, ok: bool) -> None:
    self.on_done(self.index, ok)


class _QueueReport:
  """Progress of a shard run in a worker: ("start", pid, shard, video), ("done", pid, shard, ok)."""

  def __init__(self, queue, index: int):
    self.queue, self.index, self.pid = queue, index, os.getpid()

  def start(self, video: str) -> None:
    self.queue.put(("start", self.pid, self.index, video))

  def done(self, ok: bool) -> None:
    self.queue.put(("done", self.pid, self.index, ok))


_worker_queue = None


def _init_worker(progress_queue, setup: Callable[[], None] | None) -> None:
  global _worker_queue
  _worker_queue = progress_queue
  if setup is not None:
    setup()


def _run_in_worker(run_shard: Callable, index: int, shard: Any, skip: Mapping[str, str]) -> Any:
  return run_shard(shard, skip, _QueueReport(_worker_queue, index))


def how_it_died(exitcode: int) -> str:
  """A process exit code in words: -9 -> 'killed by signal 9, SIGKILL: out of memory?'."""
  if exitcode >= 0:
    return f"exited with code {exitcode}"
  try:
    name = signal.Signals(-exitcode).name
  except ValueError:
    return f"killed by signal {-exitcode}"
  cause = _SIGNAL_CAUSES.get(-exitcode)
  return f"killed by signal {-exitcode}, {name}" + (f": {cause}" if cause else "")


def videos_lost(exitcodes: Mapping[int, int | None], decoding: Mapping[int, str],
                hung: Mapping[int, str], hang_reason: str) -> tuple[dict[str, str], list[str]]:
  """The videos dead workers were on, and how the others died.

  `exitcodes`: pid -> exit code of each dead worker (negative: the signal; None or SIGTERM:
  stopped by us); `decoding`: pid -> the video a worker started and did not finish; `hung`:
  pid -> the video of a worker the watchdog killed. Returns (video -> reason, how each dead
  worker that was on no video died).
  """
  lost, unexplained = {}, []
  for pid, code in sorted(exitcodes.items()):
    if pid in hung:
      lost[hung[pid]] = hang_reason
    elif code is None or code == -signal.SIGTERM:
      continue
    elif pid in decoding:
      lost[decoding[pid]] = f"the worker decoding it died ({how_it_died(code)})"
    else:
      unexplained.append(how_it_died(code))
  return lost, unexplained


def _context(preload: str):
  # forkserver: workers start from a clean process with the shard module (TensorFlow, PyAV)
  # imported once, never a fork of a caller that may already run TensorFlow or JAX threads.
  if "forkserver" in multiprocessing.get_all_start_methods():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([preload])
    return context
  return multiprocessing.get_context("spawn")


def run_shards(shards: Sequence[Any], run_shard: Callable, *, processes: int | None,
               video_timeout: float | None, skip: MutableMapping[str, str],
               on_done: Callable[[int, bool], None],
               on_lost: Callable[[int, str, str], None],
               worker_setup: Callable[[], None] | None = None) -> list[Any]:
  """Runs `run_shard` on every shard; returns their results, in order.

  `processes=None`: one after the other in this process. Otherwise in that many worker
  processes (`run_shard` and `worker_setup` must be picklable, module-level functions or
  partials of them), where a worker that dies on a video (a decoder crash, the OOM killer)
  or stays on one `video_timeout + HANG_GRACE` seconds (and is killed) loses that video:
  it is added to `skip`, `on_lost(shard index, video, reason)` is called and its shard starts
  over. `on_done(shard index, ok)` follows every video. A worker that dies on no video, or a
  shard function that raises, stops the run with a VidtxError.
  """
  if processes is None:
    return [run_shard(shard, skip, _LocalReport(i, on_done)) for i, shard in enumerate(shards)]
  if not shards:
    return []
  target = getattr(run_shard, "func", run_shard)  # a functools.partial: its function
  context = _context(target.__module__)
  # SimpleQueue.put writes before it returns: a worker that dies right after
  # ("start", pid, shard, video) has still told which video it was on.
  progress_queue = context.SimpleQueue()
  pool = pebble.ProcessPool(max_workers=processes, initializer=_init_worker,
                            initargs=(progress_queue, worker_setup), context=context)
  started = {}  # worker pid -> (video, when the parent heard that it started)
  hung = {}  # worker pid -> video, for the workers the watchdog killed
  hang_reason = f"decoder hung: no progress for {(video_timeout or 0) + HANG_GRACE:g} s; killed"
  results: list[Any] = [None] * len(shards)

  def drain():
    while not progress_queue.empty():
      kind, pid, index, value = progress_queue.get()
      if kind == "start":
        started[pid] = (value, time.monotonic())
      else:
        started.pop(pid, None)  # a skipped video fails without a start
        on_done(index, value)

  def submit(index):
    return pool.schedule(_run_in_worker, args=(run_shard, index, shards[index], dict(skip)))

  try:
    pending = {submit(i): i for i in range(len(shards))}
    while pending:
      done, _ = concurrent.futures.wait(pending, timeout=_POLL_SECONDS,
                                        return_when=concurrent.futures.FIRST_COMPLETED)
      drain()
      for future in done:
        index = pending.pop(future)
        try:
          results[index] = future.result()
          continue
        except pebble.ProcessExpired as e:
          lost, unexplained = videos_lost(
              {e.pid: e.exitcode}, {pid: video for pid, (video, _) in started.items()}, hung,
              hang_reason)
          started.pop(e.pid, None)
          hung.pop(e.pid, None)
          if not lost:
            died = "a worker process died" + (f" ({'; '.join(unexplained)})" if unexplained else "")
            raise VidtxError(f"{died} while on no video, so no video is to blame "
                             f"({type(e).__name__}: {e}); finished shards are kept, re-run the "
                             "same command to resume") from None
        except concurrent.futures.process.BrokenProcessPool as e:
          raise VidtxError(f"the worker processes stopped ({e}); finished shards are kept, re-run "
                           "the same command to resume") from e
        except Exception as e:  # the worker could not write: keep what is done
          raise VidtxError(f"preparing {shards[index]} failed ({type(e).__name__}: {e}); finished "
                           "shards are kept, re-run the same command to resume") from e
        for video, reason in lost.items():  # lost videos are new ones (skipped ones never start)
          skip[video] = reason
          on_lost(index, video, reason)
        try:
          pending[submit(index)] = index
        except RuntimeError as e:  # pebble: the pool broke meanwhile
          raise VidtxError(f"the worker processes stopped ({e}); finished shards are kept, "
                           "re-run the same command to resume") from e
      if video_timeout:
        now = time.monotonic()
        for pid, (video, since) in started.items():
          if pid not in hung and now - since > video_timeout + HANG_GRACE:
            os.kill(pid, signal.SIGKILL)  # SIGTERM cannot stop a process stuck in C code
            hung[pid] = video
  except BaseException:
    pool.stop()  # stop now rather than after the running shards: their parts are written atomically
    pool.join()
    progress_queue.close()
    raise
  pool.close()
  pool.join()
  progress_queue.close()
  return results
