"""An independent float64 NumPy reference of thesis Algorithm 5, and NumPy test problems.

Nothing here imports JAX or polyak_optax: the reference runs Algorithm 5 literally on
the iterate ``w`` (equations 3.3.4-3.3.5 with the clipping of section 3.4), and the
problems compute their losses and gradients by hand-written backpropagation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

Tree = dict[str, np.ndarray]
Oracle = Callable[[Tree, int], tuple[float, Tree]]  # (w, step t) -> (loss, grad) on batch t
Hyper = Any  # a float, or a callable of the 0-based step index


def value_at(hyper: Hyper, t: int) -> float | None:
    """The value of a hyperparameter at step ``t`` (schedules take the count)."""
    if hyper is None:
        return None
    return float(hyper(t)) if callable(hyper) else float(hyper)


@dataclasses.dataclass
class Trajectory:
    """What Algorithm 5 computed, step by step (index t = 0 is the thesis's t = 1).

    Attributes:
      w: the iterates w_1, ..., w_{T+1}.
      v: the velocities v_0 = 0, v_1, ..., v_T.
      eta: the step sizes eta_1, ..., eta_T after clipping.
      grad_sq: the squared gradient norms before clipping.
      loss: the losses at the look-ahead points.
      active: for each bound name, one bool per step: whether that bound clipped.
    """

    w: list[Tree]
    v: list[Tree]
    eta: np.ndarray
    grad_sq: np.ndarray
    loss: np.ndarray
    active: dict[str, np.ndarray]


def algorithm5(
    w1: Tree,
    oracle: Oracle,
    num_steps: int,
    *,
    momentum: float,
    confidence: Hyper = 1.0,
    f_min: Hyper = 0.0,
    min_learning_rate: float | None = None,
    max_learning_rate: Hyper = None,
    min_grad_sq_norm: float | None = None,
    max_grad_sq_norm: float | None = None,
    v0: Tree | None = None,
    layerwise: bool = False,
) -> Trajectory:
    """Runs Algorithm 5 of the thesis in float64 with the section 3.4 clipping.

    Complex params run in complex128 with ``||g||^2 = sum |g|^2`` (the oracle returns the
    descent direction ``2 dL/d(conj w)``). With ``layerwise``, each key is a layer and
    its gradient enters the velocity as ``eta * f_k * g_k``, ``f_k = 1 + log(1 +
    1/||g_k||)`` (1 for a zero gradient), eta from the raw gradient (Singh et al.).

    ``v0`` is the velocity before the first step (the thesis starts from zero).
    """

    def exact(x: Any) -> np.ndarray:
        return np.asarray(x, np.complex128 if np.iscomplexobj(x) else np.float64)

    w = {k: exact(x) for k, x in w1.items()}
    if v0 is None:
        v = {k: np.zeros_like(x) for k, x in w.items()}
    else:
        v = {k: np.asarray(v0[k], w[k].dtype) for k in w}
    ws, vs, etas, grad_sqs, losses = [w], [v], [], [], []
    active: dict[str, list[bool]] = {
        name: []
        for name in (
            "min_grad_sq_norm",
            "max_grad_sq_norm",
            "min_learning_rate",
            "max_learning_rate",
        )
    }
    for t in range(num_steps):
        look_ahead = {k: w[k] - momentum * v[k] for k in w}  # line 5
        loss, g = oracle(look_ahead, t)  # line 6
        layer_sq = {k: float(np.sum(np.abs(g[k]) ** 2)) for k in g}
        sq = sum(layer_sq.values())
        grad_sqs.append(sq)
        active["min_grad_sq_norm"].append(min_grad_sq_norm is not None and sq < min_grad_sq_norm)
        active["max_grad_sq_norm"].append(max_grad_sq_norm is not None and sq > max_grad_sq_norm)
        if min_grad_sq_norm is not None:
            sq = max(sq, min_grad_sq_norm)
        if max_grad_sq_norm is not None:
            sq = min(sq, max_grad_sq_norm)
        eta = value_at(confidence, t) * abs(loss - value_at(f_min, t)) / sq  # line 7, eq. 3.3.4
        eta_max = value_at(max_learning_rate, t)
        active["min_learning_rate"].append(
            min_learning_rate is not None and eta < min_learning_rate
        )
        active["max_learning_rate"].append(eta_max is not None and eta > eta_max)
        if min_learning_rate is not None:
            eta = max(eta, min_learning_rate)
        if eta_max is not None:
            eta = min(eta, eta_max)
        factor = dict.fromkeys(w, 1.0)
        if layerwise:
            factor = {
                k: 1 + np.log1p(1 / np.sqrt(s)) if s > 0 else 1.0 for k, s in layer_sq.items()
            }
        v = {k: momentum * v[k] + eta * factor[k] * g[k] for k in w}  # line 8
        w = {k: w[k] - v[k] for k in w}  # line 9
        ws.append(w)
        vs.append(v)
        etas.append(eta)
        losses.append(loss)
    return Trajectory(
        w=ws,
        v=vs,
        eta=np.asarray(etas),
        grad_sq=np.asarray(grad_sqs),
        loss=np.asarray(losses),
        active={name: np.asarray(flags) for name, flags in active.items()},
    )


# ----------------------------------------------------------------------------------------
# Problems: data, initial params and a float64 oracle with hand-written gradients.


@dataclasses.dataclass
class Problem:
    """A random training problem with one mini-batch per step."""

    name: str
    params: Tree  # initial params
    batches: dict[str, np.ndarray]  # leading axis: the step
    oracle: Oracle


def least_squares(seed: int, num_steps: int, dim: int = 5, batch: int = 8) -> Problem:
    """Mean squared error of a linear model whose data a linear teacher labels (f* = 0)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_steps, batch, dim))
    w_true, b_true = rng.normal(size=dim), rng.normal()
    y = x @ w_true + b_true
    params = {"w": rng.normal(size=dim), "b": np.asarray(rng.normal())}

    def oracle(p: Tree, t: int) -> tuple[float, Tree]:
        r = x[t] @ p["w"] + p["b"] - y[t]
        loss = 0.5 * float(np.mean(r**2))
        return loss, {"w": x[t].T @ r / batch, "b": np.asarray(np.mean(r))}

    return Problem("least_squares", params, {"x": x, "y": y}, oracle)


def mlp(seed: int, num_steps: int, dims: tuple[int, int, int] = (4, 6, 3), batch: int = 8):
    """A tanh MLP with softmax cross-entropy on labels of a random linear teacher."""
    rng = np.random.default_rng(seed)
    d_in, d_hidden, d_out = dims
    x = rng.normal(size=(num_steps, batch, d_in))
    labels = np.argmax(x @ rng.normal(size=(d_in, d_out)), axis=-1)
    params = {
        "w1": rng.normal(size=(d_in, d_hidden)) / np.sqrt(d_in),
        "b1": np.zeros(d_hidden),
        "w2": rng.normal(size=(d_hidden, d_out)) / np.sqrt(d_hidden),
        "b2": np.zeros(d_out),
    }

    def oracle(p: Tree, t: int) -> tuple[float, Tree]:
        h = np.tanh(x[t] @ p["w1"] + p["b1"])
        logits = h @ p["w2"] + p["b2"]
        logits = logits - logits.max(axis=-1, keepdims=True)
        log_probs = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
        onehot = np.eye(d_out)[labels[t]]
        loss = -float(np.mean(np.sum(onehot * log_probs, axis=-1)))
        d_logits = (np.exp(log_probs) - onehot) / batch
        d_h = d_logits @ p["w2"].T * (1 - h**2)
        grads = {
            "w1": x[t].T @ d_h,
            "b1": d_h.sum(axis=0),
            "w2": h.T @ d_logits,
            "b2": d_logits.sum(axis=0),
        }
        return loss, grads

    return Problem("mlp", params, {"x": x, "labels": labels}, oracle)
