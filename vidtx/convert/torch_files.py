"""PyTorch checkpoint files (`torch.save`) read without PyTorch.

Two layouts: the zip archive of torch >= 1.6 (`<name>/data.pkl` plus one raw little-endian
file per storage, `<name>/data/<key>`), and the legacy stream of torch < 1.6 (magic number,
protocol, system info, the pickle, the storage keys, then each storage as an 8-byte element
count and its bytes). Tensors become numpy arrays: float32 / float64 / float16 as they are,
bfloat16 widened to float32, integer and bool storages as their numpy types.

The pickle is read with an unpickler that builds tensors and plain containers only: it may
call torch's tensor / parameter rebuild functions (which we implement) and `OrderedDict` /
`Counter`; any other global it names becomes an inert name (PyTorch Lightning <= 1.3 keys its
callback states by callback class) and a pickle that tries to call or build one is refused,
so a hostile file cannot run code.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any

import numpy as np

from vidtx.errors import VidtxError

_MAGIC = 0x1950A86A20F9469CFC6C  # the legacy format's first pickle
# torch storage class -> numpy dtype of its stored elements (bfloat16 as uint16 bits, widened later)
_STORAGES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class Name:
  """A global the pickle names but may not call (e.g. a callback class used as a dict key)."""

  def __init__(self, module: str, name: str):
    self.module, self.name = module, name

  def __repr__(self):
    return f"<{self.module}.{self.name}>"

  def __eq__(self, other):
    return isinstance(other, Name) and (self.module, self.name) == (other.module, other.name)

  def __hash__(self):
    return hash((self.module, self.name))

  def __call__(self, *args, **kwargs):
    raise VidtxError(f"refused to load: the pickle asks to call {self.module}.{self.name}; a "
                     "checkpoint may hold only tensors and plain containers")

  def __reduce__(self):  # never pickled back
    raise TypeError("Name is not picklable")


class _StorageKind:
  def __init__(self, name: str):
    self.name, self.dtype = name, _STORAGES[name]


class _Storage:
  """One storage: a flat numpy array of its stored type (filled after the pickle in the legacy
  format, whose storages follow it)."""

  def __init__(self, kind: _StorageKind, data: np.ndarray | None = None):
    self.kind, self.data = kind, data


class _Tensor:
  """A tensor as the pickle describes it; made an array once every storage has been read."""

  def __init__(self, storage, offset, size, stride):
    if not isinstance(storage, _Storage):
      raise VidtxError("refused to load: a tensor whose storage is not a plain storage")
    self.storage, self.offset = storage, int(offset)
    self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)

  def array(self) -> np.ndarray:
    data = self.storage.data
    if 0 in self.size:
      array = np.zeros(self.size, data.dtype)
    else:
      last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
      if self.offset < 0 or min(self.stride, default=0) < 0 or last >= len(data):
        raise VidtxError("refused to load: a tensor reaches outside its storage")
      array = np.lib.stride_tricks.as_strided(
          data[self.offset:], self.size, tuple(s * data.itemsize for s in self.stride)).copy()
    if self.storage.kind.name == "BFloat16Storage":
      array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _rebuild_tensor(storage, offset, size, stride, *unused) -> _Tensor:
  """torch._utils._rebuild_tensor_v2 (requires_grad, backward hooks and metadata unused)."""
  del unused
  return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks, *state):
  del requires_grad, backward_hooks, state
  return data


def _arrays(obj):
  """The loaded object with every _Tensor made an array (containers rebuilt)."""
  if isinstance(obj, _Tensor):
    return obj.array()
  if isinstance(obj, dict):  # OrderedDict / Counter kept as plain dicts, in order
    return {k: _arrays(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return [_arrays(v) for v in obj]
  if isinstance(obj, tuple):
    return tuple(_arrays(v) for v in obj)
  if isinstance(obj, (_Storage, _StorageKind)):
    raise VidtxError("refused to load: a bare storage outside a tensor")
  return obj


_CALLABLE = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "Counter"): collections.Counter,
    ("torch", "Size"): tuple,
    ("_codecs", "encode"): lambda text, encoding="latin1": text.encode(encoding),
}
# numpy arrays and scalars pickled inside a checkpoint (e.g. in optimizer or callback states).
_CORE = np._core if hasattr(np, "_core") else np.core  # numpy 2 / numpy 1
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
  _CALLABLE[(_module, "_reconstruct")] = _CORE.multiarray._reconstruct
  _CALLABLE[(_module, "scalar")] = _CORE.multiarray.scalar
_CALLABLE[("numpy", "ndarray")] = np.ndarray
_CALLABLE[("numpy", "dtype")] = np.dtype


class _Unpickler(pickle.Unpickler):
  def __init__(self, file, path: str, storage):
    super().__init__(file, encoding="utf-8")
    self._path, self._storage = path, storage

  def find_class(self, module, name):
    if (module, name) in _CALLABLE:
      return _CALLABLE[(module, name)]
    if module == "torch" and name in _STORAGES:
      return _StorageKind(name)
    return Name(module, name)

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
            and isinstance(pid[1], _StorageKind)):
      raise VidtxError(f"{self._path}: refused to load: unexpected persistent id {pid!r:.80}")
    return self._storage(pid)


def _load_zip(path: str, archive: zipfile.ZipFile):
  names = archive.namelist()
  pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
  if len(pickles) != 1:
    raise VidtxError(f"{path}: a zip file but not a torch.save archive (no <name>/data.pkl)")
  prefix = pickles[0][:-len("data.pkl")]
  if prefix + "byteorder" in names and archive.read(prefix + "byteorder") != b"little":
    raise VidtxError(f"{path}: big-endian torch files are not supported")
  loaded = {}

  def storage(pid):
    kind, key, numel = pid[1], str(pid[2]), int(pid[4])
    if key not in loaded:
      raw = archive.read(f"{prefix}data/{key}")
      data = np.frombuffer(raw, kind.dtype)
      if data.size < numel:
        raise VidtxError(f"{path}: storage {key} holds {data.size} elements, {numel} expected")
      loaded[key] = _Storage(kind, data)
    return loaded[key]

  return _Unpickler(io.BytesIO(archive.read(pickles[0])), path, storage).load()


def _load_legacy(path: str, f):
  header = _Unpickler(f, path, None)
  if header.load() != _MAGIC:
    raise VidtxError(f"{path} is not a PyTorch checkpoint (neither a zip archive nor the legacy "
                     "format)")
  header.load()  # protocol version
  header.load()  # system info
  storages = {}

  def storage(pid):
    if len(pid) > 5 and pid[5] is not None:
      raise VidtxError(f"{path}: storage views of the legacy format are not supported")
    return storages.setdefault(str(pid[2]), _Storage(pid[1]))

  obj = _Unpickler(f, path, storage).load()
  for key in _Unpickler(f, path, None).load():  # the storages follow, in this order
    (numel,) = struct.unpack("<q", f.read(8))
    item = storages[str(key)]
    itemsize = np.dtype(item.kind.dtype).itemsize
    raw = f.read(numel * itemsize)
    if len(raw) != numel * itemsize:
      raise VidtxError(f"{path}: truncated (storage {key})")
    item.data = np.frombuffer(raw, item.kind.dtype)
  return obj


def load_torch(path: str) -> Any:
  """A `torch.save` file -> the saved object, tensors as numpy arrays."""
  if not os.path.isfile(path):
    raise VidtxError(f"checkpoint {path} does not exist")
  try:
    if zipfile.is_zipfile(path):
      with zipfile.ZipFile(path) as archive:
        return _arrays(_load_zip(path, archive))
    with open(path, "rb") as f:
      return _arrays(_load_legacy(path, f))
  except VidtxError as e:
    message = str(e)
    raise VidtxError(message if message.startswith(path) else f"{path}: {message}") from None
  except Exception as e:  # pickle / zipfile raise many types on garbage input
    raise VidtxError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None


def state_dict(obj: Any, path: str) -> dict[str, np.ndarray]:
  """The {name: array} a loaded checkpoint holds: a plain state dict, a PyTorch Lightning
  checkpoint's `state_dict`, or a training checkpoint's `model` (MAE, DeiT, timm) or `module`
  (DeepSpeed: VideoMAE's fine-tuned releases)."""
  for key in ("state_dict", "model", "module"):
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
      obj = obj[key]
      break
  if not isinstance(obj, dict) or not obj:
    raise VidtxError(f"{path}: expected a state dict (name -> tensor), a Lightning checkpoint "
                     f"or {{'model' | 'module': state dict}}; got {type(obj).__name__}")
  bad = [str(k) for k, v in obj.items() if not isinstance(v, np.ndarray) or not isinstance(k, str)]
  if bad:
    raise VidtxError(f"{path}: state dict entries that are not tensors: {bad[:5]}")
  return dict(obj)
