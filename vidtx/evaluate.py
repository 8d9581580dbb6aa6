"""Evaluation: validation during training (clip-level) and the test protocol (video-level).

Both run the same step on batches of `V` views per video, `video: [B, V, T, H, W, 3]`:
validation uses one view (1 clip x 1 centre crop), so it scores clips; the test
protocol scores each video from all its `clips x crops` views, averaging logits
(`score`) or softmax probabilities (`prob`). Padded examples (`mask=False`) count
nowhere, so the result does not depend on the batch size or the device count.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from vidtx import losses, score_files, sharding
from vidtx.data import device as device_ops
from vidtx.errors import VidtxError

AVERAGING = ("score", "prob")


def per_host_batch(global_batch: int) -> int:
  """This host's share of a global eval batch."""
  return max(1, global_batch // jax.process_count())


def pad_to_multiple(local: dict, multiple: int) -> dict:
  """Pads a host batch with masked-out examples so it splits evenly over the devices."""
  size = len(local["mask"])
  extra = -size % multiple
  if not extra:
    return local
  return {k: np.concatenate([v, np.zeros((extra,) + v.shape[1:], v.dtype)]) for k, v in local.items()}


def video_scores(model, variables, video: jax.Array, data_config, averaging: str) -> jax.Array:
  """Per-video class scores from all its views.  video: uint8 [B, V, T, H, W, 3] -> [B, K]."""
  if averaging not in AVERAGING:
    raise VidtxError(f"config.eval.averaging={averaging!r}; use one of {AVERAGING}")
  b, v = video.shape[:2]
  x = device_ops.normalize(video.reshape((b * v,) + video.shape[2:]), data_config.mean, data_config.std)
  logits = model.apply(variables, x, train=False).astype(jnp.float32).reshape(b, v, -1)
  if averaging == "prob":
    return jax.nn.softmax(logits, axis=-1).mean(axis=1)
  return logits.mean(axis=1)


def make_eval_step(model, data_config, averaging: str, *, per_video: bool = False):
  """jitted (variables, batch) -> summed counts and the confusion matrix [K, K] (rows: true
  class, columns: predicted) over the unmasked videos of the batch.

  `per_video`: also every video's `scores` [B, K], `label`, `mask` and `index` (position in the
  split), laid out as the global batch (for --save_scores).
  """

  if losses.is_label_free(model):
    return jax.jit(lambda variables, batch: own_loss(model, variables, batch, data_config))

  def eval_step(variables, batch):
    scores = video_scores(model, variables, batch["video"], data_config, averaging)
    mask = batch["mask"]
    labels = batch["label"]
    log_probs = jax.nn.log_softmax(scores if averaging == "score" else jnp.log(scores + 1e-12))
    nll = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
    correct1 = losses.correct_topk(scores, labels, 1)
    # A top-1 hit (ties counted as correct_topk does) is predicted as its label: trace = correct1.
    predicted = jnp.where(correct1, labels, jnp.argmax(scores, axis=-1))
    num_classes = scores.shape[-1]
    truth = jax.nn.one_hot(labels, num_classes, dtype=jnp.int32) * mask[:, None].astype(jnp.int32)
    out = {
        "correct1": jnp.sum(correct1 & mask),
        "correct5": jnp.sum(losses.correct_topk(scores, labels, 5) & mask),
        "loss": jnp.sum(jnp.where(mask, nll, 0.0)),
        "count": jnp.sum(mask),
        "confusion": jnp.einsum("bi,bj->ij", truth, jax.nn.one_hot(predicted, num_classes, dtype=jnp.int32)),
    }
    if per_video:
      out.update(scores=scores, label=labels, mask=mask, index=batch["index"])
    return out

  return jax.jit(eval_step)


def own_loss(model, variables, batch: dict, data_config) -> dict:
  """A label-free model's eval step (losses.is_label_free): its loss summed over the unmasked
  videos (each the mean over its views) as `loss`; no classes, so no hits and an empty
  confusion matrix."""
  video = batch["video"]
  b, v = video.shape[:2]
  x = device_ops.normalize(video.reshape((b * v,) + video.shape[2:]), data_config.mean, data_config.std)
  per_video = model.apply(variables, x, train=False).astype(jnp.float32).reshape(b, v).mean(axis=1)
  mask = batch["mask"]
  zero = jnp.zeros((), jnp.int32)
  return {"correct1": zero, "correct5": zero, "loss": jnp.sum(jnp.where(mask, per_video, 0.0)),
          "count": jnp.sum(mask), "confusion": jnp.zeros((0, 0), jnp.int32)}


PER_VIDEO = ("scores", "label", "mask", "index")


def run(eval_step, variables, batches: Iterable[dict], mesh, num_batches: int | None = None,
        shards: Sequence[str] = ()) -> dict:
  """Runs `eval_step` over all batches; returns top1, top5, mean loss, the number of videos and
  the confusion matrix (int64 [K, K]); with a `per_video` step also `scores` [N, K], `labels` [N]
  and `index` [N] of every video of every process, by position in the split.

  `num_batches` (what every process yields): a process whose input fails goes on with empty
  batches to the last one, so that every process ends together and raises the same one-line
  error (naming the shard and record, among `shards`) instead of leaving the others waiting.
  """
  from vidtx.data import integrity  # pylint: disable=g-import-not-at-top

  def _failure(error: BaseException) -> str:
    return integrity.describe_read_error(error, shards)

  totals = {"correct1": 0, "correct5": 0, "loss": 0.0, "count": 0}
  confusion, per_video = None, []
  host_shards = max(1, (mesh.shape["data"] * mesh.shape["fsdp"]) // jax.process_count())
  iterator, error, empty = iter(batches), None, None
  with jax.set_mesh(mesh):
    done = 0
    while num_batches is None or done < num_batches:
      try:
        local = next(iterator) if error is None else empty
      except StopIteration:
        if num_batches is None:
          break
        local, error = empty, VidtxError(f"the evaluation input ended after {done} of {num_batches} batches")
      except Exception as e:  # pylint: disable=broad-except  (ended together below)
        local, error = empty, e
      if local is None:  # failed before the first batch: nothing to stand in for it
        raise VidtxError(_failure(error))
      keys = ("video", "label", "mask") + (("index",) if "index" in local else ())
      local = pad_to_multiple({k: local[k] for k in keys}, host_shards)
      if empty is None:
        empty = {k: np.zeros_like(v) for k, v in local.items()}
      out = eval_step(variables, sharding.global_batch(local, mesh))
      if "scores" in out:  # every process takes part in the gather
        videos = multihost_utils.process_allgather({k: out[k] for k in PER_VIDEO}, tiled=True)
        keep = np.asarray(videos["mask"], bool)
        per_video.append({k: np.asarray(videos[k])[keep] for k in ("scores", "label", "index")})
      counts = jax.device_get({k: out[k] for k in (*totals, "confusion")})
      for key in totals:
        totals[key] += counts[key].item()
      confusion = counts["confusion"].astype(np.int64) + (0 if confusion is None else confusion)
      done += 1
  failed = error is not None
  if jax.process_count() > 1:
    failed = bool(np.any(multihost_utils.process_allgather(np.asarray(failed))))
  if failed:
    raise VidtxError(_failure(error) if error is not None else
                     "the evaluation input of another process failed (see its message)")
  n = totals["count"]
  if n == 0:
    raise VidtxError("evaluation saw no videos (is the split empty?)")
  result = {"top1": totals["correct1"] / n, "top5": totals["correct5"] / n,
            "loss": totals["loss"] / n, "num_videos": int(n), "confusion": confusion}
  if per_video:
    joined = {k: np.concatenate([b[k] for b in per_video]) for k in ("scores", "label", "index")}
    order = np.argsort(joined["index"], kind="stable")
    result.update(scores=joined["scores"][order], labels=joined["label"][order],
                  index=joined["index"][order])
  return result


def confused_pairs(confusion: np.ndarray, limit: int) -> list[tuple[int, int, int]]:
  """The `limit` largest off-diagonal cells: (true class, predicted class, videos), largest first."""
  off = np.array(confusion, np.int64)
  np.fill_diagonal(off, 0)
  order = np.argsort(-off, axis=None, kind="stable")[:limit]
  return [(int(i), int(j), int(off[i, j])) for i, j in zip(*np.unravel_index(order, off.shape))
          if off[i, j] > 0]


def class_report(confusion: np.ndarray, label_names: Sequence[str], num_pairs: int = 10) -> dict:
  """Per-class results of a confusion matrix [K, K] (rows: true class, columns: predicted).

  JSON-ready: `mean_class_top1` (the mean over the classes that have videos of their top-1,
  as UCF101 / Kinetics papers report beside top-1), `per_class` (class, top1 or None without
  videos, videos), `most_confused` (the `num_pairs` largest off-diagonal cells: true,
  predicted, videos, fraction of the true class) and `confusion_matrix`.
  """
  confusion = np.asarray(confusion, np.int64)
  if confusion.shape != (len(label_names),) * 2:
    raise VidtxError(f"a confusion matrix of shape {confusion.shape} does not fit "
                     f"{len(label_names)} class names")
  videos = confusion.sum(axis=1)
  hits = np.diag(confusion)
  present = videos > 0
  return {
      "mean_class_top1": float(np.mean(hits[present] / videos[present])) if present.any() else 0.0,
      "per_class": [{"class": name, "top1": float(hits[i] / videos[i]) if videos[i] else None,
                     "videos": int(videos[i])} for i, name in enumerate(label_names)],
      "most_confused": [{"true": label_names[i], "predicted": label_names[j], "videos": count,
                         "fraction": count / int(videos[i])}
                        for i, j, count in confused_pairs(confusion, num_pairs)],
      "confusion_matrix": {"rows": "true class", "columns": "predicted class",
                           "classes": list(label_names), "counts": confusion.tolist()},
  }


def to_json(result: dict) -> str:
  """A result as indented JSON text, lists of numbers (confusion-matrix rows) on one line each."""
  text = json.dumps(result, indent=2)
  return re.sub(r"\[([-+\d\s,.eE]+)\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)


def top_k(probs: np.ndarray, label_names: list[str], k: int = 5) -> list[tuple[str, float]]:
  """The k most probable (class name, probability) of one video.  probs: [K]."""
  order = np.argsort(-np.asarray(probs))[:k]
  return [(label_names[i], float(probs[i])) for i in order]


def restore_model(config, path: str, mesh):
  """(model, variables, meta) from the checkpoint at `path`, placed on `mesh` for inference.

  `path`: a workdir (its best checkpoint, else its latest), a checkpoint directory or a step.
  """
  from vidtx import checkpoint as ckpt  # pylint: disable=g-import-not-at-top
  from vidtx import models  # pylint: disable=g-import-not-at-top

  meta = ckpt.read_meta(path)
  ckpt.check_model_matches(meta, config.model, path)
  model = models.build(config.model)
  boxed = models.abstract_variables(model, config.model, jax.random.key(0))
  shardings = sharding.variable_shardings(boxed, mesh, sharding.rules(config))
  unboxed = nn.unbox(boxed)
  abstract = {"params": unboxed["params"], "batch_stats": unboxed.get("batch_stats", {})}
  variables, meta = ckpt.restore_variables(path, ckpt.abstract(abstract, shardings))
  return model, variables, meta


def restore_teacher(config, mesh, label_names: list[str]):
  """The frozen teacher of `config.distill.teacher` (a checkpoint): (model, variables).

  Its model config comes from its checkpoint; it must take the student's clips and
  predict the same classes in the same order.
  """
  import ml_collections  # pylint: disable=g-import-not-at-top
  from vidtx import checkpoint as ckpt  # pylint: disable=g-import-not-at-top

  path = config.distill.teacher
  meta = ckpt.read_meta(path)
  teacher_model = ml_collections.ConfigDict(meta["model"])
  for key in ("num_frames", "image_size", "num_classes"):
    if teacher_model.get(key) != config.model.get(key):
      raise VidtxError(
          f"distillation teacher {path} has model.{key}={teacher_model.get(key)!r} and the student "
          f"{config.model.get(key)!r}: the teacher must see the student's clips and predict its classes")
  ckpt.check_labels_match(meta.get("label_names", []), label_names, path, config.data.dir)
  teacher_config = config.copy_and_resolve_references()
  teacher_config.model = teacher_model
  model, variables, _ = restore_model(teacher_config, path, mesh)
  return model, variables


def test_protocol(config, path: str, mesh, split: str | None = None, *,
                  save_scores: str | None = None) -> dict:
  """Video-level evaluation of the checkpoint at `path` on `split` (default: the test split).

  Checks that the checkpoint fits config.model and that its label map is the dataset's.
  Returns a JSON-ready dict: protocol, split, top1, top5, num_videos, views, averaging, ...,
  and `class_report`'s per-class results. `save_scores`: every video's scores are gathered
  and process 0 writes them there (`vidtx.score_files.write_scores`).
  """
  from vidtx import checkpoint as ckpt  # pylint: disable=g-import-not-at-top
  from vidtx import data as data_lib  # pylint: disable=g-import-not-at-top
  data_lib.require_prepared(config.data.dir)
  from vidtx.data import format as data_format  # pylint: disable=g-import-not-at-top
  from vidtx.data import integrity, pipeline, reading  # pylint: disable=g-import-not-at-top

  split = split or config.data.test_split
  label_names = integrity.label_names(config.data.dir)
  builder = data_format.builder(config.data.dir)
  integrity.check_splits(builder, [split], frame_index=config.data.read_sampled_frames)
  model, variables, meta = restore_model(config, path, mesh)
  ckpt.check_labels_match(meta["label_names"], label_names, path, config.data.dir)
  clips, crops = config.data.test_clips, config.data.test_crops
  averaging = config.eval.averaging
  dataset = pipeline.make_eval_dataset(
      config.data, split=split, batch_size=per_host_batch(config.eval.batch_size),
      num_clips=clips, num_crops=crops, process_index=jax.process_index(),
      process_count=jax.process_count())
  step = make_eval_step(model, config.data, averaging, per_video=save_scores is not None)
  result = run(step, variables, dataset.as_numpy_iterator(), mesh, num_batches=len(dataset),
               shards=[str(p) for p in builder.info.splits[split].filepaths])
  protocol = f"test (video-level: {clips} clip(s) x {crops} crop(s) per video, {averaging} averaging)"
  if save_scores is not None and jax.process_index() == 0:
    ids = reading.video_ids(builder, split)
    score_files.write_scores(save_scores, scores=result["scores"], labels=result["labels"],
                             ids=[ids[i] for i in result["index"]], label_names=label_names,
                             averaging=averaging, split=split, protocol=protocol,
                             checkpoint=os.path.abspath(path))
  return {
      "protocol": protocol,
      "split": split, "top1": result["top1"], "top5": result["top5"], "loss": result["loss"],
      "num_videos": result["num_videos"], "views": clips * crops, "clips": clips, "crops": crops,
      "averaging": averaging, "checkpoint_step": meta.get("step"),
      **class_report(result["confusion"], label_names),
      **({"scores_file": os.path.abspath(save_scores)} if save_scores is not None else {}),
  }
