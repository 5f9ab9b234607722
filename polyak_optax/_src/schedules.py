"""Cyclical and one-cycle schedules for the learning rate and the momentum.

Each factory validates its arguments and returns an optax schedule: a function of the
step count, jittable with a traced count, that returns a float32 scalar. The values follow
PyTorch's ``CyclicLR`` and ``OneCycleLR`` step for step, so that a recipe written for
``torch.optim.lr_scheduler`` carries over unchanged.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")
_SCALE_MODES = ("cycle", "iterations")
_ANNEAL_STRATEGIES = ("cos", "linear")


def cyclic_schedule(
    base_value: float,
    peak_value: float,
    step_size_up: float,
    step_size_down: float | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable[[jax.Array], jax.typing.ArrayLike] | None = None,
    scale_mode: str = "cycle",
) -> optax.Schedule:
    r"""Cyclical schedule (Smith's CLR), equal to PyTorch's ``CyclicLR``.

    With :math:`u` = ``step_size_up``, :math:`d` = ``step_size_down``, :math:`T = u + d`,
    the value after :math:`t` steps is

    .. math::
      c = \lfloor 1 + t / T \rfloor, \quad x = 1 + t / T - c, \quad
      s = \begin{cases} x T / u & x \le u / T \\ (1 - x) T / d & \text{otherwise}
      \end{cases}

      v(t) = b + (p - b)\, s\, \phi,

    where :math:`b` is ``base_value``, :math:`p` is ``peak_value`` and :math:`\phi` the
    amplitude scale: 1 (``triangular``), :math:`2^{1 - c}` (``triangular2``, halving
    every cycle), :math:`\gamma^t` (``exp_range``), or ``scale_fn(c)`` /
    ``scale_fn(t)`` for a custom ``scale_fn`` with ``scale_mode`` ``"cycle"`` /
    ``"iterations"``. ``v(t)`` is PyTorch's learning rate after ``t`` calls of
    ``scheduler.step()``: ``v(0) = b``, the peak is reached at ``t = u``.

    Swapping the bounds gives PyTorch's cyclic momentum (``cycle_momentum=True``): the
    momentum ``max_momentum - (max_momentum - base_momentum) s phi`` is
    ``cyclic_schedule(max_momentum, base_momentum, ...)``; see
    :func:`cyclic_momentum_schedule`.

    Args:
      base_value: value at the start of every cycle (the lower bound for a learning rate).
      peak_value: value at the top of the first cycle (before amplitude scaling).
      step_size_up: steps from ``base_value`` up to ``peak_value`` (positive; may be
        fractional, as in PyTorch).
      step_size_down: steps back down; ``None`` means ``step_size_up``.
      mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``; not used when
        ``scale_fn`` is given (as in PyTorch), but still checked.
      gamma: base of the ``exp_range`` decay :math:`\gamma^t` (positive).
      scale_fn: custom amplitude scale, a jittable function of a float32 scalar (the
        1-based cycle number or the step count) with values in [0, 1].
      scale_mode: ``"cycle"`` or ``"iterations"``: what ``scale_fn`` receives. Ignored
        without ``scale_fn``: the built-in modes fix it as PyTorch does.

    Returns:
      A schedule ``count -> float32 scalar``, jittable with a traced count.

    Raises:
      ValueError: for non-finite bounds, a non-positive step size or ``gamma``, an
        unknown ``mode`` or ``scale_mode``, or a ``scale_fn`` that is not callable.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import polyak_optax as po
      >>> schedule = po.cyclic_schedule(0.01, 0.1, step_size_up=2, mode="triangular2")
      >>> [round(float(schedule(t)), 4) for t in range(9)]
      [0.01, 0.055, 0.1, 0.055, 0.01, 0.0325, 0.055, 0.0325, 0.01]
      >>> opt = optax.sgd(learning_rate=schedule)
      >>> params = {"w": jnp.ones(2)}
      >>> state = opt.init(params)
      >>> updates, state = opt.update({"w": jnp.ones(2)}, state, params)
      >>> params = optax.apply_updates(params, updates)
      >>> params["w"]
      Array([0.99, 0.99], dtype=float32)

    References:
      Smith, `Cyclical Learning Rates for Training Neural Networks
      <https://arxiv.org/abs/1506.01186>`_, 2017.
    """
    base = _finite_float("base_value", base_value)
    peak = _finite_float("peak_value", peak_value)
    up = _positive_float("step_size_up", step_size_up)
    down = up if step_size_down is None else _positive_float("step_size_down", step_size_down)
    _check_choice("mode", mode, _CYCLIC_MODES)
    _check_choice("scale_mode", scale_mode, _SCALE_MODES)
    gamma = _positive_float("gamma", gamma)
    if scale_fn is not None and not callable(scale_fn):
        raise ValueError(f"scale_fn must be callable or None, got {scale_fn!r}")

    if scale_fn is None:
        if mode == "triangular":
            scale_fn, scale_mode = None, "cycle"
        elif mode == "triangular2":
            scale_fn, scale_mode = (lambda c: jnp.exp2(1.0 - c)), "cycle"
        else:
            log_gamma = math.log(gamma)
            scale_fn, scale_mode = (lambda t: jnp.exp(log_gamma * t)), "iterations"

    total = up + down
    integral = up.is_integer() and down.is_integer() and total < 2**31

    def schedule(count: jax.typing.ArrayLike) -> jax.Array:
        count = jnp.maximum(jnp.asarray(count), 0)
        if integral and jnp.issubdtype(count.dtype, jnp.integer):
            # Exact integer arithmetic: the cycle and the position in it never drift.
            cycles_done = count // int(total)
            position = (count - cycles_done * int(total)).astype(jnp.float32)
            cycle = cycles_done.astype(jnp.float32) + 1.0
            rising = position <= up
            factor = jnp.where(rising, position / up, (total - position) / down)
        else:  # PyTorch's float formula, for fractional step sizes or counts.
            t = count.astype(jnp.float32)
            cycle = jnp.floor(1.0 + t / total)
            x = 1.0 + t / total - cycle
            ratio = up / total
            factor = jnp.where(x <= ratio, x / ratio, (x - 1.0) / (ratio - 1.0))
        if scale_fn is None:
            scale = jnp.float32(1.0)
        else:
            argument = cycle if scale_mode == "cycle" else count.astype(jnp.float32)
            scale = jnp.asarray(scale_fn(argument), jnp.float32)
        return jnp.asarray(base + (peak - base) * factor * scale, jnp.float32)

    return schedule


def cyclic_momentum_schedule(
    step_size_up: float,
    base_momentum: float = 0.8,
    max_momentum: float = 0.9,
    step_size_down: float | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable[[jax.Array], jax.typing.ArrayLike] | None = None,
    scale_mode: str = "cycle",
) -> optax.Schedule:
    r"""Cyclic momentum, inverse to :func:`cyclic_schedule`: PyTorch's ``cycle_momentum``.

    The momentum starts every cycle at ``max_momentum`` and falls to ``base_momentum``
    while the learning rate of a :func:`cyclic_schedule` with the same step sizes and mode
    rises: :math:`m(t) = m_{max} - (m_{max} - m_{base})\, s\, \phi`, i.e.
    ``cyclic_schedule(max_momentum, base_momentum, ...)``. Defaults are PyTorch's.

    Args:
      step_size_up: steps of the rising half of the learning-rate cycle.
      base_momentum: momentum at the learning-rate peak.
      max_momentum: momentum at the start of every cycle.
      step_size_down: steps of the falling half; ``None`` means ``step_size_up``.
      mode: as in :func:`cyclic_schedule`.
      gamma: as in :func:`cyclic_schedule`.
      scale_fn: as in :func:`cyclic_schedule`.
      scale_mode: as in :func:`cyclic_schedule`.

    Returns:
      A schedule ``count -> float32 scalar``.

    Raises:
      ValueError: as :func:`cyclic_schedule`, naming ``base_momentum``/``max_momentum``.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import polyak_optax as po
      >>> momentum = po.cyclic_momentum_schedule(2, base_momentum=0.8, max_momentum=0.9)
      >>> [round(float(momentum(t)), 3) for t in range(5)]
      [0.9, 0.85, 0.8, 0.85, 0.9]
      >>> opt = optax.inject_hyperparams(optax.sgd)(
      ...     learning_rate=po.cyclic_schedule(0.01, 0.1, 2), momentum=momentum)
      >>> params = {"w": jnp.ones(2)}
      >>> state = opt.init(params)
      >>> updates, state = opt.update({"w": jnp.ones(2)}, state, params)
      >>> params = optax.apply_updates(params, updates)
      >>> round(float(state.hyperparams["momentum"]), 3)
      0.9

    References:
      Smith, `A disciplined approach to neural network hyper-parameters: Part 1
      <https://arxiv.org/abs/1803.09820>`_, 2018.
    """
    _finite_float("base_momentum", base_momentum)
    _finite_float("max_momentum", max_momentum)
    return cyclic_schedule(
        max_momentum,
        base_momentum,
        step_size_up,
        step_size_down,
        mode=mode,
        gamma=gamma,
        scale_fn=scale_fn,
        scale_mode=scale_mode,
    )


def onecycle_schedule(
    transition_steps: int,
    peak_value: float,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> optax.Schedule:
    r"""One-cycle learning rate, equal to PyTorch's ``OneCycleLR`` (then held constant).

    With :math:`N` = ``transition_steps``, :math:`p` = ``pct_start``, the initial value
    :math:`v_0 = v_{max} / \text{div\_factor}` and the final one
    :math:`v_{min} = v_0 / \text{final\_div\_factor}`, the phases end at the steps
    (PyTorch's boundaries, fractional ones included)

    * two phases: :math:`v_0 \to v_{max}` until :math:`pN - 1`, then
      :math:`v_{max} \to v_{min}` until :math:`N - 1`;
    * three phases: :math:`v_0 \to v_{max}` until :math:`pN - 1`, :math:`v_{max} \to v_0`
      until :math:`2pN - 2`, then :math:`v_0 \to v_{min}` until :math:`N - 1`.

    In a phase from step :math:`s` to :math:`e`, :math:`\pi_t = (t - s) / (e - s)` and the
    value goes from :math:`a` to :math:`z` as :math:`z + (a - z)(1 + \cos \pi \pi_t) / 2`
    (``"cos"``) or :math:`a + (z - a) \pi_t` (``"linear"``). For
    :math:`0 \le t < N` this is ``OneCycleLR(max_lr=peak_value, total_steps=N, ...)``'s
    learning rate after ``t`` calls of ``step()``; for :math:`t \ge N` (where PyTorch
    raises) the value at :math:`N - 1` is held. A phase of zero length (e.g.
    :math:`pN = 1`, where PyTorch divides by zero) takes its end value.

    Args:
      transition_steps: total number of steps :math:`N` of the cycle (positive int).
      peak_value: the maximum learning rate :math:`v_{max}` (positive).
      pct_start: fraction of the cycle spent increasing the value, in [0, 1].
      anneal_strategy: ``"cos"`` or ``"linear"``.
      div_factor: :math:`v_{max} / v_0` (positive).
      final_div_factor: :math:`v_0 / v_{min}` (positive).
      three_phase: use fastai's/PyTorch's three-phase variant (symmetric warm-up and
        cool-down, then annihilation).

    Returns:
      A schedule ``count -> float32 scalar``, jittable with a traced count.

    Raises:
      ValueError: for a non-positive ``transition_steps``, ``peak_value`` or division
        factor, ``pct_start`` outside [0, 1] or an unknown ``anneal_strategy``.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import polyak_optax as po
      >>> schedule = po.onecycle_schedule(10, 0.1, pct_start=0.3, anneal_strategy="linear")
      >>> [round(float(schedule(t)), 4) for t in (0, 1, 2, 9, 100)]
      [0.004, 0.052, 0.1, 0.0, 0.0]
      >>> opt = optax.sgd(learning_rate=schedule)
      >>> params = {"w": jnp.ones(2)}
      >>> state = opt.init(params)
      >>> updates, state = opt.update({"w": jnp.ones(2)}, state, params)
      >>> params = optax.apply_updates(params, updates)
      >>> params["w"]
      Array([0.996, 0.996], dtype=float32)

    References:
      Smith and Topin, `Super-Convergence: Very Fast Training of Neural Networks Using
      Large Learning Rates <https://arxiv.org/abs/1708.07120>`_, 2019.
    """
    total = _positive_int("transition_steps", transition_steps)
    peak = _positive_float("peak_value", peak_value)
    pct = _unit_interval("pct_start", pct_start)
    _check_choice("anneal_strategy", anneal_strategy, _ANNEAL_STRATEGIES)
    div = _positive_float("div_factor", div_factor)
    final_div = _positive_float("final_div_factor", final_div_factor)
    initial = peak / div
    final = initial / final_div
    if three_phase:
        values = ((initial, peak), (peak, initial), (initial, final))
    else:
        values = ((initial, peak), (peak, final))
    return _phased_schedule(_onecycle_ends(total, pct, three_phase), values, anneal_strategy)


def onecycle_momentum_schedule(
    transition_steps: int,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    three_phase: bool = False,
) -> optax.Schedule:
    r"""One-cycle momentum, equal to PyTorch's ``OneCycleLR`` momentum (then held constant).

    The momentum moves inversely to :func:`onecycle_schedule` over the same phases:
    ``max_momentum`` to ``base_momentum`` while the learning rate warms up, back to
    ``max_momentum`` while it anneals (two phases), or back during the second phase and
    constant at ``max_momentum`` in the third (three phases). Defaults are PyTorch's.

    Args:
      transition_steps: total number of steps of the cycle (positive int).
      base_momentum: momentum at the learning-rate peak.
      max_momentum: momentum at the start and the end of the cycle.
      pct_start: fraction of the cycle spent increasing the learning rate, in [0, 1].
      anneal_strategy: ``"cos"`` or ``"linear"``.
      three_phase: the three-phase variant, as in :func:`onecycle_schedule`.

    Returns:
      A schedule ``count -> float32 scalar`` (for ``optax.inject_hyperparams``).

    Raises:
      ValueError: for a non-positive ``transition_steps``, non-finite momenta,
        ``pct_start`` outside [0, 1] or an unknown ``anneal_strategy``.

    Example:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import polyak_optax as po
      >>> momentum = po.onecycle_momentum_schedule(10, anneal_strategy="linear")
      >>> [round(float(momentum(t)), 3) for t in (0, 1, 2, 9)]
      [0.95, 0.9, 0.85, 0.95]
      >>> opt = optax.inject_hyperparams(optax.sgd)(
      ...     learning_rate=po.onecycle_schedule(10, 0.1), momentum=momentum)
      >>> params = {"w": jnp.ones(2)}
      >>> state = opt.init(params)
      >>> updates, state = opt.update({"w": jnp.ones(2)}, state, params)
      >>> params = optax.apply_updates(params, updates)
      >>> params["w"]
      Array([0.996, 0.996], dtype=float32)

    References:
      Smith, `A disciplined approach to neural network hyper-parameters: Part 1
      <https://arxiv.org/abs/1803.09820>`_, 2018.
    """
    total = _positive_int("transition_steps", transition_steps)
    low = _finite_float("base_momentum", base_momentum)
    high = _finite_float("max_momentum", max_momentum)
    pct = _unit_interval("pct_start", pct_start)
    _check_choice("anneal_strategy", anneal_strategy, _ANNEAL_STRATEGIES)
    values = ((high, low), (low, high))  # warm-up, annealing
    if three_phase:  # warm-up, cool-down, flat at max_momentum while the lr annihilates
        values = (*values, (high, high))
    return _phased_schedule(_onecycle_ends(total, pct, three_phase), values, anneal_strategy)


def _onecycle_ends(total: int, pct_start: float, three_phase: bool) -> tuple[float, ...]:
    """The last step of each phase, exactly as PyTorch's ``OneCycleLR`` computes it."""
    if three_phase:
        return (
            float(pct_start * total) - 1,
            float(2 * pct_start * total) - 2,
            float(total - 1),
        )
    return (float(pct_start * total) - 1, float(total - 1))


def _phased_schedule(
    ends: Sequence[float],
    values: Sequence[tuple[float, float]],
    anneal_strategy: str,
) -> optax.Schedule:
    """Anneals ``values[i]`` over phase i, which ends at step ``ends[i]`` (PyTorch's rule).

    Step t belongs to the first phase with ``t <= ends[i]`` (the last phase otherwise);
    the phase starts where the previous one ended (0 for the first). The last step
    ``ends[-1]`` is held afterwards.
    """
    last_step = ends[-1]
    phases = []
    start = 0.0
    for end, (first, final) in zip(ends, values, strict=True):
        length = end - start
        # t <= end for an integer t is t <= floor(end): the comparison is exact in float32.
        phases.append((float(math.floor(end)), start, end, length, first, final))
        start = end

    def anneal(first: float, final: float, done: jax.Array, left: jax.Array) -> jax.Array:
        # ``done`` = (t - s) / (e - s) and ``left`` = (e - t) / (e - s), each computed
        # directly so that neither end loses precision to cancellation (the final value
        # is often 1e-5 of the peak).
        if anneal_strategy == "cos":
            # z + (a - z)(1 + cos(pi done)) / 2 = a sin^2(pi left / 2) + z cos^2(pi left / 2)
            weight = jnp.sin(0.5 * jnp.pi * left) ** 2
            return first * weight + final * (1.0 - weight)
        return first * left + final * done

    def schedule(count: jax.typing.ArrayLike) -> jax.Array:
        t = jnp.clip(jnp.asarray(count).astype(jnp.float32), 0.0, last_step)
        conditions, choices = [], []
        for floor_end, start, end, length, first, final in phases:
            conditions.append(t <= floor_end)
            if length == 0.0:  # zero-length phase: PyTorch divides by zero; take its end.
                choices.append(jnp.float32(final))
                continue
            done = (t - jnp.float32(start)) / jnp.float32(length)
            left = (jnp.float32(end) - t) / jnp.float32(length)
            choices.append(anneal(first, final, done, left))
        # The first phase whose end is not behind t; the last phase otherwise.
        value = jnp.select(conditions[:-1], choices[:-1], default=choices[-1])
        return jnp.asarray(value, jnp.float32)

    return schedule


def _check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _finite_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _positive_float(name: str, value: object) -> float:
    value = _finite_float(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return value


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _unit_interval(name: str, value: object) -> float:
    value = _finite_float(name, value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return value
