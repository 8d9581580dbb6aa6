"""Orbax checkpoints: the last N training states and the best by validation top-1.

Every checkpoint is a directory with the items
  `variables`  {'params', 'batch_stats'}: all eval.py / predict.py need,
  `meta`       JSON: model config, label names, config, input position, metrics,
and training checkpoints also `train` ({'step', 'opt_state'}).

  <workdir>/checkpoints/<step>/   last `keep` training states (resume)
  <workdir>/best/<step>/          the best by validation top-1 (variables + meta)
  <workdir>/swa/<step>/           the SWA weights at the last checkpoint (when SWA is on)
A converted foreign checkpoint is a directory with `variables` and `meta`.

What survives what: a save cut short (a kill, a full disk) leaves only a temporary directory,
removed by the next run; an old step is renamed into <dir>/deleting/ before it is deleted, so
a kill never leaves half of one listed; a step that no longer restores is moved to
<dir>/damaged/ (with a warning) when an older one does, and training goes on from that one.
eval.py / predict.py take the best step by its recorded val_top1, skipping damaged ones.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from vidtx import models
from vidtx import messages
from vidtx.errors import VidtxError, first_line


DELETING = "deleting"  # old steps are renamed here first, so a kill never leaves half of one listed
DAMAGED = "damaged"    # a checkpoint that no longer restores is moved here (never deleted)


class _QuietOrbax(logging.Filter):
  """Orbax logs a failed background save as several tracebacks (absl), and asyncio each of its
  failed writes again; vidtx reports the failure itself, as one line."""

  def filter(self, record: logging.LogRecord) -> bool:
    if "orbax" in record.pathname:
      return False
    trace = record.exc_info[2] if record.exc_info else None
    while trace is not None:
      if "orbax" in trace.tb_frame.f_code.co_filename:
        return False
      trace = trace.tb_next
    return True


logging.getLogger("absl").addFilter(_QuietOrbax())
logging.getLogger("asyncio").addFilter(_QuietOrbax())


class _Manager(ocp.CheckpointManager):
  """orbax's manager, without JAX's preemption sync: vidtx agrees on a stop itself
  (vidtx.multihost.StopSignals) and turns JAX's preemption service off, which orbax releases
  before 0.12 would query at every save of a multi-process run, and fail."""

  def reached_preemption(self, step: int) -> bool:
    del step
    return False


def _save_arrays_for_this_platform() -> None:
  """On CPUs, arrays are saved without orbax's replica-parallel slicing (its default off GPUs): it
  cuts each replicated array into one slice per device to write them in parallel, and every CPU
  device is the same host memory, so all it adds is a compiled slice op per array and device
  (half the time of a 6-step smoke run on 8 CPU devices went there)."""
  if jax.default_backend() == "cpu":
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True)


def _manager(directory: str, *, keep: int | None, best: bool, read_only: bool = False,
             train: bool | None = None):
  _save_arrays_for_this_platform()
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep,
      create=not read_only,
      read_only=read_only,
      best_fn=(lambda metrics: metrics["val_top1"]) if best else None,
      best_mode="max",
      enable_async_checkpointing=True,
      cleanup_tmp_directories=not read_only,  # what a kill or a full disk left of a save
      todelete_subdir=None if read_only else DELETING,
  )
  train = not best if train is None else train
  items = ("variables", "train", "meta") if train else ("variables", "meta")
  return _Manager(os.path.abspath(directory), options=options, item_names=items)


def _json_ready(meta: dict) -> dict:
  return json.loads(json.dumps(meta, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def no_space(error: BaseException) -> bool:
  """Whether `error` (or what caused it) is a full disk, as Python, orbax or TensorFlow say it."""
  while error is not None:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
      return True
    if "RESOURCE_EXHAUSTED" in str(error) or "No space left" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


def _purge_deleted(directory, *, idle: bool = False) -> None:
  """Deletes the old steps orbax moved to <directory>/deleting (no longer listed); `idle` (no
  save in flight): the directory too."""
  path = os.path.join(str(directory), DELETING)
  if jax.process_index() == 0 and os.path.isdir(path):
    for entry in os.listdir(path):  # entries only: orbax may be renaming a step into it
      shutil.rmtree(os.path.join(path, entry), ignore_errors=True)
    if idle:
      shutil.rmtree(path, ignore_errors=True)


def _remove_partial_saves(directory: str, *, settle_s: float = 0.5, limit_s: float = 30.0) -> None:
  """Removes <directory>/*.orbax-checkpoint-tmp until none has come back for `settle_s`.

  After one item of an asynchronous save fails, orbax stops waiting while the writes of its other
  items may still be landing, and they can recreate a directory removed once.
  """
  deadline = time.monotonic() + limit_s
  clean_since = None
  while time.monotonic() < deadline:
    partial = ([entry for entry in os.listdir(directory) if ".orbax-checkpoint-tmp" in entry]
               if os.path.isdir(directory) else [])
    for entry in partial:
      shutil.rmtree(os.path.join(directory, entry), ignore_errors=True)
    if partial:
      clean_since = None
    elif clean_since is None:
      clean_since = time.monotonic()
    elif time.monotonic() - clean_since >= settle_s:
      return
    time.sleep(0.05)


def _all_processes(ok: bool) -> bool:
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def set_aside(directory, step: int, reason: str) -> str:
  """Moves a damaged step out of the listing into <directory>/damaged/<step>; warns naming both."""
  source = os.path.join(str(directory), str(step))
  target = os.path.join(str(directory), DAMAGED, str(step))
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.exists(target):
      target = f"{target}.{int(time.time())}"
    os.replace(source, target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"set aside {source}")
  messages.warn(f"checkpoint {source} is damaged ({reason}); moved to {target}, using the one before")
  return target


class Checkpoints:
  """Training checkpoints of one workdir: save, find the newest intact one, restore.

  Saves are asynchronous: `check()` (every step) and `wait()` turn a failed save into one
  line (VidtxError) after removing what it wrote, so training never goes on past it.
  """

  def __init__(self, workdir: str, *, keep: int = 3):
    self.workdir = workdir
    self.latest = _manager(os.path.join(workdir, "checkpoints"), keep=keep, best=False)
    self.best = _manager(os.path.join(workdir, "best"), keep=1, best=True)
    self.swa = None  # created by the first save_swa
    self._saving: dict[str, int] = {}  # manager directory -> the step it is writing
    self._failed = False
    for manager in self._managers():
      _purge_deleted(manager.directory, idle=True)

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def _save(self, manager, step: int, items: dict, metrics: dict | None = None) -> None:
    try:
      manager.save(step, metrics=metrics, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except  (also the previous save's failure)
      self._fail(manager, e, step)
    self._saving[str(manager.directory)] = step
    _purge_deleted(manager.directory)

  def save(self, step: int, variables: dict, train: dict, meta: dict) -> None:
    self._save(self.latest, step, dict(
        variables=ocp.args.StandardSave(variables),
        train=ocp.args.StandardSave(train),
        meta=ocp.args.JsonSave(_json_ready(meta))))

  def save_best(self, step: int, variables: dict, meta: dict, val_top1: float) -> None:
    """Keeps this one if its val_top1 beats the best kept so far."""
    self._save(self.best, step, dict(
        variables=ocp.args.StandardSave(variables),
        meta=ocp.args.JsonSave(_json_ready(meta))), metrics={"val_top1": float(val_top1)})

  def save_swa(self, step: int, variables: dict, meta: dict) -> None:
    """Keeps these (stochastic weight averaged) variables as <workdir>/swa/<step>."""
    if self.swa is None:
      self.swa = _manager(os.path.join(self.workdir, "swa"), keep=1, best=False, train=False)
    self._save(self.swa, step, dict(
        variables=ocp.args.StandardSave(variables), meta=ocp.args.JsonSave(_json_ready(meta))))

  def _fail(self, manager, error: BaseException, step: int | None = None) -> None:
    """A save failed: removes what it wrote, raises one line naming the last good checkpoint.

    `step`: the save being started when the error came (it may be the previous one's).
    """
    self._failed = True
    try:
      manager.wait_until_finished()  # nothing may still be writing when the partial save goes
    except Exception:  # pylint: disable=broad-except  (the error being reported)
      pass
    directory = str(manager.directory)
    finalized = set(ocp.utils.checkpoint_steps(directory))
    previous = self._saving.get(directory)
    step = previous if previous is not None and previous not in finalized else step
    if jax.process_index() == 0:
      _remove_partial_saves(directory)
    if no_space(error):
      raise self.full_disk(directory, f"saving step {step}") from None
    raise VidtxError(f"saving step {step} to {directory} failed ({first_line(error)}); last good "
                     f"checkpoint: {self._last_good()}") from None

  def _last_good(self) -> str:
    good = ocp.utils.checkpoint_steps(self.latest.directory)
    return f"{self.latest.directory}/{max(good)}" if good else "none"

  def full_disk(self, directory: str, doing: str) -> VidtxError:
    """The one line for a full disk under `directory` while `doing` (a save, the run's metrics)."""
    return VidtxError(f"no space left on {directory} while {doing}; last good checkpoint: "
                      f"{self._last_good()} (free space, then run the same command to resume)")

  def check(self) -> None:
    """Raises (one line) if an asynchronous save has failed."""
    for manager in self._managers():
      try:
        manager.check_for_errors()
      except Exception as e:  # pylint: disable=broad-except
        self._fail(manager, e)

  def read_meta(self, step: int) -> dict:
    return self.latest.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, step: int, abstract_variables: dict, abstract_train: dict) -> tuple[dict, dict]:
    """(variables, train) of training checkpoint `step`, placed as the abstract trees say."""
    restored = self.latest.restore(step, args=ocp.args.Composite(
        variables=ocp.args.StandardRestore(abstract_variables),
        train=ocp.args.StandardRestore(abstract_train)))
    return restored["variables"], restored["train"]

  def restore_newest_intact(self, abstract_variables: dict, abstract_train: dict,
                            check_meta=lambda meta: None):
    """(step, variables, train, meta) of the newest checkpoint that restores, else None.

    `check_meta(meta)` raises for a checkpoint that does not fit this run (that is not damage).
    Newer steps that fail to restore while an older one restores are damaged: each is moved to
    checkpoints/damaged/ with a warning. When none restores, one line naming the newest's error.
    """
    steps = sorted(self.latest.all_steps(), reverse=True)
    damaged = []
    for step in steps:
      try:
        meta = self.read_meta(step)
      except Exception as e:  # pylint: disable=broad-except
        meta, error = None, e
      if meta is not None:
        check_meta(meta)
        try:
          variables, train = self.restore(step, abstract_variables, abstract_train)
          error = None
        except Exception as e:  # pylint: disable=broad-except
          error = e
      if _all_processes(error is None):
        for bad_step, reason in damaged:
          set_aside(self.latest.directory, bad_step, reason)
        if damaged:
          self.latest.reload()
        return step, variables, train, meta
      damaged.append((step, first_line(error) if error else "damaged on another process"))
    if damaged:
      step, reason = damaged[0]
      raise VidtxError(f"no checkpoint in {self.latest.directory} restores (newest, step {step}: "
                       f"{reason}); move the directory away to start afresh")
    return None

  def _managers(self):
    return [m for m in (self.latest, self.best, self.swa) if m is not None]

  def wait(self) -> None:
    """Waits for the saves in flight; raises (one line) if one failed."""
    for manager in self._managers():
      try:
        manager.wait_until_finished()
      except Exception as e:  # pylint: disable=broad-except
        if not self._failed:
          self._fail(manager, e)
      _purge_deleted(manager.directory, idle=True)

  def close(self) -> None:
    for manager in self._managers():
      try:
        manager.close()
      except Exception:  # pylint: disable=broad-except
        if not self._failed:
          raise


def save_variables(directory: str, variables: dict, meta: dict) -> None:
  """Writes a standalone (e.g. converted) checkpoint that eval.py and predict.py accept."""
  with _Manager(os.path.abspath(directory), item_names=("variables", "meta")) as mngr:
    mngr.save(0, args=ocp.args.Composite(
        variables=ocp.args.StandardSave(variables), meta=ocp.args.JsonSave(_json_ready(meta))))
    mngr.wait_until_finished()


def _by_preference(directory: str) -> list[int]:
  """Steps of a checkpoint directory, most wanted first: by recorded val_top1 where the steps
  have one (best/), else newest first."""
  steps = ocp.utils.checkpoint_steps(directory)
  with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True)) as mngr:
    scores = {}
    for step in steps:
      try:
        scores[step] = float((mngr.metrics(step) or {})["val_top1"])
      except Exception:  # pylint: disable=broad-except  (no or damaged metrics)
        pass
  if scores:  # unscored steps (damaged metrics) last
    return sorted(scores, key=lambda s: (-scores[s], -s)) + sorted(set(steps) - set(scores), reverse=True)
  return sorted(steps, reverse=True)


def candidates(path: str) -> list[tuple[str, int]]:
  """A checkpoint location -> (manager directory, step) pairs, the one to use first.

  `path` may be a workdir (its best checkpoints by recorded val_top1, then its latest), a
  manager directory (`<workdir>/best`, `<workdir>/checkpoints`, a converted checkpoint), or
  one step directory (`.../checkpoints/1200`: only that one).
  """
  if not os.path.exists(path):
    raise VidtxError(f"checkpoint {path} does not exist")
  path = os.path.abspath(path)
  if os.path.basename(path).isdigit() and os.path.isdir(os.path.join(path, "variables")):
    return [(os.path.dirname(path), int(os.path.basename(path)))]
  found = []
  for directory in (os.path.join(path, "best"), os.path.join(path, "checkpoints"), path):
    if os.path.isdir(directory):
      found += [(directory, step) for step in _by_preference(directory)]
  if not found:
    raise VidtxError(f"no checkpoint found in {path} (expected a workdir, a checkpoint directory or a step)")
  return found


def resolve(path: str) -> tuple[str, int]:
  """The checkpoint `path` means (see `candidates`): (manager directory, step)."""
  return candidates(path)[0]


_WARNED: set[str] = set()  # damaged checkpoints already named to the user


def _restore_first(path: str, items: dict):
  """Restores `items` from the first of `candidates(path)` that restores; warns about the others."""
  errors = []
  for directory, step in candidates(path):
    try:
      with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True)) as mngr:
        restored = mngr.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except
      errors.append(f"{directory}/{step}: {first_line(e)}")
      continue
    for error in errors:
      where, reason = error.split(": ", 1)
      if where not in _WARNED:  # once, though meta and variables are read in turn
        _WARNED.add(where)
        messages.warn(f"checkpoint {where} is damaged ({reason}); using {directory}/{step}")
    return restored
  raise VidtxError(f"no checkpoint at {path} restores ({errors[0]})")


def read_meta(path: str) -> dict:
  return _restore_first(path, dict(meta=ocp.args.JsonRestore()))["meta"]


def restore_variables(path: str, abstract_variables: dict) -> tuple[dict, dict]:
  """(variables, meta) of the checkpoint at `path` (see `candidates`; damaged ones are skipped)."""
  restored = _restore_first(path, dict(meta=ocp.args.JsonRestore(),
                                       variables=ocp.args.StandardRestore(abstract_variables)))
  return restored["variables"], restored["meta"]


def _normalised(value):
  if isinstance(value, (list, tuple)):
    return [_normalised(v) for v in value]
  if isinstance(value, dict):
    return {k: _normalised(v) for k, v in value.items()}
  return value


def check_model_matches(meta: dict, model_config, where: str) -> None:
  """Raises a VidtxError naming the first difference between a checkpoint's model and ours."""
  saved = _normalised(meta.get("model", {}))
  ours = _normalised(model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config))
  non_structural = models.get_family(ours["name"]).non_structural  # keys that make no other model
  # The model's name first: another family differs everywhere, and that is what to say.
  for key in sorted(set(saved) | set(ours), key=lambda k: (k != "name", k)):
    if key in non_structural:
      continue
    if saved.get(key) != ours.get(key):
      raise VidtxError(
          f"checkpoint in {where} belongs to another model: config.model.{key} is "
          f"{saved.get(key)!r} there and {ours.get(key)!r} here")


def check_labels_match(saved: list[str], ours: list[str], where: str, dataset: str) -> None:
  """Raises a VidtxError naming the first difference between two label maps."""
  if saved == ours:
    return
  for i, (a, b) in enumerate(zip(saved, ours)):
    if a != b:
      raise VidtxError(
          f"label map of dataset {dataset} differs from checkpoint {where}: "
          f"label {i} is {b!r} in the dataset and {a!r} in the checkpoint")
  raise VidtxError(
      f"label map of dataset {dataset} differs from checkpoint {where}: "
      f"{len(ours)} classes in the dataset, {len(saved)} in the checkpoint")


def abstract(tree, shardings=None):
  """ShapeDtypeStructs (with shardings, if given) for orbax restores."""
  if shardings is None:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
