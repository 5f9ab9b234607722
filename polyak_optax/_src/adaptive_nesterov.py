"""Adaptive Nesterov: Nesterov momentum whose step size is a clipped Polyak step.

Thesis Algorithm 5 (equations 3.3.4-3.3.5) as an ``optax.GradientTransformationExtraArgs``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ("AdaptiveNesterovState", "adaptive_nesterov", "scale_by_adaptive_nesterov")


class AdaptiveNesterovState(NamedTuple):
    r"""State of :func:`scale_by_adaptive_nesterov`.

    Attributes:
      count: number of updates applied; a skipped (non-finite) update does not count.
        The schedules of ``confidence``, ``f_min`` and ``max_learning_rate`` read it.
      velocity: :math:`v_{k-1}` of Algorithm 5, one array per parameter, in the
        parameter's dtype. The iterate of Algorithm 5 is ``params + momentum * velocity``.
      learning_rate: :math:`\eta` of the last applied update (0 before the first one).
      value: always ``+inf``. The transform never caches a loss: the params and the
        batch change at every step, so a stored pair would be stale. With ``+inf``,
        ``optax.value_and_grad_from_state`` always recomputes the loss and gradient.
      grad: zeros shaped like the params, the companion of ``value`` that
        ``optax.value_and_grad_from_state`` needs (it is never handed back).
    """

    count: jax.Array  # shape=(), int32
    velocity: optax.Updates
    learning_rate: jax.Array  # shape=(), the params' floating dtype
    value: jax.Array  # shape=(), the params' floating dtype, always +inf
    grad: optax.Updates


def scale_by_adaptive_nesterov(
    momentum: jax.typing.ArrayLike = 0.9,
    confidence: optax.ScalarOrSchedule = 1.0,
    f_min: optax.ScalarOrSchedule = 0.0,
    min_learning_rate: jax.typing.ArrayLike | None = 1e-3,
    max_learning_rate: optax.ScalarOrSchedule | None = 1e-1,
    min_grad_sq_norm: jax.typing.ArrayLike | None = 1e-4,
    max_grad_sq_norm: jax.typing.ArrayLike | None = 1e10,
) -> optax.GradientTransformationExtraArgs:
    r"""Scales the gradient by Nesterov momentum with a clipped Polyak step size.

    Algorithm 5 of Mandatelli (2018). With the loss :math:`L_k` and the gradient
    :math:`g_k` taken at the look-ahead point :math:`\theta'_k = \theta_k - \alpha
    v_{k-1}`:

    .. math::

      \eta_k &= \operatorname{clip}\left(\gamma_k \frac{|L_k - f^\star_k|}
          {\operatorname{clip}(\|g_k\|^2, s_{\min}, s_{\max})},
          \eta_{\min}, \eta_{\max, k}\right) \\
      v_k &= \alpha v_{k-1} + \eta_k g_k \\
      \theta_{k+1} &= \theta_k - v_k

    The params hold the look-ahead point :math:`\theta'_k` (the reformulation that
    ``optax.sgd(nesterov=True)`` uses), so the loss and the gradient the caller
    computes at ``params`` are those of Algorithm 5, and
    :math:`\theta'_{k+1} - \theta'_k = -(\eta_k g_k + \alpha v_k)`. This building block
    emits :math:`\eta_k g_k + \alpha v_k` (a descent direction, like a gradient);
    :func:`adaptive_nesterov` negates it.

    Conventions:

    * each of the four bounds may be ``None``: no clipping on that side; the clip is
      ``min(max(x, lower), upper)``, so where a scheduled :math:`\eta_{\max,k}` falls
      below :math:`\eta_{\min}` the step size is :math:`\eta_{\max,k}`;
    * :math:`\gamma_k`, :math:`f^\star_k` and :math:`\eta_{\max,k}` may be schedules of
      ``count`` (the number of updates applied so far);
    * where the ratio is infinite or undefined (a zero ``||g||^2`` with no positive
      ``min_grad_sq_norm``), :math:`\eta_k` is ``max_learning_rate``, or 0 without one;
      a zero loss gap gives a ratio of 0;
    * a non-finite loss or gradient entry skips the step: the update is zero and the
      state (velocity, count, learning rate) is kept, so the next finite step is the
      one that would have come without the bad one;
    * :math:`\eta_k` and :math:`\|g_k\|^2` are computed in float32 at least; the
      velocity and the updates keep each parameter's dtype.

    Args:
      momentum: :math:`\alpha \in [0, 1)`; schedule it with ``optax.inject_hyperparams``.
      confidence: :math:`\gamma_k > 0`, a number or a schedule.
      f_min: :math:`f^\star`, the loss the step aims at (0 for a model that can
        interpolate its data); a number or a schedule.
      min_learning_rate: :math:`\eta_{\min} \ge 0` or ``None``.
      max_learning_rate: :math:`\eta_{\max} \ge 0`, a schedule, or ``None``.
      min_grad_sq_norm: :math:`s_{\min} \ge 0` or ``None``.
      max_grad_sq_norm: :math:`s_{\max} \ge 0` or ``None``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its ``update`` takes the loss at
      ``params`` as keyword-only ``value`` and ignores other extra arguments.

    Raises:
      ValueError: when the transform is built with momentum outside [0, 1), a
        non-positive confidence, a non-finite ``f_min``, a negative or NaN bound, or a
        lower bound above its upper bound. Values that arrive traced (from
        ``optax.inject_hyperparams`` under ``jax.jit``) are not checked.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import polyak_optax as po
      >>> loss_fn = lambda p: jnp.sum(p**2)
      >>> opt = optax.chain(
      ...     optax.clip_by_global_norm(10.0),
      ...     po.scale_by_adaptive_nesterov(max_learning_rate=0.2),
      ...     optax.scale(-1.0),
      ... )
      >>> params = jnp.array([1.0, 2.0])
      >>> state = opt.init(params)
      >>> loss, grads = jax.value_and_grad(loss_fn)(params)
      >>> updates, state = opt.update(grads, state, params, value=loss)
      >>> params = optax.apply_updates(params, updates)
      >>> print(params, optax.tree.get(state, "learning_rate"))
      [0.24 0.48] 0.2
      >>> velocity = optax.tree.get(state, "velocity")
      >>> print(params + 0.9 * velocity)  # theta_2 of Algorithm 5: theta_1 - v_1
      [0.6 1.2]

    References:
      Mandatelli, Improved training methods for neural networks (section 3.3,
      Algorithm 5), master's thesis, Università degli Studi di Padova, 2018.

      Polyak, Introduction to optimization, Optimization Software, 1987.

      Bengio et al., `Advances in optimizing recurrent networks
      <https://arxiv.org/abs/1212.0901>`_, 2013.

      Loizou et al., `Stochastic Polyak step-size for SGD: an adaptive learning rate
      for fast convergence <https://arxiv.org/abs/2002.10542>`_, 2021.
    """
    _check_momentum(momentum)
    _check_number_or_schedule("confidence", confidence, positive=True)
    _check_number_or_schedule("f_min", f_min, positive=False)
    lr_lo = _check_bound("min_learning_rate", min_learning_rate, schedule_ok=False)
    lr_hi = _check_bound("max_learning_rate", max_learning_rate, schedule_ok=True)
    sq_lo = _check_bound("min_grad_sq_norm", min_grad_sq_norm, schedule_ok=False)
    sq_hi = _check_bound("max_grad_sq_norm", max_grad_sq_norm, schedule_ok=False)
    _check_order("min_learning_rate", lr_lo, "max_learning_rate", lr_hi)
    _check_order("min_grad_sq_norm", sq_lo, "max_grad_sq_norm", sq_hi)

    def init_fn(params: optax.Params) -> AdaptiveNesterovState:
        dtype = _scalar_dtype(params)
        return AdaptiveNesterovState(
            count=jnp.zeros([], jnp.int32),
            velocity=optax.tree.zeros_like(params),
            learning_rate=jnp.zeros([], dtype),
            value=jnp.full([], jnp.inf, dtype),
            grad=optax.tree.zeros_like(params),
        )

    def update_fn(
        updates: optax.Updates,
        state: AdaptiveNesterovState,
        params: optax.Params | None = None,
        *,
        value: jax.typing.ArrayLike | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, AdaptiveNesterovState]:
        del params, extra_args
        if value is None:
            raise ValueError(
                "value: adaptive Nesterov needs the loss at params, "
                "call update(grads, state, params, value=loss)"
            )
        value = jnp.asarray(value)
        if value.size != 1:
            raise ValueError(f"value must be the scalar loss, got shape {value.shape}")
        compute = jnp.promote_types(state.learning_rate.dtype, jnp.float32)
        value = value.reshape(()).astype(compute)
        count = state.count
        leaves = jax.tree.leaves(updates)

        finite = jnp.isfinite(value)
        grad_sq = jnp.zeros([], compute)
        for g in leaves:
            finite = finite & jnp.all(jnp.isfinite(g))
            grad_sq = grad_sq + jnp.sum(jnp.square(g.astype(compute)))

        gamma = jnp.asarray(_at(confidence, count), compute)
        gap = jnp.abs(value - jnp.asarray(_at(f_min, count), compute))
        denom = _clip(grad_sq, min_grad_sq_norm, max_grad_sq_norm)
        safe_denom = jnp.where(denom > 0, denom, 1)
        ratio = jnp.where(denom > 0, gamma * gap / safe_denom, jnp.inf)
        ratio = jnp.where(gap == 0, 0, ratio)
        eta_max = _at(max_learning_rate, count)
        eta = _clip(ratio, min_learning_rate, eta_max)
        eta = jnp.where(jnp.isfinite(eta), eta, 0).astype(compute)
        alpha = jnp.asarray(momentum, compute)

        def new_velocity(g: jax.Array, v: jax.Array) -> jax.Array:
            v_new = alpha * v.astype(compute) + eta * g.astype(compute)
            return jnp.where(finite, v_new, v.astype(compute))

        def look_ahead_step(g: jax.Array, v: jax.Array) -> jax.Array:
            # theta'_k - theta'_{k+1} = eta_k g_k + alpha v_k; zero for a skipped step.
            return jnp.where(finite, eta * g.astype(compute) + alpha * v, 0).astype(g.dtype)

        velocity = jax.tree.map(new_velocity, updates, state.velocity)
        step = jax.tree.map(look_ahead_step, updates, velocity)
        new_state = AdaptiveNesterovState(
            count=jnp.where(finite, optax.safe_increment(count), count),
            velocity=jax.tree.map(lambda v, old: v.astype(old.dtype), velocity, state.velocity),
            learning_rate=jnp.where(finite, eta, state.learning_rate).astype(
                state.learning_rate.dtype
            ),
            value=jnp.full([], jnp.inf, state.value.dtype),
            grad=state.grad,
        )
        return step, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def adaptive_nesterov(
    momentum: jax.typing.ArrayLike = 0.9,
    confidence: optax.ScalarOrSchedule = 1.0,
    f_min: optax.ScalarOrSchedule = 0.0,
    min_learning_rate: jax.typing.ArrayLike | None = 1e-3,
    max_learning_rate: optax.ScalarOrSchedule | None = 1e-1,
    min_grad_sq_norm: jax.typing.ArrayLike | None = 1e-4,
    max_grad_sq_norm: jax.typing.ArrayLike | None = 1e10,
) -> optax.GradientTransformationExtraArgs:
    r"""Adaptive Nesterov SGD: Nesterov momentum with a clipped Polyak step size.

    Thesis Algorithm 5 with the thesis defaults (:math:`\alpha = 0.9`, :math:`\gamma =
    1`, :math:`f^\star = 0`, :math:`\|g\|^2` clipped to :math:`[10^{-4}, 10^{10}]` and
    :math:`\eta` to :math:`[0.001, 0.1]`):

    .. math::

      \eta_k = \operatorname{clip}\left(\gamma_k \frac{|L(\theta'_k) - f^\star|}
          {\operatorname{clip}(\|g(\theta'_k)\|^2)}\right), \quad
      v_k = \alpha v_{k-1} + \eta_k g(\theta'_k), \quad
      \theta_{k+1} = \theta_k - v_k,

    where :math:`\theta'_k = \theta_k - \alpha v_{k-1}` is the Nesterov look-ahead
    point, which is what ``params`` hold: compute the loss and the gradient at
    ``params`` and pass the loss as ``value=``. ``optax.tree.get(state,
    "learning_rate")`` is the :math:`\eta` of the last update (it finds this
    transform's field unless another ``learning_rate`` is in the same state, e.g. an
    ``inject_hyperparams(optax.sgd)`` chained beside it). With ``momentum=0`` and no
    lower bounds it takes the steps of ``optax.polyak_sgd`` (with ``eps=0``, for a
    loss above ``f_min``).

    The state carries ``value`` (always ``+inf``) and ``grad``, so the
    ``optax.value_and_grad_from_state`` loop works and always recomputes the loss and
    gradient at the current params; the loss must then have the params' dtype. Under
    ``optax.MultiSteps`` pass the mean loss of the accumulated mini-batches as
    ``value`` (MultiSteps forwards the last ``value`` only). See
    :func:`scale_by_adaptive_nesterov` for the handling of non-finite inputs.

    Args:
      momentum: :math:`\alpha \in [0, 1)`.
      confidence: :math:`\gamma_k > 0`, a number or an optax schedule.
      f_min: :math:`f^\star`, a number or a schedule.
      min_learning_rate: lower bound of :math:`\eta`, or ``None``.
      max_learning_rate: upper bound of :math:`\eta` (a number or a schedule), or
        ``None``.
      min_grad_sq_norm: lower bound of :math:`\|g\|^2` in the division, or ``None``.
      max_grad_sq_norm: upper bound of :math:`\|g\|^2` in the division, or ``None``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; call ``update(..., value=loss)``.

    Raises:
      ValueError: for bad hyperparameters, naming the argument.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> import polyak_optax as po
      >>> loss_fn = lambda p: jnp.sum((p - 1.0) ** 2)
      >>> opt = po.adaptive_nesterov(max_learning_rate=0.5)
      >>> params = jnp.zeros(3)
      >>> state = opt.init(params)
      >>> for _ in range(50):
      ...     loss, grads = jax.value_and_grad(loss_fn)(params)
      ...     updates, state = opt.update(grads, state, params, value=loss)
      ...     params = optax.apply_updates(params, updates)
      >>> print(jnp.round(params, 3), loss_fn(params) < 1e-6)
      [1. 1. 1.] True

    References:
      Mandatelli, Improved training methods for neural networks (section 3.3,
      Algorithm 5), master's thesis, Università degli Studi di Padova, 2018.
    """
    return optax.chain(
        scale_by_adaptive_nesterov(
            momentum=momentum,
            confidence=confidence,
            f_min=f_min,
            min_learning_rate=min_learning_rate,
            max_learning_rate=max_learning_rate,
            min_grad_sq_norm=min_grad_sq_norm,
            max_grad_sq_norm=max_grad_sq_norm,
        ),
        optax.scale(-1.0),
    )


def _at(value: Any, count: jax.Array) -> Any:
    """The value of a hyperparameter that may be a schedule of the count."""
    return value(count) if callable(value) else value


def _clip(x: jax.Array, lo: Any, hi: Any) -> jax.Array:
    """Clips ``x`` to ``[lo, hi]``; a ``None`` bound does not clip that side."""
    if lo is not None:
        x = jnp.maximum(x, jnp.asarray(lo, x.dtype))
    if hi is not None:
        x = jnp.minimum(x, jnp.asarray(hi, x.dtype))
    return x


def _scalar_dtype(params: optax.Params) -> jnp.dtype:
    """The dtype of the scalar state fields: the params' common real floating dtype."""
    leaves = jax.tree.leaves(params)
    if not leaves:
        return jnp.dtype(jnp.float32)
    dtype = jnp.result_type(*[jnp.asarray(leaf).dtype for leaf in leaves])
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return jnp.finfo(dtype).dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        return jnp.dtype(jnp.float32)
    return jnp.dtype(dtype)


def _concrete(name: str, value: Any) -> float | None:
    """``float(value)`` for a concrete real scalar; ``None`` for a traced one."""
    try:
        array = np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None  # injected by optax.inject_hyperparams under jit: checked by no one
    except TypeError as e:
        raise ValueError(f"{name} must be a real number, got {value!r}") from e
    real = jnp.issubdtype(array.dtype, jnp.floating) or jnp.issubdtype(array.dtype, jnp.integer)
    if array.shape != () or not real:
        raise ValueError(f"{name} must be a real scalar number, got {value!r}")
    return float(array)


def _check_momentum(momentum: Any) -> None:
    if momentum is None or callable(momentum):
        raise ValueError(
            "momentum must be a number in [0, 1) (schedule it with optax.inject_hyperparams),"
            f" got {momentum!r}"
        )
    number = _concrete("momentum", momentum)
    if number is not None and not 0.0 <= number < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {number}")


def _check_number_or_schedule(name: str, value: Any, *, positive: bool) -> None:
    if value is None:
        raise ValueError(f"{name} must be a number or a schedule, got None")
    if callable(value):
        return
    number = _concrete(name, value)
    if number is None:
        return
    if not np.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    if positive and number <= 0:
        raise ValueError(f"{name} must be positive, got {number}")


def _check_bound(name: str, value: Any, *, schedule_ok: bool) -> float | None:
    """Validates a bound; returns it when it is a concrete number, else ``None``."""
    if value is None:
        return None
    if callable(value):
        if schedule_ok:
            return None
        raise ValueError(f"{name} must be a non-negative number or None, not a schedule")
    number = _concrete(name, value)
    if number is None:
        return None
    if np.isnan(number) or number < 0:
        raise ValueError(f"{name} must be a non-negative number or None, got {number}")
    return number


def _check_order(lo_name: str, lo: float | None, hi_name: str, hi: float | None) -> None:
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"{lo_name} ({lo}) must not exceed {hi_name} ({hi})")
