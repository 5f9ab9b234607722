"""A very small CNN with batch norm, for fast tests of the training machinery."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.layers import Conv, max_pool

__all__ = ["Tiny"]


class Tiny(nn.Module):
    """conv(8, 3x3) - BN - ReLU - max pool 2/2 - global mean - fc (about 300 parameters).

    Not one of the documents' models: it exists so that tests of the training
    loop compile in seconds while still exercising the ``batch_stats`` path.

    Attributes:
      num_classes: number of output logits.
      features: channels of the convolution.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = Tiny(num_classes=3)
      >>> x = jnp.zeros((2, 6, 6, 1))
      >>> variables = model.init(jax.random.key(0), x, train=False)
      >>> logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
      >>> logits.shape, sorted(variables), sorted(updates)
      ((2, 3), ['batch_stats', 'params'], ['batch_stats'])
    """

    num_classes: int = 10
    features: int = 8

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits; batch statistics update when ``train`` (use ``mutable=['batch_stats']``)."""
        x = Conv(self.features, (3, 3), padding="SAME", use_bias=False)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)
        x = max_pool(nn.relu(x), 2, 2)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes)(x)
