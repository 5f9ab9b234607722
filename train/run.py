"""``train.run(config)``: the one training function of the CLI and of every benchmark.

It loads the data, builds the mesh, the model and the optimizer from the registries,
runs the device-resident epochs (:func:`train.loop.train_epoch`, one jitted call each),
evaluates, and, when the config names a workdir, writes checkpoints and metrics:

* ``config.json``: the resolved config plus ``derived`` facts (sizes, devices, versions);
  its target ``epochs`` is never lowered by a resume;
* ``checkpoints/<epoch>/``: after every epoch; ``metrics.jsonl``, TensorBoard events and
  ``curves.png`` get an epoch only once its checkpoint is committed (:mod:`train.report`);
* ``.lock``: held while the run lives, so a second run into the same workdir stops at once.

Faults end the run with an exception that the CLI turns into one line and an exit status:
:class:`Diverged` (a non-finite training loss under ``on_nan="stop"``),
:class:`Interrupted` (a first SIGINT/SIGTERM: the running epoch was finished and saved),
:class:`Aborted` (a second signal: the last complete checkpoint is kept),
``CheckpointError`` (a save or restore that failed), ``ValueError`` (bad input).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

import models
from train import (
    checkpoints,
    data,
    distributed,
    interrupt,
    loop,
    optimizers,
    progress,
    report,
    sharding,
)
from train.config import Config
from train.workdir_lock import WorkdirLock

History = list[dict[str, Any]]
POLL_SECONDS = 0.05


class RunStopped(Exception):
    """The run ended before its last epoch; ``history`` holds the epochs it kept."""

    def __init__(self, message: str, history: History):
        super().__init__(message)
        self.history = history


class Diverged(RunStopped):
    """The training loss was not finite (``on_nan="stop"``)."""


class Interrupted(RunStopped):
    """A first SIGINT/SIGTERM: the running epoch was finished and saved."""

    def __init__(self, message: str, history: History, signum: int):
        super().__init__(message, history)
        self.signum = signum


class Aborted(Interrupted):
    """A second signal: stopped at once; the last complete checkpoint is kept."""


def resume_command(workdir: str, epochs: int) -> str:
    """The exact command that continues a run.

    Example:
      >>> resume_command("runs/a b", 4)
      "python -m train --resume --workdir 'runs/a b' --epochs 4"
    """
    import shlex

    return f"python -m train --resume --workdir {shlex.quote(workdir)} --epochs {epochs}"


def run(
    config: Config,
    *,
    dataset: data.Dataset | None = None,
    log: Callable[[str], None] | None = print,
    show_progress: bool | None = None,
    tx: optax.GradientTransformation | Callable[[int], optax.GradientTransformation] | None = None,
    on_epoch: Callable[[dict[str, Any], loop.TrainState], None] | None = None,
) -> History:
    """Trains and evaluates as ``config`` says; returns one record per epoch.

    Args:
      config: the run's settings; ``learning_rate``/``momentum``/``min_learning_rate``
        left ``None`` take the optimizer's defaults. ``workdir=None`` writes nothing
        (no checkpoints, no metrics): what benchmarks want.
      dataset: an already loaded data set (else loaded from ``config``).
      log: where the run's lines go (``None``: silent).
      show_progress: draw the live line on stderr (``None``: when stderr is a terminal
        and ``config.progress``). It never changes what is computed.
      tx: an optimizer to use instead of ``config.optimizer``'s registry entry, or a
        function of the steps per epoch that builds one (``config.optimizer`` then only
        names it in the logs).
      on_epoch: called after each epoch (and its checkpoint) with the epoch's record and
        the state (for example to read the optimizer state); do not keep the state: the
        next epoch donates its buffers.

    Returns:
      The history: per epoch ``epoch``, ``step``, ``wall_time`` (training and evaluation
      seconds so far, compilation excluded), ``epoch_time`` (training seconds of that
      epoch), ``train_loss``, ``train_accuracy``, ``test_loss``, ``test_accuracy``,
      ``learning_rate`` (the epoch's mean; ``None`` for an optimizer without one),
      ``nonfinite_batches`` and ``compile_time`` (seconds this process spent compiling
      the epoch and the evaluation); non-finite numbers as ``None``. Token data (a
      language model) adds ``test_bits_per_byte``: ``test_loss / ln 2``, and its
      accuracies are next-token accuracies.

    Raises:
      Diverged, Interrupted, Aborted: see the module docstring.
      ValueError: bad settings or data (``DatasetNotFoundError`` and
        ``CheckpointError`` are ``ValueError`` too).

    Example:
      >>> history = run(Config(model="tiny", dataset="synthetic", optimizer="sgd",
      ...                      schedule="constant", synthetic_shape=(8, 8, 1),
      ...                      synthetic_size=(64, 16), batch_size=16, epochs=2), log=None)
      >>> [r["epoch"] for r in history], history[-1]["step"]
      ([1, 2], 8)
    """
    config = optimizers.resolve(config)
    distributed.initialize(config)
    primary = distributed.process_index() == 0  # the one that prints and writes files
    say = (log if primary else None) or (lambda line: None)
    lock = WorkdirLock(config.workdir) if config.workdir and primary else contextlib.nullcontext()
    with lock:
        return _run_locked(config, dataset, say, show_progress, tx, on_epoch)


def _run_locked(
    config: Config,
    dataset: data.Dataset | None,
    say: Callable[[str], None],
    show_progress: bool | None,
    tx: Any,
    on_epoch: Callable[[dict[str, Any], loop.TrainState], None] | None,
) -> History:
    workdir = config.workdir
    ckpt = None
    if workdir is not None:
        ckpt = checkpoints.Checkpointer(
            os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_checkpoints
        )
        for leftover in ckpt.cleanup_temporary():
            say(f"removed {leftover}: the leftover of an interrupted save")
        if not config.resume and ckpt.has_checkpoints():
            if not config.overwrite:
                raise ValueError(
                    f"workdir {workdir} already holds a run; pass --resume to continue it or "
                    "--overwrite to start over"
                )
            distributed.barrier("checked-workdir")  # all have seen the old run
            if distributed.process_index() == 0:
                shutil.rmtree(ckpt.directory)
        distributed.barrier("prepared-workdir")

    if dataset is None:
        dataset = _load_dataset(config)
    mesh = sharding.make_mesh(config.num_devices)
    sharding.check_batch_size(config.batch_size, mesh, "--batch-size")
    num_train = len(dataset.train_labels)
    batch_size, persistency = config.batch_size, config.persistency
    if batch_size > num_train:
        raise ValueError(f"--batch-size {batch_size} exceeds the {num_train} training examples")
    sharded = config.data_placement == "sharded"
    used_train = sharding.sharded_rows(num_train, mesh) if sharded else num_train
    steps_per_epoch = (
        (used_train // mesh.size) // (batch_size // mesh.size)
        if sharded
        else num_train // batch_size
    )
    eval_batch_size = min(config.eval_batch_size, len(dataset.test_labels))
    eval_batch_size = -(-eval_batch_size // mesh.size) * mesh.size

    if tx is None:
        tx = optimizers.build_from_config(config, steps_per_epoch)
    elif not isinstance(tx, optax.GradientTransformation):
        tx = tx(steps_per_epoch)
    spec = optimizers.OPTIMIZERS[config.optimizer]
    init_key, data_key = jax.random.split(jax.random.key(config.seed))
    model = models.create(config.model, dataset.num_classes)
    image_shape = tuple(dataset.train_images.shape[1:])
    tokens = len(image_shape) == 1  # token sequences [N, T] (train.text), not images
    _check_data_kind(config, tokens)
    state = loop.create_train_state(model, tx, init_key, image_shape)
    state = sharding.replicate(state, mesh)
    mode, chunk_batches = _choose_mode(config, dataset, mesh, sharded, steps_per_epoch)
    train_images, train_labels, test_images, test_labels, mean, std = _place_data(
        dataset, mesh, sharded, used_train, eval_batch_size, resident=mode == "resident"
    )

    history: History = []
    wall_time, start_epoch = 0.0, 0
    if ckpt is not None and config.resume:
        restored = ckpt.restore_latest(state.arrays())
        if restored is None:
            say(f"no checkpoint in {workdir}: starting from epoch 0")
        else:
            start_epoch, arrays, meta, skipped = restored
            for epoch, reason in skipped:
                say(f"skipped checkpoint {epoch}: {reason}")
            state = state.replace_arrays(arrays)
            wall_time = float(meta["wall_time"])
            history = list(meta["history"])
            say(f"resuming {workdir} after epoch {start_epoch}")
    derived = {
        "num_train": num_train,
        "num_test": len(dataset.test_labels),
        "image_shape": list(image_shape),
        "num_classes": dataset.num_classes,
        "steps_per_epoch": steps_per_epoch,
        "optimizer_steps_per_epoch": steps_per_epoch * persistency,
        "dropped_per_epoch": num_train - steps_per_epoch * batch_size,
        "data_placement": config.data_placement,
        "data_mode": mode,
        "chunk_batches": chunk_batches,
        "train_examples_per_device": used_train // mesh.size if sharded else num_train,
        "num_devices": mesh.size,
        "num_processes": jax.process_count(),
        "devices": [str(d) for d in mesh.devices.flat],
        "jax_version": jax.__version__,
        "data_source": dataset.source,
    }
    sinks = None
    if workdir is not None and distributed.process_index() == 0:
        _write_config(workdir, config, derived)
        if not history:  # a new run: no curves or events of an earlier one in the workdir
            report.remove_outputs(workdir)
        sinks = report.RunReport(workdir)
        sinks.restart(history)

    say(
        f"{config.dataset}: {num_train} train / {derived['num_test']} test "
        f"{'sequences' if tokens else 'images'} "
        f"{'x'.join(map(str, image_shape))}; {config.model} "
        f"({models.param_count(config.model, image_shape, dataset.num_classes):,} params); "
        f"{config.optimizer}{' (layer-wise)' if config.layerwise else ''} "
        f"{config.schedule} lr {config.learning_rate:g}; batch {batch_size}, K "
        f"{persistency}, {steps_per_epoch} batches/epoch ({derived['dropped_per_epoch']} "
        f"dropped); {mesh.size} {jax.default_backend()} device(s), data {config.data_placement}"
        + (f", chunks of {chunk_batches} batches" if mode == "chunked" else "")
        + (f"; workdir {workdir}" if workdir else "")
    )
    epochs = config.epochs
    if start_epoch >= epochs:
        say(f"already trained for {start_epoch} >= --epochs {epochs} epochs")
        _close(ckpt, sinks)
        return history

    data_sharding = sharding.batch_sharding(mesh)
    t0 = time.perf_counter()
    options = {
        "batch_size": batch_size,
        "persistency": persistency,
        "augment": config.augment,
        "data_sharding": data_sharding,
    }
    if mode == "resident":
        epoch_fn = loop.train_epoch.lower(
            state,
            train_images,
            train_labels,
            mean,
            std,
            jax.random.fold_in(data_key, start_epoch + 1),
            sharded=sharded,
            **options,
        ).compile()

        def train_one_epoch(state: loop.TrainState, key: jax.Array, wait: Callable[[Any], float]):
            state, metrics = epoch_fn(state, train_images, train_labels, mean, std, key)
            return state, metrics, wait(metrics)

    else:
        train_one_epoch = _chunked_epochs(
            state, dataset, mesh, sharded, used_train, chunk_batches, steps_per_epoch, mean,
            std, options,
        )  # fmt: skip
    eval_fn = loop.evaluate.lower(
        state,
        test_images,
        test_labels,
        mean,
        std,
        batch_size=eval_batch_size,
        data_sharding=data_sharding,
        eval_params=spec.eval_params,
        sharded=sharded,
    ).compile()
    compile_time = time.perf_counter() - t0
    say(f"compiled in {compile_time:.1f}s")
    # The first collective of a slow-compiling process would time out the others' (gloo).
    distributed.barrier("compiled")

    if show_progress is None:
        show_progress = config.progress and sys.stderr.isatty()
    show_progress = show_progress and distributed.process_index() == 0
    bar = progress.EpochProgress(epochs, enabled=show_progress, write=say)
    stop = interrupt.StopAfterEpoch(
        "train: {signal}: stopping after the running epoch, which will be saved "
        "(send it again to stop at once)"
    )
    epoch = start_epoch
    # The handlers stay installed through the clean-up (saves, curves): a second signal
    # then cannot land in Python's default handler, a KeyboardInterrupt mid-exit.
    with stop:
        try:
            for epoch in range(start_epoch + 1, epochs + 1):
                bar.start_epoch(epoch)
                t0 = time.perf_counter()
                state, train_metrics, finished = train_one_epoch(
                    state,
                    jax.random.fold_in(data_key, epoch),
                    lambda outputs, t0=t0: _wait(outputs, bar, t0, stop.check),
                )
                epoch_time = finished - t0
                test_metrics = eval_fn(state, test_images, test_labels, mean, std)
                train_metrics, test_metrics, step = jax.device_get(
                    (train_metrics, test_metrics, state.step)
                )  # the epoch's one host sync
                wall_time += time.perf_counter() - t0
                record = {
                    "epoch": epoch,
                    "step": int(step),
                    "wall_time": round(wall_time, 4),
                    "epoch_time": round(epoch_time, 4),
                    "train_loss": report.finite_or_none(train_metrics["loss"]),
                    "train_accuracy": report.finite_or_none(train_metrics["accuracy"]),
                    "test_loss": report.finite_or_none(test_metrics["loss"]),
                    "test_accuracy": report.finite_or_none(test_metrics["accuracy"]),
                    "learning_rate": report.finite_or_none(train_metrics["learning_rate"]),
                    "nonfinite_batches": int(train_metrics["nonfinite"]),
                    "compile_time": round(compile_time, 4),
                }
                if tokens and record["test_loss"] is not None:  # language models: bytes
                    record["test_bits_per_byte"] = record["test_loss"] / math.log(2)
                params_finite = record["test_loss"] is not None
                if (record["nonfinite_batches"] and config.on_nan == "stop") or not params_finite:
                    bar.close()
                    kept = ckpt.latest_epoch() if ckpt is not None else None
                    raise Diverged(
                        f"the training loss is not finite in epoch {epoch} "
                        f"({record['nonfinite_batches']} of {steps_per_epoch} batches"
                        f"{'' if params_finite else ', and the parameters'}); stopped"
                        + (f", keeping the checkpoint of epoch {kept}" if kept else "")
                        + "; lower --learning-rate, or pass --on-nan skip to skip such steps",
                        history,
                    )
                history.append(record)
                if ckpt is not None:
                    with stop.deferred():  # a second signal waits for the save and its line
                        ckpt.save(
                            epoch,
                            state.arrays(),
                            {"epoch": epoch, "wall_time": wall_time, "history": history},
                            finite=params_finite,
                        )
                        if sinks is not None:
                            # Only after the checkpoint is committed; the last epoch's
                            # curves are drawn while a second Ctrl-C is still handled.
                            sinks.add(history, final=stop.requested or epoch == epochs)
                bar.update(record)
                if on_epoch is not None:
                    on_epoch(record, state)
                # Every process stops after the same epoch: one asked to, all stop.
                votes = distributed.barrier(f"epoch-{epoch}", str(stop.signum or ""))
                if not stop.requested and any(votes):
                    stop.requested, stop.signum = True, int(next(v for v in votes if v))
                if stop.requested and epoch < epochs:
                    break
        except interrupt.Abort as abort:
            bar.close()
            kept = ckpt.latest_epoch() if ckpt is not None else None
            raise Aborted(
                f"{abort}: stopped at once; "
                + (
                    f"the checkpoint of epoch {kept} is kept: continue with "
                    f"{resume_command(workdir, epochs)}"
                    if kept
                    else "no epoch was completed"
                ),
                history,
                abort.signum,
            ) from None
        finally:
            bar.close()
            _close(ckpt, sinks)
    if stop.requested and epoch < epochs:
        where = f": continue with {resume_command(workdir, epochs)}" if workdir else ""
        raise Interrupted(
            f"{signal.Signals(stop.signum).name}: epoch {epoch} is saved{where}",
            history,
            stop.signum,
        )
    return history


DEFAULT_DATA_CACHE = "data-cache"  # in the workdir, for a multi-process run


def _check_data_kind(config: Config, tokens: bool) -> None:
    """A language model needs token sequences and an image model images: else one
    ValueError naming both flags."""
    if models.takes_tokens(config.model) != tokens:
        kinds = {True: "token sequences", False: "images"}
        raise ValueError(
            f"--model {config.model} takes {kinds[not tokens]}, but --dataset "
            f"{config.dataset} holds {kinds[tokens]}"
            + (" (train it on --dataset python_stdlib)" if not tokens else "")
        )


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


def _place_data(
    dataset: data.Dataset,
    mesh: Any,
    sharded: bool,
    used_train: int,
    eval_batch_size: int,
    resident: bool,
) -> tuple[jax.Array | None, ...]:
    """The data set on the mesh: sharded (each device holds its rows; the test set padded
    to whole evaluation batches, label -1 on the padding) or replicated. The chunked mode
    leaves the training set on the host (``None``)."""
    stats = sharding.replicate((dataset.mean, dataset.std), mesh)
    if not sharded:
        test = sharding.replicate((dataset.test_images, dataset.test_labels), mesh)
        train = sharding.replicate((dataset.train_images, dataset.train_labels), mesh)
        return (*(train if resident else (None, None)), *test, *stats)
    num_test = len(dataset.test_labels)
    test_rows = -(-num_test // eval_batch_size) * eval_batch_size
    train = (
        sharding.put_rows(dataset.train_images, mesh, used_train),
        sharding.put_rows(dataset.train_labels, mesh, used_train),
    )
    return (
        *(train if resident else (None, None)),
        sharding.put_rows(dataset.test_images, mesh, test_rows),
        sharding.put_rows(dataset.test_labels, mesh, test_rows, fill=-1),
        *stats,
    )


def _free_device_memory() -> int | None:
    """Free bytes of the first local device, where the backend reports them (not on CPU)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def _choose_mode(
    config: Config, dataset: data.Dataset, mesh: Any, sharded: bool, steps_per_epoch: int
) -> tuple[str, int | None]:
    """``("resident" | "chunked", batches per chunk)``: ``--data-mode``, or by ``auto`` the
    chunked mode when the training set would take over half of the free device memory."""
    images = dataset.train_images
    example_bytes = int(np.prod(images.shape[1:])) * images.dtype.itemsize + 4  # + label
    shards = mesh.size if sharded else 1
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
        chunk = 64 if free is None else max(1, free // 8 // local_batch_bytes)
    return mode, max(1, min(chunk, steps_per_epoch))


def _chunked_epochs(
    state: loop.TrainState,
    dataset: data.Dataset,
    mesh: Any,
    sharded: bool,
    used_train: int,
    chunk_batches: int,
    steps_per_epoch: int,
    mean: jax.Array,
    std: jax.Array,
    options: dict[str, Any],
) -> Callable[..., tuple[loop.TrainState, dict[str, Any], float]]:
    """The chunked mode's epoch: the epoch's batches (:func:`train.loop.epoch_indices`, the
    resident mode's) gathered on the host from the (memory-mapped) training set, C batches
    at a time; chunk i + 1 is gathered and copied to the devices while chunk i trains
    (:func:`train.loop.train_chunk`), so at most two chunks live on a device."""
    images, labels = dataset.train_images, dataset.train_labels
    batch_size, data_sharding = options["batch_size"], options["data_sharding"]
    shards = mesh.size
    rows_per_chunk = chunk_batches * batch_size
    structs = [
        jax.ShapeDtypeStruct((rows_per_chunk, *a.shape[1:]), a.dtype, sharding=data_sharding)
        for a in (images, labels)
    ]
    sums0 = sharding.replicate(loop.zero_sums(), mesh)
    augment_key = jax.random.key(0)
    chunk_fn = loop.train_chunk.lower(
        state, sums0, *structs, np.int32(1), np.int32(0), mean, std, augment_key, **options
    ).compile()

    def put(indices: np.ndarray) -> tuple[jax.Array, jax.Array]:
        batches = len(indices)
        if batches < chunk_batches:  # the last chunk: padded, its padding not trained on
            indices = np.concatenate(
                [indices, np.zeros_like(indices[:1]).repeat(chunk_batches - batches, 0)]
            )
        rows = loop.chunk_rows(indices, shards)
        return (
            sharding.put_rows(_Gather(images, rows), mesh),
            sharding.put_rows(_Gather(labels, rows), mesh),
        )

    def train_one_epoch(state: loop.TrainState, key: jax.Array, wait: Callable[[Any], float]):
        perm_key, augment_key = jax.random.split(key)
        indices = loop.epoch_indices(perm_key, used_train, batch_size, shards if sharded else None)
        starts = range(0, steps_per_epoch, chunk_batches)
        sums = sharding.replicate(loop.zero_sums(), mesh)
        chunk = put(indices[:chunk_batches])
        for start in starts:
            count = min(chunk_batches, steps_per_epoch - start)
            state, sums = chunk_fn(
                state, sums, *chunk, np.int32(count), np.int32(start), mean, std, augment_key
            )
            if start + chunk_batches < steps_per_epoch:  # overlaps the running chunk
                chunk = put(indices[start + chunk_batches : start + 2 * chunk_batches])
            finished = wait(sums)  # the running chunk is done: at most two chunks on a device
        sums = jax.device_get(sums)
        metrics = loop.epoch_metrics(sums, steps_per_epoch, batch_size, options["persistency"])
        return state, metrics, finished

    return train_one_epoch


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


def _wait(
    outputs: Any,
    bar: progress.EpochProgress,
    t0: float,
    check: Callable[[], None] = lambda: None,
) -> float:
    """Waits for the running epoch; returns the moment it finished (``perf_counter``).

    A helper thread blocks on the result and stamps the finish time, so the time is
    exact; the main thread waits on it in short slices, so that signal handlers run, the
    live line moves and a failure posted by another process ends the wait.
    """
    finished: list[float] = []

    def block() -> None:
        try:
            jax.block_until_ready(outputs)
        except Exception:  # raised again below, in the caller's thread, as one line
            return
        finished.append(time.perf_counter())

    waiter = threading.Thread(target=block, daemon=True)
    waiter.start()
    polls = 0
    while waiter.is_alive():
        check()  # a second signal: stop now
        bar.tick(time.perf_counter() - t0)
        waiter.join(POLL_SECONDS)
        polls += 1
        if polls % 10 == 0 and waiter.is_alive():
            distributed.check_peers()  # another process failed: do not wait for it
    if not finished:  # the computation failed: let the caller see its error
        jax.block_until_ready(outputs)
    return finished[0]


def _close(ckpt: checkpoints.Checkpointer | None, sinks: report.RunReport | None) -> None:
    if ckpt is not None:
        ckpt.close()
    if sinks is not None:
        sinks.close()


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


def best(history: History) -> dict[str, Any] | None:
    """The epoch record with the highest test accuracy, or ``None``.

    Example:
      >>> best([{"test_accuracy": 0.5}, {"test_accuracy": 0.7}, {"test_accuracy": None}])
      {'test_accuracy': 0.7}
    """
    scored = [r for r in history if r.get("test_accuracy") is not None]
    return max(scored, key=lambda r: r["test_accuracy"]) if scored else None


__all__ = ["Aborted", "Diverged", "History", "Interrupted", "RunStopped", "best", "run"]
