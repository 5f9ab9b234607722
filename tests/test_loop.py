"""Tests of the training loop (train.loop) and of the data-parallel mesh (train.sharding).

Everything runs on the tiny batch-norm model with 8x8x1 uint8 images, so each jitted
function compiles in well under a second. The states are built once per module and
copied before each call, both because ``train_epoch`` donates its state and because a
new optimizer object would change the state's static fields and force a recompile.
"""

from __future__ import annotations

import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import models
from tests._fast import slow_after, slow_unless
from train import augment, loop, sharding
from train.optimizers import build_optimizer

IMAGE_SHAPE = (8, 8, 1)
NUM_CLASSES = 3
SGD_LEARNING_RATE = 0.05


def _new_state(optimizer: str, **kwargs) -> loop.TrainState:
    tx = build_optimizer(optimizer, **kwargs)
    model = models.create("tiny", NUM_CLASSES)
    return loop.create_train_state(model, tx, jax.random.key(0), IMAGE_SHAPE)


def _copy(state: loop.TrainState) -> loop.TrainState:
    """A state with fresh buffers (the original survives a donating call)."""
    return state.replace_arrays(jax.tree.map(jnp.copy, state.arrays()))


def _data(n: int, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *IMAGE_SHAPE), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, n, dtype=np.int32)
    return jnp.asarray(images), jnp.asarray(labels)


def _stats(images: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = np.asarray(images, np.float64) / 255.0
    return jnp.asarray(x.mean(axis=(0, 1, 2)), jnp.float32), jnp.asarray(
        x.std(axis=(0, 1, 2)), jnp.float32
    )


def _normalized_batch(n: int, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    images, labels = _data(n, seed)
    mean, std = _stats(images)
    return augment.normalize(images, mean, std), labels


def _counts(opt_state) -> list[int]:
    """Every ``count`` field of an optimizer state (inject_hyperparams, schedules, inner)."""
    leaves = jax.tree_util.tree_flatten_with_path(opt_state)[0]
    return [int(leaf) for path, leaf in leaves if getattr(path[-1], "name", None) == "count"]


def _assert_trees_differ(a, b) -> None:
    with pytest.raises(AssertionError):
        chex.assert_trees_all_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def sgd_state() -> loop.TrainState:
    """Constant-rate SGD with momentum: its reported learning rate is known exactly."""
    return _new_state("sgd", learning_rate=SGD_LEARNING_RATE, momentum=0.9)


@pytest.fixture(scope="module")
def adaptive_state() -> loop.TrainState:
    return _new_state("adaptive_nesterov")


_train_step = jax.jit(loop.train_step)
_persistent_step = jax.jit(loop.persistent_step, static_argnames="persistency")


@pytest.mark.parametrize(
    "optimizer", slow_unless(["sgd", "adaptive_nesterov"], ["adaptive_nesterov"])
)
def test_persistency_two_equals_two_train_steps_on_the_same_batch(
    optimizer, sgd_state, adaptive_state
):
    """K = 2 is exactly two optimizer steps on the batch: params, batch stats, optimizer
    state and step counters match two ``train_step`` calls, and differ from one."""
    state = sgd_state if optimizer == "sgd" else adaptive_state
    x, y = _normalized_batch(16)
    once, m1 = _train_step(state, x, y)
    twice, m2 = _train_step(once, x, y)
    persistent, metrics = _persistent_step(state, x, y, persistency=2)

    assert int(persistent.step) == 2
    counts = _counts(persistent.opt_state)
    assert counts and all(c == 2 for c in counts), counts
    chex.assert_trees_all_close(persistent.params, twice.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(persistent.batch_stats, twice.batch_stats, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(persistent.opt_state, twice.opt_state, rtol=1e-5, atol=1e-6)
    _assert_trees_differ(persistent.params, once.params)
    # Loss and correct count of the first of the K steps; the sum of the K learning rates.
    np.testing.assert_allclose(metrics["loss"], m1["loss"], rtol=1e-6)
    assert int(metrics["correct"]) == int(m1["correct"])
    np.testing.assert_allclose(
        metrics["learning_rate"], m1["learning_rate"] + m2["learning_rate"], rtol=1e-6
    )


def test_persistency_one_is_train_step(sgd_state):
    x, y = _normalized_batch(16)
    expected, expected_metrics = _train_step(sgd_state, x, y)
    state, metrics = _persistent_step(sgd_state, x, y, persistency=1)
    assert int(state.step) == 1
    chex.assert_trees_all_equal(state.arrays(), expected.arrays())
    chex.assert_trees_all_equal(metrics, expected_metrics)


@pytest.mark.parametrize("persistency", [0, -1, 1.5])
def test_persistent_step_rejects_a_bad_persistency(sgd_state, persistency):
    x, y = _normalized_batch(4)
    with pytest.raises(ValueError, match="persistency"):
        loop.persistent_step(sgd_state, x, y, persistency)


# One static configuration for the epoch tests below, so that they share one compilation.
EPOCH_SIZE, EPOCH_BATCH, EPOCH_K = 50, 8, 2  # 6 batches (2 examples dropped), 12 steps


def _epoch(state: loop.TrainState, seed: int, **kwargs):
    images, labels = _data(EPOCH_SIZE)
    mean, std = _stats(images)
    options = {"batch_size": EPOCH_BATCH, "persistency": EPOCH_K, **kwargs}
    return loop.train_epoch(
        _copy(state), images, labels, mean, std, jax.random.key(seed), **options
    )


def test_train_epoch_takes_batches_times_k_steps_and_reports_finite_metrics(sgd_state):
    state, metrics = _epoch(sgd_state, seed=1)
    steps = (EPOCH_SIZE // EPOCH_BATCH) * EPOCH_K
    assert int(state.step) == steps == 12
    counts = _counts(state.opt_state)
    assert counts and all(c == steps for c in counts), counts
    _assert_trees_differ(state.params, sgd_state.params)

    metrics = jax.device_get(metrics)
    assert set(metrics) == {"loss", "accuracy", "learning_rate", "nonfinite"}
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["loss"] > 0
    # Constant-rate SGD: the mean rate over the epoch's steps is the rate itself.
    np.testing.assert_allclose(metrics["learning_rate"], SGD_LEARNING_RATE, rtol=1e-6)


def test_train_epoch_is_deterministic_for_a_key_and_varies_with_it(sgd_state):
    first, first_metrics = _epoch(sgd_state, seed=1)
    again, again_metrics = _epoch(sgd_state, seed=1)
    other, _ = _epoch(sgd_state, seed=2)
    chex.assert_trees_all_equal(first.arrays(), again.arrays())
    chex.assert_trees_all_equal(first_metrics, again_metrics)
    _assert_trees_differ(first.params, other.params)


def test_train_epoch_reports_the_mean_adaptive_eta(adaptive_state):
    """For adaptive Nesterov the reported rate is the mean Polyak eta, within its bounds."""
    state, metrics = _epoch(adaptive_state, seed=1)
    assert int(state.step) == (EPOCH_SIZE // EPOCH_BATCH) * EPOCH_K
    metrics = jax.device_get(metrics)
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    assert 0.0 <= metrics["accuracy"] <= 1.0
    # The default ceiling 0.1 (constant schedule) bounds every eta, hence the mean.
    assert 0.0 < metrics["learning_rate"] <= 0.1 + 1e-7


def test_train_epoch_rejects_a_batch_larger_than_the_data_set(sgd_state):
    with pytest.raises(ValueError, match="batch_size"):
        _epoch(sgd_state, seed=1, batch_size=EPOCH_SIZE + 1)


PLAIN_OPTAX = {
    "adam": lambda: optax.adam(1e-3),
    "momo": lambda: optax.contrib.momo(),
    "schedule_free_sgd": lambda: optax.contrib.schedule_free_sgd(0.1),
    "prodigy": lambda: optax.contrib.prodigy(),  # its state holds the initial params
    "dog": lambda: optax.contrib.dog(),  # likewise
}


@pytest.mark.parametrize("name", slow_after(sorted(PLAIN_OPTAX)))  # `make test-fast`: adam
def test_train_epoch_takes_any_optax_optimizer(name):
    """A plain optax optimizer: no ``learning_rate`` in its state (reported as NaN), and
    state leaves that alias the params are copied, so donating the state works."""
    tx = PLAIN_OPTAX[name]()
    state = loop.create_train_state(
        models.create("tiny", NUM_CLASSES), tx, jax.random.key(0), IMAGE_SHAPE
    )
    param_ids = {id(x) for x in jax.tree.leaves(state.params)}
    assert not param_ids & {id(x) for x in jax.tree.leaves(state.opt_state)}
    images, labels = _data(32)
    mean, std = _stats(images)
    before = jax.tree.map(np.asarray, state.params)
    state, metrics = loop.train_epoch(
        state, images, labels, mean, std, jax.random.key(1), batch_size=8
    )
    assert int(state.step) == 4 and int(metrics["nonfinite"]) == 0
    assert np.isfinite(float(metrics["loss"]))
    lr = float(metrics["learning_rate"])
    assert np.isnan(lr) if name != "momo" else np.isnan(lr) or lr > 0
    _assert_trees_differ(before, jax.tree.map(np.asarray, state.params))


def test_train_epoch_counts_batches_whose_loss_is_not_finite(sgd_state):
    """A NaN image makes its batch's loss NaN: counted, and left out of the mean loss."""
    images, labels = _data(32)
    mean, std = _stats(images)
    std = std.at[0].set(0.0)  # every normalized pixel: x / 0 -> inf or nan
    _, metrics = loop.train_epoch(
        _copy(sgd_state), images, labels, mean, std, jax.random.key(0), batch_size=8
    )
    assert int(metrics["nonfinite"]) == 4
    assert np.isnan(float(metrics["loss"]))


def _perturbed(state: loop.TrainState) -> loop.TrainState:
    """The state with random parameters and batch statistics (no compilation needed)."""
    rng = np.random.default_rng(5)

    def noise(x, low=-1.0):
        return jnp.asarray(rng.uniform(low, 1.0, x.shape), x.dtype)

    params = jax.tree.map(lambda p: p + noise(p), state.params)
    stats = state.batch_stats["BatchNorm_0"]
    batch_stats = {"BatchNorm_0": {"mean": noise(stats["mean"]), "var": noise(stats["var"], 0.5)}}
    return state.replace(params=params, batch_stats=batch_stats)


def _reference_evaluation(state: loop.TrainState, images, labels, mean, std):
    """Mean loss and accuracy of all examples in one batch, the loss in float64 NumPy."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    logits = state.apply_fn(variables, augment.normalize(images, mean, std), train=False)
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    loss = -log_probs[np.arange(len(labels)), labels].mean()
    correct = int((logits.argmax(axis=-1) == labels).sum())
    return loss, correct


@pytest.mark.parametrize("batch_size", [8, 64])
def test_evaluate_counts_every_example_once(sgd_state, batch_size):
    """37 examples in batches of 8 (the last one padded by 3) or one padded batch of 64:
    the mean loss and accuracy equal a plain computation over the 37 examples."""
    trained = _perturbed(sgd_state)
    images, labels = _data(37, seed=4)
    mean, std = _stats(images)
    result = jax.device_get(
        loop.evaluate(trained, images, labels, mean, std, batch_size=batch_size)
    )
    loss, correct = _reference_evaluation(trained, images, labels, mean, std)
    np.testing.assert_allclose(result["loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(result["accuracy"], correct / 37, rtol=1e-6)
    assert 0.0 <= result["accuracy"] <= 1.0


def test_make_mesh_and_batch_sharding_checks():
    mesh = sharding.make_mesh()
    assert mesh.axis_names == (sharding.DATA_AXIS,)
    assert mesh.size == jax.local_device_count()
    for bad in (0, jax.local_device_count() + 1):
        with pytest.raises(ValueError, match="num_devices"):
            sharding.make_mesh(bad)
    sharding.check_batch_size(mesh.size * 4, mesh)
    eight = types.SimpleNamespace(size=8)  # check_batch_size reads only the mesh's size
    sharding.check_batch_size(16, eight)
    with pytest.raises(ValueError, match=r"--batch-size \(12\) must be a multiple .* \(8\)"):
        sharding.check_batch_size(12, eight, "--batch-size")
    tree = sharding.replicate({"w": jnp.arange(3.0)}, mesh)
    assert tree["w"].sharding.is_fully_replicated
