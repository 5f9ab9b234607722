"""The device-resident training loop with minibatch persistency (thesis Algorithm 4).

Small pure functions in the style of the Flax examples:

* :func:`create_train_state` initializes the model and the optimizer state;
* :func:`train_step` takes one optimizer step on one batch;
* :func:`persistent_step` takes K optimizer steps on the SAME batch in ``lax.fori_loop``
  (K = 1 is plain minibatch SGD);
* :func:`train_epoch` runs a whole epoch as ONE jitted call: the uint8 training set is
  already on the device, the permutation is drawn on the device, each batch is cut with
  ``lax.dynamic_slice_in_dim`` from the permutation and gathered, augmented and normalized
  on the device, then trained on K times; loss, accuracy and learning rate accumulate in
  the loop carry, so the host syncs once per epoch. The state buffers are donated.
* :func:`evaluate` runs the whole test set as one jitted call, the last partial batch
  padded and masked so that every test example counts exactly once.

An epoch uses ``len(images) // batch_size`` full batches: the last partial batch is
dropped (fewer than ``batch_size`` examples, a different random subset every epoch since
the permutation changes), so that every optimizer step sees a batch of the same size and
the epoch compiles once.

With a ``data_sharding`` (see :mod:`train.sharding`), batches are split over the devices
of the mesh and XLA inserts the gradient all-reduce; the result equals the single-device
run up to float rounding.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax import lax
from jax.sharding import NamedSharding

from train import augment as augment_lib
from train.optimizers import learning_rate_of

Metrics = dict[str, jax.Array]


@struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree (plus two static fields).

    Attributes:
      step: optimizer updates so far (K per batch with persistency K).
      params: the model's ``params`` collection.
      batch_stats: the model's ``batch_stats`` collection (``{}`` without batch norm).
      opt_state: the optimizer state.
      apply_fn: the model's ``apply`` (static).
      tx: the optimizer (static).
    """

    step: jax.Array  # shape=(), int32
    params: optax.Params
    batch_stats: Any
    opt_state: optax.OptState
    apply_fn: Callable[..., Any] = struct.field(pytree_node=False)
    tx: optax.GradientTransformationExtraArgs = struct.field(pytree_node=False)

    def arrays(self) -> dict[str, Any]:
        """The array part of the state (what a checkpoint holds)."""
        return {
            "step": self.step,
            "params": self.params,
            "batch_stats": self.batch_stats,
            "opt_state": self.opt_state,
        }

    def replace_arrays(self, arrays: Mapping[str, Any]) -> TrainState:
        """This state with the arrays of :meth:`arrays` replaced (restoring a checkpoint)."""
        return self.replace(**arrays)


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    key: jax.Array,
    input_shape: tuple[int, ...],
) -> TrainState:
    """Initializes the model's variables and the optimizer state.

    Args:
      model: a Flax Linen module called as ``model.apply(variables, x, train=...)``.
      tx: the optimizer (see :func:`train.optimizers.build_optimizer`).
      key: PRNG key of the initialization.
      input_shape: ``(height, width, channels)`` of one image.

    Returns:
      A :class:`TrainState` at step 0.

    Example:
      >>> import models, optax
      >>> state = create_train_state(models.create("tiny", 3), optax.sgd(0.1),
      ...                            jax.random.key(0), (8, 8, 1))
      >>> int(state.step), sorted(state.batch_stats)
      (0, ['BatchNorm_0'])
    """
    x = jnp.zeros((1, *input_shape), jnp.float32)
    variables = jax.jit(functools.partial(model.init, train=False))(key, x)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=_unalias(tx.init(params), params),
        apply_fn=model.apply,
        tx=tx,
    )


def _unalias(opt_state: optax.OptState, params: optax.Params) -> optax.OptState:
    """Copies the optimizer-state leaves that ARE parameter arrays (prodigy's and DoG's
    initial point, for example), so that donating the state never donates a buffer twice."""
    param_ids = {id(x) for x in jax.tree.leaves(params)}
    return jax.tree.map(lambda x: jnp.copy(x) if id(x) in param_ids else x, opt_state)


def _forward(
    state: TrainState, params: optax.Params, images: jax.Array, train: bool
) -> tuple[jax.Array, Any]:
    """Logits and the updated batch statistics (unchanged without batch norm or in eval)."""
    if not state.batch_stats:
        return state.apply_fn({"params": params}, images, train=train), state.batch_stats
    variables = {"params": params, "batch_stats": state.batch_stats}
    if not train:
        return state.apply_fn(variables, images, train=False), state.batch_stats
    logits, updates = state.apply_fn(variables, images, train=True, mutable=["batch_stats"])
    return logits, updates["batch_stats"]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross entropy with integer labels (the thesis's loss).

    Example:
      >>> float(cross_entropy(jnp.zeros((1, 4)), jnp.array([2]))[0])  # log 4
      1.386...
    """
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def train_step(
    state: TrainState, images: jax.Array, labels: jax.Array
) -> tuple[TrainState, Metrics]:
    """One optimizer step on one batch of normalized images.

    The loss reaches the optimizer as ``value=`` (adaptive Nesterov's Polyak step uses
    it; the other optimizers ignore it).

    Args:
      state: the current state.
      images: float32 ``[B, H, W, C]``, normalized.
      labels: int32 ``[B]``.

    Returns:
      The new state and ``{"loss", "correct", "learning_rate"}``: the batch's mean loss
      and number of correct predictions at the parameters *before* the step, and the
      learning rate (eta) of this step.

    Example:
      >>> import models
      >>> from train.optimizers import build_optimizer
      >>> state = create_train_state(models.create("tiny", 3), build_optimizer("sgd", 0.1),
      ...                            jax.random.key(0), (8, 8, 1))
      >>> x, y = jnp.ones((4, 8, 8, 1)), jnp.array([0, 1, 2, 0])
      >>> state, metrics = train_step(state, x, y)
      >>> int(state.step), round(float(metrics["learning_rate"]), 6)
      (1, 0.1)
    """

    def loss_fn(params: optax.Params) -> tuple[jax.Array, tuple[jax.Array, Any]]:
        logits, batch_stats = _forward(state, params, images, train=True)
        return cross_entropy(logits, labels).mean(), (logits, batch_stats)

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params, value=loss)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss,
        "correct": jnp.sum(jnp.argmax(logits, axis=-1) == labels),
        "learning_rate": learning_rate_of(opt_state).astype(jnp.float32),
    }
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
    )
    return new_state, metrics


def persistent_step(
    state: TrainState, images: jax.Array, labels: jax.Array, persistency: int = 1
) -> tuple[TrainState, Metrics]:
    """K = ``persistency`` optimizer steps on the same batch (thesis Algorithm 4, lines 5-7).

    The K steps run in ``lax.fori_loop`` on the device-resident batch; K = 1 is one
    :func:`train_step`.

    Args:
      state: the current state.
      images: float32 ``[B, H, W, C]``, normalized (augmented once, reused K times).
      labels: int32 ``[B]``.
      persistency: K >= 1 (static).

    Returns:
      The state after K steps and ``{"loss", "correct", "learning_rate"}``: loss and correct
      count from the FIRST of the K steps (the batch as it arrives, before the network has
      trained on it) and the SUM of the K learning rates.

    Example:
      >>> import models
      >>> from train.optimizers import build_optimizer
      >>> state = create_train_state(models.create("tiny", 3), build_optimizer("sgd", 0.1),
      ...                            jax.random.key(0), (8, 8, 1))
      >>> x, y = jnp.ones((4, 8, 8, 1)), jnp.array([0, 1, 2, 0])
      >>> state, metrics = persistent_step(state, x, y, persistency=2)
      >>> int(state.step), round(float(metrics["learning_rate"]), 6)
      (2, 0.2)
    """
    if not isinstance(persistency, int) or persistency < 1:
        raise ValueError(f"persistency must be an integer >= 1, got {persistency!r}")
    if persistency == 1:
        return train_step(state, images, labels)

    def body(i: jax.Array, carry: tuple[TrainState, Metrics]) -> tuple[TrainState, Metrics]:
        state, acc = carry
        state, metrics = train_step(state, images, labels)
        acc = {
            "loss": jnp.where(i == 0, metrics["loss"], acc["loss"]),
            "correct": jnp.where(i == 0, metrics["correct"], acc["correct"]),
            "learning_rate": acc["learning_rate"] + metrics["learning_rate"],
        }
        return state, acc

    init = {
        "loss": jnp.zeros((), jnp.float32),
        "correct": jnp.zeros((), jnp.int32),
        "learning_rate": jnp.zeros((), jnp.float32),
    }
    # One traced train_step for all K steps (the first one's metrics kept by `where`).
    return lax.fori_loop(0, persistency, body, (state, init))


def _constrain(x: jax.Array, sharding: NamedSharding | None) -> jax.Array:
    return x if sharding is None else lax.with_sharding_constraint(x, sharding)


@functools.partial(
    jax.jit,
    static_argnames=("batch_size", "persistency", "augment", "data_sharding"),
    donate_argnames=("state",),
)
def train_epoch(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    mean: jax.Array,
    std: jax.Array,
    key: jax.Array,
    *,
    batch_size: int,
    persistency: int = 1,
    augment: bool = False,
    data_sharding: NamedSharding | None = None,
) -> tuple[TrainState, Metrics]:
    """One epoch as one jitted call (the state's buffers are donated).

    Args:
      state: the current state (donated: do not use it after the call).
      images: the whole training set, uint8 ``[N, H, W, C]``, on the device(s).
      labels: int32 ``[N]``.
      mean: per-channel mean of the raw images (float32 ``[C]``, on the [0, 1] scale).
      std: per-channel standard deviation (float32 ``[C]``).
      key: the epoch's PRNG key (permutation and augmentation).
      batch_size: examples per batch (static); ``N // batch_size`` batches, the last
        partial batch dropped.
      persistency: optimizer steps per batch K (static).
      augment: random flip and translation on the device (static).
      data_sharding: the batch sharding of a data-parallel mesh, or ``None`` (static).

    Returns:
      The new state and the epoch's ``{"loss", "accuracy", "learning_rate",
      "nonfinite"}``: mean loss (over the batches whose loss is finite) and accuracy of
      the batches as they arrive (first of the K steps, augmented), the mean learning
      rate (eta) over the epoch's optimizer steps (NaN for an optimizer whose state
      holds none), and the number of batches whose loss was not finite.

    Example:
      >>> import models
      >>> from train.optimizers import build_optimizer
      >>> state = create_train_state(models.create("tiny", 2), build_optimizer("sgd", 0.1),
      ...                            jax.random.key(0), (4, 4, 1))
      >>> images = jnp.zeros((10, 4, 4, 1), jnp.uint8)
      >>> labels = jnp.zeros((10,), jnp.int32)
      >>> state, metrics = train_epoch(state, images, labels, jnp.zeros(1), jnp.ones(1),
      ...                              jax.random.key(1), batch_size=4, persistency=2)
      >>> int(state.step)  # 10 // 4 = 2 batches, 2 steps each
      4
    """
    num_examples = images.shape[0]
    num_batches = num_examples // batch_size
    if num_batches < 1:
        raise ValueError(
            f"batch_size ({batch_size}) must not exceed the training set size ({num_examples})"
        )
    perm_key, augment_key = jax.random.split(key)
    perm = jax.random.permutation(perm_key, num_examples)

    def body(i: jax.Array, carry: tuple[TrainState, Metrics]) -> tuple[TrainState, Metrics]:
        state, sums = carry
        idx = _constrain(lax.dynamic_slice_in_dim(perm, i * batch_size, batch_size), data_sharding)
        x = _constrain(jnp.take(images, idx, axis=0), data_sharding)
        y = jnp.take(labels, idx, axis=0)
        if augment:
            x = augment_lib.augment(jax.random.fold_in(augment_key, i), x)
        x = augment_lib.normalize(x, mean, std)
        state, metrics = persistent_step(state, x, y, persistency)
        finite = jnp.isfinite(metrics["loss"])
        metrics = dict(metrics, loss=jnp.where(finite, metrics["loss"], 0.0), nonfinite=~finite)
        sums = jax.tree.map(lambda s, m: s + m.astype(s.dtype), sums, metrics)
        return state, sums

    zeros = {
        "loss": jnp.zeros((), jnp.float32),
        "correct": jnp.zeros((), jnp.int32),
        "learning_rate": jnp.zeros((), jnp.float32),
        "nonfinite": jnp.zeros((), jnp.int32),
    }
    state, sums = lax.fori_loop(0, num_batches, body, (state, zeros))
    finite_batches = num_batches - sums["nonfinite"]
    metrics = {
        "loss": jnp.where(finite_batches > 0, sums["loss"] / finite_batches, jnp.nan),
        "accuracy": sums["correct"] / (num_batches * batch_size),
        "learning_rate": sums["learning_rate"] / (num_batches * persistency),
        "nonfinite": sums["nonfinite"],
    }
    return state, metrics


@functools.partial(jax.jit, static_argnames=("batch_size", "data_sharding", "eval_params"))
def evaluate(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    mean: jax.Array,
    std: jax.Array,
    *,
    batch_size: int,
    data_sharding: NamedSharding | None = None,
    eval_params: Callable[[optax.OptState, optax.Params], optax.Params] | None = None,
) -> Metrics:
    """Mean loss and accuracy over ALL of ``images`` in one jitted call (eval mode).

    The set is padded to a multiple of ``batch_size`` and the padding masked out.

    Args:
      state: the state to evaluate (not donated).
      images: uint8 ``[N, H, W, C]``.
      labels: int32 ``[N]``.
      mean: per-channel mean (float32 ``[C]``).
      std: per-channel standard deviation (float32 ``[C]``).
      batch_size: evaluation batch size (static).
      data_sharding: the batch sharding of a data-parallel mesh, or ``None`` (static).
      eval_params: ``(opt_state, params) -> params`` to evaluate instead of the training
        iterate (schedule-free's averaged point), or ``None`` (static).

    Returns:
      ``{"loss", "accuracy"}`` as float32 scalars on the device.

    Example:
      >>> import models
      >>> state = create_train_state(models.create("tiny", 2), optax.sgd(0.1),
      ...                            jax.random.key(0), (4, 4, 1))
      >>> m = evaluate(state, jnp.zeros((5, 4, 4, 1), jnp.uint8), jnp.zeros(5, jnp.int32),
      ...              jnp.zeros(1), jnp.ones(1), batch_size=2)
      >>> sorted(m)
      ['accuracy', 'loss']
    """
    num_examples = images.shape[0]
    if num_examples < 1:
        raise ValueError("evaluate needs at least one example")
    num_batches = -(-num_examples // batch_size)
    pad = num_batches * batch_size - num_examples
    images = jnp.pad(images, ((0, pad),) + ((0, 0),) * (images.ndim - 1))
    labels = jnp.pad(labels, (0, pad))
    mask = jnp.arange(num_batches * batch_size) < num_examples
    params = state.params if eval_params is None else eval_params(state.opt_state, state.params)

    def body(i: jax.Array, sums: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        start = i * batch_size
        x = _constrain(lax.dynamic_slice_in_dim(images, start, batch_size), data_sharding)
        y = lax.dynamic_slice_in_dim(labels, start, batch_size)
        m = lax.dynamic_slice_in_dim(mask, start, batch_size)
        logits, _ = _forward(state, params, augment_lib.normalize(x, mean, std), False)
        loss = jnp.sum(jnp.where(m, cross_entropy(logits, y), 0.0))
        correct = jnp.sum(m & (jnp.argmax(logits, axis=-1) == y))
        return sums[0] + loss, sums[1] + correct

    loss, correct = lax.fori_loop(
        0, num_batches, body, (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
    )
    return {"loss": loss / num_examples, "accuracy": correct / num_examples}
