"""Multinomial logistic regression and a small MLP on flattened inputs."""

from __future__ import annotations

import flax.linen as nn
import jax

__all__ = ["MLP", "Linear"]


class Linear(nn.Module):
    """One dense layer on the flattened input: softmax regression with the cross entropy.

    Convex in its parameters; on Fashion-MNIST pixels it cannot fit its training data
    (the minimal loss is well above 0), the classic weak spot of Polyak steps that
    assume f* = 0. 7,850 parameters on 28x28x1 with 10 classes.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> v = Linear(10).init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
      >>> sum(x.size for x in jax.tree.leaves(v))
      7850
    """

    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits; ``train`` is accepted for the common call convention."""
        del train
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros)(
            x.reshape((x.shape[0], -1))
        )


class MLP(nn.Module):
    """Flatten - dense(``hidden``) - ReLU - dense(``hidden``) - ReLU - dense.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> MLP(5, hidden=8).init(jax.random.key(0), jnp.zeros((1, 3, 4, 1)))["params"].keys()
      dict_keys(['Dense_0', 'Dense_1', 'Dense_2'])
    """

    num_classes: int = 10
    hidden: int = 256

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits; ``train`` is accepted for the common call convention."""
        del train
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.num_classes)(x)
