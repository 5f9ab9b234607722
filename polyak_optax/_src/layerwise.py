"""Layer-specific adaptive learning rates (equation 9 of the layer-specific paper).

Each layer ``l`` gets the learning rate ``t_l = t * (1 + log(1 + 1/||g_l||))``, where
``g_l`` is the gradient of that layer at the current step: no history, one norm per
layer. Two forms:

* :func:`scale_by_layerwise_log_norm` multiplies the incoming update of each layer by
  the factor. First in a chain before SGD, heavy-ball momentum or Nesterov it is the
  paper's rule (equation 10 and its momentum variants): those optimizers are linear in
  the gradient, so scaling the gradient scales the learning rate.
* :func:`layerwise` wraps a preconditioned optimizer (AdaGrad as in equation 12, Adam,
  adaptive Nesterov): the factor comes from the raw gradient, the inner optimizer sees
  and accumulates the raw gradient, and the factor multiplies the inner's output.

A "layer" is one pytree leaf by default (Caffe's per-blob rule, which the paper's
code base follows: kernel and bias are two layers); ``layers=`` takes a callable from a
leaf's key path to a group key, and :func:`layers_by_module` is the ready grouping
for Flax parameter trees that puts a module's kernel and bias in one layer.

References:
  Singh, De, Zhang, Goldstein and Taylor, `Layer-Specific Adaptive Learning Rates for
  Deep Networks <https://arxiv.org/abs/1510.04609>`_, 2015 (equations 9, 10 and 12).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from polyak_optax._src._layers import (
    LayersFn,
    check_layers,
    layer_ids,
    log_norm_factor,
    per_layer,
    sum_of_squares,
)

__all__ = [
    "layers_by_module",
    "layerwise",
    "layerwise_log_norm_factors",
    "scale_by_layerwise_log_norm",
]


def layers_by_module(path: jax.tree_util.KeyPath) -> str:
    """Group key that puts the parameters of one Flax module in one layer.

    Drops the parameter's own name (``kernel``, ``bias``, ``scale``, ...) from its key
    path, and before it the trailing ``.value`` that ``flax.nnx`` state adds, so every
    array of a module (a ``Dense`` or ``Conv`` kernel with its bias, a ``BatchNorm``
    scale with its bias) shares one factor. Works for ``flax.linen`` variables (with or
    without the ``params`` collection at the top) and ``flax.nnx.State``. Pass it as
    ``layers=layers_by_module``; the default ``layers=None`` keeps one layer per array.

    Args:
      path: a leaf's key path, as ``jax.tree_util.tree_flatten_with_path`` gives it.

    Returns:
      The key string of the module holding the leaf (``""`` for top-level leaves).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> params = {"params": {"Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}}}
      >>> [layers_by_module(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
      ["['params']['Dense_0']", "['params']['Dense_0']"]
    """
    keys = tuple(path)
    while keys and isinstance(keys[-1], jax.tree_util.GetAttrKey) and keys[-1].name == "value":
        keys = keys[:-1]
    return jax.tree_util.keystr(keys[:-1])


def _leaf_factors(
    updates: optax.Updates, layers: LayersFn | None
) -> tuple[jax.tree_util.PyTreeDef, list[jax.Array]]:
    """The treedef of ``updates`` and one scalar factor per leaf (its layer's factor).

    One reduction per leaf; leaves of one layer add their sums of squares, and the
    factor math runs once, on the vector of all layers' sums (:func:`per_layer`). The
    Python loops run while tracing only.
    """
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(updates)
    paths = [path for path, _ in with_paths]
    ids = layer_ids(paths, layers)
    sums: dict[int, jax.Array] = {}
    for layer, (_, leaf) in zip(ids, with_paths, strict=True):
        sq = sum_of_squares(leaf)
        sums[layer] = sq if layer not in sums else sums[layer] + sq
    factors = per_layer(log_norm_factor, sums)
    return treedef, [factors[layer] for layer in ids]


def _scale_leaves(
    treedef: jax.tree_util.PyTreeDef, leaves: Sequence[jax.Array], factors: Sequence[jax.Array]
) -> optax.Updates:
    """Multiplies every leaf by its factor, keeping the leaf's dtype."""
    scaled = [(u * f).astype(jnp.result_type(u)) for u, f in zip(leaves, factors, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, scaled)


def layerwise_log_norm_factors(
    updates: optax.Updates, layers: LayersFn | None = None
) -> optax.Updates:
    r"""The factor :math:`1 + \log(1 + 1/\|g_l\|_2)` of every leaf's layer, e.g. for logging.

    Args:
      updates: a pytree of gradients (or updates).
      layers: ``None`` for one layer per leaf, or a callable from a leaf's key path to a
        group key (see :func:`layers_by_module`).

    Returns:
      A pytree with the structure of ``updates`` holding one scalar per leaf, in float32
      (float64 for float64 leaves); 1 for a layer whose gradient is zero.

    Raises:
      ValueError: if ``layers`` is neither ``None`` nor a callable returning hashable keys.

    Example:
      >>> import jax.numpy as jnp
      >>> grads = {"w": jnp.array([3.0, 4.0]), "b": jnp.zeros(2)}
      >>> factors = layerwise_log_norm_factors(grads)
      >>> print(f"{float(factors['w']):.4f} {float(factors['b']):.1f}")  # 1 + log(1.2), 1
      1.1823 1.0
    """
    check_layers(layers)
    treedef, factors = _leaf_factors(updates, layers)
    return jax.tree_util.tree_unflatten(treedef, factors)


def scale_by_layerwise_log_norm(
    layers: LayersFn | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Scales each layer's update by :math:`1 + \log(1 + 1/\|u_l\|_2)` (equation 9).

    For every layer :math:`l` with incoming update :math:`u_l` (the gradient, when this
    transform comes first):

    .. math::

      u_l \leftarrow \left(1 + \log\left(1 + \frac{1}{\|u_l\|_2}\right)\right) u_l .

    Put first in a chain before ``optax.sgd`` (with or without momentum or Nesterov) this
    is the paper's layer-specific learning rate :math:`t_l = t (1 + \log(1 + 1/\|g_l\|))`:
    those optimizers are linear in the gradient, so the momentum buffer accumulates
    :math:`t_l g_l` as in Caffe. For preconditioned optimizers (AdaGrad, Adam) use
    :func:`layerwise` instead: their normalisation would mostly cancel a scaled input.

    Large gradients get a factor near 1, small ones a larger factor (about 42 at
    :math:`\|u_l\| = 10^{-18}`). A layer whose update is exactly zero (or whose float32
    sum of squares underflows to zero, entries below about 1e-19) gets the factor 1
    (its update passes unchanged), never ``0 * inf``; non-finite
    updates stay non-finite in their own layer and leave the other layers alone. The
    norm is accumulated in float32 (float64 for float64 updates) and the output keeps
    each update's dtype. The state is empty and extra args such as ``value`` are ignored.

    Args:
      layers: ``None`` makes every pytree leaf a layer (Caffe's per-blob rule: kernel
        and bias are separate layers); a callable from a leaf's key path to a hashable
        group key puts the leaves with one key in one layer, e.g.
        :func:`layers_by_module` (a Flax module's kernel and bias together).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Raises:
      ValueError: if ``layers`` is neither ``None`` nor a callable (at construction), or
        the callable returns an unhashable key (at ``init``/``update``).

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([0.5])}
      >>> loss_fn = lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(p["b"] ** 2)
      >>> opt = optax.chain(scale_by_layerwise_log_norm(),
      ...                   optax.sgd(0.1, momentum=0.9, nesterov=True))
      >>> state = opt.init(params)
      >>> updates, state = opt.update(jax.grad(loss_fn)(params), state, params)
      >>> params = optax.apply_updates(params, updates)
      >>> print(f"{float(params['b'][0]):.4f}")  # g = 1: 0.5 - 0.1 * 1.9 * (1 + log 2)
      0.1783

    References:
      Singh et al., `Layer-Specific Adaptive Learning Rates for Deep Networks
      <https://arxiv.org/abs/1510.04609>`_, 2015.
    """
    check_layers(layers)

    def init_fn(params: optax.Params) -> optax.EmptyState:
        layer_ids([p for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]], layers)
        return optax.EmptyState()

    def update_fn(
        updates: optax.Updates,
        state: optax.EmptyState,
        params: optax.Params | None = None,
        **extra_args,
    ) -> tuple[optax.Updates, optax.EmptyState]:
        del params, extra_args
        treedef, factors = _leaf_factors(updates, layers)
        return _scale_leaves(treedef, treedef.flatten_up_to(updates), factors), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def layerwise(
    inner: optax.GradientTransformation,
    layers: LayersFn | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Applies the layer-specific factor of the raw gradient to ``inner``'s output.

    With :math:`g_l` the raw gradient of layer :math:`l` at this step and :math:`u_l`
    what ``inner`` makes of the raw gradient,

    .. math::

      \Delta x_l = \left(1 + \log\left(1 + \frac{1}{\|g_l\|_2}\right)\right) u_l .

    ``inner`` sees and accumulates the raw gradient, so ``layerwise(optax.adagrad(t))``
    is the paper's equation 12, :math:`\Delta x_l = -t_l\, g_l / \sqrt{\sum_i g_l^{(i)2}}`.
    The same wrapper gives layer-specific Adam. For plain SGD it equals
    ``optax.chain(scale_by_layerwise_log_norm(), optax.sgd(t))``. With momentum it
    differs: here today's factor multiplies the whole output, the velocity carried from
    earlier steps included. The paper's momentum variants scale the learning rate where
    the gradient enters the velocity: for SGD with momentum that is the chain, and for
    adaptive Nesterov it is ``adaptive_nesterov(layerwise=True)``.

    A layer whose raw gradient is exactly zero gets the factor 1: ``inner``'s update
    passes unchanged (Adam's first moment still moves it), never ``0 * inf`` or NaN.
    Non-finite gradients stay non-finite in their own layer. The norm is accumulated in
    float32 (float64 for float64 gradients), uses :math:`|g|^2` for complex gradients,
    and the output keeps the dtypes of ``inner``'s output. The state is ``inner``'s
    state, unchanged (``optax.tree.get(state, "learning_rate")`` still finds ``inner``'s
    fields), and every extra arg (``value=``, ``grad=``, ...) is passed to ``inner``.

    Args:
      inner: the optimizer to wrap (any ``optax.GradientTransformation``; extra args are
        dropped for one that does not take them).
      layers: ``None`` makes every pytree leaf a layer (Caffe's per-blob rule); a
        callable from a leaf's key path to a hashable group key puts the leaves with one
        key in one layer, e.g. :func:`layers_by_module`.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with ``inner``'s state.

    Raises:
      ValueError: if ``inner`` is not a gradient transformation, if ``layers`` is
        neither ``None`` nor a callable (at construction) or returns an unhashable key,
        or if ``inner`` returns updates of another pytree structure.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([0.5])}
      >>> loss_fn = lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(p["b"] ** 2)
      >>> opt = layerwise(optax.adagrad(0.1, initial_accumulator_value=0.0, eps=0.0))
      >>> state = opt.init(params)
      >>> updates, state = opt.update(jax.grad(loss_fn)(params), state, params)
      >>> params = optax.apply_updates(params, updates)
      >>> print(f"{float(params['b'][0]):.4f}")  # 0.5 - 0.1 * (1 + log 2) * g / |g|
      0.3307

    References:
      Singh et al., `Layer-Specific Adaptive Learning Rates for Deep Networks
      <https://arxiv.org/abs/1510.04609>`_, 2015.
    """
    if not (callable(getattr(inner, "init", None)) and callable(getattr(inner, "update", None))):
        raise ValueError(f"inner must be an optax.GradientTransformation, got {inner!r}")
    check_layers(layers)
    inner = optax.with_extra_args_support(inner)

    def init_fn(params: optax.Params) -> optax.OptState:
        layer_ids([p for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]], layers)
        return inner.init(params)

    def update_fn(
        updates: optax.Updates,
        state: optax.OptState,
        params: optax.Params | None = None,
        **extra_args,
    ) -> tuple[optax.Updates, optax.OptState]:
        treedef, factors = _leaf_factors(updates, layers)
        inner_updates, state = inner.update(updates, state, params, **extra_args)
        inner_leaves, inner_treedef = jax.tree_util.tree_flatten(inner_updates)
        if inner_treedef != treedef:
            raise ValueError(
                "inner must return updates with the pytree structure of the gradients: "
                f"got {inner_treedef}, expected {treedef}"
            )
        return _scale_leaves(treedef, inner_leaves, factors), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
