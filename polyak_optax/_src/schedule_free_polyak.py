"""Schedule-free Polyak: schedule-free SGD whose step is a capped Polyak step.

The library's second tuning-free preset (issue 11), beside
:func:`polyak_optax.tuning_free_nesterov`: Defazio et al.'s schedule-free averaging
(``optax.contrib.schedule_free``) in place of Nesterov's momentum, over a Polyak step
that needs no learning rate.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from polyak_optax._src.adaptive_nesterov import _concrete

__all__ = ("PolyakStepState", "scale_by_polyak_step", "schedule_free_polyak")


class PolyakStepState(NamedTuple):
    """State of :func:`scale_by_polyak_step`.

    Attributes:
      count: number of updates applied (a skipped non-finite step does not count); the
        ``max_learning_rate`` schedule reads it.
      learning_rate: the step :math:`\\tau_k` of the last update (0 before the first).
    """

    count: jax.Array  # shape=(), int32
    learning_rate: jax.Array  # shape=(), float32 at least


def capped_polyak_step(
    loss: jax.Array, sq_norm: jax.Array, ceiling: jax.Array, confidence: float, f_min: Any
) -> jax.Array:
    r""":math:`\min(\lambda, \gamma\,\max(L - f^\star, 0) / \|g\|^2)`; the ceiling when g = 0.

    Example:
      >>> float(capped_polyak_step(jnp.array(5.0), jnp.array(20.0), jnp.array(1.0), 2.0, 0.0))
      0.5
    """
    gap = jnp.maximum(loss - f_min, 0)
    tau = jnp.minimum(ceiling, confidence * gap / jnp.where(sq_norm > 0, sq_norm, 1))
    return jnp.where(sq_norm > 0, tau, ceiling)


def polyak_step_inputs(
    updates: optax.Updates,
    value: jax.typing.ArrayLike | None,
    count: jax.Array,
    max_learning_rate: optax.ScalarOrSchedule,
    dtype: Any,
    sq_norm: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(loss, ||g||^2, both finite, ceiling)`` in ``dtype`` for one Polyak update.

    ``sq_norm``, when given, replaces ``||updates||^2`` (a preconditioned step passes
    :math:`g^\top D^{-1} g`).

    Raises:
      ValueError: when ``value`` (the loss) is missing.

    Example:
      >>> loss, sq, finite, ceiling = polyak_step_inputs(
      ...     jnp.array([3.0, 4.0]), 5.0, jnp.array(0), lambda c: 0.5, jnp.float32)
      >>> float(loss), float(sq), bool(finite), float(ceiling)
      (5.0, 25.0, True, 0.5)
    """
    if value is None:
        raise ValueError("value: pass the loss at params, update(..., value=loss)")
    loss = jnp.asarray(value, dtype).reshape(())
    if sq_norm is None:
        sq_norm = optax.tree.norm(updates, squared=True)
    sq = jnp.asarray(sq_norm).astype(dtype)
    finite = jnp.isfinite(loss) & jnp.isfinite(sq)
    rate = max_learning_rate(count) if callable(max_learning_rate) else max_learning_rate
    return loss, sq, finite, jnp.asarray(rate, dtype)


def check_polyak_hyperparameters(
    max_learning_rate: optax.ScalarOrSchedule, confidence: float, f_min: float
) -> None:
    """A ``ValueError`` naming the first bad argument of a capped Polyak step.

    A value traced by ``optax.inject_hyperparams`` under ``jit`` cannot be checked and
    passes.
    """
    if not callable(max_learning_rate):
        check_number("max_learning_rate", max_learning_rate, "positive", lambda v: v > 0)
    check_number("confidence", confidence, "positive and finite", lambda v: 0 < v < np.inf)
    check_number("f_min", f_min, "finite", np.isfinite)


def check_number(name: str, value: Any, requirement: str, ok: Any) -> None:
    """A ``ValueError`` naming ``name`` unless ``ok(float(value))``; a traced value passes.

    Example:
      >>> check_number("b1", 1.5, "in (0, 1)", lambda v: 0 < v < 1)
      Traceback (most recent call last):
      ...
      ValueError: b1 must be in (0, 1), got 1.5
    """
    if callable(value):
        raise ValueError(f"{name} must be a number, not a schedule, got {value!r}")
    number = _concrete(name, value)
    if number is not None and not ok(number):
        raise ValueError(f"{name} must be {requirement}, got {value!r}")


def scale_by_polyak_step(
    max_learning_rate: optax.ScalarOrSchedule = 1.0,
    confidence: float = 2.0,
    f_min: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    r"""Scales the gradient by the capped Polyak step :math:`\tau_k` (no momentum).

    .. math::

      \tau_k = \min\left(\lambda_k,\ \gamma\, \frac{\max(L_k - f^\star, 0)}
          {\|g_k\|^2}\right)

    with :math:`\lambda_k` = ``max_learning_rate`` (a number or a schedule of the
    update count). Unlike ``optax.scale_by_polyak`` the ceiling may be a schedule, the
    confidence :math:`\gamma` is explicit, and a non-finite loss or gradient skips the
    step (zero update, state kept). The state holds no params-sized buffer.

    Args:
      max_learning_rate: :math:`\lambda_k > 0`, a number or an optax schedule.
      confidence: :math:`\gamma > 0` (2 is SPS's :math:`c = 1/2`).
      f_min: :math:`f^\star`, a lower bound of the loss (0 for the cross entropy).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` emitting :math:`\tau_k g_k`; its
      ``update`` takes the loss as keyword-only ``value``.

    Raises:
      ValueError: for a hyperparameter out of range, naming it.

    Example:
      >>> import jax.numpy as jnp
      >>> import polyak_optax as po
      >>> opt = po.scale_by_polyak_step(confidence=1.0)
      >>> state = opt.init(jnp.zeros(2))
      >>> updates, state = opt.update(jnp.array([3.0, 4.0]), state, value=5.0)
      >>> print(updates, state.learning_rate)  # tau = 5 / 25
      [0.6 0.8] 0.2
    """
    check_polyak_hyperparameters(max_learning_rate, confidence, f_min)

    def init_fn(params: optax.Params) -> PolyakStepState:
        dtype = jnp.promote_types(optax.tree.dtype(params, "lowest"), jnp.float32)
        return PolyakStepState(count=jnp.zeros([], jnp.int32), learning_rate=jnp.zeros([], dtype))

    def update_fn(
        updates: optax.Updates,
        state: PolyakStepState,
        params: optax.Params | None = None,
        *,
        value: jax.typing.ArrayLike | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, PolyakStepState]:
        del params, extra_args
        dtype = state.learning_rate.dtype
        loss, sq, finite, ceiling = polyak_step_inputs(
            updates, value, state.count, max_learning_rate, dtype
        )
        tau = capped_polyak_step(loss, sq, ceiling, confidence, f_min)
        step = jax.tree.map(lambda g: jnp.where(finite, tau * g, 0).astype(g.dtype), updates)
        return step, PolyakStepState(
            count=jnp.where(finite, optax.safe_increment(state.count), state.count),
            learning_rate=jnp.where(finite, tau, state.learning_rate).astype(dtype),
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def schedule_free_polyak(
    b1: float = 0.9,
    max_learning_rate: optax.ScalarOrSchedule = 1.0,
    confidence: float = 2.0,
    f_min: float = 0.0,
    weight_lr_power: float = 2.0,
    anneal_follow: float | None = 0.5,
) -> optax.GradientTransformationExtraArgs:
    r"""Schedule-free SGD (Defazio et al.) whose step is a capped Polyak step.

    With the loss and gradient computed at ``params`` (the interpolation point
    :math:`y_k`, as in ``optax.contrib.schedule_free_sgd``):

    .. math::

      \tau_k &= \min\left(\lambda_k,\ \gamma\,\frac{\max(L(y_k) - f^\star, 0)}
          {\|g(y_k)\|^2}\right), \qquad z_{k+1} = z_k - \tau_k\, g(y_k) \\
      x_{k+1} &= (1 - c_{k+1})\, x_k + c_{k+1} z_{k+1}, \qquad
      y_{k+1} = \beta_1 x_{k+1} + (1 - \beta_1) z_{k+1}

    with optax's averaging weights :math:`c_{k+1} = \hat\lambda_k^{p} / \sum_{i \le k}
    \hat\lambda_i^{p}` of the running maximum :math:`\hat\lambda_k = \max_{i \le k}
    \lambda_i` of the ceiling, and :math:`x_0 = y_0 = z_0`. Where a schedule has
    brought the ceiling below its running maximum, the average follows the annealed base
    iterate: :math:`c_{k+1} \ge (1 - \lambda_k / \hat\lambda_k)^{q}` with
    :math:`q` = ``anneal_follow`` (a constant ceiling, or a warm-up, never binds it, and
    the optimizer is then exactly ``optax.contrib.schedule_free``). Plain schedule-free
    averaging under a decaying schedule keeps averaging in the iterates from before the
    decay, and the annealing is lost at :math:`x`. The
    Polyak rule sets the step of the base sequence :math:`z`, which is plain SGD, so no
    momentum correction is needed; the ceiling (1.0, as ``optax.polyak_sgd``'s) keeps the
    first steps of a network far from its optimum bounded, where schedule-free SGD at
    its published learning rate of 1.0 diverges. Evaluate at :math:`x`:
    ``optax.contrib.schedule_free_eval_params(state, params)`` (the state is optax's
    ``ScheduleFreeState``). A learning-rate schedule belongs on ``max_learning_rate``.

    Args:
      b1: :math:`\beta_1 \in (0, 1)`, the interpolation weight of :math:`x` in
        :math:`y` (schedule-free's momentum).
      max_learning_rate: ceiling :math:`\lambda_k > 0` of the step; a number or a
        schedule (also the averaging weights' learning rate).
      confidence: :math:`\gamma > 0` (2 is SPS's :math:`c = 1/2`).
      f_min: a known lower bound of the loss (0 for the cross entropy).
      weight_lr_power: :math:`p`, as in ``optax.contrib.schedule_free``.
      anneal_follow: :math:`q > 0`, how closely the average follows the base iterate
        once the ceiling decays (smaller: closer); ``None``: optax's weights alone.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; call ``update(..., value=loss)``.

    Raises:
      ValueError: for a hyperparameter out of range, naming it.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import polyak_optax as po
      >>> loss_fn = lambda p: jnp.sum((p - 1.0) ** 2)
      >>> opt = po.schedule_free_polyak()
      >>> params = jnp.zeros(3)
      >>> state = opt.init(params)
      >>> for _ in range(200):
      ...     loss, grads = jax.value_and_grad(loss_fn)(params)
      ...     updates, state = opt.update(grads, state, params, value=loss)
      ...     params = optax.apply_updates(params, updates)
      >>> x = optax.contrib.schedule_free_eval_params(state, params)
      >>> print(jnp.round(x, 2), loss_fn(x) < 1e-3)
      [1. 1. 1.] True

    References:
      Defazio et al., `The Road Less Scheduled <https://arxiv.org/abs/2405.15682>`_,
      2024.

      Loizou et al., `Stochastic Polyak step-size for SGD: an adaptive learning rate
      for fast convergence <https://arxiv.org/abs/2002.10542>`_, 2021.
    """
    base = scale_by_polyak_step(max_learning_rate, confidence, f_min)
    return schedule_free_over_step(base, max_learning_rate, b1, weight_lr_power, anneal_follow)


def schedule_free_over_step(
    step: optax.GradientTransformation,
    max_learning_rate: optax.ScalarOrSchedule,
    b1: float,
    weight_lr_power: float,
    anneal_follow: float | None,
) -> optax.GradientTransformationExtraArgs:
    """:func:`schedule_free_following` over the base descent ``-step(g)``, its weights
    from the ceiling ``max_learning_rate`` that ``step`` reads at its own count (from 0).

    Raises:
      ValueError: for a bad ``b1``, ``weight_lr_power`` or ``anneal_follow``, naming it.
    """
    check_number("b1", b1, "a number in (0, 1)", lambda v: 0 < v < 1)
    check_number("weight_lr_power", weight_lr_power, ">= 0 and finite", lambda v: 0 <= v < np.inf)
    if anneal_follow is not None:
        check_number(
            "anneal_follow", anneal_follow, "positive and finite or None", lambda v: 0 < v < np.inf
        )
    base = optax.chain(step, optax.scale(-1.0))
    # The state counts from 1, as optax's: the weights read the ceiling of the same step.
    weight_rate = max_learning_rate
    if callable(max_learning_rate):
        weight_rate = lambda count: max_learning_rate(count - 1)
    return schedule_free_following(base, weight_rate, b1, weight_lr_power, anneal_follow)


def schedule_free_following(
    base_optimizer: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    weight_lr_power: float = 2.0,
    anneal_follow: float | None = 0.5,
) -> optax.GradientTransformationExtraArgs:
    r"""``optax.contrib.schedule_free`` whose average follows a decaying schedule.

    The same state (``optax.contrib.ScheduleFreeState``: evaluate with
    ``optax.contrib.schedule_free_eval_params``) and the same operations, in the same
    order, as optax's, except the averaging weight :math:`c_{k+1} = \max(c_{k+1},
    (1 - \lambda_k/\hat\lambda_k)^q)`, where :math:`\lambda_k` is ``learning_rate`` at
    the step (counted from 1), :math:`\hat\lambda_k` its running maximum and
    :math:`q` = ``anneal_follow``. Without a decay (:math:`\lambda_k =
    \hat\lambda_k`) or with ``anneal_follow=None`` the updates are optax's, bit for bit.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> decaying = lambda count: 1.0 / count  # the second step's rate is half the first
      >>> opt = schedule_free_following(optax.sgd(1.0), decaying, b1=0.5)
      >>> params = jnp.zeros(1)
      >>> state = opt.init(params)
      >>> for grad in (-1.0, -1.0):
      ...     updates, state = opt.update(jnp.array([grad]), state, params)
      ...     params = params + updates
      >>> # step 2: z = 2, c = max(1/2, (1 - 1/2) ** 0.5) = 0.71, x = 1 + 0.71 (2 - 1)
      >>> print(jnp.round(optax.contrib.schedule_free_eval_params(state, params), 2))
      [1.71]
    """

    def init_fn(params: optax.Params) -> optax.contrib.ScheduleFreeState:
        dtype = optax.tree.dtype(params, "lowest")
        return optax.contrib.ScheduleFreeState(
            b1=jnp.asarray(b1, dtype=dtype),
            weight_sum=jnp.zeros([], dtype=dtype),
            step_count=jnp.ones([], dtype=jnp.int32),
            max_lr=jnp.zeros([], dtype=dtype),
            base_optimizer_state=base_optimizer.init(params),
            z=jax.tree.map(lambda t: t.copy(), params),
        )

    def update_fn(
        grads: optax.Updates,
        state: optax.contrib.ScheduleFreeState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, optax.contrib.ScheduleFreeState]:
        if params is None:
            raise ValueError("params: schedule-free needs update(grads, state, params)")
        lr = learning_rate
        if callable(learning_rate):
            lr = learning_rate(state.step_count)
        lr = jnp.asarray(lr, dtype=state.max_lr.dtype)
        max_lr = jnp.maximum(state.max_lr, lr)
        weight = max_lr**weight_lr_power
        total_weight = state.weight_sum + weight
        ck = jnp.where(
            jnp.isnan(weight) | jnp.isnan(total_weight),
            jnp.full(weight.shape, jnp.nan),
            jnp.nan_to_num(weight / total_weight, nan=0.0, posinf=jnp.inf),
        )
        if anneal_follow is not None:  # (real parts: the state is complex for complex params)
            rate, peak = jnp.real(lr), jnp.real(max_lr)
            decay = jnp.where(peak > 0, 1 - rate / jnp.where(peak > 0, peak, 1), 0)
            follow = jnp.clip(decay, 0, 1) ** anneal_follow
            ck = jnp.where(follow > jnp.real(ck), follow.astype(ck.dtype), ck)
        base_updates, base_state = base_optimizer.update(
            grads, state.base_optimizer_state, params, **extra_args
        )
        z = jax.tree.map(
            lambda zi, ui: jnp.asarray(zi + ui).astype(jnp.asarray(zi).dtype),
            state.z,
            base_updates,
        )
        prev_x = jax.tree.map(lambda yi, zi: (yi - (1.0 - b1) * zi) / b1, params, state.z)
        x = jax.tree.map(lambda xi, zi: (1.0 - ck) * xi + ck * zi, prev_x, z)
        new_params = jax.tree.map(lambda xi, zi: b1 * xi + (1.0 - b1) * zi, x, z)
        updates = jax.tree.map(lambda npi, pi: npi - pi, new_params, params)
        return updates, optax.contrib.ScheduleFreeState(
            b1=state.b1,
            weight_sum=total_weight,
            step_count=optax.safe_increment(state.step_count),
            max_lr=max_lr,
            base_optimizer_state=base_state,
            z=z,
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
