"""Tests of po.schedule_free_polyak and po.scale_by_polyak_step against float64 NumPy.

The reference runs the three sequences of schedule-free SGD (z, x and the interpolation
y where the gradient is taken) with the capped Polyak step, independently of optax.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import polyak_optax as po
from tests import _algorithm5_reference as ref
from tests._fast import slow_after, slow_unless
from tests.test_adaptive_nesterov import PROBLEMS, VALUE_AND_GRAD, _assert_close, _batch, _params


def reference(
    problem: ref.Problem,
    steps: int,
    *,
    b1,
    max_learning_rate,
    confidence,
    f_min,
    anneal_follow=0.5,
    b2=None,
    eps=0.0,
):
    """Float64 reference: y_t (the params), x_t (evaluation), the steps tau, clip flags,
    and the steps whose averaging weight the decay of the ceiling raised.

    ``b2=None``: plain gradient steps (``schedule_free_polyak``); a number: steps and
    the Polyak ratio in Adam's metric D = sqrt(v / (1 - b2^t)) + eps
    (``schedule_free_polyak_adam``)."""
    z = {k: np.asarray(v, np.float64) for k, v in problem.params.items()}
    x, y = dict(z), dict(z)
    v = {k: np.zeros_like(p) for k, p in z.items()}
    ys, xs, taus, clipped, followed = [dict(y)], [dict(x)], [], [], []
    weight_sum, max_lr = 0.0, 0.0
    for t in range(steps):
        loss, grad = problem.oracle(y, t)
        d = {k: np.ones_like(g) for k, g in grad.items()}
        if b2 is not None:
            v = {k: b2 * v[k] + (1 - b2) * grad[k] ** 2 for k in v}
            d = {k: np.sqrt(v[k] / (1 - b2 ** (t + 1))) + eps for k in v}
        sq = sum(float(np.sum(grad[k] ** 2 / d[k])) for k in grad)
        ceiling = max_learning_rate(t) if callable(max_learning_rate) else max_learning_rate
        polyak = confidence * max(loss - f_min, 0.0) / sq
        tau = min(ceiling, polyak)
        z = {k: z[k] - tau * grad[k] / d[k] for k in z}
        max_lr = max(max_lr, ceiling)
        weight_sum += max_lr**2
        c = max_lr**2 / weight_sum
        follow = (1 - ceiling / max_lr) ** anneal_follow if anneal_follow else 0.0
        followed.append(follow > c)
        c = max(c, follow)
        x = {k: (1 - c) * x[k] + c * z[k] for k in x}
        y = {k: b1 * x[k] + (1 - b1) * z[k] for k in x}
        ys.append(dict(y))
        xs.append(dict(x))
        taus.append(tau)
        clipped.append(polyak > ceiling)
    return ys, xs, np.asarray(taus), np.asarray(clipped), np.asarray(followed)


def check_against_reference(name: str, seed: int, optimizer, sample) -> None:
    """Nine random trials of ``optimizer(**hyper)`` against :func:`reference` in float64,
    ``hyper = sample(rng)`` under a constant ceiling, a warm-up and a warm-up then decay;
    asserts that the ceiling both bound and did not bind, and that the decay raised some
    averaging weights and not all."""
    rng = np.random.default_rng(seed)
    clipped, followed = [], []
    with jax.enable_x64(True):
        for trial in range(9):
            steps = 15
            problem = PROBLEMS[name][0](seed=int(rng.integers(1 << 30)), num_steps=steps)
            hyper = sample(rng)
            peak = hyper["max_learning_rate"]
            if trial % 3 == 1:  # a warm-up: the averaging weights grow
                hyper["max_learning_rate"] = lambda count, peak=peak: (
                    peak * (1 - 0.8 ** (count + 1))
                )
            if trial % 3 == 2:  # a warm-up, then a decay that the average follows
                hyper["max_learning_rate"] = lambda count, peak=peak: (
                    peak * jnp.minimum(count + 1, 3) / 3 * 0.7 ** jnp.maximum(count - 5, 0)
                )
                hyper["anneal_follow"] = float(rng.choice([0.5, 1.0, 2.0]))
            ys, xs, taus, clip, follow = reference(problem, steps, **hyper)
            opt = optimizer(**hyper)
            params = _params(problem, jnp.float64)
            state = opt.init(params)
            update = jax.jit(opt.update)
            for t in range(steps):
                _assert_close(params, ys[t], 1e-8)
                _assert_close(optax.contrib.schedule_free_eval_params(state, params), xs[t], 1e-8)
                loss, grads = VALUE_AND_GRAD[name](params, _batch(problem, t))
                updates, state = update(grads, state, params, value=loss)
                params = optax.apply_updates(params, updates)
                _assert_close(optax.tree.get(state, "learning_rate"), taus[t], 1e-8)
            _assert_close(params, ys[steps], 1e-8)
            clipped.extend(clip)
            followed.extend(follow)
    assert any(clipped) and not all(clipped)  # both the Polyak step and the ceiling ran
    assert any(followed) and not all(followed)  # the decay raised some averaging weights


@pytest.mark.parametrize("name", slow_after(sorted(PROBLEMS)))  # `make test-fast`: least_squares
def test_matches_float64_reference(name: str):
    def sample(rng):
        return {
            "b1": float(rng.uniform(0.05, 0.95)),
            "confidence": float(rng.choice([1.0, 2.0])),
            "f_min": float(-rng.uniform(0.0, 0.05)),
            "max_learning_rate": float(10 ** rng.uniform(-1.5, 2.0)),
        }

    check_against_reference(name, len(name), po.schedule_free_polyak, sample)


def regression_trace(opt, steps: int, seed: int):
    """``opt`` on minibatches of a noisy linear regression (64 examples, 8 per batch):
    the averaged parameters after each step, and each step's ``learning_rate`` (NaN for
    a state without one)."""
    key_x, key_t = jax.random.split(jax.random.key(seed))
    xs = jax.random.normal(key_x, (64, 5))
    targets = xs @ jnp.arange(5.0) + 0.1 * jax.random.normal(key_t, (64,))

    def loss_fn(params, t):
        batch = slice(8 * (t % 8), 8 * (t % 8) + 8)
        return jnp.mean((xs[batch] @ params["w"] + params["b"] - targets[batch]) ** 2)

    params = {"w": jnp.zeros(5), "b": jnp.zeros(())}
    state = opt.init(params)
    trace, rates = [], []
    for t in range(steps):
        loss, grads = jax.value_and_grad(loss_fn)(params, t)
        updates, state = opt.update(grads, state, params, value=loss)
        params = optax.apply_updates(params, updates)
        trace.append(optax.contrib.schedule_free_eval_params(state, params))
        rates.append(float(optax.tree.get(state, "learning_rate", default=jnp.nan)))
    return trace, np.asarray(rates)


@pytest.mark.parametrize("schedule", slow_unless(["constant", "warm-up", "decay"], ["decay"]))
def test_is_optax_schedule_free_bit_for_bit_unless_the_ceiling_decays(schedule: str):
    ceiling = {
        "constant": 0.5,
        "warm-up": lambda count: 0.5 * jnp.minimum(count + 1, 4) / 4,
        "decay": lambda count: 0.5 * 0.8**count,
    }[schedule]

    def run(opt):
        return regression_trace(opt, steps=20, seed=0)[0]

    weights = ceiling if not callable(ceiling) else (lambda count: ceiling(count - 1))
    optax_sf = optax.contrib.schedule_free(
        optax.chain(po.scale_by_polyak_step(ceiling), optax.scale(-1.0)), weights
    )
    expected = run(optax_sf)
    chex.assert_trees_all_equal(
        run(po.schedule_free_polyak(max_learning_rate=ceiling, anneal_follow=None)), expected
    )
    following = run(po.schedule_free_polyak(max_learning_rate=ceiling))
    if schedule == "decay":
        assert not jnp.array_equal(following[-1]["w"], expected[-1]["w"])
    else:
        chex.assert_trees_all_equal(following, expected)


def test_polyak_step_is_capped_and_skips_non_finite_steps():
    opt = po.scale_by_polyak_step(max_learning_rate=0.1, confidence=2.0)
    params = {"a": jnp.ones(3), "b": jnp.ones(2)}
    state = opt.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, state = opt.update(grads, state, params, value=2.0)  # 2 * 2 / 5 > 0.1
    chex.assert_trees_all_close(updates, jax.tree.map(lambda g: 0.1 * g, grads))
    bad = {"a": jnp.array([1.0, jnp.nan, 1.0]), "b": jnp.ones(2)}
    updates, new_state = opt.update(bad, state, params, value=2.0)
    chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, params))
    chex.assert_trees_all_equal(new_state, state)


@pytest.mark.parametrize(
    ("make", "ceiling"), [(po.schedule_free_polyak, 1.0), (po.schedule_free_polyak_adam, 1e-2)]
)
def test_jit_bf16_zero_gradient_and_averaged_parameters(make, ceiling):
    opt = make()
    params = {"w": jnp.ones(4, jnp.bfloat16)}
    state = opt.init(params)
    updates, state = jax.jit(opt.update)(
        {"w": jnp.zeros(4, jnp.bfloat16)}, state, params, value=1.0
    )
    assert updates["w"].dtype == jnp.bfloat16
    chex.assert_tree_all_finite((updates, state))
    assert float(optax.tree.get(state, "learning_rate")) == pytest.approx(ceiling)
    x = optax.contrib.schedule_free_eval_params(state, params)
    chex.assert_trees_all_close(x, params)  # a zero step leaves every sequence in place


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"b1": 0.0}, "b1"),
        ({"b1": 1.0}, "b1"),
        ({"confidence": -1.0}, "confidence"),
        ({"max_learning_rate": 0.0}, "max_learning_rate"),
        ({"f_min": float("inf")}, "f_min"),
        ({"weight_lr_power": -1.0}, "weight_lr_power"),
        ({"anneal_follow": 0.0}, "anneal_follow"),
        ({"anneal_follow": float("nan")}, "anneal_follow"),
    ],
)
def test_bad_hyperparameters_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        po.schedule_free_polyak(**kwargs)


def test_missing_value_is_an_error():
    opt = po.schedule_free_polyak()
    state = opt.init(jnp.zeros(2))
    with pytest.raises(ValueError, match="value"):
        opt.update(jnp.ones(2), state, jnp.zeros(2))
