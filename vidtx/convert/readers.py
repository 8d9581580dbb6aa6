"""Checkpoint file readers: Paddle .pdparams, numpy .npz, .safetensors, and label lists.

`.pdparams` files are pickles; they are read with an unpickler that builds numpy arrays and
plain containers only and refuses every other global, so a hostile file cannot run code.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
from collections.abc import Mapping

import numpy as np

from vidtx import messages
from vidtx.errors import VidtxError

_SKIP_KEYS = ("StructuredToParameterName@@",)
_BIG_PARAM_INFO = "UnpackBigParamInfor@@"  # Paddle's key for arrays split over slices (protocol < 4)


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
  big = state.pop(_BIG_PARAM_INFO, {})
  if not isinstance(big, dict):
    raise VidtxError(f"{path}: {_BIG_PARAM_INFO} is a {type(big).__name__}, expected a dict "
                     "(the file is damaged or not a Paddle checkpoint)")
  for name, info in big.items():
    try:
      state[name] = np.concatenate([state.pop(s) for s in info["slices"]]).reshape(info["OriginShape"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
      raise VidtxError(f"{path}: the {_BIG_PARAM_INFO} entry of {name!r} is malformed "
                       f"({type(e).__name__}: {e}); the file is damaged or not a Paddle checkpoint") from None
  arrays = {}
  for name, value in state.items():
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], np.ndarray):
      value = value[1]  # (paddle name, array): how old Paddle pickled a Tensor
    if not isinstance(value, np.ndarray) or value.dtype.hasobject:
      kind = f"array of {value.dtype}" if isinstance(value, np.ndarray) else type(value).__name__
      raise VidtxError(f"{path}: entry {name!r} is a {kind}, expected a numeric numpy array")
    arrays[str(name)] = value
  return student_only(arrays, path)


def student_only(state: dict[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
  """Distillation names -> plain names: Student.0. -> backbone., Student.1. -> head."""
  if any(k.startswith("Student.") for k in state):
    dropped = sorted({k.split(".")[0] for k in state if not k.startswith("Student.")})
    messages.say(f"{path}: distillation checkpoint, keeping the student (dropped {dropped})")
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


def read_label_names(path: str) -> list[str]:
  """A label list: one name per line, `<index> <name>` lines (PaddleVideo's K400 list,
  UCF101's classInd.txt), or a JSON {name: index} class map (mx-mark's), ordered by index."""
  if not os.path.isfile(path):
    raise VidtxError(f"label file {path} does not exist")
  with open(path) as f:
    text = f.read()
  if text.lstrip().startswith("{"):
    try:
      classes = json.loads(text)
    except ValueError as e:
      raise VidtxError(f"{path}: not a JSON class map ({e})") from None
    indices = sorted(classes.values()) if all(isinstance(v, int) for v in classes.values()) else None
    if indices != list(range(len(classes))):
      raise VidtxError(f"{path}: a JSON class map must map each name to an index 0..N-1")
    return sorted(classes, key=classes.get)
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  indexed = [line.split(maxsplit=1) for line in lines]
  if lines and all(len(p) == 2 and p[0].isdigit() for p in indexed):
    return [name for _, name in sorted(indexed, key=lambda p: int(p[0]))]
  return lines
