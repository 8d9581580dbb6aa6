"""Where a model looks: the pieces the families' pictures (`Family.explain`) share.

A family's `explain(model, variables, video, *, data_config) -> Maps` (video: normalised float
`[1, T, H, W, 3]`) calls one of
  cls_attention_maps  a ViT's CLS attention, recomputed from the `qkv` output of an attention
                      (recorded with flax's method interception; the models are unchanged)
  grad_cam_maps       Grad-CAM of the predicted class on one layer's output
and `python -m vidtx.visualize` writes the result with `Maps.write`. A map is `[T', h, w]` over
the model's tokens (T' time steps of `frames_per_step` input frames), non-negative, summing to 1.
Imports neither vidtx.visualize nor the registry, so family modules can import it.
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
LAYOUTS = ("frames", "time_fastest", "time_first")


@dataclasses.dataclass
class Maps:
  """A model's map of one clip."""
  maps: np.ndarray  # float32 [T', h, w], >= 0, sums to 1
  kind: str  # "attention" | "grad-cam"
  frames_per_step: int  # input frames per map time step (tubelet size)
  logits: np.ndarray  # float32 [K]

  def write(self, out_dir: str, name: str, clip: np.ndarray, label_names: Sequence[str]) -> dict:
    """Writes `out_dir/<name>.png` (the frames, the map over them), `.gif` (the overlays,
    animated), `<name>/frame_NN.png` (each overlay) and `.npz` (the map and the prediction).
    clip: uint8 [T, H, W, 3], the frames the map is of. Returns what visualize prints:
    {"predicted": class name, "<kind> map in": the PNG and GIF}."""
    from PIL import Image  # pylint: disable=g-import-not-at-top  (matplotlib's dependency)

    from vidtx import plots  # pylint: disable=g-import-not-at-top  (matplotlib: only to draw)

    t, h, w = clip.shape[:3]
    heat = frame_heat(self, t, h, w)
    probs = np.exp(self.logits - self.logits.max())
    probs /= probs.sum()
    predicted = int(np.argmax(probs))
    share = self.maps.sum(axis=(1, 2))
    steps = np.minimum(np.arange(t) // self.frames_per_step, len(share) - 1)
    titles = [f"frame {i}: {share[s]:.0%}" for i, s in enumerate(steps)]
    what = "last block's CLS attention" if self.kind == "attention" else "Grad-CAM"
    title = (f"{name}: predicted {label_names[predicted]} ({probs[predicted]:.0%}); {what} "
             f"(share of each time step above the frames)")
    os.makedirs(os.path.join(out_dir, name), exist_ok=True)
    png, gif = os.path.join(out_dir, f"{name}.png"), os.path.join(out_dir, f"{name}.gif")
    plots.save(plots.attention_figure(clip, heat, titles, title), png)
    overlays = plots.overlay(clip, heat, float(heat.max()), scale=max(1, -(-GIF_SIDE // max(h, w))))
    images = [Image.fromarray(frame) for frame in overlays]
    for i, image in enumerate(images):
      image.save(os.path.join(out_dir, name, f"frame_{i:02d}.png"))
    images[0].save(gif, save_all=True, append_images=images[1:], duration=250, loop=0)
    np.savez(os.path.join(out_dir, f"{name}.npz"), maps=self.maps, kind=self.kind,
             frames_per_step=self.frames_per_step, logits=self.logits, predicted=predicted,
             label_names=np.asarray(list(label_names), str))
    return {"predicted": label_names[predicted], f"{self.kind} map in": f"{png} and {gif}"}


def frame_heat(maps: Maps, num_frames: int, height: int, width: int) -> np.ndarray:
  """The map at each input frame, in pixels: [T, H, W] (the map of the frame's time step)."""
  from vidtx import plots  # pylint: disable=g-import-not-at-top  (matplotlib: only to draw)

  steps = np.minimum(np.arange(num_frames) // maps.frames_per_step, maps.maps.shape[0] - 1)
  return plots.upsample(maps.maps, height, width)[steps]


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


def last_qkv(blocks: str, depth: int) -> tuple:
  """The path of the fused qkv Dense of the last of the list modules `<blocks>_<i>`."""
  return (f"{blocks}_{depth - 1}", "attn", "qkv")


def cls_attention_maps(model, variables, video: jax.Array, qkv: tuple, *, layout: str,
                       frames_per_step: int, time_qkv: tuple | None = None) -> Maps:
  """The CLS attention (mean over heads, without the CLS itself) at the attention whose fused
  qkv output is at path `qkv`, over the patch grid (model.patch_size, model.num_heads heads).

  `layout`, how that attention's tokens lie: 'frames': a CLS per time step attending within it
  (time steps weigh equally, or by the CLS attention over time steps at `time_qkv`);
  'time_fastest': one CLS over tokens (patch, time step); 'time_first': (time step, patch).
  video: float [1, T, H, W, 3].
  """
  if layout not in LAYOUTS:
    raise ValueError(f"layout={layout!r}; expected one of {LAYOUTS}")
  _, t, h, w, _ = video.shape
  grid = (h // model.patch_size, w // model.patch_size)
  n, steps, heads = grid[0] * grid[1], t // frames_per_step, model.num_heads
  paths = [qkv] + ([time_qkv] if time_qkv is not None else [])

  def compute(variables, video):
    logits, seen = record_outputs(model, variables, video, paths)
    cls = cls_attention(seen[qkv], heads)
    if layout == "frames":  # [steps, N]: a distribution per time step
      weights = (cls_attention(seen[time_qkv], heads)[0] if time_qkv is not None
                 else jnp.full(steps, 1 / steps))
      maps = cls.reshape(steps, n) * weights[:, None]
    elif layout == "time_fastest":
      maps = cls[0].reshape(n, steps).T
    else:
      maps = cls[0].reshape(steps, n)
    return logits[0], maps.reshape(steps, *grid)

  logits, maps = jax.jit(compute)(variables, video)
  return Maps(np.asarray(maps, np.float32), "attention", frames_per_step,
              np.asarray(logits, np.float32))


def grad_cam_maps(model, variables, video: jax.Array, layer: tuple,
                  target: int | None = None) -> Maps:
  """Grad-CAM of class `target` (default: the predicted one) on the output of the submodule at
  path `layer` (channels last): channel weights are the class score's gradient averaged over
  every position, the map the ReLU of the weighted sum.  video: float [1, T, H, W, 3]."""
  t = video.shape[1]

  def compute(variables, video):
    shape = jax.eval_shape(lambda: record_outputs(model, variables, video, [layer])[1][layer])

    def score(delta):  # the class score, and what the gradient is taken at
      logits, seen = record_outputs(model, variables, video, [layer], {layer: delta})
      cls = jnp.argmax(jax.lax.stop_gradient(logits[0])) if target is None else target
      return logits[0, cls], (logits[0], seen[layer].astype(jnp.float32))

    grad, (logits, feature) = jax.grad(score, has_aux=True)(jnp.zeros(shape.shape, jnp.float32))
    weights = grad.mean(axis=tuple(range(feature.ndim - 1)))  # per channel, over every position
    cam = jax.nn.relu(jnp.einsum("...c,c->...", feature, weights))
    cam = cam.reshape((-1,) + cam.shape[-2:])  # Swin [1, D', H', W'], TSM [T, h, w] -> [T', h, w]
    total = cam.sum()
    cam = jnp.where(total > 0, cam / jnp.where(total > 0, total, 1.0), 1.0 / cam.size)
    return logits, cam

  logits, cam = jax.jit(compute)(variables, video)
  return Maps(np.asarray(cam, np.float32), "grad-cam", max(1, t // cam.shape[0]),
              np.asarray(logits, np.float32))
