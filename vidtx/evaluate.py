"""Evaluation: validation during training (clip-level) and the test protocol (video-level).

Both run the same step on batches of `V` views per video, `video: [B, V, T, H, W, 3]`:
validation uses one view (1 clip x 1 centre crop), so it scores clips; the test
protocol scores each video from all its `clips x crops` views, averaging logits
(`score`) or softmax probabilities (`prob`). Padded examples (`mask=False`) count
nowhere, so the result does not depend on the batch size or the device count.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from vidtx import losses, sharding
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


def make_eval_step(model, data_config, averaging: str):
  """jitted (variables, batch) -> summed counts over the unmasked videos of the batch."""

  def eval_step(variables, batch):
    scores = video_scores(model, variables, batch["video"], data_config, averaging)
    mask = batch["mask"]
    labels = batch["label"]
    log_probs = jax.nn.log_softmax(scores if averaging == "score" else jnp.log(scores + 1e-12))
    nll = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
    return {
        "correct1": jnp.sum(losses.correct_topk(scores, labels, 1) & mask),
        "correct5": jnp.sum(losses.correct_topk(scores, labels, 5) & mask),
        "loss": jnp.sum(jnp.where(mask, nll, 0.0)),
        "count": jnp.sum(mask),
    }

  return jax.jit(eval_step)


def run(eval_step, variables, batches: Iterable[dict], mesh, num_batches: int | None = None,
        shards: Sequence[str] = ()) -> dict[str, float]:
  """Runs `eval_step` over all batches; returns top1, top5, mean loss and the number of videos.

  `num_batches` (what every process yields): a process whose input fails goes on with empty
  batches to the last one, so that every process ends together and raises the same one-line
  error (naming the shard and record, among `shards`) instead of leaving the others waiting.
  """
  from vidtx.data import integrity  # pylint: disable=g-import-not-at-top

  def _failure(error: BaseException) -> str:
    return integrity.describe_read_error(error, shards)

  totals = {"correct1": 0, "correct5": 0, "loss": 0.0, "count": 0}
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
      local = pad_to_multiple({k: local[k] for k in ("video", "label", "mask")}, host_shards)
      if empty is None:
        empty = {k: np.zeros_like(v) for k, v in local.items()}
      counts = jax.device_get(eval_step(variables, sharding.global_batch(local, mesh)))
      for key in totals:
        totals[key] += counts[key].item()
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
  return {"top1": totals["correct1"] / n, "top5": totals["correct5"] / n,
          "loss": totals["loss"] / n, "num_videos": int(n)}


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


def test_protocol(config, path: str, mesh, split: str | None = None) -> dict:
  """Video-level evaluation of the checkpoint at `path` on `split` (default: the test split).

  Checks that the checkpoint fits config.model and that its label map is the dataset's.
  Returns a JSON-ready dict: protocol, split, top1, top5, num_videos, views, averaging, ...
  """
  from vidtx import checkpoint as ckpt  # pylint: disable=g-import-not-at-top
  from vidtx import data as data_lib  # pylint: disable=g-import-not-at-top
  data_lib.require_prepared(config.data.dir)
  from vidtx.data import format as data_format, integrity, pipeline  # pylint: disable=g-import-not-at-top

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
  result = run(make_eval_step(model, config.data, averaging), variables, dataset.as_numpy_iterator(),
               mesh, num_batches=len(dataset),
               shards=[str(p) for p in builder.info.splits[split].filepaths])
  return {
      "protocol": f"test (video-level: {clips} clip(s) x {crops} crop(s) per video, {averaging} averaging)",
      "split": split, "top1": result["top1"], "top5": result["top5"], "loss": result["loss"],
      "num_videos": result["num_videos"], "views": clips * crops, "clips": clips, "crops": crops,
      "averaging": averaging, "checkpoint_step": meta.get("step"),
  }
