"""Schedule-free Polyak: schedule-free SGD whose step is a capped Polyak step.

A tuning-free preset beside :func:`polyak_optax.tuning_free_nesterov`: Defazio et al.'s
schedule-free averaging (``optax.contrib.schedule_free``) in place of Nesterov's
momentum, over a Polyak step that needs no learning rate.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from polyak_optax._src._polyak import (
    at,
    check_capped_polyak,
    loss_scalar,
    polyak_step_size,
    skip_unless_finite,
)
from polyak_optax._src._schedule_free import schedule_free_over_step

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
    check_capped_polyak(max_learning_rate, confidence, f_min)

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
        loss = loss_scalar(value, dtype)
        sq = optax.tree.norm(updates, squared=True).astype(dtype)
        tau = polyak_step_size(
            loss,
            sq,
            confidence=confidence,
            f_min=f_min,
            absolute_gap=False,
            max_step=at(max_learning_rate, state.count),
        )
        step = jax.tree.map(lambda g: (tau * g).astype(g.dtype), updates)
        new_state = PolyakStepState(count=optax.safe_increment(state.count), learning_rate=tau)
        finite = jnp.isfinite(loss) & jnp.isfinite(sq)
        return skip_unless_finite(finite, (step, new_state), (optax.tree.zeros_like(step), state))

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
