"""Export for inference: a checkpoint -> StableHLO, a TF SavedModel and ONNX, with export.json.

  python -m vidtx.export --config C --checkpoint CKPT --out DIR [--batch N|dynamic] [--formats ...]
  python predict.py --exported DIR VIDEO... [--runtime stablehlo|onnx|savedmodel]

Every format holds the same function, weights included: uint8 views `[B, V, T, H, W, 3]` (V =
clips x crops of the config's test protocol, clip-major) -> class probabilities `[B, K]`.
Normalisation and view averaging are inside (`evaluate.video_scores`, the one definition of
scoring), so a server cannot get them wrong. `export.json` beside them is the contract: label
names, the input, how a video becomes the views (decode settings and `config.data`), where the
weights came from and the vidtx version. docs/export.md has the formats and the contract.
TensorFlow, jax2onnx and onnxruntime are imported only by the formats that need them.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from vidtx import messages
from vidtx.data import protocol
from vidtx.errors import VidtxError, first_line

# Bump when export.json or the files change so that an older reader would misread them.
FORMAT_VERSION = 1
CONTRACT = "export.json"
FORMATS = ("stablehlo", "savedmodel", "onnx")
FILES = {"stablehlo": "model.stablehlo", "savedmodel": "savedmodel", "onnx": "model.onnx"}
DYNAMIC = "dynamic"
# StableHLO and the SavedModel are lowered for all of these, so one export serves on any of them.
PLATFORMS = ("cpu", "cuda", "tpu")
EXPORT_COMMAND = "python -m vidtx.export --config C --checkpoint CKPT --out DIR"


def vidtx_version() -> str:
  try:
    return importlib.metadata.version("vidtx")
  except importlib.metadata.PackageNotFoundError:
    return "unknown (not installed: pip install -e .)"


def decode_settings(prepared: dict | None, data=None) -> dict:
  """How predict decodes a video file (`vidtx.data.decode.decode_video` settings): as the
  checkpoint's training data was prepared (`meta['prepared']`). A checkpoint that records no
  preparation (`python -m vidtx.convert`) decodes as its seed's test pipeline does where
  `data.test_decoder` names one (`protocol.SEED_DECODE`), else with vidtx's defaults."""
  if not prepared and protocol.seed_decoder(data):
    return dict(protocol.SEED_DECODE)
  prepared = prepared or {}
  return {
      "short_side": prepared.get("short_side", 256), "fps": prepared.get("fps"),
      "max_frames": prepared.get("max_frames"), "jpeg_quality": prepared.get("jpeg_quality", 90),
      # Datasets prepared before the option stretched non-square pixels.
      "pixel_aspect": prepared.get("pixel_aspect", "apply"),
  }


def checkpoint_decoding(meta: dict, data, checkpoint) -> dict:
  """`decode_settings` of a restored checkpoint's `meta`; says in one line what it assumed where
  the checkpoint (path `checkpoint`) records no preparation."""
  prepared = meta.get("prepared")
  settings = decode_settings(prepared, data)
  if not prepared:
    decoder = protocol.seed_decoder(data)
    how = (f"as {decoder} does: {protocol.SEED_DECODE_TEXT}" if decoder else
           f"with vidtx's defaults {settings} (config.data.test_decoder names no seed decoder)")
    messages.say(f"no preparation recorded in {checkpoint or 'the random weights'}: decoding {how}")
  return settings


def probabilities(model, variables, video: jax.Array, data_config, averaging: str) -> jax.Array:
  """Class probabilities of each video from all its views.  video: uint8 [B, V, T, H, W, 3] -> [B, K].

  `evaluate.video_scores` (normalisation, view averaging), then softmax where it averaged logits.
  """
  from vidtx import evaluate  # pylint: disable=g-import-not-at-top
  scores = evaluate.video_scores(model, variables, video, data_config, averaging)
  return scores if averaging == "prob" else jax.nn.softmax(scores, axis=-1)


# ----------------------------------------------------------------------------- the contract
def input_shape(config, batch) -> list:
  """[B, V, T, S, S, 3] of config's test views; B is None for a dynamic batch."""
  data = config.data
  views = int(data.test_clips) * int(data.test_crops)
  size = int(config.model.image_size)
  return [None if batch == DYNAMIC else int(batch), views, int(config.model.num_frames), size, size, 3]


def contract(config, meta: dict, source: dict, shape: list, formats: dict) -> dict:
  """export.json: what a caller of the exported function must know."""
  data, averaging = config.data, config.eval.averaging
  return {
      "format_version": FORMAT_VERSION,
      "vidtx_version": vidtx_version(),
      "created": datetime.datetime.now().isoformat(timespec="seconds"),
      "source": source,
      "label_names": list(meta["label_names"]),
      "input": {
          "name": "video", "dtype": "uint8", "shape": shape,
          "layout": "[batch, views, frames, height, width, 3] RGB, 0-255; batch null = any",
          "views": shape[1], "clips": int(data.test_clips), "crops": int(data.test_crops),
          "view_order": "clip-major: view = clip * crops + crop",
          "frames": shape[2], "size": shape[3],
          "normalisation": {"where": "inside the exported function", "formula": "(x / 255 - mean) / std",
                            "mean": list(data.mean), "std": list(data.std)},
          "averaging": averaging,
          "averaging_means": ("softmax of the views' mean logits" if averaging == "score"
                              else "mean of the views' softmax probabilities"),
      },
      "output": {"name": "probabilities", "dtype": "float32", "shape": [shape[0], len(meta["label_names"])]},
      # How a video file becomes the views (predict.py --exported does exactly this).
      "protocol": {
          "window": data.test_window, "sampler": data.test_sampler,
          "sampling": data.test_sampling or data.sampling, "resize": data.test_resize,
          "short_side": data.eval_short_side, "crop": data.test_crop,
          "interpolation": data.test_interpolation, "doc": "docs/protocols.md",
      },
      "decode": decode_settings(meta.get("prepared"), data),
      "data": data.to_dict(),
      "model": config.model.to_dict(),
      "formats": formats,
  }


def read_contract(directory: str) -> dict:
  """export.json of an export directory, checked: present, readable, of this format version."""
  path = os.path.join(directory, CONTRACT)
  if not os.path.isdir(directory):
    raise VidtxError(f"export directory {directory} does not exist")
  if not os.path.isfile(path):
    raise VidtxError(f"{directory} has no {CONTRACT}: not a vidtx export directory, or an incomplete "
                     f"one; write it with {EXPORT_COMMAND}")
  try:
    with open(path) as f:
      found = json.load(f)
  except (OSError, ValueError) as e:
    raise VidtxError(f"{path} cannot be read ({e}); export again with {EXPORT_COMMAND}") from None
  if not isinstance(found, dict):
    raise VidtxError(f"{path} is not an export contract (a JSON object); export again with {EXPORT_COMMAND}")
  version = found.get("format_version")
  if version != FORMAT_VERSION:
    newer = isinstance(version, int) and version > FORMAT_VERSION
    todo = ("upgrade vidtx, or export the checkpoint again with this one" if newer
            else "export the checkpoint again with this vidtx")
    raise VidtxError(
        f"{directory} is export format {version!r} (vidtx {found.get('vidtx_version', '?')}); this vidtx "
        f"({vidtx_version()}) reads format {FORMAT_VERSION}: {todo} ({EXPORT_COMMAND})")
  return found


def data_config(found: dict):
  """`config.data` as it was at export (a ConfigDict for vidtx.data.views)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(found["data"])


# ----------------------------------------------------------------------------- export
def parse_batch(text) -> str | int:
  """'dynamic' or a positive batch size."""
  if str(text) == DYNAMIC:
    return DYNAMIC
  try:
    batch = int(text)
  except ValueError:
    batch = 0
  if batch < 1:
    raise VidtxError(f"--batch={text!r}: give 'dynamic' or a positive batch size")
  return batch


def parse_formats(text) -> tuple[str, ...]:
  names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
  unknown = [n for n in names if n not in FORMATS]
  if unknown or not names:
    raise VidtxError(f"--formats={','.join(names)}: choose among {','.join(FORMATS)}")
  return tuple(dict.fromkeys(names))


def load_model(config, checkpoint: str | None):
  """(model, host variables, meta) of `checkpoint`; None: random weights (for timing only)."""
  from vidtx import evaluate, models, sharding  # pylint: disable=g-import-not-at-top
  if checkpoint is None:
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
    model = models.build(config.model)
    dummy = models.dummy_video(config.model)
    variables = nn.unbox(models.jit_init(lambda r: model.init(r, jnp.zeros(dummy.shape), train=False))(
        jax.random.key(0)))
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    meta = {"label_names": [f"class_{i}" for i in range(config.model.num_classes)], "prepared": {}}
  else:
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    model, variables, meta = evaluate.restore_model(config, checkpoint, mesh)
    if len(meta["label_names"]) != config.model.num_classes:
      raise VidtxError(f"checkpoint {checkpoint} names {len(meta['label_names'])} classes but "
                       f"config.model.num_classes is {config.model.num_classes}")
  return model, jax.device_get(variables), meta


def export(config, checkpoint: str | None, out: str, *, batch=DYNAMIC, formats=FORMATS,
           platforms=PLATFORMS, config_source: dict | None = None, verify: bool = True) -> dict:
  """Writes `formats` of the checkpoint's inference function and export.json into `out`.

  `batch`: 'dynamic' (a symbolic batch dimension) or a fixed size. A format the model cannot be
  exported to is skipped with a warning (recorded in export.json); StableHLO must succeed.
  `verify`: run each written file on a random input and compare it with the Flax model.
  Returns the contract. A failed export leaves no directory behind.
  """
  batch, formats = parse_batch(batch), parse_formats(formats)
  if not platforms:
    raise VidtxError(f"--platforms is empty; give some of {','.join(PLATFORMS)}")
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise VidtxError(f"--out={out} exists and is not empty; give a new directory")
  model, variables, meta = load_model(config, checkpoint)
  checkpoint_decoding(meta, config.data, checkpoint)  # says what it assumed (contract() records it)
  created = not os.path.exists(out)
  os.makedirs(out, exist_ok=True)
  try:
    written, shape = _write_formats(config, model, variables, out, batch, formats, platforms, verify)
  except BaseException:
    if created:
      shutil.rmtree(out, ignore_errors=True)
    raise
  source = {"checkpoint": os.path.abspath(checkpoint) if checkpoint else None,
            "step": meta.get("step"), **(config_source or {})}
  if checkpoint is None:
    source["note"] = "random weights (no --checkpoint): for timing only"
  found = contract(config, meta, source, shape, written)
  with open(os.path.join(out, CONTRACT), "w") as f:
    json.dump(found, f, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
  done = [n for n in written if "skipped" not in written[n]]
  messages.say(f"exported {config.model.name} ({', '.join(done)}) to {out}; contract: "
               f"{os.path.join(out, CONTRACT)}")
  return found


def _write_formats(config, model, variables, out, batch, formats, platforms, verify):
  """The files of `formats` in `out`: (their export.json entries, the input shape)."""
  from vidtx.export import formats as fmt  # pylint: disable=g-import-not-at-top
  leaves, treedef = jax.tree.flatten(variables)
  data, averaging, family = config.data, config.eval.averaging, config.model.name

  def with_weights(weights, video):  # the SavedModel keeps the weights as variables
    return probabilities(model, jax.tree.unflatten(treedef, weights), video, data, averaging)

  def inference(video):  # StableHLO and ONNX hold them as constants
    return with_weights(leaves, video)

  written = {}
  stablehlo = os.path.join(out, FILES["stablehlo"])
  messages.say(f"writing StableHLO to {stablehlo}")
  written["stablehlo"], batch = fmt.write_stablehlo(inference, input_shape(config, batch), stablehlo,
                                                    platforms, family)
  shape = input_shape(config, batch)  # a fixed batch where the family needed one
  for name in formats:
    path = os.path.join(out, FILES[name])
    if name == "savedmodel":
      messages.say(f"writing SavedModel to {path}")
      written[name] = fmt.write_savedmodel(with_weights, leaves, shape, path,
                                           written["stablehlo"]["platforms"], family)
    elif name == "onnx":
      messages.say(f"writing ONNX to {path}")
      written[name] = fmt.write_onnx(inference, shape, path, family)
  if "stablehlo" not in formats:  # written anyway: it decides the batch and the platforms
    os.remove(stablehlo)
    del written["stablehlo"]
  if verify:
    hint = ("; onnxruntime has few bfloat16 kernels: export with --config.model.dtype=float32"
            if config.model.get("dtype") == "bfloat16" else "")
    reference = jax.jit(with_weights)
    check_formats(out, written, lambda video: reference(leaves, video), shape, family, hint)
  return written, shape


def check_formats(out: str, written: dict, inference, shape: list, family: str, hint: str = "") -> None:
  """Runs every written format on one random batch; records the largest difference from the Flax
  model (`max_abs_diff`); a format that does not run is removed and recorded as skipped."""
  from vidtx.export import formats as fmt  # pylint: disable=g-import-not-at-top
  batch = shape[0] or 2
  video = np.random.default_rng(0).integers(0, 256, [batch] + shape[1:], dtype=np.uint8)
  expected = np.asarray(inference(video))
  here = jax.default_backend()
  for name, info in written.items():
    if "skipped" in info:
      continue
    if here not in info.get("platforms", [here]):
      info["max_abs_diff"] = None  # lowered for other platforms only: it cannot run here
      messages.warn(f"{name}: not checked against the Flax model (no {here} lowering)")
      continue
    try:
      got = fmt.load(out, name, info)(video)
    except Exception as e:  # pylint: disable=broad-except  (the runtime cannot run the file)
      reason = f"{fmt.TITLES[name]} written but does not run: {first_line(e, limit=300)}"
      reason += hint if name == "onnx" else ""
      messages.warn(f"{name}: model family {family!r} not exported ({reason})")
      fmt.remove(os.path.join(out, info["file"]))
      written[name] = {"skipped": reason}
      continue
    info["max_abs_diff"] = float(np.max(np.abs(got - expected)))
    if not info["max_abs_diff"] <= 1e-4:
      messages.warn(f"{name}: probabilities differ from the Flax model's by up to {info['max_abs_diff']:.2g}")
