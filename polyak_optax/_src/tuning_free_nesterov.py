"""Tuning-free adaptive Nesterov: a momentum-corrected Polyak step with confidence 2.

The library's preset for training without tuning;
:func:`polyak_optax.adaptive_nesterov` stays thesis Algorithm 5.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from polyak_optax._src._polyak import (
    at,
    check_capped_polyak,
    check_number,
    loss_scalar,
    polyak_step_size,
    skip_unless_finite,
)

__all__ = (
    "TuningFreeNesterovState",
    "scale_by_tuning_free_nesterov",
    "tuning_free_nesterov",
)


class TuningFreeNesterovState(NamedTuple):
    r"""State of :func:`scale_by_tuning_free_nesterov`.

    Attributes:
      count: number of updates applied (a skipped non-finite step does not count); the
        ``max_learning_rate`` schedule reads it.
      velocity: :math:`v_{k-1}`, one array per parameter, in the parameter's dtype.
      learning_rate: :math:`\eta_k = (1 - \alpha)\tau_k` of the last update, the
        coefficient of the gradient in the velocity (0 before the first update).
      f_min: :math:`\hat f_k`, the running estimate of the optimal loss.
    """

    count: jax.Array  # shape=(), int32
    velocity: optax.Updates
    learning_rate: jax.Array  # shape=(), float32 at least
    f_min: jax.Array  # shape=(), float32 at least


def scale_by_tuning_free_nesterov(
    momentum: float = 0.9,
    max_learning_rate: optax.ScalarOrSchedule = 1.0,
    confidence: float = 2.0,
    f_min: float = 0.0,
    adapt_f_min: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Nesterov momentum whose effective step is a capped Polyak step (optionally online f*).

    With the loss :math:`L_k` and gradient :math:`g_k` at the look-ahead point (which
    ``params`` hold, as in ``optax.sgd(nesterov=True)``), :math:`s_k = \|g_k\|^2`,
    the ceiling :math:`\lambda_k` = ``max_learning_rate``, :math:`\gamma` =
    ``confidence`` and :math:`f_0` = ``f_min``:

    .. math::

      \hat f'_k &= \begin{cases} \hat f_k & L_k \ge \hat f_k \\
          f_0 + (L_k - f_0)/2 & L_k < \hat f_k \end{cases}, \qquad \hat f_1 = f_0 \\
      \tau_k &= \min\left(\lambda_k,\ \gamma\, (L_k - \hat f'_k) / s_k\right), \qquad
      \eta_k = (1 - \alpha)\, \tau_k \\
      v_k &= \alpha v_{k-1} + \eta_k g_k, \qquad
      \theta'_{k+1} = \theta'_k - (\eta_k g_k + \alpha v_k) \\
      \hat f_{k+1} &= \max\left(\hat f'_k,\ L_k - \lambda_k s_k / \gamma\right)

    Two changes to thesis Algorithm 5 (:func:`polyak_optax.adaptive_nesterov`;
    ``benchmarks/tuning_free.py`` compares them):

    * **momentum correction**: the velocity sums past steps, so a constant
      :math:`\eta` moves the iterate by :math:`\eta / (1 - \alpha)` per step; the
      Polyak rule sets that *effective* step :math:`\tau_k`, bounded by the ceiling
      :math:`\lambda` (1.0, as MoMo's and ``polyak_sgd``'s);
    * :math:`\gamma = 2` (SPS with :math:`c = 1/2`): a mini-batch's :math:`\|g\|^2`
      overestimates the full gradient's, which makes :math:`\gamma = 1` too timid
      on networks that interpolate.

    Opt-in (``adapt_f_min=True``), **an online estimate of** :math:`f^\star` for a
    loss whose minimum is far above 0: when the ceiling clips the step, the gap
    :math:`L - \hat f` is evidently overestimated and :math:`\hat f` rises to the level
    at which the ceiling is the exact Polyak step; an estimate above a batch's loss
    cannot be a lower bound and is halved towards :math:`f_0` (MoMo's rule). Off by
    default: under a warm-up schedule the small early ceiling ratchets :math:`\hat f` up
    to the batch losses, and the noise of the per-batch loss then zeroes many steps.

    A non-finite loss or gradient skips the step: zero update, state kept.

    Args:
      momentum: :math:`\alpha \in [0, 1)`.
      max_learning_rate: :math:`\lambda_k > 0`, the ceiling of the effective step
        :math:`\tau_k`; a number or an optax schedule of the update count (the
        training app's learning-rate schedule multiplies it).
      confidence: :math:`\gamma > 0`.
      f_min: :math:`f_0`, a known lower bound of the loss (0 for the cross entropy).
      adapt_f_min: estimate :math:`f^\star` online (else :math:`\hat f_k = f_0`).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` emitting :math:`\eta_k g_k +
      \alpha v_k` (a descent direction; :func:`tuning_free_nesterov` negates it);
      its ``update`` takes the loss at ``params`` as keyword-only ``value``.

    Raises:
      ValueError: for a hyperparameter out of range, naming it.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import polyak_optax as po
      >>> opt = optax.chain(po.scale_by_tuning_free_nesterov(), optax.scale(-1.0))
      >>> params = jnp.array([1.0, 2.0])
      >>> state = opt.init(params)
      >>> loss, grads = jax.value_and_grad(lambda p: jnp.sum(p**2))(params)
      >>> updates, state = opt.update(grads, state, params, value=loss)
      >>> params = optax.apply_updates(params, updates)
      >>> print(params, optax.tree.get(state, "learning_rate"))  # eta = (1 - 0.9) * 2 * 5 / 20
      [0.81 1.62] 0.05

    References:
      Mandatelli, Improved training methods for neural networks (section 3.3,
      Algorithm 5), master's thesis, Università degli Studi di Padova, 2018.

      Loizou et al., `Stochastic Polyak step-size for SGD: an adaptive learning rate
      for fast convergence <https://arxiv.org/abs/2002.10542>`_, 2021.

      Schaipp et al., `MoMo: Momentum Models for Adaptive Learning Rates
      <https://arxiv.org/abs/2305.07583>`_, 2023.

      Hazan and Kakade, `Revisiting the Polyak step size
      <https://arxiv.org/abs/1905.00313>`_, 2019.
    """
    check_number("momentum", momentum, "a number in [0, 1)", lambda v: 0 <= v < 1)
    check_capped_polyak(max_learning_rate, confidence, f_min)

    def init_fn(params: optax.Params) -> TuningFreeNesterovState:
        dtype = jnp.promote_types(optax.tree.dtype(params, "lowest"), jnp.float32)
        return TuningFreeNesterovState(
            count=jnp.zeros([], jnp.int32),
            velocity=optax.tree.zeros_like(params),
            learning_rate=jnp.zeros([], dtype),
            f_min=jnp.asarray(f_min, dtype),
        )

    def update_fn(
        updates: optax.Updates,
        state: TuningFreeNesterovState,
        params: optax.Params | None = None,
        *,
        value: jax.typing.ArrayLike | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, TuningFreeNesterovState]:
        del params, extra_args
        dtype = state.learning_rate.dtype
        loss = loss_scalar(value, dtype)
        sq = optax.tree.norm(updates, squared=True).astype(dtype)
        ceiling = jnp.asarray(at(max_learning_rate, state.count), dtype)
        f_hat = state.f_min
        if adapt_f_min:  # an estimate above the loss is no lower bound: halve it towards f0
            f_hat = jnp.where(loss < f_hat, f_min + (loss - f_min) / 2, f_hat)
        # A zero gradient: tau is the ceiling, and the step is zero anyway.
        tau = polyak_step_size(
            loss, sq, confidence=confidence, f_min=f_hat, absolute_gap=False, max_step=ceiling
        )
        eta = (1 - momentum) * tau
        if adapt_f_min:  # a clipped step: raise f_hat to where the ceiling is the Polyak step
            f_hat = jnp.maximum(f_hat, loss - ceiling * sq / confidence)
        # Nesterov's momentum written out, the step from the kept velocity: XLA:CPU fuses
        # multiply-adds, and which product it fuses depends on the operands' order and on
        # where the skip's select sits; optax.trace(momentum, nesterov=True) followed by
        # the skip gives other float32 roundings.
        new_velocity = lambda v, g: (momentum * v + eta * g).astype(v.dtype)
        new_state = TuningFreeNesterovState(
            count=optax.safe_increment(state.count),
            velocity=jax.tree.map(new_velocity, state.velocity, updates),
            learning_rate=eta,
            f_min=f_hat,
        )
        finite = jnp.isfinite(loss) & jnp.isfinite(sq)
        new_state = skip_unless_finite(finite, new_state, state)
        step = jax.tree.map(
            lambda g, v: (eta * g + momentum * v).astype(g.dtype), updates, new_state.velocity
        )
        return skip_unless_finite(finite, step, optax.tree.zeros_like(step)), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def tuning_free_nesterov(
    momentum: float = 0.9,
    max_learning_rate: optax.ScalarOrSchedule = 1.0,
    confidence: float = 2.0,
    f_min: float = 0.0,
    adapt_f_min: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Tuning-free adaptive Nesterov: a momentum-corrected Polyak step with confidence 2.

    The library's preset for training without tuning: adaptive Nesterov
    (:func:`polyak_optax.adaptive_nesterov`, thesis Algorithm 5) whose Polyak rule
    sets the *effective* step :math:`\tau_k = \eta_k / (1 - \alpha)`, with
    :math:`\gamma = 2`, capped at ``max_learning_rate`` (:math:`\hat f_k = f_0` unless
    ``adapt_f_min``):

    .. math::

      \tau_k = \min\left(\lambda_k, \gamma\,\frac{L(\theta'_k) - \hat f_k}
          {\|g(\theta'_k)\|^2}\right), \quad
      v_k = \alpha v_{k-1} + (1 - \alpha) \tau_k\, g(\theta'_k), \quad
      \theta_{k+1} = \theta_k - v_k.

    Compute the loss and gradient at ``params`` (the look-ahead point) and pass the
    loss as ``value=``. ``optax.tree.get(state, "learning_rate")`` is
    :math:`\eta_k = (1 - \alpha)\tau_k`, comparable with ``optax.sgd``'s learning
    rate at the same momentum. A learning-rate schedule belongs on
    ``max_learning_rate`` (the ceiling). See :func:`scale_by_tuning_free_nesterov`
    for :math:`\hat f_k`.

    Args:
      momentum: :math:`\alpha \in [0, 1)`.
      max_learning_rate: ceiling :math:`\lambda_k > 0` of the effective step; a
        number or a schedule.
      confidence: :math:`\gamma > 0`.
      f_min: a known lower bound of the loss (where an online estimate starts).
      adapt_f_min: estimate the optimal loss online (see
        :func:`scale_by_tuning_free_nesterov`).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; call ``update(..., value=loss)``.

    Raises:
      ValueError: for a hyperparameter out of range, naming it.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import polyak_optax as po
      >>> loss_fn = lambda p: jnp.sum((p - 1.0) ** 2)
      >>> opt = po.tuning_free_nesterov()
      >>> params = jnp.zeros(3)
      >>> state = opt.init(params)
      >>> for _ in range(100):
      ...     loss, grads = jax.value_and_grad(loss_fn)(params)
      ...     updates, state = opt.update(grads, state, params, value=loss)
      ...     params = optax.apply_updates(params, updates)
      >>> print(jnp.round(params, 3), loss_fn(params) < 1e-4)
      [1. 1. 1.] True

    References:
      Mandatelli, Improved training methods for neural networks (Algorithm 5),
      master's thesis, Università degli Studi di Padova, 2018.

      Loizou et al., `Stochastic Polyak step-size for SGD: an adaptive learning rate
      for fast convergence <https://arxiv.org/abs/2002.10542>`_, 2021.
    """
    return optax.chain(
        scale_by_tuning_free_nesterov(
            momentum=momentum,
            max_learning_rate=max_learning_rate,
            confidence=confidence,
            f_min=f_min,
            adapt_f_min=adapt_f_min,
        ),
        optax.scale(-1.0),
    )
