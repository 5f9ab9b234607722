"""optax's generic schedule tests, run over this library's schedules.

Adapted from ``optax/schedules/_schedule_test.py`` and ``_inject_test.py`` (optax 0.2.8):
the checks that hold for any schedule (jitted values equal eager ones for every count,
array counts, counts far past the end, a constant schedule as a learning rate equals the
number, ``inject_hyperparams`` starting at count 0, ``WrappedSchedule``), run over every
schedule of the library and, beside them, over optax's own one-cycle and cosine
schedules as the reference. No case fails for ours; the cases that fail for a reference
are listed in ``FAIL_FOR_REFERENCE`` (strict xfail).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import polyak_optax as po
from tests._fast import slow_unless

N = 40
SCHEDULES = {
    "cyclic": lambda: po.cyclic_schedule(1e-3, 1e-2, step_size_up=7, step_size_down=5),
    "cyclic_triangular2": lambda: po.cyclic_schedule(1e-3, 1e-2, 6, mode="triangular2"),
    "cyclic_exp_range": lambda: po.cyclic_schedule(1e-3, 1e-2, 6, mode="exp_range", gamma=0.99),
    "cyclic_fractional": lambda: po.cyclic_schedule(1e-3, 1e-2, 2.5),
    "cyclic_momentum": lambda: po.cyclic_momentum_schedule(6),
    "onecycle": lambda: po.onecycle_schedule(N, 0.1),
    "onecycle_three_phase_linear": lambda: po.onecycle_schedule(
        N, 0.1, anneal_strategy="linear", three_phase=True
    ),
    "onecycle_momentum": lambda: po.onecycle_momentum_schedule(N),
    # optax's references, held to the same checks.
    "optax_cosine_onecycle": lambda: optax.cosine_onecycle_schedule(N, 0.1),
    "optax_linear_onecycle": lambda: optax.linear_onecycle_schedule(N, 0.1),
    "optax_cosine_decay": lambda: optax.cosine_decay_schedule(0.1, N),
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_immutable_count_and_jit(name):
    schedule = SCHEDULES[name]()
    jitted = jax.jit(schedule)
    eager = np.array([schedule(count) for count in range(N + 5)])
    generated = np.array([jitted(count) for count in range(N + 5)])
    # optax checks atol=1e-3; float32 rounding of fractional cycles differs by ~4e-6 rel.
    np.testing.assert_allclose(generated, eager, rtol=1e-5, atol=1e-8)
    assert jitted(3).dtype == jnp.float32
    assert np.all(np.isfinite(generated))


# Cases that fail for optax's references, with the reason; none fails for ours.
FAIL_FOR_REFERENCE = {
    ("test_array_of_counts", "optax_cosine_onecycle"): "piecewise_interpolate_schedule "
    "compares the count with its array of boundaries: an array of counts does not broadcast",
    ("test_array_of_counts", "optax_linear_onecycle"): "same as optax_cosine_onecycle",
}


def _known(test, name):
    reason = FAIL_FOR_REFERENCE.get((test, name))
    marks = [pytest.mark.xfail(raises=TypeError, strict=True, reason=reason)] if reason else []
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", [_known("test_array_of_counts", n) for n in SCHEDULES])
def test_array_of_counts(name):
    schedule = jax.jit(SCHEDULES[name]())
    counts = np.array([0, 3, 10, 25, N - 1, N + 3])
    np.testing.assert_allclose(
        schedule(counts), np.array([schedule(int(c)) for c in counts]), rtol=1e-6, atol=1e-8
    )


@pytest.mark.parametrize("name", SCHEDULES)
def test_with_giant_int_steps(name):
    value = jax.jit(SCHEDULES[name]())(int(1e9))
    assert np.isfinite(value) and value.dtype == jnp.float32


@pytest.mark.parametrize("name", SCHEDULES)
def test_inject_hyperparams_starts_with_step_count_zero(name):
    schedule = SCHEDULES[name]()
    opt = optax.inject_hyperparams(optax.scale)(schedule)
    params = jnp.zeros(3)
    grads = jnp.array([-1.0, 0.0, 1.0])
    state = opt.init(params)
    update = jax.jit(opt.update)
    for count in range(4):
        updates, state = update(grads, state)
        np.testing.assert_allclose(updates, float(schedule(count)) * grads, rtol=1e-6)


@pytest.mark.parametrize("name", SCHEDULES)
def test_wrap_stateless_schedule(name):
    schedule = SCHEDULES[name]()
    wrapped = optax.schedules.WrappedSchedule(schedule)
    count = jnp.zeros([], dtype=jnp.int32)
    state = wrapped.init()
    for _ in range(8):
        np.testing.assert_allclose(schedule(count), wrapped(state), atol=0.0)
        count = count + 1
        state = wrapped.update(state, loss=jnp.ones([], dtype=jnp.float32))
        np.testing.assert_allclose(count, state, atol=0.0)


def _parabola():
    initial = jnp.array([-1.0, 10.0, 1.0], jnp.float32)
    final = jnp.array([1.0, -1.0, 1.0], jnp.float32)
    return initial, lambda p: jnp.sum((p - final) ** 2)


@pytest.mark.parametrize(
    "constant",
    [
        lambda: po.cyclic_schedule(1e-3, 1e-3, 5),
        lambda: po.cyclic_momentum_schedule(5, base_momentum=1e-3, max_momentum=1e-3),
        lambda: optax.constant_schedule(1e-3),
    ],
    ids=["cyclic", "cyclic_momentum", "optax_constant"],
)
@pytest.mark.parametrize(  # `make test-fast`: the library's optimizer
    "opt_name", slow_unless(["sgd", "adam", "adaptive_nesterov"], ["adaptive_nesterov"])
)
def test_schedule_as_learning_rate(constant, opt_name):
    """A constant schedule as the learning rate (the ceiling for adaptive Nesterov)."""
    if opt_name == "adaptive_nesterov":
        make = lambda lr: po.adaptive_nesterov(max_learning_rate=lr, min_learning_rate=1e-3)
    else:
        make = lambda lr: getattr(optax, opt_name)(learning_rate=lr)
    opt_with_schedule, opt_with_lr = make(constant()), make(1e-3)
    params, objective = _parabola()

    def step(opt, params, state):
        value, updates = jax.value_and_grad(objective)(params)
        updates, state = optax.with_extra_args_support(opt).update(
            updates, state, params, value=value
        )
        return optax.apply_updates(params, updates), state

    p1 = p2 = params
    s1, s2 = opt_with_schedule.init(p1), opt_with_lr.init(p2)
    for _ in range(10):
        p1, s1 = step(opt_with_schedule, p1, s1)
        p2, s2 = step(opt_with_lr, p2, s2)
    chex.assert_trees_all_close(p1, p2)
    assert not np.allclose(p1, params)
