"""Tests of train.augment: normalization, flips and translations on the device."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train import augment as aug

MAX_SHIFT = 4


def _shift_reference(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``out[i, j] = image[i - dy, j - dx]`` with zeros outside (NumPy, float64-free)."""
    h, w, _ = image.shape
    out = np.zeros_like(image)
    src = image[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    out[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return out


def _explain(out: np.ndarray, image: np.ndarray, allow_flip: bool) -> list[tuple[bool, int, int]]:
    """All (flipped, dy, dx) that turn ``image`` into ``out``."""
    found = []
    for flipped in (False, True) if allow_flip else (False,):
        src = image[:, ::-1] if flipped else image
        for dy in range(-MAX_SHIFT, MAX_SHIFT + 1):
            for dx in range(-MAX_SHIFT, MAX_SHIFT + 1):
                if np.array_equal(out, _shift_reference(src, dy, dx)):
                    found.append((flipped, dy, dx))
    return found


@pytest.fixture(scope="module")
def images():
    # Values 1..255 (never 0) so that the zero border of a shift is detectable.
    rng = np.random.default_rng(0)
    return rng.integers(1, 256, (256, 10, 12, 3), dtype=np.uint8)


def test_normalize_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (4, 3, 3, 3), dtype=np.uint8)
    mean, std = np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.3, 0.4])
    got = jax.jit(aug.normalize)(x, mean, std)
    assert got.dtype == jnp.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, (x / 255.0 - mean) / std, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_augment_keeps_shape_dtype_and_is_deterministic_per_key(images, dtype):
    x = jnp.asarray(images[:16].astype(dtype))
    fn = jax.jit(aug.augment)
    a, b = fn(jax.random.key(0), x), fn(jax.random.key(0), x)
    c = fn(jax.random.key(1), x)
    assert a.shape == x.shape and a.dtype == x.dtype
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(a, aug.augment(jax.random.key(0), x))  # jit == eager


def test_every_output_is_a_flip_and_shift_of_its_own_input(images):
    x = images[:64]
    out = np.asarray(jax.jit(aug.augment)(jax.random.key(2), jnp.asarray(x)))
    shifts, flips = [], []
    for i in range(len(x)):
        found = _explain(out[i], x[i], allow_flip=True)
        assert found, f"output {i} is not a flipped/shifted copy of input {i} (order kept)"
        flipped, dy, dx = found[0]
        shifts += [dy, dx]
        flips.append(flipped)
    assert min(shifts) == -MAX_SHIFT and max(shifts) == MAX_SHIFT  # full range is used
    assert any(flips) and not all(flips)


def test_flip_probability_is_one_half(images):
    x = jnp.asarray(images)
    flip = jax.jit(functools.partial(aug.augment, max_shift=0))
    mirrored = np.asarray(x[:, :, ::-1])
    total = 0
    keys = jax.random.split(jax.random.key(3), 16)
    for key in keys:
        out = np.asarray(flip(key, x))
        is_flipped = np.all(out == mirrored, axis=(1, 2, 3))
        is_same = np.all(out == images, axis=(1, 2, 3))
        assert np.all(is_flipped ^ is_same)  # each image exactly one of the two
        total += is_flipped.sum()
    n = len(keys) * len(images)
    # 4096 Bernoulli(1/2) draws: the fraction lies within 4 sigma = 0.031 of 1/2.
    assert abs(total / n - 0.5) < 4 * np.sqrt(0.25 / n)


def test_translation_is_uniform_and_zero_filled(images):
    x = images[:128]
    out = np.asarray(jax.jit(functools.partial(aug.augment, flip=False))(jax.random.key(4), x))
    dys = []
    for i in range(len(x)):
        found = _explain(out[i], x[i], allow_flip=False)
        assert len(found) == 1
        _, dy, dx = found[0]
        dys.append(dy)
        zeros = (out[i] == 0).all(axis=-1)
        assert zeros.sum() == 10 * 12 - (10 - abs(dy)) * (12 - abs(dx))
    counts = np.bincount(np.asarray(dys) + MAX_SHIFT, minlength=2 * MAX_SHIFT + 1)
    assert counts.min() > 0  # all 9 offsets appear in 128 draws
    assert abs(np.mean(dys)) < 1.0


def test_no_op_settings_return_the_input(images):
    x = jnp.asarray(images[:4])
    np.testing.assert_array_equal(aug.augment(jax.random.key(0), x, max_shift=0, flip=False), x)


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="images"):
        aug.augment(jax.random.key(0), jnp.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="max_shift"):
        aug.augment(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), max_shift=-1)
