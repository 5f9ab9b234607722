"""Caffe's reference networks used by the layer-specific learning-rate paper.

Both follow Caffe's prototxt files layer by layer, including their weight
fillers and Caffe's ceil-mode pooling (see :mod:`models.layers`); neither has
batch norm, so their variables hold ``params`` only.

References:
  Singh et al., `Layer-Specific Adaptive Learning Rates for Deep Networks
  <https://arxiv.org/abs/1510.04609>`_, 2015 (section IV: LeNet on MNIST,
  "the same architecture as specified in Caffe" on CIFAR-10).
  Jia et al., `Caffe <https://github.com/BVLC/caffe>`_: ``examples/mnist/lenet.prototxt``
  and ``examples/cifar10/cifar10_quick.prototxt``, 2014.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.conv import (
    conv_general_dilated,
    fused_single_channel_conv_max_pool_applies,
    single_channel_conv_max_pool,
)
from models.layers import Conv, avg_pool, max_pool

__all__ = ["CifarQuick", "LeNet5"]

# Caffe's "xavier" filler: U(-sqrt(3/fan_in), sqrt(3/fan_in)).
_xavier = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")


def _gaussian(std: float) -> nn.initializers.Initializer:
    return nn.initializers.normal(stddev=std)


class LeNet5(nn.Module):
    """Caffe's MNIST LeNet: conv(20, 5x5) - pool - conv(50, 5x5) - pool - fc 500 - ReLU - fc.

    As in ``lenet.prototxt`` the convolutions are unpadded and have no
    nonlinearity, pools are 2x2 max with stride 2, the only ReLU follows the
    500-unit layer, and weights use the Xavier filler with zero biases.
    431,080 parameters on 28x28x1 with 10 classes; 657,080 on 32x32x3.

    Attributes:
      num_classes: number of output logits.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = LeNet5(num_classes=10)
      >>> x = jnp.zeros((2, 28, 28, 1))
      >>> init = lambda x: model.init_with_output(jax.random.key(0), x, train=False)
      >>> logits, variables = jax.eval_shape(init, x)  # shapes only, no compute
      >>> logits.shape
      (2, 10)
    """

    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits for NHWC float images; ``train`` is accepted for the common call convention."""
        del train  # no dropout or batch norm
        # Each convolution, then a 2x2/2 max pool, its bias added after the pool (the same
        # function and parameters, on a map 4x smaller: see _ConvMaxPool).
        x = _ConvMaxPool(20, (5, 5), 0, 2, 2, _xavier, name="conv1")(x)
        x = _ConvMaxPool(50, (5, 5), 0, 2, 2, _xavier, name="conv2")(x)
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(500, kernel_init=_xavier, name="ip1")(x))
        return nn.Dense(self.num_classes, kernel_init=_xavier, name="ip2")(x)


class _ConvMaxPool(nn.Module):
    """A stride-1 convolution, then ceil-mode max pooling, with the bias added after the pool.

    The same function, parameters (``kernel``, ``bias``) and initial values as ``Conv``
    followed by :func:`~models.layers.max_pool`: adding a per-channel constant commutes with
    a max, in floating point too (rounding is monotonic). Added after the pool, the bias
    and its gradient run on the pooled map, 4x smaller than the convolution's output
    (cifar_quick's conv1: 128x16x16x32 instead of 128x32x32x32 at batch 128). A window
    whose maximum is tied only
    after adding the bias may send its gradient to another element of the tie. On the CPU, a
    one-channel input (LeNet-5's conv1) runs the convolution and the pool as one op,
    :func:`models.conv.single_channel_conv_max_pool`.
    """

    features: int
    kernel_size: tuple[int, int]
    padding: int
    window: int
    stride: int
    kernel_init: nn.initializers.Initializer
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape, jnp.float32)
        pad = ((self.padding, self.padding), (self.padding, self.padding))
        if fused_single_channel_conv_max_pool_applies(x, kernel, self.window, self.stride, pad):
            y = single_channel_conv_max_pool(x, kernel, pad, self.window)
        else:
            dn = ("NHWC", "HWIO", "NHWC")
            y = conv_general_dilated(x, kernel, (1, 1), pad, dimension_numbers=dn)
            y = max_pool(y, self.window, self.stride)
        if not self.use_bias:
            return y
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        return y + bias


class CifarQuick(nn.Module):
    """Caffe's ``cifar10_quick`` network (145,578 parameters on 32x32x3, 10 classes).

    conv(32, 5x5, pad 2) - max pool 3/2 - ReLU - conv(32, 5x5, pad 2) - ReLU -
    avg pool 3/2 - conv(64, 5x5, pad 2) - ReLU - avg pool 3/2 - fc 64 - fc.
    The prototxt has no nonlinearity between the two fully connected layers and
    we keep it that way; the paper's prose ("3x3 max pooling" everywhere) is
    looser than the prototxt it cites, which uses average pooling for pools 2
    and 3. Gaussian fillers as in the prototxt (std 1e-4 for conv1, 0.01 for
    conv2/conv3, 0.1 for the fully connected layers), zero biases.

    Attributes:
      num_classes: number of output logits.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = CifarQuick(num_classes=10)
      >>> x = jnp.zeros((2, 32, 32, 3))
      >>> init = lambda x: model.init_with_output(jax.random.key(0), x, train=False)
      >>> logits, variables = jax.eval_shape(init, x)  # shapes only, no compute
      >>> logits.shape
      (2, 10)
    """

    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits for NHWC float images; ``train`` is accepted for the common call convention."""
        del train
        conv = lambda c, std, name: Conv(
            c, (5, 5), padding=2, kernel_init=_gaussian(std), name=name
        )
        # conv1 then max pool 3/2, its bias added after the pool (the same function)
        x = _ConvMaxPool(32, (5, 5), 2, 3, 2, _gaussian(1e-4), name="conv1")(x)
        x = nn.relu(x)
        x = nn.relu(conv(32, 0.01, "conv2")(x))
        x = avg_pool(x, 3, 2)
        x = nn.relu(conv(64, 0.01, "conv3")(x))
        x = avg_pool(x, 3, 2)
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(64, kernel_init=_gaussian(0.1), name="ip1")(x)
        return nn.Dense(self.num_classes, kernel_init=_gaussian(0.1), name="ip2")(x)
