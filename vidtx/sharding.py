"""Device mesh, logical-axis rules and sharded placement.

The mesh has three named axes: `data` (batch), `fsdp` (batch *and* parameter
shards) and `tensor` (model-parallel dims). Models name their parameter and
activation dimensions logically (`embed`, `mlp`, `act_batch`, ...); the rules in
`config.sharding.rules` map those names to mesh axes. Sharding is data, not code.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vidtx import models
from vidtx.errors import VidtxError

MESH_AXES = ("data", "fsdp", "tensor")

# Default logical -> mesh rules for the names every family shares (vidtx.models.vit): batch over
# data and fsdp, parameters' embed dim over fsdp, MLP hidden and heads over tensor. A family adds
# rules for its own names (Family.axis_rules). Names without a rule are replicated.
DEFAULT_RULES = (
    ("act_batch", ("data", "fsdp")),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
)


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int, int]:
  """Sizes of (data, fsdp, tensor); one of them may be -1 (all remaining devices)."""
  sizes = [int(mesh_config[axis]) for axis in MESH_AXES]
  if sizes.count(-1) > 1:
    raise VidtxError(f"config.mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise VidtxError(f"config.mesh {dict(zip(MESH_AXES, sizes))} does not divide {num_devices} devices")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise VidtxError(
        f"config.mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
        f"there are {num_devices}")
  return tuple(sizes)


def make_mesh(mesh_config, devices: Sequence[jax.Device] | None = None) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  shape = mesh_shape(mesh_config, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def default_rules(model_name: str) -> tuple[tuple[str, object], ...]:
  """DEFAULT_RULES plus the rules of model family `model_name` for its own logical names."""
  return DEFAULT_RULES + tuple(models.get_family(model_name).axis_rules)


def rules(config) -> tuple[tuple[str, object], ...]:
  """Logical axis rules from `config.sharding.rules` (a list of [name, mesh_axes]); None: the
  defaults for config.model's family."""
  configured = config.sharding.rules
  if configured is None:
    return default_rules(config.model.name)
  return tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in configured)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Leading (batch) dim over data x fsdp, the rest replicated."""
  return NamedSharding(mesh, P(("data", "fsdp"), *([None] * (ndim - 1))))


def batch_shards(mesh: Mesh) -> int:
  """How many contiguous blocks batch_sharding splits the batch into (one per data x fsdp place)."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def divisible_spec(spec: P, shape: Sequence[int], mesh: Mesh) -> P:
  """`spec` with the mesh axes dropped from every dimension whose size they do not divide: that
  dimension is replicated instead (Swin-T's 96 channels over fsdp=64, say). jit refuses uneven
  argument shardings, and padding a 96-wide weight to 128 places would waste more than it saves."""
  entries = []
  for size, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    entries.append(axes if size % math.prod(mesh.shape[n] for n in names) == 0 else None)
  return P(*entries)


def logical_shardings(abstract_boxed_tree, mesh: Mesh, logical_rules) -> object:
  """NamedShardings for a tree of (possibly nn.LogicallyPartitioned) abstract arrays; a dimension
  that its mesh axes do not divide is replicated (`divisible_spec`)."""
  specs = nn.get_partition_spec(abstract_boxed_tree)
  shardings = nn.logical_to_mesh_sharding(specs, mesh, logical_rules)
  return jax.tree.map(
      lambda s, x: NamedSharding(mesh, divisible_spec(s.spec, x.shape, mesh)),
      shardings, nn.unbox(abstract_boxed_tree))


def variable_shardings(boxed_abstract: dict, mesh: Mesh, logical_rules) -> dict:
  """NamedShardings for {'params', 'batch_stats'} from the logical axis names."""
  shardings = logical_shardings(boxed_abstract, mesh, logical_rules)
  return {"params": shardings["params"], "batch_stats": shardings.get("batch_stats", {})}


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """This host's share of a batch (numpy) -> global jax.Arrays sharded over the batch axes."""
  return {
      k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v)), np.asarray(v))
      for k, v in local_batch.items()
  }
