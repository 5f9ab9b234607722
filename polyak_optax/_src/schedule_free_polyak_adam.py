"""Schedule-free Polyak in Adam's metric: schedule-free AdamW whose step is a Polyak step.

A tuning-free preset: :func:`schedule_free_polyak` with
the base step preconditioned as ``optax.contrib.schedule_free_adamw``'s, and the Polyak
step measured in the same metric, as ``optax.contrib.momo_adam`` measures it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from polyak_optax._src._polyak import (
    at,
    check_capped_polyak,
    check_number,
    loss_scalar,
    polyak_step_size,
    skip_unless_finite,
)
from polyak_optax._src._schedule_free import schedule_free_over_step

__all__ = ("AdamPolyakStepState", "scale_by_adam_polyak_step", "schedule_free_polyak_adam")


class AdamPolyakStepState(NamedTuple):
    """State of :func:`scale_by_adam_polyak_step`.

    Attributes:
      count: number of updates applied (a skipped non-finite step does not count); the
        ``max_learning_rate`` schedule reads it.
      learning_rate: the step :math:`\\tau_k` of the last update (0 before the first).
      rms: ``optax.scale_by_rms``'s state (the second moment :math:`v_k`).
    """

    count: jax.Array  # shape=(), int32
    learning_rate: jax.Array  # shape=(), float32 at least
    rms: optax.OptState


def scale_by_adam_polyak_step(
    max_learning_rate: optax.ScalarOrSchedule = 1e-2,
    b2: float = 0.999,
    eps: float = 1e-8,
    confidence: float = 2.0,
    f_min: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    r"""Scales the Adam-preconditioned gradient by a capped Polyak step in Adam's metric.

    With :math:`D_k = \mathrm{diag}(\sqrt{\hat v_k} + \epsilon)`, :math:`\hat v_k` the
    bias-corrected moving average of :math:`g^2` (``optax.scale_by_rms(b2, eps,
    eps_in_sqrt=False, bias_correction=True)``, as ``schedule_free_adamw``'s):

    .. math::

      \tau_k = \min\left(\lambda_k,\ \gamma\, \frac{\max(L_k - f^\star, 0)}
          {g_k^\top D_k^{-1} g_k}\right), \qquad \text{update} = \tau_k D_k^{-1} g_k

    the Polyak step of the model :math:`L_k - \tau\, g_k^\top D_k^{-1} g_k` along
    :math:`D_k^{-1} g_k` (SPS in the metric :math:`D_k`, as MoMo-Adam's). A non-finite
    loss or gradient skips the step (zero update, state kept).

    Args:
      max_learning_rate: :math:`\lambda_k > 0`, a number or an optax schedule of the
        update count (1e-2: ``momo_adam``'s).
      b2: :math:`\beta_2 \in [0, 1)`, the second moment's decay.
      eps: :math:`\epsilon \ge 0`, added to :math:`\sqrt{\hat v_k}` (with 0, an entry
        whose gradient and second moment are both 0 makes the step 0/0, and the whole step
        is skipped as non-finite).
      confidence: :math:`\gamma > 0` (2 is SPS's :math:`c = 1/2`).
      f_min: :math:`f^\star`, a lower bound of the loss (0 for the cross entropy).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` emitting :math:`\tau_k D_k^{-1} g_k`;
      its ``update`` takes the loss as keyword-only ``value``.

    Raises:
      ValueError: for a hyperparameter out of range, naming it.

    Example:
      >>> import jax.numpy as jnp
      >>> import polyak_optax as po
      >>> opt = po.scale_by_adam_polyak_step(max_learning_rate=1.0, eps=0.0)
      >>> state = opt.init(jnp.zeros(2))
      >>> updates, state = opt.update(jnp.array([3.0, 4.0]), state, value=1.4)
      >>> # first step: D = |g|, so g^T D^-1 g = 7 and tau = 2 * 1.4 / 7
      >>> print(updates, state.learning_rate)
      [0.4 0.4] 0.4
    """
    check_capped_polyak(max_learning_rate, confidence, f_min)
    check_number("b2", b2, "a number in [0, 1)", lambda v: 0 <= v < 1)
    check_number("eps", eps, ">= 0 and finite", lambda v: 0 <= v < np.inf)
    rms = optax.scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True)

    def init_fn(params: optax.Params) -> AdamPolyakStepState:
        dtype = jnp.promote_types(optax.tree.dtype(params, "lowest"), jnp.float32)
        return AdamPolyakStepState(
            count=jnp.zeros([], jnp.int32),
            learning_rate=jnp.zeros([], dtype),
            rms=rms.init(params),
        )

    def update_fn(
        updates: optax.Updates,
        state: AdamPolyakStepState,
        params: optax.Params | None = None,
        *,
        value: jax.typing.ArrayLike | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, AdamPolyakStepState]:
        del extra_args
        dtype = state.learning_rate.dtype
        direction, rms_state = rms.update(updates, state.rms, params)
        loss = loss_scalar(value, dtype)
        sq = jnp.real(optax.tree.vdot(updates, direction)).astype(dtype)  # g^T D^-1 g
        tau = polyak_step_size(
            loss,
            sq,
            confidence=confidence,
            f_min=f_min,
            absolute_gap=False,
            max_step=at(max_learning_rate, state.count),
        )
        step = jax.tree.map(lambda d: (tau * d).astype(d.dtype), direction)
        new_state = AdamPolyakStepState(
            count=optax.safe_increment(state.count), learning_rate=tau, rms=rms_state
        )
        finite = jnp.isfinite(loss) & jnp.isfinite(sq)
        return skip_unless_finite(finite, (step, new_state), (optax.tree.zeros_like(step), state))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def schedule_free_polyak_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    max_learning_rate: optax.ScalarOrSchedule = 1e-2,
    confidence: float = 5.0,
    f_min: float = 0.0,
    weight_lr_power: float = 2.0,
    anneal_follow: float | None = 0.5,
) -> optax.GradientTransformationExtraArgs:
    r"""Schedule-free AdamW (Defazio et al.) whose step is a Polyak step in Adam's metric.

    :func:`schedule_free_polyak` with the base sequence preconditioned as
    ``optax.contrib.schedule_free_adamw``'s (no weight decay), and the step
    :math:`\tau_k` of :func:`scale_by_adam_polyak_step`:

    .. math::

      z_{k+1} = z_k - \tau_k D_k^{-1} g(y_k), \qquad
      \tau_k = \min\left(\lambda_k,\ \gamma\,\frac{\max(L(y_k) - f^\star, 0)}
          {g(y_k)^\top D_k^{-1} g(y_k)}\right)

    then :math:`x` and :math:`y` as in :func:`schedule_free_polyak` (optax's averaging
    weights, and the average follows the base iterate once a schedule on the ceiling
    decays). The ceiling's default, 1e-2, is ``optax.contrib.momo_adam``'s learning
    rate, the other defaults ``schedule_free_adamw``'s. The confidence's default, 5, is
    SPS's 2 (:math:`c = 1/2`, a step for the point where the gradient was taken) times
    2.5, the ratio of schedule-free AdamW's published learning rate (2.5e-3) to Adam's
    (1e-3): the gradient is taken at :math:`y`, which moves only partly with :math:`z`
    (by :math:`1 - \beta_1` at once, then as the average :math:`x` follows), so the
    schedule-free authors' base steps are larger than a plain method's. Evaluate at
    :math:`x`: ``optax.contrib.schedule_free_eval_params(state, params)``.

    Args:
      b1: :math:`\beta_1 \in (0, 1)`, the interpolation weight of :math:`x` in
        :math:`y` (schedule-free's momentum).
      b2: :math:`\beta_2 \in [0, 1)`, the second moment's decay.
      eps: :math:`\epsilon \ge 0`, added to :math:`\sqrt{\hat v_k}`.
      max_learning_rate: ceiling :math:`\lambda_k > 0` of the step; a number or a
        schedule (also the averaging weights' learning rate).
      confidence: :math:`\gamma > 0` (5: SPS's 2 times 2.5, above).
      f_min: a known lower bound of the loss (0 for the cross entropy).
      weight_lr_power: :math:`p`, as in ``optax.contrib.schedule_free``.
      anneal_follow: :math:`q > 0` of :func:`schedule_free_polyak`; ``None``: optax's
        weights alone.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; call ``update(..., value=loss)``.

    Raises:
      ValueError: for a hyperparameter out of range, naming it.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import polyak_optax as po
      >>> loss_fn = lambda p: jnp.sum((p - 1.0) ** 2)
      >>> opt = po.schedule_free_polyak_adam(max_learning_rate=0.1)
      >>> params = jnp.zeros(3)
      >>> state = opt.init(params)
      >>> for _ in range(300):
      ...     loss, grads = jax.value_and_grad(loss_fn)(params)
      ...     updates, state = opt.update(grads, state, params, value=loss)
      ...     params = optax.apply_updates(params, updates)
      >>> x = optax.contrib.schedule_free_eval_params(state, params)
      >>> print(jnp.round(x, 2), loss_fn(x) < 1e-3)
      [1. 1. 1.] True

    References:
      Defazio et al., `The Road Less Scheduled <https://arxiv.org/abs/2405.15682>`_,
      2024.

      Schaipp et al., `MoMo: Momentum Models for Adaptive Learning Rates
      <https://arxiv.org/abs/2305.07583>`_, 2024.
    """
    step = scale_by_adam_polyak_step(max_learning_rate, b2, eps, confidence, f_min)
    return schedule_free_over_step(step, max_learning_rate, b1, weight_lr_power, anneal_follow)
