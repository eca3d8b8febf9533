"""Device meshes and logical-axis rules from the config.

The models name their axes logically (`embed`, `heads`, `mlp`, `activation_batch`, ...); this
module maps those names to the axes of a `jax.sharding.Mesh` (`data`, `fsdp`, `tensor`). Data
parallel, FSDP and tensor parallel are therefore mesh shapes in the config, not code changes:

    mesh = {"data": -1, "fsdp": 1, "tensor": 1}   # data parallel over every device
    mesh = {"data": 2, "fsdp": 4, "tensor": 1}    # parameters and optimizer state sharded 4 ways
    mesh = {"data": 2, "fsdp": 2, "tensor": 2}    # plus attention heads / MLP split 2 ways
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from everest_jax.config import ConfigError
from everest_jax.fields import Int

MESH_AXES = ("data", "fsdp", "tensor")
# The mesh section of every method's run config: axis sizes (-1: the rest of the devices) and how
# many devices to use (0: all).
MESH_FIELDS = {**{axis: Int(1, also=(-1,)) for axis in MESH_AXES}, "num_devices": Int(0)}
BATCH_AXES = ("data", "fsdp")  # the batch is split over both; FSDP all-gathers weights instead

# Logical name -> mesh axes. Parameters: FSDP shards the model width, tensor parallelism heads
# and MLP features. Activations: the batch over data x fsdp, the MLP features over tensor.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("activation_batch", BATCH_AXES),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_mlp", "tensor"),
    ("embed", "fsdp"),
    ("decoder_embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("kv", None),
    ("norm", None),
    ("layers", None),
    ("classes", None),
)


def mesh_shape(mesh_config: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
    """Resolve one -1 entry and check that the axes multiply to `num_devices`."""
    mesh_config = {k: v for k, v in mesh_config.items() if k != "num_devices"}
    unknown = sorted(set(mesh_config) - set(MESH_AXES))
    if unknown:
        raise ConfigError(f"mesh.{unknown[0]} is not a mesh axis; use {MESH_AXES}")
    sizes = [int(mesh_config.get(a, 1)) for a in MESH_AXES]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ConfigError(f"mesh={dict(mesh_config)}: sizes must be positive, with at most one -1")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if num_devices % known:
            raise ConfigError(f"mesh={dict(mesh_config)} cannot be filled with {num_devices} devices")
        sizes[sizes.index(-1)] = num_devices // known
    if int(np.prod(sizes)) != num_devices:
        raise ConfigError(f"mesh={dict(mesh_config)} has {int(np.prod(sizes))} devices but "
                          f"{num_devices} are available; make the axes multiply to {num_devices}")
    return tuple(sizes)


def mesh_devices(mesh_config: Mapping[str, int]) -> list[jax.Device]:
    """All devices, or the first `mesh.num_devices` of them when that is set (> 0)."""
    devices = jax.devices()
    n = int(mesh_config.get("num_devices", 0) or 0)
    if n > len(devices):
        raise ConfigError(f"mesh.num_devices={n} but only {len(devices)} devices are available")
    return devices[:n] if n > 0 else devices


def make_mesh(mesh_config: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(devices if devices is not None else mesh_devices(mesh_config))
    shape = mesh_shape(mesh_config, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)


def rules_from_config(rules: Sequence[Sequence[Any]] | None) -> tuple[tuple[str, Any], ...]:
    """Config rules (list of [logical, mesh axis or list or None]) -> the tuple flax expects."""
    if not rules:
        return DEFAULT_RULES
    out = []
    for rule in rules:
        name, axes = rule[0], rule[1]
        axes = tuple(axes) if isinstance(axes, (list, tuple)) else axes
        for a in (axes if isinstance(axes, tuple) else (axes,)):
            if a is not None and a not in MESH_AXES:
                raise ConfigError(f"sharding_rules: {name!r} maps to unknown mesh axis {a!r}")
        out.append((name, axes))
    return tuple(out)


def logical_shardings(boxed_tree: Any, mesh: Mesh, rules) -> Any:
    """NamedShardings for a tree of (abstract) values boxed with logical names."""
    return nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed_tree), mesh, rules)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Leading (batch) axis over data x fsdp, the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def data_parallel_size(mesh: Mesh) -> int:
    return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh, global_batch_size: int) -> dict[str, jax.Array]:
    """Assemble each process's slice of the batch into global arrays sharded over the batch axes."""
    out = {}
    for k, v in local.items():
        shape = (global_batch_size, *v.shape[1:])
        out[k] = jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v, shape)
    return out
