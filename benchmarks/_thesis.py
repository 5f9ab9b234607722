"""What the two thesis benchmarks share: their flags, their data, and one training run.

Each configuration trains through :func:`train.run.run` (the function of ``python -m
train``), with the data set loaded once per benchmark and passed in, no workdir (nothing
is written) and no log. :func:`train_one` turns its history into a benchmark run:

* every epoch record of :func:`train.run.run` (``epoch``, ``step``, ``wall_time``,
  ``epoch_time``, ``train_loss``, ``train_accuracy``, ``test_loss``, ``test_accuracy``,
  ``learning_rate``, ``nonfinite_batches``) plus ``time``: the cumulative *training*
  seconds, the sum of the ``epoch_time`` values (compile and evaluation excluded, the
  thesis's time axis; ``wall_time`` counts the evaluations too);
* ``compile_s``: the compile time that :func:`train.run.run` records;
* ``diverged_epoch``: ``None``, or the epoch whose training loss was not finite. The run
  stops there (:class:`train.run.Diverged`) and its history keeps the finite epochs, as
  the thesis reports a diverged run (Figure 2.11: "made the parameters of the network
  diverge") by its curves up to the divergence.

Weight decay: the source documents state none for the thesis's experiments. Section 2.2
lists the whole setup (SGD, momentum 0.5, learning rate 0.001 / 0.01, cross entropy, no
dropout, no augmentation) without it; sections 2.4 and 3.5 add augmentation, 300 epochs
and the 0.1 / 0.01 / 0.001 schedule of Wei Yang's pytorch-classification (reference [28]),
and say that "the momentum coefficient and the other parameters remained unchanged". So
every grid runs with ``weight_decay = 0``; ``--weight-decay`` (L2 on the kernels, added
to the gradient before momentum, as ``python -m train --weight-decay``) tries another
value, such as the 5e-4 that [28]'s ``cifar.py`` defaults to.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import Any

import optax

import models
from benchmarks import _common as C
from train import data as data_lib
from train import loop
from train.config import Config
from train.run import Diverged, run

#: The weight decay of every thesis grid: the documents state none (module docstring).
WEIGHT_DECAY = 0.0



def load_data(
    dataset: str, data_dir: str | None, train_subset: int | None, test_subset: int | None
) -> data_lib.Dataset:
    """The data set with the training subset and a class-balanced test subset applied."""
    kwargs: dict[str, Any] = {}
    if dataset == "synthetic":
        kwargs = {"synthetic_shape": (8, 8, 1), "synthetic_size": (max(train_subset or 64, 64), 64)}
    ds = data_lib.load_dataset(dataset, data_dir, train_subset=train_subset, seed=0, **kwargs)
    if test_subset is not None and test_subset < len(ds.test_labels):
        keep = data_lib.select_subset(ds.test_labels, test_subset, seed=0)
        ds = ds._replace(test_images=ds.test_images[keep], test_labels=ds.test_labels[keep])
    return ds


def non_negative_float(text: str) -> float:
    """An ``argparse`` type: a finite number >= 0.

    Example:
      >>> non_negative_float("5e-4")
      0.0005
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """The flags both thesis benchmarks take: model, data, epochs, subsets, seeds, decay.

    Example:
      >>> parser = argparse.ArgumentParser()
      >>> add_training_flags(parser)
      >>> args = parser.parse_args(["--epochs", "3", "--weight-decay", "5e-4"])
      >>> args.epochs, args.weight_decay, args.seeds
      (3, 0.0005, None)
    """
    parser.add_argument("--model", choices=models.MODEL_NAMES, help="override the model")
    parser.add_argument("--dataset", choices=("fashion_mnist", "mnist", "cifar10"))
    parser.add_argument("--data-dir", help="directory with the data set files")
    parser.add_argument("--epochs", type=C.positive_int)
    parser.add_argument("--train-subset", type=C.positive_int)
    parser.add_argument("--test-subset", type=C.positive_int)
    parser.add_argument("--seeds", type=C.positive_int, help="number of seeds (0..N-1)")
    parser.add_argument(
        "--weight-decay",
        type=non_negative_float,
        help=f"L2 weight decay on the kernels (default {WEIGHT_DECAY:g}: the thesis states none)",
    )


def training_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The grid overrides of the flags of :func:`add_training_flags` (``None``: unset).

    Example:
      >>> parser = argparse.ArgumentParser()
      >>> add_training_flags(parser)
      >>> training_overrides(parser.parse_args(["--seeds", "2"]))["seeds"]
      (0, 1)
    """
    return {
        "model": args.model,
        "dataset": args.dataset,
        "epochs": args.epochs,
        "train_subset": args.train_subset,
        "test_subset": args.test_subset,
        "seeds": None if args.seeds is None else tuple(range(args.seeds)),
        "weight_decay": args.weight_decay,
    }


def data_settings(ds: data_lib.Dataset) -> dict[str, Any]:
    """What a report says about the data a run used (sizes, shape, source)."""
    return {
        "train_size": len(ds.train_labels),
        "test_size": len(ds.test_labels),
        "image_shape": list(ds.train_images.shape[1:]),
        "data_source": ds.source,
    }


def train_one(
    config: Config,
    ds: data_lib.Dataset,
    *,
    tx: Callable[[int], optax.GradientTransformation] | None = None,
    on_epoch: Callable[[dict[str, Any], loop.TrainState], None] | None = None,
) -> dict[str, Any]:
    """Trains one configuration with :func:`train.run.run`; see the module docstring.

    Args:
      config: the run (``workdir`` must be ``None``: benchmarks write only their report).
      ds: the loaded data set (:func:`load_data`).
      tx: a builder of the optimizer from the steps per epoch, instead of the registry's
        ``config.optimizer`` (which then only names it).
      on_epoch: passed to :func:`train.run.run` (for example to read the optimizer state).

    Returns:
      ``{"history", "compile_s", "diverged_epoch"}``.

    Example:
      >>> ds = load_data("synthetic", None, 32, 16)
      >>> out = train_one(Config(model="tiny", dataset="synthetic", optimizer="sgd",
      ...                        schedule="constant", learning_rate=0.01, momentum=0.5,
      ...                        batch_size=8, epochs=2), ds)
      >>> [h["step"] for h in out["history"]], out["diverged_epoch"]
      ([4, 8], None)
      >>> out["history"][-1]["time"] > out["history"][0]["time"] > 0
      True
    """
    if config.workdir is not None:
        raise ValueError("a benchmark run writes no workdir; leave config.workdir None")
    diverged_epoch = None
    try:
        history = run(config, dataset=ds, log=None, show_progress=False, tx=tx, on_epoch=on_epoch)
    except Diverged as stop:
        history = stop.history
        diverged_epoch = len(history) + 1
    compile_s = history[0]["compile_time"] if history else float("nan")
    total = 0.0
    out = []
    for record in history:
        total += record["epoch_time"]
        out.append({**record, "time": round(total, 4)})
    return {"history": out, "compile_s": compile_s, "diverged_epoch": diverged_epoch}


def total_time(history: Sequence[dict[str, Any]]) -> float:
    """The training seconds of a run: its last epoch's ``time`` (0 if it has none).

    Example:
      >>> total_time([{"time": 1.5}, {"time": 3.0}]), total_time([])
      (3.0, 0.0)
    """
    return float(history[-1]["time"]) if history else 0.0


def diverged_note(runs: Sequence[dict[str, Any]], label: Callable[[dict[str, Any]], str]) -> str:
    """One Markdown sentence naming the runs that diverged, or ``""``.

    Example:
      >>> note = diverged_note(
      ...     [{"m": "a", "diverged_epoch": 2}, {"m": "b", "diverged_epoch": None}],
      ...     lambda r: r["m"])
      >>> note.endswith(": a in epoch 2.")
      True
    """
    hits = [f"{label(r)} in epoch {r['diverged_epoch']}" for r in runs if r.get("diverged_epoch")]
    if not hits:
        return ""
    return (
        "Diverged (non-finite training loss; the run stops and its finite epochs are kept): "
        + ", ".join(hits)
        + "."
    )
