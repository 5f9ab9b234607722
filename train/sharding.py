"""Data parallelism with ``jax.sharding``: one mesh axis ``data`` over all devices.

The batch is split along its leading axis across the devices of the mesh; parameters and
optimizer state are replicated. The (uint8) data set is sharded by default: device ``s``
of ``S`` holds rows ``[s * N/S, (s + 1) * N/S)`` and each process builds its devices'
rows from its own slice of the host data (:func:`put_rows`); the replicated mode puts a
full copy on every device (:func:`replicate`). In several processes (``jax.distributed``)
the mesh spans every process's devices, in process order. Inside the jitted epoch the
batch indices and images are pinned to the batch sharding with
``jax.lax.with_sharding_constraint``. Each device computes the forward and backward pass of
its own examples, and one all-reduce of one flat buffer adds up the loss, the count of
correct predictions and the gradients (:func:`train.loop.train_step`); with batch norm,
XLA's SPMD partitioner inserts the all-reduces and the cross-device batch statistics. The
arithmetic is the single-device arithmetic up to the order of floating-point sums.

How the sharded mode samples, against one device (:func:`train.loop.epoch_indices`):

* one device (and the replicated mode on any number): each epoch one permutation of all
  ``N`` examples, cut into ``N // B`` batches;
* ``S`` devices, sharded: device ``s`` keeps the same block of ``N / S`` rows for the whole
  run; each epoch draws one permutation per block, and global batch ``i`` takes the next
  ``B / S`` examples of every block, gathered on its own device (no data crosses devices).
  So (a) each batch is stratified: exactly ``B / S`` examples from every block, never a
  batch drawn from a few blocks; the blocks are contiguous rows of the file, so a file
  sorted by class should be shuffled once (the IDX and CIFAR files are not sorted);
  (b) the last ``N % S`` rows (fewer than ``S``) are never used, and the partial batch
  dropped each epoch is per block (up to ``B / S - 1`` examples of each block, a new
  random set every epoch) rather than up to ``B - 1`` overall; (c) the sequence of batches
  depends on ``S``: 4 devices do not replay the single-device run (1 device samples
  exactly as before: shard 0 uses the epoch's key itself).

``--data-placement replicated`` is kept for (c): it replays the single-device batches on
any number of devices (the check of data parallelism, comparing runs across machines) at
``S`` times the device memory, and costs one branch in :func:`train.loop.train_epoch`.
"""

from __future__ import annotations

import itertools
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """Builds a one-axis mesh named ``data`` over the first ``num_devices`` devices.

    In one process these are the local devices; under ``jax.distributed`` with several
    processes the mesh spans all devices of all processes (then ``num_devices`` must be
    ``None`` or their number).

    Args:
      num_devices: how many devices to use; ``None`` uses all of them.

    Returns:
      A ``jax.sharding.Mesh`` with the single axis ``'data'``.

    Raises:
      ValueError: if ``num_devices`` is not between 1 and the number of local devices.

    Example:
      >>> mesh = make_mesh(1)
      >>> mesh.axis_names, mesh.size
      (('data',), 1)
    """
    if jax.process_count() > 1:
        devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
        if num_devices not in (None, len(devices)):
            raise ValueError(
                f"num_devices must be {len(devices)} (every device of the {jax.process_count()} "
                f"processes) or unset in a multi-process run, got {num_devices}"
            )
        return Mesh(np.asarray(devices), (DATA_AXIS,))
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

    Every process must pass the same values (they are its copy of a replicated array).

    Example:
      >>> import jax.numpy as jnp
      >>> x = replicate({"w": jnp.ones(3)}, make_mesh(1))
      >>> x["w"].sharding.spec == PartitionSpec()
      True
    """
    sharding = replicated_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree
    )


def sharded_rows(num_rows: int, mesh: Mesh) -> int:
    """The rows of a data set that the sharded mode uses: the largest multiple of the
    number of devices (the last ``num_rows % mesh.size`` rows are left out).

    Example:
      >>> sharded_rows(10, make_mesh(1))
      10
    """
    return num_rows - num_rows % mesh.size


def process_rows(num_rows: int, mesh: Mesh) -> slice:
    """The rows ``[start, stop)`` of a ``num_rows`` array sharded over ``mesh`` that this
    process's devices hold (contiguous: the mesh lists devices in process order).

    Example:
      >>> process_rows(8, make_mesh(1))
      slice(0, 8, None)
    """
    indices = batch_sharding(mesh).addressable_devices_indices_map((num_rows,)).values()
    starts = sorted(index[0].indices(num_rows)[:2] for index in indices)
    for (_, stop), (start, _) in itertools.pairwise(starts):
        if stop != start:
            raise ValueError("this process's devices do not hold contiguous rows of the mesh")
    return slice(starts[0][0], starts[-1][1])


def put_rows(host: Any, mesh: Mesh, num_rows: int | None = None, fill: Any = 0) -> jax.Array:
    """A global array of ``num_rows`` rows sharded over ``mesh`` along its first axis,
    built from ``host`` (a NumPy array or memory map of the global rows, the same in
    every process) by reading only the rows of this process's devices.

    Rows at or beyond ``len(host)`` are ``fill`` (padding).

    Example:
      >>> x = put_rows(np.arange(3), make_mesh(1), 4, fill=-1)
      >>> x.tolist(), x.sharding.spec == PartitionSpec("data")
      ([0, 1, 2, -1], True)
    """
    num_rows = len(host) if num_rows is None else num_rows
    rows = process_rows(num_rows, mesh)
    local = np.asarray(host[rows.start : min(rows.stop, len(host))])
    missing = rows.stop - rows.start - len(local)
    if missing > 0:
        padding = np.full((missing, *local.shape[1:]), fill, local.dtype)
        local = np.concatenate([local, padding])
    return jax.make_array_from_process_local_data(
        batch_sharding(mesh), local, (num_rows, *local.shape[1:])
    )


def device_bytes(array: jax.Array) -> int:
    """Bytes that one device holds of ``array``, from its sharding.

    Example:
      >>> device_bytes(put_rows(np.zeros((4, 2), np.uint8), make_mesh(1)))
      8
    """
    shape = array.sharding.shard_shape(array.shape)
    return int(np.prod(shape)) * array.dtype.itemsize


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
