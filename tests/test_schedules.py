"""Tests of the cyclical and one-cycle schedules.

Three independent checks: PyTorch's own numbers (``tests/data/torch_schedules.json``, made
by ``tests/data/make_torch_reference.py`` with torch 2.13.0), float64 transcriptions of
PyTorch's formulas over many random configurations, and hand-checked points.
"""

from __future__ import annotations

import json
import math
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import polyak_optax as po

REFERENCE = json.loads(
    (pathlib.Path(__file__).parent / "data" / "torch_schedules.json").read_text()
)

# The JAX twins of the scale functions of make_torch_reference.py.
SCALE_FNS = {
    "half_sine": lambda x: 0.5 * (1.0 + jnp.sin(x * jnp.pi / 2.0)),
    "inverse": lambda x: 1.0 / (1.0 + 0.05 * x),
}
# Well-conditioned in float32 at large arguments too (unlike sin(x pi / 2)), for the
# random configurations.
SMOOTH_SCALE_FNS = {
    "inverse": (lambda x: 1.0 / (1.0 + 0.05 * x), lambda x: 1.0 / (1.0 + 0.05 * x)),
    "exp_decay": (lambda x: jnp.exp(-0.002 * x), lambda x: math.exp(-0.002 * x)),
}
RTOL = 2e-6  # float32 schedules against float64 references


EVAL_SHAPE = 320  # every evaluation pads its counts to this length: eager ops compile once


def _values(schedule, steps) -> np.ndarray:
    steps = np.asarray(steps, np.int32)
    assert steps.ndim == 1 and len(steps) <= EVAL_SHAPE
    padded = np.pad(steps, (0, EVAL_SHAPE - len(steps)), mode="edge")
    values = schedule(jnp.asarray(padded))
    assert values.dtype == jnp.float32
    return np.asarray(values, np.float64)[: len(steps)]


def _case_id(case) -> str:
    return ",".join(f"{k}={v}" for k, v in case["kwargs"].items())


# ---------------------------------------------------------------------------------------
# Float64 transcriptions of torch.optim.lr_scheduler (the get_lr code of torch 2.13).


def torch_cyclic_lr(
    t,
    base,
    peak,
    up,
    step_size_down=None,
    mode="triangular",
    gamma=1.0,
    scale_fn=None,
    scale_mode="cycle",
):
    up = float(up)
    down = up if step_size_down is None else float(step_size_down)
    total = up + down
    ratio = up / total
    if scale_fn is None:
        scale_fn = {
            "triangular": lambda x: 1.0,
            "triangular2": lambda x: 1 / (2.0 ** (x - 1)),
            "exp_range": lambda x: gamma**x,
        }[mode]
        scale_mode = "iterations" if mode == "exp_range" else "cycle"
    cycle = math.floor(1 + t / total)
    x = 1.0 + t / total - cycle
    factor = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
    return base + (peak - base) * factor * scale_fn(cycle if scale_mode == "cycle" else t)


def torch_onecycle(t, total, start_values, pct_start=0.3, anneal="cos", three_phase=False):
    """``start_values``: (v0, vmax, vmin) for the lr, (max_m, base_m, max_m) for momentum."""
    v0, vpeak, vend = start_values
    if three_phase:
        phases = [
            (float(pct_start * total) - 1, v0, vpeak),
            (float(2 * pct_start * total) - 2, vpeak, v0),
            (total - 1, v0, vend),
        ]
    else:
        phases = [(float(pct_start * total) - 1, v0, vpeak), (total - 1, vpeak, vend)]
    start_step = 0.0
    for i, (end_step, a, z) in enumerate(phases):
        if t <= end_step or i == len(phases) - 1:
            pct = (t - start_step) / (end_step - start_step)
            if anneal == "cos":
                return z + (a - z) / 2.0 * (math.cos(math.pi * pct) + 1)
            return (z - a) * pct + a
        start_step = end_step
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------
# Against PyTorch's numbers.


@pytest.mark.parametrize("case", REFERENCE["cyclic"], ids=_case_id)
def test_cyclic_matches_torch(case):
    kwargs = dict(case["kwargs"])
    name = kwargs.pop("scale_fn", None)
    common = dict(
        step_size_up=kwargs["step_size_up"],
        step_size_down=kwargs.get("step_size_down"),
        mode=kwargs.get("mode", "triangular"),
        gamma=kwargs.get("gamma", 1.0),
        scale_fn=SCALE_FNS[name] if name else None,
        scale_mode=kwargs.get("scale_mode", "cycle"),
    )
    lr = po.cyclic_schedule(kwargs["base_lr"], kwargs["max_lr"], **common)
    # float32 against float64; a custom scale_fn of a float32 argument (sin(11 pi) is
    # 1e-6, not 0) costs a few float32 ulps of the amplitude.
    atol = 4e-7 * kwargs["max_lr"] if name else 1e-12
    np.testing.assert_allclose(_values(lr, case["steps"]), case["lr"], rtol=RTOL, atol=atol)

    base_m, max_m = kwargs.get("base_momentum", 0.8), kwargs.get("max_momentum", 0.9)
    momentum = po.cyclic_momentum_schedule(base_momentum=base_m, max_momentum=max_m, **common)
    np.testing.assert_allclose(
        _values(momentum, case["steps"]), case["momentum"], rtol=RTOL, atol=atol
    )
    # Cyclic momentum is the learning-rate schedule with the bounds swapped.
    swapped = po.cyclic_schedule(max_m, base_m, **common)
    np.testing.assert_allclose(
        _values(swapped, case["steps"]), case["momentum"], rtol=RTOL, atol=atol
    )


@pytest.mark.parametrize("case", REFERENCE["onecycle"], ids=_case_id)
def test_onecycle_matches_torch(case):
    kwargs = case["kwargs"]
    total = kwargs["total_steps"]
    shape = dict(
        pct_start=kwargs.get("pct_start", 0.3),
        anneal_strategy=kwargs.get("anneal_strategy", "cos"),
        three_phase=kwargs.get("three_phase", False),
    )
    lr = po.onecycle_schedule(
        total,
        kwargs["max_lr"],
        div_factor=kwargs.get("div_factor", 25.0),
        final_div_factor=kwargs.get("final_div_factor", 1e4),
        **shape,
    )
    momentum = po.onecycle_momentum_schedule(
        total,
        base_momentum=kwargs.get("base_momentum", 0.85),
        max_momentum=kwargs.get("max_momentum", 0.95),
        **shape,
    )
    steps = case["steps"]
    np.testing.assert_allclose(_values(lr, steps), case["lr"], rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(_values(momentum, steps), case["momentum"], rtol=RTOL)
    # After the cycle (where PyTorch raises) the value at transition_steps - 1 is held.
    after = [total, total + 1, 3 * total + 7]
    for schedule in (lr, momentum):
        np.testing.assert_array_equal(_values(schedule, after), float(schedule(total - 1)))
    if steps[-1] == total - 1:
        assert float(lr(total + 10)) == pytest.approx(case["lr"][-1], rel=RTOL)


def test_reference_file_covers_the_options():
    cyclic = [c["kwargs"] for c in REFERENCE["cyclic"]]
    assert {c.get("mode", "triangular") for c in cyclic} == {
        "triangular",
        "triangular2",
        "exp_range",
    }
    assert {c.get("scale_mode") for c in cyclic if "scale_fn" in c} == {"cycle", "iterations"}
    assert any(c.get("step_size_down", c["step_size_up"]) != c["step_size_up"] for c in cyclic)
    onecycle = [c["kwargs"] for c in REFERENCE["onecycle"]]
    assert {(c.get("three_phase", False), c.get("anneal_strategy", "cos")) for c in onecycle} == {
        (False, "cos"),
        (False, "linear"),
        (True, "cos"),
        (True, "linear"),
    }


# ---------------------------------------------------------------------------------------
# Against the float64 formulas, many random configurations.


def test_cyclic_matches_formula_on_random_configurations():
    rng = np.random.default_rng(0)
    modes = ["triangular", "triangular2", "exp_range", "inverse", "exp_decay"]
    for trial in range(40):
        mode = modes[trial % len(modes)]
        up = int(rng.integers(1, 40))
        down = None if trial % 3 == 0 else int(rng.integers(1, 40))
        if trial % 7 == 6:  # fractional steps take the float path
            up, down = up + 0.5, (down or up) + 0.25
        base, peak = sorted(rng.uniform(1e-4, 1.0, size=2))
        if trial % 2:
            base, peak = peak, base  # a momentum-like decreasing cycle
        gamma = float(rng.uniform(0.97, 1.0))
        scale_mode = "iterations" if trial % 4 < 2 else "cycle"
        kwargs = dict(step_size_down=down, gamma=gamma, scale_mode=scale_mode)
        if mode in SMOOTH_SCALE_FNS:
            scale_fn, scale_fn_64 = SMOOTH_SCALE_FNS[mode]
            schedule = po.cyclic_schedule(base, peak, up, scale_fn=scale_fn, **kwargs)
            ref_kwargs = dict(kwargs, scale_fn=scale_fn_64)
        else:
            schedule = po.cyclic_schedule(base, peak, up, mode=mode, **kwargs)
            ref_kwargs = dict(kwargs, mode=mode)
        steps = np.concatenate([np.arange(200), rng.integers(200, 5000, size=50)])
        expected = [torch_cyclic_lr(int(t), base, peak, up, **ref_kwargs) for t in steps]
        np.testing.assert_allclose(
            _values(schedule, steps), expected, rtol=2e-5, atol=1e-7, err_msg=f"{trial=}"
        )


def test_onecycle_matches_formula_on_random_configurations():
    rng = np.random.default_rng(1)
    steps = np.arange(EVAL_SHAPE)
    for trial in range(40):
        total = int(rng.integers(2, 300))
        pct = float(rng.choice([0.0, 0.25, 0.3, 0.5, 0.75, 1.0, rng.uniform()]))
        if float(pct * total) == 1.0:
            continue  # PyTorch divides by zero there (tested separately)
        shape = dict(
            pct_start=pct,
            anneal_strategy=["cos", "linear"][trial % 2],
            three_phase=bool(trial % 4 >= 2),
        )
        peak = float(rng.uniform(0.01, 2.0))
        div, final_div = float(rng.uniform(2, 50)), float(10 ** rng.uniform(1, 5))
        base_m, max_m = float(rng.uniform(0.5, 0.85)), float(rng.uniform(0.85, 0.99))
        lr = po.onecycle_schedule(total, peak, div_factor=div, final_div_factor=final_div, **shape)
        momentum = po.onecycle_momentum_schedule(total, base_m, max_m, **shape)
        anneal = shape.pop("anneal_strategy")
        # Past the cycle the value at total - 1 is held.
        held = np.minimum(steps, total - 1)
        lr_values = (peak / div, peak, peak / div / final_div)
        expected_lr = [torch_onecycle(t, total, lr_values, anneal=anneal, **shape) for t in held]
        expected_m = [
            torch_onecycle(t, total, (max_m, base_m, max_m), anneal=anneal, **shape) for t in held
        ]
        np.testing.assert_allclose(
            _values(lr, steps), expected_lr, rtol=1e-5, atol=1e-12, err_msg=f"{trial=}"
        )
        np.testing.assert_allclose(
            _values(momentum, steps), expected_m, rtol=1e-6, err_msg=f"{trial=}"
        )


# ---------------------------------------------------------------------------------------
# Hand-checked points.


def test_cyclic_hand_checked_points():
    # base 1, peak 3, up 2, down 4: up by 1 per step, down by 0.5 per step, period 6.
    triangular = po.cyclic_schedule(1.0, 3.0, 2, 4)
    np.testing.assert_allclose(
        _values(triangular, range(13)), [1, 2, 3, 2.5, 2, 1.5, 1, 2, 3, 2.5, 2, 1.5, 1]
    )
    # triangular2: the second cycle peaks at 1 + 2 / 2, the third at 1 + 2 / 4.
    halving = po.cyclic_schedule(1.0, 3.0, 2, 4, mode="triangular2")
    np.testing.assert_allclose(_values(halving, [2, 8, 14, 15]), [3, 2, 1.5, 1.375])
    # exp_range: amplitude 2 * gamma^t; at t = 2 (the peak): 1 + 2 * 0.25.
    decaying = po.cyclic_schedule(1.0, 3.0, 2, 4, mode="exp_range", gamma=0.5)
    np.testing.assert_allclose(_values(decaying, [0, 1, 2, 3]), [1, 1.5, 1.5, 1.1875])
    # Custom scale per cycle: 1/c.
    custom = po.cyclic_schedule(0.0, 1.0, 1, scale_fn=lambda c: 1.0 / c)
    np.testing.assert_allclose(_values(custom, range(7)), [0, 1, 0, 0.5, 0, 1 / 3, 0])
    # Custom scale per iteration: t itself.
    per_step = po.cyclic_schedule(0.0, 1.0, 2, scale_fn=lambda t: t, scale_mode="iterations")
    np.testing.assert_allclose(_values(per_step, range(5)), [0, 0.5, 2, 1.5, 0])


def test_onecycle_hand_checked_points():
    # N = 10, p = 0.3: warm-up ends at step 2, annealing at step 9.
    lin = po.onecycle_schedule(
        10, 1.0, anneal_strategy="linear", div_factor=10.0, final_div_factor=10.0
    )
    np.testing.assert_allclose(
        _values(lin, [0, 1, 2, 9, 10]), [0.1, 0.55, 1.0, 0.01, 0.01], rtol=1e-6
    )
    np.testing.assert_allclose(float(lin(5)), 1.0 + (0.01 - 1.0) * 3 / 7, rtol=1e-6)
    cos = po.onecycle_schedule(10, 1.0, div_factor=10.0, final_div_factor=10.0)
    # The cosine's midpoint is the linear one; a quarter of the way it is 1/2 + cos(pi/4)/2.
    np.testing.assert_allclose(float(cos(1)), 0.55, rtol=1e-6)
    quarter = 0.5 + math.cos(math.pi / 4) / 2
    np.testing.assert_allclose(
        float(po.onecycle_schedule(18, 1.0, 0.5)(2)), 0.04 + 0.96 * (1 - quarter), rtol=1e-6
    )
    # Three phases, N = 20, p = 0.25: peak at 4, back to v0 at 8, v_min at 19.
    three = po.onecycle_schedule(20, 1.0, 0.25, "linear", 4.0, 100.0, three_phase=True)
    np.testing.assert_allclose(
        _values(three, [0, 2, 4, 6, 8, 19]), [0.25, 0.625, 1.0, 0.625, 0.25, 0.0025], rtol=1e-6
    )
    m = po.onecycle_momentum_schedule(20, 0.8, 0.9, 0.25, "linear", three_phase=True)
    np.testing.assert_allclose(_values(m, [0, 4, 8, 12, 19, 25]), [0.9, 0.8, 0.9, 0.9, 0.9, 0.9])


def test_onecycle_zero_length_phase_takes_its_end_value():
    # pct_start * N = 1: the warm-up is the single step 0 (PyTorch divides by zero there).
    lr = po.onecycle_schedule(10, 0.5, pct_start=0.1, anneal_strategy="linear")
    momentum = po.onecycle_momentum_schedule(10, 0.85, 0.95, pct_start=0.1)
    assert float(lr(0)) == pytest.approx(0.5)
    assert float(momentum(0)) == pytest.approx(0.85)
    np.testing.assert_allclose(float(lr(5)), 0.5 + (0.5 / 25e4 - 0.5) * 5 / 9, rtol=1e-6)
    # A one-step cycle is its final value (PyTorch agrees: it is in the fixture).
    assert float(po.onecycle_schedule(1, 0.3)(0)) == pytest.approx(0.3 / 25 / 1e4)


# ---------------------------------------------------------------------------------------
# JAX behaviour.


@pytest.mark.parametrize(
    "schedule",
    [
        po.cyclic_schedule(0.01, 0.1, 3, 5, mode="exp_range", gamma=0.99),
        po.cyclic_schedule(0.01, 0.1, 2.5, 1.5, mode="triangular2"),
        po.cyclic_momentum_schedule(4),
        po.onecycle_schedule(50, 0.1, three_phase=True),
        po.onecycle_momentum_schedule(50),
    ],
    ids=["cyclic", "cyclic_fractional", "cyclic_momentum", "onecycle", "onecycle_momentum"],
)
def test_jit_with_traced_count_traces_once(schedule):
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def at(count):
        return schedule(count)

    for t in (0, 3, 7, 60, 1000):
        value = at(jnp.int32(t))
        chex.assert_shape(value, ())
        assert value.dtype == jnp.float32
        assert float(value) == pytest.approx(float(schedule(t)), rel=1e-6)
    # Python ints, NumPy ints and integral floats give the same values.
    assert float(schedule(np.int64(7))) == pytest.approx(float(schedule(7)), rel=1e-6)
    assert float(schedule(7.0)) == pytest.approx(float(schedule(7)), rel=1e-6)


def test_cyclic_is_periodic_at_large_counts():
    schedule = po.cyclic_schedule(0.001, 0.1, 2000, 1000)
    steps = np.array([0, 1, 999, 2000, 2500])
    far = steps + 3000 * 5000  # 15 million steps later
    np.testing.assert_array_equal(_values(schedule, far), _values(schedule, steps))


def test_cyclic_momentum_drives_sgd_through_inject_hyperparams():
    lr = po.cyclic_schedule(0.01, 0.1, 2)
    momentum = po.cyclic_momentum_schedule(2, base_momentum=0.8, max_momentum=0.9)
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=lr, momentum=momentum)
    params = {"w": jnp.zeros(2)}
    state = opt.init(params)
    grads = {"w": jnp.ones(2)}
    velocity, expected = 0.0, 0.0
    for t in range(5):
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        # optax's heavy ball: v = m_t v + g; w -= lr_t v.
        velocity = float(momentum(t)) * velocity + 1.0
        expected -= float(lr(t)) * velocity
        assert float(state.hyperparams["momentum"]) == pytest.approx(float(momentum(t)))
    np.testing.assert_allclose(params["w"], expected, rtol=1e-5)


def test_step_schedule_of_the_thesis_with_optax():
    # 0.1 / 0.01 / 0.001 as in the thesis (README recipe): optax's own schedule.
    schedule = optax.piecewise_constant_schedule(0.1, {150: 0.1, 225: 0.1})
    np.testing.assert_allclose(
        _values(schedule, [0, 149, 150, 224, 225]), [0.1, 0.1, 0.01, 0.01, 0.001], rtol=1e-6
    )


# ---------------------------------------------------------------------------------------
# Bad arguments.


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        (dict(step_size_up=0), "step_size_up"),
        (dict(step_size_up=-2), "step_size_up"),
        (dict(step_size_up=4, step_size_down=0), "step_size_down"),
        (dict(step_size_up=4, mode="cosine"), "mode"),
        (dict(step_size_up=4, scale_mode="epoch", scale_fn=lambda x: 1.0), "scale_mode"),
        (dict(step_size_up=4, gamma=0.0), "gamma"),
        (dict(step_size_up=4, scale_fn=0.5), "scale_fn"),
        (dict(step_size_up=4, base_value=float("nan")), "base_value"),
        (dict(step_size_up=4, peak_value="0.1"), "peak_value"),
        (dict(step_size_up=True), "step_size_up"),
    ],
)
def test_cyclic_rejects_bad_arguments(kwargs, argument):
    kwargs = {"base_value": 0.01, "peak_value": 0.1, **kwargs}
    with pytest.raises(ValueError, match=argument):
        po.cyclic_schedule(**kwargs)


def test_cyclic_momentum_rejects_bad_arguments():
    with pytest.raises(ValueError, match="max_momentum"):
        po.cyclic_momentum_schedule(4, max_momentum=float("inf"))
    with pytest.raises(ValueError, match="step_size_up"):
        po.cyclic_momentum_schedule(0)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        (dict(transition_steps=0), "transition_steps"),
        (dict(transition_steps=-5), "transition_steps"),
        (dict(transition_steps=10.0), "transition_steps"),
        (dict(pct_start=-0.1), "pct_start"),
        (dict(pct_start=1.5), "pct_start"),
        (dict(anneal_strategy="cosine"), "anneal_strategy"),
        (dict(div_factor=0.0), "div_factor"),
        (dict(final_div_factor=-1.0), "final_div_factor"),
        (dict(peak_value=0.0), "peak_value"),
    ],
)
def test_onecycle_rejects_bad_arguments(kwargs, argument):
    kwargs = {"transition_steps": 100, "peak_value": 0.1, **kwargs}
    with pytest.raises(ValueError, match=argument):
        po.onecycle_schedule(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        (dict(transition_steps=0), "transition_steps"),
        (dict(pct_start=2.0), "pct_start"),
        (dict(anneal_strategy="exp"), "anneal_strategy"),
        (dict(base_momentum=float("nan")), "base_momentum"),
    ],
)
def test_onecycle_momentum_rejects_bad_arguments(kwargs, argument):
    kwargs = {"transition_steps": 100, **kwargs}
    with pytest.raises(ValueError, match=argument):
        po.onecycle_momentum_schedule(**kwargs)
