"""Tests of po.schedule_free_polyak_adam and po.scale_by_adam_polyak_step.

The float64 reference (``tests/test_schedule_free_polyak.py``'s, with ``b2`` set) runs
schedule-free's three sequences (z, x and the interpolation y where the gradient is
taken) with the Polyak step in Adam's metric, in NumPy, independently of optax.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import polyak_optax as po
from tests._fast import slow_after
from tests.test_adaptive_nesterov import PROBLEMS
from tests.test_schedule_free_polyak import check_against_reference, regression_trace


@pytest.mark.parametrize("name", slow_after(sorted(PROBLEMS)))  # `make test-fast`: least_squares
def test_matches_float64_reference(name: str):
    def sample(rng):
        return {
            "b1": float(rng.uniform(0.05, 0.95)),
            "b2": float(rng.choice([0.0, 0.9, 0.999])),
            "eps": float(rng.choice([1e-8, 1e-3])),
            "confidence": float(rng.choice([1.0, 2.0])),
            "f_min": float(-rng.uniform(0.0, 0.05)),
            "max_learning_rate": float(10 ** rng.uniform(-2.5, 0.5)),
        }

    check_against_reference(name, len(name) + 1, po.schedule_free_polyak_adam, sample)


def test_is_optax_schedule_free_adamw_when_the_ceiling_always_binds():
    """With a confidence so large that tau is the ceiling at every step, the optimizer is
    ``optax.contrib.schedule_free_adamw`` at that learning rate (no weight decay)."""

    def run(opt):
        return regression_trace(opt, steps=30, seed=1)

    expected, _ = run(optax.contrib.schedule_free_adamw(0.5))
    ours, rates = run(po.schedule_free_polyak_adam(max_learning_rate=0.5, confidence=1e30))
    chex.assert_trees_all_close(ours, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(rates, 0.5)
    polyak, rates = run(po.schedule_free_polyak_adam(max_learning_rate=0.5, confidence=2.0))
    assert np.any(rates < 0.5)  # with gamma = 2 the Polyak step binds on some steps ...
    assert not np.allclose(polyak[-1]["w"], expected[-1]["w"])  # ... and changes the run


def test_step_is_capped_and_skips_non_finite_steps():
    opt = po.scale_by_adam_polyak_step(max_learning_rate=0.1, eps=0.0)
    params = {"a": jnp.ones(3), "b": jnp.ones(2)}
    state = opt.init(params)
    grads = jax.tree.map(lambda p: 2 * jnp.ones_like(p), params)
    # First step: D = |g| = 2, D^-1 g = 1, g^T D^-1 g = 10, Polyak 2 * 1 / 10 > 0.1.
    updates, state = opt.update(grads, state, params, value=1.0)
    expected = jax.tree.map(lambda g: 0.1 * jnp.ones_like(g), grads)
    chex.assert_trees_all_close(updates, expected, rtol=1e-5)  # float32 bias correction
    bad = {"a": jnp.array([1.0, jnp.inf, 1.0]), "b": jnp.ones(2)}
    updates, new_state = opt.update(bad, state, params, value=1.0)
    chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, params))
    chex.assert_trees_all_equal(new_state, state)
    updates, new_state = opt.update(grads, state, params, value=float("nan"))
    chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, params))
    chex.assert_trees_all_equal(new_state, state)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"b1": 1.0}, "b1"),
        ({"b2": 1.0}, "b2"),
        ({"b2": -0.1}, "b2"),
        ({"eps": -1.0}, "eps"),
        ({"eps": float("nan")}, "eps"),
        ({"confidence": 0.0}, "confidence"),
        ({"max_learning_rate": -1.0}, "max_learning_rate"),
        ({"f_min": float("nan")}, "f_min"),
        ({"weight_lr_power": -1.0}, "weight_lr_power"),
        ({"anneal_follow": 0.0}, "anneal_follow"),
    ],
)
def test_bad_hyperparameters_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        po.schedule_free_polyak_adam(**kwargs)


def test_missing_value_is_an_error():
    opt = po.schedule_free_polyak_adam()
    state = opt.init(jnp.zeros(2))
    with pytest.raises(ValueError, match="value"):
        opt.update(jnp.ones(2), state, jnp.zeros(2))
