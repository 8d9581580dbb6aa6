"""Pictures of results (matplotlib, no display): confusion matrices, clip strips, attention overlays.

Figures are `matplotlib.figure.Figure`s drawn without pyplot (no global state, no window);
`to_array` turns one into RGB pixels for TensorBoard, `save` into a PNG.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vidtx.evaluate import confused_pairs

# Up to this many classes the confusion matrix is drawn whole; above, only the classes of the
# most confused pairs (101 or 400 names do not fit on one axis).
MAX_MATRIX_CLASSES = 30
HEAT = colormaps["inferno"]


def to_array(fig: Figure) -> np.ndarray:
  """The figure's pixels: uint8 [H, W, 3]."""
  canvas = FigureCanvasAgg(fig)
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save(fig: Figure, path: str, dpi: int = 100) -> str:
  FigureCanvasAgg(fig)
  fig.savefig(path, dpi=dpi)
  return path


def pair_classes(confusion: np.ndarray, limit: int) -> list[int]:
  """Up to `limit` classes taken from the most confused pairs, each pair's two side by side."""
  chosen: list[int] = []
  for i, j, _ in confused_pairs(confusion, confusion.shape[0] ** 2):
    for c in (i, j):
      if c not in chosen and len(chosen) < limit:
        chosen.append(c)
    if len(chosen) >= limit:
      break
  return chosen


def confusion_figure(confusion: np.ndarray, label_names: Sequence[str], title: str = "",
                     max_classes: int = MAX_MATRIX_CLASSES, max_pairs: int = 20) -> Figure:
  """The confusion matrix (rows: true class, columns: predicted), colour = fraction of the true
  class's videos, each row labelled with the class's top-1.

  More than `max_classes` classes: the matrix of the classes in the most confused pairs only,
  next to a bar chart of the `max_pairs` most confused pairs.
  """
  confusion = np.asarray(confusion, np.int64)
  k = confusion.shape[0]
  videos = confusion.sum(axis=1)
  whole = k <= max_classes
  shown = list(range(k)) if whole else pair_classes(confusion, max_classes)
  if not shown:  # nothing confused at all: show the first classes
    shown = list(range(min(k, max_classes)))
  sub = confusion[np.ix_(shown, shown)]
  fraction = sub / np.maximum(videos[shown], 1)[:, None]
  n = len(shown)
  side = max(6.0, 0.26 * n + 3.5)
  pairs = [] if whole else confused_pairs(confusion, max_pairs)
  fig = Figure(figsize=(side + (6.5 if pairs else 0), side), layout="constrained")
  if pairs:
    ax, bars = fig.subplots(1, 2, width_ratios=[side, 6.5])
  else:
    ax, bars = fig.subplots(), None
  image = ax.imshow(fraction, cmap="Blues", vmin=0.0, vmax=1.0)
  names = [label_names[c] for c in shown]
  hits = [f"{confusion[c, c] / videos[c]:.0%}" if videos[c] else "-" for c in shown]
  ax.set_xticks(range(n), names, rotation=90, fontsize=8)
  ax.set_yticks(range(n), [f"{name}  {hit}" for name, hit in zip(names, hits)], fontsize=8)
  ax.set_xlabel("predicted class")
  ax.set_ylabel("true class (its top-1)")
  if n <= 20:  # counts in the cells where they fit
    for (i, j), count in np.ndenumerate(sub):
      if count:
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                color="white" if fraction[i, j] > 0.5 else "black")
  fig.colorbar(image, ax=ax, shrink=0.6, label="fraction of the true class's videos")
  total = int(videos.sum())
  top1 = np.trace(confusion) / max(total, 1)
  what = "" if whole else f"\nthe {n} classes of the most confused pairs, of {k}"
  ax.set_title(f"{title + chr(10) if title else ''}top-1 {top1:.1%} over {total} videos{what}",
               fontsize=10)
  if bars is not None:
    labels = [f"{label_names[i]} → {label_names[j]}" for i, j, _ in pairs]
    counts = [c for _, _, c in pairs]
    bars.barh(range(len(pairs)), counts, color="tab:red")
    bars.set_yticks(range(len(pairs)), labels, fontsize=8)
    bars.invert_yaxis()
    bars.set_xlabel("videos")
    bars.set_title(f"the {len(pairs)} most confused pairs (true → predicted)", fontsize=10)
  return fig


def clip_strip_figure(clips: np.ndarray, captions: Sequence[str], max_frames: int = 8,
                      title: str = "") -> Figure:
  """One row per clip, `max_frames` frames of it (evenly spaced) across.  clips: float [N, T, H, W, 3]
  in [0, 1]."""
  n, t = clips.shape[:2]
  frames = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))
  cell = 1.4
  fig = Figure(figsize=(cell * len(frames) + 0.4, cell * n + 0.8), layout="constrained")
  axes = np.asarray(fig.subplots(n, len(frames), squeeze=False))
  for i in range(n):
    for j, f in enumerate(frames):
      ax = axes[i, j]
      ax.imshow(np.clip(clips[i, f], 0.0, 1.0), interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if i == 0:
        ax.set_title(f"frame {f}", fontsize=8)
    axes[i, 0].set_ylabel(captions[i].replace(" + ", "\n+ "), fontsize=8, rotation=0, ha="right",
                          va="center")
  if title:
    fig.suptitle(title, fontsize=10)
  return fig


def upsample(maps: np.ndarray, height: int, width: int) -> np.ndarray:
  """Token maps [..., h, w] -> [..., height, width], bilinear (cell centres aligned)."""
  h, w = maps.shape[-2:]
  ys = np.clip((np.arange(height) + 0.5) * h / height - 0.5, 0, h - 1)
  xs = np.clip((np.arange(width) + 0.5) * w / width - 0.5, 0, w - 1)
  y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
  y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
  wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
  top = maps[..., y0, :][..., x0] * (1 - wx) + maps[..., y0, :][..., x1] * wx
  bottom = maps[..., y1, :][..., x0] * (1 - wx) + maps[..., y1, :][..., x1] * wx
  return top * (1 - wy) + bottom * wy


def overlay(frames: np.ndarray, heat: np.ndarray, vmax: float, alpha: float = 0.55,
            scale: int = 1) -> np.ndarray:
  """Heat maps on frames: uint8 [..., H * scale, W * scale, 3].  frames: uint8 [..., H, W, 3];
  heat: [..., H, W] (0 .. vmax)."""
  colours = HEAT(np.clip(heat / max(vmax, 1e-12), 0.0, 1.0))[..., :3]
  mixed = (1 - alpha) * frames.astype(np.float32) / 255.0 + alpha * colours
  out = np.round(np.clip(mixed, 0.0, 1.0) * 255).astype(np.uint8)
  if scale > 1:
    out = out.repeat(scale, axis=-3).repeat(scale, axis=-2)
  return out


def attention_figure(frames: np.ndarray, heat: np.ndarray, column_titles: Sequence[str],
                     title: str) -> Figure:
  """Two rows: the sampled frames, and the map overlaid on them (one colour scale for all).
  frames: uint8 [T, H, W, 3]; heat: [T, H, W]."""
  t = frames.shape[0]
  cell = 1.5
  fig = Figure(figsize=(cell * t + 0.8, 2 * cell + 0.9), layout="constrained")
  axes = np.asarray(fig.subplots(2, t, squeeze=False))
  vmax = float(heat.max())
  for i in range(t):
    axes[0, i].imshow(frames[i], interpolation="nearest")
    axes[0, i].set_title(column_titles[i], fontsize=8)
    axes[1, i].imshow(overlay(frames[i], heat[i], vmax), interpolation="nearest")
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  axes[0, 0].set_ylabel("frames", fontsize=8)
  axes[1, 0].set_ylabel("map", fontsize=8)
  fig.suptitle(title, fontsize=10)
  return fig
