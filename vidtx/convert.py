r"""Foreign checkpoints -> vidtx variables, and the converter CLI.

  from_paddle(path, config) -> variables     a PaddleVideo checkpoint (.pdparams) of this model
  to_paddle(variables, config) -> {name: a}  the inverse, in Paddle's names and layouts
  init_from(config.init_from, variables[, model_config])   pretraining, for fine-tuning

  python -m vidtx.convert paddle --config configs/videoswin_k400.py:variant=base \
      --input videoswin_base_k400.pdparams --output /tmp/swin_b_k400

`.pdparams` files are pickles; they are read with an unpickler that builds numpy arrays and
plain containers only and refuses every other global, so a hostile file cannot run code.

Layouts: Paddle `Linear.weight` is `[in, out]` (our Dense kernel as is); `ConvND.weight` is
`[out, in, *k]` (ours `[*k, in, out]`); BatchNorm `weight/bias/_mean/_variance` are our
`scale/bias` params and `mean/var` batch stats. Every resize (position / time embeddings,
Swin bias tables) is logged.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import struct
from collections.abc import Mapping

from absl import logging
import numpy as np

from vidtx.errors import VidtxError

_SKIP_KEYS = ("StructuredToParameterName@@",)
_BIG_PARAM_INFO = "UnpackBigParamInfor@@"  # Paddle's key for arrays split over slices (protocol < 4)


# ----------------------------------------------------------------------------- reading files
def _numpy_globals() -> dict[tuple[str, str], object]:
  """The only globals a .pdparams pickle may name: numpy array / dtype / scalar rebuilding."""
  core = np._core if hasattr(np, "_core") else np.core  # numpy 2 / numpy 1
  allowed = {}
  for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    allowed[(module, "_reconstruct")] = core.multiarray._reconstruct
    allowed[(module, "scalar")] = core.multiarray.scalar
  allowed[("numpy", "ndarray")] = np.ndarray
  allowed[("numpy", "dtype")] = np.dtype
  allowed[("collections", "OrderedDict")] = dict
  allowed[("_codecs", "encode")] = _latin1_bytes  # how protocol-2 pickles spell bytes
  return allowed


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
  if encoding not in ("latin1", "latin-1"):
    raise VidtxError(f"refused to load: the pickle asks for a {encoding!r} decoding")
  return text.encode("latin1")


class _NumpyUnpickler(pickle.Unpickler):
  """Unpickler that rebuilds numpy arrays and plain containers and refuses anything else."""

  def __init__(self, file, path: str):
    super().__init__(file, encoding="latin1")
    self._path = path
    self._allowed = _numpy_globals()

  def find_class(self, module, name):
    found = self._allowed.get((module, name))
    if found is None:
      raise VidtxError(
          f"{self._path}: refused to load: the pickle asks for the global {module}.{name}; a "
          ".pdparams file may hold only numpy arrays and plain containers")
    return found

  def persistent_load(self, pid):
    raise VidtxError(f"{self._path}: refused to load: the pickle uses persistent ids "
                     "(a torch file?); expected a Paddle .pdparams pickle of numpy arrays")


def load_pdparams(path: str) -> dict[str, np.ndarray]:
  """A .pdparams file -> {name: array}, without Paddle's bookkeeping entries.

  Distillation checkpoints (`Student.0.*` backbone, `Student.1.*` head, `Teacher.*`) give the
  student, renamed `backbone.*` / `head.*`.
  """
  if not os.path.isfile(path):
    raise VidtxError(f"checkpoint {path} does not exist")
  with open(path, "rb") as f:
    try:
      state = _NumpyUnpickler(f, path).load()
    except VidtxError:
      raise
    except Exception as e:  # pickle raises many types on garbage input
      raise VidtxError(f"{path} is not a Paddle .pdparams pickle ({type(e).__name__}: {e})") from None
  if not isinstance(state, dict):
    raise VidtxError(f"{path}: expected a pickled dict of name -> array, got {type(state).__name__}")
  state = dict(state)
  for key in _SKIP_KEYS:
    state.pop(key, None)
  for name, info in state.pop(_BIG_PARAM_INFO, {}).items():
    state[name] = np.concatenate([state.pop(s) for s in info["slices"]]).reshape(info["OriginShape"])
  arrays = {}
  for name, value in state.items():
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], np.ndarray):
      value = value[1]  # (paddle name, array): how old Paddle pickled a Tensor
    if not isinstance(value, np.ndarray) or value.dtype.hasobject:
      kind = f"array of {value.dtype}" if isinstance(value, np.ndarray) else type(value).__name__
      raise VidtxError(f"{path}: entry {name!r} is a {kind}, expected a numeric numpy array")
    arrays[str(name)] = value
  return _student_only(arrays, path)


def _student_only(state: dict[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
  """Distillation names -> plain names: Student.0. -> backbone., Student.1. -> head."""
  if any(k.startswith("Student.") for k in state):
    dropped = sorted({k.split(".")[0] for k in state if not k.startswith("Student.")})
    logging.info("%s: distillation checkpoint, keeping the student (dropped %s)", path, dropped)
    state = {k[len("Student."):]: v for k, v in state.items() if k.startswith("Student.")}
  if state and all(k.split(".")[0] in ("0", "1") for k in state):  # a *_student.pdparams file
    state = {("backbone." if k.startswith("0.") else "head.") + k[2:]: v for k, v in state.items()}
  return state


def save_pdparams(state: Mapping[str, np.ndarray], path: str) -> None:
  """{name: array} -> a .pdparams pickle (protocol 4, as paddle.save)."""
  with open(path, "wb") as f:
    pickle.dump({k: np.asarray(v) for k, v in state.items()}, f, protocol=4)


def load_npz(path: str) -> dict[str, np.ndarray]:
  """A numpy .npz (big_vision / google ViT checkpoints) -> {key: array}; no pickled objects."""
  if not os.path.isfile(path):
    raise VidtxError(f"checkpoint {path} does not exist")
  try:
    with np.load(path, allow_pickle=False) as npz:
      return {k: npz[k] for k in npz.files}
  except Exception as e:
    raise VidtxError(f"{path} is not a readable .npz file ({type(e).__name__}: {e})") from None


_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def load_safetensors(path: str) -> dict[str, np.ndarray]:
  """A .safetensors file (8-byte little-endian header size, JSON header, raw data) -> arrays.

  BF16 tensors are widened to float32.
  """
  if not os.path.isfile(path):
    raise VidtxError(f"checkpoint {path} does not exist")
  with open(path, "rb") as f:
    data = f.read()
  try:
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
  except Exception as e:
    raise VidtxError(f"{path} is not a .safetensors file ({type(e).__name__}: {e})") from None
  body = memoryview(data)[8 + size:]
  arrays = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    start, end = info["data_offsets"]
    if info["dtype"] == "BF16":
      raw = np.frombuffer(body[start:end], np.uint16).astype(np.uint32) << 16
      array = raw.view(np.float32)
    elif info["dtype"] in _SAFETENSORS_DTYPES:
      array = np.frombuffer(body[start:end], _SAFETENSORS_DTYPES[info["dtype"]])
    else:
      raise VidtxError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
    arrays[name] = array.reshape(info["shape"]).copy()
  return arrays


# ----------------------------------------------------------------------------- resizing and inflation
def zoom_linear(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """[h, w, D] -> [size[0], size[1], D] with scipy.ndimage.zoom(order=1), as PaddleVideo."""
  import scipy.ndimage  # pylint: disable=g-import-not-at-top  (scipy comes with jax)
  h, w, _ = grid.shape
  return scipy.ndimage.zoom(grid, (size[0] / h, size[1] / w, 1), order=1)


def resize_pos_embed(pos_embed: np.ndarray, grid: tuple[int, int], name: str = "pos_embed") -> np.ndarray:
  """[1, 1 + g*g, D] -> [1, 1 + grid[0]*grid[1], D]: patch positions zoomed (linear), CLS kept."""
  n = pos_embed.shape[1] - 1
  side = int(round(n ** 0.5))
  if side * side != n:
    raise VidtxError(f"{name}: {n} patch positions do not form a square grid")
  if (side, side) == tuple(grid):
    return pos_embed
  logging.warning("%s: resizing the position grid %dx%d -> %dx%d (linear zoom, CLS kept)",
                  name, side, side, grid[0], grid[1])
  patches = zoom_linear(pos_embed[0, 1:].reshape(side, side, -1), grid)
  return np.concatenate([pos_embed[:, :1], patches.reshape(1, grid[0] * grid[1], -1)], axis=1)


def resize_time_embed(time_embed: np.ndarray, num_frames: int, name: str = "time_embed") -> np.ndarray:
  """[1, T0, D] -> [1, num_frames, D] by nearest interpolation (index floor(i * T0 / T))."""
  t0 = time_embed.shape[1]
  if t0 == num_frames:
    return time_embed
  logging.warning("%s: resizing %d -> %d frames (nearest)", name, t0, num_frames)
  ratio = np.float32(t0 / num_frames)  # float32 like Paddle's interpolate kernel
  index = (ratio * np.arange(num_frames, dtype=np.float32)).astype(np.int64)
  return time_embed[:, np.minimum(index, t0 - 1)]


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
  raise VidtxError(f"init_from.options.inflate={method!r}; expected 'average' or 'central_frame'")


# ----------------------------------------------------------------------------- our variable trees
Path = tuple  # ('params', 'blocks_0', 'attn', 'qkv', 'kernel')


def _model_config(config):
  """An experiment config (with .model) or a model config -> the model config."""
  return config.model if "model" in config and hasattr(config.model, "keys") else config


def flatten(tree, prefix: Path = ()) -> dict[Path, object]:
  """Nested dicts -> {path: leaf}; flax's LogicallyPartitioned boxes are kept as leaves."""
  if isinstance(tree, Mapping):
    flat = {}
    for key, value in tree.items():
      flat.update(flatten(value, prefix + (str(key),)))
    return flat
  return {prefix: tree}


def unflatten(flat: Mapping[Path, object]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree


def _unboxed(leaf):
  return leaf.value if hasattr(leaf, "unbox") else leaf


def model_shapes(config) -> dict[Path, tuple[int, ...]]:
  """{path: shape} of the variables of `config`'s model (no arrays are created)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from vidtx import models  # pylint: disable=g-import-not-at-top
  model_config = _model_config(config)
  model = models.build(model_config)
  size = int(model_config.image_size)
  video = jnp.zeros((1, int(model_config.num_frames), size, size, 3), jnp.float32)
  abstract = jax.eval_shape(
      lambda r: model.init({"params": r, "dropout": r}, video, train=False), jax.random.key(0))
  return {p: tuple(_unboxed(v).shape) for p, v in flatten(abstract).items()}


# ----------------------------------------------------------------------------- Paddle names and layouts
_LIST_MODULES = re.compile(r"^(blocks|layers)_(\d+)$")  # our `blocks_3` is Paddle's `blocks.3`
_LEAF_TO_PADDLE = {"kernel": "weight", "scale": "weight", "mean": "_mean", "var": "_variance"}
_MODULE_TO_PADDLE = {"conv": "_conv", "bn": "_batch_norm"}  # PP-TSM's ConvBNLayer; others are equal


def paddle_name(path: Path) -> str:
  """Our variable path -> the PaddleVideo state-dict name.

  ('params', 'blocks_0', 'attn', 'qkv', 'kernel') -> 'backbone.blocks.0.attn.qkv.weight';
  ('batch_stats', 'bb_0_0', 'conv0', 'bn', 'mean') -> 'backbone.bb_0_0.conv0._batch_norm._mean'.
  """
  *modules, leaf = path[1:]
  parts = []
  for module in modules:
    match = _LIST_MODULES.match(module)
    parts.append(f"{match[1]}.{match[2]}" if match else _MODULE_TO_PADDLE.get(module, module))
  parts.append(_LEAF_TO_PADDLE.get(leaf, leaf))
  prefix = "" if modules and modules[0] == "head" else "backbone."
  return prefix + ".".join(parts)


def _is_conv(path: Path, ndim: int) -> bool:
  return path[-1] == "kernel" and ndim >= 3


def to_our_layout(array: np.ndarray, path: Path) -> np.ndarray:
  """Paddle layout -> ours: ConvND [out, in, *k] -> [*k, in, out]; the rest as is."""
  if _is_conv(path, array.ndim):
    return np.transpose(array, tuple(range(2, array.ndim)) + (1, 0))
  return array


def to_paddle_layout(array: np.ndarray, path: Path) -> np.ndarray:
  """Our layout -> Paddle's (inverse of `to_our_layout`)."""
  if _is_conv(path, array.ndim):
    n = array.ndim
    return np.transpose(array, (n - 1, n - 2) + tuple(range(n - 2)))
  return array


def paddle_buffers(config) -> dict[str, np.ndarray]:
  """Non-parameter entries a PaddleVideo checkpoint of this model holds, with their values.

  Video Swin keeps every block's `attn.relative_position_index` (int64 [N, N]).
  """
  model_config = _model_config(config)
  if model_config.name != "swin":
    return {}
  from vidtx import models  # pylint: disable=g-import-not-at-top
  from vidtx.models import swin  # pylint: disable=g-import-not-at-top
  model = models.build(model_config)  # its fields, defaults included
  index = np.asarray(swin.relative_position_index(tuple(model.window_size)), np.int64)
  return {f"backbone.layers.{i}.blocks.{j}.attn.relative_position_index": index
          for i, depth in enumerate(model.depths) for j in range(depth)}


def _listing(title: str, items: list[str], limit: int = 12) -> str:
  shown = "; ".join(items[:limit]) + (f"; ... and {len(items) - limit} more" if len(items) > limit else "")
  return f"{len(items)} {title}: {shown}"


def _fit(value: np.ndarray, path: Path, shape: tuple[int, ...], name: str, *,
         time_cls: bool = False) -> np.ndarray:
  """Resizes position / time embeddings to the model's grid and frame count (logged).

  `time_cls`: the time embedding's first row belongs to a temporal CLS token (ViViT
  factorised encoder) and is kept.
  """
  if value.shape == shape or value.ndim != 3 or len(shape) != 3 or value.shape[2] != shape[2]:
    return value
  if path[-1] == "time_embed":
    if time_cls:
      return np.concatenate([value[:, :1], resize_time_embed(value[:, 1:], shape[1] - 1, name)], 1)
    return resize_time_embed(value, shape[1], name)
  if path[-1] == "pos_embed":
    side = int(round((shape[1] - 1) ** 0.5))
    if side * side == shape[1] - 1:
      return resize_pos_embed(value, (side, side), name)
  return value


def _check_fits(where: str, model: str, missing, unexpected, mismatched) -> None:
  if missing or unexpected or mismatched:
    parts = [_listing(t, items) for t, items in (
        ("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
             if items]
    raise VidtxError(f"checkpoint {where} does not fit model {model!r}: " + " | ".join(parts))


def from_paddle(path, config) -> dict:
  """A PaddleVideo checkpoint -> {'params': ..., 'batch_stats': ...} for `config`'s model.

  `path` is a .pdparams file (or an already loaded {name: array}); `config` the experiment
  config or its `model` section. Every parameter must be in the checkpoint with a matching
  shape, and every checkpoint entry must be used; otherwise a VidtxError lists the missing
  keys, unexpected keys and shape mismatches. Position / time embeddings are resized
  (logged) when the model's image size / frame count differs from the checkpoint's.
  """
  where = path if isinstance(path, str) else "(in memory)"
  state = load_pdparams(path) if isinstance(path, str) else _student_only(dict(path), where)
  model_config = _model_config(config)
  flat, missing, mismatched, used = {}, [], [], set()
  shapes = model_shapes(model_config)
  time_cls = ("params", "temporal_cls_token") in shapes
  for ours, shape in shapes.items():
    name = paddle_name(ours)
    if name not in state:
      missing.append(f"{name} (ours {'/'.join(ours)} {list(shape)})")
      continue
    used.add(name)
    value = _fit(to_our_layout(np.asarray(state[name]), ours), ours, shape, name, time_cls=time_cls)
    if value.shape != shape:
      mismatched.append(f"{name} {list(state[name].shape)} vs model {list(shape)}")
      continue
    flat[ours] = value.astype(np.float32)
  for name, expected in paddle_buffers(model_config).items():
    if name not in state:
      continue  # a buffer, not a parameter: nothing to load
    used.add(name)
    if state[name].shape != expected.shape or not np.array_equal(state[name], expected):
      mismatched.append(f"{name}: differs from the model's (another window size?)")
  unexpected = sorted(set(state) - used)
  _check_fits(where, model_config.name, missing, unexpected, mismatched)
  variables = unflatten(flat)
  return {"params": variables.get("params", {}), "batch_stats": variables.get("batch_stats", {})}


def to_paddle(variables, config) -> dict[str, np.ndarray]:
  """Our variables -> {Paddle name: array in Paddle's layout} (plus Swin's index buffers)."""
  state = {}
  for ours, leaf in flatten(variables).items():
    state[paddle_name(ours)] = to_paddle_layout(np.asarray(_unboxed(leaf)), ours)
  state.update(paddle_buffers(config))
  return state


# ----------------------------------------------------------------------------- image / video pretraining
INIT_FORMATS = ("paddle", "paddleclas", "big_vision", "timm")


def _vit_from_big_vision(arrays: Mapping[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
  """big_vision / google ViT .npz -> PaddleClas ViT names and layouts.

  Handles the original ViT names (LayerNorm_0/2, MultiHeadDotProductAttention_1, MlpBlock_3,
  Transformer/posembed_input/pos_embedding with the CLS position) and big_vision's newer
  ones (LayerNorm_0/1, MultiHeadDotProductAttention_0, MlpBlock_0, top-level pos_embedding
  without a CLS position: the CLS position is then zero, which is the same model).
  These models expect pixels in [-1, 1] (data mean = std = 0.5).
  """
  arrays = {re.sub(r"^(params/)?", "", k): v for k, v in arrays.items()}
  if "embedding/kernel" not in arrays:
    raise VidtxError(f"{path}: no 'embedding/kernel'; expected a big_vision / google ViT .npz "
                     f"(keys like Transformer/encoderblock_0/...), got e.g. {sorted(arrays)[:5]}")
  out = {"patch_embed.proj.weight": np.transpose(arrays["embedding/kernel"], (3, 2, 0, 1)),
         "patch_embed.proj.bias": arrays["embedding/bias"]}
  if "cls" in arrays:
    out["cls_token"] = arrays["cls"]
  pos = arrays.get("Transformer/posembed_input/pos_embedding", arrays.get("pos_embedding"))
  if pos is not None:
    n = pos.shape[1]
    if int(round(n ** 0.5)) ** 2 == n:  # no CLS position
      pos = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
    out["pos_embed"] = pos
  for leaf, paddle_leaf in (("scale", "weight"), ("bias", "bias")):
    out[f"norm.{paddle_leaf}"] = arrays[f"Transformer/encoder_norm/{leaf}"]
  blocks = sorted({int(m[1]) for k in arrays if (m := re.match(r"Transformer/encoderblock_(\d+)/", k))})
  for i in blocks:
    p = f"Transformer/encoderblock_{i}/"
    names = {k[len(p):].split("/")[0] for k in arrays if k.startswith(p)}
    pick = lambda *options: next(o for o in options if o in names)
    ln1, ln2 = "LayerNorm_0", pick("LayerNorm_2", "LayerNorm_1")
    mha = pick("MultiHeadDotProductAttention_1", "MultiHeadDotProductAttention_0")
    mlp = pick("MlpBlock_3", "MlpBlock_0")
    for ours, theirs in (("norm1", ln1), ("norm2", ln2)):
      out[f"blocks.{i}.{ours}.weight"] = arrays[p + f"{theirs}/scale"]
      out[f"blocks.{i}.{ours}.bias"] = arrays[p + f"{theirs}/bias"]
    qkv = [arrays[p + f"{mha}/{n}/kernel"] for n in ("query", "key", "value")]  # [D, heads, hd]
    out[f"blocks.{i}.attn.qkv.weight"] = np.concatenate([k.reshape(k.shape[0], -1) for k in qkv], axis=1)
    if p + f"{mha}/query/bias" in arrays:
      out[f"blocks.{i}.attn.qkv.bias"] = np.concatenate(
          [arrays[p + f"{mha}/{n}/bias"].reshape(-1) for n in ("query", "key", "value")])
    proj = arrays[p + f"{mha}/out/kernel"]  # [heads, hd, D]
    out[f"blocks.{i}.attn.proj.weight"] = proj.reshape(-1, proj.shape[-1])
    out[f"blocks.{i}.attn.proj.bias"] = arrays[p + f"{mha}/out/bias"]
    for ours, theirs in (("fc1", "Dense_0"), ("fc2", "Dense_1")):
      out[f"blocks.{i}.mlp.{ours}.weight"] = arrays[p + f"{mlp}/{theirs}/kernel"]
      out[f"blocks.{i}.mlp.{ours}.bias"] = arrays[p + f"{mlp}/{theirs}/bias"]
  return out


def _from_timm(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """timm (torch) names are PaddleClas's; torch Linear weights are [out, in]: transpose them."""
  return {k: (v.T if k.endswith(".weight") and v.ndim == 2 else v) for k, v in arrays.items()}


def read_pretrained(path: str, fmt: str) -> dict[str, np.ndarray]:
  """A pretraining checkpoint -> {PaddleVideo name ('backbone.X' / 'head.X'): Paddle-layout array}."""
  readers = {"paddle": load_pdparams, "paddleclas": load_pdparams, "big_vision": load_npz,
             "timm": load_safetensors}
  if fmt not in readers:
    raise VidtxError(f"config.init_from.format={fmt!r}; expected one of {list(INIT_FORMATS)}")
  return pretrained_state(readers[fmt](path), fmt, path)


def pretrained_state(arrays: Mapping[str, np.ndarray], fmt: str, where: str = "(in memory)"
                     ) -> dict[str, np.ndarray]:
  """Loaded arrays of format `fmt` -> PaddleVideo names and layouts (see `read_pretrained`)."""
  if fmt == "paddle":
    return dict(arrays)
  if fmt == "big_vision":
    state = _vit_from_big_vision(arrays, where)
  elif fmt == "timm":
    state = _from_timm(arrays)
  elif fmt == "paddleclas":
    state = dict(arrays)
  else:
    raise VidtxError(f"config.init_from.format={fmt!r}; expected one of {list(INIT_FORMATS)}")
  if any(k.startswith("backbone.") for k in state):  # already a PaddleVideo backbone
    return state
  return {"backbone." + k: v for k, v in state.items()}


def _inflate_bias_table(table: np.ndarray, rows: int, heads: int, table_window, name: str) -> np.ndarray:
  """Swin 2D table [L, heads] -> 3D [(2Wd-1)(2Wh-1)(2Ww-1), heads]: bicubic resize, tile over time."""
  if table.shape == (rows, heads) or table_window is None:
    return table  # already 3D (a video checkpoint), or reported as a shape mismatch
  wd, wh, ww = table_window
  plane = (2 * wh - 1) * (2 * ww - 1)
  if table.shape[1] != heads or rows != (2 * wd - 1) * plane:
    return table  # reported as a shape mismatch
  if table.shape[0] != plane:
    side = int(round(table.shape[0] ** 0.5))
    logging.warning("%s: bicubic resize of the relative position bias table %dx%d -> %dx%d",
                    name, side, side, 2 * wh - 1, 2 * ww - 1)
    table = resize_bicubic(table.reshape(side, side, heads), (2 * wh - 1, 2 * ww - 1))
    table = table.reshape(plane, heads)
  return np.tile(table, (2 * wd - 1, 1))


def _pretrained_value(ours: Path, shape, source, options, *, table_window, time_cls: bool):
  """(value in our layout, source name) for one of our variables, or (None, None)."""
  name = paddle_name(ours)
  zeros = lambda: np.zeros(shape, np.float32)
  if name not in source:
    # Parts a video model has and an image model lacks (PaddleVideo's / scenic's rules).
    if ".temporal_fc." in name or (name == "backbone.time_embed" and not time_cls):
      return zeros(), None  # TimeSformer: temporal_fc and time_embed start at zero
    for video_part, image_part in ((".temporal_attn.", ".attn."), (".temporal_norm1.", ".norm1."),
                                   ("backbone.temporal_blocks_", "backbone.blocks."),
                                   ("backbone.spatial_norm.", "backbone.norm.")):
      if video_part in name:
        image_name = name.replace(video_part, image_part)
        if image_name not in source:
          return None, None
        if options.get("temporal_init", "copy") == "zeros" and "norm" not in video_part:
          return zeros(), image_name
        return to_our_layout(np.asarray(source[image_name]), ours), image_name
    return None, None
  value = to_our_layout(np.asarray(source[name]), ours)
  if ours[-1] == "kernel" and value.ndim == len(shape) - 1 == 4:  # 2D patch kernel -> tubelet
    value = inflate_kernel(value, shape[0], options.get("inflate", "average"))
  elif ours[-1] == "relative_position_bias_table":
    value = _inflate_bias_table(value, shape[0], shape[1], table_window, name)
  else:
    value = _fit(value, ours, tuple(shape), name, time_cls=time_cls)
  return value, name


def _table_window(shapes, source, options, model_config) -> tuple[int, int, int] | None:
  """Swin's configured window (Wd, Wh, Ww): from the model config, the options, or the tables."""
  if model_config is not None:
    from vidtx import models  # pylint: disable=g-import-not-at-top
    window = getattr(models.build(_model_config(model_config)), "window_size", None)
    if window is not None:
      return tuple(window)
  if options.get("window_size"):
    return tuple(options["window_size"])
  for ours, shape in shapes.items():
    name = paddle_name(ours)
    if ours[-1] == "relative_position_bias_table" and name in source:
      if source[name].shape[0] == shape[0]:
        continue  # already the model's table
      side = (int(round(source[name].shape[0] ** 0.5)) + 1) // 2  # the source's (square) window
      rows = shape[0] // (2 * side - 1) ** 2
      if rows * (2 * side - 1) ** 2 == shape[0] and rows % 2:
        return ((rows + 1) // 2, side, side)
      raise VidtxError(f"{name}: cannot tell the model's window from the bias table sizes; set "
                       "config.init_from.options.window_size=(Wd, Wh, Ww)")
  return None


def init_from(init_config, variables, model_config=None) -> dict:
  """Fresh `variables` with pretrained values put in where a checkpoint provides them.

  init_config (config.init_from): `path`, `format` in {'paddle' (a PaddleVideo video
  checkpoint), 'paddleclas' (ViT / Swin 2D / ResNet-vd image .pdparams), 'big_vision'
  (ViT .npz), 'timm' (ViT .safetensors)} and `options`:
    inflate: 'average' (default, PaddleVideo) | 'central_frame' - 2D patch kernel -> 3D;
    temporal_init: 'copy' (default) | 'zeros' - TimeSformer temporal attention from the
      spatial attention, ViViT temporal blocks from the first image blocks (norms are copied
      either way); TimeSformer's temporal_fc and time_embed start at zero;
    drop_head: for 'paddle', drop the classifier even when its shape fits (default: drop it
      only when the class count differs; image classifiers are always dropped);
    window_size: Swin's window, when `model_config` is not given and cannot be inferred.
  Position embeddings are resized to the model's grid (linear zoom, CLS kept), time
  embeddings to its frame count (nearest), Swin bias tables bicubic-resized and tiled over
  time. A pretrained entry whose shape still differs from ours is a VidtxError.
  """
  fmt, path = init_config.get("format", ""), init_config.get("path", "")
  options = dict(init_config.get("options", None) or {})
  source = read_pretrained(path, fmt)
  flat = flatten(variables)
  shapes = {p: tuple(_unboxed(v).shape) for p, v in flat.items()}
  time_cls = ("params", "temporal_cls_token") in shapes
  table_window = _table_window(shapes, source, options, model_config)
  loaded, mismatched, used, fresh = {}, [], set(), []
  for ours, shape in shapes.items():
    if ours[1] == "head" and (fmt != "paddle" or options.get("drop_head")):
      fresh.append("/".join(ours))
      continue
    value, name = _pretrained_value(ours, shape, source, options, table_window=table_window,
                                    time_cls=time_cls)
    used.add(name)
    if value is None:
      fresh.append("/".join(ours))
    elif value.shape != shape:
      if ours[1] == "head":
        logging.warning("%s: classifier %s does not fit the model's %s: left freshly initialised",
                        path, list(value.shape), list(shape))
        fresh.append("/".join(ours))
      else:
        mismatched.append(f"{name} {list(source[name].shape) if name else ''} -> {list(value.shape)} "
                          f"vs model {'/'.join(ours)} {list(shape)}")
    else:
      loaded[ours] = value
  if mismatched:
    raise VidtxError(f"{path} ({fmt}) does not fit the model: " + _listing("shape mismatches", mismatched))
  if not loaded:
    raise VidtxError(f"{path} ({fmt}): no entry matches the model's variables "
                     f"(checkpoint keys look like {sorted(source)[:4]})")
  unused = sorted(set(source) - used)
  logging.info("init_from %s: %d variables loaded, %d left fresh (%s), %d checkpoint entries unused (%s)",
               path, len(loaded), len(fresh), ", ".join(fresh[:8]), len(unused), ", ".join(unused[:8]))
  out = {}
  for ours, leaf in flat.items():
    if ours in loaded:
      new = loaded[ours].astype(_unboxed(leaf).dtype)
      leaf = leaf.replace_boxed(new) if hasattr(leaf, "replace_boxed") else new
    out[ours] = leaf
  tree = unflatten(out)
  return {**tree, "params": tree.get("params", {}), "batch_stats": tree.get("batch_stats", {})}


# ----------------------------------------------------------------------------- CLI
def read_label_names(path: str) -> list[str]:
  """A label list: one name per line, or `<index> <name>` lines (PaddleVideo's K400 list,
  UCF101's classInd.txt), ordered by index."""
  if not os.path.isfile(path):
    raise VidtxError(f"label file {path} does not exist")
  with open(path) as f:
    lines = [line.strip() for line in f if line.strip()]
  indexed = [line.split(maxsplit=1) for line in lines]
  if lines and all(len(p) == 2 and p[0].isdigit() for p in indexed):
    return [name for _, name in sorted(indexed, key=lambda p: int(p[0]))]
  return lines


def convert_paddle(config, input_path: str, output_dir: str, labels: str | None = None) -> dict:
  """A PaddleVideo checkpoint -> an orbax checkpoint in `output_dir` that eval.py / predict.py read."""
  from vidtx import checkpoint  # pylint: disable=g-import-not-at-top
  if os.path.exists(output_dir) and os.listdir(output_dir):
    raise VidtxError(f"output directory {output_dir} is not empty; give a new one")
  variables = from_paddle(input_path, config)
  num_classes = int(config.model.num_classes)
  if labels:
    label_names = read_label_names(labels)
    if len(label_names) != num_classes:
      raise VidtxError(f"{labels} lists {len(label_names)} labels but config.model.num_classes is "
                       f"{num_classes}")
  else:
    label_names = [f"class_{i}" for i in range(num_classes)]
    logging.warning("no --labels file: classes are named class_0 ... class_%d", num_classes - 1)
  meta = {
      "model": config.model.to_dict(),
      "label_names": label_names,
      "data": config.data.to_dict() if "data" in config else {},
      "prepared": {},
      "step": 0,
      "source": {"format": "paddle", "path": os.path.abspath(input_path)},
      "config": config.to_json_best_effort() if hasattr(config, "to_json_best_effort") else "",
  }
  checkpoint.save_variables(output_dir, variables, meta)
  return meta


def _main(argv) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags_ = flags.FLAGS
  if len(argv) != 2 or argv[1] != "paddle":
    raise VidtxError("usage: python -m vidtx.convert paddle --config configs/<name>.py[:args] "
                     "--input <checkpoint.pdparams> --output <directory> [--labels <label list>]")
  from vidtx import cli  # pylint: disable=g-import-not-at-top
  cli.require(flags_, "config", "input", "output")
  meta = convert_paddle(flags_.config, flags_.input, flags_.output, flags_.labels)
  print(f"wrote {flags_.output}: model {meta['model']['name']}, {len(meta['label_names'])} classes, "
        f"from {flags_.input}")


if __name__ == "__main__":
  from absl import flags  # pylint: disable=g-import-not-at-top
  from vidtx import cli  # pylint: disable=g-import-not-at-top
  cli.define_config_flag()
  flags.DEFINE_string("input", None, "PaddleVideo checkpoint (.pdparams).")
  flags.DEFINE_string("output", None, "New directory for the converted orbax checkpoint.")
  flags.DEFINE_string("labels", None, "Label list: a name per line, or '<index> <name>' lines.")
  cli.run(_main)
