"""Models by name: ``create``, ``param_count`` and ``has_batch_norm``."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.alexnet import AlexNet
from models.bn_cnn import BNCNN
from models.caffe import CifarQuick, LeNet5
from models.gpt import GPT
from models.linear import MLP, Linear
from models.resnet import ResNet
from models.tiny import Tiny
from models.vgg import VGG, VGG16_LAYERS

__all__ = ["MODEL_NAMES", "create", "has_batch_norm", "param_count", "takes_tokens"]

# name -> (constructor taking num_classes, has batch norm)
_REGISTRY: dict[str, tuple[Callable[..., nn.Module], bool]] = {
    "lenet5": (LeNet5, False),
    "cifar_quick": (CifarQuick, False),
    "alexnet": (AlexNet, False),
    "vgg16": (functools.partial(VGG, layers=VGG16_LAYERS), True),
    "resnet34": (functools.partial(ResNet, stage_sizes=(3, 4, 6, 3)), True),
    "tiny": (Tiny, True),
    # benchmarks.tuning_free: softmax regression, a small MLP, a small batch-norm CNN
    "linear": (Linear, False),
    "mlp": (MLP, False),
    "bn_cnn": (BNCNN, True),
    # byte-level language models (token inputs [B, T]): benchmarks.tuning_free_lm
    "gpt": (GPT, False),
    "gpt_small": (functools.partial(GPT, num_layers=2, width=64, num_heads=4), False),
}

#: The models that take token sequences ``[B, T]`` (text) instead of images.
_TOKEN_MODELS = frozenset({"gpt", "gpt_small"})

#: The public model names (``tiny`` exists for tests only and is not listed).
MODEL_NAMES: tuple[str, ...] = ("lenet5", "cifar_quick", "alexnet", "vgg16", "resnet34")
#: Every name :func:`create` accepts: the documents' models, the tuning-free benchmark's
#: small ones (``linear``, ``mlp``, ``bn_cnn``) and ``tiny`` for tests.
ALL_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def _lookup(name: str) -> tuple[Callable[..., nn.Module], bool]:
    if name not in _REGISTRY:
        raise ValueError(f"name must be one of {', '.join(MODEL_NAMES)} (or 'tiny'), got {name!r}")
    return _REGISTRY[name]


def create(name: str, num_classes: int) -> nn.Module:
    """Builds a Flax Linen model by name.

    Every model is called as ``model.apply(variables, x, train=...)`` with
    ``x`` float32 NHWC of any spatial size and channel count (the language models
    ``gpt`` and ``gpt_small``: token ids ``[B, T]``, logits ``[B, T, num_classes]``).
    Models with batch norm (see :func:`has_batch_norm`) keep running statistics in the
    ``batch_stats`` collection: apply them with ``mutable=['batch_stats']``
    when ``train=True``; with ``train=False`` they use the stored statistics.

    Args:
      name: one of :data:`MODEL_NAMES`, or ``"tiny"`` (a small CNN for tests).
      num_classes: number of output logits, >= 1.

    Returns:
      The unbound ``flax.linen.Module``.

    Raises:
      ValueError: for an unknown ``name`` or a bad ``num_classes``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model = create("lenet5", num_classes=10)
      >>> x = jnp.zeros((4, 28, 28, 1))
      >>> variables = model.init(jax.random.key(0), x, train=False)
      >>> model.apply(variables, x, train=True).shape
      (4, 10)
    """
    constructor, _ = _lookup(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    return constructor(num_classes=num_classes)


def takes_tokens(name: str) -> bool:
    """Whether the named model takes token sequences ``[B, T]`` (a language model).

    Example:
      >>> takes_tokens("gpt"), takes_tokens("lenet5")
      (True, False)
    """
    _lookup(name)
    return name in _TOKEN_MODELS


def has_batch_norm(name: str) -> bool:
    """Whether the named model has a ``batch_stats`` collection.

    Example:
      >>> has_batch_norm("vgg16"), has_batch_norm("alexnet")
      (True, False)
    """
    return _lookup(name)[1]


def param_count(name: str, input_shape: Sequence[int] = (32, 32, 3), num_classes: int = 10) -> int:
    """Number of trainable parameters (the ``params`` collection), by shape inference only.

    Batch norm scales and offsets count (as in PyTorch's ``parameters()``);
    running statistics do not. Nothing is initialized: ``jax.eval_shape``
    traces ``init`` abstractly, so even ResNet-34 takes well under a second.

    Args:
      name: a model name accepted by :func:`create`.
      input_shape: ``(height, width, channels)`` of one image, or ``(length,)`` of one
        token sequence.
      num_classes: number of output logits.

    Returns:
      The parameter count as a Python int.

    Raises:
      ValueError: for a bad ``name``, ``input_shape`` or ``num_classes``.

    Example:
      >>> param_count("lenet5", (28, 28, 1)), param_count("cifar_quick")
      (431080, 145578)
    """
    model = create(name, num_classes)
    shape = tuple(input_shape)
    if len(shape) not in (1, 3) or not all(isinstance(n, int) and n >= 1 for n in shape):
        raise ValueError(
            "input_shape must be (height, width, channels) or a sequence's (length,) ints "
            f">= 1, got {input_shape!r}"
        )
    x = jax.ShapeDtypeStruct((1, *shape), jnp.int32 if len(shape) == 1 else jnp.float32)
    variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"]))
