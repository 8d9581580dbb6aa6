"""One `config.data` key read with one clear error naming it (config.data's checks, and each
augmentation's own in vidtx.data.augment)."""
from __future__ import annotations

from vidtx.errors import VidtxError


def value(data, key: str):
  """`data.<key>`, or a VidtxError naming `config.data.<key>` where the config lacks it."""
  if key not in data:
    raise VidtxError(f"config.data.{key} is missing; every experiment's data section starts "
                     "from configs/common.py data_config(), which has the defaults")
  return data[key]


def positive_int(data, key: str) -> int:
  x = value(data, key)
  if x is None:
    raise VidtxError(f"config.data.{key} is not set")
  if isinstance(x, bool) or not isinstance(x, int) or x < 1:
    raise VidtxError(f"config.data.{key}={x!r} must be a positive integer")
  return x


def pair(data, key: str, cast) -> tuple:
  """`config.data.<key>` as a (low, high) pair of `cast`."""
  x = value(data, key)
  try:
    low, high = (cast(v) for v in x)
  except (TypeError, ValueError):
    raise VidtxError(f"config.data.{key}={x!r} must be a (min, max) pair") from None
  return low, high


def one_of(data, key: str, choices) -> str:
  x = value(data, key)
  if x not in choices:
    raise VidtxError(f"config.data.{key}={x!r} is not one of {tuple(choices)}")
  return x
