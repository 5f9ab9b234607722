"""Layer grouping and per-layer scalars, shared by the layer-wise transforms and by
adaptive Nesterov's ``layerwise=True``."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import jax
import jax.numpy as jnp

LayersFn = Callable[[jax.tree_util.KeyPath], Hashable]


def check_layers(layers: LayersFn | None) -> None:
    """A ``ValueError`` unless ``layers`` is ``None`` or a callable."""
    if layers is not None and not callable(layers):
        raise ValueError(
            "layers must be None (one layer per leaf) or a callable from a leaf's key path "
            f"to a hashable group key, got {layers!r}"
        )


def layer_ids(paths: Sequence[jax.tree_util.KeyPath], layers: LayersFn | None) -> list[int]:
    """Layer index of every leaf, layers numbered in order of first appearance."""
    if layers is None:
        return list(range(len(paths)))
    index: dict[Hashable, int] = {}
    ids = []
    for path in paths:
        key = layers(path)
        try:
            ids.append(index.setdefault(key, len(index)))
        except TypeError as err:
            raise ValueError(
                f"layers must return a hashable group key, got {type(key).__name__} "
                f"for the leaf at {jax.tree_util.keystr(path)!r}"
            ) from err
    return ids


def sum_of_squares(x: jax.Array) -> jax.Array:
    """Sum of |x|^2, accumulated in float32 (float64 for float64 input)."""
    x = jnp.asarray(x)
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    x = x.astype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return jnp.sum(jnp.square(x.real) + jnp.square(x.imag))
    return jnp.sum(jnp.square(x))


def computed_once(*scalars: jax.Array) -> tuple[jax.Array, ...]:
    """The per-step ``scalars`` (bool or numeric), materialized once, not recomputed.

    XLA copies a chain of cheap scalar ops into every fusion that reads it: one copy per
    leaf of the parameter tree, which multiplies the instructions to compile (adaptive
    Nesterov's skip test and eta clip, once per leaf).
    ``lax.optimization_barrier`` does not stop it (CPU and GPU expand it before
    fusion), but a reduction is never fused into its consumers: one variadic reduction
    of each scalar with a zero (``False``) ends the chains in one fusion, and every leaf
    reads its results. Exact: ``x + 0 == x`` (NaN stays NaN), ``b | False == b``.
    """
    operands = [jnp.stack([x, jnp.zeros_like(x)]) for x in scalars]
    inits = [jnp.zeros([], x.dtype) for x in scalars]

    def combine(a: Sequence[jax.Array], b: Sequence[jax.Array]) -> tuple[jax.Array, ...]:
        return tuple(x | y if x.dtype == jnp.bool_ else x + y for x, y in zip(a, b, strict=True))

    return tuple(jax.lax.reduce(operands, inits, combine, (0,)))


def log_norm_factor(sq: jax.Array) -> jax.Array:
    """1 + log(1 + 1/||g||); 1 where ||g|| = 0 (the layer's update passes unchanged)."""
    norm = jnp.sqrt(sq)
    is_zero = norm == 0
    safe_norm = jnp.where(is_zero, jnp.ones_like(norm), norm)
    return jnp.where(is_zero, jnp.ones_like(norm), 1 + jnp.log1p(1 / safe_norm))


def per_layer(
    fn: Callable[[jax.Array], jax.Array], scalars: dict[Hashable, jax.Array]
) -> dict[Hashable, jax.Array]:
    """``fn`` (elementwise) of every layer's scalar, as one vector op per dtype.

    Scalar chains per layer make one small kernel per layer (a divide or log is never
    copied into its consumers); a vector of all layers takes one, and its per-layer
    results are materialized once (:func:`computed_once`) for the leaves to read.
    """
    by_dtype: dict[jnp.dtype, list[Hashable]] = {}
    for key, value in scalars.items():
        by_dtype.setdefault(jnp.result_type(value), []).append(key)
    keys: list[Hashable] = []
    values: list[jax.Array] = []
    for group in by_dtype.values():
        vector = fn(jnp.stack([scalars[key] for key in group]))
        keys.extend(group)
        values.extend(vector[i] for i in range(len(group)))
    return dict(zip(keys, computed_once(*values), strict=True)) if values else {}
