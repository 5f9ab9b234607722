"""Tests of the learning-rate range test.

The sweep is checked against a float64 NumPy transcription of the same procedure
(Python loop, heavy-ball SGD, the smoothing and the stop rule), on least squares where
plain SGD diverges exactly for lr > 2 / lambda_max of the Hessian; the suggestions are
checked on prescribed loss curves against hand-computed points and a literal
transcription of fastai's ``valley``.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import polyak_optax as po
from tests._compile_counter import BackendCompiles

N, D = 32, 4  # samples, parameters of the least-squares problems


# ---------------------------------------------------------------------------------------
# Problems and references.


def least_squares_loss(w, batch):
    return 0.5 * jnp.mean((batch["x"] @ w - batch["y"]) ** 2)


def design(seed: int, eigenvalues) -> np.ndarray:
    """An N x D design matrix whose Hessian X^T X / N has the given eigenvalues."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(N, D)))
    v, _ = np.linalg.qr(rng.normal(size=(D, D)))
    return (u * np.sqrt(N * np.asarray(eigenvalues, np.float64))) @ v.T


def critical_lr(x: np.ndarray) -> float:
    """2 / lambda_max: plain SGD on this least-squares problem diverges above it."""
    return 2.0 / np.linalg.eigvalsh(x.T @ x / len(x)).max()


def reference_sweep(xs, ys, lrs, w0, *, smoothing, threshold, momentum=0.0):
    """Float64 Python-loop range test: optax's heavy ball (t = g + m t; w -= lr t)."""
    n = len(lrs)
    losses, smoothed = np.full(n, np.nan), np.full(n, np.nan)
    w, trace = np.array(w0, np.float64), np.zeros(len(w0))
    average, best = 0.0, np.inf
    for i, lr in enumerate(np.asarray(lrs, np.float64)):
        residual = xs[i] @ w - ys[i]
        losses[i] = 0.5 * np.mean(residual**2)
        average = smoothing * average + (1 - smoothing) * losses[i]
        smoothed[i] = average / (1 - smoothing ** (i + 1))
        best = min(best, smoothed[i])
        if not np.isfinite(smoothed[i]) or smoothed[i] > threshold * best:
            return losses, smoothed, i + 1
        trace = xs[i].T @ residual / len(residual) + momentum * trace
        w = w - lr * trace
    return losses, smoothed, n


def fastai_valley(lrs, losses):
    """fastai's ``valley`` (fastai/callback/schedule.py), transcribed literally."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(0, i):
            if (losses[i] < losses[j]) and (lds[i] < lds[j] + 1):
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(lrs[idx])


def counter_step(lr):
    """An 'optimizer' that adds 1 to every parameter, whatever the gradient and lr."""
    del lr
    return optax.GradientTransformation(
        lambda params: optax.EmptyState(),
        lambda updates, state, params=None: (jax.tree.map(jnp.ones_like, updates), state),
    )


def table_loss(params, table):
    """The loss at step t is ``table[t]``: a prescribed curve (params count the steps)."""
    return table[params["t"].astype(jnp.int32)] + 0.0 * params["t"]


def prescribed(table, **kwargs):
    table = jnp.asarray(table, jnp.float32)
    return po.lr_range_test(
        table_loss,
        {"t": jnp.float32(0.0)},
        table,
        counter_step,
        num_steps=len(table),
        smoothing=kwargs.pop("smoothing", 0.0),
        **kwargs,
    )


# ---------------------------------------------------------------------------------------
# Least squares: divergence starts at lr = 2 / lambda_max.


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_least_squares_minibatch_sgd_stops_just_after_two_over_lambda_max(seed):
    # Fresh targets every step (stacked batches) keep every direction excited, as the
    # minibatch noise of real training does; the defaults smooth with beta = 0.98.
    x = design(seed, [4.0, 2.0, 1.0, 0.5])
    crit = critical_lr(x)
    rng = np.random.default_rng(100 + seed)
    ys = x @ rng.normal(size=D) + 0.5 * rng.normal(size=(100, N))
    xs = np.broadcast_to(x, (100, N, D))
    batch = {"x": jnp.asarray(xs, jnp.float32), "y": jnp.asarray(ys, jnp.float32)}

    result = po.lr_range_test(
        least_squares_loss, jnp.zeros(D), batch, optax.sgd, min_lr=1e-4, stacked=True
    )

    np.testing.assert_allclose(result.learning_rates, np.geomspace(1e-4, 10.0, 100), rtol=1e-6)
    stop = result.num_recorded - 1  # the step whose smoothed loss crossed 4 x best
    assert result.diverged
    diverging_lr = result.learning_rates[stop - 1]  # its loss comes from this update
    assert crit < diverging_lr < 3.0 * crit, (diverging_lr, crit)
    assert np.all(np.isfinite(result.losses[: stop + 1]))
    assert np.all(np.isnan(result.losses[stop + 1 :]))
    assert np.all(np.isnan(result.smoothed_losses[stop + 1 :]))
    for name in ("suggestion", "valley", "minimum"):
        assert 1e-4 <= getattr(result, name) < crit, name

    expected_losses, expected_smoothed, recorded = reference_sweep(
        xs, ys, result.learning_rates, np.zeros(D), smoothing=0.98, threshold=4.0
    )
    assert result.num_recorded == recorded
    np.testing.assert_allclose(result.losses, expected_losses, rtol=1e-4)
    np.testing.assert_allclose(result.smoothed_losses, expected_smoothed, rtol=1e-4)


def test_least_squares_gradient_descent_never_stops_before_two_over_lambda_max():
    # One batch reused (plain gradient descent), no smoothing. Below 2 / lambda_max every
    # eigencomponent of the error contracts, so the loss cannot rise; above it the top
    # one grows by |1 - lr lambda_max| per step. Targets X @ 0 keep float32 exact while
    # the error shrinks by many orders of magnitude.
    x = design(3, [4.0, 3.5, 3.0, 2.5])
    crit = critical_lr(x)
    w0 = np.ones(D)
    batch = {"x": jnp.asarray(x, jnp.float32), "y": jnp.zeros(N, jnp.float32)}
    result = po.lr_range_test(
        least_squares_loss,
        jnp.asarray(w0, jnp.float32),
        batch,
        optax.sgd,
        min_lr=1e-4,
        smoothing=0.0,
    )

    lrs, losses = result.learning_rates, result.losses
    stop = result.num_recorded - 1
    assert result.diverged
    below = np.flatnonzero(lrs[:stop] <= crit)  # updates made with lr <= 2 / lambda_max
    assert np.all(np.diff(losses[: below[-1] + 2]) <= 0)
    assert crit < lrs[stop - 1] < 2.0 * crit, (lrs[stop - 1], crit)
    assert losses[stop] > 4 * np.min(losses[:stop]) and losses[stop - 1] <= 4 * np.min(
        losses[:stop]
    )
    for name in ("suggestion", "valley", "minimum"):
        assert getattr(result, name) < crit, name

    xs, ys = np.broadcast_to(x, (100, N, D)), np.zeros((100, N))
    expected, _, recorded = reference_sweep(xs, ys, lrs, w0, smoothing=0.0, threshold=4.0)
    assert result.num_recorded == recorded
    # float32 loses digits in 1 - lr lambda where lr lambda ~ 1 (the loss is 1e-17 there).
    np.testing.assert_allclose(losses, expected, rtol=1e-2)


def test_heavy_ball_linear_sweep_matches_python_loop():
    # The optimizer state (momentum) carries over while the lr changes every step.
    x = design(4, [2.0, 1.0, 0.5, 0.25])
    rng = np.random.default_rng(4)
    ys = x @ rng.normal(size=D) + 0.1 * rng.normal(size=(60, N))
    xs = np.broadcast_to(x, (60, N, D))
    batch = {"x": jnp.asarray(xs, jnp.float32), "y": jnp.asarray(ys, jnp.float32)}
    result = po.lr_range_test(
        least_squares_loss,
        jnp.zeros(D),
        batch,
        lambda lr: optax.sgd(lr, momentum=0.9),
        min_lr=1e-3,
        max_lr=4.0,
        num_steps=60,
        mode="linear",
        smoothing=0.9,
        diverge_threshold=3.0,
        stacked=True,
    )
    np.testing.assert_allclose(result.learning_rates, np.linspace(1e-3, 4.0, 60), rtol=1e-6)
    losses, smoothed, recorded = reference_sweep(
        xs, ys, result.learning_rates, np.zeros(D), smoothing=0.9, threshold=3.0, momentum=0.9
    )
    assert result.diverged and result.num_recorded == recorded < 60
    np.testing.assert_allclose(result.losses, losses, rtol=1e-4)
    np.testing.assert_allclose(result.smoothed_losses, smoothed, rtol=1e-4)


def test_inject_hyperparams_factory_sweeps_the_learning_rate():
    x = design(5, [4.0, 2.0, 1.0, 0.5])
    batch = {"x": jnp.asarray(x, jnp.float32), "y": jnp.asarray(x @ np.ones(D), jnp.float32)}
    kwargs = dict(min_lr=1e-3, num_steps=40)
    plain = po.lr_range_test(
        least_squares_loss, jnp.zeros(D), batch, lambda lr: optax.sgd(lr, momentum=0.5), **kwargs
    )
    injected = po.lr_range_test(
        least_squares_loss,
        jnp.zeros(D),
        batch,
        lambda lr: optax.inject_hyperparams(optax.sgd)(learning_rate=lr, momentum=0.5),
        **kwargs,
    )
    assert plain.diverged
    np.testing.assert_allclose(injected.losses, plain.losses, rtol=1e-5)


def _recording(rate, floor, log):
    """sgd at ``rate`` whose update logs the (rate, floor) it reads from its state."""

    def update(updates, state, params=None):
        del params
        jax.debug.callback(lambda r, f: log.append((float(r), float(f))), rate, floor)
        return jax.tree.map(lambda g: -rate * g, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def test_every_injected_hyperparameter_derived_from_lr_is_swept():
    log = []
    factory = lambda lr: optax.inject_hyperparams(
        lambda rate, floor, scale: _recording(rate, floor, log)
    )(rate=lr, floor=lr / 100, scale=0.5)
    result = po.lr_range_test(
        lambda w, b: jnp.sum((w - b) ** 2),
        jnp.zeros(3),
        jnp.ones(3),
        factory,
        min_lr=1e-4,
        max_lr=1e-1,
        num_steps=12,
    )
    jax.effects_barrier()
    assert not result.diverged and len(log) == 12
    rates, floors = np.array(log).T
    np.testing.assert_allclose(rates, result.learning_rates, rtol=1e-6)
    np.testing.assert_allclose(floors, result.learning_rates / 100, rtol=1e-6)
    # The float64 hand loop of that sgd: w <- w - 2 lr (w - 1).
    w, losses = np.zeros(3), []
    for lr in result.learning_rates.astype(np.float64):
        losses.append(np.sum((w - 1) ** 2))
        w = w - lr * 2 * (w - 1)
    np.testing.assert_allclose(result.losses, losses, rtol=1e-5)


def test_injected_adaptive_nesterov_sweeps_its_eta_ceiling():
    x = design(6, [4.0, 2.0, 1.0, 0.5])
    batch = {"x": jnp.asarray(x, jnp.float32), "y": jnp.asarray(x @ np.ones(D), jnp.float32)}
    kwargs = dict(min_lr=1e-4, max_lr=10.0, num_steps=40)

    def plain(lr):
        return po.adaptive_nesterov(max_learning_rate=lr, min_learning_rate=lr / 100)

    def injected(lr):
        return optax.inject_hyperparams(po.adaptive_nesterov)(
            max_learning_rate=lr, min_learning_rate=lr / 100
        )

    a = po.lr_range_test(least_squares_loss, jnp.zeros(D), batch, plain, **kwargs)
    b = po.lr_range_test(least_squares_loss, jnp.zeros(D), batch, injected, **kwargs)
    frozen = po.lr_range_test(
        least_squares_loss,
        jnp.zeros(D),
        batch,
        lambda lr: po.adaptive_nesterov(max_learning_rate=1e-4, min_learning_rate=1e-6),
        **kwargs,
    )
    assert a.num_recorded == b.num_recorded
    np.testing.assert_allclose(b.losses, a.losses, rtol=1e-5)
    assert not np.allclose(a.losses[: a.num_recorded], frozen.losses[: a.num_recorded])


def test_the_carried_counts_and_moments_are_not_reset():
    kwargs = dict(min_lr=1e-4, max_lr=1e-1, num_steps=16)
    loss_fn = lambda w, b: jnp.sum((w - b) ** 2)
    plain = po.lr_range_test(loss_fn, jnp.zeros(()), jnp.ones(()), optax.adam, **kwargs)
    injected = po.lr_range_test(
        loss_fn,
        jnp.zeros(()),  # a scalar param: its moments have the probe's path and shape
        jnp.ones(()),
        lambda lr: optax.inject_hyperparams(optax.adam)(learning_rate=lr, b1=0.9),
        **kwargs,
    )
    np.testing.assert_allclose(injected.losses, plain.losses, rtol=1e-5)


# ---------------------------------------------------------------------------------------
# Stopping, NaN, batches, params.


def test_nan_loss_stops_the_sweep_and_the_updates():
    calls = []

    def counting_sgd(lr):
        count = optax.GradientTransformation(
            lambda params: optax.EmptyState(),
            lambda u, s, p=None: (jax.debug.callback(lambda: calls.append(1)) or u, s),
        )
        return optax.chain(count, optax.sgd(lr))

    def loss_fn(w, batch):  # w climbs towards 10; the loss is NaN once w[0] > 2
        loss = jnp.sum((w - batch) ** 2)
        return jnp.where(w[0] > 2.0, jnp.nan, loss)

    result = po.lr_range_test(
        loss_fn,
        jnp.zeros(2),
        jnp.full(2, 10.0),
        counting_sgd,
        min_lr=1e-3,
        max_lr=0.1,
        num_steps=30,
        diverge_threshold=math.inf,
    )
    jax.effects_barrier()
    stop = result.num_recorded - 1
    assert result.diverged and 0 < stop < 29
    assert np.isnan(result.losses[stop]) and np.all(np.isfinite(result.losses[:stop]))
    assert np.all(np.isnan(result.losses[stop + 1 :]))
    assert len(calls) == result.num_recorded  # no update after the stop
    finite_lrs = result.learning_rates[:stop]
    for name in ("suggestion", "valley", "minimum"):
        value = getattr(result, name)
        assert math.isfinite(value) and value <= finite_lrs[-1], name


def test_nan_at_the_first_step_gives_nan_suggestions():
    result = po.lr_range_test(
        lambda w, b: jnp.sum(w) * jnp.nan, jnp.ones(2), None, optax.sgd, num_steps=5
    )
    assert result.num_recorded == 1 and result.diverged
    assert np.all(np.isnan(result.losses))
    assert math.isnan(result.suggestion) and math.isnan(result.valley)
    assert math.isnan(result.minimum)
    with pytest.raises(ValueError, match="result"):
        po.plot_lr_range_test(result)


def test_stacked_batches_are_used_in_order():
    scales = np.linspace(1.0, 2.0, 12).astype(np.float32)
    result = po.lr_range_test(
        lambda w, b: b["c"] * jnp.sum(w**2),
        jnp.ones(3),
        {"c": jnp.asarray(scales)},
        optax.sgd,
        min_lr=1e-9,
        max_lr=1e-8,
        num_steps=12,
        stacked=True,
    )
    assert not result.diverged and result.num_recorded == 12
    np.testing.assert_allclose(result.losses, 3 * scales, rtol=1e-6)


def test_no_divergence_records_every_step():
    result = po.lr_range_test(
        lambda w, b: jnp.sum((w - b) ** 2),
        jnp.zeros(2),
        jnp.ones(2),
        optax.sgd,
        min_lr=1e-4,
        max_lr=0.5,
        num_steps=20,
    )
    assert not result.diverged and result.num_recorded == 20
    assert np.all(np.isfinite(result.losses)) and np.all(np.diff(result.losses) <= 0)


def test_params_are_untouched_and_not_donated():
    params = {"w": jnp.arange(3.0), "b": jnp.ones(())}
    before = jax.tree.map(np.array, params)
    po.lr_range_test(
        lambda p, b: jnp.sum((p["w"] * b + p["b"]) ** 2),
        params,
        jnp.ones(3),
        optax.sgd,
        min_lr=1e-3,
        max_lr=1.0,
        num_steps=10,
    )
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(params))
    chex.assert_trees_all_equal(jax.tree.map(np.array, params), before)


def test_has_aux_and_bfloat16_params():
    def loss_fn(w, batch):
        loss = jnp.mean((w.astype(jnp.float32) - batch) ** 2)
        return loss, {"note": loss * 2}

    result = po.lr_range_test(
        loss_fn,
        jnp.zeros(4, jnp.bfloat16),
        jnp.ones(4),
        lambda lr: optax.sgd(lr, 0.9),
        min_lr=1e-3,
        max_lr=100.0,
        num_steps=30,
        has_aux=True,
    )
    assert result.losses.dtype == np.float32
    assert result.losses[0] == pytest.approx(1.0)
    assert result.diverged


def test_one_compilation_for_new_ranges_and_batches():
    chex.clear_trace_counter()

    @chex.assert_max_traces(n=1)
    def loss_fn(w, batch):
        return jnp.sum((w - batch) ** 2)

    for low, high, smoothing in ((1e-4, 1.0, 0.9), (1e-3, 5.0, 0.5)):
        result = po.lr_range_test(
            loss_fn,
            jnp.zeros(2),
            jnp.full(2, high),
            optax.sgd,
            min_lr=low,
            max_lr=high,
            num_steps=16,
            smoothing=smoothing,
        )
        assert result.learning_rates[0] == pytest.approx(low)


def _model_and_loss(seed):
    """A small MLP 'model' rebuilt from its seed: equal weights, new function objects."""
    rng = np.random.default_rng(seed)
    weights = jnp.asarray(rng.normal(size=(D, 8)), jnp.float32)  # closed over, not trained

    def loss_fn(params, batch):
        hidden = jnp.tanh(batch["x"] @ weights)
        return jnp.mean((hidden @ params["w"] - batch["y"]) ** 2)

    return loss_fn


def test_a_second_call_with_an_equal_model_and_factory_compiles_nothing():
    x = design(8, [2.0, 1.0, 0.5, 0.25])
    batch = {"x": jnp.asarray(x, jnp.float32), "y": jnp.asarray(x[:, 0], jnp.float32)}
    params = {"w": jnp.zeros(8, jnp.float32)}
    kwargs = dict(min_lr=1e-3, max_lr=3.0, num_steps=24)

    def run(seed, momentum=0.9):
        factory = lambda lr: optax.inject_hyperparams(optax.sgd)(
            learning_rate=lr, momentum=momentum
        )
        return po.lr_range_test(_model_and_loss(seed), params, batch, factory, **kwargs)

    with BackendCompiles() as first:
        a = run(seed=21)
    with BackendCompiles() as second:
        b = run(seed=21)  # new loss_fn and factory objects, equal programs
    with BackendCompiles() as other_model:
        c = run(seed=22)  # other closed-over weights: another program
    with BackendCompiles() as other_optimizer:
        run(seed=21, momentum=0.5)
    assert first.count >= 1
    assert second.count == 0
    assert other_model.count >= 1 and other_optimizer.count >= 1
    np.testing.assert_array_equal(a.losses, b.losses)
    assert not np.allclose(a.losses[:5], c.losses[:5])


def test_the_sweep_calls_init_once_on_the_params():
    shapes = []

    def factory(lr):
        sgd = optax.sgd(lr)
        return optax.GradientTransformation(
            lambda p: shapes.append(p.shape) or sgd.init(p), sgd.update
        )

    po.lr_range_test(
        lambda w, b: jnp.sum((w - b) ** 2), jnp.zeros(2), jnp.ones(2), factory, num_steps=8
    )
    # The one real init; the others (reading the hyperparameters) see a 1-element probe.
    assert shapes.count((2,)) == 1 and set(shapes) <= {(2,), (1,)}


def test_flax_model_loss_closing_over_batch_stats():
    flax_linen = pytest.importorskip("flax.linen", reason="flax is a training extra")

    class Tiny(flax_linen.Module):
        @flax_linen.compact
        def __call__(self, x, train: bool):
            x = flax_linen.Dense(8)(x)
            x = flax_linen.BatchNorm(use_running_average=not train)(x)
            return flax_linen.Dense(3)(flax_linen.relu(x))

    model = Tiny()
    images = jax.random.normal(jax.random.key(0), (16, 5))
    labels = jnp.arange(16) % 3
    variables = model.init(jax.random.key(1), images, train=False)
    batch_stats = variables["batch_stats"]

    def loss_fn(params, batch):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
            batch["x"],
            train=True,
            mutable=["batch_stats"],
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
        return loss, updates

    result = po.lr_range_test(
        loss_fn,
        variables["params"],
        {"x": images, "y": labels},
        lambda lr: optax.sgd(lr, momentum=0.9),
        min_lr=1e-4,
        max_lr=100.0,
        num_steps=40,
        has_aux=True,
    )
    assert result.losses[0] == pytest.approx(
        float(loss_fn(variables["params"], {"x": images, "y": labels})[0]), rel=1e-5
    )
    assert np.all(np.isfinite(result.losses[: result.num_recorded - 1]))
    assert 1e-4 <= result.suggestion <= 100.0


# ---------------------------------------------------------------------------------------
# Suggestions on prescribed curves.


def test_suggestion_is_the_steepest_point_against_log_lr():
    # 41 lrs from 1e-5 to 1e-1, 10 per decade: lr = 1e-3 at t = 20, where the curve
    # 2 - tanh((t - 20) / 4) falls fastest.
    t = np.arange(41)
    result = prescribed(2 - np.tanh((t - 20) / 4), min_lr=1e-5, max_lr=1e-1)
    assert not result.diverged
    assert result.suggestion == pytest.approx(1e-3, rel=1e-5)


def test_minimum_and_valley_hand_checked():
    # (t - 30)^2 + 1 over 41 steps: minimum at t = 30. With fastai's trimming (4 first,
    # 5 last) the window is t = 4..35; its longest decreasing run is t = 4..30 (27 points)
    # ending at window index 26, "starting" at 26 - 27 = -1; sections = 27 / 3 = 9, so the
    # valley is window index -1 + 9 + 4 = 12, i.e. t = 16.
    t = np.arange(41)
    result = prescribed((t - 30.0) ** 2 + 1, min_lr=1e-5, max_lr=1e-1, diverge_threshold=1e9)
    lrs = result.learning_rates
    assert result.minimum == pytest.approx(lrs[30] / 10, rel=1e-6)
    assert result.valley == pytest.approx(lrs[16], rel=1e-6)
    assert not result.diverged


def test_suggestions_match_fastai_on_random_curves():
    rng = np.random.default_rng(7)
    for trial in range(6):
        curve = 5.0 + np.cumsum(rng.normal(-0.05, 0.3, size=50))
        curve = np.abs(curve) + 0.5
        result = prescribed(curve, min_lr=1e-6, max_lr=1.0, diverge_threshold=1e9)
        lrs = result.learning_rates.astype(np.float64)
        window = slice(5, 45)  # 50 // 10 first and 5 last points left out
        lw, cw = lrs[window], curve[window].astype(np.float32).astype(np.float64)
        assert result.valley == pytest.approx(fastai_valley(lw, cw), rel=1e-6), trial
        steepest = lw[np.argmin(np.gradient(cw, np.log(lw)))]
        assert result.suggestion == pytest.approx(steepest, rel=1e-6), trial
        assert result.minimum == pytest.approx(lw[np.argmin(cw)] / 10, rel=1e-6), trial


def test_suggestions_use_only_the_points_before_the_stop():
    # Decreasing, then a jump past 4 x best at t = 25: entries after 25 are NaN, and the
    # suggestions come from t = 4..20 (40 // 10 first and 5 last finite points left out).
    curve = np.concatenate([np.linspace(10.0, 1.0, 25), [50.0], np.full(14, 0.01)])
    result = prescribed(curve, min_lr=1e-4, max_lr=1.0)
    assert result.diverged and result.num_recorded == 26
    assert np.all(np.isnan(result.losses[26:]))
    lrs = result.learning_rates
    assert result.minimum == pytest.approx(lrs[20] / 10, rel=1e-6)
    assert result.valley == pytest.approx(fastai_valley(lrs[4:21], curve[4:21]), rel=1e-6)


def test_smoothing_is_the_bias_corrected_moving_average():
    curve = np.array([4.0, 2.0, 3.0, 1.0, 1.5, 0.5, 0.75, 0.25])
    result = prescribed(curve, smoothing=0.5, diverge_threshold=1e9)
    average, expected = 0.0, []
    for i, loss in enumerate(curve):
        average = 0.5 * average + 0.5 * loss
        expected.append(average / (1 - 0.5 ** (i + 1)))
    np.testing.assert_allclose(result.smoothed_losses, expected, rtol=1e-6)
    assert result.smoothed_losses[1] == pytest.approx((0.5 * 4 + 2) / 1.5)  # hand-checked


# ---------------------------------------------------------------------------------------
# Plotting.


def test_plot_saves_a_png_and_draws_into_given_axes(tmp_path):
    from matplotlib.figure import Figure

    curve = np.concatenate([np.linspace(3.0, 1.0, 20), [100.0], np.ones(9)])
    result = prescribed(curve, min_lr=1e-4, max_lr=1.0, smoothing=0.5)
    assert result.diverged and result.smoothed_losses[20] < 60.0
    path = tmp_path / "lr_range_test.png"
    ax = po.plot_lr_range_test(result, path=str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ax.get_xscale() == "log"
    labels = [line.get_label() for line in ax.get_lines()]
    assert any(label.startswith("suggestion") for label in labels)
    assert ax.get_ylim()[1] < 100.0  # scaled to the smoothed curve, not the raw spike

    own = Figure().add_subplot()
    assert po.plot_lr_range_test(result, ax=own, show_raw=False) is own
    assert len(own.get_lines()) == 4  # smoothed curve and three markers


def test_plot_rejects_other_objects():
    with pytest.raises(ValueError, match="result"):
        po.plot_lr_range_test({"losses": [1.0]})


# ---------------------------------------------------------------------------------------
# Bad arguments.


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        (dict(loss_fn=None), "loss_fn"),
        (dict(optimizer_factory=0.1), "optimizer_factory"),
        (dict(min_lr=0.0), "min_lr"),
        (dict(min_lr=-1.0), "min_lr"),
        (dict(min_lr=1.0, max_lr=0.5), "max_lr"),
        (dict(max_lr=math.inf), "max_lr"),
        (dict(num_steps=1), "num_steps"),
        (dict(num_steps=10.0), "num_steps"),
        (dict(mode="log"), "mode"),
        (dict(smoothing=1.0), "smoothing"),
        (dict(smoothing=-0.1), "smoothing"),
        (dict(diverge_threshold=0.5), "diverge_threshold"),
        (dict(diverge_threshold=math.nan), "diverge_threshold"),
        (dict(skip_start=-1), "skip_start"),
        (dict(skip_end=1.5), "skip_end"),
        (dict(stacked=True, num_steps=7), "batch"),
    ],
)
def test_rejects_bad_arguments(kwargs, argument):
    arguments = dict(
        loss_fn=lambda w, b: jnp.sum((w - b) ** 2),
        params=jnp.zeros(2),
        batch=jnp.ones((5, 2)),
        optimizer_factory=optax.sgd,
    )
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=argument):
        po.lr_range_test(**arguments)
