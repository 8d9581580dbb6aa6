"""One run over several processes: joining them, splitting the input, stopping together.

  initialize()        --distributed: join the others (jax.distributed) from the launcher's
                      environment, or from SLURM / Cloud TPU detection
  num_input_streams   the run's input is K streams, whatever the process count
  train_batches       this process's share of every global batch
  Upcoming            batches read ahead; a read error is kept until every process knows it
  StopSignals         SIGTERM / SIGINT / a read error -> every process stops after the same step

Input streams. The training input is K independent streams (K = config.train.input_streams,
raised to a multiple of the process count, reduced to a divisor of the global batch, then kept
for the life of the run); every global batch is stream 0's next B/K examples, then stream 1's,
... Process p of P reads streams [p K/P, (p+1) K/P) (their shards: disjoint from the other
processes' where there are at least K shards). So the global batches, hence the losses, are the
same for every process count dividing K, on any number of devices, and a checkpoint (which
records the examples consumed over all streams) resumes on any of them.
"""
from __future__ import annotations

import collections
import math
import os
import signal
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vidtx.errors import VidtxError

INPUT_FAILED = 1000  # a StopSignals.poll result: some process could not read its next batch
# Seconds a silent process may take before the others count it as dead and stop.
HEARTBEAT_TIMEOUT_S = 60


def initialize() -> None:
  """jax.distributed.initialize with what the launcher set in the environment.

  JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (launch/local.sh sets them);
  without them JAX detects SLURM and Cloud TPU pods itself. VIDTX_HEARTBEAT_TIMEOUT_S:
  seconds after which a process that stopped responding counts as dead (the others then
  exit non-zero naming it). VIDTX_INIT_TIMEOUT_S: how long to wait for all to join.
  """
  env = os.environ
  kwargs = dict(heartbeat_timeout_seconds=int(env.get("VIDTX_HEARTBEAT_TIMEOUT_S", HEARTBEAT_TIMEOUT_S)),
                initialization_timeout=int(env.get("VIDTX_INIT_TIMEOUT_S", 300)))
  if env.get("JAX_NUM_PROCESSES"):
    kwargs.update(coordinator_address=env.get("JAX_COORDINATOR_ADDRESS"),
                  num_processes=int(env["JAX_NUM_PROCESSES"]), process_id=int(env["JAX_PROCESS_ID"]))
  # vidtx agrees on a stop itself (StopSignals), for SIGINT too; JAX's SIGTERM handler would
  # swallow the signal until then.
  jax.config.update("jax_enable_preemption_service", False)
  try:
    jax.distributed.initialize(**kwargs)
  except ValueError as e:  # nothing detected
    raise VidtxError(
        f"--distributed: no cluster found ({str(e).splitlines()[0]}); run under launch/local.sh, "
        "srun (SLURM) or on a Cloud TPU pod, or set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES "
        "and JAX_PROCESS_ID") from None
  except RuntimeError as e:  # jax's XlaRuntimeError: the coordinator or a peer never answered
    raise VidtxError(f"--distributed: could not join the other processes: {str(e).splitlines()[0]}") from None


def num_input_streams(requested: int, global_batch: int, process_count: int) -> int:
  """K of a new run: `requested`, raised to a multiple of the process count, reduced to a
  divisor of the global batch (still a multiple of the process count, which divides it)."""
  if requested < 1:
    raise VidtxError(f"config.train.input_streams={requested} must be >= 1")
  return math.gcd(-(-requested // process_count) * process_count, global_batch)


def check_input_streams(streams: int, global_batch: int, process_count: int, where: str) -> None:
  """A resumed run keeps its K: the process count must divide it, and it the global batch."""
  if streams % process_count or global_batch % streams:
    raise VidtxError(
        f"{where} reads its input as {streams} stream(s): {process_count} process(es) with global "
        f"batch {global_batch} cannot continue it (the process count must divide {streams}, and "
        f"{streams} the global batch); to move a run between process counts, start it with "
        "config.train.input_streams set to a multiple of each")


def process_streams(num_streams: int, process_index: int, process_count: int) -> range:
  """The input streams process `process_index` reads (contiguous: its rows of the global batch)."""
  per_process = num_streams // process_count
  return range(process_index * per_process, (process_index + 1) * per_process)


def input_position(recorded: dict) -> tuple[int, int]:
  """(examples consumed over all streams, number of streams) from a checkpoint's meta["input"]."""
  if "examples" in recorded:
    return int(recorded["examples"]), int(recorded["streams"])
  # Checkpoints from before input streams: one stream per process, a per-process position.
  return int(recorded["examples_per_host"]) * jax.process_count(), jax.process_count()


def train_batches(make_dataset, data_config, *, global_batch: int, streams: int, seed: int,
                  examples_done: int, positions: list[int] | None = None) -> Iterator[dict]:
  """This process's rows of every global batch: its streams' next examples, stream after stream.

  Stream k starts at `positions[k]` where given (skipped bad clips make the streams' positions
  differ: vidtx.data.bad_clips), else at examples_done / streams.

  make_dataset: `pipeline.make_train_dataset` (stream k of K is its process k of K). The
  shuffle buffer (and config.data.num_threads) is shared out between the streams, so host
  memory and threads do not grow with K.
  """
  per_stream = global_batch // streams
  mine = process_streams(streams, jax.process_index(), jax.process_count())
  data_config = ml_collections.ConfigDict(data_config.to_dict())
  data_config.shuffle_buffer = max(1, data_config.shuffle_buffer // streams)
  if data_config.num_threads:
    data_config.num_threads = max(1, data_config.num_threads // len(mine))
  iterators = [
      make_dataset(data_config, batch_size=per_stream, seed=seed,
                   start_index=positions[k] if positions else examples_done // streams,
                   process_index=k, process_count=streams).as_numpy_iterator()
      for k in mine]
  if len(iterators) == 1:
    yield from iterators[0]
    return
  for parts in zip(*iterators):
    yield {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


class Upcoming:
  """The next global batches, read `depth` steps ahead of the step that uses them.

  A failure to read is kept (`error`), not raised: the loop announces it through
  StopSignals.poll, and every process stops after the same step, which the batches already
  read still cover.
  """

  def __init__(self, local_batches: Iterator[dict], to_global, depth: int = 2):
    self._local, self._to_global, self.depth = local_batches, to_global, depth
    self._queue: collections.deque = collections.deque()
    self.error: BaseException | None = None

  def fill(self) -> None:
    while len(self._queue) < self.depth and self.error is None:
      try:
        local = next(self._local)
      except Exception as e:  # pylint: disable=broad-except  (reported at the agreed step)
        self.error = e
        return
      self._queue.append(self._to_global(local))

  def pop(self):
    return self._queue.popleft()

  def __len__(self) -> int:
    return len(self._queue)


class Stopped(Exception):
  """Training stopped on a signal after saving; `exit_code`: 0 for SIGTERM, 130 for SIGINT."""

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code


class StopSignals:
  """SIGTERM and SIGINT ask the training loop to stop; every process stops after the same step.

  Each step `poll()` starts (asynchronously) a max over every process's flag; the loop reads
  the previous step's result, so all processes see a request at the same step without
  waiting on the device. A second signal stops at once (the last checkpoint stays).
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received = 0
    self._previous = {}
    self._mesh = Mesh(np.asarray(jax.devices()), ("all",))
    self._sharding = NamedSharding(self._mesh, P("all"))
    self._agree = jax.jit(jnp.max, out_shardings=NamedSharding(self._mesh, P()))

  def __enter__(self):
    for sig in self.SIGNALS:
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.received:  # the second signal: no more waiting
      self.__exit__()
      os.kill(os.getpid(), signum)
      return
    self.received = signum

  def poll(self, input_failed: bool = False) -> jax.Array:
    """Starts the agreement over this step's flags: INPUT_FAILED if any process's input failed,
    else the largest signal number any process got (0: go on)."""
    local = np.full((jax.local_device_count(),), INPUT_FAILED if input_failed else self.received,
                    np.int32)
    return self._agree(jax.make_array_from_process_local_data(self._sharding, local))

  @staticmethod
  def describe(signum: int) -> tuple[str, int]:
    """(name, exit status) of an agreed signal: SIGTERM exits 0 (a preemption), SIGINT 130."""
    name = signal.Signals(signum).name
    return name, 130 if signum == signal.SIGINT else 0
