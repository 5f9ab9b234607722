"""Everything a run sets up before its first epoch: :func:`create` returns an
:class:`Experiment` built from the config, with the data on the devices, the mesh, the
model, the optimizer, the state (restored on ``--resume``), ``config.json`` and the
metric sinks.

In a workdir:

* ``checkpoints/<epoch>/``: leftovers of an interrupted save are removed; an earlier run
  is refused unless ``--resume`` (continue it) or ``--overwrite`` (start over);
* ``config.json``: the resolved config plus ``derived`` facts (sizes, devices, versions);
  its target ``epochs`` is never lowered by a resume;
* ``metrics.jsonl``, TensorBoard events and ``curves.png`` (:mod:`train.report`): a new
  run removes an earlier run's, a resumed one continues them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from typing import Any

import jax
import optax
from jax.sharding import Mesh

import models
from train import checkpoints, data, distributed, loop, optimizers, placement, report, sharding
from train.config import Config

History = list[dict[str, Any]]
Say = Callable[[str], None]
#: An optimizer, or a function of the steps per epoch that builds one.
TxLike = optax.GradientTransformation | Callable[[int], optax.GradientTransformation]
DEFAULT_DATA_CACHE = "data-cache"  # in the workdir, for a multi-process run


@dataclasses.dataclass
class Experiment:
    """A run, set up: what the epoch loop reads and updates.

    Attributes:
      config: the resolved config.
      dataset: the data set on the host.
      mesh: the devices.
      data: the data set on the devices; its ``train_epoch`` and ``evaluate``.
      state: the training state (replicated over the mesh); the loop replaces it.
      data_key: the key whose ``fold_in(epoch)`` is an epoch's key.
      eval_params: the optimizer's point to evaluate, or ``None`` (the training iterate).
      checkpointer: the workdir's checkpoints, or ``None`` without a workdir.
      sinks: ``metrics.jsonl``, TensorBoard and curves (process 0 in a workdir), or ``None``.
      history: the epoch records so far (a resumed run's included).
      start_epoch: the last epoch already trained (0 for a new run).
      wall_time: training and evaluation seconds so far.
      derived: the facts ``config.json`` records beside the flags.
    """

    config: Config
    dataset: data.Dataset
    mesh: Mesh
    data: placement.Placement
    state: loop.TrainState
    data_key: jax.Array
    eval_params: Any
    checkpointer: checkpoints.Checkpointer | None
    sinks: report.RunReport | None = None
    history: History = dataclasses.field(default_factory=list)
    start_epoch: int = 0
    wall_time: float = 0.0
    derived: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def tokens(self) -> bool:
        """The data are token sequences ``[N, T]`` (:mod:`train.text`), not images."""
        return self.dataset.train_images.ndim == 2

    def kept_epoch(self) -> int | None:
        """The epoch of the last complete checkpoint, if any."""
        return self.checkpointer.latest_epoch() if self.checkpointer is not None else None

    def save(self, epoch: int, final: bool) -> None:
        """Checkpoints the state after ``epoch``, then (only then) reports the epoch to the
        sinks; ``final`` draws the curves now."""
        if self.checkpointer is None:
            return
        meta = {"epoch": epoch, "wall_time": self.wall_time, "history": self.history}
        self.checkpointer.save(epoch, self.state.arrays(), meta, finite=True)
        if self.sinks is not None:
            self.sinks.add(self.history, final=final)

    def close(self) -> None:
        """Waits for the checkpoint writes and closes the sinks."""
        if self.checkpointer is not None:
            self.checkpointer.close()
        if self.sinks is not None:
            self.sinks.close()


def create(config: Config, dataset: data.Dataset | None, tx: TxLike | None, say: Say) -> Experiment:
    """The :class:`Experiment` of a resolved ``config``.

    Args:
      config: the run's settings (resolved: :func:`train.optimizers.resolve`).
      dataset: an already loaded data set, or ``None`` (loaded from ``config``).
      tx: an optimizer (or a function of the steps per epoch that builds one) instead of
        ``config.optimizer``'s registry entry, or ``None``.
      say: where the run's lines go.
    """
    checkpointer = _prepare_workdir(config, say)
    dataset = _load_dataset(config) if dataset is None else dataset
    mesh = sharding.make_mesh(config.num_devices)
    plan = placement.plan(config, dataset, mesh)
    if tx is None:
        tx = optimizers.build_from_config(config, plan.steps_per_epoch)
    elif not isinstance(tx, optax.GradientTransformation):
        tx = tx(plan.steps_per_epoch)
    init_key, data_key = jax.random.split(jax.random.key(config.seed))
    _check_input_kind(config, dataset)
    model = models.create(config.model, dataset.num_classes)
    state = loop.create_train_state(model, tx, init_key, tuple(dataset.train_images.shape[1:]))
    experiment = Experiment(
        config=config,
        dataset=dataset,
        mesh=mesh,
        state=sharding.replicate(state, mesh),
        data=placement.place(config, dataset, mesh, plan),
        data_key=data_key,
        eval_params=optimizers.OPTIMIZERS[config.optimizer].eval_params,
        checkpointer=checkpointer,
    )
    _resume(experiment, say)
    experiment.derived = _derived(experiment)
    _open_outputs(experiment)
    say(_banner(experiment))
    return experiment


def _check_input_kind(config: Config, dataset: data.Dataset) -> None:
    """Refuses a language model on images, or an image model on token sequences."""
    tokens = dataset.train_images.ndim == 2  # token sequences [N, T] (train.text)
    if models.takes_tokens(config.model) != tokens:
        kinds = {True: "token sequences", False: "images"}
        raise ValueError(
            f"--model {config.model} takes {kinds[not tokens]}, but --dataset "
            f"{config.dataset} holds {kinds[tokens]}"
            + (" (train it on --dataset python_stdlib)" if not tokens else "")
        )


def _prepare_workdir(config: Config, say: Say) -> checkpoints.Checkpointer | None:
    """The workdir's checkpointer, leftovers removed and an earlier run refused unless
    ``--resume`` or ``--overwrite`` (which removes its checkpoints)."""
    if config.workdir is None:
        return None
    checkpointer = checkpoints.Checkpointer(
        os.path.join(config.workdir, "checkpoints"), max_to_keep=config.keep_checkpoints
    )
    for leftover in checkpointer.cleanup_temporary():
        say(f"removed {leftover}: the leftover of an interrupted save")
    if not config.resume and checkpointer.has_checkpoints():
        if not config.overwrite:
            raise ValueError(
                f"workdir {config.workdir} already holds a run; pass --resume to continue it "
                "or --overwrite to start over"
            )
        distributed.barrier("checked-workdir")  # all have seen the old run
        if distributed.process_index() == 0:
            shutil.rmtree(checkpointer.directory)
    distributed.barrier("prepared-workdir")
    return checkpointer


def _load_dataset(config: Config) -> data.Dataset:
    """``config``'s data set. In several processes it is memory-mapped from
    ``--data-cache`` or, by default, ``<workdir>/data-cache`` (a new run's own, rewritten
    when the run starts over): process 0 writes it while the others wait at a barrier,
    then each process reads only the rows its devices hold (:func:`sharding.put_rows`)."""
    cache = config.data_cache
    if cache is None and distributed.active() and config.workdir is not None:
        cache = os.path.join(config.workdir, DEFAULT_DATA_CACHE)
        if not config.resume and distributed.process_index() == 0:
            shutil.rmtree(cache, ignore_errors=True)  # an earlier run's (another --data-dir)

    def load() -> data.Dataset:
        return data.load_for_config(config.replace(data_cache=cache))

    if cache is None or not distributed.active():
        return load()
    dataset = load() if distributed.process_index() == 0 else None
    distributed.barrier("data-cache")  # written once, by process 0
    return load() if dataset is None else dataset


def _resume(experiment: Experiment, say: Say) -> None:
    """On ``--resume``: the state, history and time of the workdir's last good checkpoint."""
    if experiment.checkpointer is None or not experiment.config.resume:
        return
    workdir = experiment.config.workdir
    restored = experiment.checkpointer.restore_latest(experiment.state.arrays())
    if restored is None:
        say(f"no checkpoint in {workdir}: starting from epoch 0")
        return
    start_epoch, arrays, meta, skipped = restored
    for epoch, reason in skipped:
        say(f"skipped checkpoint {epoch}: {reason}")
    experiment.state = experiment.state.replace_arrays(arrays)
    experiment.start_epoch = start_epoch
    experiment.wall_time = float(meta["wall_time"])
    experiment.history = list(meta["history"])
    say(f"resuming {workdir} after epoch {start_epoch}")


def _derived(experiment: Experiment) -> dict[str, Any]:
    """The facts of the run that ``config.json`` records beside the flags."""
    config, dataset, mesh, placed = (
        experiment.config, experiment.dataset, experiment.mesh, experiment.data,
    )  # fmt: skip
    plan, num_train = placed.plan, len(dataset.train_labels)
    return {
        "num_train": num_train,
        "num_test": len(dataset.test_labels),
        "image_shape": list(dataset.train_images.shape[1:]),
        "num_classes": dataset.num_classes,
        "steps_per_epoch": plan.steps_per_epoch,
        "optimizer_steps_per_epoch": plan.steps_per_epoch * config.persistency,
        "dropped_per_epoch": num_train - plan.steps_per_epoch * config.batch_size,
        "data_placement": config.data_placement,
        "data_mode": placed.mode,
        "chunk_batches": placed.chunk_batches,
        "train_examples_per_device": plan.used_train // mesh.size if plan.sharded else num_train,
        "num_devices": mesh.size,
        "num_processes": jax.process_count(),
        "devices": [str(d) for d in mesh.devices.flat],
        "jax_version": jax.__version__,
        "data_source": dataset.source,
    }


def _open_outputs(experiment: Experiment) -> None:
    """``config.json`` and the metric sinks, by process 0 in a workdir."""
    workdir = experiment.config.workdir
    if workdir is None or distributed.process_index() != 0:
        return
    _write_config(workdir, experiment.config, experiment.derived)
    if not experiment.history:  # a new run: no curves or events of an earlier one
        report.remove_outputs(workdir)
    experiment.sinks = report.RunReport(workdir)
    experiment.sinks.restart(experiment.history)


def _write_config(workdir: str, config: Config, derived: dict[str, Any]) -> None:
    """``config.json``, keeping a larger target ``epochs`` of an earlier run in the workdir."""
    path = os.path.join(workdir, "config.json")
    # Where the processes meet is not part of the run: a resume may meet elsewhere.
    saved = config.replace(coordinator_address=None, num_processes=None, process_id=None)
    saved = saved.to_json()
    if config.resume and os.path.exists(path):
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError), open(path) as f:
            saved["epochs"] = max(config.epochs, int(json.load(f)["epochs"]))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({**saved, "derived": derived}, f, indent=2)
    os.replace(tmp, path)


def _banner(experiment: Experiment) -> str:
    """The run's first line: data, model, optimizer, batches, devices, workdir."""
    config, derived, mesh = experiment.config, experiment.derived, experiment.mesh
    image_shape = tuple(derived["image_shape"])
    params = sum(x.size for x in jax.tree.leaves(experiment.state.params))
    return (
        f"{config.dataset}: {derived['num_train']} train / {derived['num_test']} test "
        f"{'sequences' if experiment.tokens else 'images'} "
        f"{'x'.join(map(str, image_shape))}; {config.model} ({params:,} params); "
        f"{config.optimizer}{' (layer-wise)' if config.layerwise else ''} "
        f"{config.schedule} lr {config.learning_rate:g}; batch {config.batch_size}, K "
        f"{config.persistency}, {derived['steps_per_epoch']} batches/epoch "
        f"({derived['dropped_per_epoch']} dropped); {mesh.size} {jax.default_backend()} "
        f"device(s), data {config.data_placement}"
        + (
            f", chunks of {derived['chunk_batches']} batches"
            if derived["data_mode"] == "chunked"
            else ""
        )
        + (f"; workdir {config.workdir}" if config.workdir else "")
    )
