"""``train.run(config)``: the one training function of the CLI and of every benchmark.

A run is three phases, each in the module that owns it:

1. set up (:func:`train.setup.create`): the workdir, the data set on the devices
   (:mod:`train.placement`), the mesh, the model, the optimizer, the state (restored on
   ``--resume``), ``config.json`` and the metric sinks, as an ``Experiment``;
2. the epoch loop (:func:`_train`, below): each epoch trains (one jitted call,
   :func:`train.loop.train_epoch`, or its chunks), evaluates, checks that the loss is
   finite, saves a checkpoint (``checkpoints/<epoch>/``) and only then reports the epoch
   (``metrics.jsonl``, TensorBoard, ``curves.png``: :mod:`train.report`), and stops where
   a signal asked, in every process after the same epoch;
3. the report: the history of epoch records, or an exception that carries it.

While the run lives it holds the workdir's ``.lock``, so a second run into the same
workdir stops at once.

Faults end the run with an exception that the CLI turns into one line and an exit status:
:class:`Diverged` (a non-finite training loss under ``on_nan="stop"``),
:class:`Interrupted` (a first SIGINT/SIGTERM: the running epoch was finished and saved),
:class:`Aborted` (a second signal: the last complete checkpoint is kept),
``CheckpointError`` (a save or restore that failed), ``ValueError`` (bad input).
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import jax

from train import data, distributed, interrupt, loop, optimizers, progress, report, setup
from train.config import Config
from train.workdir_lock import WorkdirLock

History = setup.History
POLL_SECONDS = 0.05
STOP_MESSAGE = (
    "train: {signal}: stopping after the running epoch, which will be saved "
    "(send it again to stop at once)"
)


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
    tx: setup.TxLike | None = None,
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
        experiment = setup.create(config, dataset, tx, say)
        if experiment.start_epoch >= config.epochs:
            say(f"already trained for {experiment.start_epoch} >= --epochs {config.epochs} epochs")
            experiment.close()
            return experiment.history
        compile_time = _compile(experiment, say)
        if show_progress is None:
            show_progress = config.progress and sys.stderr.isatty()
        bar = progress.EpochProgress(config.epochs, enabled=show_progress and primary, write=say)
        return _train(experiment, bar, compile_time, on_epoch)


def _compile(experiment: setup.Experiment, say: Callable[[str], None]) -> float:
    """Compiles the epoch and the evaluation; returns the seconds it took."""
    t0 = time.perf_counter()
    key = jax.random.fold_in(experiment.data_key, experiment.start_epoch + 1)
    experiment.data.compile(experiment.state, key, experiment.eval_params)
    compile_time = time.perf_counter() - t0
    say(f"compiled in {compile_time:.1f}s")
    # The first collective of a slow-compiling process would time out the others' (gloo).
    distributed.barrier("compiled")
    return compile_time


def _train(
    experiment: setup.Experiment,
    bar: progress.EpochProgress,
    compile_time: float,
    on_epoch: Callable[[dict[str, Any], loop.TrainState], None] | None,
) -> History:
    """The epoch loop: train, evaluate, check, save, report, and stop where asked."""
    epochs, history = experiment.config.epochs, experiment.history
    stop = interrupt.StopAfterEpoch(STOP_MESSAGE)
    epoch = experiment.start_epoch
    # The handlers stay installed through the clean-up (saves, curves): a second signal
    # then cannot land in Python's default handler, a KeyboardInterrupt mid-exit.
    with stop:
        try:
            for epoch in range(experiment.start_epoch + 1, epochs + 1):
                bar.start_epoch(epoch)
                record = _epoch(experiment, epoch, bar, stop, compile_time)
                _check_finite(experiment, record, bar)
                history.append(record)
                if experiment.checkpointer is not None:
                    with stop.deferred():  # a second signal waits for the save and its line
                        experiment.save(epoch, final=stop.requested or epoch == epochs)
                bar.update(record)
                if on_epoch is not None:
                    on_epoch(record, experiment.state)
                signum = distributed.stop_vote(f"epoch-{epoch}", stop.signum)
                if signum and not stop.requested:
                    stop.requested, stop.signum = True, signum
                if stop.requested and epoch < epochs:
                    break
        except interrupt.Abort as abort:
            bar.close()
            raise _aborted(experiment, abort) from None
        finally:
            bar.close()
            experiment.close()
    if stop.requested and epoch < epochs:
        workdir = experiment.config.workdir
        where = f": continue with {resume_command(workdir, epochs)}" if workdir else ""
        name = signal.Signals(stop.signum).name
        raise Interrupted(f"{name}: epoch {epoch} is saved{where}", history, stop.signum)
    return history


def _epoch(
    experiment: setup.Experiment,
    epoch: int,
    bar: progress.EpochProgress,
    stop: interrupt.StopAfterEpoch,
    compile_time: float,
) -> dict[str, Any]:
    """Trains and evaluates one epoch; returns its record."""
    t0 = time.perf_counter()
    state, train_metrics, finished = experiment.data.train_epoch(
        experiment.state,
        jax.random.fold_in(experiment.data_key, epoch),
        lambda outputs: _wait(outputs, bar, t0, stop.check),
    )
    experiment.state = state
    test_metrics = experiment.data.evaluate(state)
    train_metrics, test_metrics, step = jax.device_get(
        (train_metrics, test_metrics, state.step)
    )  # the epoch's one host sync
    experiment.wall_time += time.perf_counter() - t0
    record = {
        "epoch": epoch,
        "step": int(step),
        "wall_time": round(experiment.wall_time, 4),
        "epoch_time": round(finished - t0, 4),
        "train_loss": report.finite_or_none(train_metrics["loss"]),
        "train_accuracy": report.finite_or_none(train_metrics["accuracy"]),
        "test_loss": report.finite_or_none(test_metrics["loss"]),
        "test_accuracy": report.finite_or_none(test_metrics["accuracy"]),
        "learning_rate": report.finite_or_none(train_metrics["learning_rate"]),
        "nonfinite_batches": int(train_metrics["nonfinite"]),
        "compile_time": round(compile_time, 4),
    }
    if experiment.tokens and record["test_loss"] is not None:  # language models: bytes
        record["test_bits_per_byte"] = record["test_loss"] / math.log(2)
    return record


def _check_finite(
    experiment: setup.Experiment, record: dict[str, Any], bar: progress.EpochProgress
) -> None:
    """Raises :class:`Diverged` for a non-finite training loss under ``--on-nan stop``, or
    non-finite parameters (a non-finite test loss) under either setting."""
    params_finite = record["test_loss"] is not None
    stops = record["nonfinite_batches"] and experiment.config.on_nan == "stop"
    if params_finite and not stops:
        return
    bar.close()
    kept = experiment.kept_epoch()
    raise Diverged(
        f"the training loss is not finite in epoch {record['epoch']} "
        f"({record['nonfinite_batches']} of {experiment.data.plan.steps_per_epoch} batches"
        f"{'' if params_finite else ', and the parameters'}); stopped"
        + (f", keeping the checkpoint of epoch {kept}" if kept else "")
        + "; lower --learning-rate, or pass --on-nan skip to skip such steps",
        experiment.history,
    )


def _aborted(experiment: setup.Experiment, abort: interrupt.Abort) -> Aborted:
    """The :class:`Aborted` of a second signal, naming the checkpoint that is kept."""
    kept = experiment.kept_epoch()
    workdir, epochs = experiment.config.workdir, experiment.config.epochs
    return Aborted(
        f"{abort}: stopped at once; "
        + (
            f"the checkpoint of epoch {kept} is kept: continue with "
            f"{resume_command(workdir, epochs)}"
            if kept
            else "no epoch was completed"
        ),
        experiment.history,
        abort.signum,
    )


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


def best(history: History) -> dict[str, Any] | None:
    """The epoch record with the highest test accuracy, or ``None``.

    Example:
      >>> best([{"test_accuracy": 0.5}, {"test_accuracy": 0.7}, {"test_accuracy": None}])
      {'test_accuracy': 0.7}
    """
    scored = [r for r in history if r.get("test_accuracy") is not None]
    return max(scored, key=lambda r: r["test_accuracy"]) if scored else None


__all__ = ["Aborted", "Diverged", "History", "Interrupted", "RunStopped", "best", "run"]
