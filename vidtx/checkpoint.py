"""Orbax checkpoints: the last N training states and the best by validation top-1.

Every checkpoint is a directory with the items
  `variables`  {'params', 'batch_stats'}: all eval.py / predict.py need,
  `meta`       JSON: model config, label names, config, input position, metrics,
and training checkpoints also `train` ({'step', 'opt_state'}).

  <workdir>/checkpoints/<step>/   last `keep` training states (resume)
  <workdir>/best/<step>/          the best by validation top-1 (variables + meta)
  <workdir>/swa/<step>/           the SWA weights at the last checkpoint (when SWA is on)
A converted foreign checkpoint is a directory with `variables` and `meta`.
"""
from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp

from vidtx import models
from vidtx.errors import VidtxError


def _manager(directory: str, *, keep: int | None, best: bool, read_only: bool = False,
             train: bool | None = None):
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep,
      create=not read_only,
      read_only=read_only,
      best_fn=(lambda metrics: metrics["val_top1"]) if best else None,
      best_mode="max",
      enable_async_checkpointing=True,
  )
  train = not best if train is None else train
  items = ("variables", "train", "meta") if train else ("variables", "meta")
  return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=items)


def _json_ready(meta: dict) -> dict:
  return json.loads(json.dumps(meta, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


class Checkpoints:
  """Training checkpoints of one workdir: save, find the latest, restore."""

  def __init__(self, workdir: str, *, keep: int = 3):
    self.workdir = workdir
    self.latest = _manager(os.path.join(workdir, "checkpoints"), keep=keep, best=False)
    self.best = _manager(os.path.join(workdir, "best"), keep=1, best=True)
    self.swa = None  # created by the first save_swa

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save(self, step: int, variables: dict, train: dict, meta: dict) -> None:
    self.latest.save(step, args=ocp.args.Composite(
        variables=ocp.args.StandardSave(variables),
        train=ocp.args.StandardSave(train),
        meta=ocp.args.JsonSave(_json_ready(meta))))

  def save_best(self, step: int, variables: dict, meta: dict, val_top1: float) -> None:
    """Keeps this one if its val_top1 beats the best kept so far."""
    self.best.save(step, metrics={"val_top1": float(val_top1)}, args=ocp.args.Composite(
        variables=ocp.args.StandardSave(variables),
        meta=ocp.args.JsonSave(_json_ready(meta))))

  def save_swa(self, step: int, variables: dict, meta: dict) -> None:
    """Keeps these (stochastic weight averaged) variables as <workdir>/swa/<step>."""
    if self.swa is None:
      self.swa = _manager(os.path.join(self.workdir, "swa"), keep=1, best=False, train=False)
    self.swa.save(step, args=ocp.args.Composite(
        variables=ocp.args.StandardSave(variables), meta=ocp.args.JsonSave(_json_ready(meta))))

  def read_meta(self, step: int) -> dict:
    return self.latest.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, step: int, abstract_variables: dict, abstract_train: dict) -> tuple[dict, dict]:
    """(variables, train) of training checkpoint `step`, placed as the abstract trees say."""
    restored = self.latest.restore(step, args=ocp.args.Composite(
        variables=ocp.args.StandardRestore(abstract_variables),
        train=ocp.args.StandardRestore(abstract_train)))
    return restored["variables"], restored["train"]

  def _managers(self):
    return [m for m in (self.latest, self.best, self.swa) if m is not None]

  def wait(self) -> None:
    for manager in self._managers():
      manager.wait_until_finished()

  def close(self) -> None:
    for manager in self._managers():
      manager.close()


def save_variables(directory: str, variables: dict, meta: dict) -> None:
  """Writes a standalone (e.g. converted) checkpoint that eval.py and predict.py accept."""
  with ocp.CheckpointManager(os.path.abspath(directory), item_names=("variables", "meta")) as mngr:
    mngr.save(0, args=ocp.args.Composite(
        variables=ocp.args.StandardSave(variables), meta=ocp.args.JsonSave(_json_ready(meta))))
    mngr.wait_until_finished()


def resolve(path: str) -> tuple[str, int]:
  """A checkpoint location -> (manager directory, step).

  `path` may be a workdir (its best checkpoint, else its latest), a manager directory
  (`<workdir>/best`, `<workdir>/checkpoints`, a converted checkpoint: its latest step),
  or one step directory (`.../checkpoints/1200`).
  """
  if not os.path.exists(path):
    raise VidtxError(f"checkpoint {path} does not exist")
  path = os.path.abspath(path)
  if os.path.basename(path).isdigit() and os.path.isdir(os.path.join(path, "variables")):
    return os.path.dirname(path), int(os.path.basename(path))
  for candidate in (os.path.join(path, "best"), os.path.join(path, "checkpoints"), path):
    if os.path.isdir(candidate):
      steps = ocp.utils.checkpoint_steps(candidate)
      if steps:
        return candidate, max(steps)
  raise VidtxError(f"no checkpoint found in {path} (expected a workdir, a checkpoint directory or a step)")


def read_meta(path: str) -> dict:
  directory, step = resolve(path)
  with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True)) as mngr:
    return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def restore_variables(path: str, abstract_variables: dict) -> tuple[dict, dict]:
  """(variables, meta) of the checkpoint at `path` (see `resolve`)."""
  directory, step = resolve(path)
  with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True)) as mngr:
    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    restored = mngr.restore(step, args=ocp.args.Composite(
        variables=ocp.args.StandardRestore(abstract_variables)))
  return restored["variables"], meta


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
  for key in sorted(set(saved) | set(ours)):
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
