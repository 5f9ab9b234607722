"""Tuning-free head-to-head: adaptive Nesterov against optax's learning-rate-free optimizers.

``python -m benchmarks.tuning_free [--grid full|reduced|smoke] [--problems ...]
[--optimizers ...] [--seeds N]``

Every optimizer runs at its published defaults, the same on every problem (no tuning),
in two schedule columns: ``constant`` and ``annealed``, where one shared one-cycle
multiplier (``po.onecycle_schedule``: warm-up over 30% of the steps from 1/25, cosine
down to 1/25e4) multiplies each optimizer's learning rate; for the Polyak methods that
rate is the ceiling of the step, for ``polyak_sgd`` its ``scaling``. Schedule-free
optimizers are evaluated at their averaged parameters (``schedule_free_eval_params``),
as their authors prescribe.

Reported per (problem, optimizer, schedule) over the seeds: final test accuracy as
mean ± std and the training time (compilation and evaluation excluded) until the test
accuracy first reaches the problem's target at an epoch's end (``null`` when never).
Outputs ``results/tuning_free-<device>.md`` (tables), ``.json`` (raw rows: problem,
optimizer, schedule, seed, test_accuracy, time_to_target_s, and the per-epoch curves)
and ``-<problem>.png`` (test accuracy against epochs, one panel per schedule).

One function, :func:`train_once`, does one run; the loop here is a plain jitted epoch
(device-resident uint8 data, permutation and batches on the device, one host sync per
epoch), the same design as :mod:`train.loop`.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import models
import polyak_optax as po
from benchmarks import _common as C
from train import augment as augment_lib
from train import data as data_lib

BENCHMARK = "tuning_free"
VARIANT = "tuning_free_nesterov"
SCHEDULES = ("constant", "annealed")


class Problem(NamedTuple):
    """One benchmark problem; ``train_subset``/``epochs`` are the full-grid sizes."""

    model: str
    dataset: str
    augment: bool
    batch_size: int
    epochs: int
    train_subset: int | None
    target: float  # test accuracy whose first crossing is timed
    rationale: str


PROBLEMS: dict[str, Problem] = {
    "lenet5": Problem(
        "lenet5", "fashion_mnist", False, 128, 10, None, 0.88,
        "the project's main job: a small non-BN CNN that can interpolate its data (f* ~ 0)",
    ),
    "bn_cnn_aug": Problem(
        "bn_cnn", "fashion_mnist", True, 128, 10, None, 0.88,
        "batch norm makes the loss scale-invariant in the conv weights; augmentation "
        "keeps the training loss far from 0",
    ),
    "logreg": Problem(
        "linear", "fashion_mnist", False, 128, 10, None, 0.83,
        "multinomial logistic regression on pixels: convex, and f* > 0 (it cannot "
        "interpolate), the classic weak spot of Polyak steps",
    ),
    "char_mlp": Problem(
        "mlp", "license_chars", False, 128, 10, None, 0.45,
        "not vision: next-character prediction (30 classes) by an MLP on 12 one-hot "
        "characters of the Debian license texts; high label noise, f* far above 0",
    ),
}

# The reduced (CPU) grid: subsets and epochs per problem; every other setting as in full.
REDUCED: dict[str, dict[str, Any]] = {
    "lenet5": {"train_subset": 12_000, "epochs": 3},
    "bn_cnn_aug": {"train_subset": 6_000, "epochs": 3},
    "logreg": {"train_subset": 30_000, "epochs": 3},
    "char_mlp": {"train_subset": 40_000, "epochs": 3},
}
SMOKE: dict[str, Any] = {"train_subset": 256, "epochs": 1, "test_subset": 256}
REDUCED_NOTE = (
    "CPU grid: each problem on a class-balanced training subset for 3 epochs "
    "(lenet5 12k images, bn_cnn_aug 6k, logreg 30k, char_mlp 40k windows), full test sets."
)


def _lr(base: float, multiplier: Callable[[jax.Array], jax.Array] | None) -> Any:
    """``base``, or the schedule ``base * multiplier(count)``."""
    if multiplier is None:
        return base
    return lambda count: base * multiplier(count)


# name -> factory(multiplier or None) -> optimizer, each at its published defaults.
OPTIMIZERS: dict[str, Callable[[Any], optax.GradientTransformation]] = {
    "adaptive_nesterov": lambda m: po.adaptive_nesterov(max_learning_rate=_lr(0.1, m)),
    VARIANT: lambda m: po.tuning_free_nesterov(max_learning_rate=_lr(1.0, m)),
    "nesterov": lambda m: optax.sgd(_lr(0.01, m), momentum=0.9, nesterov=True),
    "adam": lambda m: optax.adam(_lr(1e-3, m)),
    "polyak_sgd": lambda m: optax.polyak_sgd(scaling=_lr(1.0, m)),
    "momo": lambda m: optax.contrib.momo(_lr(1.0, m)),
    "momo_adam": lambda m: optax.contrib.momo_adam(_lr(1e-2, m)),
    "prodigy": lambda m: optax.contrib.prodigy(_lr(1.0, m)),
    "dadapt_adamw": lambda m: optax.contrib.dadapt_adamw(_lr(1.0, m)),
    "dog": lambda m: optax.contrib.dog(_lr(1.0, m)),
    "schedule_free_sgd": lambda m: optax.contrib.schedule_free_sgd(_lr(1.0, m)),
    "schedule_free_adamw": lambda m: optax.contrib.schedule_free_adamw(_lr(0.0025, m)),
}
SCHEDULE_FREE = ("schedule_free_sgd", "schedule_free_adamw")


def load_problem_data(problem: Problem, train_subset: int | None, seed: int = 0):
    """``data_lib.Dataset`` of the problem (a class-balanced subset when asked)."""
    if problem.dataset == "license_chars":
        from train import text_data

        x, y, xt, yt = text_data.load_license_chars()
        if train_subset is not None and train_subset < len(y):
            keep = np.sort(np.random.default_rng(seed).choice(len(y), train_subset, False))
            x, y = x[keep], y[keep]
        mean, std = data_lib.channel_stats(x)
        return data_lib.Dataset(x, y, xt, yt, text_data.VOCAB, problem.dataset, mean, std)
    return data_lib.load_dataset(problem.dataset, train_subset=train_subset, seed=seed)


def _forward(apply_fn, params, batch_stats, x, train):
    if not batch_stats:
        return apply_fn({"params": params}, x, train=train), batch_stats
    variables = {"params": params, "batch_stats": batch_stats}
    if not train:
        return apply_fn(variables, x, train=False), batch_stats
    logits, new = apply_fn(variables, x, train=True, mutable=["batch_stats"])
    return logits, new["batch_stats"]


def make_epoch_fn(apply_fn, tx, *, batch_size: int, augment: bool):
    """A jitted epoch: ``(params, batch_stats, opt_state, images, labels, mean, std, key)``."""

    def epoch(params, batch_stats, opt_state, images, labels, mean, std, key):
        n = images.shape[0] // batch_size
        perm_key, aug_key = jax.random.split(key)
        perm = jax.random.permutation(perm_key, images.shape[0])

        def body(i, carry):
            params, batch_stats, opt_state, loss_sum = carry
            idx = lax.dynamic_slice_in_dim(perm, i * batch_size, batch_size)
            x = jnp.take(images, idx, axis=0)
            y = jnp.take(labels, idx, axis=0)
            if augment:
                x = augment_lib.augment(jax.random.fold_in(aug_key, i), x)
            x = augment_lib.normalize(x, mean, std)

            def loss_fn(p):
                logits, bs = _forward(apply_fn, p, batch_stats, x, True)
                return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), bs

            (loss, bs), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = tx.update(grads, opt_state, params, value=loss)
            params = optax.apply_updates(params, updates)
            return params, bs, opt_state, loss_sum + loss

        params, batch_stats, opt_state, loss_sum = lax.fori_loop(
            0, n, body, (params, batch_stats, opt_state, jnp.zeros((), jnp.float32))
        )
        return params, batch_stats, opt_state, loss_sum / n

    return jax.jit(epoch, donate_argnums=(0, 1, 2))


def make_eval_fn(apply_fn, *, batch_size: int = 1000):
    """Jitted test accuracy and loss over all of ``images`` (last batch padded, masked)."""

    def evaluate(params, batch_stats, images, labels, mean, std):
        n = images.shape[0]
        nb = -(-n // batch_size)
        pad = nb * batch_size - n
        images = jnp.pad(images, ((0, pad),) + ((0, 0),) * (images.ndim - 1))
        labels = jnp.pad(labels, (0, pad))
        mask = jnp.arange(nb * batch_size) < n

        def body(i, sums):
            s = i * batch_size
            x = augment_lib.normalize(lax.dynamic_slice_in_dim(images, s, batch_size), mean, std)
            y = lax.dynamic_slice_in_dim(labels, s, batch_size)
            m = lax.dynamic_slice_in_dim(mask, s, batch_size)
            logits, _ = _forward(apply_fn, params, batch_stats, x, False)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
            return (
                sums[0] + jnp.sum(jnp.where(m, ce, 0.0)),
                sums[1] + jnp.sum(m & (jnp.argmax(logits, -1) == y)),
            )

        loss, correct = lax.fori_loop(0, nb, body, (jnp.zeros(()), jnp.zeros((), jnp.int32)))
        return correct / n, loss / n

    return jax.jit(evaluate)


class _Prepared(NamedTuple):
    data: tuple[jax.Array, ...]  # train images, labels, test images, labels, mean, std
    model: Any
    num_classes: int
    input_shape: tuple[int, ...]


_PREPARED: dict[tuple[str, int | None, int | None], _Prepared] = {}
_COMPILED: dict[tuple[Any, ...], Any] = {}


def _prepare(name: str, train_subset: int | None, test_subset: int | None) -> _Prepared:
    key = (name, train_subset, test_subset)
    if key not in _PREPARED:
        problem = PROBLEMS[name]
        ds = load_problem_data(problem, train_subset)
        xt, yt = ds.test_images[:test_subset], ds.test_labels[:test_subset]
        data = tuple(
            jax.device_put(a)
            for a in (ds.train_images, ds.train_labels, xt, yt, ds.mean, ds.std)
        )
        _PREPARED[key] = _Prepared(
            data, models.create(problem.model, ds.num_classes), ds.num_classes,
            ds.train_images.shape[1:],
        )
    return _PREPARED[key]


def train_once(
    problem: str,
    optimizer: str,
    schedule: str,
    seed: int,
    *,
    epochs: int | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
) -> dict[str, Any]:
    """One run; returns the final accuracy, the time to target and per-epoch curves.

    Args:
      problem: a key of :data:`PROBLEMS`.
      optimizer: a key of :data:`OPTIMIZERS`.
      schedule: ``constant`` or ``annealed`` (the shared one-cycle multiplier).
      seed: initialization and data-order seed.
      epochs, train_subset, test_subset: sizes (default: the problem's full grid).

    Returns:
      ``{"test_accuracy", "time_to_target_s", "epochs": [{"epoch", "time_s",
      "train_loss", "test_loss", "test_accuracy"}, ...]}``.
    """
    spec = PROBLEMS[problem]
    epochs = spec.epochs if epochs is None else epochs
    train_subset = spec.train_subset if train_subset is None else train_subset
    prep = _prepare(problem, train_subset, test_subset)
    images, labels, test_images, test_labels, mean, std = prep.data
    steps = epochs * (images.shape[0] // spec.batch_size)

    ckey = (problem, optimizer, schedule, train_subset, test_subset, epochs)
    if ckey not in _COMPILED:
        multiplier = None
        if schedule == "annealed":
            multiplier = po.onecycle_schedule(steps, 1.0)
        elif schedule != "constant":
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        tx = OPTIMIZERS[optimizer](multiplier)
        epoch_fn = make_epoch_fn(
            prep.model.apply, tx, batch_size=spec.batch_size, augment=spec.augment
        )
        _COMPILED[ckey] = (tx, epoch_fn, None)
    tx, epoch_fn, compiled = _COMPILED[ckey]
    eval_fn = _COMPILED.setdefault(("eval", problem), make_eval_fn(prep.model.apply))

    init_key, data_key = jax.random.split(jax.random.key(seed))
    x0 = jnp.zeros((1, *prep.input_shape), jnp.float32)
    variables = jax.jit(functools.partial(prep.model.init, train=False))(init_key, x0)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    # Own buffers for the optimizer state (some optax states alias the params).
    opt_state = jax.tree.map(jnp.copy, tx.init(params))
    if compiled is None:  # compile once per (problem, optimizer, schedule), outside the clock
        compiled = epoch_fn.lower(
            params, batch_stats, opt_state, images, labels, mean, std, data_key
        ).compile()
        _COMPILED[ckey] = (tx, epoch_fn, compiled)

    curve, elapsed, time_to_target = [], 0.0, None
    for epoch in range(1, epochs + 1):
        key = jax.random.fold_in(data_key, epoch)
        start = time.perf_counter()
        params, batch_stats, opt_state, train_loss = compiled(
            params, batch_stats, opt_state, images, labels, mean, std, key
        )
        jax.block_until_ready(params)
        elapsed += time.perf_counter() - start
        eval_params = params
        if optimizer in SCHEDULE_FREE:
            eval_params = optax.contrib.schedule_free_eval_params(opt_state, params)
        acc, test_loss = eval_fn(eval_params, batch_stats, test_images, test_labels, mean, std)
        acc = float(acc)
        if time_to_target is None and acc >= spec.target:
            time_to_target = elapsed
        curve.append(
            {
                "epoch": epoch,
                "time_s": elapsed,
                "train_loss": float(train_loss),
                "test_loss": float(test_loss),
                "test_accuracy": acc,
            }
        )
    return {
        "test_accuracy": curve[-1]["test_accuracy"],
        "time_to_target_s": time_to_target,
        "epochs": curve,
    }
