"""Tests of po.scale_by_adaptive_nesterov / po.adaptive_nesterov (thesis Algorithm 5).

The float64 NumPy reference in ``tests/_algorithm5_reference.py`` runs Algorithm 5 on
the iterate w; the transform keeps the look-ahead point p_t = w_t - alpha v_{t-1} in
the params, so every step checks p_t + alpha v_{t-1} == w_t.
"""

from __future__ import annotations

import inspect
import itertools
import re
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import polyak_optax as po
from tests import _algorithm5_reference as ref
from tests._fast import slow_after, slow_unless, slow_without_jit

BOUNDS = ("min_grad_sq_norm", "max_grad_sq_norm", "min_learning_rate", "max_learning_rate")
NO_BOUNDS = dict.fromkeys(BOUNDS)
# Every subset of the four bounds: the ones listed are set, the others are None.
BOUND_SUBSETS = [
    tuple(name for name, on in zip(BOUNDS, mask, strict=True) if on)
    for mask in itertools.product((False, True), repeat=4)
]


def least_squares_loss(params: dict[str, jax.Array], batch: dict[str, jax.Array]) -> jax.Array:
    residual = batch["x"] @ params["w"] + params["b"] - batch["y"]
    return 0.5 * jnp.mean(residual**2)


def mlp_loss(params: dict[str, jax.Array], batch: dict[str, jax.Array]) -> jax.Array:
    hidden = jnp.tanh(batch["x"] @ params["w1"] + params["b1"])
    logits = hidden @ params["w2"] + params["b2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()


PROBLEMS = {"least_squares": (ref.least_squares, least_squares_loss), "mlp": (ref.mlp, mlp_loss)}
VALUE_AND_GRAD = {name: jax.jit(jax.value_and_grad(loss)) for name, (_, loss) in PROBLEMS.items()}


def _batch(problem: ref.Problem, t: int, dtype: Any = None) -> dict[str, jax.Array]:
    def cast(x: np.ndarray) -> jax.Array:
        return jnp.asarray(x[t], dtype if np.issubdtype(x.dtype, np.floating) else None)

    return {k: cast(x) for k, x in problem.batches.items()}


def _params(problem: ref.Problem, dtype: Any) -> dict[str, jax.Array]:
    return {k: jnp.asarray(x, dtype) for k, x in problem.params.items()}


def _as_numpy(tree: Any) -> Any:
    return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def _tree_axpy(a: float, x: Any, y: Any) -> Any:
    """a * x + y, leaf by leaf, in NumPy float64."""
    return jax.tree.map(lambda u, w: a * _exact(u) + np.asarray(w), x, y)


def _exact(x: Any) -> np.ndarray:
    """x in float64, or complex128 for complex x."""
    return np.asarray(x, np.complex128 if np.iscomplexobj(x) else np.float64)


def _velocity(state: Any) -> Any:
    return optax.tree.get(state, "velocity")


def _learning_rate(state: Any) -> float:
    return float(optax.tree.get(state, "learning_rate"))


# ----------------------------------------------------------------------------------------
# The float64 reference, on random problems, for every combination of bounds.


def _random_run(problem: ref.Problem, subset: tuple[str, ...], rng: np.random.Generator):
    """Random hyperparameters, with the chosen bounds set where they clip some steps."""
    steps = len(problem.batches["x"])
    hyper: dict[str, Any] = {
        "momentum": float(rng.uniform(0.0, 0.8)),
        "confidence": float(rng.uniform(0.2, 0.8)),
        "f_min": 0.0,
    }
    if rng.uniform() < 0.5:  # a schedule of the count
        c0, decay = hyper["confidence"], float(rng.uniform(0.9, 1.0))
        hyper["confidence"] = lambda count: c0 * decay**count
    # Probe without bounds, place the ||g||^2 bounds, probe again, place the eta bounds.
    probe = ref.algorithm5(problem.params, problem.oracle, steps, **hyper)
    if "min_grad_sq_norm" in subset:
        hyper["min_grad_sq_norm"] = float(np.quantile(probe.grad_sq, 0.35))
    if "max_grad_sq_norm" in subset:
        # Capping ||g||^2 raises eta: only mildly, or the run diverges (and so would the
        # thesis's 1e10 cap if it were ever reached).
        hyper["max_grad_sq_norm"] = float(probe.grad_sq.max() / rng.uniform(1.2, 1.6))
    probe = ref.algorithm5(problem.params, problem.oracle, steps, **hyper)
    if "min_learning_rate" in subset:
        hyper["min_learning_rate"] = float(np.quantile(probe.eta, 0.35))
    if "max_learning_rate" in subset:
        eta_max = float(np.quantile(probe.eta, 0.65))
        if rng.uniform() < 0.5:
            hyper["max_learning_rate"] = eta_max
        else:
            hyper["max_learning_rate"] = lambda count: eta_max * 1.02**count
        # Only a capped eta survives f* below the reachable loss: |L - f*| / ||g||^2 grows
        # without bound as the gradient vanishes.
        f0 = float(-rng.uniform(0.0, 0.1) * probe.loss[0])
        hyper["f_min"] = f0 if rng.uniform() < 0.5 else lambda count: f0 * (1 - count / steps)
    return hyper


def _assert_close(actual: Any, expected: Any, tol: float) -> None:
    """|actual - expected| <= tol * max(1, |expected|_inf), leaf by leaf.

    Errors of float64 rounding grow along a run (Polyak steps amplify them a few times
    per step), so the bound scales with the values, far below any algorithmic difference.
    """

    def check(a: Any, e: Any) -> None:
        a, e = _exact(a), _exact(e)
        np.testing.assert_array_less(np.abs(a - e), tol * max(1.0, float(np.max(np.abs(e)))))

    jax.tree.map(check, actual, expected)


def _run_against_reference(
    problem: ref.Problem, value_and_grad: Callable, hyper: dict[str, Any], *, tol: float
) -> ref.Trajectory:
    """Runs the transform and checks every step against Algorithm 5; returns the reference."""
    steps = len(problem.batches["x"])
    expected = ref.algorithm5(problem.params, problem.oracle, steps, **hyper)
    alpha = hyper["momentum"]
    opt = po.adaptive_nesterov(**{**NO_BOUNDS, **hyper})
    params = _params(problem, jnp.float64)
    state = opt.init(params)
    update = jax.jit(opt.update)  # one compile, not one dispatch per op and step
    for t in range(steps):
        # p_t + alpha v_{t-1} is Algorithm 5's w_t, and v_{t-1} its velocity.
        _assert_close(_tree_axpy(alpha, _velocity(state), params), expected.w[t], tol)
        _assert_close(_velocity(state), expected.v[t], tol)
        loss, grads = value_and_grad(params, _batch(problem, t))
        _assert_close(loss, expected.loss[t], tol)
        updates, state = update(grads, state, params, value=loss)
        params = optax.apply_updates(params, updates)
        _assert_close(optax.tree.get(state, "learning_rate"), expected.eta[t], tol)
        assert int(optax.tree.get(state, "count")) == t + 1
    _assert_close(_tree_axpy(alpha, _velocity(state), params), expected.w[-1], tol)
    return expected


# `make test-fast`: no bounds and all four
@pytest.mark.parametrize(
    "subset",
    slow_unless(BOUND_SUBSETS, [BOUND_SUBSETS[0], BOUND_SUBSETS[-1]]),
    ids=lambda s: "+".join(s) if s else "no_bounds",
)
def test_matches_float64_algorithm5_for_every_bound_combination(subset: tuple[str, ...]):
    rng = np.random.default_rng(len(subset) * 100 + sum(BOUNDS.index(b) for b in subset))
    active = {name: [] for name in subset}
    with jax.enable_x64(True):
        for name, (make, _) in PROBLEMS.items():
            for _ in range(2):
                problem = make(seed=int(rng.integers(1 << 30)), num_steps=12)
                hyper = _random_run(problem, subset, rng)
                expected = _run_against_reference(problem, VALUE_AND_GRAD[name], hyper, tol=1e-7)
                for bound in subset:
                    active[bound].append(expected.active[bound])
    # Each bound that is set clipped some steps and not others: the check covered it.
    for bound, flags in active.items():
        flags = np.concatenate(flags)
        assert flags.any() and not flags.all(), (bound, flags)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    momentum=st.floats(0.0, 0.99),
    confidence=st.floats(0.01, 2.0),
    f_min=st.floats(-2.0, 2.0),
    loss=st.floats(0.0, 10.0),
    g=st.lists(st.floats(-10.0, 10.0, allow_subnormal=False), min_size=3, max_size=3),
    v=st.lists(st.floats(-10.0, 10.0, allow_subnormal=False), min_size=3, max_size=3),
    sq_bounds=st.tuples(st.none() | st.floats(1e-3, 300.0), st.none() | st.floats(1e-3, 300.0)),
    lr_bounds=st.tuples(st.none() | st.floats(0.0, 5.0), st.none() | st.floats(0.0, 5.0)),
)
def test_one_step_from_any_state_matches_algorithm5(
    momentum, confidence, f_min, loss, g, v, sq_bounds, lr_bounds
):
    if sum(x * x for x in g) < 1e-12:
        g = [1.0, 0.0, 0.0]  # the zero gradient has its own test
    sq_lo, sq_hi = sq_bounds
    if sq_lo is not None and sq_hi is not None and sq_lo > sq_hi:
        sq_lo, sq_hi = sq_hi, sq_lo
    lr_lo, lr_hi = lr_bounds
    if lr_lo is not None and lr_hi is not None and lr_lo > lr_hi:
        lr_lo, lr_hi = lr_hi, lr_lo
    hyper = dict(
        momentum=momentum,
        confidence=confidence,
        f_min=f_min,
        min_grad_sq_norm=sq_lo,
        max_grad_sq_norm=sq_hi,
        min_learning_rate=lr_lo,
        max_learning_rate=lr_hi,
    )
    grad, velocity = np.asarray(g), np.asarray(v)
    w = np.linspace(-1.0, 1.0, 3)
    expected = ref.algorithm5(
        {"x": w}, lambda _, t: (loss, {"x": grad}), 1, v0={"x": velocity}, **hyper
    )
    with jax.enable_x64(True):
        opt = po.adaptive_nesterov(**hyper)
        params = {"x": jnp.asarray(w - momentum * velocity)}
        state = opt.init(params)
        state = optax.tree.set(state, velocity={"x": jnp.asarray(velocity)})
        updates, state = opt.update({"x": jnp.asarray(grad)}, state, params, value=loss)
        params = optax.apply_updates(params, updates)
        np.testing.assert_allclose(_learning_rate(state), expected.eta[0], rtol=1e-12)
        chex.assert_trees_all_close(
            _as_numpy(_velocity(state)), expected.v[1], rtol=1e-12, atol=1e-12
        )
        chex.assert_trees_all_close(
            _tree_axpy(momentum, _velocity(state), params), expected.w[1], rtol=1e-12, atol=1e-12
        )


def test_momentum_zero_without_lower_bounds_is_polyak_sgd():
    """optax.polyak_sgd: min((f - f*) / (||g||^2 + eps), max_learning_rate), eps = 0."""
    problem = ref.mlp(seed=3, num_steps=20)
    clipped_some = False
    for max_lr in (0.3, 2.0, 50.0):  # clipping at most steps, at some, at none
        ours = po.adaptive_nesterov(
            momentum=0.0,
            min_learning_rate=None,
            min_grad_sq_norm=None,
            max_learning_rate=max_lr,
            f_min=-0.05,
        )
        theirs = optax.polyak_sgd(max_learning_rate=max_lr, f_min=-0.05)

        @jax.jit
        def step(params, states, batch, ours=ours, theirs=theirs):
            loss, grads = jax.value_and_grad(mlp_loss)(params, batch)
            u_ours, s_ours = ours.update(grads, states[0], params, value=loss)
            u_theirs, s_theirs = theirs.update(grads, states[1], params, value=loss)
            return optax.apply_updates(params, u_ours), u_ours, u_theirs, (s_ours, s_theirs)

        params = _params(problem, jnp.float32)
        states = (ours.init(params), theirs.init(params))
        clipped = []
        for t in range(20):
            params, u_ours, u_theirs, states = step(params, states, _batch(problem, t))
            chex.assert_trees_all_close(u_ours, u_theirs, rtol=1e-5, atol=1e-7)
            clipped.append(_learning_rate(states[0]) == np.float32(max_lr))
        clipped_some |= 0 < sum(clipped) < 20
    assert clipped_some


# ----------------------------------------------------------------------------------------
# The core, with and without jit.


@slow_without_jit
class AdaptiveNesterovTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_first_two_steps_by_hand(self):
        # Defaults: alpha 0.9, gamma 1, f* 0, eta in [1e-3, 0.1]. L = sum p^2, p1 = w1 = (1, 2).
        # Step 1: L = 5, ||g||^2 = 20, eta = min(5/20, 0.1) = 0.1, v1 = 0.1 g = (0.2, 0.4),
        #   w2 = w1 - v1 = (0.8, 1.6), p2 = w2 - 0.9 v1 = (0.62, 1.24).
        # Step 2: g = (1.24, 2.48), L/||g||^2 = 1/4 -> eta = 0.1, v2 = 0.9 v1 + 0.1 g
        #   = (0.304, 0.608), w3 = (0.496, 0.992), p3 = w3 - 0.9 v2 = (0.2224, 0.4448).
        opt = po.adaptive_nesterov()
        loss_fn = lambda p: jnp.sum(p**2)

        @self.variant
        def step(params, state):
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, state = opt.update(grads, state, params, value=loss)
            return optax.apply_updates(params, updates), state

        params = jnp.array([1.0, 2.0])
        state = opt.init(params)
        params, state = step(params, state)
        chex.assert_trees_all_close(params, jnp.array([0.62, 1.24]), rtol=1e-6)
        chex.assert_trees_all_close(_velocity(state), jnp.array([0.2, 0.4]), rtol=1e-6)
        params, state = step(params, state)
        chex.assert_trees_all_close(params, jnp.array([0.2224, 0.4448]), rtol=1e-6)
        chex.assert_trees_all_close(_velocity(state), jnp.array([0.304, 0.608]), rtol=1e-6)
        self.assertAlmostEqual(_learning_rate(state), 0.1, places=6)
        self.assertEqual(int(optax.tree.get(state, "count")), 2)

    @chex.variants(with_jit=True, without_jit=True)
    def test_thesis_defaults_in_float32_track_the_float64_reference(self):
        problem = ref.mlp(seed=11, num_steps=20)
        expected = ref.algorithm5(
            problem.params,
            problem.oracle,
            20,
            momentum=0.9,
            min_learning_rate=1e-3,
            max_learning_rate=0.1,
            min_grad_sq_norm=1e-4,
            max_grad_sq_norm=1e10,
        )
        opt = po.adaptive_nesterov()
        update = self.variant(lambda g, s, p, value: opt.update(g, s, p, value=value))
        params = _params(problem, jnp.float32)
        state = opt.init(params)
        for t in range(20):
            loss, grads = VALUE_AND_GRAD["mlp"](params, _batch(problem, t, jnp.float32))
            updates, state = update(grads, state, params, loss)
            params = optax.apply_updates(params, updates)
            np.testing.assert_allclose(_learning_rate(state), expected.eta[t], rtol=1e-4)
            w = _tree_axpy(0.9, _velocity(state), params)
            chex.assert_trees_all_close(w, expected.w[t + 1], rtol=1e-4, atol=1e-5)
        assert expected.active["max_learning_rate"].any()  # the default clip was exercised

    @chex.variants(with_jit=True, without_jit=True)
    def test_non_finite_step_is_skipped_and_the_run_goes_on_as_without_it(self):
        problem = ref.least_squares(seed=5, num_steps=8)
        opt = po.adaptive_nesterov(max_learning_rate=0.5)
        update = self.variant(lambda g, s, p, value: opt.update(g, s, p, value=value))

        def run(bad_step: int | None, kind: str = "") -> list[Any]:
            params = _params(problem, jnp.float32)
            state = opt.init(params)
            trajectory = []
            for t in range(8):
                loss, grads = VALUE_AND_GRAD["least_squares"](params, _batch(problem, t))
                if t == bad_step:  # an extra, broken update before the good one
                    bad_loss, bad_grads = loss, grads
                    if kind == "nan_loss":
                        bad_loss = jnp.float32(jnp.nan)
                    elif kind == "inf_loss":
                        bad_loss = jnp.float32(jnp.inf)
                    elif kind == "nan_grad":
                        bad_grads = {**grads, "b": jnp.float32(jnp.nan)}
                    else:
                        bad_grads = {**grads, "w": grads["w"].at[1].set(-jnp.inf)}
                    updates, new_state = update(bad_grads, state, params, bad_loss)
                    chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, updates))
                    chex.assert_trees_all_equal(new_state, state)  # count, velocity, eta kept
                    state = new_state
                updates, state = update(grads, state, params, loss)
                params = optax.apply_updates(params, updates)
                trajectory.append((params, state))
            return trajectory

        clean = run(None)
        for kind in ("nan_loss", "inf_loss", "nan_grad", "inf_grad"):
            chex.assert_trees_all_equal(run(3, kind), clean)
        chex.assert_tree_all_finite([params for params, _ in clean])

    @chex.variants(with_jit=True, without_jit=True)
    def test_value_and_grad_from_state_loop_gives_the_plain_trajectory(self):
        problem = ref.mlp(seed=2, num_steps=4)
        opt = po.adaptive_nesterov()
        value_and_grad = optax.value_and_grad_from_state(mlp_loss)

        @self.variant
        def plain_step(params, state, batch):
            loss, grads = jax.value_and_grad(mlp_loss)(params, batch)
            updates, state = opt.update(grads, state, params, value=loss)
            return optax.apply_updates(params, updates), state

        @self.variant
        def from_state_step(params, state, batch):
            value, grad = value_and_grad(params, batch, state=state)
            updates, state = opt.update(
                grad, state, params, value=value, grad=grad, value_fn=mlp_loss
            )
            return optax.apply_updates(params, updates), state

        p_plain = p_state = _params(problem, jnp.float32)
        s_plain, s_state = opt.init(p_plain), opt.init(p_state)
        for t in range(4):
            batch = _batch(problem, t)  # a new batch every step and new params
            p_plain, s_plain = plain_step(p_plain, s_plain, batch)
            p_state, s_state = from_state_step(p_state, s_state, batch)
            chex.assert_trees_all_close(p_state, p_plain, rtol=1e-6, atol=1e-7)
            chex.assert_trees_all_close(s_state, s_plain, rtol=1e-6, atol=1e-7)
            # Never a cached pair: value stays +inf, grad stays the zeros of init.
            self.assertTrue(np.isposinf(optax.tree.get(s_state, "value")))
            chex.assert_trees_all_equal(
                optax.tree.get(s_state, "grad"), optax.tree.zeros_like(p_state)
            )


# ----------------------------------------------------------------------------------------
# Edge values, arguments and validation.


def test_zero_gradient_gives_a_finite_step_along_the_velocity():
    params = jnp.array([1.0, -1.0])
    zeros = jnp.zeros(2)
    velocity = jnp.array([0.5, 0.25])
    for bounds, eta_at_loss_2, eta_at_loss_0 in (
        # ||g||^2 clipped up to 1e-4: 2 / 1e-4 clipped to 0.1; a zero gap: 0, up to 1e-3.
        ({}, 0.1, 1e-3),
        # 2 / 0 has no value and no bound gives it one: eta = 0.
        (NO_BOUNDS, 0.0, 0.0),
        # With eta_max, 2 / 0 takes the limit of the clipped ratio.
        ({**NO_BOUNDS, "max_learning_rate": 0.3}, 0.3, 0.0),
    ):
        opt = po.scale_by_adaptive_nesterov(momentum=0.5, **bounds)
        state = opt.init(params)._replace(velocity=velocity)
        for loss, eta in ((2.0, eta_at_loss_2), (0.0, eta_at_loss_0)):
            updates, new_state = opt.update(zeros, state, params, value=loss)
            np.testing.assert_allclose(_learning_rate(new_state), eta, rtol=1e-6)
            # v_new = 0.5 v and the update is alpha v_new: only momentum moves the params.
            chex.assert_trees_all_close(_velocity(new_state), 0.5 * velocity)
            chex.assert_trees_all_close(updates, 0.25 * velocity)
            assert int(new_state.count) == 1


def test_value_is_required_and_must_be_a_scalar():
    opt = po.adaptive_nesterov()
    params = jnp.ones(3)
    state = opt.init(params)
    with pytest.raises(ValueError, match="value"):
        opt.update(params, state, params)
    with pytest.raises(ValueError, match="value"):
        opt.update(params, state, params, value=jnp.ones(2))
    # A size-1 array is a scalar loss, and unknown extra arguments are dropped.
    u1, _ = opt.update(params, state, params, value=jnp.ones(1), unknown=3, value_fn=None)
    u2, _ = opt.update(params, state, params, value=1.0)
    chex.assert_trees_all_equal(u1, u2)


def test_thesis_defaults():
    for factory in (po.adaptive_nesterov, po.scale_by_adaptive_nesterov):
        defaults = {k: p.default for k, p in inspect.signature(factory).parameters.items()}
        assert defaults == {
            "momentum": 0.9,
            "confidence": 1.0,
            "f_min": 0.0,
            "min_learning_rate": 1e-3,
            "max_learning_rate": 0.1,
            "min_grad_sq_norm": 1e-4,
            "max_grad_sq_norm": 1e10,
            "store_grad": True,
            "layerwise": False,
            "layers": None,
        }


def test_a_scheduled_ceiling_below_the_floor_wins():
    """eta = min(max(ratio, floor), ceiling_k): a one-cycle ceiling may anneal below 1e-3."""
    ceiling = optax.piecewise_constant_schedule(0.1, {1: 1e-4})  # 0.1, then 1e-5
    opt = po.adaptive_nesterov(
        min_learning_rate=1e-3, max_learning_rate=ceiling, min_grad_sq_norm=None
    )
    params = jnp.array([1.0, -2.0])
    state = opt.init(params)
    etas = []
    for _ in range(3):
        loss, grads = jax.value_and_grad(lambda p: 1e-6 * jnp.sum(p**2))(params)
        updates, state = opt.update(grads, state, params, value=loss)
        params = optax.apply_updates(params, updates)
        etas.append(float(optax.tree.get(state, "learning_rate")))
    # The Polyak ratio 1e-6 * 5 / (4e-12 * 5) = 2.5e5 is clipped to 0.1, then to 1e-5.
    np.testing.assert_allclose(etas, [0.1, 1e-5, 1e-5], rtol=1e-6)


BAD_HYPERPARAMETERS = [
    ({"momentum": 1.0}, "momentum"),
    ({"momentum": -0.1}, "momentum"),
    ({"momentum": np.float32(1.5)}, "momentum"),
    ({"momentum": jnp.asarray(2.0)}, "momentum"),
    ({"momentum": None}, "momentum"),
    ({"momentum": "0.9"}, "momentum"),
    ({"confidence": 0.0}, "confidence"),
    ({"confidence": -1.0}, "confidence"),
    ({"confidence": float("nan")}, "confidence"),
    ({"f_min": float("inf")}, "f_min"),
    ({"f_min": None}, "f_min"),
    ({"min_learning_rate": -1e-3}, "min_learning_rate"),
    ({"min_learning_rate": optax.constant_schedule(1e-3)}, "min_learning_rate"),
    ({"max_learning_rate": -0.1}, "max_learning_rate"),
    ({"max_learning_rate": np.ones(2)}, "max_learning_rate"),
    ({"min_grad_sq_norm": -1.0}, "min_grad_sq_norm"),
    ({"max_grad_sq_norm": float("nan")}, "max_grad_sq_norm"),
    ({"min_learning_rate": 0.5, "max_learning_rate": 0.1}, "min_learning_rate"),
    ({"min_grad_sq_norm": 10.0, "max_grad_sq_norm": 1.0}, "min_grad_sq_norm"),
    ({"store_grad": "no"}, "store_grad"),
    ({"store_grad": None}, "store_grad"),
    ({"layerwise": 1}, "layerwise"),
    ({"layers": "by_module"}, "layers"),
    ({"layers": po.layers_by_module}, "layers"),  # without layerwise=True
]


@pytest.mark.parametrize("factory", [po.adaptive_nesterov, po.scale_by_adaptive_nesterov])
@pytest.mark.parametrize(("kwargs", "argument"), BAD_HYPERPARAMETERS)
def test_bad_hyperparameters_raise_when_built(factory, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        factory(**kwargs)


def test_edge_hyperparameters_are_accepted():
    params = jnp.ones(2)
    for kwargs in (
        {"momentum": 0.0, "min_learning_rate": 0.0, "max_grad_sq_norm": float("inf")},
        {"momentum": np.float32(0.5), "confidence": jnp.asarray(2.0), "f_min": -1},
        {"min_learning_rate": 0.1, "max_learning_rate": 0.1},
        {"max_learning_rate": optax.cosine_decay_schedule(0.1, 10)},
        {"confidence": optax.linear_schedule(1.0, 0.5, 10), "f_min": lambda c: 0.1 / (c + 1)},
        {"momentum": optax.linear_schedule(0.95, 0.85, 10), "store_grad": False},
        {"layerwise": True, "layers": po.layers_by_module, "store_grad": np.bool_(True)},
    ):
        opt = po.adaptive_nesterov(**kwargs)
        updates, _ = opt.update(params, opt.init(params), params, value=1.0)
        chex.assert_tree_all_finite(updates)


def test_injected_hyperparameters_are_checked_when_concrete():
    params = jnp.ones(2)
    with pytest.raises(ValueError, match="momentum"):
        optax.inject_hyperparams(po.adaptive_nesterov)(momentum=1.5).init(params)
    with pytest.raises(ValueError, match="min_learning_rate"):
        optax.inject_hyperparams(po.adaptive_nesterov)(min_learning_rate=0.5).init(params)


# ----------------------------------------------------------------------------------------
# Dtypes and tracing.


def _mlp_setup(dtype: Any, seed: int = 0, num_steps: int = 4):
    problem = ref.mlp(seed=seed, num_steps=num_steps)
    return problem, _params(problem, dtype)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_state_and_updates_follow_the_params_dtype(dtype):
    problem, params = _mlp_setup(dtype)
    opt = po.adaptive_nesterov()
    state = opt.init(params)
    step = jax.jit(lambda g, s, p, value: opt.update(g, s, p, value=value))
    for t in range(3):
        loss, grads = VALUE_AND_GRAD["mlp"](params, _batch(problem, t, dtype))
        chex.assert_trees_all_equal_dtypes(grads, params)
        # A loss in another dtype (float32 here) changes no dtype of the state.
        updates, new_state = step(grads, state, params, loss.astype(jnp.float32))
        chex.assert_trees_all_equal_structs(new_state, state)
        chex.assert_trees_all_equal_shapes_and_dtypes(new_state, state)
        chex.assert_trees_all_equal_shapes_and_dtypes(updates, params)
        state, params = new_state, optax.apply_updates(params, updates)
    inner = state[0]
    assert inner.count.dtype == jnp.int32
    for leaf in (inner.learning_rate, inner.value):
        assert leaf.dtype == dtype
    chex.assert_trees_all_equal_dtypes(inner.velocity, params)
    chex.assert_trees_all_equal_dtypes(inner.grad, params)
    chex.assert_tree_all_finite(params)
    assert 1e-3 <= float(inner.learning_rate) <= 0.1 * 1.01  # eta in [eta_min, eta_max]


def test_mixed_precision_params_keep_each_leaf_dtype():
    params = {"kernel": jnp.ones((2, 3), jnp.bfloat16), "scale": jnp.ones(3, jnp.float32)}
    grads = jax.tree.map(lambda x: 0.5 * jnp.ones_like(x), params)
    opt = po.adaptive_nesterov()
    state = opt.init(params)
    updates, state = opt.update(grads, state, params, value=1.0)
    chex.assert_trees_all_equal_dtypes(updates, params)
    chex.assert_trees_all_equal_dtypes(optax.tree.get(state, "velocity"), params)
    assert optax.tree.get(state, "learning_rate").dtype == jnp.float32  # the widest dtype
    # ||g||^2 = 9 * 0.25 = 2.25 and L = 1: eta = min(1 / 2.25, 0.1) = 0.1, update = -0.1 * 1.9 g.
    chex.assert_trees_all_close(
        jax.tree.map(lambda u: u.astype(jnp.float32), updates),
        jax.tree.map(lambda g: -0.19 * g.astype(jnp.float32), grads),
        rtol=1e-2,
    )


def test_float64_params_under_x64():
    with jax.enable_x64(True):
        params = jnp.array([1.0, 2.0], jnp.float64)
        opt = po.adaptive_nesterov()
        state = opt.init(params)
        updates, state = opt.update(2 * params, state, params, value=jnp.sum(params**2))
        assert updates.dtype == jnp.float64
        for name in ("velocity", "learning_rate", "value", "grad"):
            assert optax.tree.get(state, name).dtype == jnp.float64, name
        np.testing.assert_allclose(np.asarray(updates), -np.array([0.38, 0.76]), rtol=1e-14)


def test_one_trace_under_jit_across_steps_and_non_finite_inputs():
    problem, params = _mlp_setup(jnp.float32, num_steps=6)
    opt = po.adaptive_nesterov(max_learning_rate=optax.exponential_decay(0.5, 5, 0.5))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state, batch, poison):
        loss, grads = jax.value_and_grad(mlp_loss)(params, batch)
        loss = loss + poison  # nan or 0
        updates, state = opt.update(grads, state, params, value=loss)
        return optax.apply_updates(params, updates), state

    state = opt.init(params)
    for t in range(6):
        poison = jnp.float32(jnp.nan if t == 2 else 0.0)
        params, state = step(params, state, _batch(problem, t), poison)
    assert int(optax.tree.get(state, "count")) == 5  # the nan step did not count


def test_one_trace_with_bfloat16_params_and_injected_hyperparameters():
    problem, params = _mlp_setup(jnp.bfloat16, num_steps=4)
    opt = optax.inject_hyperparams(po.adaptive_nesterov)(
        momentum=0.9, max_learning_rate=optax.linear_schedule(0.2, 0.05, 4), min_grad_sq_norm=None
    )

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state, batch):
        loss, grads = jax.value_and_grad(mlp_loss)(params, batch)
        updates, state = opt.update(grads, state, params, value=loss)
        return optax.apply_updates(params, updates), state, updates

    state = opt.init(params)
    for t in range(4):
        params, state, updates = step(params, state, _batch(problem, t, jnp.bfloat16))
        chex.assert_trees_all_equal_dtypes(updates, params)
    chex.assert_trees_all_equal_dtypes(optax.tree.get(state, "velocity"), params)
    chex.assert_tree_all_finite(params)


# ----------------------------------------------------------------------------------------
# Composition with optax wrappers.


def _loop(opt: optax.GradientTransformation, problem: ref.Problem, steps: int, *, prepare=None):
    """Plain loop over the problem's batches; ``prepare`` may rewrite (loss, grads)."""
    params = _params(problem, jnp.float32)
    state = opt.init(params)
    update = jax.jit(opt.update)
    out = []
    for t in range(steps):
        loss, grads = VALUE_AND_GRAD[problem.name](params, _batch(problem, t))
        if prepare is not None:
            loss, grads = prepare(t, loss, grads)
        updates, state = update(grads, state, params, value=loss)
        params = optax.apply_updates(params, updates)
        out.append((params, state))
    return out


def test_chain_with_clipping_is_the_transform_of_the_clipped_gradient():
    problem = ref.mlp(seed=4, num_steps=6)
    clip = optax.clip_by_global_norm(0.5)
    chained = optax.chain(clip, po.adaptive_nesterov())
    by_hand = _loop(
        po.adaptive_nesterov(),
        problem,
        6,
        prepare=lambda t, loss, g: (loss, clip.update(g, clip.init(g))[0]),
    )
    in_chain = _loop(chained, problem, 6)
    for (p1, s1), (p2, s2) in zip(in_chain, by_hand, strict=True):
        chex.assert_trees_all_close(p1, p2, rtol=1e-5, atol=1e-6)
        assert _learning_rate(s1) == pytest.approx(_learning_rate(s2), rel=1e-5)


def test_inject_hyperparams_gives_the_same_steps_and_exposes_the_learning_rate():
    problem = ref.mlp(seed=6, num_steps=6)
    schedule = optax.linear_schedule(0.5, 0.05, 6)
    direct = _loop(po.adaptive_nesterov(max_learning_rate=schedule), problem, 6)
    injected = _loop(
        optax.inject_hyperparams(po.adaptive_nesterov)(max_learning_rate=schedule), problem, 6
    )
    for (p1, s1), (p2, s2) in zip(injected, direct, strict=True):
        chex.assert_trees_all_close(p1, p2, rtol=1e-6)
        # learning_rate is unique in the state: the injected names are min_/max_learning_rate.
        np.testing.assert_allclose(_learning_rate(s1), _learning_rate(s2), rtol=1e-6)
    etas = [_learning_rate(s) for _, s in direct]
    assert any(eta == pytest.approx(float(schedule(t))) for t, eta in enumerate(etas))


def test_injected_momentum_and_bounds_take_effect_at_each_step():
    """Each step of the injected optimizer is the step of a fresh one built with its values."""
    problem = ref.least_squares(seed=7, num_steps=6)
    momentum = optax.linear_schedule(0.9, 0.5, 6)
    eta_max = optax.exponential_decay(0.4, 2, 0.5)
    opt = optax.inject_hyperparams(po.scale_by_adaptive_nesterov)(
        momentum=momentum, max_learning_rate=eta_max, min_learning_rate=0.01
    )
    params = _params(problem, jnp.float32)
    state = opt.init(params)
    for t in range(6):
        loss, grads = VALUE_AND_GRAD["least_squares"](params, _batch(problem, t))
        fresh = po.scale_by_adaptive_nesterov(
            momentum=float(momentum(t)), max_learning_rate=float(eta_max(t)), min_learning_rate=0.01
        )
        expected, expected_state = fresh.update(grads, state.inner_state, params, value=loss)
        updates, state = opt.update(grads, state, params, value=loss)
        chex.assert_trees_all_close(updates, expected, rtol=1e-6)
        chex.assert_trees_all_close(state.inner_state, expected_state, rtol=1e-6)
        params = optax.apply_updates(params, jax.tree.map(jnp.negative, updates))
    # A numeric injected bound set in the state changes the next step.
    opt = optax.inject_hyperparams(po.adaptive_nesterov)(max_learning_rate=0.5)
    state = opt.init(params)
    state.hyperparams["max_learning_rate"] = jnp.asarray(0.011, jnp.float32)
    loss, grads = VALUE_AND_GRAD["least_squares"](params, _batch(problem, 0))
    _, state = opt.update(grads, state, params, value=loss)
    np.testing.assert_allclose(_learning_rate(state), 0.011, rtol=1e-6)


def test_multisteps_with_the_mean_loss_equals_one_big_batch():
    problem = ref.least_squares(seed=8, num_steps=5)  # batches of 8 rows, split in two
    opt = po.adaptive_nesterov(max_learning_rate=0.5)
    big = _loop(opt, problem, 5)
    multi = optax.MultiSteps(opt, every_k_schedule=2)
    params = _params(problem, jnp.float32)
    state = multi.init(params)
    update = jax.jit(multi.update)
    for t in range(5):
        batch = _batch(problem, t)
        halves = [jax.tree.map(lambda x, i=i: x[4 * i : 4 * i + 4], batch) for i in (0, 1)]
        loss_a, grads_a = VALUE_AND_GRAD["least_squares"](params, halves[0])
        updates, state = update(grads_a, state, params, value=loss_a)
        chex.assert_trees_all_equal(updates, optax.tree.zeros_like(params))
        loss_b, grads_b = VALUE_AND_GRAD["least_squares"](params, halves[1])
        # MultiSteps averages the gradients but forwards the last value: pass the mean.
        updates, state = update(grads_b, state, params, value=(loss_a + loss_b) / 2)
        params = optax.apply_updates(params, updates)
        chex.assert_trees_all_close(params, big[t][0], rtol=1e-5, atol=1e-6)
    assert _learning_rate(state) == pytest.approx(_learning_rate(big[-1][1]), rel=1e-5)


def test_apply_if_finite_skips_the_bad_step_and_keeps_the_trajectory():
    problem = ref.mlp(seed=9, num_steps=6)
    opt = optax.apply_if_finite(po.adaptive_nesterov(), max_consecutive_errors=2)
    clean = _loop(opt, problem, 6)
    params = _params(problem, jnp.float32)
    state = opt.init(params)
    update = jax.jit(opt.update)
    for t in range(6):
        loss, grads = VALUE_AND_GRAD["mlp"](params, _batch(problem, t))
        if t in (1, 3):  # nan gradients (caught by apply_if_finite), then a nan loss (by us)
            bad_grads = jax.tree.map(lambda g: g * jnp.nan, grads) if t == 1 else grads
            bad_loss = loss if t == 1 else jnp.float32(jnp.nan)
            updates, new_state = update(bad_grads, state, params, value=bad_loss)
            chex.assert_trees_all_equal(updates, optax.tree.zeros_like(params))
            chex.assert_trees_all_equal(new_state.inner_state, state.inner_state)
            state = new_state
        updates, state = update(grads, state, params, value=loss)
        params = optax.apply_updates(params, updates)
        chex.assert_trees_all_equal(params, clean[t][0])
    assert int(state.total_notfinite) == 1  # apply_if_finite only looks at the gradients


# ----------------------------------------------------------------------------------------
# Issue 10: complex parameters, store_grad=False, layer-wise factors, one step count.


def _complex_problem(seed: int, num_steps: int) -> ref.Problem:
    """Complex least squares, mean |A w + b - y|^2; the oracle returns 2 dL/d(conj w)."""
    rng = np.random.default_rng(seed)
    shape = (num_steps, 6, 3)
    a = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    y = rng.normal(size=shape[:2]) + 1j * rng.normal(size=shape[:2])
    params = {"w": rng.normal(size=3) + 1j * rng.normal(size=3), "b": np.asarray(0.3)}

    def oracle(p, t):
        r = a[t] @ p["w"] + p["b"] - y[t]
        loss = float(np.mean(np.abs(r) ** 2))
        return loss, {"w": 2 * a[t].conj().T @ r / len(r), "b": np.asarray(2 * np.mean(r.real))}

    return ref.Problem("complex", params, {"a": a, "y": y}, oracle)


def _complex_loss(params, batch):
    r = batch["a"] @ params["w"] + params["b"] - batch["y"]
    return jnp.mean(jnp.abs(r) ** 2)


def test_complex_parameters_reach_the_target_like_polyak_sgd():
    """The issue's repro: fit p to 1+1j with |p - t|^2, passing g.conj() as optax does."""
    target = jnp.asarray(1.0 + 1.0j, jnp.complex64)

    def loss_fn(p):
        return jnp.sum(jnp.abs(p - target) ** 2)

    for opt in (po.adaptive_nesterov(), po.adaptive_nesterov(store_grad=False, layerwise=True)):
        params = jnp.zeros([], jnp.complex64)
        state = opt.init(params)

        @jax.jit
        def step(params, state, opt=opt):
            loss, grad = jax.value_and_grad(loss_fn)(params)
            updates, state = opt.update(grad.conj(), state, params, value=loss)
            return optax.apply_updates(params, updates), state

        for _ in range(100):
            params, state = step(params, state)
        assert params.dtype == jnp.complex64
        assert optax.tree.get(state, "velocity").dtype == jnp.complex64
        assert abs(complex(params) - (1 + 1j)) < 1e-3, params
        assert float(loss_fn(params)) < 1e-6


def test_complex_parameters_match_float64_algorithm5():
    problem = _complex_problem(seed=11, num_steps=12)
    hyper = {"momentum": 0.6, "confidence": 0.5, "max_learning_rate": 0.2, "min_grad_sq_norm": 0.1}
    expected = ref.algorithm5(problem.params, problem.oracle, 12, **hyper)
    with jax.enable_x64(True):
        opt = po.adaptive_nesterov(**{**NO_BOUNDS, **hyper})
        params = {k: jnp.asarray(x) for k, x in problem.params.items()}
        assert params["w"].dtype == jnp.complex128 and params["b"].dtype == jnp.float64
        state = opt.init(params)
        value_and_grad = jax.jit(jax.value_and_grad(_complex_loss))
        for t in range(12):
            batch = {k: jnp.asarray(x[t]) for k, x in problem.batches.items()}
            _assert_close(_tree_axpy(0.6, _velocity(state), params), expected.w[t], 1e-10)
            loss, grads = value_and_grad(params, batch)
            updates, state = opt.update(jax.tree.map(jnp.conj, grads), state, params, value=loss)
            params = optax.apply_updates(params, updates)
            assert _learning_rate(state) == pytest.approx(expected.eta[t], rel=1e-10)
        assert params["w"].dtype == jnp.complex128
        np.testing.assert_allclose(
            np.asarray(params["w"] + 0.6 * state[0].velocity["w"]), expected.w[-1]["w"], rtol=1e-9
        )
    # A real cast would drop the imaginary part: the reference moves it.
    assert np.max(np.abs(expected.w[-1]["w"].imag - problem.params["w"].imag)) > 0.1


def test_store_grad_false_drops_the_grad_buffer_and_keeps_the_trajectory():
    problem = ref.mlp(seed=12, num_steps=5)
    with_grad = _loop(po.adaptive_nesterov(), problem, 5)
    without = _loop(po.adaptive_nesterov(store_grad=False), problem, 5)
    for (p1, s1), (p2, s2) in zip(with_grad, without, strict=True):  # up to XLA's rounding
        chex.assert_trees_all_close(p1, p2, rtol=1e-5, atol=1e-7)
        chex.assert_trees_all_close(_velocity(s1), _velocity(s2), rtol=1e-5, atol=1e-7)
    params = _params(problem, jnp.float32)
    state = po.adaptive_nesterov(store_grad=False).init(params)
    assert optax.tree.get(state, "grad") is None
    velocity_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
    assert state_bytes == velocity_bytes + 12  # count, learning_rate, value
    nesterov = optax.sgd(0.1, momentum=0.9, nesterov=True).init(params)
    assert state_bytes <= sum(x.nbytes for x in jax.tree.leaves(nesterov)) + 64
    full = po.adaptive_nesterov().init(params)
    assert sum(x.nbytes for x in jax.tree.leaves(full)) == 2 * velocity_bytes + 12
    # value_and_grad_from_state needs the buffer: a clear error without it.
    value_and_grad = optax.value_and_grad_from_state(lambda p: mlp_loss(p, _batch(problem, 0)))
    with pytest.raises(ValueError, match="not found in the state"):
        value_and_grad(params, state=state)
    _, grad = value_and_grad(params, state=full)  # the default keeps the loop working
    want = jax.grad(mlp_loss)(params, _batch(problem, 0))
    chex.assert_trees_all_close(grad, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", slow_after(["least_squares", "mlp"]))  # fast: least_squares
def test_layerwise_matches_float64_algorithm5_with_layer_factors(name):
    problem = getattr(ref, name)(seed=13, num_steps=8)
    hyper = {"momentum": 0.7, "confidence": 0.3, "max_learning_rate": 0.3}
    expected = ref.algorithm5(problem.params, problem.oracle, 8, layerwise=True, **hyper)
    plain = ref.algorithm5(problem.params, problem.oracle, 8, **hyper)
    assert (
        np.max(
            np.abs(
                expected.w[-1]["b" if name == "least_squares" else "b1"]
                - plain.w[-1]["b" if name == "least_squares" else "b1"]
            )
        )
        > 1e-3
    )
    with jax.enable_x64(True):
        opt = po.adaptive_nesterov(**{**NO_BOUNDS, **hyper}, layerwise=True)
        params = _params(problem, jnp.float64)
        state = opt.init(params)
        for t in range(8):
            _assert_close(_tree_axpy(0.7, _velocity(state), params), expected.w[t], 1e-10)
            _assert_close(_velocity(state), expected.v[t], 1e-10)
            loss, grads = VALUE_AND_GRAD[name](params, _batch(problem, t))
            updates, state = opt.update(grads, state, params, value=loss)
            params = optax.apply_updates(params, updates)
            assert _learning_rate(state) == pytest.approx(expected.eta[t], rel=1e-10)
        _assert_close(_tree_axpy(0.7, _velocity(state), params), expected.w[-1], 1e-10)


def test_layerwise_factor_enters_with_the_gradient_and_never_rescales_the_velocity():
    opt = po.scale_by_adaptive_nesterov(momentum=0.5, **NO_BOUNDS, layerwise=True)
    params = {"dead": jnp.ones(2), "live": jnp.ones(2)}
    velocity = {"dead": jnp.array([0.4, -0.2]), "live": jnp.array([0.1, 0.3])}
    state = opt.init(params)._replace(velocity=velocity)
    grads = {"dead": jnp.zeros(2), "live": jnp.array([3.0, 4.0])}  # ||g|| = 5
    updates, new_state = opt.update(grads, state, params, value=12.5)
    eta, factor = 12.5 / 25, 1 + np.log1p(1 / 5)
    assert _learning_rate(new_state) == pytest.approx(eta)
    # v = alpha v + eta f_l g_l; a zero-gradient layer keeps alpha v (factor 1, never inf).
    want_v = {
        "dead": 0.5 * velocity["dead"],
        "live": 0.5 * velocity["live"] + eta * factor * grads["live"],
    }
    chex.assert_trees_all_close(_velocity(new_state), want_v, rtol=1e-6)
    want_u = jax.tree.map(lambda g, v: eta * factor * g * 0 + v * 0.5, grads, want_v)
    want_u["live"] = eta * factor * grads["live"] + 0.5 * want_v["live"]
    chex.assert_trees_all_close(updates, want_u, rtol=1e-6)


def _one_cycle_run(opt, batches, problem):
    params = _params(problem, jnp.float32)
    state = opt.init(params)
    update = jax.jit(opt.update)
    trajectory = []
    for batch in batches:
        loss, grads = VALUE_AND_GRAD[problem.name](params, batch)
        updates, state = update(grads, state, params, value=loss)
        params = optax.apply_updates(params, updates)
        trajectory.append((params, state))
    return trajectory


def test_a_skipped_step_advances_no_schedule_in_a_one_cycle_run():
    """A NaN batch mid-run: the run equals the run without that batch, every schedule
    (momentum, eta ceiling) staying on the one count; inject_hyperparams drifts."""
    steps, bad = 12, 5
    problem = ref.mlp(seed=14, num_steps=steps)
    momentum = po.onecycle_momentum_schedule(steps, base_momentum=0.85, max_momentum=0.95)
    ceiling = po.onecycle_schedule(steps, peak_value=0.5)
    clean = [_batch(problem, t) for t in range(steps)]
    nan_batch = jax.tree.map(lambda x: x * jnp.nan if x.dtype == jnp.float32 else x, clean[bad])
    poisoned = [*clean[:bad], nan_batch, *clean[bad:]]

    opt = po.adaptive_nesterov(momentum=momentum, max_learning_rate=ceiling)
    want = _one_cycle_run(opt, clean, problem)
    got = _one_cycle_run(opt, poisoned, problem)
    chex.assert_trees_all_equal(got[bad][0], got[bad - 1][0])  # the NaN step: no move
    assert int(optax.tree.get(got[bad][1], "count")) == bad
    for (p1, s1), (p2, s2) in zip(got[:bad] + got[bad + 1 :], want, strict=True):
        chex.assert_trees_all_equal(p1, p2)
        chex.assert_trees_all_equal(s1, s2)
    assert int(optax.tree.get(got[-1][1], "count")) == steps
    # Without NaN, the schedules inside equal inject_hyperparams' (the old CLI wiring)...
    injected = optax.inject_hyperparams(po.adaptive_nesterov, static_args=("max_learning_rate",))(
        momentum=momentum, max_learning_rate=ceiling
    )
    for (p1, _), (p2, _) in zip(_one_cycle_run(injected, clean, problem), want, strict=True):
        chex.assert_trees_all_close(p1, p2, rtol=1e-6, atol=1e-7)
    # ...whose own count advances on the NaN step: its momentum is one step ahead after it.
    drifted = _one_cycle_run(injected, poisoned, problem)
    assert int(drifted[-1][1].count) == steps + 1
    assert int(optax.tree.get(drifted[-1][1].inner_state, "count")) == steps
    assert not np.allclose(drifted[-1][0]["w1"], want[-1][0]["w1"], rtol=1e-6, atol=1e-7)


def test_momentum_schedule_equals_injected_momentum():
    problem = ref.least_squares(seed=15, num_steps=6)
    momentum = optax.linear_schedule(0.9, 0.5, 6)
    direct = _loop(po.adaptive_nesterov(momentum=momentum), problem, 6)
    injected = _loop(optax.inject_hyperparams(po.adaptive_nesterov)(momentum=momentum), problem, 6)
    for (p1, _), (p2, _) in zip(direct, injected, strict=True):
        chex.assert_trees_all_close(p1, p2, rtol=1e-6)


@pytest.mark.parametrize("layerwise", [False, True])
def test_the_gradient_norm_concatenates_no_leaves(layerwise):
    # ||g||^2 is one reduction per leaf: XLA:CPU's fused concatenation of all the leaves
    # (masked vector loads and stores) made LeNet-5's step up to 3x slower in some runs.
    # Only the stack of per-leaf sums (one scalar per leaf) may be a concatenation.
    params = {"a": jnp.ones((300, 7)), "b": jnp.ones(5), "c": jnp.ones((2, 3, 4))}
    opt = po.adaptive_nesterov(layerwise=layerwise)
    state = opt.init(params)
    hlo = (
        jax.jit(lambda g, s, p: opt.update(g, s, p, value=jnp.float32(1.0)))
        .lower(params, state, params)
        .compile()
        .as_text()
    )
    sizes = [
        int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
        for dims in re.findall(r"= f32\[([0-9,]*)\][^=]*? concatenate\(", hlo)
    ]
    assert all(size <= len(jax.tree.leaves(params)) for size in sizes), sizes
