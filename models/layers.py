"""Building blocks shared by the models: Caffe-style pooling and initializers.

Pooling follows Caffe's (and PyTorch's ``ceil_mode=True``) output size,
``ceil((n - window) / stride) + 1``, with the missing border padded at the end
only. It equals ``floor`` rounding whenever the window tiles the input exactly
(every 32x32 case here) and keeps odd sizes such as Fashion-MNIST's 7x7 maps
from losing their last row, so every model accepts any HxWxC input.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax

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


def max_pool(x: jax.Array, window: int, stride: int) -> jax.Array:
    """Ceil-mode max pooling over the two spatial axes of an NHWC array.

    Example:
      >>> import jax.numpy as jnp
      >>> max_pool(jnp.ones((1, 7, 7, 2)), 2, 2).shape
      (1, 4, 4, 2)
    """
    return nn.max_pool(x, (window, window), (stride, stride), _padding(x, window, stride))


def avg_pool(x: jax.Array, window: int, stride: int) -> jax.Array:
    """Ceil-mode average pooling; border windows average their valid pixels only (Caffe).

    Example:
      >>> import jax.numpy as jnp
      >>> avg_pool(jnp.ones((1, 8, 8, 1)), 3, 2)[0, :, :, 0].tolist()[0]
      [1.0, 1.0, 1.0, 1.0]
    """
    return nn.avg_pool(
        x,
        (window, window),
        (stride, stride),
        _padding(x, window, stride),
        count_include_pad=False,
    )
