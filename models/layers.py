"""Building blocks shared by the models: Caffe-style pooling and initializers.

Pooling follows Caffe's (and PyTorch's ``ceil_mode=True``) output size,
``ceil((n - window) / stride) + 1``, with the missing border padded at the end
only. It equals ``floor`` rounding whenever the window tiles the input exactly
(every 32x32 case here) and keeps odd sizes such as Fashion-MNIST's 7x7 maps
from losing their last row, so every model accepts any HxWxC input.

Pooling is written with strided slices rather than ``lax.reduce_window``: XLA:CPU runs
``reduce_window`` and its gradient (``select_and_scatter``, or a padded ``reduce_window``
for averages) as slow scalar loops, while an elementwise max (or sum) of the window's
strided slices fuses into the neighbouring layers. Values and gradients are identical
to ``reduce_window``'s, ties included. Max pooling runs along the rows, then along the
columns (:func:`_first_max_along`, one ``custom_vjp`` each): each pass picks, while it
computes the max, the first of the largest elements, so the two passes together pick the
first largest element of the window in row-major order, as ``select_and_scatter`` does,
and the gradient goes there. The choice is made once, from the same values as the max,
so it never depends on XLA recomputing an activation with a different rounding (the
derivative of ``jnp.max``, which compares the inputs with the result, does). The backward
pass builds the input gradient phase by phase from output-sized arrays.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models.conv import conv_general_dilated

__all__ = ["Conv", "avg_pool", "ceil_padding", "max_pool", "torch_kernel_init"]

#: ``flax.linen.Conv`` whose gradients stay fast inside jitted loops on the CPU
#: (see :mod:`models.conv`); every model of the package builds its convolutions with it.
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)

# PyTorch's default for Conv2d/Linear weights, kaiming_uniform(a=sqrt(5)), is
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)): variance_scaling with scale 1/3.
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def ceil_padding(size: int, window: int, stride: int) -> tuple[int, int]:
    """Padding ``(before, after)`` that gives Caffe's ceil-mode pooling size.

    Args:
      size: input length along one spatial axis.
      window: pooling window length.
      stride: pooling stride.

    Returns:
      ``(0, after)`` where ``after`` pads just enough for the last window.

    Raises:
      ValueError: if ``size`` is smaller than ``window``.

    Example:
      >>> ceil_padding(7, 3, 2), ceil_padding(32, 2, 2), ceil_padding(7, 2, 2)
      ((0, 0), (0, 0), (0, 1))
    """
    if size < 1 or window < 1 or stride < 1:
        raise ValueError(f"size, window and stride must be >= 1, got {size}, {window}, {stride}")
    out = max(math.ceil(max(size - window, 0) / stride) + 1, 1)
    return (0, max((out - 1) * stride + window - size, 0))


def _padding(x: jax.Array, window: int, stride: int) -> list[tuple[int, int]]:
    return [ceil_padding(n, window, stride) for n in x.shape[-3:-1]]


def _strided_windows(x: jax.Array, window: int, stride: int) -> list[jax.Array]:
    """The ``window**2`` strided slices of the padded ``x``, one per window offset."""
    out_h = (x.shape[1] - window) // stride + 1
    out_w = (x.shape[2] - window) // stride + 1
    return [
        x[:, i : i + stride * (out_h - 1) + 1 : stride, j : j + stride * (out_w - 1) + 1 : stride]
        for i in range(window)
        for j in range(window)
    ]


def _axis_windows(x: jax.Array, window: int, stride: int, axis: int) -> list[jax.Array]:
    """The ``window`` strided slices of the padded ``x`` along ``axis``, one per offset."""
    n_out = (x.shape[axis] - window) // stride + 1
    return [
        jax.lax.slice_in_dim(x, k, k + stride * (n_out - 1) + 1, stride, axis)
        for k in range(window)
    ]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _first_max_along(x: jax.Array, window: int, stride: int, axis: int) -> jax.Array:
    """Max over the windows of the (padded) ``x`` along one axis."""
    return _first_max_along_fwd(x, window, stride, axis)[0]


def _first_max_along_fwd(
    x: jax.Array, window: int, stride: int, axis: int
) -> tuple[jax.Array, tuple[jax.Array, int]]:
    slices = _axis_windows(x, window, stride, axis)
    best, which = slices[0], jnp.zeros(slices[0].shape, jnp.int8)
    for k, s in enumerate(slices[1:], 1):
        later_is_larger = s > best  # strict: a tie keeps the earlier element
        best = jnp.where(later_is_larger, s, best)
        which = jnp.where(later_is_larger, jnp.int8(k), which)
    return best, (which, x.shape[axis])


def _first_max_along_bwd(
    window: int, stride: int, axis: int, residuals: tuple[jax.Array, int], g: jax.Array
) -> tuple[jax.Array]:
    """Each window's gradient to its chosen element, built phase by phase.

    Input index ``o * stride + p`` (phase ``p``) receives from window offsets ``k = p,
    p + stride, ...`` the gradient of output ``o - (k - p) // stride``: shifts of
    output-sized arrays, interleaved by a stack and a reshape, with no padded
    input-sized array per offset (XLA:CPU wrote one per offset for the transposed
    strided slices: 9 for a 3x3 window).
    """
    which, length = residuals
    n_out = g.shape[axis]
    per_phase = -(-length // stride)
    phases = []
    for p in range(stride):
        total = None
        for k in range(p, window, stride):
            term = jnp.where(which == k, g, jnp.zeros((), g.dtype))
            shift = (k - p) // stride
            pads = [(0, 0)] * g.ndim
            pads[axis] = (shift, per_phase - n_out - shift)
            term = jax.lax.pad(term, jnp.zeros((), g.dtype), [(lo, hi, 0) for lo, hi in pads])
            total = term if total is None else total + term
        if total is None:
            shape = list(g.shape)
            shape[axis] = per_phase
            total = jnp.zeros(shape, g.dtype)
        phases.append(total)
    stacked = jnp.stack(phases, axis=axis + 1)  # [..., per_phase, stride, ...]
    shape = list(g.shape)
    shape[axis] = per_phase * stride
    dx = stacked.reshape(shape)
    return (jax.lax.slice_in_dim(dx, 0, length, axis=axis),)


_first_max_along.defvjp(_first_max_along_fwd, _first_max_along_bwd)


def max_pool(x: jax.Array, window: int, stride: int) -> jax.Array:
    """Ceil-mode max pooling over the two spatial axes of an NHWC array.

    Its values and gradients equal ``flax.linen.max_pool``'s (``lax.reduce_window``) with
    the same ceil-mode padding, ties included (see the module's docstring).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> max_pool(jnp.ones((1, 7, 7, 2)), 2, 2).shape
      (1, 4, 4, 2)
      >>> x = jnp.array([1.0, 3.0, 3.0, 2.0]).reshape(1, 2, 2, 1)  # a tie: the first 3 wins
      >>> jax.grad(lambda x: max_pool(x, 2, 2).sum())(x).ravel().tolist()
      [0.0, 1.0, 0.0, 0.0]
    """
    (_, bottom), (_, right) = _padding(x, window, stride)
    x = jnp.pad(x, ((0, 0), (0, bottom), (0, right), (0, 0)), constant_values=-jnp.inf)
    x = _first_max_along(x, window, stride, 2)  # along each row first, then the rows:
    return _first_max_along(x, window, stride, 1)  # row-major first max, as reduce_window


def avg_pool(x: jax.Array, window: int, stride: int) -> jax.Array:
    """Ceil-mode average pooling; border windows average their valid pixels only (Caffe).

    Example:
      >>> import jax.numpy as jnp
      >>> avg_pool(jnp.ones((1, 8, 8, 1)), 3, 2)[0, :, :, 0].tolist()[0]
      [1.0, 1.0, 1.0, 1.0]
    """
    (_, bottom), (_, right) = _padding(x, window, stride)
    slices = _strided_windows(jnp.pad(x, ((0, 0), (0, bottom), (0, right), (0, 0))), window, stride)
    total = slices[0]
    for s in slices[1:]:
        total = total + s
    counts = [
        np.minimum(np.arange(n_out) * stride + window, n) - np.arange(n_out) * stride
        for n, n_out in zip(x.shape[1:3], total.shape[1:3], strict=True)
    ]
    count = np.outer(counts[0], counts[1]).astype(np.float32)[None, :, :, None]
    return total / jnp.asarray(count, total.dtype)
