"""Tests of the library's one Polyak step size and its one non-finite skip.

``polyak_step_size`` against an independent float64 NumPy reference over many random
problems, bounds and edge cases, in both gap forms; ``skip_unless_finite`` on trees of
mixed dtypes; and every Polyak preset traced once over finite and non-finite steps.
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
from polyak_optax._src._polyak import polyak_step_size, skip_unless_finite


def reference_step(loss, sq, *, confidence, f_min, absolute_gap, bounds):
    """Float64: the documented rule, case by case."""
    min_sq, max_sq, min_step, max_step = bounds
    diff = loss - f_min
    gap = abs(diff) if absolute_gap else max(diff, 0.0)
    if gap == 0:
        ratio = 0.0
    else:
        denominator = min(max(sq, min_sq if min_sq is not None else -math.inf), max_sq or math.inf)
        ratio = math.inf if denominator == 0 else confidence * gap / denominator
    eta = ratio
    if min_step is not None:
        eta = max(eta, min_step)
    if max_step is not None:
        eta = min(eta, max_step)
    return eta if math.isfinite(eta) else 0.0


def _random_case(rng):
    """A random (loss, sq, hyperparameters) with zero gaps, zero norms and bounds mixed in."""
    f_min = float(rng.choice([0.0, rng.uniform(-1, 1)]))
    loss = float(rng.choice([f_min, f_min + rng.uniform(-2, 2), rng.uniform(0, 5)]))
    sq = float(rng.choice([0.0, 10 ** rng.uniform(-6, 6)]))
    pick = lambda value: None if rng.uniform() < 0.3 else value
    min_sq = pick(10 ** rng.uniform(-5, -2))
    max_sq = pick(10 ** rng.uniform(2, 8))
    min_step = pick(10 ** rng.uniform(-4, -2))
    max_step = pick(10 ** rng.uniform(-2, 1))
    confidence = float(rng.uniform(0.1, 3))
    return loss, sq, confidence, f_min, (min_sq, max_sq, min_step, max_step)


@pytest.mark.parametrize("absolute_gap", [True, False])
def test_polyak_step_size_matches_float64_reference(absolute_gap):
    rng = np.random.default_rng(7 + absolute_gap)
    edge = {"zero gap": 0, "zero norm": 0, "clipped above": 0, "clipped below": 0}
    with jax.enable_x64(True):
        step = jax.jit(polyak_step_size, static_argnames=("absolute_gap",))
        for _ in range(300):
            loss, sq, confidence, f_min, bounds = _random_case(rng)
            min_sq, max_sq, min_step, max_step = bounds
            eta = step(
                jnp.float64(loss),
                jnp.float64(sq),
                confidence=confidence,
                f_min=f_min,
                absolute_gap=absolute_gap,
                min_sq_norm=min_sq,
                max_sq_norm=max_sq,
                min_step=min_step,
                max_step=max_step,
            )
            expected = reference_step(
                loss,
                sq,
                confidence=confidence,
                f_min=f_min,
                absolute_gap=absolute_gap,
                bounds=bounds,
            )
            chex.assert_trees_all_close(eta, jnp.float64(expected), rtol=1e-14, atol=0)
            edge["zero gap"] += loss == f_min
            edge["zero norm"] += sq == 0 and loss != f_min
            edge["clipped above"] += max_step is not None and expected == max_step
            edge["clipped below"] += min_step is not None and expected == min_step
    assert all(edge.values()), edge  # every case of the rule ran


def test_the_gap_forms_differ_only_below_f_min():
    kwargs = {"confidence": 1.0, "f_min": 1.0, "max_step": 10.0}
    above = [
        polyak_step_size(jnp.float32(3.0), jnp.float32(4.0), absolute_gap=a, **kwargs)
        for a in (True, False)
    ]
    below = [
        polyak_step_size(jnp.float32(-1.0), jnp.float32(4.0), absolute_gap=a, **kwargs)
        for a in (True, False)
    ]
    chex.assert_trees_all_equal(above, [jnp.float32(0.5), jnp.float32(0.5)])
    chex.assert_trees_all_equal(below, [jnp.float32(0.5), jnp.float32(0.0)])


def test_skip_unless_finite_keeps_the_old_tree_and_its_dtypes():
    old = {"v": jnp.ones(3, jnp.bfloat16), "count": jnp.int32(4), "lr": jnp.float32(0.5)}
    new = {"v": jnp.full(3, 2.0, jnp.float32), "count": jnp.int32(5), "lr": jnp.float32(0.25)}
    kept = jax.jit(skip_unless_finite)(jnp.bool_(False), new, old)
    chex.assert_trees_all_equal(kept, old)
    chex.assert_trees_all_equal_dtypes(kept, old)
    taken = jax.jit(skip_unless_finite)(jnp.bool_(True), new, old)
    chex.assert_trees_all_equal(taken, jax.tree.map(lambda n, o: n.astype(o.dtype), new, old))
    shared = jnp.arange(2.0)
    assert skip_unless_finite(jnp.bool_(False), {"a": shared}, {"a": shared})["a"] is shared


PRESETS = {
    "adaptive_nesterov": lambda: po.adaptive_nesterov(
        max_learning_rate=optax.linear_schedule(0.1, 0.01, 5)
    ),
    "layerwise": lambda: po.adaptive_nesterov(layerwise=True, store_grad=False),
    "tuning_free": lambda: po.tuning_free_nesterov(adapt_f_min=True),
    "schedule_free": lambda: po.schedule_free_polyak(
        max_learning_rate=optax.linear_schedule(1.0, 0.1, 5)
    ),
    "schedule_free_adam": po.schedule_free_polyak_adam,
    "polyak_step": lambda: optax.chain(po.scale_by_polyak_step(), optax.scale(-1.0)),
}


def _base_state(state):
    """The Polyak step's own state: schedule-free averaging moves on over a skipped base
    step (its z gains a zero update), the base step's state does not."""
    if isinstance(state, optax.contrib.ScheduleFreeState):
        return state.base_optimizer_state
    return state


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_trace_once_and_skip_non_finite_steps(name):
    opt = PRESETS[name]()
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}

    @jax.jit
    @chex.assert_max_traces(n=1)
    def update(grads, state, params, value):
        return opt.update(grads, state, params, value=value)

    state = opt.init(params)
    for t, value in enumerate([2.0, 1.5, np.nan, 1.0, np.inf, 0.5]):
        grads = jax.tree.map(lambda p, t=t: jnp.full_like(p, 0.3 + 0.1 * t), params)
        updates, new_state = update(grads, state, params, jnp.float32(value))
        if np.isfinite(value):
            # (adaptive Nesterov's state.value is +inf by design)
            chex.assert_tree_all_finite((updates, optax.tree.get(new_state, "learning_rate")))
            params = optax.apply_updates(params, updates)
        else:
            chex.assert_tree_all_finite(updates)
            chex.assert_trees_all_equal(_base_state(new_state), _base_state(state))
            if not isinstance(state, optax.contrib.ScheduleFreeState):
                chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, params))
                chex.assert_trees_all_equal(new_state, state)
        state = new_state
    chex.clear_trace_counter()
