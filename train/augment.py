"""On-device normalization and the thesis's data augmentation, batch-wise and jittable.

The thesis (section 2.4) augments CIFAR-10 with "a random horizontal flip (with
probability equal to 0.5) and random translation of 4 pixels (with padding
equal to 0)". We implement the usual reading, torchvision's
``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``: every image is
flipped with probability 1/2 and shifted by independent uniform integers
``dy, dx`` in ``[-4, 4]``, the uncovered border filled with zeros. Both run on
uint8 (or float) batches before :func:`normalize`, so the zero fill is a black
border exactly as torchvision pads PIL images before ``ToTensor``/``Normalize``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["augment", "normalize", "random_flip", "random_translate"]


def normalize(
    images: jax.Array, mean: jax.typing.ArrayLike, std: jax.typing.ArrayLike
) -> jax.Array:
    """Maps uint8 images to float32 ``(x / 255 - mean) / std``, per channel.

    Args:
      images: uint8 ``[..., C]`` images with values in 0..255.
      mean: ``[C]`` channel means of the training images on the [0, 1] scale.
      std: ``[C]`` channel standard deviations on the same scale.

    Returns:
      float32 array of the same shape.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[[[0, 255]]]], jnp.uint8)
      >>> normalize(x, mean=jnp.array([0.5, 0.5]), std=jnp.array([0.5, 0.25])).tolist()
      [[[[-1.0, 2.0]]]]
    """
    x = jnp.asarray(images).astype(jnp.float32) / 255.0
    return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def _check_batch(images: jax.Array) -> None:
    if jnp.ndim(images) != 4:
        raise ValueError(f"images must be a [N, H, W, C] batch, got shape {jnp.shape(images)}")


def random_flip(key: jax.Array, images: jax.Array, probability: float = 0.5) -> jax.Array:
    """Mirrors each image left-right with the given probability, independently.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.arange(6).reshape(2, 1, 3, 1)
      >>> random_flip(jax.random.key(0), x, probability=1.0)[:, 0, :, 0].tolist()
      [[2, 1, 0], [5, 4, 3]]
    """
    _check_batch(images)
    flip = jax.random.bernoulli(key, probability, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


def random_translate(key: jax.Array, images: jax.Array, max_shift: int = 4) -> jax.Array:
    """Shifts each image by uniform integers in ``[-max_shift, max_shift]`` along H and W.

    Pixels shifted in from outside the image are zero (a zero-padded random crop).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.ones((3, 5, 5, 1), jnp.uint8)
      >>> y = random_translate(jax.random.key(0), x, max_shift=2)
      >>> y.shape, y.dtype, bool((y.sum(axis=(1, 2, 3)) >= 9).all())
      ((3, 5, 5, 1), dtype('uint8'), True)
    """
    _check_batch(images)
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"max_shift must be an int >= 0, got {max_shift!r}")
    if max_shift == 0:
        return images
    n, h, w, c = images.shape
    s = max_shift
    offsets = jax.random.randint(key, (n, 2), 0, 2 * s + 1)
    padded = jnp.pad(images, ((0, 0), (s, s), (s, s), (0, 0)))
    crop = lambda img, o: lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))
    return jax.vmap(crop)(padded, offsets)


def augment(
    key: jax.Array, images: jax.Array, *, max_shift: int = 4, flip: bool = True
) -> jax.Array:
    """The thesis's augmentation: random horizontal flip (p = 0.5) and translation (<= 4 px).

    Pure and jittable; the same key gives the same batch. Labels are untouched
    (the transform acts per image and keeps the batch order).

    Args:
      key: a PRNG key, e.g. ``jax.random.fold_in(epoch_key, step)``.
      images: ``[N, H, W, C]`` batch, any dtype (uint8 before :func:`normalize`).
      max_shift: largest translation in pixels along each axis; 0 disables it.
      flip: whether to flip.

    Returns:
      The augmented batch, same shape and dtype.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.zeros((8, 32, 32, 3), jnp.uint8)
      >>> y = jax.jit(augment)(jax.random.key(0), x)
      >>> y.shape, y.dtype
      ((8, 32, 32, 3), dtype('uint8'))
    """
    flip_key, shift_key = jax.random.split(key)
    if flip:
        images = random_flip(flip_key, images)
    return random_translate(shift_key, images, max_shift)
