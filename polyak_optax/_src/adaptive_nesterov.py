"""Adaptive Nesterov: Nesterov momentum whose step size is a clipped Polyak step.

Thesis Algorithm 5 (equations 3.3.4-3.3.5) as an ``optax.GradientTransformationExtraArgs``.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from polyak_optax._src._layers import (
    LayersFn,
    check_layers,
    computed_once,
    layer_ids,
    log_norm_factor,
    per_layer,
    sum_of_squares,
)
from polyak_optax._src._polyak import (
    at,
    concrete,
    loss_scalar,
    polyak_step_size,
)

__all__ = ("AdaptiveNesterovState", "adaptive_nesterov", "scale_by_adaptive_nesterov")


class AdaptiveNesterovState(NamedTuple):
    r"""State of :func:`scale_by_adaptive_nesterov`.

    Attributes:
      count: number of updates applied; a skipped (non-finite) update does not count.
        Every schedule of the transform (``momentum``, ``confidence``, ``f_min``,
        ``max_learning_rate``) reads it, so they all advance together or not at all.
      velocity: :math:`v_{k-1}` of Algorithm 5, one array per parameter, in the
        parameter's dtype (complex for complex parameters). The iterate of Algorithm 5
        is ``params + momentum * velocity``.
      learning_rate: :math:`\eta` of the last applied update (0 before the first one).
      value: always ``+inf``. The transform never caches a loss: the params and the
        batch change at every step, so a stored pair would be stale. With ``+inf``,
        ``optax.value_and_grad_from_state`` always recomputes the loss and gradient.
      grad: with ``store_grad=True``, zeros shaped like the params, the companion of
        ``value`` that ``optax.value_and_grad_from_state`` needs (never handed back);
        ``None`` with ``store_grad=False`` (optax's line-search convention).
    """

    count: jax.Array  # shape=(), int32
    velocity: optax.Updates
    learning_rate: jax.Array  # shape=(), the params' real floating dtype
    value: jax.Array  # shape=(), the params' real floating dtype, always +inf
    grad: optax.Updates | None


def scale_by_adaptive_nesterov(
    momentum: optax.ScalarOrSchedule = 0.9,
    confidence: optax.ScalarOrSchedule = 1.0,
    f_min: optax.ScalarOrSchedule = 0.0,
    min_learning_rate: jax.typing.ArrayLike | None = 1e-3,
    max_learning_rate: optax.ScalarOrSchedule | None = 1e-1,
    min_grad_sq_norm: jax.typing.ArrayLike | None = 1e-4,
    max_grad_sq_norm: jax.typing.ArrayLike | None = 1e10,
    *,
    store_grad: bool = True,
    layerwise: bool = False,
    layers: LayersFn | None = None,
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
    * a non-finite loss or gradient entry (or a :math:`\|g_k\|^2` that overflows its
      float32/float64 sum) skips the step: the update is zero and the state (velocity,
      count, learning rate) is kept, so the next finite step is the one that would have
      come without the bad one. Every schedule reads ``count``, so the momentum, eta
      ceiling, confidence and :math:`f^\star` schedules all stay on one step count;
    * a scheduled momentum :math:`\alpha_k` enters both places of the step (as in
      ``optax.inject_hyperparams(optax.sgd)`` with ``nesterov=True``);
    * :math:`\eta_k` and :math:`\|g_k\|^2 = \sum |g|^2` are computed in float32 at
      least; the velocity and the updates keep each parameter's dtype, complex ones
      included (pass ``g.conj()`` for complex parameters, as optax does);
    * with ``layerwise=True`` each layer :math:`l` gets :math:`f_l = 1 + \log(1 + 1 /
      \|g_l\|)` (1 where :math:`g_l = 0`) where its gradient enters the velocity,
      :math:`v_k = \alpha v_{k-1} + \eta_k f_l g_{l,k}`, with :math:`\eta_k` from the
      raw gradient: the layer-specific learning rate :math:`\eta_k f_l` of Singh et al.
      (their momentum variants scale the learning rate, never the carried velocity).
      The eta bounds apply to :math:`\eta_k`, not to :math:`\eta_k f_l`.

    Args:
      momentum: :math:`\alpha \in [0, 1)`, a number or a schedule of ``count``.
      confidence: :math:`\gamma_k > 0`, a number or a schedule.
      f_min: :math:`f^\star`, the loss the step aims at (0 for a model that can
        interpolate its data); a number or a schedule.
      min_learning_rate: :math:`\eta_{\min} \ge 0` or ``None``.
      max_learning_rate: :math:`\eta_{\max} \ge 0`, a schedule, or ``None``.
      min_grad_sq_norm: :math:`s_{\min} \ge 0` or ``None``.
      max_grad_sq_norm: :math:`s_{\max} \ge 0` or ``None``.
      store_grad: keep the params-sized ``grad`` field that
        ``optax.value_and_grad_from_state`` reads; ``False`` drops it (the state is
        then the velocity and three scalars, and that helper raises a ``ValueError``).
      layerwise: scale each layer's gradient by :math:`f_l` where it enters the
        velocity (Singh et al.'s layer-specific learning rate).
      layers: with ``layerwise=True``, ``None`` for one layer per leaf or a callable
        from a leaf's key path to a group key (e.g. :func:`layers_by_module`).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its ``update`` takes the loss at
      ``params`` as keyword-only ``value`` and ignores other extra arguments.

    Raises:
      ValueError: when the transform is built with momentum outside [0, 1), a
        non-positive confidence, a non-finite ``f_min``, a negative or NaN bound, a
        lower bound above its upper bound, a ``store_grad`` or ``layerwise`` that is
        not a bool, or ``layers`` without ``layerwise=True``. Values that arrive
        traced (from ``optax.inject_hyperparams`` under ``jax.jit``) are not checked;
        ``store_grad``, ``layerwise`` and ``layers`` must then be ``static_args``.

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
    hyper = _Hyperparameters(
        momentum,
        confidence,
        f_min,
        min_learning_rate,
        max_learning_rate,
        min_grad_sq_norm,
        max_grad_sq_norm,
    )
    store_grad, layerwise = _check_hyperparameters(hyper, store_grad, layerwise, layers)
    init_fn = functools.partial(
        _init_state, store_grad=store_grad, layerwise=layerwise, layers=layers
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
        compute = jnp.promote_types(state.learning_rate.dtype, jnp.float32)
        loss = loss_scalar(value, compute)
        with_paths, treedef = jax.tree_util.tree_flatten_with_path(updates)
        grads = [g for _, g in with_paths]
        leaf_sq, grad_sq = _sq_norm(grads, compute)
        finite, eta, keep, carry = _step_scalars(loss, grad_sq, state.count, hyper)
        if layerwise:
            paths = [path for path, _ in with_paths]
            etas = _layer_etas(finite, eta, leaf_sq, layer_ids(paths, layers))
        else:
            etas = [eta] * len(grads)
        steps, velocity = _nesterov(treedef, grads, state.velocity, etas, (finite, keep, carry))
        new_state = state._replace(
            count=jnp.where(finite, optax.safe_increment(state.count), state.count),
            velocity=velocity,
            learning_rate=jnp.where(finite, eta, state.learning_rate).astype(
                state.learning_rate.dtype
            ),
        )
        return steps, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def adaptive_nesterov(
    momentum: optax.ScalarOrSchedule = 0.9,
    confidence: optax.ScalarOrSchedule = 1.0,
    f_min: optax.ScalarOrSchedule = 0.0,
    min_learning_rate: jax.typing.ArrayLike | None = 1e-3,
    max_learning_rate: optax.ScalarOrSchedule | None = 1e-1,
    min_grad_sq_norm: jax.typing.ArrayLike | None = 1e-4,
    max_grad_sq_norm: jax.typing.ArrayLike | None = 1e10,
    *,
    store_grad: bool = True,
    layerwise: bool = False,
    layers: LayersFn | None = None,
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

    With ``store_grad=True`` (the default) the state carries ``value`` (always
    ``+inf``) and ``grad``, so the ``optax.value_and_grad_from_state`` loop works and
    always recomputes the loss and gradient at the current params; the loss must then
    have the params' dtype. ``store_grad=False`` drops the params-sized ``grad``: the
    state is then Nesterov's velocity plus three scalars (use it for large models).
    Under ``optax.MultiSteps`` pass the mean loss of the accumulated mini-batches as
    ``value`` (MultiSteps forwards the last ``value`` only). See
    :func:`scale_by_adaptive_nesterov` for non-finite inputs (a skipped step advances
    no schedule), complex parameters and ``layerwise=True``.

    Args:
      momentum: :math:`\alpha \in [0, 1)`, a number or a schedule.
      confidence: :math:`\gamma_k > 0`, a number or an optax schedule.
      f_min: :math:`f^\star`, a number or a schedule.
      min_learning_rate: lower bound of :math:`\eta`, or ``None``.
      max_learning_rate: upper bound of :math:`\eta` (a number or a schedule), or
        ``None``.
      min_grad_sq_norm: lower bound of :math:`\|g\|^2` in the division, or ``None``.
      max_grad_sq_norm: upper bound of :math:`\|g\|^2` in the division, or ``None``.
      store_grad: keep the ``grad`` field for ``optax.value_and_grad_from_state``.
      layerwise: layer-specific learning rates :math:`\eta f_l` (Singh et al.).
      layers: the layer grouping for ``layerwise=True`` (``None``: one per leaf).

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

      Without the ``grad`` buffer, the state is the velocity and three scalars:

      >>> state = po.adaptive_nesterov(store_grad=False).init(params)
      >>> sum(x.size for x in jax.tree.leaves(state)) - params.size
      3

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
            store_grad=store_grad,
            layerwise=layerwise,
            layers=layers,
        ),
        optax.scale(-1.0),
    )


class _Hyperparameters(NamedTuple):
    """The arguments of :func:`scale_by_adaptive_nesterov` that set the step's scalars."""

    momentum: optax.ScalarOrSchedule
    confidence: optax.ScalarOrSchedule
    f_min: optax.ScalarOrSchedule
    min_learning_rate: jax.typing.ArrayLike | None
    max_learning_rate: optax.ScalarOrSchedule | None
    min_grad_sq_norm: jax.typing.ArrayLike | None
    max_grad_sq_norm: jax.typing.ArrayLike | None


def _step_scalars(
    loss: jax.Array, grad_sq: jax.Array, count: jax.Array, hyper: _Hyperparameters
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(finite, eta, keep, carry)`` of one step, each computed once.

    ``finite``: the loss and ``grad_sq`` are finite; ``eta``: the Polyak step size of
    Algorithm 5; ``keep`` and ``carry``: the momentum where the velocity is kept and
    where it enters the step (1 and 0 for a skipped step).
    """
    # The skip flag goes through a sqrt (finite exactly where its argument is): XLA
    # fuses cheap scalar chains into every consumer, which would put the sum over all
    # leaves into each leaf's update (an HLO quadratic in the number of leaves); an
    # expensive op is computed once and its result shared.
    finite = jnp.isfinite(loss) & jnp.isfinite(jnp.sqrt(grad_sq))
    eta = polyak_step_size(
        loss,
        grad_sq,
        confidence=at(hyper.confidence, count),
        f_min=at(hyper.f_min, count),
        absolute_gap=True,
        min_sq_norm=hyper.min_grad_sq_norm,
        max_sq_norm=hyper.max_grad_sq_norm,
        min_step=hyper.min_learning_rate,
        max_step=at(hyper.max_learning_rate, count),
    )
    alpha = jnp.asarray(at(hyper.momentum, count), loss.dtype)
    # A skipped step keeps the velocity (alpha 1, g 0) and emits zero. The skip is in
    # the multiply-adds, not a select on their results as skip_unless_finite does: a
    # select on the velocity changes which product XLA:CPU fuses into a multiply-add,
    # and with it the float32 numbers of every step.
    keep = jnp.where(finite, alpha, 1)
    carry = jnp.where(finite, alpha, 0)
    # Computed once (see computed_once): otherwise XLA copies the whole scalar chain
    # (isfinite, clip, select) into every leaf's fusion.
    return computed_once(finite, eta, keep, carry)


def _sq_norm(grads: list[jax.Array], compute: Any) -> tuple[list[jax.Array], jax.Array]:
    """Each leaf's sum of |g|^2 and their total, in ``compute`` (float32 at least).

    A NaN or inf entry makes the total non-finite, so the same number decides the skip:
    one decision per step, no per-leaf ``isfinite``. One reduction per leaf, not one over
    the leaves' concatenation: XLA:CPU's fused concatenation of the leaves (masked vector
    loads and stores) is slow in some buffer placements.
    """
    leaf_sq = [sum_of_squares(g).astype(compute) for g in grads]
    total = jnp.sum(jnp.stack(leaf_sq)) if leaf_sq else jnp.zeros([], compute)
    return leaf_sq, total


def _layer_etas(
    finite: jax.Array, eta: jax.Array, leaf_sq: list[jax.Array], ids: list[int]
) -> list[jax.Array]:
    """:math:`\\eta f_l` of every leaf, its layer's factor from the raw gradient; 0 for a
    skipped step (where :math:`f_l` may be NaN)."""
    layer_sq: dict[int, jax.Array] = {}
    for layer, sq in zip(ids, leaf_sq, strict=True):
        layer_sq[layer] = sq if layer not in layer_sq else layer_sq[layer] + sq
    scaled = per_layer(lambda s: jnp.where(finite, eta * log_norm_factor(s), 0), layer_sq)
    return [scaled[layer] for layer in ids]


def _nesterov(
    treedef: jax.tree_util.PyTreeDef,
    grads: list[jax.Array],
    velocity: optax.Updates,
    etas: list[jax.Array],
    scalars: tuple[jax.Array, jax.Array, jax.Array],
) -> tuple[optax.Updates, optax.Updates]:
    """``(eta g + carry v_new, v_new)`` with ``v_new = keep v + eta g``, leaf by leaf.

    ``scalars`` are ``(finite, keep, carry)``: the momentum twice for a finite step; 1
    and 0 (with ``g`` read as 0) for a skipped one. Each leaf is computed in its dtype
    promoted to the scalars' (float32 at least); the step keeps the gradient's dtype and
    the velocity the velocity's.

    This is ``optax.trace(alpha, nesterov=True)`` over the updates ``eta g`` for a
    finite step, but that transform has one decay for both products, so it cannot fold
    the skip in, and a select after it changes XLA:CPU's multiply-add fusion (above).
    """
    finite, keep, carry = scalars
    steps, velocities = [], []
    for g, v, e in zip(grads, treedef.flatten_up_to(velocity), etas, strict=True):
        dtype = jnp.promote_types(jnp.result_type(g, v), keep.dtype)
        g_in = jnp.where(finite, g, 0).astype(dtype)
        v_new = keep * v.astype(dtype) + e * g_in
        velocities.append(v_new.astype(v.dtype))
        # theta'_k - theta'_{k+1} = eta_k g_k + alpha v_k; zero for a skipped step.
        steps.append((e * g_in + carry * v_new).astype(g.dtype))
    return treedef.unflatten(steps), treedef.unflatten(velocities)


def _check_hyperparameters(
    hyper: _Hyperparameters, store_grad: Any, layerwise: Any, layers: LayersFn | None
) -> tuple[bool, bool]:
    """Validates the transform's arguments; returns ``(store_grad, layerwise)`` as bools."""
    _check_momentum(hyper.momentum)
    _check_number_or_schedule("confidence", hyper.confidence, positive=True)
    _check_number_or_schedule("f_min", hyper.f_min, positive=False)
    lr_lo = _check_bound("min_learning_rate", hyper.min_learning_rate, schedule_ok=False)
    lr_hi = _check_bound("max_learning_rate", hyper.max_learning_rate, schedule_ok=True)
    sq_lo = _check_bound("min_grad_sq_norm", hyper.min_grad_sq_norm, schedule_ok=False)
    sq_hi = _check_bound("max_grad_sq_norm", hyper.max_grad_sq_norm, schedule_ok=False)
    _check_order("min_learning_rate", lr_lo, "max_learning_rate", lr_hi)
    _check_order("min_grad_sq_norm", sq_lo, "max_grad_sq_norm", sq_hi)
    store_grad = _check_flag("store_grad", store_grad)
    layerwise = _check_flag("layerwise", layerwise)
    check_layers(layers)
    if layers is not None and not layerwise:
        raise ValueError("layers groups the leaves for layerwise=True; set layerwise=True")
    return store_grad, layerwise


def _init_state(
    params: optax.Params, *, store_grad: bool, layerwise: bool, layers: LayersFn | None
) -> AdaptiveNesterovState:
    """The first state: zero velocity; with ``layerwise``, ``layers`` is tried on the
    params' key paths first, so a bad grouping fails at init."""
    if layerwise:
        layer_ids(_paths(params), layers)
    dtype = _scalar_dtype(params)
    return AdaptiveNesterovState(
        count=jnp.zeros([], jnp.int32),
        velocity=optax.tree.zeros_like(params),
        learning_rate=jnp.zeros([], dtype),
        value=jnp.full([], jnp.inf, dtype),
        grad=optax.tree.zeros_like(params) if store_grad else None,
    )


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


def _check_momentum(momentum: Any) -> None:
    if momentum is None:
        raise ValueError("momentum must be a number in [0, 1) or a schedule, got None")
    if callable(momentum):
        return
    number = concrete("momentum", momentum)
    if number is not None and not 0.0 <= number < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {number}")


def _check_flag(name: str, value: Any) -> bool:
    """A Python bool; a traced one (from ``inject_hyperparams``) must be static."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, jax.Array) and value.shape == () and value.dtype == jnp.bool_:
        try:
            return bool(value)
        except jax.errors.ConcretizationTypeError as e:
            raise ValueError(
                f"{name} must be a Python bool; with optax.inject_hyperparams list it in "
                f"static_args=({name!r}, ...)"
            ) from e
    raise ValueError(f"{name} must be True or False, got {value!r}")


def _paths(tree: Any) -> list[jax.tree_util.KeyPath]:
    return [path for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _check_number_or_schedule(name: str, value: Any, *, positive: bool) -> None:
    if value is None:
        raise ValueError(f"{name} must be a number or a schedule, got None")
    if callable(value):
        return
    number = concrete(name, value)
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
    number = concrete(name, value)
    if number is None:
        return None
    if np.isnan(number) or number < 0:
        raise ValueError(f"{name} must be a non-negative number or None, got {number}")
    return number


def _check_order(lo_name: str, lo: float | None, hi_name: str, hi: float | None) -> None:
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"{lo_name} ({lo}) must not exceed {hi_name} ({hi})")
