"""The synthetic motion dataset: real video files whose classes differ only in motion.

Classes come in pairs, each the time-reverse of the other: a video of the second
class of a pair is drawn exactly like one of the first and played backwards.
Within a pair the set of frames is therefore identically distributed, and a
model that ignores frame order cannot beat chance (50%) between the two. Everything
else is random per clip: look (shape, colour, faint background texture), size,
position, speed and noise, so appearance carries no class information and a model
has to generalise across looks (looks shared by a UCF101-style group let small
models learn features that fail on the test groups' unseen looks). Files use the
UCF101 layout and are prepared with the UCF101 preparation (split 1):

    <root>/videos/<Class>/v_<Class>_gXX_cYY.avi
    <root>/annotations/classInd.txt, trainlist01.txt, testlist01.txt
"""
from __future__ import annotations

import fractions
import json
import math
import os
import shutil

import av
import numpy as np

from vidtx import messages
from vidtx.errors import VidtxError

# (forward class, its time-reverse, motion, direction of the forward class in image axes: x right, y down)
_PAIRS = (
    ("MoveLeft", "MoveRight", "translate", (-1.0, 0.0)),
    ("MoveUp", "MoveDown", "translate", (0.0, -1.0)),
    ("RotateClockwise", "RotateCounterclockwise", "rotate", None),
    ("Approach", "Recede", "scale", None),
    ("MoveUpLeft", "MoveDownRight", "translate", (-1.0, -1.0)),
    ("MoveUpRight", "MoveDownLeft", "translate", (1.0, -1.0)),
)
ALL_CLASS_NAMES = tuple(name for pair in _PAIRS for name in pair[:2])
MAX_CLASSES = len(ALL_CLASS_NAMES)
CODECS = {"mpeg4": ".avi", "h264": ".mp4"}  # codec -> container (file extension)
MARKER_FILE = "synthetic.json"  # the parameters, written last: the tree is complete
GENERATOR = 6  # bump when the videos change for the same parameters (6: looks per clip, faint texture)


# ----------------------------------------------------------------------------- shapes
# Object shapes in object units (about [-1, 1]^2): none is rotationally symmetric, so
# rotation is visible; u points along the object's angle.
def _triangle(u, v):
  return (u >= -0.8) & (u <= 1.0) & (np.abs(v) <= 0.3 * (1.0 - u))


def _ell(u, v):
  return (((u >= -0.9) & (u <= -0.3) & (np.abs(v) <= 0.9))
          | ((u >= -0.9) & (u <= 0.9) & (v >= 0.3) & (v <= 0.9)))


def _tee(u, v):
  return (((np.abs(u) <= 0.9) & (v >= -0.9) & (v <= -0.4))
          | ((np.abs(u) <= 0.25) & (v >= -0.9) & (v <= 0.9)))


def _arrow(u, v):
  return (((u >= -0.9) & (u <= 0.1) & (np.abs(v) <= 0.22))
          | ((u >= 0.1) & (u <= 0.95) & (np.abs(v) <= 0.8 * (0.95 - u))))


_SHAPES = (_triangle, _ell, _tee, _arrow)
_SHAPE_RADIUS = 1.3  # every shape fits in this radius (object units)


def class_names(num_classes: int) -> list[str]:
  """The first `num_classes` motion classes (pairs stay together for even counts)."""
  if not 2 <= num_classes <= MAX_CLASSES:
    raise VidtxError(f"the synthetic dataset has 2 to {MAX_CLASSES} classes "
                     f"({', '.join(ALL_CLASS_NAMES)}); asked for {num_classes}")
  return list(ALL_CLASS_NAMES[:num_classes])


# ----------------------------------------------------------------------------- rendering
def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
  """[size, size, 3] smooth random texture, about unit amplitude (bilinear from a coarse grid)."""
  coarse = rng.normal(size=(cells, cells, 3))
  grid = np.linspace(0, cells - 1, size)
  lo = np.minimum(np.floor(grid).astype(int), cells - 2)
  w = grid - lo
  interp = np.zeros((size, cells))
  interp[np.arange(size), lo] = 1 - w
  interp[np.arange(size), lo + 1] = w
  return np.einsum("ia,jac->ijc", interp, np.einsum("abc,jb->jac", coarse, interp))


def _look(rng: np.random.Generator, size: int):
  """What a group shares: background [H, W, 3], shape, colour."""
  base = rng.uniform(40, 215, size=3)
  background = base + 5 * _smooth_noise(rng, size, 6) + 2 * rng.normal(size=(size, size, 3))
  background = background.astype(np.float32)
  shape = int(rng.integers(len(_SHAPES)))
  for _ in range(50):  # an object that stands out from the background
    colour = rng.uniform(0, 255, size=3)
    if np.linalg.norm(colour - base) > 110:
      break
  return background, shape, colour


def _trajectory(motion: str, direction, rng: np.random.Generator, size: int, t: np.ndarray):
  """The forward class's motion at times `t` in [0, 1]: centre [T, 2] (x, y pixels),
  angle [T] (radians; increasing = clockwise on screen) and scale [T] (pixels)."""
  angle0 = rng.uniform(0, 2 * np.pi)
  ones = np.ones_like(t)
  if motion == "translate":
    scale = rng.uniform(0.14, 0.2) * size
    unit = np.asarray(direction) / np.linalg.norm(direction)
    margin = _SHAPE_RADIUS * scale
    distance = min(rng.uniform(0.45, 0.6) * size, (size - 2 * margin) / np.abs(unit).max() * 0.95)
    half = np.abs(unit) * distance / 2
    mid = rng.uniform(margin + half, size - margin - half)
    centre = mid + (t[:, None] - 0.5) * distance * unit
    return centre, angle0 * ones, scale * ones
  if motion == "rotate":
    scale = rng.uniform(0.2, 0.26) * size
    margin = _SHAPE_RADIUS * scale
    centre = rng.uniform(margin, size - margin, size=2) * ones[:, None]
    return centre, angle0 + t * rng.uniform(0.6, 1.1) * np.pi, scale * ones
  if motion == "scale":  # approach: the object grows
    start, ratio = rng.uniform(0.07, 0.1) * size, rng.uniform(2.0, 2.6)
    margin = _SHAPE_RADIUS * start * ratio
    centre = rng.uniform(margin, size - margin, size=2) * ones[:, None]
    return centre, angle0 * ones, start * ratio ** t
  raise ValueError(motion)


def _draw(background, shape, colour, centre, angle, scale, supersample: int = 2) -> np.ndarray:
  """Frames [T, H, W, 3] float: the shape composited on the background, antialiased."""
  size = background.shape[0]
  coords = ((np.arange(size * supersample) + 0.5) / supersample).astype(np.float32)
  dx = coords[None, None, :] - centre[:, 0, None, None].astype(np.float32)
  dy = coords[None, :, None] - centre[:, 1, None, None].astype(np.float32)
  cos, sin = ((a / scale)[:, None, None].astype(np.float32) for a in (np.cos(angle), np.sin(angle)))
  u = cos * dx + sin * dy
  v = cos * dy - sin * dx
  inside = _SHAPES[shape](u, v).astype(np.float32)
  alpha = sum(inside[:, i::supersample, j::supersample]
              for i in range(supersample) for j in range(supersample))[..., None] / supersample ** 2
  return (background[None] * (1 - alpha) + colour * alpha).astype(np.float32)


def look_generator(seed: int, class_index: int, group: int, clip: int) -> np.random.Generator:
  """The random stream that draws one clip's look (background, shape, colour)."""
  return np.random.default_rng([seed, class_index, group, clip, 0])


def _scene(class_index: int, size: int, num_frames: int, seed: int, group: int, clip: int):
  """One video's look, its forward motion, the clip's random stream (for the noise after it)
  and whether the video plays backwards."""
  pair, backwards = divmod(class_index, 2)
  _, _, motion, direction = _PAIRS[pair]
  clip_rng = np.random.default_rng([seed, class_index, group, clip, 1])
  background, shape, colour = _look(look_generator(seed, class_index, group, clip), size)
  t = np.linspace(0.0, 1.0, num_frames)
  return background, shape, colour, _trajectory(motion, direction, clip_rng, size, t), clip_rng, backwards


def render_video(class_index: int, *, size: int = 64, num_frames: int = 32, seed: int = 0,
                 group: int = 1, clip: int = 1) -> np.ndarray:
  """Frames [num_frames, size, size, 3] uint8 of one video: a pure function of the arguments."""
  background, shape, colour, motion, clip_rng, backwards = _scene(class_index, size, num_frames, seed,
                                                                  group, clip)
  frames = _draw(background, shape, colour, *motion)
  frames += clip_rng.uniform(1, 4) * clip_rng.standard_normal(size=frames.shape, dtype=np.float32)
  frames = np.clip(np.round(frames), 0, 255).astype(np.uint8)
  return frames[::-1] if backwards else frames


def object_mask(class_index: int, *, size: int = 64, num_frames: int = 32, seed: int = 0,
                group: int = 1, clip: int = 1) -> np.ndarray:
  """Where the moving object is in `render_video`'s frames (same arguments): float32
  [num_frames, size, size], the fraction of each pixel it covers (0 background, 1 object)."""
  _, shape, _, motion, _, backwards = _scene(class_index, size, num_frames, seed, group, clip)
  alpha = _draw(np.zeros((size, size, 3), np.float32), shape, np.ones(3), *motion)[..., 0]
  return alpha[::-1] if backwards else alpha


def write_video(path: str, frames: np.ndarray, *, fps: int | fractions.Fraction = 25,
                codec: str = "mpeg4") -> None:
  """Encodes frames [T, H, W, 3] uint8 with PyAV (mpeg4 -> .avi, h264 -> .mp4), atomically.

  `fps` may be a Fraction (e.g. 30000/1001). Width and height must be even.
  """
  if codec not in CODECS:
    raise VidtxError(f"synthetic videos use one of the codecs {sorted(CODECS)}, not {codec!r}")
  tmp = path + ".tmp" + CODECS[codec]
  with av.open(tmp, "w") as container:
    if codec == "h264":
      stream = container.add_stream("libx264", rate=fps, options={"crf": "12", "threads": "1"})
    else:
      stream = container.add_stream("mpeg4", rate=fps)
      stream.bit_rate = 4_000_000  # near-lossless at these sizes
      stream.codec_context.thread_count = 1  # deterministic bytes
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt = "yuv420p"
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())
  os.replace(tmp, path)


# ----------------------------------------------------------------------------- the tree
def layout(videos_per_class: int) -> list[tuple[int, int, bool]]:
  """(group, clip, is_test) for each video of a class, UCF101-style: up to 25 groups,
  the first quarter of the groups (at least one) are the test split."""
  if videos_per_class < 2:
    raise VidtxError(f"videos_per_class must be at least 2 (one train, one test), got {videos_per_class}")
  per_group = math.ceil(videos_per_class / 25)
  groups = math.ceil(videos_per_class / per_group)
  test_groups = max(1, round(groups / 4))
  return [(j // per_group + 1, j % per_group + 1, j // per_group + 1 <= test_groups)
          for j in range(videos_per_class)]


def write_synthetic_videos(out_dir: str, *, num_classes: int = 8, videos_per_class: int = 40,
                           seed: int = 0, size: int = 64, num_frames: int = 32, fps: int = 25,
                           codec: str = "mpeg4", verbose: bool = True) -> dict:
  """Writes the videos and UCF101 annotations (split 1) under `out_dir`; returns the parameters."""
  names = class_names(num_classes)
  if size < 16 or size % 2:
    raise VidtxError(f"size must be an even number of pixels >= 16, got {size}")
  if num_frames < 2:
    raise VidtxError(f"num_frames must be at least 2, got {num_frames}")
  if codec not in CODECS:
    raise VidtxError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
  params = dict(num_classes=num_classes, videos_per_class=videos_per_class, seed=seed,
                size=size, num_frames=num_frames, fps=fps, codec=codec, generator=GENERATOR)
  plan = layout(videos_per_class)
  os.makedirs(os.path.join(out_dir, "annotations"), exist_ok=True)
  train, test = [], []
  status = messages.Status("synthetic", num_classes * len(plan), unit="videos",
                           enabled=verbose)
  for label, name in enumerate(names):
    os.makedirs(os.path.join(out_dir, "videos", name), exist_ok=True)
    for group, clip, is_test in plan:
      rel = f"{name}/v_{name}_g{group:02d}_c{clip:02d}{CODECS[codec]}"
      frames = render_video(label, size=size, num_frames=num_frames, seed=seed, group=group, clip=clip)
      write_video(os.path.join(out_dir, "videos", rel), frames, fps=fps, codec=codec)
      (test if is_test else train).append(rel if is_test else f"{rel} {label + 1}")
      status.update(advance=1)
  status.close()
  annotations = os.path.join(out_dir, "annotations")
  with open(os.path.join(annotations, "classInd.txt"), "w") as f:
    f.write("".join(f"{i + 1} {name}\n" for i, name in enumerate(names)))
  with open(os.path.join(annotations, "trainlist01.txt"), "w") as f:
    f.write("".join(f"{line}\n" for line in train))
  with open(os.path.join(annotations, "testlist01.txt"), "w") as f:
    f.write("".join(f"{line}\n" for line in test))
  with open(os.path.join(out_dir, MARKER_FILE), "w") as f:
    json.dump(params, f, indent=1, sort_keys=True)
  return params


def _read_params(root: str) -> dict | None:
  try:
    with open(os.path.join(root, MARKER_FILE)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def ensure_synthetic_dataset(data_dir: str, *, num_classes: int = 8, videos_per_class: int = 40,
                             seed: int = 0, size: int = 64, num_frames: int = 32, fps: int = 25,
                             short_side: int | None = None, codec: str = "mpeg4",
                             workers: int | None = None, verbose: bool = True) -> str:
  """`data_dir` as a prepared synthetic dataset, made on first use (cached afterwards).

  The videos go to `<data_dir>_videos` (UCF101 layout), then are prepared into
  `data_dir` (splits 'train' and 'test', frames resized to `short_side`, default
  `size`). Safe to interrupt: the next call resumes. A `data_dir` prepared with other
  parameters is an error, never overwritten.
  """
  from vidtx.data import format as data_format  # pylint: disable=g-import-not-at-top  (TensorFlow)
  from vidtx.data import prepare, sources  # pylint: disable=g-import-not-at-top

  data_dir = os.path.abspath(os.path.expanduser(data_dir))
  params = dict(num_classes=num_classes, videos_per_class=videos_per_class, seed=seed, size=size,
                num_frames=num_frames, fps=fps, codec=codec)
  wanted = dict(params, generator=GENERATOR, short_side=short_side or size)
  if data_format.is_prepared(data_dir):
    made = data_format.read_prepare_info(data_dir).get("details", {}).get("synthetic")
    if made != wanted:
      raise VidtxError(f"{data_dir} already holds a dataset made with {made or 'unknown settings'}, "
                       f"not the synthetic dataset {wanted}; delete it or choose another directory")
    return data_dir

  raw = data_dir.rstrip(os.sep) + "_videos"
  if _read_params(raw) != dict(params, generator=GENERATOR):
    if os.path.exists(raw) and _read_params(raw) is None and os.listdir(raw):
      raise VidtxError(f"{raw} exists but is not a synthetic video tree (no {MARKER_FILE}); "
                       "move it away or choose another data directory")
    tmp = raw + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
      messages.say(f"synthetic: writing {num_classes} x {videos_per_class} videos to {raw}")
    write_synthetic_videos(tmp, verbose=verbose, **params)
    shutil.rmtree(raw, ignore_errors=True)
    os.replace(tmp, raw)

  splits, names, failures = sources.ucf101_splits(
      os.path.join(raw, "videos"), os.path.join(raw, "annotations"), split=1)
  if workers is None and num_classes * videos_per_class <= 1000:
    workers = 1  # starting worker processes (each imports TensorFlow) costs more than it saves
  prepare.prepare_dataset(
      data_dir, splits, names,
      prepare.Settings(short_side=short_side or size, jpeg_quality=90, workers=workers),
      source="synthetic motion dataset (vidtx.data.synthetic), UCF101 layout, split 1",
      details={"synthetic": wanted, "videos": raw, "ucf101_split": 1}, failures=failures,
      command=f"ensure_synthetic_dataset({data_dir!r}, **{wanted})", verbose=verbose)
  return data_dir
