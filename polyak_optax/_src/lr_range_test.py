"""The learning-rate range test (Smith; fastai's ``lr_find``) as one jitted ``lax.scan``.

The whole sweep runs on the device: no Python loop and no host sync per step. The
suggestions are computed once, on the host, from the one transfer of the recorded losses.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import optax

_MODES = ("exponential", "linear")
_CACHE_SIZE = 8  # compiled sweeps kept, by identity of the functions and by program text
_by_identity: collections.OrderedDict[Any, Any] = collections.OrderedDict()
_by_program: collections.OrderedDict[str, Any] = collections.OrderedDict()


class LRRangeTestResult(NamedTuple):
    """What :func:`lr_range_test` recorded and suggests.

    Attributes:
      learning_rates: the sweep, ``num_steps`` float32 values from ``min_lr`` to ``max_lr``.
      losses: the loss at each step, computed before that step's update; NaN after the
        stop.
      smoothed_losses: the bias-corrected exponential moving average of ``losses``; NaN
        after the stop.
      suggestion: the learning rate of steepest descent of the smoothed loss against
        log(lr) (NaN when fewer than two finite points were recorded).
      valley: fastai's "valley" learning rate (NaN without a finite point).
      minimum: the learning rate at the minimum of the smoothed loss, divided by 10.
      num_recorded: the number of steps run, the stopping step included; entries from
        this index on are NaN.
      diverged: whether the sweep stopped early (divergence or a non-finite loss).
    """

    learning_rates: np.ndarray
    losses: np.ndarray
    smoothed_losses: np.ndarray
    suggestion: float
    valley: float
    minimum: float
    num_recorded: int
    diverged: bool


class _Carry(NamedTuple):
    params: optax.Params
    opt_state: optax.OptState
    average: jax.Array  # shape=(), float32: the biased moving average of the loss
    best: jax.Array  # shape=(), float32: the lowest smoothed loss so far
    stopped: jax.Array  # shape=(), bool
    num_recorded: jax.Array  # shape=(), int32


def lr_range_test(
    loss_fn: Callable[..., Any],
    params: optax.Params,
    batch: Any,
    optimizer_factory: Callable[[jax.Array], optax.GradientTransformation],
    min_lr: float = 1e-7,
    max_lr: float = 10.0,
    num_steps: int = 100,
    mode: str = "exponential",
    smoothing: float = 0.98,
    diverge_threshold: float = 4.0,
    *,
    stacked: bool = False,
    has_aux: bool = False,
    skip_start: int | None = None,
    skip_end: int = 5,
) -> LRRangeTestResult:
    r"""Sweeps the learning rate upwards during training and records the loss (Smith).

    Step :math:`i` of the sweep uses the learning rate :math:`\eta_i`, geometrically
    (``"exponential"``) or linearly spaced from ``min_lr`` to ``max_lr``; it records the
    loss :math:`\ell_i` at the current parameters, then updates them with
    ``optimizer_factory(eta_i)``, whose state carries over from step to step (as in
    PyTorch's and fastai's finders, which change the learning rate of one optimizer).
    The smoothed loss is the bias-corrected moving average

    .. math::
      a_i = \beta a_{i-1} + (1 - \beta)\ell_i, \qquad s_i = a_i / (1 - \beta^{i+1}),

    with :math:`\beta` = ``smoothing``. The sweep stops at the first step where
    :math:`s_i` > ``diverge_threshold`` :math:`\times \min_{j \le i} s_j` or where
    :math:`s_i` is not finite: that step is recorded, the later entries are NaN and the
    parameters are no longer updated (a ``lax.cond`` skips the work). Since the loss of
    step :math:`i` is measured before its update, the divergence caused by
    :math:`\eta_{i-1}` shows at step :math:`i`. The rule assumes a positive loss (a
    cross-entropy is).

    The whole sweep is one jitted ``lax.scan``; the losses come to the host once, where
    the suggestions are computed on the finite points minus the first ``skip_start``
    and the last ``skip_end`` (fastai's trimming; all finite points if that leaves fewer
    than two):

    * ``suggestion``: the learning rate where :math:`ds/d\log\eta` (central differences)
      is most negative;
    * ``valley``: fastai's rule: the longest strictly decreasing run of the smoothed loss,
      two thirds of the way down;
    * ``minimum``: the learning rate of the lowest smoothed loss, divided by 10.

    Args:
      loss_fn: ``loss_fn(params, batch)``, a scalar (or ``(scalar, aux)`` with
        ``has_aux``; aux is dropped). A Flax model's state such as ``batch_stats`` can be
        closed over (it is then held fixed).
      params: the starting parameters; never modified (and not donated).
      batch: the batch used at every step, or with ``stacked=True`` a pytree whose leaves
        have a leading axis of ``num_steps`` batches, batch ``i`` used at step ``i``.
      optimizer_factory: ``lr -> optax.GradientTransformation``, called with a traced
        float32 scalar, e.g. ``lambda lr: optax.sgd(lr, momentum=0.9)``. Its ``init``
        runs once, before the sweep, at ``min_lr``; each step builds the optimizer at
        its learning rate and updates the carried state. Extra args ``value``, ``grad``,
        ``value_fn`` reach transformations that take them. An
        ``optax.inject_hyperparams`` optimizer reads its hyperparameters from its state:
        at each step every injected hyperparameter that the factory derives from ``lr``,
        under any name (``learning_rate=lr``, ``max_learning_rate=lr``,
        ``min_learning_rate=lr / 100``, ...), is set in the carried state to its value
        at the step's learning rate. The values are read off ``factory(lr).init`` on a
        one-element-per-leaf stand-in for the params (nothing params-sized enters the
        sweep); the entries copied are the scalar dict entries whose init value depends
        on ``lr`` and whose tree path holds a scalar in the carried state. Counts,
        moments and other state carry over. So ``lambda lr:
        optax.inject_hyperparams(po.adaptive_nesterov)(max_learning_rate=lr)`` sweeps
        the eta ceiling as ``lambda lr: po.adaptive_nesterov(max_learning_rate=lr)``
        does. A second call with equal functions (the same program) reuses the compiled
        sweep.
      min_lr: the first learning rate (positive).
      max_lr: the last learning rate (above ``min_lr``).
      num_steps: the number of steps (at least 2).
      mode: ``"exponential"`` or ``"linear"`` spacing.
      smoothing: :math:`\beta` in [0, 1); 0 disables smoothing.
      diverge_threshold: stop once the smoothed loss exceeds this multiple (>= 1) of its
        best; ``math.inf`` stops only on a non-finite loss.
      stacked: whether ``batch`` holds one batch per step along its leading axis.
      has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
      skip_start: points left out at the start by the suggestions; ``None`` means
        ``num_steps // 10`` (fastai).
      skip_end: points left out at the end (before the NaN tail) by the suggestions.

    Returns:
      An :class:`LRRangeTestResult` of host (NumPy) arrays and Python floats.

    Raises:
      ValueError: for a non-callable ``loss_fn``/``optimizer_factory``, a bad range,
        ``num_steps`` < 2, an unknown ``mode``, ``smoothing`` outside [0, 1),
        ``diverge_threshold`` < 1, negative skips, or stacked ``batch`` leaves whose
        leading axis is not ``num_steps``.

    Example:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import polyak_optax as po
      >>> def loss_fn(params, batch):  # least squares, Hessian eigenvalue 2
      ...     return jnp.mean((batch["x"] * params["w"] - batch["y"]) ** 2)
      >>> batch = {"x": jnp.ones(4), "y": jnp.full(4, 3.0)}
      >>> params = {"w": jnp.zeros(())}
      >>> result = po.lr_range_test(loss_fn, params, batch, optax.sgd,
      ...                           min_lr=1e-3, max_lr=10.0, num_steps=50)
      >>> result.diverged, bool(result.suggestion < 1.0)  # diverges past lr = 2 / 2
      (True, True)
      >>> opt = optax.sgd(result.suggestion)
      >>> state = opt.init(params)
      >>> grads = jax.grad(loss_fn)(params, batch)
      >>> updates, state = opt.update(grads, state, params)
      >>> params = optax.apply_updates(params, updates)
      >>> bool(loss_fn(params, batch) < 9.0)
      True

    References:
      Smith, `Cyclical Learning Rates for Training Neural Networks
      <https://arxiv.org/abs/1506.01186>`_, 2017 (section 3.3).
    """
    min_lr, max_lr, num_steps, smoothing, diverge_threshold, skip_start, skip_end = (
        _check_arguments(
            loss_fn,
            optimizer_factory,
            (min_lr, max_lr, num_steps, mode, smoothing, diverge_threshold),
            batch if stacked else None,
            (skip_start, skip_end),
        )
    )
    if mode == "exponential":
        learning_rates = np.geomspace(min_lr, max_lr, num_steps)
    else:
        learning_rates = np.linspace(min_lr, max_lr, num_steps)
    learning_rates = learning_rates.astype(np.float32)

    args = (
        params,
        batch,
        jnp.asarray(learning_rates),
        jnp.float32(smoothing),
        jnp.float32(diverge_threshold),
    )
    sweep = _compiled_sweep(loss_fn, optimizer_factory, has_aux, stacked, args)
    losses, smoothed, num_recorded, stopped = jax.device_get(sweep(*args))
    suggestion, valley, minimum = _suggestions(
        learning_rates, smoothed, int(num_recorded), skip_start, skip_end
    )
    return LRRangeTestResult(
        learning_rates=learning_rates,
        losses=np.asarray(losses),
        smoothed_losses=np.asarray(smoothed),
        suggestion=suggestion,
        valley=valley,
        minimum=minimum,
        num_recorded=int(num_recorded),
        diverged=bool(stopped),
    )


def _check_arguments(
    loss_fn: Any,
    optimizer_factory: Any,
    sweep: tuple[Any, Any, Any, Any, Any, Any],
    stacked_batch: Any,
    skips: tuple[Any, Any],
) -> tuple[float, float, int, float, float, int, int]:
    """Validates :func:`lr_range_test`'s arguments, naming the first bad one.

    ``sweep`` is ``(min_lr, max_lr, num_steps, mode, smoothing, diverge_threshold)``,
    ``stacked_batch`` the batch with ``stacked=True`` (else ``None``) and ``skips``
    ``(skip_start, skip_end)``. Returns ``(min_lr, max_lr, num_steps, smoothing,
    diverge_threshold, skip_start, skip_end)`` as Python numbers.
    """
    min_lr, max_lr, num_steps, mode, smoothing, diverge_threshold = sweep
    skip_start, skip_end = skips
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {loss_fn!r}")
    if not callable(optimizer_factory):
        raise ValueError(f"optimizer_factory must be callable, got {optimizer_factory!r}")
    min_lr = _real("min_lr", min_lr)
    max_lr = _real("max_lr", max_lr)
    if not 0 < min_lr < math.inf:
        raise ValueError(f"min_lr must be positive and finite, got {min_lr!r}")
    if not min_lr < max_lr < math.inf:
        raise ValueError(f"max_lr must be finite and above min_lr={min_lr!r}, got {max_lr!r}")
    num_steps = _int_at_least("num_steps", num_steps, 2)
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    smoothing = _real("smoothing", smoothing)
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
    diverge_threshold = _real("diverge_threshold", diverge_threshold)
    if not diverge_threshold >= 1:
        raise ValueError(f"diverge_threshold must be at least 1, got {diverge_threshold!r}")
    skip_start = num_steps // 10 if skip_start is None else skip_start
    skip_start = _int_at_least("skip_start", skip_start, 0)
    skip_end = _int_at_least("skip_end", skip_end, 0)
    if stacked_batch is not None:
        leaves = jax.tree.leaves(stacked_batch)
        if not leaves or any(np.ndim(x) == 0 or np.shape(x)[0] != num_steps for x in leaves):
            shapes = [np.shape(x) for x in leaves]
            raise ValueError(
                f"batch: with stacked=True every leaf needs a leading axis of num_steps="
                f"{num_steps}, got shapes {shapes}"
            )

    return min_lr, max_lr, num_steps, smoothing, diverge_threshold, skip_start, skip_end


def _compiled_sweep(
    loss_fn: Callable[..., Any],
    optimizer_factory: Callable[[jax.Array], optax.GradientTransformation],
    has_aux: bool,
    stacked: bool,
    args: tuple[Any, ...],
) -> Any:
    """The compiled sweep for these functions and argument types, compiled at most once.

    The same function objects with the same argument types reuse their executable without
    tracing. New but equal ones (a loss or factory written again, a model rebuilt with
    the same weights) are traced and lowered, and their program text (closed-over arrays
    included) finds the executable compiled for an identical program: XLA compiles once.
    """
    signature = jax.tree.map(
        lambda x: (
            np.shape(x),
            jnp.result_type(x),
            getattr(x, "weak_type", False),
            getattr(x, "sharding", None),
        ),
        args,
    )
    identity = (
        loss_fn,
        optimizer_factory,
        has_aux,
        stacked,
        jax.tree.structure(args),
        tuple(jax.tree.leaves(signature, is_leaf=lambda x: isinstance(x, tuple))),
    )
    try:
        compiled = _by_identity.get(identity)
    except TypeError:  # an unhashable loss or factory: only the program text identifies it
        identity, compiled = None, None
    if compiled is None:
        sweep = functools.partial(_sweep, loss_fn, optimizer_factory, has_aux, stacked)
        lowered = jax.jit(sweep).lower(*args)
        key = hashlib.sha256(lowered.as_text().encode()).hexdigest()
        compiled = _by_program.get(key)
        if compiled is None:
            compiled = lowered.compile()
        _remember(_by_program, key, compiled)
        if identity is not None:
            _remember(_by_identity, identity, compiled)
    return compiled


def _remember(cache: collections.OrderedDict[Any, Any], key: Any, value: Any) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)


def _sweep(
    loss_fn: Callable[..., Any],
    optimizer_factory: Callable[[jax.Array], optax.GradientTransformation],
    has_aux: bool,
    stacked: bool,
    params: optax.Params,
    batch: Any,
    learning_rates: jax.Array,
    smoothing: jax.Array,
    diverge_threshold: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The device part: the scan over the learning rates, stopping inside the scan."""
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=has_aux)

    def scalar_loss(p: optax.Params, b: Any) -> jax.Array:
        out = loss_fn(p, b)
        return out[0] if has_aux else out

    params = _strong(params)
    # The one init, before the scan; each step builds the optimizer at its learning rate
    # and updates the carried state.
    opt_state = _strong(_optimizer(optimizer_factory, learning_rates[0]).init(params))
    nan = jnp.float32(jnp.nan)

    def run(carry: _Carry, index: jax.Array, lr: jax.Array, step_batch: Any):
        value, grads = value_and_grad(carry.params, step_batch)
        value = value[0] if has_aux else value
        loss = jnp.asarray(value, jnp.float32)
        opt = _optimizer(optimizer_factory, lr)
        state = _with_hyperparameters(optimizer_factory, carry.params, carry.opt_state, lr)
        updates, new_state = opt.update(
            grads,
            state,
            carry.params,
            value=value,
            grad=grads,
            value_fn=lambda p: scalar_loss(p, step_batch),
        )
        new_params = optax.apply_updates(carry.params, updates)
        new_carry, smoothed = _record(carry, index, loss, smoothing, diverge_threshold)
        new_carry = new_carry._replace(
            params=_like(new_params, carry.params), opt_state=_like(new_state, carry.opt_state)
        )
        return new_carry, (loss, smoothed)

    def skip(carry: _Carry, index: jax.Array, lr: jax.Array, step_batch: Any):
        del index, lr, step_batch
        return carry, (nan, nan)

    def step(carry: _Carry, xs: tuple[jax.Array, jax.Array, Any]):
        index, lr, step_batch = xs
        if not stacked:
            step_batch = batch
        return jax.lax.cond(carry.stopped, skip, run, carry, index, lr, step_batch)

    carry = _Carry(
        params, opt_state, jnp.float32(0.0), jnp.float32(jnp.inf), jnp.bool_(False), jnp.int32(0)
    )
    indices = jnp.arange(learning_rates.shape[0], dtype=jnp.int32)
    xs = (indices, learning_rates, batch if stacked else None)
    final, (losses, smoothed) = jax.lax.scan(step, carry, xs)
    return losses, smoothed, final.num_recorded, final.stopped


def _record(
    carry: _Carry, index: jax.Array, loss: jax.Array, smoothing: jax.Array, threshold: jax.Array
) -> tuple[_Carry, jax.Array]:
    """The carry after recording ``loss`` at step ``index``, and the smoothed loss.

    The smoothed loss is the bias-corrected moving average; the sweep stops once it is
    not finite or exceeds ``threshold`` times its best.
    """
    average = smoothing * carry.average + (1 - smoothing) * loss
    smoothed = average / (1 - smoothing ** (index + 1).astype(jnp.float32))
    best = jnp.minimum(carry.best, smoothed)
    diverged = ~jnp.isfinite(smoothed) | (smoothed > threshold * best)
    new_carry = carry._replace(
        average=average, best=best, stopped=diverged, num_recorded=carry.num_recorded + 1
    )
    return new_carry, smoothed


def _optimizer(
    factory: Callable[[jax.Array], optax.GradientTransformation], lr: jax.Array
) -> optax.GradientTransformationExtraArgs:
    return optax.with_extra_args_support(factory(lr))


def _with_hyperparameters(
    factory: Callable[[jax.Array], optax.GradientTransformation],
    params: optax.Params,
    state: optax.OptState,
    lr: jax.Array,
) -> optax.OptState:
    """The carried state with every injected hyperparameter set to its value at ``lr``.

    An ``optax.inject_hyperparams`` optimizer reads its hyperparameters from its state,
    not from the factory's arguments. Those the factory derives from ``lr`` (under any
    name: ``learning_rate``, ``max_learning_rate``, ``min_learning_rate=lr / 100``, ...)
    are read off a stand-in init: ``factory(lr).init`` on a probe with the params'
    structure and dtypes but one element per leaf (hyperparameters do not depend on the
    params; nothing params-sized is built). A probe entry is copied into the state when
    it is a scalar dict entry (where ``inject_hyperparams`` keeps hyperparameters) whose
    init value depends on ``lr`` (data dependence in the traced init) and whose tree path
    holds a scalar in the carried state. Counts, moments and NamedTuple fields (adaptive
    Nesterov's eta of the last step) are left alone; a plain (non-injected) optimizer
    gets its state back unchanged.
    """
    probe = jax.tree.map(lambda x: jnp.zeros((1,) * np.ndim(x), jnp.result_type(x)), params)

    closed, shapes = jax.make_jaxpr(lambda rate: factory(rate).init(probe), return_shape=True)(lr)
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(shapes)[0]]
    depends = _depends_on_inputs(closed.jaxpr, [True])
    values = jax.extend.core.jaxpr_as_fun(closed)(lr)
    wanted = {}
    for path, value, dependent in zip(paths, values, depends, strict=True):
        if (
            dependent
            and path
            and isinstance(path[-1], jax.tree_util.DictKey)
            and jnp.shape(value) == ()
        ):
            wanted[path] = value
    if not wanted:
        return state
    flat_state, treedef = jax.tree_util.tree_flatten_with_path(state)
    leaves = []
    for path, leaf in flat_state:
        if path in wanted and jnp.shape(leaf) == ():
            leaf = jax.lax.convert_element_type(wanted[path], jnp.result_type(leaf))
        leaves.append(leaf)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _depends_on_inputs(jaxpr: Any, inputs: list[bool]) -> list[bool]:
    """For each output of ``jaxpr``, whether it is data-dependent on a flagged input.

    Follows the equations forward; a call of a sub-jaxpr with the same arity (``jit``,
    custom derivatives) is followed inside, any other equation with a dependent input
    makes all its outputs dependent (an over-approximation).
    """
    dependent = {v for v, flag in zip(jaxpr.invars, inputs, strict=True) if flag}

    def is_dependent(v: Any) -> bool:
        return isinstance(v, jax.extend.core.Var) and v in dependent

    for eqn in jaxpr.eqns:
        flags = [is_dependent(v) for v in eqn.invars]
        if not any(flags):
            continue
        outs = [True] * len(eqn.outvars)
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            if (
                isinstance(inner, jax.extend.core.Jaxpr)
                and len(inner.invars) == len(eqn.invars)
                and len(inner.outvars) == len(eqn.outvars)
            ):
                outs = _depends_on_inputs(inner, flags)
                break
        dependent.update(v for v, flag in zip(eqn.outvars, outs, strict=True) if flag)
    return [is_dependent(v) for v in jaxpr.outvars]


def _strong(tree: Any) -> Any:
    """Arrays of the same dtypes without weak types (the scan carry must keep its types)."""
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.asarray(x).dtype), tree)


def _like(tree: Any, reference: Any) -> Any:
    return jax.tree.map(
        lambda x, ref: jax.lax.convert_element_type(x, jnp.asarray(ref).dtype), tree, reference
    )


def _suggestions(
    learning_rates: np.ndarray,
    smoothed: np.ndarray,
    num_recorded: int,
    skip_start: int,
    skip_end: int,
) -> tuple[float, float, float]:
    """(suggestion, valley, minimum) from the finite recorded points, on the host."""
    lrs = np.asarray(learning_rates[:num_recorded], np.float64)
    losses = np.asarray(smoothed[:num_recorded], np.float64)
    finite = np.isfinite(losses)
    lrs, losses = lrs[finite], losses[finite]
    window = slice(skip_start, len(losses) - skip_end)
    if len(losses[window]) >= 2:
        lrs, losses = lrs[window], losses[window]
    if len(losses) == 0:
        return math.nan, math.nan, math.nan
    minimum = float(lrs[np.argmin(losses)] / 10)
    valley = float(lrs[_valley_index(losses)])
    if len(losses) < 2:
        return math.nan, valley, minimum
    slopes = np.gradient(losses, np.log(lrs))
    return float(lrs[np.argmin(slopes)]), valley, minimum


def _valley_index(losses: np.ndarray) -> int:
    """fastai's ``valley``: two thirds down the longest strictly decreasing subsequence.

    ``lds[i]`` is the length of the longest strictly decreasing subsequence ending at
    ``i``; the valley ends at the first index of the longest one and "starts" ``lds``
    indices earlier (fastai's convention), and the suggestion sits at
    ``start + int(len / 3) + int(len / 6)``.
    """
    n = len(losses)
    lds = np.ones(n, dtype=np.int64)
    for i in range(1, n):
        higher = losses[:i] > losses[i]
        if higher.any():
            lds[i] = lds[:i][higher].max() + 1
    end = int(np.argmax(lds))
    start = end - int(lds[end])
    sections = (end - start) / 3
    return max(0, start + int(sections) + int(sections / 2))


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return value


def _int_at_least(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def plot_lr_range_test(
    result: LRRangeTestResult,
    ax: Any = None,
    path: str | None = None,
    *,
    show_raw: bool = True,
) -> Any:
    """Plots the loss against the learning rate (log axis) with the suggestions marked.

    matplotlib is imported only here. Without ``ax`` a new figure is made: a pyplot one
    for interactive use, or, when ``path`` is given, a bare ``Figure`` that needs no
    display (for command-line tools). The y range follows the smoothed loss, so a raw
    spike at the divergence does not flatten the curve.

    Args:
      result: what :func:`lr_range_test` returned.
      ax: a matplotlib ``Axes`` to draw into, or ``None``.
      path: where to save the figure (PNG, SVG, ... by extension), or ``None``.
      show_raw: also draw the raw losses, faintly.

    Returns:
      The ``Axes`` drawn into.

    Raises:
      ValueError: if ``result`` is not an :class:`LRRangeTestResult` or recorded nothing
        finite.

    Example:
      >>> import numpy as np
      >>> from matplotlib.figure import Figure
      >>> import polyak_optax as po
      >>> lrs = np.geomspace(1e-3, 1.0, 8).astype(np.float32)
      >>> losses = np.array([1.0, 0.9, 0.7, 0.4, 0.3, 0.35, 2.0, np.nan], np.float32)
      >>> result = po.LRRangeTestResult(lrs, losses, losses, 0.01, 0.02, 0.01, 7, True)
      >>> ax = po.plot_lr_range_test(result, ax=Figure().add_subplot())
      >>> ax.get_xscale(), len(ax.get_lines())  # raw, smoothed and three markers
      ('log', 5)
    """
    if not isinstance(result, LRRangeTestResult):
        raise ValueError(f"result must be an LRRangeTestResult, got {type(result).__name__}")
    lrs = np.asarray(result.learning_rates, np.float64)
    smoothed = np.asarray(result.smoothed_losses, np.float64)
    raw = np.asarray(result.losses, np.float64)
    finite = np.isfinite(smoothed)
    if not finite.any():
        raise ValueError("result: no finite loss was recorded; nothing to plot")

    if ax is None:
        if path is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=(6, 4))
        else:
            from matplotlib.figure import Figure

            ax = Figure(figsize=(6, 4)).add_subplot()

    if show_raw:
        ax.plot(lrs[np.isfinite(raw)], raw[np.isfinite(raw)], color="C0", alpha=0.3, label="loss")
    ax.plot(lrs[finite], smoothed[finite], color="C0", label="smoothed loss")
    markers = (("suggestion", "o", "C1"), ("valley", "s", "C2"), ("minimum", "^", "C3"))
    for name, marker, color in markers:
        lr = getattr(result, name)
        if math.isfinite(lr):
            y = np.interp(np.log(lr), np.log(lrs[finite]), smoothed[finite])
            ax.plot(
                [lr], [y], marker=marker, color=color, linestyle="none", label=f"{name}: {lr:.2e}"
            )
    ax.set_xscale("log")
    low, high = smoothed[finite].min(), smoothed[finite].max()
    margin = 0.05 * (high - low) if high > low else 0.05 * abs(high) + 1e-12
    ax.set_ylim(low - margin, high + margin)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title("learning-rate range test")
    ax.legend()
    if path is not None:
        ax.figure.savefig(path, dpi=120, bbox_inches="tight")
    return ax
