"""The generic converter: our variables <-> Paddle names and layouts, asking the model's family.

Our variable path ('params', 'blocks_0', 'attn', 'qkv', 'kernel') is Paddle's
'backbone.blocks.0.attn.qkv.weight': the `head` module is Paddle's `head.`, everything else
`backbone.`; the family's list modules (`blocks_3` -> `blocks.3`) and renames apply; leaves
`kernel`/`scale` -> `weight`, BatchNorm `mean`/`var` -> `_mean`/`_variance`. Layouts: Paddle
`Linear.weight` is `[in, out]` (our Dense kernel as is); `ConvND.weight` is `[out, in, *k]`
(ours `[*k, in, out]`). Values of another size are fitted by the family's hooks
(vidtx.models.family); every resize is said to the user.
"""
from __future__ import annotations

import re

import numpy as np
from flax import traverse_util

from vidtx import messages, models
from vidtx.convert import pretrained
from vidtx.convert.readers import load_pdparams, student_only
from vidtx.errors import VidtxError
from vidtx.models import resize

Path = tuple  # ('params', 'blocks_0', 'attn', 'qkv', 'kernel')
_LEAF_TO_PADDLE = {"kernel": "weight", "scale": "weight", "mean": "_mean", "var": "_variance"}
# init_from.options and their defaults.
INIT_OPTIONS = {"inflate": "average", "temporal_init": "copy", "drop_head": False}


# ----------------------------------------------------------------------------- the model
def model_section(config):
  """An experiment config (with .model) or a model config -> the model config."""
  return config.model if "model" in config and hasattr(config.model, "keys") else config


def _unboxed(leaf):
  return leaf.value if hasattr(leaf, "unbox") else leaf


def model_shapes(config) -> dict[Path, tuple[int, ...]]:
  """{path: shape} of the variables of `config`'s model (no arrays are created)."""
  model_config = model_section(config)
  abstract = models.abstract_variables(models.build(model_config), model_config)
  return {p: tuple(_unboxed(v).shape) for p, v in traverse_util.flatten_dict(abstract).items()}


# ----------------------------------------------------------------------------- Paddle names and layouts
def paddle_name(path: Path, family: models.Family) -> str:
  """Our variable path -> the PaddleVideo state-dict name (see the module docstring)."""
  *modules, leaf = path[1:]
  lists = re.compile(rf"^({'|'.join(map(re.escape, family.paddle_lists))})_(\d+)$")
  parts = []
  for module in modules:
    match = lists.match(module) if family.paddle_lists else None
    parts.append(f"{match[1]}.{match[2]}" if match else family.paddle_renames.get(module, module))
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
  """Non-parameter entries a PaddleVideo checkpoint of this model holds, with their values."""
  model_config = model_section(config)
  family = models.get_family(model_config.name)
  return family.paddle_buffers(models.build(model_config)) if family.paddle_buffers else {}


def _listing(title: str, items: list[str], limit: int = 12) -> str:
  shown = "; ".join(items[:limit]) + (f"; ... and {len(items) - limit} more" if len(items) > limit else "")
  return f"{len(items)} {title}: {shown}"


def _few(items: list[str], limit: int = 8) -> str:
  """' (a, b, ...)' for a summary line; '' when there are none."""
  if not items:
    return ""
  return " (" + ", ".join(items[:limit]) + (", ..." if len(items) > limit else "") + ")"


def _fit_checkpoint(value, path, shape, name, family, model) -> np.ndarray:
  return family.fit_checkpoint(value, path, shape, name, model) if family.fit_checkpoint else value


# ----------------------------------------------------------------------------- Paddle video checkpoints
def load_named(state, model_config, name_of, to_ours, where: str, what: str,
               buffers: dict[str, np.ndarray] | None = None) -> dict:
  """{name: array} of a foreign checkpoint -> {'params': ..., 'batch_stats': ...}.

  `name_of(path, family, model)` gives the checkpoint's name of each of our variables (None:
  it has none), `to_ours(array, path)` its layout in ours. Every variable must be there with a
  matching shape (after the family's `fit_checkpoint`), every entry must be used (`buffers`:
  entries that must equal the model's), else a VidtxError lists what is missing, unexpected
  and mismatched.
  """
  family, model = models.get_family(model_config.name), models.build(model_config)
  flat, missing, mismatched, used = {}, [], [], set()
  for ours, shape in model_shapes(model_config).items():
    name = name_of(ours, family, model)
    if name is None or name not in state:
      missing.append(f"{name or '(none)'} (ours {'/'.join(ours)} {list(shape)})")
      continue
    used.add(name)
    value = _fit_checkpoint(to_ours(np.asarray(state[name]), ours), ours, shape, name, family, model)
    if value.shape != shape:
      mismatched.append(f"{name} {list(state[name].shape)} vs model {list(shape)}")
      continue
    flat[ours] = value.astype(np.float32)
  for name, expected in (buffers or {}).items():
    if name not in state:
      continue  # a buffer, not a parameter: nothing to load
    used.add(name)
    if state[name].shape != expected.shape or not np.array_equal(state[name], expected):
      mismatched.append(f"{name}: differs from the model's (another window size?)")
  unexpected = sorted(set(state) - used)
  if missing or unexpected or mismatched:
    parts = [_listing(t, items) for t, items in (
        ("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
             if items]
    raise VidtxError(f"{what} {where} does not fit model {model_config.name!r}: " + " | ".join(parts))
  variables = traverse_util.unflatten_dict(flat)
  return {"params": variables.get("params", {}), "batch_stats": variables.get("batch_stats", {})}


def from_paddle(path, config) -> dict:
  """A PaddleVideo checkpoint -> {'params': ..., 'batch_stats': ...} for `config`'s model.

  `path` is a .pdparams file (or an already loaded {name: array}); `config` the experiment
  config or its `model` section. Every parameter must be in the checkpoint with a matching
  shape, and every checkpoint entry must be used; otherwise a VidtxError lists the missing
  keys, unexpected keys and shape mismatches. Position / time embeddings are resized (and
  said) when the model's image size / frame count differs from the checkpoint's.
  """
  where = path if isinstance(path, str) else "(in memory)"
  state = load_pdparams(path) if isinstance(path, str) else student_only(dict(path), where)
  model_config = model_section(config)
  return load_named(state, model_config, lambda ours, family, _: paddle_name(ours, family),
                    to_our_layout, where, "checkpoint", paddle_buffers(model_config))


def to_paddle(variables, config) -> dict[str, np.ndarray]:
  """Our variables -> {Paddle name: array in Paddle's layout}, plus the family's buffers."""
  family = models.get_family(model_section(config).name)
  state = {}
  for ours, leaf in traverse_util.flatten_dict(variables).items():
    state[paddle_name(ours, family)] = to_paddle_layout(np.asarray(_unboxed(leaf)), ours)
  state.update(paddle_buffers(config))
  return state


# ----------------------------------------------------------------------------- pretraining
# mx-mark's names for the same options (weight_init.py; see docs/models.md): option -> ours, values.
SEED_OPTIONS = {
    "extend_strategy": ("inflate", {"temporal_avg": "average", "center_frame": "central_frame"}),
    "copy_strategy": ("temporal_init", {"repeat": "copy", "set_zero": "zeros"}),
}
CONV_TYPES = ("Conv2d", "Conv3d")


def init_options(options) -> dict:
  """config.init_from.options -> {inflate, temporal_init, drop_head, conv_type}, with mx-mark's
  names (`extend_strategy`, `copy_strategy`) read as ours; unknown names and values are errors."""
  options = dict(options or {})
  known = set(INIT_OPTIONS) | set(SEED_OPTIONS) | {"conv_type"}
  unknown = sorted(set(options) - known)
  if unknown:
    raise VidtxError(f"config.init_from.options: unknown {unknown}; known: {sorted(known)}")
  out = {**INIT_OPTIONS, "conv_type": options.pop("conv_type", None)}
  for seed_name, (ours, values) in SEED_OPTIONS.items():
    if seed_name in options:
      value = options.pop(seed_name)
      if value not in values:
        raise VidtxError(f"config.init_from.options.{seed_name}={value!r}; expected one of {list(values)}")
      if ours in options and options[ours] != values[value]:
        raise VidtxError(f"config.init_from.options: {seed_name}={value!r} and {ours}={options[ours]!r} "
                         "disagree; give one")
      options[ours] = values[value]
  out.update(options)
  if out["conv_type"] not in (None,) + CONV_TYPES:
    raise VidtxError(f"config.init_from.options.conv_type={out['conv_type']!r}; expected one of "
                     f"{list(CONV_TYPES)}")
  return out


def _check_conv_type(conv_type, shapes: dict, model_config) -> None:
  """mx-mark's conv_type names the model's tokeniser: Conv2d = one frame per patch (TimeSformer,
  or tubelet_size 1), Conv3d = tubelets of several frames; the model must be the one named."""
  kernel = shapes.get(("params", "patch_embed", "proj", "kernel"))
  if conv_type is None or kernel is None:
    return
  frames = kernel[0] if len(kernel) == 5 else 1
  if (conv_type == "Conv3d") != (frames > 1):
    want = "tubelet_size > 1" if conv_type == "Conv3d" else "tubelet_size 1"
    raise VidtxError(f"config.init_from.options.conv_type={conv_type!r} but model "
                     f"{model_config.name!r} embeds {frames}-frame patches: set "
                     f"config.model.tubelet_size ({want}) or the option")


def _is_norm(path: Path) -> bool:
  return any("norm" in module for module in path[1:-1])


def _pretrained_value(ours: Path, shape, source, options, family, model):
  """(value in our layout, source name, how) for one of our variables, or (None, None, None);
  how: 'loaded', 'inflated' (2D kernel -> 3D), 'copied' (from an image part), 'zero'."""
  name = paddle_name(ours, family)
  zeros = lambda: np.zeros(shape, np.float32)
  if name not in source:  # a part a video model has and an image model lacks: the family's rules
    if any(piece in name for piece in family.init_zeros):
      return zeros(), None, "zero"
    for video_piece, image_piece in family.init_copies:
      if video_piece in name:
        image_name = name.replace(video_piece, image_piece)
        if image_name not in source:
          return None, None, None
        if options["temporal_init"] == "zeros" and not _is_norm(ours):
          return zeros(), image_name, "zero"
        return to_our_layout(np.asarray(source[image_name]), ours), image_name, "copied"
    return None, None, None
  value = to_our_layout(np.asarray(source[name]), ours)
  how = "loaded"
  if family.fit_pretrained:
    value = family.fit_pretrained(value, ours, shape, name, model)
  if ours[-1] == "kernel" and value.ndim == len(shape) - 1 == 4:  # 2D patch kernel -> tubelet
    if shape[0] == 1:  # a one-frame tubelet is the 2D kernel
      value = value[None]
    else:
      messages.say(f"{name}: 2D kernel inflated to {shape[0]} frames ({options['inflate']})")
      value, how = resize.inflate_kernel(value, shape[0], options["inflate"]), "inflated"
  return _fit_checkpoint(value, ours, shape, name, family, model), name, how


def _is_classifier(name: str) -> bool:
  """An image model's classifier entry (timm `head.*`, PaddleClas `head.*` / `fc.*`)."""
  return bool(re.match(r"^(backbone\.)?(head|fc|pre_logits)\.", name))


def vidtx_state(path: str) -> dict[str, np.ndarray]:
  """A vidtx checkpoint (workdir, checkpoint directory or step) of any model -> {Paddle name:
  Paddle-layout array} of its variables (`to_paddle`), for init_from format 'vidtx'."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top

  from vidtx import checkpoint  # pylint: disable=g-import-not-at-top  (orbax: only here)
  model_config = ml_collections.ConfigDict(checkpoint.read_meta(path)["model"])
  boxed = nn.unbox(models.abstract_variables(models.build(model_config), model_config))
  variables, _ = checkpoint.restore_variables(path, checkpoint.abstract(
      {"params": boxed["params"], "batch_stats": boxed.get("batch_stats", {})}))
  messages.say(f"{path}: a vidtx checkpoint of model {model_config.name!r}")
  return to_paddle(variables, model_config)


def init_from(init_config, variables, model_config) -> dict:
  """Fresh `variables` of `model_config`'s model with pretrained values put in where a checkpoint
  provides them; says how many were loaded (as they are, inflated, copied, zeroed), left fresh
  and unused.

  init_config (config.init_from): `path`, `format` in vidtx.convert.pretrained.INIT_FORMATS
  ('paddle': a PaddleVideo video checkpoint; 'paddleclas': ViT / Swin 2D / ResNet-vd image
  .pdparams; 'big_vision': ViT .npz; 'timm': ViT .safetensors / .pth; 'mae': MAE-pytorch
  pretraining .pth; 'vidtx': a vidtx checkpoint of any family, e.g. a VideoMAE pretraining run,
  whose values of another shape are left fresh with a warning) and `options`:
    inflate: 'average' (default, PaddleVideo) | 'central_frame' - 2D patch kernel -> 3D
      (mx-mark's extend_strategy: 'temporal_avg' | 'center_frame');
    temporal_init: 'copy' (default) | 'zeros' - video-only parts the family copies from image
      parts (TimeSformer's temporal attention, ViViT's temporal blocks) start as copies or at
      zero (norms are copied either way) (mx-mark's copy_strategy: 'repeat' | 'set_zero');
    conv_type: 'Conv2d' | 'Conv3d' (mx-mark's): checked against the model's patch embedding;
    drop_head: for 'paddle' / 'vidtx', drop the classifier even when its shape fits (default: drop it
      only when the class count differs; image classifiers are always dropped).
  Then the family's rules: what starts at zero or as a copy, how its values are fitted
  (position / time embeddings resized, Swin bias tables inflated). A pretrained entry whose shape
  still differs from ours is a VidtxError.
  """
  fmt, path = init_config.format, init_config.path
  options = init_options(init_config.options)
  source = vidtx_state(path) if fmt == "vidtx" else pretrained.read_pretrained(path, fmt)
  model_config = model_section(model_config)
  family, model = models.get_family(model_config.name), models.build(model_config)
  flat = traverse_util.flatten_dict(variables)
  _check_conv_type(options["conv_type"], {p: tuple(_unboxed(v).shape) for p, v in flat.items()},
                   model_config)
  loaded, mismatched, used, fresh = {}, [], set(), []
  counts = {"loaded": 0, "inflated": 0, "copied": 0, "zero": 0}
  for ours, leaf in flat.items():
    shape = tuple(_unboxed(leaf).shape)
    if ours[1] == "head" and (fmt not in ("paddle", "vidtx") or options["drop_head"]):
      fresh.append("/".join(ours))
      continue
    value, name, how = _pretrained_value(ours, shape, source, options, family, model)
    used.add(name)
    if value is None:
      fresh.append("/".join(ours))
    elif value.shape != shape:
      if fmt == "vidtx" and ours[1] != "head":  # another family: what fits is taken
        messages.warn(f"{path}: {name} {list(value.shape)} does not fit {'/'.join(ours)} "
                      f"{list(shape)}: left freshly initialised")
        used.discard(name)
        fresh.append("/".join(ours))
      elif ours[1] == "head":
        messages.warn(f"{path}: classifier {list(value.shape)} does not fit the model's {list(shape)}: "
                      "left freshly initialised")
        fresh.append("/".join(ours))
      else:
        mismatched.append(f"{name} {list(source[name].shape) if name else ''} -> {list(value.shape)} "
                          f"vs model {'/'.join(ours)} {list(shape)}")
    else:
      loaded[ours] = value
      counts[how] += 1
  if mismatched:
    raise VidtxError(f"{path} ({fmt}) does not fit the model: " + _listing("shape mismatches", mismatched))
  if not loaded:
    raise VidtxError(f"{path} ({fmt}): no entry matches the model's variables "
                     f"(checkpoint keys look like {sorted(source)[:4]})")
  unused = sorted(set(source) - used)
  dropped = [n for n in unused if _is_classifier(n) and fmt not in ("paddle", "vidtx")]
  unused = [n for n in unused if n not in dropped]
  ways = ", ".join(f"{counts[k]} {label}" for k, label in (
      ("loaded", "as they are"), ("inflated", "inflated 2D -> 3D"),
      ("copied", "copied from image parts"), ("zero", "set to zero")) if counts[k])
  messages.say(f"init_from {path}: {len(loaded)} variables loaded, {len(fresh)} left fresh"
               f"{_few(fresh)}, {len(unused)} checkpoint entries unused"
               f"{_few(unused) or ' (every backbone entry used)'}; loaded: {ways}"
               + (f"; the image classifier dropped{_few(dropped)}" if dropped else ""))
  out = {}
  for ours, leaf in flat.items():
    if ours in loaded:
      new = loaded[ours].astype(_unboxed(leaf).dtype)
      leaf = leaf.replace_boxed(new) if hasattr(leaf, "replace_boxed") else new
    out[ours] = leaf
  tree = traverse_util.unflatten_dict(out)
  return {**tree, "params": tree.get("params", {}), "batch_stats": tree.get("batch_stats", {})}
