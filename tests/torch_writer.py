"""Writes `torch.save`-format files without PyTorch, for the reader tests.

Byte layout as torch writes it (checked against torch 2.x files): a protocol-2 pickle whose
tensors are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
OrderedDict())` and whose storages are persistent ids `('storage', torch.<Kind>Storage, key,
'cpu', numel)`; zip: `<name>/data.pkl`, `<name>/data/<key>`, `<name>/byteorder`,
`<name>/version`; legacy: magic, protocol, sys info, the pickle, the sorted keys, then each
storage as int64 numel + bytes.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

_KINDS = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float16): "HalfStorage",
          np.dtype(np.float64): "DoubleStorage", np.dtype(np.int64): "LongStorage",
          np.dtype(np.uint8): "ByteStorage", np.dtype(np.bool_): "BoolStorage"}


class Global:
  """A global named in the pickle (written as GLOBAL, never imported here)."""

  def __init__(self, module: str, name: str):
    self.module, self.name = module, name

  def __call__(self, *args):  # pickle requires REDUCE's function to be callable
    raise TypeError("a Global is only written, never called")


class BFloat16:
  """A float32 array to be stored as bfloat16 (its upper 16 bits, rounded to nearest even)."""

  def __init__(self, array):
    self.array = np.asarray(array, np.float32)

  def bits(self) -> np.ndarray:
    u = self.array.view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)

  def rounded(self) -> np.ndarray:
    return (self.bits().astype(np.uint32) << 16).view(np.float32)


class Call:
  """`func(*args)` in the pickle (REDUCE), `func` a Global."""

  def __init__(self, func: Global, *args):
    self.func, self.args = func, args

  def __reduce__(self):
    return (self.func, self.args)


class _Storage:
  def __init__(self, key: str, kind: str, data: bytes, numel: int):
    self.key, self.kind, self.data, self.numel = key, kind, data, numel


class _Tensor:
  def __init__(self, storage: _Storage, shape, strides, offset: int = 0):
    self.storage, self.shape, self.strides, self.offset = storage, shape, strides, offset

  def __reduce__(self):
    return (Global("torch._utils", "_rebuild_tensor_v2"),
            (self.storage, self.offset, tuple(self.shape), tuple(self.strides), False,
             collections.OrderedDict()))


class _Pickler(pickle._Pickler):  # pylint: disable=protected-access  (the Python pickler: save_global)
  def __init__(self, file, legacy: bool):
    super().__init__(file, protocol=2)
    self.legacy = legacy

  def persistent_id(self, obj):
    if isinstance(obj, _Storage):
      kind = Global("torch", obj.kind)
      if self.legacy:
        return ("storage", kind, obj.key, "cpu", obj.numel, None)
      return ("storage", kind, obj.key, "cpu", obj.numel)
    return None

  def save(self, obj, save_persistent_id=True):
    if isinstance(obj, Global):
      self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
      return
    super().save(obj, save_persistent_id)


def _tensors(obj, storages: list, transposed: bool):
  """numpy arrays (and BFloat16) -> _Tensor over new storages; containers rebuilt."""
  if isinstance(obj, (np.ndarray, BFloat16)):
    if isinstance(obj, BFloat16):
      data, kind, shape = obj.bits(), "BFloat16Storage", obj.array.shape
    else:
      data, kind, shape = obj, _KINDS[obj.dtype], obj.shape
    key = str(len(storages))
    if transposed and len(shape) == 2:  # stored transposed, read through strides (like .t())
      flat = np.ascontiguousarray(data.T).reshape(-1)
      strides = (1, shape[0])
    else:
      flat = np.ascontiguousarray(data).reshape(-1)
      strides = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))
    # A leading element before the tensor's own: the tensor starts at offset 1 of its storage.
    flat = np.concatenate([flat[:1] * 0, flat]) if flat.size else flat
    storage = _Storage(key, kind, flat.astype(flat.dtype.newbyteorder("<")).tobytes(), flat.size)
    storages.append(storage)
    return _Tensor(storage, shape, strides, offset=1 if flat.size else 0)
  if isinstance(obj, collections.OrderedDict):
    return collections.OrderedDict((k, _tensors(v, storages, transposed)) for k, v in obj.items())
  if isinstance(obj, dict):
    return {k: _tensors(v, storages, transposed) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_tensors(v, storages, transposed) for v in obj)
  return obj


def save_torch(obj, path: str, *, legacy: bool = False, transposed: bool = False) -> None:
  """`obj` (dicts / lists of numpy arrays, BFloat16, Global, Call, plain values) -> a torch
  file: the zip archive, or the pre-1.6 stream with `legacy`. `transposed`: 2-D arrays are
  stored column-major and read through their strides."""
  storages = []
  obj = _tensors(obj, storages, transposed)
  body = io.BytesIO()
  _Pickler(body, legacy).dump(obj)
  if legacy:
    with open(path, "wb") as f:
      for header in (0x1950A86A20F9469CFC6C, 1001,
                     {"protocol_version": 1001, "little_endian": True,
                      "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(header, f, protocol=2)
      f.write(body.getvalue())
      pickle.dump(sorted(s.key for s in storages), f, protocol=2)
      for storage in sorted(storages, key=lambda s: s.key):
        f.write(struct.pack("<q", storage.numel) + storage.data)
    return
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
    archive.writestr("archive/data.pkl", body.getvalue())
    archive.writestr("archive/byteorder", "little")
    for storage in storages:
      archive.writestr(f"archive/data/{storage.key}", storage.data)
    archive.writestr("archive/version", "3\n")


class RunsCommand:
  """Unpickled, touches `marker` (os.system): what a loader must refuse to run."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))
