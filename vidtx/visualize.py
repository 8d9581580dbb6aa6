"""Where a model looks: python -m vidtx.visualize --config C --checkpoint CKPT VIDEO... --out DIR

Each video goes through the config's test protocol; one view, the middle clip's most central
crop, gets a map over its tokens, `[T', h, w]`, non-negative and summing to 1:
  - ViT families (TokShift, TimeSformer, ViViT): the last block's CLS attention (mean over
    heads, the CLS's attention to itself left out), recomputed from the `qkv` output of that
    block's attention (recorded with flax's method interception; the models are unchanged).
    Over space and time where the CLS attends over both (TimeSformer joint, ViViT
    spatio-temporal); per frame where it attends within frames (TokShift, TimeSformer divided
    and space-only: frames weigh equally, as their logits or CLS updates are frame averages);
    the ViViT factorised encoder's map is the spatial CLS attention of each time step weighted
    by the temporal encoder's CLS attention over the time steps.
  - Swin and TSM: Grad-CAM of the predicted class on the last stage's output (channel weights:
    the class score's gradient averaged over every position; ReLU of the weighted sum).
Writes `DIR/<video name>.png` (the sampled frames, the map over them), `.gif` (the overlays,
animated), `DIR/<video name>/frame_NN.png` (each overlay) and `.npz` (the map and the prediction).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidtx.errors import VidtxError

GIF_SIDE = 192  # overlays are enlarged (nearest) to at least this many pixels in the GIF / PNGs


@dataclasses.dataclass
class Maps:
  """A model's map of one clip."""
  maps: np.ndarray  # float32 [T', h, w], >= 0, sums to 1
  kind: str  # "attention" | "grad-cam"
  frames_per_step: int  # input frames per map time step (tubelet size)
  logits: np.ndarray  # float32 [K]


def record_outputs(model, variables, video, paths: Sequence[tuple], deltas: dict | None = None):
  """Runs the model (inference) and returns (logits, {path: output of the submodule at path});
  `deltas` {path: array} are added to those outputs (for gradients with respect to them)."""
  seen = {}

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    path = tuple(context.module.path)
    if context.method_name == "__call__" and path in paths:
      seen[path] = out
      if deltas and path in deltas:
        out = out + deltas[path].astype(out.dtype)
    return out

  with nn.intercept_methods(interceptor):
    logits = model.apply(variables, video, train=False)
  missing = [p for p in paths if p not in seen]
  if missing:
    raise VidtxError(f"{type(model).__name__} has no submodule {'/'.join(missing[0])} (is it built "
                     "with scanned or renamed blocks?)")
  return logits, seen


def attention_probs(qkv: jax.Array, num_heads: int) -> jax.Array:
  """Attention probabilities from a fused qkv output: [..., L, 3 * D] -> float32 [..., heads, L, L],
  as `vit.dot_product_attention` computes them."""
  dim = qkv.shape[-1] // 3
  qkv = qkv.reshape(qkv.shape[:-1] + (3, num_heads, dim // num_heads)).astype(jnp.float32)
  q, k = qkv[..., 0, :, :], qkv[..., 1, :, :]
  logits = jnp.einsum("...qhd,...khd->...hqk", q, k) * (dim // num_heads) ** -0.5
  return jax.nn.softmax(logits, axis=-1)


def cls_attention(qkv: jax.Array, num_heads: int) -> jax.Array:
  """The CLS token's (token 0) attention over the other tokens, mean over heads, renormalised
  without its attention to itself: [..., L, 3 * D] -> [..., L - 1], each row summing to 1."""
  row = attention_probs(qkv, num_heads)[..., 0, 1:].mean(axis=-2)
  return row / row.sum(axis=-1, keepdims=True)


def _block(name: str, depth: int) -> tuple:
  return (f"{name}_{depth - 1}", "attn", "qkv")


def vit_maps(model, variables, video: jax.Array) -> Maps:
  """The last block's CLS attention of a TokShift, TimeSformer or ViViT.  video: float [1, T, H, W, 3]."""
  from vidtx.models import timesformer, tokshift, vivit  # pylint: disable=g-import-not-at-top

  _, t, h, w, _ = video.shape
  grid = (h // model.patch_size, w // model.patch_size)
  n = grid[0] * grid[1]
  heads = model.num_heads
  if isinstance(model, tokshift.TokShift):
    step, paths = 1, [_block("blocks", model.depth)]
    layout = "frames"
  elif isinstance(model, timesformer.TimeSformer):
    step, paths = model.tubelet_size, [_block("blocks", model.depth)]
    layout = "joint_nt" if model.attention_type == "joint_space_time" else "frames"
  elif isinstance(model, vivit.ViViT):
    step, paths = model.tubelet_size, [_block("blocks", model.depth)]
    layout = "joint_tn" if model.model == "spatio_temporal" else "frames"
    if layout == "frames" and model.temporal_depth:
      paths.append(_block("temporal_blocks", model.temporal_depth))
  else:
    raise VidtxError(f"{type(model).__name__} has no CLS attention to show; use grad_cam_maps")
  steps = t // step

  def compute(variables, video):
    logits, seen = record_outputs(model, variables, video, paths)
    cls = cls_attention(seen[paths[0]], heads)
    if layout == "frames":  # [steps, N]: a distribution per time step
      maps = cls.reshape(steps, n)
      weights = cls_attention(seen[paths[1]], heads)[0] if len(paths) > 1 else jnp.full(steps, 1 / steps)
      maps = maps * weights[:, None]
    elif layout == "joint_nt":  # tokens (n, t), time fastest
      maps = cls[0].reshape(n, steps).T
    else:  # tokens (t, n)
      maps = cls[0].reshape(steps, n)
    return logits[0], maps.reshape(steps, *grid)

  logits, maps = jax.jit(compute)(variables, video)
  return Maps(np.asarray(maps, np.float32), "attention", step, np.asarray(logits, np.float32))


def grad_cam_maps(model, variables, video: jax.Array, target: int | None = None) -> Maps:
  """Grad-CAM of class `target` (default: the predicted one) on the last stage of a Swin or TSM.
  video: float [1, T, H, W, 3]."""
  from vidtx.models import swin, tsm  # pylint: disable=g-import-not-at-top

  t = video.shape[1]
  if isinstance(model, swin.SwinTransformer3D):
    path = (f"layers_{len(model.depths) - 1}",)
  elif isinstance(model, tsm.TSM):
    path = (f"bb_3_{tsm.STAGE_BLOCKS[model.depth][3] - 1}",)
  else:
    raise VidtxError(f"{type(model).__name__}: Grad-CAM is defined here for Swin and TSM")

  def compute(variables, video):
    shape = jax.eval_shape(lambda: record_outputs(model, variables, video, [path])[1][path])

    def score(delta):  # the class score, and what the gradient is taken at
      logits, seen = record_outputs(model, variables, video, [path], {path: delta})
      cls = jnp.argmax(jax.lax.stop_gradient(logits[0])) if target is None else target
      return logits[0, cls], (logits[0], seen[path].astype(jnp.float32))

    grad, (logits, feature) = jax.grad(score, has_aux=True)(jnp.zeros(shape.shape, jnp.float32))
    weights = grad.mean(axis=tuple(range(feature.ndim - 1)))  # per channel, over every position
    cam = jax.nn.relu(jnp.einsum("...c,c->...", feature, weights))
    cam = cam.reshape((-1,) + cam.shape[-2:])  # Swin [1, D', H', W'] / TSM [T, h, w] -> [T', h, w]
    total = cam.sum()
    cam = jnp.where(total > 0, cam / jnp.where(total > 0, total, 1.0), 1.0 / cam.size)
    return logits, cam

  logits, cam = jax.jit(compute)(variables, video)
  return Maps(np.asarray(cam, np.float32), "grad-cam", max(1, t // cam.shape[0]),
              np.asarray(logits, np.float32))


def model_maps(model, variables, clip: np.ndarray, data_config) -> Maps:
  """The map of one clip (uint8 [T, H, W, 3], as the eval views give it) for any family."""
  from vidtx.data import device as device_ops  # pylint: disable=g-import-not-at-top
  from vidtx.models import swin, tsm  # pylint: disable=g-import-not-at-top

  video = device_ops.normalize(jnp.asarray(clip)[None], data_config.mean, data_config.std)
  if isinstance(model, (swin.SwinTransformer3D, tsm.TSM)):
    return grad_cam_maps(model, variables, video)
  return vit_maps(model, variables, video)


def frame_heat(maps: Maps, num_frames: int, height: int, width: int) -> np.ndarray:
  """The map at each input frame, in pixels: [T, H, W] (the map of the frame's time step)."""
  from vidtx import plots  # pylint: disable=g-import-not-at-top

  steps = np.minimum(np.arange(num_frames) // maps.frames_per_step, maps.maps.shape[0] - 1)
  return plots.upsample(maps.maps, height, width)[steps]


def load_clip(path: str, config, prepared: dict) -> np.ndarray:
  """A video file as the model sees it in the test protocol, one view: the middle clip, its most
  central crop; uint8 [T, H, W, 3]. `prepared`: how the training data was prepared (the
  checkpoint's meta), as predict.py decodes."""
  from vidtx import export  # pylint: disable=g-import-not-at-top
  from vidtx.data import decode, protocol, views  # pylint: disable=g-import-not-at-top

  decoded = decode.decode_video(path, **export.decode_settings(prepared, config.data))
  data, clips, crops = config.data, config.data.test_clips, config.data.test_crops
  plan = protocol.plan(decoded.source, len(decoded.jpeg_frames), data, clips, crops)
  centre = (np.asarray(plan.resized_hw) - data.image_size) / 2
  crop = int(np.argmin([np.abs(np.asarray(c) - centre).sum() for c in plan.crops]))
  all_views = views.eval_views(decoded.jpeg_frames, data, clips, crops, source=decoded.source)
  return all_views[(clips // 2) * crops + crop]


def write(out_dir: str, name: str, clip: np.ndarray, maps: Maps, label_names: Sequence[str]) -> dict:
  """The pictures of one clip's map; returns their paths {png, gif, frames, npz}."""
  from PIL import Image  # pylint: disable=g-import-not-at-top  (matplotlib's dependency)

  from vidtx import plots  # pylint: disable=g-import-not-at-top

  t, h, w = clip.shape[:3]
  heat = frame_heat(maps, t, h, w)
  probs = np.exp(maps.logits - maps.logits.max())
  probs /= probs.sum()
  predicted = int(np.argmax(probs))
  share = maps.maps.sum(axis=(1, 2))
  steps = np.minimum(np.arange(t) // maps.frames_per_step, len(share) - 1)
  titles = [f"frame {i}: {share[s]:.0%}" for i, s in enumerate(steps)]
  what = "last block's CLS attention" if maps.kind == "attention" else "Grad-CAM"
  title = (f"{name}: predicted {label_names[predicted]} ({probs[predicted]:.0%}); {what} "
           f"(share of each time step above the frames)")
  os.makedirs(os.path.join(out_dir, name), exist_ok=True)
  paths = {"png": os.path.join(out_dir, f"{name}.png"), "gif": os.path.join(out_dir, f"{name}.gif"),
           "npz": os.path.join(out_dir, f"{name}.npz"), "frames": os.path.join(out_dir, name)}
  plots.save(plots.attention_figure(clip, heat, titles, title), paths["png"])
  overlays = plots.overlay(clip, heat, float(heat.max()), scale=max(1, -(-GIF_SIDE // max(h, w))))
  images = [Image.fromarray(frame) for frame in overlays]
  for i, image in enumerate(images):
    image.save(os.path.join(out_dir, name, f"frame_{i:02d}.png"))
  images[0].save(paths["gif"], save_all=True, append_images=images[1:], duration=250, loop=0)
  np.savez(paths["npz"], maps=maps.maps, kind=maps.kind, frames_per_step=maps.frames_per_step,
           logits=maps.logits, predicted=predicted, label_names=np.asarray(list(label_names), str))
  return paths


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top

  from vidtx import cli, evaluate, export, messages, sharding  # pylint: disable=g-import-not-at-top

  FLAGS = flags.FLAGS
  videos = argv[1:]
  cli.require(FLAGS, "config", "checkpoint", "out")
  if not videos:
    raise VidtxError("give one or more video files after the flags")
  config = FLAGS.config
  mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  model, variables, meta = evaluate.restore_model(config, FLAGS.checkpoint, mesh)
  label_names = meta["label_names"]
  export.checkpoint_decoding(meta, config.data, FLAGS.checkpoint)  # says what it assumed
  names = set()
  for path in videos:
    clip = load_clip(path, config, meta.get("prepared") or {})
    maps = model_maps(model, variables, clip, config.data)
    name = os.path.splitext(os.path.basename(path))[0]
    while name in names:  # two videos of the same name from different folders
      name += "_"
    names.add(name)
    written = write(FLAGS.out, name, clip, maps, label_names)
    predicted = label_names[int(np.argmax(maps.logits))]
    messages.say(f"{path}: predicted {predicted}; {maps.kind} map in {written['png']} and "
                 f"{written['gif']}")


if __name__ == "__main__":
  from absl import flags as _flags  # pylint: disable=g-import-not-at-top

  from vidtx import cli as _cli  # pylint: disable=g-import-not-at-top

  _cli.define_config_flag()
  _flags.DEFINE_string("checkpoint", None, "Workdir, checkpoint directory or step directory.")
  _flags.DEFINE_string("out", None, "Directory for the pictures.")
  _cli.run(main)
