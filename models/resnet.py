"""The CIFAR ResNet-34 the thesis trains (He et al. 2015, CIFAR stem).

A 3x3/1 stem convolution with 64 channels (no 7x7 convolution, no max pool),
basic blocks [3, 4, 6, 3] with 64, 128, 256, 512 channels and strides 1, 2, 2,
2, a 1x1 projection with batch norm where the shape changes, global average
pooling and one linear classifier. Convolutions have no bias (batch norm
follows each). 21,282,122 parameters on 32x32x3 with 10 classes (21,280,970 on
28x28x1); the thesis quotes 21.2M for the same network.

References:
  He et al., `Deep Residual Learning for Image Recognition
  <https://arxiv.org/abs/1512.03385>`_, 2015.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.layers import Conv, torch_kernel_init

__all__ = ["BasicBlock", "ResNet"]

_conv = functools.partial(Conv, use_bias=False, kernel_init=torch_kernel_init)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity or 1x1-projection shortcut.

    Attributes:
      features: output channels.
      strides: stride of the first convolution and of the projection.
    """

    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Residual block output."""
        norm = functools.partial(
            nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5
        )
        s = (self.strides, self.strides)
        y = _conv(self.features, (3, 3), s, padding=1)(x)
        y = nn.relu(norm()(y))
        y = _conv(self.features, (3, 3), padding=1)(y)
        y = norm()(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = norm()(_conv(self.features, (1, 1), s, name="shortcut")(x))
        return nn.relu(x + y)


class ResNet(nn.Module):
    """CIFAR-style ResNet of basic blocks.

    Attributes:
      num_classes: number of output logits.
      stage_sizes: blocks per stage.
      width: channels of the first stage (doubled at each later stage).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = ResNet(num_classes=10, stage_sizes=(1, 1), width=4)
      >>> x = jnp.zeros((2, 8, 8, 3))
      >>> init = lambda x: model.init_with_output(jax.random.key(0), x, train=False)
      >>> logits, variables = jax.eval_shape(init, x)  # shapes only, no compute
      >>> logits.shape
      (2, 10)
    """

    num_classes: int = 10
    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    width: int = 64

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits; batch statistics update when ``train`` (use ``mutable=['batch_stats']``)."""
        x = _conv(self.width, (3, 3), padding=1, name="stem")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)
        x = nn.relu(x)
        for stage, num_blocks in enumerate(self.stage_sizes):
            for block in range(num_blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(self.width * 2**stage, strides)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=torch_kernel_init, name="classifier")(x)
