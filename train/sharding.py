"""Data parallelism with ``jax.sharding``: one mesh axis ``data`` over the local devices.

The batch is split along its leading axis across the devices of the mesh; parameters,
optimizer state and the (uint8) data set are replicated. Inside the jitted epoch the
batch indices and images are pinned to the batch sharding with
``jax.lax.with_sharding_constraint``; XLA's SPMD partitioner then computes each shard's
forward and backward pass on its own device and inserts the gradient all-reduce (and, for
batch norm, the cross-device batch statistics), so the arithmetic is the single-device
arithmetic up to the order of floating-point sums.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """Builds a one-axis mesh named ``data`` over the first ``num_devices`` local devices.

    Args:
      num_devices: how many local devices to use; ``None`` uses all of them.

    Returns:
      A ``jax.sharding.Mesh`` with the single axis ``'data'``.

    Raises:
      ValueError: if ``num_devices`` is not between 1 and the number of local devices.

    Example:
      >>> mesh = make_mesh(1)
      >>> mesh.axis_names, mesh.size
      (('data',), 1)
    """
    devices = jax.local_devices()
    if num_devices is None:
        num_devices = len(devices)
    if not 1 <= num_devices <= len(devices):
        raise ValueError(
            f"num_devices must be between 1 and {len(devices)} (the local devices), "
            f"got {num_devices}"
        )
    return Mesh(np.asarray(devices[:num_devices]), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding of a batch: leading axis split over ``data``, the rest whole.

    Example:
      >>> batch_sharding(make_mesh(1)).spec == PartitionSpec("data")
      True
    """
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding of replicated values (parameters, optimizer state, the data set).

    Example:
      >>> replicated_sharding(make_mesh(1)).spec == PartitionSpec()
      True
    """
    return NamedSharding(mesh, PartitionSpec())


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Puts every array of ``tree`` on all devices of ``mesh`` (a full copy on each).

    Example:
      >>> import jax.numpy as jnp
      >>> x = replicate({"w": jnp.ones(3)}, make_mesh(1))
      >>> x["w"].sharding.spec == PartitionSpec()
      True
    """
    return jax.device_put(tree, replicated_sharding(mesh))


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
    """Raises ``ValueError`` unless ``batch_size`` splits evenly over the mesh.

    Example:
      >>> check_batch_size(32, make_mesh(1))
    """
    if batch_size % mesh.size:
        raise ValueError(
            f"{name} ({batch_size}) must be a multiple of the number of devices ({mesh.size}) "
            "so that every device gets the same share of the batch"
        )
