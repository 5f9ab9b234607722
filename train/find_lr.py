"""``python -m train --find-lr``: Smith's learning-rate range test on the chosen model and data.

Writes ``lr_range_test.png`` and ``lr_range_test.json`` to the workdir and prints the
suggestions (steepest descent, fastai's valley, the minimum / 10).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import models
import polyak_optax as po
from train import augment, data, loop, optimizers
from train.config import Config
from train.report import finite_or_none


def find_lr(config: Config) -> int:
    """``--find-lr``: Smith's range test on the chosen model and data; prints suggestions."""
    config = optimizers.resolve(config)
    if config.optimizer == "adaptive_nesterov":
        raise ValueError(
            "--find-lr: adaptive_nesterov computes its own step size; choose --optimizer "
            "sgd, nesterov, adagrad or adam"
        )
    loss_fn, params, batches = _problem(config, data.load_for_config(config))

    def factory(learning_rate: Any) -> Any:
        return optimizers.build_optimizer(
            config.optimizer, learning_rate, config.momentum, layerwise=config.layerwise
        )

    t0 = time.perf_counter()
    result = po.lr_range_test(
        loss_fn,
        params,
        batches,
        factory,
        min_lr=config.find_lr_min,
        max_lr=config.find_lr_max,
        num_steps=config.find_lr_steps,
        stacked=True,
    )
    seconds = time.perf_counter() - t0
    plot_path, summary = _write(config, result)
    print(
        f"LR range test ({config.optimizer}, {config.model}, {config.find_lr_steps} steps of "
        f"batch {config.batch_size}, {seconds:.1f}s): suggestion {summary['suggestion']:.3g}, "
        f"valley {summary['valley']:.3g}, minimum/10 {summary['minimum']:.3g}; plot {plot_path}",
        flush=True,
    )
    return 0


def _problem(config: Config, dataset: data.Dataset) -> tuple[Any, Any, Any]:
    """``(loss_fn, params, batches)`` of the range test: the model at its initialization
    and ``--find-lr-steps`` different batches, drawn like an epoch's (wrapping around a
    small data set); ``loss_fn(params, batch)`` is the training loss (batch norm in
    training mode, its statistics not carried from step to step)."""
    batch_size, steps = config.batch_size, config.find_lr_steps
    num_train = len(dataset.train_labels)
    if batch_size > num_train:
        raise ValueError(f"--batch-size {batch_size} exceeds the {num_train} training examples")
    init_key, data_key = jax.random.split(jax.random.key(config.seed))
    model = models.create(config.model, dataset.num_classes)
    tx = optimizers.build_optimizer(config.optimizer, config.learning_rate, config.momentum)
    state = loop.create_train_state(model, tx, init_key, tuple(dataset.train_images.shape[1:]))
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

    return loss_fn, state.params, batches


def _write(config: Config, result: po.LRRangeTestResult) -> tuple[str, dict[str, float]]:
    """Writes ``lr_range_test.png`` and ``lr_range_test.json`` to the workdir; returns the
    plot's path and the suggestions."""
    workdir = config.workdir
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
                "flags": config.to_json(),
                **summary,
                "learning_rates": [finite_or_none(v) for v in np.asarray(result.learning_rates)],
                "losses": [finite_or_none(v) for v in np.asarray(result.losses)],
                "smoothed_losses": [finite_or_none(v) for v in np.asarray(result.smoothed_losses)],
            },
            f,
            indent=1,
        )
    return plot_path, summary
