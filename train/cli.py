"""``python -m train`` / ``polyak-train``: train one model with minibatch persistency.

With no flags it runs the README's main job (Fashion-MNIST from Debian's IDX files or TFDS,
about a minute on a laptop CPU, >= 88% test accuracy). Every run writes to its workdir:

* ``config.json``: the resolved flags (defaults filled in), one key per flag, plus
  ``derived``: what follows from them (data set sizes, steps per epoch, devices);
* ``metrics.jsonl``: one JSON object per epoch: ``epoch``, ``step`` (optimizer steps so
  far), ``wall_time`` (seconds of training and evaluation so far, compilation excluded,
  accumulated across resumes), ``epoch_time``, ``train_loss``, ``train_accuracy``,
  ``test_loss``, ``test_accuracy``, ``learning_rate`` (the epoch's mean learning rate; for
  adaptive Nesterov the mean eta); non-finite numbers are written as ``null``;
* ``checkpoints/<epoch>/``: orbax checkpoints after every epoch, the last few kept.

``--resume`` continues the run of ``--workdir`` from its last complete checkpoint with the
saved configuration (only ``--epochs`` and the non-numerical flags such as ``--data-dir``
may change) and gives the same numbers as an uninterrupted run: each epoch's PRNG key is
derived from ``--seed`` and the epoch number, never from consumed state. Ctrl-C lets the
running epoch finish, saves it and exits with status 130; a second Ctrl-C aborts at once,
keeping the last complete checkpoint (``metrics.jsonl`` is cut back to match it).

Errors (bad flags, a missing data set, an unreadable checkpoint) end with one line on
stderr and a non-zero exit status, without a traceback.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import models
import polyak_optax as po
from train import augment, checkpoints, data, interrupt, loop, optimizers, progress, sharding
from train.optimizers import OPTIMIZERS, SCHEDULES

PROG = "polyak-train"
DATASETS = ("fashion_mnist", "mnist", "cifar10", "synthetic")

# The main job: chosen by measurement (see README): ~1 minute on a laptop CPU, >= 88%.
DEFAULTS: dict[str, Any] = {
    "model": "lenet5",
    "dataset": "fashion_mnist",
    "optimizer": "adaptive_nesterov",
    "schedule": "onecycle",
    "batch_size": 128,
    "epochs": 2,
    "persistency": 1,
}

# Flags whose value may differ on --resume: they do not change the numbers of the run
# (``epochs`` lengthens it; for ``step``/``onecycle`` it also stretches the schedule).
RESUME_MAY_CHANGE = frozenset(
    {
        "data_dir",
        "workdir",
        "resume",
        "overwrite",
        "epochs",
        "keep_checkpoints",
        "num_devices",
        "eval_batch_size",
        "progress",
        "find_lr",
        "find_lr_steps",
        "find_lr_min",
        "find_lr_max",
    }
)


class UsageError(Exception):
    """A bad command line (reported as one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _float_in(low: float, high: float | None = None, *, low_open: bool = False, high_open=True):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = math.isfinite(value) and (value > low if low_open else value >= low)
        if high is not None:
            ok = ok and (value < high if high_open else value <= high)
        if not ok:
            lo = f"{'(' if low_open else '['}{low:g}"
            hi = f"{high:g}{')' if high_open else ']'}" if high is not None else "inf)"
            raise argparse.ArgumentTypeError(f"must be in {lo}, {hi}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def _int_tuple(length: int):
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != length or min(values) < 1:
            raise argparse.ArgumentTypeError(
                f"expected {length} comma-separated positive integers, got {text!r}"
            )
        return values

    parse.__name__ = "sizes"
    return parse


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The command-line parser (``suppress_defaults`` leaves unset flags out of the result)."""
    parser = _Parser(
        prog=PROG,
        description=(
            "Train a model of the thesis with minibatch persistency, adaptive Nesterov, "
            "layer-wise scaling and cyclical schedules. With no flags: the README's main job."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )

    def add(*names: str, default: Any = None, **kwargs: Any) -> None:
        if kwargs.get("action") == "store_true":
            default = False
        if suppress_defaults:
            default = argparse.SUPPRESS
        parser.add_argument(*names, default=default, **kwargs)

    positive = _int_at_least(1)
    add("--model", default=DEFAULTS["model"], help=f"one of {', '.join(models.MODEL_NAMES)}")
    add("--dataset", default=DEFAULTS["dataset"], help=f"one of {', '.join(DATASETS)}")
    add("--data-dir", help="where the data set's files are (IDX, CIFAR-10 batches, TFDS dir)")
    add("--optimizer", default=DEFAULTS["optimizer"], help=f"one of {', '.join(OPTIMIZERS)}")
    add("--layerwise", action="store_true", help="layer-specific rates: x(1 + log(1 + 1/|g_l|))")
    add("--schedule", default=DEFAULTS["schedule"], help=f"one of {', '.join(SCHEDULES)}")
    add(
        "--learning-rate",
        type=_float_in(0, low_open=True),
        help="learning rate (peak of cyclic/onecycle; eta ceiling of adaptive_nesterov); "
        "default per optimizer",
    )
    add(
        "--min-learning-rate",
        type=_float_in(0),
        help="eta floor of adaptive_nesterov (1e-3) or lower bound of cyclic (lr/10)",
    )
    add(
        "--momentum",
        type=_float_in(0, 1),
        help="momentum (Adam: b1; onecycle: the cycle's maximum); default per optimizer",
    )
    add(
        "--cycle-epochs",
        type=_float_in(0, low_open=True),
        default=10.0,
        help="half-cycle of the cyclic schedule, in epochs",
    )
    add("--batch-size", type=positive, default=DEFAULTS["batch_size"], help="minibatch size m")
    add("--eval-batch-size", type=positive, default=1000, help="test-set batch size")
    add(
        "--persistency",
        "-K",
        type=positive,
        default=DEFAULTS["persistency"],
        help="minibatch persistency K: optimizer steps per minibatch (1 = plain SGD)",
    )
    add("--epochs", type=positive, default=DEFAULTS["epochs"], help="epochs to train")
    add("--train-subset", type=positive, help="train on this many training examples")
    add("--augment", action="store_true", help="random flip and 4-pixel translation")
    add("--seed", type=_int_at_least(0), default=0, help="PRNG seed")
    add("--workdir", help="output directory (default: a new one under ./runs)")
    add("--resume", action="store_true", help="continue the run in --workdir")
    add("--overwrite", action="store_true", help="start over in a --workdir that holds a run")
    add("--keep-checkpoints", type=positive, default=3, help="checkpoints to keep")
    add("--num-devices", type=positive, help="data-parallel devices (default: all local)")
    add("--find-lr", action="store_true", help="run the LR range test instead of training")
    add("--find-lr-steps", type=_int_at_least(5), default=100, help="range-test steps")
    add("--find-lr-min", type=_float_in(0, low_open=True), default=1e-7, help="range start")
    add("--find-lr-max", type=_float_in(0, low_open=True), default=10.0, help="range end")
    add(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=True,
        help="no progress bar (epoch lines are printed anyway)",
    )
    add("--synthetic-shape", type=_int_tuple(3), default=(32, 32, 3), help="H,W,C of synthetic")
    add(
        "--synthetic-size",
        type=_int_tuple(2),
        default=(50000, 10000),
        help="TRAIN,TEST sizes of synthetic",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> tuple[dict[str, Any], set[str]]:
    """Parses and checks the flags: ``(config, names of the flags given explicitly)``.

    Raises:
      UsageError: for an unknown flag or a bad value.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    config = vars(build_parser().parse_args(argv))
    explicit = set(vars(build_parser(suppress_defaults=True).parse_args(argv)))
    for flag, value, choices in (
        ("--model", config["model"], (*models.MODEL_NAMES, "tiny")),
        ("--dataset", config["dataset"], DATASETS),
        ("--optimizer", config["optimizer"], OPTIMIZERS),
        ("--schedule", config["schedule"], SCHEDULES),
    ):
        if value not in choices:
            shown = choices if flag != "--model" else models.MODEL_NAMES
            raise UsageError(
                f"argument {flag}: invalid choice {value!r} (choose from {', '.join(shown)})"
            )
    if config["resume"] and config["workdir"] is None:
        raise UsageError("argument --resume: needs --workdir (the directory of the run)")
    if config["resume"] and config["overwrite"]:
        raise UsageError("arguments --resume and --overwrite exclude each other")
    if config["find_lr_min"] >= config["find_lr_max"]:
        raise UsageError("argument --find-lr-min: must be below --find-lr-max")
    return config, explicit


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """Fills in the per-optimizer defaults (learning rate, momentum, eta floor / CLR base)."""
    config = dict(config)
    name, schedule = config["optimizer"], config["schedule"]
    if config["learning_rate"] is None:
        config["learning_rate"] = optimizers.default_learning_rate(name)
    if config["momentum"] is None:
        config["momentum"] = optimizers.default_momentum(name, schedule)
    elif name == "adagrad":
        raise ValueError("--momentum: adagrad has no momentum")
    if config["min_learning_rate"] is None:
        lr = config["learning_rate"]
        if schedule == "cyclic":
            config["min_learning_rate"] = optimizers.cyclic_base_learning_rate(lr, None)
        elif name == "adaptive_nesterov":
            config["min_learning_rate"] = optimizers.ADAPTIVE_MIN_LEARNING_RATE
    return config


def _default_workdir(config: dict[str, Any]) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(
        "runs", f"{stamp}-{config['dataset']}-{config['model']}-{config['optimizer']}"
    )
    path, n = base, 1
    while os.path.exists(path):
        path, n = f"{base}-{n}", n + 1
    return path


def _merge_saved_config(config: dict[str, Any], explicit: set[str], workdir: str) -> dict[str, Any]:
    """On --resume: the saved config wins; explicitly given flags must agree with it."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return config
    try:
        with open(path) as f:
            saved = json.load(f)
        saved.pop("derived")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"cannot read {path}: {error}") from None
    merged = dict(config)
    for key, value in saved.items():
        if key not in config or key in RESUME_MAY_CHANGE:
            continue
        if isinstance(value, list):
            value = tuple(value)
        if key in explicit and config[key] != value:
            flag = "--" + key.replace("_", "-")
            raise ValueError(
                f"{flag} {config[key]} differs from the run being resumed ({value}); "
                f"start a new run in another --workdir to change it"
            )
        merged[key] = value
    return merged


class _MetricsLog:
    """``metrics.jsonl``: one JSON object per epoch (non-finite numbers as null)."""

    def __init__(self, path: str):
        self.path = path

    def rewrite(self, history: list[dict[str, Any]]) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            for record in history:
                f.write(json.dumps(record) + "\n")
        os.replace(tmp, self.path)

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _finite_or_none(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _load_data(config: dict[str, Any]):
    return data.load_dataset(
        config["dataset"],
        config["data_dir"],
        train_subset=config["train_subset"],
        seed=config["seed"],
        synthetic_shape=tuple(config["synthetic_shape"]),
        synthetic_size=tuple(config["synthetic_size"]),
    )


def train_and_evaluate(config: dict[str, Any], explicit: set[str] | None = None) -> int:
    """Runs the training described by ``config`` (see :func:`parse_args`); returns the exit code."""
    explicit = explicit or set()
    workdir = config["workdir"] or _default_workdir(config)
    config = dict(config, workdir=workdir)
    if config["resume"]:
        if not os.path.isdir(workdir):
            raise ValueError(f"--resume: workdir {workdir} does not exist")
        config = _merge_saved_config(config, explicit, workdir)
    config = resolve(config)

    ckpt = checkpoints.Checkpointer(
        os.path.join(workdir, "checkpoints"), max_to_keep=config["keep_checkpoints"]
    )
    if not config["resume"] and ckpt.exists():
        if not config["overwrite"]:
            raise ValueError(
                f"workdir {workdir} already holds a run; pass --resume to continue it or "
                "--overwrite to start over"
            )
        shutil.rmtree(ckpt.directory)
    if config["resume"] and ckpt.exists() and ckpt.latest_epoch() is None:
        raise checkpoints.CheckpointError(f"no readable checkpoint in {ckpt.directory}")

    dataset = _load_data(config)
    mesh = sharding.make_mesh(config["num_devices"])
    sharding.check_batch_size(config["batch_size"], mesh, "--batch-size")
    num_train = len(dataset.train_labels)
    batch_size, persistency = config["batch_size"], config["persistency"]
    if batch_size > num_train:
        raise ValueError(f"--batch-size {batch_size} exceeds the {num_train} training examples")
    steps_per_epoch = num_train // batch_size
    eval_batch_size = min(config["eval_batch_size"], len(dataset.test_labels))
    eval_batch_size = -(-eval_batch_size // mesh.size) * mesh.size

    tx = optimizers.build_optimizer(
        config["optimizer"],
        config["learning_rate"],
        config["momentum"],
        schedule=config["schedule"],
        steps_per_epoch=steps_per_epoch,
        epochs=config["epochs"],
        persistency=persistency,
        layerwise=config["layerwise"],
        min_learning_rate=config["min_learning_rate"],
        cycle_epochs=config["cycle_epochs"],
    )
    init_key, data_key = jax.random.split(jax.random.key(config["seed"]))
    model = models.create(config["model"], dataset.num_classes)
    image_shape = tuple(dataset.train_images.shape[1:])
    state = loop.create_train_state(model, tx, init_key, image_shape)
    state = sharding.replicate(state, mesh)
    train_images, train_labels, test_images, test_labels, mean, std = sharding.replicate(
        (
            dataset.train_images,
            dataset.train_labels,
            dataset.test_images,
            dataset.test_labels,
            dataset.mean,
            dataset.std,
        ),
        mesh,
    )

    history: list[dict[str, Any]] = []
    wall_time, start_epoch = 0.0, 0
    metrics_log = _MetricsLog(os.path.join(workdir, "metrics.jsonl"))
    if config["resume"] and ckpt.latest_epoch() is not None:
        arrays, meta = ckpt.restore(state.arrays())
        state = state.replace_arrays(arrays)
        start_epoch = int(meta["epoch"])
        wall_time = float(meta["wall_time"])
        history = list(meta["history"])
        print(f"resuming {workdir} after epoch {start_epoch}", flush=True)
    elif config["resume"]:
        print(f"no checkpoint in {workdir}: starting from epoch 0", flush=True)
    os.makedirs(workdir, exist_ok=True)
    metrics_log.rewrite(history)
    derived = {
        "num_train": num_train,
        "num_test": len(dataset.test_labels),
        "image_shape": list(image_shape),
        "num_classes": dataset.num_classes,
        "steps_per_epoch": steps_per_epoch,
        "optimizer_steps_per_epoch": steps_per_epoch * persistency,
        "dropped_per_epoch": num_train - steps_per_epoch * batch_size,
        "num_devices": mesh.size,
        "devices": [str(d) for d in mesh.devices.flat],
        "jax_version": jax.__version__,
    }
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({**_jsonable(config), "derived": derived}, f, indent=2)

    print(
        f"{config['dataset']}: {num_train} train / {derived['num_test']} test images "
        f"{'x'.join(map(str, image_shape))}; {config['model']} "
        f"({models.param_count(config['model'], image_shape, dataset.num_classes):,} params); "
        f"{config['optimizer']}{' (layer-wise)' if config['layerwise'] else ''} "
        f"{config['schedule']} lr {config['learning_rate']:g}; batch {batch_size}, K "
        f"{persistency}, {steps_per_epoch} batches/epoch ({derived['dropped_per_epoch']} "
        f"dropped); {mesh.size} {jax.default_backend()} device(s); workdir {workdir}",
        flush=True,
    )
    epochs = config["epochs"]
    if start_epoch >= epochs:
        print(f"already trained for {start_epoch} >= --epochs {epochs} epochs", flush=True)
    else:
        bar = progress.EpochProgress(
            epochs, start_epoch, enabled=None if config["progress"] else False
        )
        static = {
            "batch_size": batch_size,
            "persistency": persistency,
            "augment": config["augment"],
            "data_sharding": sharding.batch_sharding(mesh),
            "on_progress": bar.on_progress,
        }
        t0 = time.perf_counter()
        epoch_key = jax.random.fold_in(data_key, start_epoch + 1)
        epoch_fn = loop.train_epoch.lower(
            state, train_images, train_labels, mean, std, epoch_key, **static
        ).compile()
        eval_fn = loop.evaluate.lower(
            state,
            test_images,
            test_labels,
            mean,
            std,
            batch_size=eval_batch_size,
            data_sharding=static["data_sharding"],
        ).compile()
        print(f"compiled in {time.perf_counter() - t0:.1f}s", flush=True)
        epoch = start_epoch
        stop = interrupt.StopAfterEpoch(
            f"{PROG}: Ctrl-C: stopping after the running epoch, which will be saved "
            "(Ctrl-C again to abort at once)"
        )
        try:
            with stop:
                for epoch in range(start_epoch + 1, epochs + 1):
                    bar.start_epoch(epoch, steps_per_epoch)
                    t0 = time.perf_counter()
                    key = jax.random.fold_in(data_key, epoch)
                    state, train_metrics = epoch_fn(
                        state, train_images, train_labels, mean, std, key
                    )
                    test_metrics = eval_fn(state, test_images, test_labels, mean, std)
                    train_metrics, test_metrics, step = jax.device_get(
                        (train_metrics, test_metrics, state.step)
                    )  # the epoch's one host sync
                    epoch_time = time.perf_counter() - t0
                    wall_time += epoch_time
                    record = {
                        "epoch": epoch,
                        "step": int(step),
                        "wall_time": round(wall_time, 4),
                        "epoch_time": round(epoch_time, 4),
                        "train_loss": _finite_or_none(train_metrics["loss"]),
                        "train_accuracy": _finite_or_none(train_metrics["accuracy"]),
                        "test_loss": _finite_or_none(test_metrics["loss"]),
                        "test_accuracy": _finite_or_none(test_metrics["accuracy"]),
                        "learning_rate": _finite_or_none(train_metrics["learning_rate"]),
                    }
                    history.append(record)
                    with stop.deferred():  # never abort inside orbax
                        ckpt.save(
                            epoch,
                            state.arrays(),
                            {"epoch": epoch, "wall_time": wall_time, "history": history},
                        )
                        metrics_log.append(record)
                    bar.update(record, epochs)
                    if stop.requested and epoch < epochs:
                        break
                bar.close()
                with stop.deferred():  # the last asynchronous save reaches the disk
                    ckpt.close()
        except KeyboardInterrupt:  # the second Ctrl-C: abort the running epoch
            bar.close()
            ckpt.close()
            done = ckpt.latest_epoch()
            metrics_log.rewrite([r for r in history if done is not None and r["epoch"] <= done])
            print(
                f"{PROG}: aborted; the checkpoint of epoch {done} is kept: continue with "
                f"--resume --workdir {workdir}",
                file=sys.stderr,
                flush=True,
            )
            return 130
        if stop.requested and epoch < epochs:
            print(
                f"{PROG}: interrupted: epoch {epoch} is saved; continue with --resume "
                f"--workdir {workdir}",
                file=sys.stderr,
                flush=True,
            )
            return 130
    ckpt.close()
    label = f"{config['model']}_{config['optimizer']}_{batch_size}"
    print(progress.format_summary(history, label, persistency), flush=True)
    return 0


def find_lr(config: dict[str, Any]) -> int:
    """``--find-lr``: Smith's range test on the chosen model and data; prints suggestions."""
    config = resolve(config)
    if config["optimizer"] == "adaptive_nesterov":
        raise ValueError(
            "--find-lr: adaptive_nesterov computes its own step size; choose --optimizer "
            "sgd, nesterov, adagrad or adam"
        )
    workdir = config["workdir"] or _default_workdir(config)
    dataset = _load_data(config)
    batch_size, steps = config["batch_size"], config["find_lr_steps"]
    num_train = len(dataset.train_labels)
    if batch_size > num_train:
        raise ValueError(f"--batch-size {batch_size} exceeds the {num_train} training examples")
    init_key, data_key = jax.random.split(jax.random.key(config["seed"]))
    model = models.create(config["model"], dataset.num_classes)
    tx = optimizers.build_optimizer(
        config["optimizer"], config["learning_rate"], config["momentum"]
    )
    state = loop.create_train_state(model, tx, init_key, tuple(dataset.train_images.shape[1:]))
    # `steps` different batches, drawn like an epoch's (wrapping around a small data set).
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(data_key, 0), num_train))
    idx = perm[np.arange(steps * batch_size) % num_train].reshape(steps, batch_size)
    batches = (jnp.asarray(dataset.train_images[idx]), jnp.asarray(dataset.train_labels[idx]))
    mean, std = jnp.asarray(dataset.mean), jnp.asarray(dataset.std)
    batch_stats = state.batch_stats

    def loss_fn(params: Any, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        images, labels = batch
        x = augment.normalize(images, mean, std)
        if batch_stats:
            logits, _ = model.apply(
                {"params": params, "batch_stats": batch_stats},
                x,
                train=True,
                mutable=["batch_stats"],
            )
        else:
            logits = model.apply({"params": params}, x, train=True)
        return loop.cross_entropy(logits, labels).mean()

    def factory(learning_rate: Any) -> Any:
        return optimizers.build_optimizer(
            config["optimizer"],
            learning_rate,
            config["momentum"],
            layerwise=config["layerwise"],
        )

    t0 = time.perf_counter()
    result = po.lr_range_test(
        loss_fn,
        state.params,
        batches,
        factory,
        min_lr=config["find_lr_min"],
        max_lr=config["find_lr_max"],
        num_steps=steps,
        stacked=True,
    )
    seconds = time.perf_counter() - t0
    os.makedirs(workdir, exist_ok=True)
    plot_path = os.path.join(workdir, "lr_range_test.png")
    figure = po.plot_lr_range_test(result)
    figure = getattr(figure, "figure", figure)  # an Axes or a Figure
    figure.savefig(plot_path, dpi=120)
    summary = {
        "suggestion": float(result.suggestion),
        "valley": float(result.valley),
        "minimum": float(result.minimum),
    }
    with open(os.path.join(workdir, "lr_range_test.json"), "w") as f:
        json.dump(
            {
                "flags": _jsonable(config),
                **summary,
                "learning_rates": [_finite_or_none(v) for v in np.asarray(result.learning_rates)],
                "losses": [_finite_or_none(v) for v in np.asarray(result.losses)],
                "smoothed_losses": [_finite_or_none(v) for v in np.asarray(result.smoothed_losses)],
            },
            f,
            indent=1,
        )
    print(
        f"LR range test ({config['optimizer']}, {config['model']}, {steps} steps of batch "
        f"{batch_size}, {seconds:.1f}s): suggestion {summary['suggestion']:.3g}, valley "
        f"{summary['valley']:.3g}, minimum/10 {summary['minimum']:.3g}; plot {plot_path}",
        flush=True,
    )
    return 0


def _jsonable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parses ``argv`` (default ``sys.argv[1:]``), trains, returns the exit code.

    Example:
      >>> main(["--persistency", "0"])
      2
    """
    try:
        config, explicit = parse_args(argv)
    except UsageError as error:
        print(f"{PROG}: error: {error} (see --help)", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    try:
        if config["find_lr"]:
            return find_lr(config)
        return train_and_evaluate(config, explicit)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except checkpoints.CheckpointError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 3
    except (ValueError, OSError) as error:
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 1


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
