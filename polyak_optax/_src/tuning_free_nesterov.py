"""Tuning-free adaptive Nesterov (prototype with ablation knobs)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = (
    "TuningFreeNesterovState",
    "scale_by_tuning_free_nesterov",
    "tuning_free_nesterov",
)


class TuningFreeNesterovState(NamedTuple):
    count: jax.Array  # shape=(), int32
    velocity: optax.Updates
    learning_rate: jax.Array  # shape=(), eta of the last update
    gap_avg: jax.Array  # shape=()
    sq_avg: jax.Array  # shape=()
    f_min: jax.Array  # shape=()


def scale_by_tuning_free_nesterov(
    momentum: float = 0.9,
    max_learning_rate: optax.ScalarOrSchedule = 1.0,
    f_min: float = 0.0,
    smoothing: float = 0.0,
    adapt_f_min: bool = False,
    correct: bool = True,
    confidence: float = 1.0,
    layerwise: bool = False,
) -> optax.GradientTransformationExtraArgs:
    def init_fn(params):
        dtype = jnp.float32
        return TuningFreeNesterovState(
            count=jnp.zeros([], jnp.int32),
            velocity=optax.tree.zeros_like(params),
            learning_rate=jnp.zeros([], dtype),
            gap_avg=jnp.zeros([], dtype),
            sq_avg=jnp.zeros([], dtype),
            f_min=jnp.asarray(f_min, dtype),
        )

    def update_fn(updates, state, params=None, *, value=None, **extra):
        del params, extra
        value = jnp.asarray(value, jnp.float32).reshape(())
        sq = optax.tree.norm(updates, squared=True).astype(jnp.float32)
        fhat = state.f_min
        if adapt_f_min:
            fhat = jnp.where(value < fhat, jnp.maximum(value / 2, f_min), fhat)
        gap = jnp.maximum(value - fhat, 0.0)
        b = jnp.where(state.count == 0, 0.0, smoothing)
        gap_avg = b * state.gap_avg + (1 - b) * gap
        sq_avg = b * state.sq_avg + (1 - b) * sq
        ceiling = max_learning_rate(state.count) if callable(max_learning_rate) else max_learning_rate
        tau = jnp.where(sq_avg > 0, confidence * gap_avg / jnp.where(sq_avg > 0, sq_avg, 1.0), jnp.inf)
        tau = jnp.minimum(tau, ceiling)
        alpha = momentum
        if layerwise:
            paths, leaves = zip(*jax.tree_util.tree_flatten_with_path(updates)[0])
            keys = [tuple(p[:-1]) for p in paths]
            groups = sorted(set(keys), key=str)
            gsq = {k: sum(jnp.sum(jnp.square(l)) for kk, l in zip(keys, leaves) if kk == k) for k in groups}
            G = len(groups)
            gtau = {k: jnp.minimum(confidence * gap / (G * jnp.maximum(gsq[k], 1e-30)), ceiling) for k in groups}
            etas = [(1 - alpha) * gtau[k] for k in keys]
            eta_tree = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(updates), etas)
            eta = (1 - alpha) * sum(gtau[k] * gsq[k] for k in groups) / jnp.maximum(sq, 1e-30)
        else:
            eta = (1 - alpha) * tau if correct else tau
            eta_tree = jax.tree.map(lambda _: eta, updates)
        velocity = jax.tree.map(lambda v, g, e: alpha * v + e * g, state.velocity, updates, eta_tree)
        step = jax.tree.map(lambda g, v, e: e * g + alpha * v, updates, velocity, eta_tree)
        new_f = fhat
        if adapt_f_min:
            new_f = jnp.maximum(value - tau * sq / 2, f_min)
        return step, TuningFreeNesterovState(
            count=optax.safe_increment(state.count),
            velocity=velocity,
            learning_rate=eta,
            gap_avg=gap_avg,
            sq_avg=sq_avg,
            f_min=new_f,
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def tuning_free_nesterov(**kwargs: Any) -> optax.GradientTransformationExtraArgs:
    return optax.chain(scale_by_tuning_free_nesterov(**kwargs), optax.scale(-1.0))
