"""The data set on the devices, behind one call: :func:`place` returns what the epoch loop
consumes, a :class:`Placement` with ``train_epoch(state, key, wait)`` and ``evaluate(state)``.

Two choices combine (see :mod:`train.sharding` for how each samples):

* ``--data-placement``: ``sharded`` (device ``s`` of ``S`` holds rows ``[s N/S, (s+1) N/S)``;
  the test set is padded to whole evaluation batches, label -1 on the padding) or
  ``replicated`` (a full copy on every device);
* ``--data-mode``: ``resident`` (the training set on the devices, one jitted call per
  epoch, :func:`train.loop.train_epoch`) or ``chunked`` (the training set stays on the
  host; the epoch's batches go to the devices ``C`` batches at a time,
  :func:`train.loop.train_chunk`, with the resident mode's numbers); ``auto`` picks
  ``chunked`` when the training set would take over half of the free device memory.

:func:`plan` does the arithmetic first (batches per epoch, the rows used, the evaluation
batch), because the optimizer's schedules need the number of steps before the state
exists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from train import loop, sharding
from train.config import Config
from train.data import Dataset

#: Batches per chunk of the chunked mode where the free device memory is unknown.
DEFAULT_CHUNK_BATCHES = 64

Wait = Callable[[Any], float]


@dataclasses.dataclass(frozen=True)
class Plan:
    """How an epoch is cut: the numbers that do not depend on where the data lives.

    Attributes:
      sharded: the data set is sharded over the devices (``--data-placement sharded``).
      used_train: the training rows used (sharded: a multiple of the devices).
      steps_per_epoch: batches per epoch (the last partial batch dropped).
      eval_batch_size: the test-set batch, a multiple of the devices.
    """

    sharded: bool
    used_train: int
    steps_per_epoch: int
    eval_batch_size: int


def plan(config: Config, dataset: Dataset, mesh: Mesh) -> Plan:
    """The :class:`Plan` of ``config`` on ``dataset`` and ``mesh``.

    Raises:
      ValueError: a batch size that does not split over the devices or exceeds the
        training set.

    Example:
      >>> from train import data
      >>> ds = data.load_dataset("synthetic", synthetic_shape=(4, 4, 1), synthetic_size=(50, 7))
      >>> plan(Config(batch_size=16), ds, sharding.make_mesh(1))
      Plan(sharded=True, used_train=50, steps_per_epoch=3, eval_batch_size=7)
    """
    sharding.check_batch_size(config.batch_size, mesh, "--batch-size")
    num_train, batch_size = len(dataset.train_labels), config.batch_size
    if batch_size > num_train:
        raise ValueError(f"--batch-size {batch_size} exceeds the {num_train} training examples")
    sharded = config.data_placement == "sharded"
    used_train = sharding.sharded_rows(num_train, mesh) if sharded else num_train
    steps = (
        (used_train // mesh.size) // (batch_size // mesh.size)
        if sharded
        else num_train // batch_size
    )
    eval_batch_size = min(config.eval_batch_size, len(dataset.test_labels))
    eval_batch_size = -(-eval_batch_size // mesh.size) * mesh.size
    return Plan(sharded, used_train, steps, eval_batch_size)


@dataclasses.dataclass
class Placement:
    """The data set on the devices, and the compiled epoch and evaluation over it.

    Attributes:
      plan: how an epoch is cut.
      mode: ``"resident"`` or ``"chunked"``.
      chunk_batches: batches per chunk (chunked mode), else ``None``.
      options: the static arguments of the jitted epoch.
    """

    plan: Plan
    mode: str
    chunk_batches: int | None
    options: dict[str, Any]
    mesh: Mesh
    dataset: Dataset
    train: tuple[jax.Array, jax.Array] | None
    test: tuple[jax.Array, jax.Array]
    stats: tuple[jax.Array, jax.Array]
    _train_epoch: Callable[..., Any] | None = None
    _evaluate: Callable[..., Any] | None = None

    def compile(self, state: loop.TrainState, key: jax.Array, eval_params: Any) -> None:
        """Compiles the epoch (for ``state`` and a key like ``key``) and the evaluation."""
        if self.mode == "resident":
            epoch_fn = loop.train_epoch.lower(
                state, *self.train, *self.stats, key, sharded=self.plan.sharded, **self.options
            ).compile()

            def train_epoch(state: loop.TrainState, key: jax.Array, wait: Wait):
                state, metrics = epoch_fn(state, *self.train, *self.stats, key)
                return state, metrics, wait(metrics)

            self._train_epoch = train_epoch
        else:
            self._train_epoch = _chunked_epochs(self, state)
        self._evaluate = loop.evaluate.lower(
            state,
            *self.test,
            *self.stats,
            batch_size=self.plan.eval_batch_size,
            data_sharding=self.options["data_sharding"],
            eval_params=eval_params,
            sharded=self.plan.sharded,
        ).compile()

    def train_epoch(
        self, state: loop.TrainState, key: jax.Array, wait: Wait
    ) -> tuple[loop.TrainState, loop.Metrics, float]:
        """One epoch from ``state`` (donated) with the epoch's key; ``wait(outputs)`` waits
        for the device and returns the moment it finished. Returns the new state, the
        epoch's metrics (on the device) and that moment."""
        return self._train_epoch(state, key, wait)

    def evaluate(self, state: loop.TrainState) -> loop.Metrics:
        """The test set's loss and accuracy at ``state`` (on the device)."""
        return self._evaluate(state, *self.test, *self.stats)


def place(config: Config, dataset: Dataset, mesh: Mesh, plan: Plan) -> Placement:
    """``dataset`` on ``mesh`` as ``config`` says (see the module docstring)."""
    mode, chunk_batches = _choose_mode(config, dataset, mesh, plan)
    stats = sharding.replicate((dataset.mean, dataset.std), mesh)
    if plan.sharded:
        num_test = len(dataset.test_labels)
        test_rows = -(-num_test // plan.eval_batch_size) * plan.eval_batch_size
        test = (
            sharding.put_rows(dataset.test_images, mesh, test_rows),
            sharding.put_rows(dataset.test_labels, mesh, test_rows, fill=-1),
        )
    else:
        test = sharding.replicate((dataset.test_images, dataset.test_labels), mesh)
    train = None
    if mode == "resident" and plan.sharded:
        train = (
            sharding.put_rows(dataset.train_images, mesh, plan.used_train),
            sharding.put_rows(dataset.train_labels, mesh, plan.used_train),
        )
    elif mode == "resident":
        train = sharding.replicate((dataset.train_images, dataset.train_labels), mesh)
    options = {
        "batch_size": config.batch_size,
        "persistency": config.persistency,
        "augment": config.augment,
        "data_sharding": sharding.batch_sharding(mesh),
    }
    return Placement(plan, mode, chunk_batches, options, mesh, dataset, train, tuple(test), stats)


def _free_device_memory() -> int | None:
    """Free bytes of the first local device, where the backend reports them (not on CPU)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def _choose_mode(
    config: Config, dataset: Dataset, mesh: Mesh, plan: Plan
) -> tuple[str, int | None]:
    """``("resident" | "chunked", batches per chunk)``: ``--data-mode``, or by ``auto`` the
    chunked mode when the training set would take over half of the free device memory."""
    images = dataset.train_images
    example_bytes = int(np.prod(images.shape[1:])) * images.dtype.itemsize + 4  # + label
    shards = mesh.size if plan.sharded else 1
    free = _free_device_memory()
    mode = config.data_mode
    if mode == "auto":
        on_device = len(images) * example_bytes // shards
        mode = "chunked" if free is not None and on_device > free // 2 else "resident"
    if mode == "resident":
        return mode, None
    chunk = config.chunk_batches
    if chunk is None:
        local_batch_bytes = config.batch_size // mesh.size * example_bytes
        chunk = DEFAULT_CHUNK_BATCHES if free is None else max(1, free // 8 // local_batch_bytes)
    return mode, max(1, min(chunk, plan.steps_per_epoch))


def _chunked_epochs(placed: Placement, state: loop.TrainState) -> Callable[..., Any]:
    """The chunked mode's epoch: the epoch's batches (:func:`train.loop.epoch_indices`, the
    resident mode's) gathered on the host from the (memory-mapped) training set, C batches
    at a time; chunk i + 1 is gathered and copied to the devices while chunk i trains
    (:func:`train.loop.train_chunk`), so at most two chunks live on a device."""
    images, labels = placed.dataset.train_images, placed.dataset.train_labels
    mesh, options, chunk_batches = placed.mesh, placed.options, placed.chunk_batches
    batch_size, steps = options["batch_size"], placed.plan.steps_per_epoch
    structs = [
        jax.ShapeDtypeStruct(
            (chunk_batches * batch_size, *a.shape[1:]), a.dtype, sharding=options["data_sharding"]
        )
        for a in (images, labels)
    ]
    sums0 = sharding.replicate(loop.zero_sums(), mesh)
    chunk_fn = loop.train_chunk.lower(
        state, sums0, *structs, np.int32(1), np.int32(0), *placed.stats, jax.random.key(0),
        **options,
    ).compile()  # fmt: skip

    def put(indices: np.ndarray) -> tuple[jax.Array, jax.Array]:
        batches = len(indices)
        if batches < chunk_batches:  # the last chunk: padded, its padding not trained on
            indices = np.concatenate(
                [indices, np.zeros_like(indices[:1]).repeat(chunk_batches - batches, 0)]
            )
        rows = loop.chunk_rows(indices, mesh.size)
        return (
            sharding.put_rows(_Gather(images, rows), mesh),
            sharding.put_rows(_Gather(labels, rows), mesh),
        )

    def train_epoch(state: loop.TrainState, key: jax.Array, wait: Wait):
        perm_key, augment_key = jax.random.split(key)
        shards = mesh.size if placed.plan.sharded else None
        indices = loop.epoch_indices(perm_key, placed.plan.used_train, batch_size, shards)
        sums = sharding.replicate(loop.zero_sums(), mesh)
        chunk = put(indices[:chunk_batches])
        for start in range(0, steps, chunk_batches):
            count = min(chunk_batches, steps - start)
            state, sums = chunk_fn(
                state, sums, *chunk, np.int32(count), np.int32(start), *placed.stats, augment_key
            )
            if start + chunk_batches < steps:  # overlaps the running chunk
                chunk = put(indices[start + chunk_batches : start + 2 * chunk_batches])
            finished = wait(sums)  # the running chunk is done: at most two chunks on a device
        sums = jax.device_get(sums)
        metrics = loop.epoch_metrics(sums, steps, batch_size, options["persistency"])
        return state, metrics, finished

    return train_epoch


class _Gather:
    """Rows ``rows`` of ``array`` as a sliceable sequence (read only when sliced)."""

    def __init__(self, array: Any, rows: np.ndarray):
        self.array, self.rows, self.shape = array, rows, (len(rows), *array.shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, where: slice) -> np.ndarray:
        rows = self.rows[where]
        order = np.argsort(rows, kind="stable")  # sequential reads of the memory map
        out = np.empty((len(rows), *self.array.shape[1:]), self.array.dtype)
        out[order] = self.array[rows[order]]
        return out
