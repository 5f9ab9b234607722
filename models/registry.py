"""Models by name: the registry :data:`MODELS`, ``create`` and ``param_count``."""

from __future__ import annotations

import dataclasses
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

__all__ = ["MODELS", "MODEL_NAMES", "ModelSpec", "create", "param_count", "takes_tokens"]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One entry of the model registry :data:`MODELS`.

    Attributes:
      build: ``build(num_classes=...) -> flax.linen.Module``.
      about: one line for ``--help``.
      listed: one of the documents' models (:data:`MODEL_NAMES`); the others serve a
        benchmark or the tests.
      tokens: a language model: it takes token ids ``[B, T]`` and gives logits
        ``[B, T, num_classes]`` (the others take images).
    """

    build: Callable[..., nn.Module]
    about: str
    listed: bool = True
    tokens: bool = False


#: The models of ``--model``, by name: one entry each.
MODELS: dict[str, ModelSpec] = {
    "lenet5": ModelSpec(LeNet5, "LeNet-5 (Caffe's MNIST example)"),
    "cifar_quick": ModelSpec(CifarQuick, "Caffe's cifar10-quick"),
    "alexnet": ModelSpec(AlexNet, "the thesis's reduced AlexNet"),
    "vgg16": ModelSpec(
        functools.partial(VGG, layers=VGG16_LAYERS), "VGG16, one 512-unit FC layer, batch norm"
    ),
    "resnet34": ModelSpec(
        functools.partial(ResNet, stage_sizes=(3, 4, 6, 3)), "ResNet-34, CIFAR variant"
    ),
    "tiny": ModelSpec(Tiny, "a small batch-norm CNN for the tests", listed=False),
    "linear": ModelSpec(Linear, "softmax regression (tuning-free benchmark)", listed=False),
    "mlp": ModelSpec(MLP, "a small MLP (tuning-free benchmark)", listed=False),
    "bn_cnn": ModelSpec(BNCNN, "a small batch-norm CNN (tuning-free benchmark)", listed=False),
    "gpt": ModelSpec(
        GPT, "a byte-level decoder-only transformer (LM benchmark)", listed=False, tokens=True
    ),
    "gpt_small": ModelSpec(
        functools.partial(GPT, num_layers=2, width=64, num_heads=4),
        "a 2-layer, 64-wide GPT (tests)",
        listed=False,
        tokens=True,
    ),
}

#: The documents' model names (the others of :data:`MODELS` serve a benchmark or the tests).
MODEL_NAMES: tuple[str, ...] = tuple(name for name, spec in MODELS.items() if spec.listed)


def _lookup(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"name must be one of {', '.join(MODELS)}, got {name!r}")
    return MODELS[name]


def create(name: str, num_classes: int) -> nn.Module:
    """Builds a Flax Linen model by name.

    Every model is called as ``model.apply(variables, x, train=...)`` with
    ``x`` float32 NHWC of any spatial size and channel count (a language model, whose
    entry says ``tokens``: token ids ``[B, T]``, logits ``[B, T, num_classes]``).
    Models with batch norm keep running statistics in the
    ``batch_stats`` collection: apply them with ``mutable=['batch_stats']``
    when ``train=True``; with ``train=False`` they use the stored statistics.

    Args:
      name: a key of :data:`MODELS` (the documents' :data:`MODEL_NAMES`, the
        tuning-free benchmark's ``linear``, ``mlp``, ``bn_cnn``, or ``tiny`` for tests).
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
    spec = _lookup(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    return spec.build(num_classes=num_classes)


def takes_tokens(name: str) -> bool:
    """Whether the named model takes token sequences ``[B, T]`` (a language model).

    Example:
      >>> takes_tokens("gpt"), takes_tokens("lenet5")
      (True, False)
    """
    return _lookup(name).tokens


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
