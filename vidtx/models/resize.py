"""Resizing and inflation maths: embeddings, kernels and bias tables to another size.

Used by the models at run time (a clip of another size than configured; traceable, numpy or
jax arrays) and by vidtx.convert at load time (numpy). Messages about what was resized are the
caller's.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from vidtx.errors import VidtxError

POS_EMBED_METHODS = ("nearest", "linear")
INFLATE_METHODS = ("average", "central_frame")


def nearest_indices(src: int, dst: int) -> np.ndarray:
  """Source index per output index for nearest resizing src -> dst: floor(i * src / dst),
  computed in float32 as Paddle's and torch's interpolate kernels do (so the index matches
  theirs at every size)."""
  ratio = np.float32(src / dst)
  return np.minimum((ratio * np.arange(dst, dtype=np.float32)).astype(np.int64), src - 1)


def resize_time_embed(time_embed, num_frames: int):
  """[1, T0, D] -> [1, num_frames, D] by nearest interpolation (numpy or jax)."""
  if time_embed.shape[1] == num_frames:
    return time_embed
  return time_embed[:, nearest_indices(time_embed.shape[1], num_frames)]


def resize_pos_embed(pos_embed, grid: tuple[int, int], method: str = "nearest",
                     name: str = "pos_embed"):
  """[1, 1 + s*s, D] -> [1, 1 + grid[0]*grid[1], D]: the patch grid resized, the CLS position kept.

  Two methods because PaddleVideo uses two, and each reproduces Paddle where it happens:
  'nearest' (numpy or jax, traceable) is its ViTs' forward on an input of another size;
  'linear' (numpy) is scipy.ndimage.zoom(order=1), its rule when loading a checkpoint.
  """
  n = pos_embed.shape[1] - 1
  side = int(round(n ** 0.5))
  if side * side != n:
    raise VidtxError(f"{name}: {n} patch positions do not form a square grid")
  if (side, side) == tuple(grid):
    return pos_embed
  patches = pos_embed[0, 1:].reshape(side, side, -1)
  if method == "linear":
    patches = zoom_linear(np.asarray(patches), grid)
  elif method == "nearest":
    patches = patches[nearest_indices(side, grid[0])][:, nearest_indices(side, grid[1])]
  else:
    raise VidtxError(f"{name}: resize method {method!r}; expected one of {list(POS_EMBED_METHODS)}")
  xp = np if isinstance(pos_embed, np.ndarray) else jnp
  return xp.concatenate([pos_embed[:, :1], patches.reshape(1, grid[0] * grid[1], -1)], axis=1)


def zoom_linear(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """[h, w, D] -> [size[0], size[1], D] with scipy.ndimage.zoom(order=1), as PaddleVideo."""
  import scipy.ndimage  # pylint: disable=g-import-not-at-top  (load time only)
  h, w, _ = grid.shape
  return scipy.ndimage.zoom(grid, (size[0] / h, size[1] / w, 1), order=1)


def _cubic_weights(t: np.ndarray, a: float = -0.75) -> np.ndarray:
  """Cubic-convolution weights of the taps at -1, 0, 1, 2 for fractional offsets t: [S] -> [S, 4]."""
  near = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1
  far = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def resize_bicubic(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """[h, w, C] -> [size[0], size[1], C]; Paddle/torch bicubic (a=-0.75, align_corners=False)."""
  for axis, out in enumerate(size):
    n = x.shape[axis]
    scale = np.float32(n / out)
    src = (np.arange(out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    base = np.floor(src).astype(np.int64)
    weights = _cubic_weights(src - base).astype(np.float32)
    taps = np.clip(base[:, None] + np.arange(-1, 3)[None, :], 0, n - 1)
    moved = np.moveaxis(x, axis, -1)
    x = np.moveaxis((moved[..., taps] * weights).sum(-1), -1, axis)
  return x


def inflate_kernel(kernel: np.ndarray, frames: int, method: str = "average") -> np.ndarray:
  """2D conv kernel [kh, kw, in, out] -> 3D [frames, kh, kw, in, out].

  'average': the 2D kernel in every frame, divided by `frames` (a static video gives the 2D
  response; PaddleVideo's Swin rule); 'central_frame': the 2D kernel in frame frames // 2,
  zeros elsewhere.
  """
  if method == "average":
    return np.repeat(kernel[None], frames, axis=0) / frames
  if method == "central_frame":
    out = np.zeros((frames,) + kernel.shape, kernel.dtype)
    out[frames // 2] = kernel
    return out
  raise VidtxError(f"init_from.options.inflate={method!r}; expected one of {list(INFLATE_METHODS)}")


def inflate_bias_table(table: np.ndarray, window: tuple[int, int, int]) -> np.ndarray:
  """A 2D relative position bias table [(2S-1)^2, heads] -> the 3D table of `window` (Wd, Wh, Ww),
  [(2Wd-1)(2Wh-1)(2Ww-1), heads]: bicubic-resized to (2Wh-1, 2Ww-1) where S differs, then the
  same plane for every time offset."""
  wd, wh, ww = window
  side, heads = int(round(table.shape[0] ** 0.5)), table.shape[1]
  if (side, side) != (2 * wh - 1, 2 * ww - 1):
    table = resize_bicubic(table.reshape(side, side, heads), (2 * wh - 1, 2 * ww - 1))
  return np.tile(table.reshape(-1, heads), (2 * wd - 1, 1))
