"""Tests of po.tuning_free_nesterov against an independent float64 NumPy reference.

The reference runs the method on the iterate w: Algorithm 5 with the variant's three
changes (the momentum-corrected step eta = (1 - alpha) tau, the confidence gamma, and
the online estimate of f*); the transform keeps the look-ahead point
p_t = w_t - alpha v_{t-1} in the params.
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
from tests._fast import slow_after
from tests.test_adaptive_nesterov import PROBLEMS, VALUE_AND_GRAD, _assert_close, _batch, _params


def reference(
    problem: ref.Problem, steps: int, *, momentum, max_learning_rate, confidence, f_min, adapt_f_min
):
    """Float64 reference: the iterates w_t, velocities, etas, f* estimates and clip flags."""
    w = {k: np.asarray(v, np.float64) for k, v in problem.params.items()}
    v = {k: np.zeros_like(x) for k, x in w.items()}
    f_hat = f_min
    ws, vs, etas, f_hats, clipped = [dict(w)], [dict(v)], [], [], []
    for t in range(steps):
        look = {k: w[k] - momentum * v[k] for k in w}
        loss, grad = problem.oracle(look, t)
        sq = sum(float(np.sum(g**2)) for g in grad.values())
        ceiling = max_learning_rate(t) if callable(max_learning_rate) else max_learning_rate
        if adapt_f_min and loss < f_hat:
            f_hat = f_min + (loss - f_min) / 2
        polyak = confidence * max(loss - f_hat, 0.0) / sq
        tau = min(ceiling, polyak)
        clipped.append(polyak > ceiling)
        if adapt_f_min:
            f_hat = max(f_hat, loss - ceiling * sq / confidence)
        eta = (1 - momentum) * tau
        v = {k: momentum * v[k] + eta * grad[k] for k in w}
        w = {k: w[k] - v[k] for k in w}
        ws.append(dict(w))
        vs.append(dict(v))
        etas.append(eta)
        f_hats.append(f_hat)
    return ws, vs, np.asarray(etas), np.asarray(f_hats), np.asarray(clipped)


# `make test-fast`: least_squares at confidence 1, with and without adapting f_min
@pytest.mark.parametrize("name", slow_after(sorted(PROBLEMS)))
@pytest.mark.parametrize("adapt_f_min", [False, True])
@pytest.mark.parametrize("confidence", slow_after([1.0, 2.0]))
def test_matches_float64_reference(name: str, adapt_f_min: bool, confidence: float):
    rng = np.random.default_rng(int(10 * confidence) + 7 * adapt_f_min + len(name))
    clipped, raised, halved = [], [], []
    with jax.enable_x64(True):
        for _ in range(4):
            steps = 15
            problem = PROBLEMS[name][0](seed=int(rng.integers(1 << 30)), num_steps=steps)
            hyper = {
                "momentum": float(rng.uniform(0.0, 0.95)),
                "confidence": confidence,
                "adapt_f_min": adapt_f_min,
                "f_min": float(-rng.uniform(0.0, 0.05)),
                "max_learning_rate": float(10 ** rng.uniform(-1.5, 3.0)),
            }
            if rng.uniform() < 0.5:  # a schedule of the count
                peak = hyper["max_learning_rate"]
                hyper["max_learning_rate"] = lambda count, peak=peak: peak * 0.9**count
            ws, vs, etas, f_hats, clip = reference(problem, steps, **hyper)
            opt = po.tuning_free_nesterov(**hyper)
            params = _params(problem, jnp.float64)
            state = opt.init(params)
            update = jax.jit(opt.update)  # one compile, not one dispatch per op and step
            alpha = hyper["momentum"]
            for t in range(steps):
                velocity = optax.tree.get(state, "velocity")
                w = jax.tree.map(
                    lambda p, v, a=alpha: np.asarray(p) + a * np.asarray(v), params, velocity
                )
                _assert_close(w, ws[t], 1e-8)
                loss, grads = VALUE_AND_GRAD[name](params, _batch(problem, t))
                updates, state = update(grads, state, params, value=loss)
                params = optax.apply_updates(params, updates)
                _assert_close(optax.tree.get(state, "learning_rate"), etas[t], 1e-8)
                _assert_close(optax.tree.get(state, "velocity"), vs[t + 1], 1e-8)
                _assert_close(optax.tree.get(state, "f_min"), f_hats[t], 1e-8)
            clipped.extend(clip)
            before = np.concatenate([[hyper["f_min"]], f_hats[:-1]])
            raised.extend(f_hats > before)
            halved.extend(f_hats < before)
    # The runs exercised both the Polyak step and the ceiling, and, when adapting, both
    # directions of the estimate of f*.
    assert any(clipped) and not all(clipped)
    if adapt_f_min:
        assert any(raised) and any(halved)
    else:
        assert not any(raised) and not any(halved)


def test_momentum_correction_makes_the_effective_step_the_polyak_step():
    # A constant gradient g and loss L: the velocity tends to tau * g, tau = L / ||g||^2.
    opt = po.tuning_free_nesterov(
        momentum=0.9, max_learning_rate=100.0, confidence=1.0, adapt_f_min=False
    )
    params = jnp.zeros(2)
    state = opt.init(params)
    g = jnp.array([3.0, 4.0])
    for _ in range(300):
        updates, state = opt.update(g, state, params, value=5.0)
    chex.assert_trees_all_close(optax.tree.get(state, "velocity"), 0.2 * g, rtol=1e-5)
    chex.assert_trees_all_close(updates, -0.2 * g, rtol=1e-5)  # eta g + alpha v = tau g


def test_f_min_estimate_rises_when_the_ceiling_clips_and_halves_above_the_loss():
    opt = po.scale_by_tuning_free_nesterov(
        momentum=0.0, max_learning_rate=0.1, confidence=2.0, adapt_f_min=True
    )
    params = jnp.zeros(1)
    state = opt.init(params)
    # Polyak step 2 * 1 / 1 = 2 > 0.1: clipped; f_hat = 1 - 0.1 * 1 / 2.
    _, state = opt.update(jnp.array([1.0]), state, params, value=1.0)
    assert float(state.learning_rate) == pytest.approx(0.1)
    assert float(state.f_min) == pytest.approx(0.95)
    # The loss 0.5 is below the estimate: halved to 0.25, tau = 2 * 0.25 / 100 unclipped.
    _, state = opt.update(jnp.array([10.0]), state, params, value=0.5)
    assert float(state.f_min) == pytest.approx(0.25)
    assert float(state.learning_rate) == pytest.approx(0.005)


def test_non_finite_step_is_skipped_and_state_kept():
    opt = po.tuning_free_nesterov()
    params = {"a": jnp.ones(3), "b": jnp.ones(2)}
    state = opt.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, state = opt.update(grads, state, params, value=2.0)
    bad = {"a": jnp.array([1.0, jnp.nan, 1.0]), "b": jnp.ones(2)}
    updates, new_state = opt.update(bad, state, params, value=2.0)
    chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, params))
    chex.assert_trees_all_equal(new_state, state)


def test_jit_bf16_and_zero_gradient():
    opt = po.tuning_free_nesterov()
    params = {"w": jnp.ones(4, jnp.bfloat16)}
    state = opt.init(params)
    update = jax.jit(opt.update)
    updates, state = update({"w": jnp.zeros(4, jnp.bfloat16)}, state, params, value=1.0)
    assert updates["w"].dtype == jnp.bfloat16
    chex.assert_tree_all_finite((updates, state))
    assert float(optax.tree.get(state, "learning_rate")) == pytest.approx(0.1)  # the ceiling


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"confidence": 0.0}, "confidence"),
        ({"max_learning_rate": 0.0}, "max_learning_rate"),
        ({"f_min": float("nan")}, "f_min"),
    ],
)
def test_bad_hyperparameters_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        po.tuning_free_nesterov(**kwargs)


def test_missing_value_is_an_error():
    opt = po.tuning_free_nesterov()
    state = opt.init(jnp.zeros(2))
    with pytest.raises(ValueError, match="value"):
        opt.update(jnp.ones(2), state, jnp.zeros(2))
