"""Optimizers and learning-rate/momentum schedules built from the training flags.

Every optimizer is returned as an ``optax.GradientTransformationExtraArgs`` that accepts
the loss as ``value=`` (the adaptive Nesterov step needs it; the others drop it), whose
learning rate (and momentum) live in ``optax.inject_hyperparams`` state, so that they can
be scheduled and read back with :func:`learning_rate_of`. Schedules count *optimizer
steps*: with minibatch persistency K an epoch of ``steps_per_epoch`` batches is
``K * steps_per_epoch`` steps.

Schedules (thesis chapters 2-3 and Smith's notes):

* ``constant``: the learning rate throughout.
* ``step``: x0.1 at 50% and again at 75% of training (the thesis's 0.1 / 0.01 / 0.001 over
  150 / 75 / 75 of 300 epochs).
* ``cyclic``: Smith's triangular CLR between ``min_learning_rate`` and ``learning_rate``,
  each half-cycle ``cycle_epochs`` epochs of optimizer steps (the thesis used a stepsize of
  10 epochs' iterations).
* ``onecycle``: Smith's one-cycle policy peaking at ``learning_rate``, momentum cycling the
  other way between ``momentum - 0.1`` and ``momentum`` (PyTorch's 0.85 / 0.95 by default).

For ``adaptive_nesterov`` the step size eta is computed by the Polyak rule and clipped to
``[min_learning_rate, max_learning_rate]`` (thesis: [1e-3, 1e-1]); ``learning_rate`` is
the ceiling ``max_learning_rate`` and the schedule applies to that ceiling. Where the
scheduled ceiling falls below the floor (the end of ``step`` or ``onecycle``), eta is the
ceiling.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

import polyak_optax as po

OPTIMIZERS = ("sgd", "nesterov", "adaptive_nesterov", "adagrad", "adam")
SCHEDULES = ("constant", "step", "cyclic", "onecycle")

DEFAULT_LEARNING_RATES = {
    "sgd": 0.05,
    "nesterov": 0.05,
    "adaptive_nesterov": 0.1,  # thesis: eta clipped to [1e-3, 1e-1]
    "adagrad": 0.01,
    "adam": 1e-3,
}
# The thesis's adaptive Nesterov uses alpha = 0.9; PyTorch's one-cycle cycles momentum
# between 0.85 and 0.95.
DEFAULT_MOMENTUM = 0.9
DEFAULT_ONECYCLE_MAX_MOMENTUM = 0.95
ONECYCLE_MOMENTUM_RANGE = 0.1
ADAPTIVE_MIN_LEARNING_RATE = 1e-3  # thesis: eta >= 0.001
CYCLIC_BASE_FRACTION = 0.1  # default lower CLR bound: learning_rate / 10
STEP_BOUNDARIES = (0.5, 0.75)  # fractions of training where the step schedule x0.1
STEP_FACTOR = 0.1
ONECYCLE_DIV_FACTOR = 25.0
ONECYCLE_FINAL_DIV_FACTOR = 1e4


def default_learning_rate(name: str) -> float:
    """The learning rate an optimizer gets when ``--learning-rate`` is not given.

    Example:
      >>> default_learning_rate("adaptive_nesterov")
      0.1
    """
    _check_choice("optimizer", name, OPTIMIZERS)
    return DEFAULT_LEARNING_RATES[name]


def default_momentum(name: str, schedule: str = "constant") -> float | None:
    """The momentum an optimizer gets when ``--momentum`` is not given.

    ``None`` for AdaGrad (which has none); for Adam the momentum is ``b1``; under the
    one-cycle schedule it is the *maximum* momentum of the cycle.

    Example:
      >>> default_momentum("nesterov"), default_momentum("sgd", "onecycle")
      (0.9, 0.95)
    """
    _check_choice("optimizer", name, OPTIMIZERS)
    _check_choice("schedule", schedule, SCHEDULES)
    if name == "adagrad":
        return None
    return DEFAULT_ONECYCLE_MAX_MOMENTUM if schedule == "onecycle" else DEFAULT_MOMENTUM


def build_schedule(
    schedule: str,
    learning_rate: float,
    *,
    total_steps: int,
    steps_per_epoch: int = 1,
    persistency: int = 1,
    min_learning_rate: float | None = None,
    cycle_epochs: float = 10.0,
) -> optax.ScalarOrSchedule:
    """The learning-rate schedule named ``schedule``, counting optimizer steps.

    Args:
      schedule: one of ``constant``, ``step``, ``cyclic``, ``onecycle``.
      learning_rate: the base rate (``constant``, ``step``) or the peak (``cyclic``,
        ``onecycle``).
      total_steps: optimizer steps of the whole run (epochs x batches x persistency).
      steps_per_epoch: batches per epoch.
      persistency: optimizer steps per batch (K).
      min_learning_rate: the lower bound of ``cyclic`` (default ``learning_rate / 10``).
      cycle_epochs: half-cycle of ``cyclic`` in epochs (thesis: 10).

    Returns:
      A float (``constant``) or an optax schedule.

    Raises:
      ValueError: for an unknown schedule or a non-positive size.

    Example:
      >>> s = build_schedule("step", 0.1, total_steps=100)
      >>> [round(float(s(t)), 6) for t in (0, 49, 50, 75, 99)]
      [0.1, 0.1, 0.01, 0.001, 0.001]
    """
    _check_choice("schedule", schedule, SCHEDULES)
    _check_positive_int("total_steps", total_steps)
    _check_positive_int("steps_per_epoch", steps_per_epoch)
    _check_positive_int("persistency", persistency)
    if schedule == "constant":
        return learning_rate
    if schedule == "step":
        boundaries = {max(1, round(f * total_steps)): STEP_FACTOR for f in STEP_BOUNDARIES}
        if len(boundaries) < len(STEP_BOUNDARIES):  # very short runs: both steps coincide
            (step,) = boundaries
            boundaries = {step: STEP_FACTOR**2}
        return optax.piecewise_constant_schedule(learning_rate, boundaries)
    if schedule == "cyclic":
        if not cycle_epochs > 0:
            raise ValueError(f"cycle_epochs must be positive, got {cycle_epochs}")
        base = cyclic_base_learning_rate(learning_rate, min_learning_rate)
        step_size = max(1, round(cycle_epochs * steps_per_epoch * persistency))
        return po.cyclic_schedule(base, learning_rate, step_size)
    return po.onecycle_schedule(
        total_steps,
        learning_rate,
        div_factor=ONECYCLE_DIV_FACTOR,
        final_div_factor=ONECYCLE_FINAL_DIV_FACTOR,
    )


def cyclic_base_learning_rate(learning_rate: float, min_learning_rate: float | None) -> float:
    """The lower CLR bound: ``min_learning_rate`` or ``learning_rate / 10``.

    Example:
      >>> cyclic_base_learning_rate(0.1, None)
      0.01
    """
    if min_learning_rate is None:
        return learning_rate * CYCLIC_BASE_FRACTION
    if not 0 <= min_learning_rate <= learning_rate:
        raise ValueError(
            f"min_learning_rate must be in [0, learning_rate={learning_rate}] for the cyclic "
            f"schedule, got {min_learning_rate}"
        )
    return min_learning_rate


def build_momentum_schedule(
    schedule: str, momentum: float | None, *, total_steps: int
) -> optax.ScalarOrSchedule | None:
    """The momentum: constant, or cycling inversely to the learning rate under ``onecycle``.

    Example:
      >>> m = build_momentum_schedule("onecycle", 0.95, total_steps=100)
      >>> round(float(m(0)), 4), round(float(m(30)), 4)
      (0.95, 0.85)
    """
    if momentum is None or schedule != "onecycle":
        return momentum
    return po.onecycle_momentum_schedule(
        total_steps,
        base_momentum=max(0.0, momentum - ONECYCLE_MOMENTUM_RANGE),
        max_momentum=momentum,
    )


def build_optimizer(
    name: str,
    learning_rate: float | None = None,
    momentum: float | None = None,
    *,
    schedule: str = "constant",
    steps_per_epoch: int = 1,
    epochs: int = 1,
    persistency: int = 1,
    layerwise: bool = False,
    min_learning_rate: float | None = None,
    cycle_epochs: float = 10.0,
) -> optax.GradientTransformationExtraArgs:
    """Builds the optimizer of the training CLI (and of the benchmarks).

    Args:
      name: ``sgd`` (heavy-ball momentum), ``nesterov``, ``adaptive_nesterov`` (thesis
        Algorithm 5, thesis defaults), ``adagrad`` or ``adam``.
      learning_rate: the learning rate (the peak for ``cyclic``/``onecycle``; the eta
        ceiling for ``adaptive_nesterov``); ``None`` takes :func:`default_learning_rate`.
      momentum: momentum (``b1`` for Adam; the maximum of the cycle for ``onecycle``);
        ``None`` takes :func:`default_momentum`. AdaGrad refuses a momentum.
      schedule: ``constant``, ``step``, ``cyclic`` or ``onecycle`` (see the module doc).
      steps_per_epoch: batches per epoch.
      epochs: epochs of the run (the length of ``step`` and ``onecycle``).
      persistency: optimizer steps per batch K; schedules count optimizer steps.
      layerwise: wrap in ``po.layerwise`` (layer-specific factor 1 + log(1 + 1/||g_l||),
        one layer per parameter array).
      min_learning_rate: the eta floor of ``adaptive_nesterov`` (thesis 1e-3; a scheduled
        ceiling below it wins) or the lower bound of ``cyclic`` (default
        ``learning_rate / 10``).
      cycle_epochs: the half-cycle of ``cyclic`` in epochs.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; call its ``update`` with ``value=loss``.

    Raises:
      ValueError: for unknown names, non-positive sizes or rates, momentum outside [0, 1).

    Example:
      >>> import jax.numpy as jnp
      >>> tx = build_optimizer("nesterov", 0.1, 0.9, schedule="step", steps_per_epoch=5,
      ...                      epochs=4, persistency=2)
      >>> params = {"w": jnp.ones(3)}
      >>> state = tx.init(params)
      >>> updates, state = tx.update(params, state, params, value=jnp.float32(1.0))
      >>> params = optax.apply_updates(params, updates)
      >>> float(learning_rate_of(state))
      0.1
    """
    _check_choice("optimizer", name, OPTIMIZERS)
    _check_choice("schedule", schedule, SCHEDULES)
    _check_positive_int("steps_per_epoch", steps_per_epoch)
    _check_positive_int("epochs", epochs)
    _check_positive_int("persistency", persistency)
    if learning_rate is None:
        learning_rate = default_learning_rate(name)
    if momentum is None:
        momentum = default_momentum(name, schedule)
    elif name == "adagrad":
        raise ValueError("momentum: adagrad has no momentum; leave it unset")
    if isinstance(learning_rate, (int, float)) and not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate}")
    if momentum is not None and not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if min_learning_rate is not None and not min_learning_rate >= 0:
        raise ValueError(f"min_learning_rate must be non-negative, got {min_learning_rate}")
    total_steps = epochs * steps_per_epoch * persistency
    momentum_schedule = build_momentum_schedule(schedule, momentum, total_steps=total_steps)

    if name == "adaptive_nesterov":
        inner = _adaptive_nesterov(
            learning_rate,
            momentum_schedule,
            schedule=schedule,
            min_learning_rate=min_learning_rate,
            total_steps=total_steps,
            steps_per_epoch=steps_per_epoch,
            persistency=persistency,
            cycle_epochs=cycle_epochs,
        )
    else:
        lr = build_schedule(
            schedule,
            learning_rate,
            total_steps=total_steps,
            steps_per_epoch=steps_per_epoch,
            persistency=persistency,
            min_learning_rate=min_learning_rate,
            cycle_epochs=cycle_epochs,
        )
        if name in ("sgd", "nesterov"):
            inner = optax.inject_hyperparams(optax.sgd, static_args=("nesterov",))(
                learning_rate=lr, momentum=momentum_schedule, nesterov=name == "nesterov"
            )
        elif name == "adam":
            inner = optax.inject_hyperparams(optax.adam)(learning_rate=lr, b1=momentum_schedule)
        else:
            inner = optax.inject_hyperparams(optax.adagrad)(learning_rate=lr)
    if layerwise:
        inner = po.layerwise(inner)
    return optax.with_extra_args_support(inner)


def _adaptive_nesterov(
    learning_rate: float,
    momentum: optax.ScalarOrSchedule,
    *,
    schedule: str,
    min_learning_rate: float | None,
    total_steps: int,
    steps_per_epoch: int,
    persistency: int,
    cycle_epochs: float,
) -> optax.GradientTransformationExtraArgs:
    """Adaptive Nesterov with the scheduled eta ceiling and, for one-cycle, cyclic momentum."""
    cyclic_base = min_learning_rate if schedule == "cyclic" else None
    ceiling = build_schedule(
        schedule,
        learning_rate,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        persistency=persistency,
        min_learning_rate=cyclic_base,
        cycle_epochs=cycle_epochs,
    )
    # The thesis's floor (or the user's); where the scheduled ceiling falls below it, the
    # ceiling wins (eta = min(max(ratio, floor), ceiling)), so one-cycle can anneal to ~0.
    floor = ADAPTIVE_MIN_LEARNING_RATE if cyclic_base is not None else min_learning_rate
    if floor is None:
        floor = ADAPTIVE_MIN_LEARNING_RATE
    kwargs: dict[str, Any] = {"min_learning_rate": floor, "max_learning_rate": ceiling}
    if callable(momentum):
        return optax.inject_hyperparams(
            po.adaptive_nesterov,
            static_args=(
                "confidence",
                "f_min",
                "min_learning_rate",
                "max_learning_rate",
                "min_grad_sq_norm",
                "max_grad_sq_norm",
            ),
        )(momentum=momentum, **kwargs)
    return po.adaptive_nesterov(momentum=momentum, **kwargs)


def learning_rate_of(opt_state: optax.OptState) -> jax.Array:
    """The learning rate of the last update (adaptive Nesterov: its eta).

    Reads the one array field called ``learning_rate`` of the state: the injected
    hyperparameter of ``optax.inject_hyperparams`` or adaptive Nesterov's eta.

    Example:
      >>> tx = build_optimizer("adam", 0.01)
      >>> float(learning_rate_of(tx.init({"w": jnp.zeros(2)})))
      0.01
    """
    return jnp.asarray(
        optax.tree.get(
            opt_state, "learning_rate", filtering=lambda _, value: isinstance(value, jax.Array)
        )
    )


def _check_choice(argument: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{argument} must be one of {', '.join(choices)}; got {value!r}")


def _check_positive_int(argument: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{argument} must be a positive integer, got {value!r}")
