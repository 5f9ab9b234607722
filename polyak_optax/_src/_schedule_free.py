"""Schedule-free averaging over a Polyak base step, shared by the schedule-free presets."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from polyak_optax._src._polyak import check_number


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

    optax's transform and state (``optax.contrib.ScheduleFreeState``: evaluate with
    ``optax.contrib.schedule_free_eval_params``), except the averaging weight
    :math:`c_{k+1} = \max(c_{k+1}, (1 - \lambda_k/\hat\lambda_k)^q)`, where
    :math:`\lambda_k` is ``learning_rate`` at the step (counted from 1),
    :math:`\hat\lambda_k` its running maximum and :math:`q` = ``anneal_follow``.
    Without a decay (:math:`\lambda_k = \hat\lambda_k`) or with ``anneal_follow=None``
    the updates are optax's, bit for bit.

    optax computes :math:`c_{k+1} = w_k / (W_k + w_k)` inside its update from the weight
    sum :math:`W_k` of its state (:math:`w_k = \hat\lambda_k^p`). Where the follow
    weight :math:`f` is the larger, the update is handed :math:`W'_k = w_k (1 - f) / f`,
    for which that quotient is :math:`f` (to rounding; exactly 1 for :math:`f = 1`), and
    the state gets back the true sum :math:`W_k + w_k`.

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
    inner = optax.contrib.schedule_free(base_optimizer, learning_rate, b1, weight_lr_power)
    if anneal_follow is None:
        return inner

    def update_fn(
        grads: optax.Updates,
        state: optax.contrib.ScheduleFreeState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, optax.contrib.ScheduleFreeState]:
        if params is None:
            raise ValueError("params: schedule-free needs update(grads, state, params)")
        # optax's learning rate, running maximum and weight, computed as optax does.
        lr = learning_rate(state.step_count) if callable(learning_rate) else learning_rate
        lr = jnp.asarray(lr, dtype=state.max_lr.dtype)
        max_lr = jnp.maximum(state.max_lr, lr)
        weight = max_lr**weight_lr_power
        follow = _follow_weight(lr, max_lr, anneal_follow)
        # (real parts: the state is complex for complex params)
        binds = follow > jnp.real(weight / (state.weight_sum + weight))
        handed = jnp.where(binds, weight * ((1 - follow) / follow), state.weight_sum)
        updates, new_state = inner.update(
            grads,
            state._replace(weight_sum=handed.astype(state.weight_sum.dtype)),
            params,
            **extra_args,
        )
        return updates, new_state._replace(weight_sum=state.weight_sum + weight)

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)


def _follow_weight(lr: jax.Array, max_lr: jax.Array, power: float) -> jax.Array:
    """:math:`(1 - \\lambda / \\hat\\lambda)^q` clipped to [0, 1]; 0 where the peak is 0."""
    rate, peak = jnp.real(lr), jnp.real(max_lr)
    decay = jnp.where(peak > 0, 1 - rate / jnp.where(peak > 0, peak, 1), 0)
    return jnp.clip(decay, 0, 1) ** power
