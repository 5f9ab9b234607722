"""A small convolutional network with batch norm (the CPU stand-in for VGG/ResNet)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.layers import Conv, max_pool

__all__ = ["BNCNN"]


class BNCNN(nn.Module):
    """Strided conv 3x3 stem - BN - ReLU, then [conv 3x3 - BN - ReLU - max pool 2/2] with
    ``width`` and ``2 * width`` channels, global mean pooling and a dense layer.

    The VGG pattern at a size that trains in seconds on a CPU; its batch norm makes the
    loss scale-invariant in the convolution weights, a regime where step-size rules
    behave differently than on LeNet-5. 7,514 parameters with ``width=16`` on
    28x28x1 inputs and 10 classes.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> v = BNCNN(10).init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
      >>> sum(x.size for x in jax.tree.leaves(v["params"])), sorted(v)
      (7514, ['batch_stats', 'params'])
    """

    num_classes: int = 10
    width: int = 16

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits; batch statistics update when ``train`` (``mutable=['batch_stats']``)."""
        # A strided stem halves the resolution first: the blocks then cost a quarter.
        x = Conv(self.width, (3, 3), strides=(2, 2), padding="SAME", use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x))
        for features in (self.width, 2 * self.width):
            x = Conv(features, (3, 3), padding="SAME", use_bias=False)(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)
            x = max_pool(nn.relu(x), 2, 2)
        return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))
