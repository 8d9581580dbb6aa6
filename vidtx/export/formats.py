"""The three exported formats: write one from a JAX function, load one as a numpy function.

  StableHLO   jax.export (serialized, symbolic batch "b"); runs with jax alone
  SavedModel  jax2tf.convert(native_serialization): the same StableHLO inside a TF graph
              (XlaCallModule), weights as tf.Variables, signature `serving_default`
  ONNX        jax2onnx: the traced program as ONNX operators, weights as initializers

Every writer returns the format's entry of export.json ({"file", "batch", ...}), or for ONNX
{"skipped": reason} where the family's ops do not convert. `load` gives `(uint8 [B, V, T, H, W, 3])
-> float32 probabilities [B, K]` for any batch (a fixed-batch export is padded and split).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from vidtx import messages
from vidtx.errors import VidtxError, first_line

TITLES = {"stablehlo": "StableHLO", "savedmodel": "SavedModel", "onnx": "ONNX"}
ONNX_OPSET = 21
INSTALL_EXPORT = 'pip install -e ".[export]" && pip install --no-deps jax2onnx==0.17.1'


def remove(path: str) -> None:
  if os.path.isdir(path):
    shutil.rmtree(path, ignore_errors=True)
  elif os.path.exists(path):
    os.remove(path)


def _spec(shape: list, batch_name: str):
  """ShapeDtypeStruct of the uint8 input; a None batch becomes the symbolic dimension `batch_name`."""
  from jax import export as jax_export  # pylint: disable=g-import-not-at-top
  dims = list(shape)
  if dims[0] is None:
    dims[0] = jax_export.symbolic_shape(batch_name)[0]
  return jax.ShapeDtypeStruct(tuple(dims), jnp.uint8)


# ----------------------------------------------------------------------------- StableHLO
def write_stablehlo(fn, shape: list, path: str, platforms, family: str):
  """Serialized jax.export of `fn`; (entry, batch). Where the family cannot take a dynamic batch it
  falls back to batch 1, where it cannot be lowered for every platform to this machine's (warned,
  and noted in the entry)."""
  from jax import export as jax_export  # pylint: disable=g-import-not-at-top
  here, platforms = jax.default_backend(), tuple(platforms)
  fixed = [1] + list(shape[1:])
  attempts = [(shape, platforms)] + ([(fixed, platforms)] if shape[0] is None else [])
  if len(platforms) > 1 and here in platforms:
    attempts += [(s, (here,)) for s, _ in attempts]
  first_error = None
  for tried, tried_platforms in attempts:
    try:
      exported = jax_export.export(jax.jit(fn), platforms=tried_platforms)(_spec(tried, "b"))
      break
    except Exception as e:  # pylint: disable=broad-except  (said below, or raised at the end)
      first_error = first_error or first_line(e, limit=300)
  else:
    raise VidtxError(f"StableHLO export of model family {family!r} failed: {first_error}")
  notes = []
  if tried[0] != shape[0]:
    notes.append(f"no symbolic batch for family {family!r}: exported with batch 1 ({first_error})")
  if tried_platforms != platforms:
    notes.append(f"not lowered for {', '.join(p for p in platforms if p != here)} ({first_error})")
  for note in notes:
    messages.warn(f"stablehlo: {note}")
  with open(path, "wb") as f:
    f.write(exported.serialize())
  batch = "dynamic" if tried[0] is None else tried[0]
  entry = {"file": os.path.basename(path), "batch": batch, "platforms": list(exported.platforms),
           "route": "jax.export, loaded with jax.export.deserialize(bytearray(data)).call(video)"}
  if notes:
    entry["notes"] = notes
  return entry, batch


# ----------------------------------------------------------------------------- SavedModel
def write_savedmodel(fn_with_weights, weights: list, shape: list, path: str, platforms, family: str) -> dict:
  """A TF SavedModel: `fn_with_weights(weights, video)` through jax2tf with native serialization,
  the weights held as tf.Variables (no 2 GB graph limit), signature `serving_default`."""
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    return _skipped("savedmodel", family, f"TensorFlow is not installed ({e})")
  batch = "dynamic" if shape[0] is None else shape[0]
  converted = jax2tf.convert(
      fn_with_weights, polymorphic_shapes=[None, "(b, ...)" if shape[0] is None else None],
      with_gradient=False, native_serialization_platforms=tuple(platforms))
  module = tf.Module()
  module.weights = [tf.Variable(np.asarray(w), trainable=False) for w in weights]

  @tf.function(input_signature=[tf.TensorSpec(shape, tf.uint8, name="video")], autograph=False)
  def serve(video):
    return {"probabilities": converted(module.weights, video)}

  module.serve = serve
  try:
    tf.saved_model.save(module, path, signatures={"serving_default": serve})
  except Exception as e:  # pylint: disable=broad-except
    remove(path)
    return _skipped("savedmodel", family, first_line(e, limit=300))
  return {"file": os.path.basename(path), "batch": batch, "platforms": list(platforms),
          "signature": "serving_default", "input": "video", "output": "probabilities",
          "route": "jax.experimental.jax2tf.convert, native serialization (StableHLO in XlaCallModule)"}


def _skipped(name: str, family: str, reason: str) -> dict:
  messages.warn(f"{name}: model family {family!r} not exported ({reason})")
  return {"skipped": reason}


# ----------------------------------------------------------------------------- ONNX
@contextlib.contextmanager
def _padded_max_pool():
  """While jax2onnx traces: flax max_pool with explicit padding pairs (PP-TSM's stem) is padded
  with -inf first and pooled 'VALID', the same result, as jax2onnx's flax pooling only takes
  'SAME' / 'VALID' (and lax.reduce_window_max becomes a 4-D MaxPool onnxruntime cannot run)."""
  import flax.linen  # pylint: disable=g-import-not-at-top
  from flax.linen import pooling  # pylint: disable=g-import-not-at-top
  patched = flax.linen.max_pool  # jax2onnx's, inside to_onnx

  def max_pool(x, window_shape, strides=None, padding="VALID"):
    if not isinstance(padding, str):
      pads = [tuple(p) for p in padding]
      pads = [(0, 0)] * (x.ndim - len(pads) - 1) + pads + [(0, 0)]
      x = jnp.pad(x, pads, constant_values=-jnp.inf)
      padding = "VALID"
    return patched(x, window_shape=tuple(window_shape), strides=strides, padding=padding)

  saved = [(m, m.max_pool) for m in (flax.linen, pooling)]
  for m, _ in saved:
    m.max_pool = max_pool
  try:
    yield
  finally:
    for m, value in saved:
      m.max_pool = value


def write_onnx(fn, shape: list, path: str, family: str) -> dict:
  """ONNX through jax2onnx (opset ONNX_OPSET), batch dimension 'B' where dynamic; where jax2onnx
  cannot carry the symbolic batch through the family's reshapes, batch 1 (with a note)."""
  try:
    import jax2onnx  # pylint: disable=g-import-not-at-top
  except ImportError:
    return _skipped("onnx", family, f"jax2onnx is not installed ({INSTALL_EXPORT})")

  def traced(video):
    with _padded_max_pool():
      return fn(video)

  def convert(input_shape):
    jax2onnx.to_onnx(traced, [_spec(input_shape, "B")], model_name=f"vidtx_{family}", opset=ONNX_OPSET,
                     input_names=["video"], output_names=["probabilities"], return_mode="file",
                     output_path=path)

  quiet = logging.getLogger("onnx_ir")
  level = quiet.level
  quiet.setLevel(logging.ERROR)  # "value type ... not known" for shape constants: harmless
  notes = []
  try:
    try:
      convert(shape)
    except Exception as e:  # pylint: disable=broad-except  (retried with a fixed batch, or reported)
      if shape[0] is not None:
        raise
      notes.append(f"no symbolic batch in jax2onnx for family {family!r}, exported with batch 1 "
                   f"({first_line(e, limit=300)})")
      messages.warn(f"onnx: {notes[-1]}")
      remove(path)
      shape = [1] + list(shape[1:])
      convert(shape)
  except Exception as e:  # pylint: disable=broad-except  (an op jax2onnx does not convert)
    remove(path)
    remove(path + ".data")
    return _skipped("onnx", family, f"jax2onnx cannot convert it: {first_line(e, limit=300)}")
  finally:
    quiet.setLevel(level)
  entry = {"file": os.path.basename(path), "batch": "dynamic" if shape[0] is None else shape[0],
           "opset": ONNX_OPSET, "input": "video", "output": "probabilities",
           "route": "jax2onnx.to_onnx; runs in onnxruntime (CPUExecutionProvider) and TensorRT"}
  if notes:
    entry["notes"] = notes
  if os.path.exists(path + ".data"):
    entry["external_data"] = os.path.basename(path) + ".data"
  return entry


# ----------------------------------------------------------------------------- loading
def _stablehlo(path: str):
  from jax import export as jax_export  # pylint: disable=g-import-not-at-top
  with open(path, "rb") as f:
    exported = jax_export.deserialize(bytearray(f.read()))
  call = jax.jit(exported.call)
  return lambda video: np.asarray(call(video))


def _savedmodel(path: str):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  serve = tf.saved_model.load(path).signatures["serving_default"]
  return lambda video: serve(video=tf.constant(video))["probabilities"].numpy()


def _onnx(path: str):
  try:
    import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise VidtxError(f"onnxruntime is not installed: {INSTALL_EXPORT}, or use --runtime stablehlo") from None
  options = ort.SessionOptions()
  options.log_severity_level = 3  # shape-merge notes on the layout transposes: not for users
  session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
  return lambda video: session.run(["probabilities"], {"video": video})[0]


def load(directory: str, name: str, entry: dict):
  """(uint8 [B, V, T, H, W, 3]) -> probabilities [B, K] of format `name` in an export directory."""
  if "skipped" in entry:
    raise VidtxError(f"{directory} has no {TITLES[name]} model (skipped at export: {entry['skipped']}); "
                     "use --runtime stablehlo")
  path = os.path.join(directory, entry["file"])
  if not os.path.exists(path):
    raise VidtxError(f"{path} is missing from the export directory; export again")
  here = jax.default_backend()
  if here not in entry.get("platforms", [here]):
    raise VidtxError(f"{path} was exported for {', '.join(entry['platforms'])}, not for this machine's "
                     f"{here}; export again on (or for) {here} (--platforms)")
  run = {"stablehlo": _stablehlo, "savedmodel": _savedmodel, "onnx": _onnx}[name](path)
  fixed = entry.get("batch")
  if fixed in (None, "dynamic"):
    return lambda video: np.asarray(run(np.ascontiguousarray(video, np.uint8)), np.float32)

  def padded(video):  # a fixed-batch export: pad the last chunk, drop the padding's rows
    video = np.asarray(video, np.uint8)
    out = []
    for start in range(0, len(video), fixed):
      chunk = video[start:start + fixed]
      pad = np.zeros((fixed - len(chunk),) + chunk.shape[1:], np.uint8)
      out.append(np.asarray(run(np.concatenate([chunk, pad])), np.float32)[:len(chunk)])
    return np.concatenate(out)

  return padded
