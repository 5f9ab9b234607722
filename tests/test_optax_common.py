"""optax's generic optimizer tests, run over this library's optimizers.

An adapted copy of ``optax/contrib/_common_test.py`` (optax 0.2.8): the same targets
(parabola, Rosenbrock, matrix parabola, mixed 1D/2D tensors), the same steps and the same
assertions, run over the library's optimizers. Each optimizer of ours has a reference
optimizer of optax with the same hyperparameters, run beside it on the same case: ours
must pass wherever the reference passes. The cases that fail for both are listed in
:data:`FAIL_FOR_BOTH`, with the reason, and the test checks that the list is exact.

Changes against the original: the Polyak-step optimizers always get ``value=`` (as momo
does there); the "no recompilation" check counts XLA compilations with
``jax.monitoring`` instead of optax's private ``test_utils.log_compilations``; the learning
rate schedule check uses adaptive Nesterov's ``max_learning_rate`` (ours have no
``learning_rate`` argument); the state stability check also runs complex64/complex128
(from ``optax/_src/alias_test.py``).
"""

from __future__ import annotations

import functools
import inspect

import chex
import jax
import jax.numpy as jnp
import optax
import pytest

import polyak_optax as po
from tests._compile_counter import BackendCompiles
from tests._fast import slow_unless

# name -> (factory of ours, injectable factory and hyperparameters, optax's reference)
OPTIMIZERS = {
    "adaptive_nesterov": (
        lambda: po.adaptive_nesterov(),
        (po.adaptive_nesterov, {"momentum": 0.9, "max_learning_rate": 0.1}),
        "nesterov_0.1",
    ),
    "adaptive_nesterov_unbounded": (
        lambda: po.adaptive_nesterov(
            min_learning_rate=None,
            max_learning_rate=None,
            min_grad_sq_norm=None,
            max_grad_sq_norm=None,
        ),
        (po.adaptive_nesterov, {"momentum": 0.9, "max_learning_rate": None}),
        "polyak_sgd",
    ),
    "adaptive_nesterov_layerwise": (
        lambda: po.adaptive_nesterov(layerwise=True, store_grad=False),
        (functools.partial(po.adaptive_nesterov, layerwise=True), {"momentum": 0.9}),
        "nesterov_0.1",
    ),
    "layerwise_adam": (
        lambda: po.layerwise(optax.adam(1e-2)),
        (functools.partial(po.layerwise, optax.adam(1e-2)), {}),
        "adam_1e-2",
    ),
    "layerwise_of_adaptive_nesterov": (
        lambda: po.layerwise(po.adaptive_nesterov()),
        (functools.partial(po.layerwise, po.adaptive_nesterov()), {}),
        "nesterov_0.1",
    ),
    "log_norm_nesterov": (
        lambda: optax.chain(
            po.scale_by_layerwise_log_norm(), optax.sgd(1e-3, momentum=0.9, nesterov=True)
        ),
        (
            lambda learning_rate: optax.chain(
                po.scale_by_layerwise_log_norm(),
                optax.sgd(learning_rate, momentum=0.9, nesterov=True),
            ),
            {"learning_rate": 1e-3},
        ),
        "nesterov_1e-3",
    ),
    "tuning_free_nesterov": (
        lambda: po.tuning_free_nesterov(),
        (po.tuning_free_nesterov, {"momentum": 0.9, "max_learning_rate": 1.0}),
        "nesterov_0.1",
    ),
    "schedule_free_polyak": (
        lambda: po.schedule_free_polyak(),
        (po.schedule_free_polyak, {"b1": 0.9, "max_learning_rate": 1.0}),
        "schedule_free_sgd_1",
    ),
    "schedule_free_polyak_adam": (
        lambda: po.schedule_free_polyak_adam(),
        (po.schedule_free_polyak_adam, {"b1": 0.9, "max_learning_rate": 1e-2}),
        "schedule_free_adamw_1e-2",
    ),
}
# optax's reference optimizers, with the hyperparameters of ours (ceiling, momentum).
REFERENCES = {
    "nesterov_0.1": lambda: optax.sgd(0.1, momentum=0.9, nesterov=True),
    "polyak_sgd": lambda: optax.polyak_sgd(max_learning_rate=1e30),
    "adam_1e-2": lambda: optax.adam(1e-2),
    "nesterov_1e-3": lambda: optax.sgd(1e-3, momentum=0.9, nesterov=True),
    "schedule_free_sgd_1": lambda: optax.contrib.schedule_free_sgd(1.0),
    "schedule_free_adamw_1e-2": lambda: optax.contrib.schedule_free_adamw(1e-2),
}
NAMES = tuple(OPTIMIZERS)
#: `make test-fast` runs each test on the first optimizer only.
FAST_NAMES = slow_unless(NAMES, NAMES[:1])


def _ours(name):
    return OPTIMIZERS[name][0]()


def _reference(name):
    return REFERENCES[name]()


def _update_kwargs(value):
    # Every optimizer here takes extra args; the Polyak ones need the loss.
    return {"value": value}


def _abs_sq(x):
    """optax's numerics.abs_sq (a private module there)."""
    return (x.conj() * x).real


def _setup_parabola(dtype):
    initial_params = jnp.array([-1.0, 10.0, 1.0], dtype=dtype)
    final_params = jnp.array([1.0, -1.0, 1.0], dtype=dtype)

    def obj_fn(params):
        return jnp.sum(_abs_sq(params - final_params))

    return initial_params, final_params, obj_fn


def _setup_rosenbrock(dtype):
    a, b = 1.0, 100.0
    initial_params = jnp.array([0.0, 0.0], dtype=dtype)
    final_params = jnp.array([a, a**2], dtype=dtype)

    def obj_fn(params):
        return _abs_sq(a - params[0]) + b * _abs_sq(params[1] - params[0] ** 2)

    return initial_params, final_params, obj_fn


def _setup_matrix_parabola(dtype):
    initial_params = jnp.zeros((2, 2), dtype=dtype)
    final_params = jnp.array([[3.0, -2.0], [1.0, 4.0]], dtype=dtype)

    def obj_fn(params):
        return jnp.sum(_abs_sq(params - final_params))

    return initial_params, final_params, obj_fn


def _setup_mixed_tensor_target(dtype):
    final_1d = jnp.array([1.0, -1.0, 2.0], dtype=dtype)
    final_2d = jnp.array([[1.0, 0.0], [-1.0, 1.0]], dtype=dtype)

    def obj_fn(params):
        params_1d, params_2d = params
        return jnp.sum(_abs_sq(params_1d - final_1d)) + jnp.sum(_abs_sq(params_2d - final_2d))

    initial = (jnp.zeros((3,), dtype=dtype), jnp.zeros((2, 2), dtype=dtype))
    return initial, (final_1d, final_2d), obj_fn


TARGETS = {
    "parabola": _setup_parabola,
    "rosenbrock": _setup_rosenbrock,
    "matrix_parabola": _setup_matrix_parabola,
    "mixed_tensor": _setup_mixed_tensor_target,
}

# (optimizer, target) -> why both ours and optax's reference miss the optimum after
# 30,000 steps (rtol = atol = 3e-2).
FAIL_FOR_BOTH: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("name", FAST_NAMES)
def test_optimizers_accept_extra_args(name):
    opt = _ours(name)  # intentionally no optax.with_extra_args_support
    initial_params, _, objective = _setup_rosenbrock(jnp.float32)

    @jax.jit
    def step(params, state):
        value, updates = jax.value_and_grad(objective)(params)
        update_kwargs = {"unexpected_extra_args_your_optimizer_doesnt_expect": 1, "value": value}
        updates, state = opt.update(updates, state, params, **update_kwargs)
        return optax.apply_updates(params, updates), state

    params, state = initial_params, opt.init(initial_params)
    for _ in range(2):
        params, state = step(params, state)
    # The optimizer doesn't recompile on the second call.
    params = initial_params
    state = opt.init(params)
    params, state = step(params, state)
    with BackendCompiles() as compiles:
        step(params, state)
    assert compiles.count == 0, "Optimizer recompiles on second call to update."


@functools.cache
def _converges(name, target, reference):
    """Runs optax's 30,000-step optimization; whether it ends within 3e-2 of the optimum.

    ``name`` is a key of :data:`REFERENCES` if ``reference``, else of :data:`OPTIMIZERS`.
    """
    opt = _reference(name) if reference else _ours(name)
    opt = optax.with_extra_args_support(opt)
    initial_params, final_params, obj_fn = TARGETS[target](jnp.float32)

    @jax.jit
    def step(params, state):
        value, updates = jax.value_and_grad(obj_fn)(params)
        updates, state = opt.update(updates, state, params, **_update_kwargs(value))
        return optax.apply_updates(params, updates), state

    state = opt.init(initial_params)
    state = optax.tree.map_params(opt, lambda v: v, state)  # tree_map_params works

    def f(params_state, _):
        return step(*params_state), None

    (params, _), _ = jax.lax.scan(f, (initial_params, state), length=30_000)
    try:
        chex.assert_trees_all_close(params, final_params, rtol=3e-2, atol=3e-2)
    except AssertionError:
        return False
    return True


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", FAST_NAMES)
def test_optimizers(name, target):
    reference_ok = _converges(OPTIMIZERS[name][2], target, reference=True)
    ours_ok = _converges(name, target, reference=False)
    if reference_ok:
        assert ours_ok, f"{name} misses the optimum of {target}; optax's reference reaches it"
    both_fail = not reference_ok and not ours_ok
    assert both_fail == ((name, target) in FAIL_FOR_BOTH), (name, target, ours_ok, reference_ok)


@pytest.mark.parametrize("name", FAST_NAMES)
def test_optimizers_can_be_wrapped_in_inject_hyperparams(name):
    factory, hparams = OPTIMIZERS[name][1]
    opt = factory(**hparams)
    opt_inject = optax.inject_hyperparams(factory)(**hparams)
    params = [jnp.negative(jnp.ones((2, 3))), jnp.ones((2, 5, 2))]
    grads = [jnp.ones((2, 3)), jnp.negative(jnp.ones((2, 5, 2)))]
    update_kwargs = {"value": jnp.array(1.0)}

    state = jax.jit(opt.init)(params)
    updates, new_state = jax.jit(opt.update)(grads, state, params, **update_kwargs)
    state_inject = jax.jit(opt_inject.init)(params)
    updates_inject, new_state_inject = jax.jit(opt_inject.update)(
        grads, state_inject, params, **update_kwargs
    )
    chex.assert_trees_all_close(updates_inject, updates, rtol=1e-5)
    chex.assert_trees_all_close(new_state_inject.inner_state, new_state, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("name", FAST_NAMES)
def test_preserve_dtype(name, dtype):
    dtype = jnp.dtype(dtype)
    opt = _ours(name)
    fun = lambda x: jnp.sum(x**2)
    params = jnp.array([1.0, 2.0], dtype=dtype)
    value, grads = jax.value_and_grad(fun)(params)
    state = jax.jit(opt.init)(params)
    updates, _ = jax.jit(opt.update)(grads, state, params, value=value)
    assert updates.dtype == params.dtype


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("name", FAST_NAMES)
def test_gradient_accumulation(name, dtype):
    dtype = jnp.dtype(dtype)
    opt = optax.MultiSteps(_ours(name), every_k_schedule=4)
    fun = lambda x: jnp.sum(x**2)
    params = jnp.array([1.0, 2.0], dtype=dtype)
    value, grads = jax.value_and_grad(fun)(params)
    state = jax.jit(opt.init)(params)
    updates, _ = jax.jit(opt.update)(grads, state, params, value=value)
    chex.assert_trees_all_equal(updates, jnp.zeros_like(grads))


@pytest.mark.parametrize(
    "dtype",
    slow_unless(
        [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64, jnp.complex64, jnp.complex128],
        [jnp.float32, jnp.complex64],  # `make test-fast`'s
    ),
    ids=lambda d: jnp.dtype(d).name,
)
@pytest.mark.parametrize("name", FAST_NAMES)
def test_state_shape_dtype_shard_stability(name, dtype):
    with jax.enable_x64(dtype in (jnp.float64, jnp.complex128)):
        opt = _ours(name)
        initial_params, _, objective = _setup_parabola(dtype)

        @jax.jit
        def step(params, state):
            value, updates = jax.value_and_grad(objective)(params)
            updates = jax.tree.map(jnp.conj, updates)
            # confuse the dtype intentionally
            value = value.astype(jnp.float16 if dtype != jnp.float16 else jnp.bfloat16)
            # defeat compiler optimization, use lax.cond to check for stability
            cond = jax.random.randint(jax.random.key(0), (), 0, 2) == 0
            updates, state = jax.lax.cond(
                cond,
                lambda: opt.update(updates, state, params, value=value),
                lambda: (params, state),
            )
            return optax.apply_updates(params, updates), state

        params, state = initial_params, opt.init(initial_params)
        for _ in range(2):
            params, new_state = step(params, state)
            assert jax.tree.leaves(params)[0].dtype == dtype
            cond = jax.random.randint(jax.random.key(0), (), 0, 2) == 0
            state = jax.lax.cond(cond, lambda: state, lambda: new_state)  # noqa: B023


def test_optimizers_accept_learning_rate_schedule_if_type_annotated_as_such():
    # Ours take no learning_rate; adaptive Nesterov's scheduled hyperparameter is the
    # ceiling max_learning_rate, annotated ScalarOrSchedule.
    annotation = inspect.signature(po.adaptive_nesterov).parameters["max_learning_rate"]
    assert "ScalarOrSchedule" in str(annotation.annotation)
    initial_params, _, obj_fn = _setup_parabola(jnp.float32)
    with_schedule = po.adaptive_nesterov(max_learning_rate=optax.constant_schedule(1e-3))
    with_lr = po.adaptive_nesterov(max_learning_rate=1e-3, min_learning_rate=1e-3)

    def step(opt, params, state):
        value, updates = jax.value_and_grad(obj_fn)(params)
        updates, state = opt.update(updates, state, params, value=value)
        return optax.apply_updates(params, updates), state

    p1 = p2 = initial_params
    s1, s2 = with_schedule.init(p1), with_lr.init(p2)
    for _ in range(10):
        p1, s1 = step(with_schedule, p1, s1)
        p2, s2 = step(with_lr, p2, s2)
    chex.assert_trees_all_close(p1, p2)
