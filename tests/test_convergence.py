"""Convergence matrix of adaptive Nesterov, in the style of optax's common optimizer tests.

Each configuration runs a jitted ``lax.fori_loop`` on a parabola, the Rosenbrock
function and a linear softmax classifier of separable data (f* = 0 for all three).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import polyak_optax as po

NO_BOUNDS = {
    "min_learning_rate": None,
    "max_learning_rate": None,
    "min_grad_sq_norm": None,
    "max_grad_sq_norm": None,
}

# name -> a factory of the optimizer (built inside the test, so a failure names it).
OPTIMIZERS: dict[str, Callable[[], optax.GradientTransformationExtraArgs]] = {
    "thesis_defaults": po.adaptive_nesterov,
    "polyak_no_momentum_no_bounds": lambda: po.adaptive_nesterov(momentum=0.0, **NO_BOUNDS),
    "momentum_0.5_schedules": lambda: po.adaptive_nesterov(
        momentum=0.5,
        confidence=optax.linear_schedule(1.0, 0.5, 500),
        max_learning_rate=optax.linear_schedule(0.1, 2.0, 500),
        min_learning_rate=None,
    ),
    "clipped_and_injected_momentum_schedule": lambda: optax.chain(
        optax.clip_by_global_norm(100.0),
        optax.inject_hyperparams(po.adaptive_nesterov)(
            momentum=optax.linear_schedule(0.5, 0.9, 300), max_learning_rate=0.1
        ),
    ),
}


def _parabola() -> tuple[Any, Callable, Callable]:
    """optax's parabola: a quadratic with its minimum 0 at (1, -1, 1)."""
    initial = jnp.array([-1.0, 10.0, 1.0])
    final = jnp.array([1.0, -1.0, 1.0])

    def objective(params: jax.Array) -> jax.Array:
        return jnp.sum((params - final) ** 2)

    def check(params: jax.Array) -> None:
        chex.assert_trees_all_close(params, final, atol=1e-3)
        assert objective(params) < 1e-6

    return initial, objective, check


def _rosenbrock() -> tuple[Any, Callable, Callable]:
    """optax's Rosenbrock function: a curved valley with its minimum 0 at (1, 1)."""
    initial = jnp.array([0.0, 0.0])
    final = jnp.array([1.0, 1.0])

    def objective(params: jax.Array) -> jax.Array:
        return (1.0 - params[0]) ** 2 + 100.0 * (params[1] - params[0] ** 2) ** 2

    def check(params: jax.Array) -> None:
        chex.assert_trees_all_close(params, final, atol=2e-3)
        assert objective(params) < 1e-6

    return initial, objective, check


def _linear_classifier() -> tuple[Any, Callable, Callable]:
    """Softmax regression on three separable clusters: the loss goes to 0 (f* = 0)."""
    rng = np.random.default_rng(0)
    centers = np.array([[3.0, 0.0], [-1.5, 2.6], [-1.5, -2.6]])
    labels = np.repeat(np.arange(3), 20)
    x = jnp.asarray(centers[labels] + rng.normal(scale=0.7, size=(60, 2)), jnp.float32)
    labels = jnp.asarray(labels)
    initial = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}

    def objective(params: dict[str, jax.Array]) -> jax.Array:
        logits = x @ params["w"] + params["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def check(params: dict[str, jax.Array]) -> None:
        chex.assert_tree_all_finite(params)
        assert objective(params) < 1e-3
        predictions = jnp.argmax(x @ params["w"] + params["b"], axis=-1)
        assert bool(jnp.all(predictions == labels))

    return initial, objective, check


TARGETS = {"parabola": _parabola, "rosenbrock": _rosenbrock, "classifier": _linear_classifier}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("opt_name", OPTIMIZERS)
def test_optimization(opt_name: str, target: str):
    opt = OPTIMIZERS[opt_name]()
    initial, objective, check = TARGETS[target]()

    def step(_: int, carry: tuple[Any, Any]) -> tuple[Any, Any]:
        params, state = carry
        value, grads = jax.value_and_grad(objective)(params)
        updates, state = opt.update(grads, state, params, value=value)
        return optax.apply_updates(params, updates), state

    @jax.jit
    def run(params: Any) -> tuple[Any, Any]:
        return jax.lax.fori_loop(0, 1000, step, (params, opt.init(params)))

    params, state = run(initial)
    check(params)
    eta = optax.tree.get(state, "learning_rate")
    assert np.isfinite(eta) and eta >= 0
