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
of the mesh and the gradients are added up over the devices by one all-reduce of one flat
buffer (:func:`_loss_and_grads_by_shard`; with batch norm XLA's partitioner inserts the
all-reduces and the cross-device statistics); with the data set replicated the
result equals the single-device run up to float rounding. With ``sharded=True`` each
device holds 1/S of the data set and contributes B/S examples of its own shard to every
batch (:func:`epoch_indices` states the sampling exactly). :func:`train_chunk` is the
chunked mode's unit: C batches already on the device, the same steps and keys.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax import lax
from jax.flatten_util import ravel_pytree
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

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
        """This state with the arrays of :meth:`arrays` replaced (restoring a checkpoint),
        every array in a buffer of its own (:func:`distinct_buffers`)."""
        return distinct_buffers(self.replace(**arrays))


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
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        apply_fn=model.apply,
        tx=tx,
    )
    return distinct_buffers(state)


def distinct_buffers(tree: Any) -> Any:
    """``tree`` with every array leaf in a buffer of its own, ready to be donated.

    An optimizer's state may hold the parameter arrays themselves (prodigy's and DoG's
    initial point) or one array under two names (``inject_hyperparams`` keeps prodigy's
    ``estim_lr0`` both as a hyperparameter and as the inner state's ``estim_lr``;
    schedule-free and D-Adaptation share a scalar the same way); a donating call
    (:func:`train_epoch`, :func:`train_chunk`) refuses to donate one buffer twice. Every
    leaf whose buffer an earlier leaf already holds is copied (by buffer, on every device,
    not by Python identity: two ``jax.Array`` objects may share a buffer), and Python or
    NumPy scalars and arrays become ``jax.Array``s, so the state also checkpoints.

    Example:
      >>> w = jnp.ones(2)
      >>> tree = distinct_buffers({"a": w, "b": w, "c": 0.5})
      >>> tree["a"] is w, tree["b"] is w, type(tree["c"]).__name__
      (True, False, 'ArrayImpl')
    """
    seen: set[tuple[Any, ...]] = set()

    def own(x: Any) -> Any:
        if isinstance(x, (int, float, complex, np.generic, np.ndarray)):
            return jnp.asarray(x)  # a fresh buffer
        if not isinstance(x, jax.Array) or isinstance(x, jax.core.Tracer) or x.is_deleted():
            return x
        buffers = _buffers(x)
        if buffers & seen or not buffers:
            x = jnp.copy(x)
            buffers = _buffers(x)
        seen.update(buffers)
        return x

    return jax.tree.map(own, tree)


def _buffers(x: jax.Array) -> set[tuple[Any, ...]]:
    """The (device, address) of each of ``x``'s buffers on this process's devices; an
    empty array's buffers have no address to compare (any copy of it is free)."""
    return {
        (shard.device.id, shard.data.unsafe_buffer_pointer())
        for shard in x.addressable_shards
        if shard.data.size
    }


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

    Sequence outputs (logits ``[B, T, V]``, labels ``[B, T]``) give each example the mean
    over its positions, so that a batch's mean is the mean over all its tokens.

    Example:
      >>> float(cross_entropy(jnp.zeros((1, 4)), jnp.array([2]))[0])  # log 4
      1.386...
      >>> cross_entropy(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3), jnp.int32)).shape
      (2,)
    """
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return loss.reshape(loss.shape[0], -1).mean(axis=1) if loss.ndim > 1 else loss


def _hits(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example float32 accuracy: 0 or 1 for a class, the fraction of correct next
    tokens for a sequence."""
    hits = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return hits.reshape(hits.shape[0], -1).mean(axis=1) if hits.ndim > 1 else hits


def model_inputs(x: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """What the model gets from a uint8 batch: images ``[B, H, W, C]`` normalized per
    channel; token ids ``[B, T]`` (text) as int32, unnormalized.

    Example:
      >>> model_inputs(jnp.array([[3, 255]], jnp.uint8), jnp.zeros(1), jnp.ones(1)).tolist()
      [[3, 255]]
    """
    if x.ndim == 2:
        return x.astype(jnp.int32)
    return augment_lib.normalize(x, mean, std)


def train_step(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    data_sharding: NamedSharding | None = None,
) -> tuple[TrainState, Metrics]:
    """One optimizer step on one batch of normalized images.

    The loss reaches the optimizer as ``value=`` (adaptive Nesterov's Polyak step uses
    it; the other optimizers ignore it).

    Args:
      state: the current state.
      images: float32 ``[B, H, W, C]``, normalized, or int32 token ids ``[B, T]``
        (:func:`model_inputs`).
      labels: int32 ``[B]``, or ``[B, T]`` next tokens (loss and accuracy over all tokens).
      data_sharding: the batch sharding of a data-parallel mesh, or ``None``: on two or
        more devices, a model without batch norm takes its gradients shard by shard, with
        one all-reduce of one flat buffer (:func:`_loss_and_grads_by_shard`).

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

    if _by_shard(state, data_sharding):
        loss, correct, grads = _loss_and_grads_by_shard(state, images, labels, data_sharding)
        batch_stats = state.batch_stats
    else:

        def loss_fn(params: optax.Params) -> tuple[jax.Array, tuple[jax.Array, Any]]:
            logits, batch_stats = _forward(state, params, images, train=True)
            return cross_entropy(logits, labels).mean(), (logits, batch_stats)

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params
        )
        correct = _correct(logits, labels)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params, value=loss)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss,
        "correct": correct,
        "learning_rate": learning_rate_of(opt_state).astype(jnp.float32),
    }
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
    )
    return new_state, metrics


def _correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The number of correct predictions (a sequence counts its fraction of correct
    tokens), summed in float32 (exact below 2**24 for classes), so that over several
    devices the sum joins the gradients' all-reduce instead of taking one of its own (an
    int32 sum did)."""
    return jnp.sum(_hits(logits, labels))


def _by_shard(state: TrainState, data_sharding: NamedSharding | None) -> bool:
    """Whether a step takes its gradients shard by shard: two or more devices, and no
    batch norm (whose statistics span the whole batch, so XLA's partitioner keeps it)."""
    return data_sharding is not None and data_sharding.mesh.size > 1 and not state.batch_stats


def _varying(x: jax.Array, axis: str) -> jax.Array:
    """``x`` (the same on every device) marked as varying over ``axis`` in ``shard_map``:
    ``lax.pcast`` in recent jax, ``lax.pvary`` before it was renamed."""
    if hasattr(lax, "pcast"):
        return lax.pcast(x, axis, to="varying")
    return lax.pvary(x, axis)


def _loss_and_grads_by_shard(
    state: TrainState, images: jax.Array, labels: jax.Array, data_sharding: NamedSharding
) -> tuple[jax.Array, jax.Array, optax.Params]:
    """The batch's mean loss, number of correct predictions and mean gradients, each
    device computing its own examples' part and ONE all-reduce adding up the parts as one
    flat buffer.

    Why: left to XLA's partitioner the step all-reduces a tuple of 10 arrays (LeNet-5),
    and between processes the CPU collectives (gloo) reduce each array on its own, a ring
    of round trips per array; one flat buffer is one ring (the timings are in
    ``benchmarks/NOTES.md``, scaling). The sums are the same sums in another order: the
    numbers agree up to float rounding.
    """
    axis = data_sharding.spec[0]
    scale = 1.0 / images.shape[0]  # the global batch: the parts add up to the mean

    def part(params: optax.Params, images: jax.Array, labels: jax.Array):
        # Each device's gradient is its own (a custom gradient's, too: models/conv.py).
        params = jax.tree.map(lambda p: _varying(p, axis), params)

        def loss_fn(params: optax.Params) -> tuple[jax.Array, jax.Array]:
            logits, _ = _forward(state, params, images, train=True)
            return cross_entropy(logits, labels).sum() * scale, logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        flat, unflatten = ravel_pytree((loss, _correct(logits, labels), grads))
        return unflatten(lax.psum(flat, axis))

    spec = P(axis)
    return jax.shard_map(part, mesh=data_sharding.mesh, in_specs=(P(), spec, spec), out_specs=P())(
        state.params, images, labels
    )


def persistent_step(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    persistency: int = 1,
    data_sharding: NamedSharding | None = None,
) -> tuple[TrainState, Metrics]:
    """K = ``persistency`` optimizer steps on the same batch (thesis Algorithm 4, lines 5-7).

    The K steps run in ``lax.fori_loop`` on the device-resident batch; K = 1 is one
    :func:`train_step`.

    Args:
      state: the current state.
      images: float32 ``[B, H, W, C]``, normalized (augmented once, reused K times).
      labels: int32 ``[B]``.
      persistency: K >= 1 (static).
      data_sharding: as in :func:`train_step`.

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
        return train_step(state, images, labels, data_sharding)

    def body(i: jax.Array, carry: tuple[TrainState, Metrics]) -> tuple[TrainState, Metrics]:
        state, acc = carry
        state, metrics = train_step(state, images, labels, data_sharding)
        acc = {
            "loss": jnp.where(i == 0, metrics["loss"], acc["loss"]),
            "correct": jnp.where(i == 0, metrics["correct"], acc["correct"]),
            "learning_rate": acc["learning_rate"] + metrics["learning_rate"],
        }
        return state, acc

    init = {
        "loss": jnp.zeros((), jnp.float32),
        "correct": jnp.zeros((), jnp.float32),
        "learning_rate": jnp.zeros((), jnp.float32),
    }
    # One traced train_step for all K steps (the first one's metrics kept by `where`).
    return lax.fori_loop(0, persistency, body, (state, init))


def _constrain(x: jax.Array, sharding: NamedSharding | None) -> jax.Array:
    return x if sharding is None else lax.with_sharding_constraint(x, sharding)


def shard_permutations(key: jax.Array, shard_size: int, num_shards: int) -> jax.Array:
    """The epoch's per-shard permutations, int32 ``[num_shards, shard_size]``.

    Shard ``s`` draws ``jax.random.permutation(fold_in(key, s), shard_size)``; one shard
    uses ``key`` itself, so a one-device run samples exactly as the replicated mode.

    Example:
      >>> p = shard_permutations(jax.random.key(0), 5, 2)
      >>> p.shape, sorted(p[1].tolist())
      ((2, 5), [0, 1, 2, 3, 4])
    """
    if num_shards == 1:
        return jax.random.permutation(key, shard_size)[None]
    draw = lambda s: jax.random.permutation(jax.random.fold_in(key, s), shard_size)
    return jax.vmap(draw)(jnp.arange(num_shards))


def epoch_indices(
    key: jax.Array, num_examples: int, batch_size: int, num_shards: int | None
) -> np.ndarray:
    """The global example indices of an epoch's batches, ``[num_batches, batch_size]``.

    ``num_shards=None`` is the replicated mode: one permutation of all examples, cut into
    batches. With ``S`` shards (the sharded mode), shard ``s`` holds examples
    ``[s * n, (s + 1) * n)`` with ``n = num_examples // S`` (the last
    ``num_examples % S`` examples are never used), and global batch ``i`` is, for
    ``s = 0 .. S-1`` in order, the examples ``s * n + p_s[i * b : (i + 1) * b]``, where
    ``b = batch_size // S`` and ``p_s`` is shard ``s``'s permutation
    (:func:`shard_permutations`). ``key`` is the permutation key of :func:`train_epoch`.

    Example:
      >>> idx = epoch_indices(jax.random.key(0), 10, 4, 2)
      >>> idx.shape, bool((idx[:, :2] < 5).all() and (idx[:, 2:] >= 5).all())
      ((2, 4), True)
    """
    if num_shards is None:
        num_batches = num_examples // batch_size
        perm = np.asarray(jax.random.permutation(key, num_examples))
        return perm[: num_batches * batch_size].reshape(num_batches, batch_size)
    shard_size, local_batch = num_examples // num_shards, batch_size // num_shards
    num_batches = shard_size // local_batch
    perms = np.asarray(shard_permutations(key, shard_size, num_shards))
    local = perms[:, : num_batches * local_batch].reshape(num_shards, num_batches, local_batch)
    glob = local + shard_size * np.arange(num_shards)[:, None, None]
    return glob.transpose(1, 0, 2).reshape(num_batches, batch_size)


def _local_batch(data_sharding: NamedSharding, local_batch: int) -> Callable[..., Any]:
    """A function that cuts one batch out of every device's shard, with no communication:
    ``(images, labels, rows, i)`` with ``rows`` ``[S, n]`` per-shard row orders gives the
    rows ``rows[s, i * b : (i + 1) * b]`` of shard ``s``, concatenated over the shards."""
    spec = P(data_sharding.spec[0])

    def take(images: jax.Array, labels: jax.Array, rows: jax.Array, i: jax.Array):
        idx = lax.dynamic_slice_in_dim(rows[0], i * local_batch, local_batch)
        return jnp.take(images, idx, axis=0), jnp.take(labels, idx, axis=0)

    return jax.shard_map(
        take,
        mesh=data_sharding.mesh,
        in_specs=(spec, spec, spec, P()),
        out_specs=(spec, spec),
    )


def _train_batches(
    state: TrainState,
    sums: Metrics,
    batch: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    num_batches: jax.Array | int,
    first_batch: jax.Array | int,
    mean: jax.Array,
    std: jax.Array,
    augment_key: jax.Array,
    persistency: int,
    augment: bool,
    data_sharding: NamedSharding | None,
) -> tuple[TrainState, Metrics]:
    """Trains on batches ``batch(0) .. batch(num_batches - 1)``, which are the epoch's
    batches ``first_batch + j`` (their augmentation key); the metrics add up in ``sums``."""

    def body(j: jax.Array, carry: tuple[TrainState, Metrics]) -> tuple[TrainState, Metrics]:
        state, sums = carry
        x, y = batch(j)
        if augment and x.ndim == 4:  # images only; token sequences are never augmented
            x = augment_lib.augment(jax.random.fold_in(augment_key, first_batch + j), x)
        x = model_inputs(x, mean, std)
        state, metrics = persistent_step(state, x, y, persistency, data_sharding)
        finite = jnp.isfinite(metrics["loss"])
        metrics = dict(metrics, loss=jnp.where(finite, metrics["loss"], 0.0), nonfinite=~finite)
        sums = jax.tree.map(lambda s, m: s + m.astype(s.dtype), sums, metrics)
        return state, sums

    return lax.fori_loop(0, num_batches, body, (state, sums))


def zero_sums() -> Metrics:
    """The metric sums of an epoch before its first batch (see :func:`epoch_metrics`)."""
    return {
        "loss": jnp.zeros((), jnp.float32),
        "correct": jnp.zeros((), jnp.float32),
        "learning_rate": jnp.zeros((), jnp.float32),
        "nonfinite": jnp.zeros((), jnp.int32),
    }


def epoch_metrics(sums: Metrics, num_batches: int, batch_size: int, persistency: int) -> Metrics:
    """The epoch's metrics (see :func:`train_epoch`) from its sums."""
    finite_batches = num_batches - sums["nonfinite"]
    return {
        "loss": jnp.where(finite_batches > 0, sums["loss"] / finite_batches, jnp.nan),
        "accuracy": sums["correct"] / (num_batches * batch_size),
        "learning_rate": sums["learning_rate"] / (num_batches * persistency),
        "nonfinite": sums["nonfinite"],
    }


@functools.partial(
    jax.jit,
    static_argnames=("batch_size", "persistency", "augment", "data_sharding", "sharded"),
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
    sharded: bool = False,
) -> tuple[TrainState, Metrics]:
    """One epoch as one jitted call (the state's buffers are donated).

    Args:
      state: the current state (donated: do not use it after the call).
      images: the whole training set, uint8 ``[N, H, W, C]`` or token sequences
        ``[N, T]`` (see :func:`model_inputs`), on the device(s).
      labels: int32 ``[N]``, or ``[N, T]`` next tokens.
      mean: per-channel mean of the raw images (float32 ``[C]``, on the [0, 1] scale).
      std: per-channel standard deviation (float32 ``[C]``).
      key: the epoch's PRNG key (permutation and augmentation).
      batch_size: examples per batch (static); ``N // batch_size`` batches, the last
        partial batch dropped.
      persistency: optimizer steps per batch K (static).
      augment: random flip and translation on the device (static).
      data_sharding: the batch sharding of a data-parallel mesh, or ``None`` (static).
      sharded: the data set is sharded over ``data_sharding``'s devices (static): each
        device holds ``N / S`` examples (``N`` a multiple of the ``S`` devices) and every
        batch takes ``batch_size / S`` of them from each device, by a per-shard
        permutation (see :func:`epoch_indices`); no example crosses devices. Otherwise the
        data set is replicated and batches follow one permutation of all ``N``.

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
    if sharded:
        num_shards = data_sharding.mesh.size
        shard_size, local_batch = num_examples // num_shards, batch_size // num_shards
        num_batches = shard_size // local_batch
        rows = _constrain(shard_permutations(perm_key, shard_size, num_shards), data_sharding)
        take = _local_batch(data_sharding, local_batch)

        def batch(i: jax.Array) -> tuple[jax.Array, jax.Array]:
            return take(images, labels, rows, i)

    else:
        perm = jax.random.permutation(perm_key, num_examples)

        def batch(i: jax.Array) -> tuple[jax.Array, jax.Array]:
            idx = lax.dynamic_slice_in_dim(perm, i * batch_size, batch_size)
            idx = _constrain(idx, data_sharding)
            x = _constrain(jnp.take(images, idx, axis=0), data_sharding)
            return x, jnp.take(labels, idx, axis=0)

    state, sums = _train_batches(
        state, zero_sums(), batch, num_batches, 0, mean, std, augment_key, persistency, augment,
        data_sharding,
    )  # fmt: skip
    return state, epoch_metrics(sums, num_batches, batch_size, persistency)


def chunk_rows(indices: np.ndarray, num_shards: int) -> np.ndarray:
    """The rows of a chunk of batches (``[C, B]`` global indices) in the order the
    chunk is sharded: device ``s`` holds, batch after batch, its ``B / S`` examples.

    Example:
      >>> chunk_rows(np.arange(8).reshape(2, 4), 2).tolist()
      [0, 1, 4, 5, 2, 3, 6, 7]
    """
    chunk, batch = indices.shape
    parts = indices.reshape(chunk, num_shards, batch // num_shards)
    return parts.transpose(1, 0, 2).reshape(-1)


@functools.partial(
    jax.jit,
    static_argnames=("batch_size", "persistency", "augment", "data_sharding"),
    donate_argnames=("state", "sums"),
)
def train_chunk(
    state: TrainState,
    sums: Metrics,
    images: jax.Array,
    labels: jax.Array,
    num_batches: jax.Array,
    first_batch: jax.Array,
    mean: jax.Array,
    std: jax.Array,
    augment_key: jax.Array,
    *,
    batch_size: int,
    persistency: int = 1,
    augment: bool = False,
    data_sharding: NamedSharding,
) -> tuple[TrainState, Metrics]:
    """The chunked mode: trains on the first ``num_batches`` batches of a device-resident
    chunk, batches ``first_batch, ...`` of the epoch, as one jitted call.

    The chunk holds ``C`` batches laid out by :func:`chunk_rows` and sharded over
    ``data_sharding``; batch ``j`` is rows ``[j * b, (j + 1) * b)`` of every device's part.
    Augmentation keys and the K steps are those of :func:`train_epoch`, so an epoch of
    chunks over the batches of :func:`epoch_indices` gives the resident epoch's numbers.
    ``sums`` (from :func:`zero_sums`) carries the epoch's metric sums from chunk to chunk.
    """
    num_shards = data_sharding.mesh.size
    local_batch = batch_size // num_shards
    local_rows = images.shape[0] // num_shards
    rows = _constrain(
        jnp.broadcast_to(jnp.arange(local_rows), (num_shards, local_rows)), data_sharding
    )
    take = _local_batch(data_sharding, local_batch)

    def batch(j: jax.Array) -> tuple[jax.Array, jax.Array]:
        return take(images, labels, rows, j)

    return _train_batches(
        state, sums, batch, num_batches, first_batch, mean, std, augment_key, persistency, augment,
        data_sharding,
    )  # fmt: skip


@functools.partial(
    jax.jit, static_argnames=("batch_size", "data_sharding", "eval_params", "sharded")
)
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
    sharded: bool = False,
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
      sharded: the set is sharded over ``data_sharding``'s devices (static), already
        padded to a multiple of ``batch_size`` with label ``-1`` on the padding (see
        :func:`train.sharding.pad_rows`); each device evaluates its own rows.

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
    params = state.params if eval_params is None else eval_params(state.opt_state, state.params)
    if sharded:
        num_shards = data_sharding.mesh.size
        local_batch = batch_size // num_shards
        take = _local_batch(data_sharding, local_batch)
        rows = _constrain(
            jnp.broadcast_to(
                jnp.arange(num_examples // num_shards), (num_shards, num_examples // num_shards)
            ),
            data_sharding,
        )

        def sharded_body(i: jax.Array, sums: tuple[jax.Array, jax.Array]):
            x, y = take(images, labels, rows, i)
            m = y.reshape(y.shape[0], -1)[:, 0] >= 0  # padding rows hold label -1
            logits, _ = _forward(state, params, model_inputs(x, mean, std), False)
            y = jnp.maximum(y, 0)
            loss = jnp.sum(jnp.where(m, cross_entropy(logits, y), 0.0))
            correct = jnp.sum(jnp.where(m, _hits(logits, y), 0.0))
            return sums[0] + loss, sums[1] + correct

        loss, correct = lax.fori_loop(
            0,
            num_examples // batch_size,
            sharded_body,
            (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)),
        )
        count = jnp.sum(labels.reshape(labels.shape[0], -1)[:, 0] >= 0)
        return {"loss": loss / count, "accuracy": correct / count}
    num_batches = -(-num_examples // batch_size)
    pad = num_batches * batch_size - num_examples
    images = jnp.pad(images, ((0, pad),) + ((0, 0),) * (images.ndim - 1))
    labels = jnp.pad(labels, ((0, pad),) + ((0, 0),) * (labels.ndim - 1))
    mask = jnp.arange(num_batches * batch_size) < num_examples

    def body(i: jax.Array, sums: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        start = i * batch_size
        x = _constrain(lax.dynamic_slice_in_dim(images, start, batch_size), data_sharding)
        y = lax.dynamic_slice_in_dim(labels, start, batch_size)
        m = lax.dynamic_slice_in_dim(mask, start, batch_size)
        logits, _ = _forward(state, params, model_inputs(x, mean, std), False)
        loss = jnp.sum(jnp.where(m, cross_entropy(logits, y), 0.0))
        correct = jnp.sum(jnp.where(m, _hits(logits, y), 0.0))
        return sums[0] + loss, sums[1] + correct

    loss, correct = lax.fori_loop(
        0, num_batches, body, (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
    )
    return {"loss": loss / num_examples, "accuracy": correct / num_examples}
