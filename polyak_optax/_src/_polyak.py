"""The parts every Polyak preset of the library shares: the step size and the skip.

:func:`polyak_step_size` is the one Polyak step size of the library, and
:func:`skip_unless_finite` the one way a preset drops a step whose loss or gradient is
not finite. The rest validates hyperparameters when a transform is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

_Tree = TypeVar("_Tree")


def at(value: Any, count: jax.Array) -> Any:
    """The value of a hyperparameter that may be a schedule of the count."""
    return value(count) if callable(value) else value


def clip(x: jax.Array, lo: Any, hi: Any) -> jax.Array:
    """Clips ``x`` to ``[lo, hi]``; a ``None`` bound does not clip that side.

    ``min(max(x, lo), hi)``: where ``hi`` falls below ``lo`` the result is ``hi``.
    """
    if lo is not None:
        x = jnp.maximum(x, jnp.asarray(lo, x.dtype))
    if hi is not None:
        x = jnp.minimum(x, jnp.asarray(hi, x.dtype))
    return x


def polyak_step_size(
    loss: jax.Array,
    sq_norm: jax.Array,
    *,
    confidence: jax.typing.ArrayLike,
    f_min: jax.typing.ArrayLike,
    absolute_gap: bool,
    min_sq_norm: jax.typing.ArrayLike | None = None,
    max_sq_norm: jax.typing.ArrayLike | None = None,
    min_step: jax.typing.ArrayLike | None = None,
    max_step: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    r"""The Polyak step size :math:`\gamma\,\mathrm{gap} / \|g\|^2`, clipped.

    .. math::

      \eta = \operatorname{clip}\left(\gamma\, \frac{\mathrm{gap}(L - f^\star)}
          {\operatorname{clip}(\|g\|^2, s_{\min}, s_{\max})},
          \eta_{\min}, \eta_{\max}\right)

    in the dtype of ``loss`` (``sq_norm`` must have it too). A ``None`` bound does not
    clip that side. Before the clip of :math:`\eta`, a zero gap gives a ratio of 0 (even
    over a zero :math:`\|g\|^2`) and a positive gap over a zero :math:`\|g\|^2` an
    infinite one; a result that is still not finite (no :math:`\eta_{\max}`) is 0.
    The caller skips the step when ``loss`` or ``sq_norm`` is not finite
    (:func:`skip_unless_finite`).

    The gap takes one of two forms, because the documents the presets follow differ:

    * ``absolute_gap=True``: :math:`|L - f^\star|`, equation 3.3.4 and Algorithm 5 of
      Mandatelli's thesis (``seeds/thesis-minibatch-persistency-adaptive-nesterov.txt``),
      with the two-sided clips of :math:`\|g\|^2` and :math:`\eta` that the thesis's
      experiments use; a loss below a (scheduled) :math:`f^\star` still moves.
    * ``absolute_gap=False``: :math:`\max(L - f^\star, 0)`, capped above only, the
      SPS\ :sub:`max` step of Loizou et al. (2021), which the schedule-free and
      tuning-free presets put on their base step: a loss at or below the estimate
      :math:`f^\star` takes no step, which keeps an online :math:`f^\star` estimate (or
      one that is not a lower bound) from stepping uphill.

    Args:
      loss: the scalar loss :math:`L`, in the dtype of the computation.
      sq_norm: :math:`\|g\|^2` (or :math:`g^\top D^{-1} g` in a metric :math:`D`).
      confidence: :math:`\gamma`.
      f_min: :math:`f^\star`.
      absolute_gap: the form of the gap, above.
      min_sq_norm: :math:`s_{\min}` or ``None``.
      max_sq_norm: :math:`s_{\max}` or ``None``.
      min_step: :math:`\eta_{\min}` or ``None``.
      max_step: :math:`\eta_{\max}` or ``None``.

    Returns:
      :math:`\eta`, a scalar in the dtype of ``loss``.

    Example:
      >>> eta = polyak_step_size(jnp.array(5.0), jnp.array(20.0), confidence=2.0,
      ...                        f_min=0.0, absolute_gap=False, max_step=1.0)
      >>> float(eta)
      0.5

    References:
      Mandatelli, Improved training methods for neural networks (section 3.3,
      Algorithm 5), master's thesis, Università degli Studi di Padova, 2018.

      Loizou et al., `Stochastic Polyak step-size for SGD: an adaptive learning rate
      for fast convergence <https://arxiv.org/abs/2002.10542>`_, 2021.
    """
    dtype = loss.dtype
    diff = loss - jnp.asarray(f_min, dtype)
    gap = jnp.abs(diff) if absolute_gap else jnp.maximum(diff, 0)
    # gap / 0 is inf (clipped to max_step below, or 0 without one); 0 / 0 is 0.
    ratio = jnp.asarray(confidence, dtype) * gap / clip(sq_norm, min_sq_norm, max_sq_norm)
    ratio = jnp.where(gap == 0, 0, ratio)
    eta = clip(ratio, min_step, max_step)
    return jnp.where(jnp.isfinite(eta), eta, 0).astype(dtype)


def loss_scalar(value: jax.typing.ArrayLike | None, dtype: Any) -> jax.Array:
    """The loss passed as ``update(..., value=loss)``, as a scalar of ``dtype``.

    Raises:
      ValueError: when ``value`` is missing or is not a scalar.
    """
    if value is None:
        raise ValueError(
            "value: a Polyak step needs the loss at params, "
            "call update(grads, state, params, value=loss)"
        )
    value = jnp.asarray(value)
    if value.size != 1:
        raise ValueError(f"value must be the scalar loss, got shape {value.shape}")
    return value.reshape(()).astype(dtype)


def skip_unless_finite(finite: jax.Array, new: _Tree, old: _Tree) -> _Tree:
    """``new`` where the step is ``finite``, else ``old``, leaf by leaf, in ``old``'s dtypes.

    A step whose loss or gradient is not finite changes nothing: a preset hands its
    ``(updates, new state)`` as ``new`` and ``(zeros, state)`` as ``old``, so the update
    is zero and the state (its count included: every schedule of the count waits) is
    kept. ``finite`` is a scalar bool; a leaf of ``new`` that is ``old``'s own is kept
    as it is.

    Example:
      >>> new = (jnp.array([1.0, 2.0]), jnp.array(3))
      >>> old = (jnp.zeros(2), jnp.array(2))
      >>> skip_unless_finite(jnp.array(False), new, old)[1].item()
      2
    """
    keep = lambda n, o: o if n is o else jnp.where(finite, n, o).astype(jnp.result_type(o))
    return jax.tree.map(keep, new, old)


def concrete(name: str, value: Any) -> float | None:
    """``float(value)`` for a concrete real scalar; ``None`` for a traced one.

    Raises:
      ValueError: naming ``name`` when ``value`` is not a real scalar number.
    """
    try:
        array = np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None  # injected by optax.inject_hyperparams under jit: checked by no one
    except TypeError as e:
        raise ValueError(f"{name} must be a real number, got {value!r}") from e
    real = jnp.issubdtype(array.dtype, jnp.floating) or jnp.issubdtype(array.dtype, jnp.integer)
    if array.shape != () or not real:
        raise ValueError(f"{name} must be a real scalar number, got {value!r}")
    return float(array)


def check_number(name: str, value: Any, requirement: str, ok: Callable[[float], bool]) -> None:
    """A ``ValueError`` naming ``name`` unless ``ok(float(value))``; a traced value passes.

    Example:
      >>> check_number("b1", 1.5, "in (0, 1)", lambda v: 0 < v < 1)
      Traceback (most recent call last):
      ...
      ValueError: b1 must be in (0, 1), got 1.5
    """
    if callable(value):
        raise ValueError(f"{name} must be a number, not a schedule, got {value!r}")
    number = concrete(name, value)
    if number is not None and not ok(number):
        raise ValueError(f"{name} must be {requirement}, got {value!r}")


def check_capped_polyak(
    max_learning_rate: optax.ScalarOrSchedule, confidence: float, f_min: float
) -> None:
    """A ``ValueError`` naming the first bad argument of a capped Polyak step.

    A value traced by ``optax.inject_hyperparams`` under ``jit`` cannot be checked and
    passes.
    """
    if not callable(max_learning_rate):
        check_number("max_learning_rate", max_learning_rate, "positive", lambda v: v > 0)
    check_number("confidence", confidence, "positive and finite", lambda v: 0 < v < np.inf)
    check_number("f_min", f_min, "finite", np.isfinite)
