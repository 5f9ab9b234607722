"""Optimizers and learning-rate/momentum schedules built from the training flags.

Every optimizer is returned as an ``optax.GradientTransformationExtraArgs`` that accepts
the loss as ``value=`` (the adaptive Nesterov step needs it; the others drop it), whose
learning rate (and momentum) live in ``optax.inject_hyperparams`` state, so that they can
be scheduled and read back with :func:`learning_rate_of`. Schedules count *optimizer
steps*: with minibatch persistency K an epoch of ``steps_per_epoch`` batches is
``K * steps_per_epoch`` steps.

Schedules (thesis chapters 2-3 and Smith's notes):

* ``constant``: the learning rate throughout.
* ``step``: x0.1 at 50% and again at 75% of training (the thesis's 0.1 / 0.01 / 0.001 over
  150 / 75 / 75 of 300 epochs).
* ``cyclic``: Smith's triangular CLR between ``min_learning_rate`` and ``learning_rate``,
  each half-cycle ``cycle_epochs`` epochs of optimizer steps (the thesis used a stepsize of
  10 epochs' iterations).
* ``onecycle``: Smith's one-cycle policy peaking at ``learning_rate``, momentum cycling the
  other way between ``momentum - 0.1`` and ``momentum`` (PyTorch's 0.85 / 0.95 by default).

For ``adaptive_nesterov`` the step size eta is computed by the Polyak rule and clipped to
``[min_learning_rate, max_learning_rate]`` (thesis: [1e-3, 1e-1]); ``learning_rate`` is
the ceiling ``max_learning_rate`` and the schedule applies to that ceiling. Where the
scheduled ceiling falls below the floor (the end of ``step`` or ``onecycle``), eta is the
ceiling.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

import polyak_optax as po
from polyak_optax._src._polyak import skip_unless_finite  # the library's one non-finite skip
from train import config as config_lib

SCHEDULES = config_lib.SCHEDULES

# The thesis's adaptive Nesterov uses alpha = 0.9; PyTorch's one-cycle cycles momentum
# between 0.85 and 0.95.
DEFAULT_MOMENTUM = 0.9
DEFAULT_ONECYCLE_MAX_MOMENTUM = 0.95
ONECYCLE_MOMENTUM_RANGE = 0.1
ADAPTIVE_MIN_LEARNING_RATE = 1e-3  # thesis: eta >= 0.001
CYCLIC_BASE_FRACTION = 0.1  # default lower CLR bound: learning_rate / 10
STEP_BOUNDARIES = (0.5, 0.75)  # fractions of training where the step schedule x0.1
STEP_FACTOR = 0.1
ONECYCLE_DIV_FACTOR = 25.0
ONECYCLE_FINAL_DIV_FACTOR = 1e4
COSINE_FINAL_FRACTION = 0.0  # the cosine schedule decays to 0


Factory = Callable[..., optax.GradientTransformation]


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """One entry of the optimizer registry :data:`OPTIMIZERS`.

    Attributes:
      factory: ``factory(learning_rate, momentum, **extra) -> GradientTransformation``;
        ``learning_rate`` is a float or an optax schedule (the eta ceiling for Polyak-type
        optimizers); ``momentum`` a float, a schedule, or ``None`` when the optimizer has
        none. ``extra`` holds ``min_learning_rate`` when :attr:`takes_floor` and
        ``weight_decay`` when :attr:`decoupled_weight_decay`.
      learning_rate: the default learning rate (the published default for optax's own).
      momentum: the default momentum, or ``None`` for an optimizer without one.
      cycles_momentum: under ``onecycle`` the momentum cycles inversely to the rate,
        between ``momentum - 0.1`` and ``momentum`` (default maximum 0.95).
      takes_floor: the factory takes ``min_learning_rate`` (adaptive Nesterov's eta floor).
      native_layerwise: the factory takes ``layerwise=True`` and applies the layer factors
        itself (rather than being wrapped in ``po.layerwise``).
      decoupled_weight_decay: the factory applies ``weight_decay`` itself (AdamW);
        otherwise weight decay is L2 added to the gradient before the optimizer.
      eval_params: ``(opt_state, params) -> params`` to evaluate, when they differ from
        the training iterate (schedule-free: the averaged sequence).
      about: one line for ``--help``.
    """

    factory: Factory
    learning_rate: float
    momentum: float | None = None
    cycles_momentum: bool = False
    takes_floor: bool = False
    native_layerwise: bool = False
    decoupled_weight_decay: bool = False
    eval_params: Callable[[Any, Any], Any] | None = None
    about: str = ""


def injected(
    fn: Callable[..., optax.GradientTransformation],
    momentum_arg: str | None = None,
    lr_arg: str = "learning_rate",
    **fixed: Any,
) -> Factory:
    """A factory calling optax's ``fn`` under ``optax.inject_hyperparams``.

    The learning rate (and momentum, passed as ``fn``'s ``momentum_arg``) become
    injected hyperparameters, so schedules work for any optax optimizer and the rate is
    in the state for the logs; ``fixed`` are passed as static arguments.

    Example:
      >>> tx = injected(optax.sgd, "momentum")(0.1, 0.9)
      >>> sorted(tx.init({"w": jnp.zeros(2)}).hyperparams)
      ['learning_rate', 'momentum']
    """

    def factory(
        learning_rate: optax.ScalarOrSchedule,
        momentum: optax.ScalarOrSchedule | None = None,
        **extra: Any,
    ) -> optax.GradientTransformation:
        kwargs = {lr_arg: learning_rate, **extra}
        if momentum_arg is not None and momentum is not None:
            kwargs[momentum_arg] = momentum
        return optax.inject_hyperparams(fn, static_args=tuple(fixed))(**kwargs, **fixed)

    return factory


def _adam(
    learning_rate: optax.ScalarOrSchedule,
    momentum: optax.ScalarOrSchedule | None,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """Adam, or AdamW's decoupled weight decay on the kernels when ``weight_decay > 0``."""
    if weight_decay:
        return optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
            learning_rate=learning_rate,
            b1=momentum,
            weight_decay=weight_decay,
            mask=kernel_mask,
        )
    return optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate, b1=momentum)


def _schedule_free_eval_params(opt_state: Any, params: Any) -> Any:
    """The averaged parameters x of schedule-free, where the state is found in the tree."""
    (state,) = [
        s
        for s in jax.tree.leaves(
            opt_state, is_leaf=lambda s: isinstance(s, optax.contrib.ScheduleFreeState)
        )
        if isinstance(s, optax.contrib.ScheduleFreeState)
    ]
    return optax.contrib.schedule_free_eval_params(state, params)


def _adaptive_nesterov_factory(
    learning_rate: optax.ScalarOrSchedule,
    momentum: optax.ScalarOrSchedule,
    min_learning_rate: float | None = None,
    layerwise: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """Adaptive Nesterov: eta in [floor, scheduled ceiling], momentum possibly cycled.

    The schedules are the transform's own (one step count: a skipped non-finite step
    advances none of them), and the params-sized ``grad`` buffer is not kept
    (``store_grad=False``): the state is Nesterov's velocity plus three scalars.
    ``layerwise`` puts the layer factor where the gradient enters the velocity.
    """
    # The thesis's floor (or the user's); where the scheduled ceiling falls below it, the
    # ceiling wins (eta = min(max(ratio, floor), ceiling)), so one-cycle can anneal to ~0.
    floor = ADAPTIVE_MIN_LEARNING_RATE if min_learning_rate is None else min_learning_rate
    return po.adaptive_nesterov(
        momentum=momentum,
        min_learning_rate=floor,
        max_learning_rate=learning_rate,
        store_grad=False,
        layerwise=layerwise,
    )


def _tuning_free_nesterov_factory(
    learning_rate: optax.ScalarOrSchedule, momentum: float
) -> optax.GradientTransformationExtraArgs:
    """The library's tuning-free adaptive Nesterov; the rate is the effective step's ceiling."""
    return po.tuning_free_nesterov(momentum=momentum, max_learning_rate=learning_rate)


def _schedule_free_polyak_factory(
    learning_rate: optax.ScalarOrSchedule, momentum: float
) -> optax.GradientTransformationExtraArgs:
    """Schedule-free Polyak; the rate is the step's ceiling, ``momentum`` schedule-free's b1."""
    return po.schedule_free_polyak(b1=momentum, max_learning_rate=learning_rate)


def _schedule_free_polyak_adam_factory(
    learning_rate: optax.ScalarOrSchedule, momentum: float
) -> optax.GradientTransformationExtraArgs:
    """Schedule-free Polyak in Adam's metric; the rate is the ceiling, ``momentum`` b1."""
    return po.schedule_free_polyak_adam(b1=momentum, max_learning_rate=learning_rate)


def _sgd(nesterov: bool, about: str) -> OptimizerSpec:
    """optax's SGD with (heavy-ball or Nesterov) momentum, cycled under ``onecycle``."""
    return OptimizerSpec(
        injected(optax.sgd, "momentum", nesterov=nesterov),
        0.05,
        DEFAULT_MOMENTUM,
        cycles_momentum=True,
        about=about,
    )


def _contrib(
    name: str,
    learning_rate: float,
    momentum_arg: str | None = None,
    momentum: float | None = None,
    note: str = "",
    **spec: Any,
) -> OptimizerSpec:
    """``optax.contrib.<name>`` under :func:`injected`; ``--help`` says its name + ``note``."""
    return OptimizerSpec(
        injected(getattr(optax.contrib, name), momentum_arg),
        learning_rate,
        momentum,
        about=f"optax.contrib.{name}{note}",
        **spec,
    )


def _schedule_free(name: str, learning_rate: float) -> OptimizerSpec:
    """A schedule-free optax.contrib optimizer (``b1`` = 0.9), evaluated at its average."""
    return _contrib(
        name,
        learning_rate,
        "b1",
        0.9,
        ", evaluated at the averaged parameters",
        eval_params=_schedule_free_eval_params,
    )


#: The optimizers of ``--optimizer``, by name: one entry each (factory and defaults).
OPTIMIZERS: dict[str, OptimizerSpec] = {
    "sgd": _sgd(nesterov=False, about="SGD with heavy-ball momentum"),
    "nesterov": _sgd(nesterov=True, about="SGD with Nesterov momentum"),
    "adaptive_nesterov": OptimizerSpec(
        _adaptive_nesterov_factory,
        0.1,
        DEFAULT_MOMENTUM,
        cycles_momentum=True,
        takes_floor=True,
        native_layerwise=True,
        about="thesis Algorithm 5: Polyak step eta in [1e-3, lr], Nesterov momentum",
    ),
    "tuning_free_nesterov": OptimizerSpec(
        _tuning_free_nesterov_factory,
        1.0,
        DEFAULT_MOMENTUM,
        about="po.tuning_free_nesterov: momentum-corrected Polyak step, gamma 2; "
        "lr = ceiling of the effective step eta / (1 - momentum)",
    ),
    "schedule_free_polyak": OptimizerSpec(
        _schedule_free_polyak_factory,
        1.0,
        DEFAULT_MOMENTUM,
        eval_params=_schedule_free_eval_params,
        about="po.schedule_free_polyak: schedule-free SGD with a capped Polyak step (gamma "
        "2), evaluated at the averaged parameters; lr = the step's ceiling, momentum = b1",
    ),
    "schedule_free_polyak_adam": OptimizerSpec(
        _schedule_free_polyak_adam_factory,
        1e-2,
        DEFAULT_MOMENTUM,
        eval_params=_schedule_free_eval_params,
        about="po.schedule_free_polyak_adam: schedule-free AdamW with a capped Polyak step "
        "in Adam's metric (gamma 5), evaluated at the averaged parameters; lr = the "
        "step's ceiling, momentum = b1",
    ),
    "adagrad": OptimizerSpec(injected(optax.adagrad), 0.01, about="AdaGrad"),
    "adam": OptimizerSpec(
        _adam,
        1e-3,
        DEFAULT_MOMENTUM,
        cycles_momentum=True,
        decoupled_weight_decay=True,
        about="Adam (b1 = momentum); AdamW's decoupled weight decay",
    ),
    "polyak_sgd": OptimizerSpec(
        injected(optax.polyak_sgd, lr_arg="max_learning_rate"),
        1.0,
        about="optax.polyak_sgd (SPS_max, no momentum); lr = the step's ceiling",
    ),
    "momo": _contrib("momo", 1.0, "beta", 0.9, " (MoMo)"),
    "momo_adam": _contrib("momo_adam", 1e-2, "b1", 0.9),
    "prodigy": _contrib("prodigy", 1.0, note=" (lr multiplies d)"),
    "dadapt_adamw": _contrib("dadapt_adamw", 1.0, note=" (D-Adaptation)"),
    "dog": _contrib("dog", 1.0, note=" (DoG)"),
    "schedule_free_sgd": _schedule_free("schedule_free_sgd", 1.0),
    "schedule_free_adamw": _schedule_free("schedule_free_adamw", 0.0025),
}


def kernel_mask(params: Any) -> Any:
    """True for the kernels (weights of conv and dense layers), False for biases and norms.

    Example:
      >>> kernel_mask({"Dense_0": {"kernel": 1, "bias": 2}})
      {'Dense_0': {'bias': False, 'kernel': True}}
    """
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params
    )


def resolve(config: config_lib.Config) -> config_lib.Config:
    """The config with the optimizer's defaults filled in (learning rate, momentum, floor).

    Example:
      >>> c = resolve(config_lib.Config(optimizer="adam", schedule="constant"))
      >>> c.learning_rate, c.momentum
      (0.001, 0.9)
    """
    spec = OPTIMIZERS[config.optimizer]
    changes: dict[str, Any] = {}
    if config.learning_rate is None:
        changes["learning_rate"] = spec.learning_rate
    if config.momentum is None:
        momentum = spec.momentum
        if momentum is not None and spec.cycles_momentum and config.schedule == "onecycle":
            momentum = DEFAULT_ONECYCLE_MAX_MOMENTUM
        changes["momentum"] = momentum
    elif spec.momentum is None:
        raise ValueError(f"--momentum: {config.optimizer} has no momentum; leave it unset")
    if config.min_learning_rate is None:
        lr = changes.get("learning_rate", config.learning_rate)
        if config.schedule == "cyclic":
            changes["min_learning_rate"] = cyclic_base_learning_rate(lr, None)
        elif spec.takes_floor:
            changes["min_learning_rate"] = ADAPTIVE_MIN_LEARNING_RATE
    return config.replace(**changes)


def default_learning_rate(name: str) -> float:
    """The learning rate an optimizer gets when ``--learning-rate`` is not given.

    Example:
      >>> default_learning_rate("adaptive_nesterov")
      0.1
    """
    return _spec(name).learning_rate


def default_momentum(name: str, schedule: str = "constant") -> float | None:
    """The momentum an optimizer gets when ``--momentum`` is not given.

    ``None`` for an optimizer without momentum; for Adam the momentum is ``b1``; under
    the one-cycle schedule it is the *maximum* momentum of the cycle.

    Example:
      >>> default_momentum("nesterov"), default_momentum("sgd", "onecycle")
      (0.9, 0.95)
    """
    _check_choice("schedule", schedule, SCHEDULES)
    return resolve(config_lib.Config(optimizer=name, schedule=schedule)).momentum


def build_schedule(
    schedule: str,
    learning_rate: float,
    *,
    total_steps: int,
    steps_per_epoch: int = 1,
    persistency: int = 1,
    min_learning_rate: float | None = None,
    cycle_epochs: float = 10.0,
) -> optax.ScalarOrSchedule:
    """The learning-rate schedule named ``schedule``, counting optimizer steps.

    Args:
      schedule: one of ``constant``, ``step``, ``cyclic``, ``onecycle``, ``cosine``.
      learning_rate: the base rate (``constant``, ``step``) or the peak (``cyclic``,
        ``onecycle``, ``cosine``).
      total_steps: optimizer steps of the whole run (epochs x batches x persistency).
      steps_per_epoch: batches per epoch.
      persistency: optimizer steps per batch (K).
      min_learning_rate: the lower bound of ``cyclic`` (default ``learning_rate / 10``).
      cycle_epochs: half-cycle of ``cyclic`` in epochs (thesis: 10).

    Returns:
      A float (``constant``) or an optax schedule.

    Raises:
      ValueError: for an unknown schedule or a non-positive size.

    Example:
      >>> s = build_schedule("step", 0.1, total_steps=100)
      >>> [round(float(s(t)), 6) for t in (0, 49, 50, 75, 99)]
      [0.1, 0.1, 0.01, 0.001, 0.001]
    """
    _check_choice("schedule", schedule, SCHEDULES)
    _check_positive_int("total_steps", total_steps)
    _check_positive_int("steps_per_epoch", steps_per_epoch)
    _check_positive_int("persistency", persistency)
    if schedule == "constant":
        return learning_rate
    if schedule == "step":
        boundaries = {max(1, round(f * total_steps)): STEP_FACTOR for f in STEP_BOUNDARIES}
        if len(boundaries) < len(STEP_BOUNDARIES):  # very short runs: both steps coincide
            (step,) = boundaries
            boundaries = {step: STEP_FACTOR**2}
        return optax.piecewise_constant_schedule(learning_rate, boundaries)
    if schedule == "cyclic":
        if not cycle_epochs > 0:
            raise ValueError(f"cycle_epochs must be positive, got {cycle_epochs}")
        base = cyclic_base_learning_rate(learning_rate, min_learning_rate)
        step_size = max(1, round(cycle_epochs * steps_per_epoch * persistency))
        return po.cyclic_schedule(base, learning_rate, step_size)
    if schedule == "cosine":
        return optax.cosine_decay_schedule(learning_rate, total_steps, COSINE_FINAL_FRACTION)
    return po.onecycle_schedule(
        total_steps,
        learning_rate,
        div_factor=ONECYCLE_DIV_FACTOR,
        final_div_factor=ONECYCLE_FINAL_DIV_FACTOR,
    )


def cyclic_base_learning_rate(learning_rate: float, min_learning_rate: float | None) -> float:
    """The lower CLR bound: ``min_learning_rate`` or ``learning_rate / 10``.

    Example:
      >>> cyclic_base_learning_rate(0.1, None)
      0.01
    """
    if min_learning_rate is None:
        return learning_rate * CYCLIC_BASE_FRACTION
    if not 0 <= min_learning_rate <= learning_rate:
        raise ValueError(
            f"min_learning_rate must be in [0, learning_rate={learning_rate}] for the cyclic "
            f"schedule, got {min_learning_rate}"
        )
    return min_learning_rate


def build_momentum_schedule(
    schedule: str, momentum: float | None, *, total_steps: int
) -> optax.ScalarOrSchedule | None:
    """The momentum: constant, or cycling inversely to the learning rate under ``onecycle``.

    Example:
      >>> m = build_momentum_schedule("onecycle", 0.95, total_steps=100)
      >>> round(float(m(0)), 4), round(float(m(30)), 4)
      (0.95, 0.85)
    """
    if momentum is None or schedule != "onecycle":
        return momentum
    return po.onecycle_momentum_schedule(
        total_steps,
        base_momentum=max(0.0, momentum - ONECYCLE_MOMENTUM_RANGE),
        max_momentum=momentum,
    )


def build_optimizer(
    name: str,
    learning_rate: float | None = None,
    momentum: float | None = None,
    *,
    schedule: str = "constant",
    steps_per_epoch: int = 1,
    epochs: int = 1,
    persistency: int = 1,
    layerwise: bool = False,
    min_learning_rate: float | None = None,
    cycle_epochs: float = 10.0,
    weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """Builds an optimizer of the registry :data:`OPTIMIZERS` with its schedules.

    Args:
      name: a key of :data:`OPTIMIZERS` (``sgd``, ``nesterov``, ``adaptive_nesterov``,
        ``adagrad``, ``adam``, optax's Polyak and learning-rate-free optimizers...).
      learning_rate: the learning rate (the peak for ``cyclic``/``onecycle``/``cosine``;
        the eta ceiling for Polyak-type optimizers); ``None``: the entry's default.
      momentum: momentum (``b1`` for Adam; the maximum of the cycle for ``onecycle``);
        ``None``: the entry's default. An optimizer without momentum refuses one.
      schedule: ``constant``, ``step``, ``cyclic``, ``onecycle`` or ``cosine``.
      steps_per_epoch: batches per epoch.
      epochs: epochs of the run (the length of ``step``, ``onecycle`` and ``cosine``).
      persistency: optimizer steps per batch K; schedules count optimizer steps.
      layerwise: layer-specific factor 1 + log(1 + 1/||g_l||), one layer per parameter
        array: ``po.layerwise`` around the optimizer, or for adaptive Nesterov its own
        ``layerwise=True`` (the factor scales the gradient entering the velocity).
      min_learning_rate: the eta floor of ``adaptive_nesterov`` (thesis 1e-3; a scheduled
        ceiling below it wins) or the lower bound of ``cyclic`` (default
        ``learning_rate / 10``).
      cycle_epochs: the half-cycle of ``cyclic`` in epochs.
      weight_decay: on the kernels only: L2 added to the gradient before the optimizer
        (Caffe's and PyTorch SGD's semantics), or decoupled for ``adam`` (AdamW).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; call its ``update`` with ``value=loss``.

    Raises:
      ValueError: for unknown names, non-positive sizes or rates, momentum outside [0, 1).

    Example:
      >>> import jax.numpy as jnp
      >>> tx = build_optimizer("nesterov", 0.1, 0.9, schedule="step", steps_per_epoch=5,
      ...                      epochs=4, persistency=2)
      >>> params = {"w": jnp.ones(3)}
      >>> state = tx.init(params)
      >>> updates, state = tx.update(params, state, params, value=jnp.float32(1.0))
      >>> params = optax.apply_updates(params, updates)
      >>> float(learning_rate_of(state))
      0.1
    """
    _spec(name)
    _check_positive_int("steps_per_epoch", steps_per_epoch)
    _check_positive_int("epochs", epochs)
    _check_positive_int("persistency", persistency)
    given = not _is_number(learning_rate) and learning_rate is not None  # a schedule
    config = resolve(
        config_lib.Config(
            optimizer=name,
            schedule=schedule,
            learning_rate=None if given else learning_rate,
            momentum=momentum,
            min_learning_rate=min_learning_rate,
            cycle_epochs=cycle_epochs,
            weight_decay=weight_decay,
            epochs=epochs,
            persistency=persistency,
            layerwise=layerwise,
        )
    )  # checks every value once, with the flags' own rules
    if not given:
        return build_from_config(config, steps_per_epoch)
    return build_from_config(config.replace(schedule="constant"), steps_per_epoch, learning_rate)


def skip_nonfinite(
    inner: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
    """``inner``, except that a step whose updates are not all finite changes nothing.

    The state keeps its structure (no fields are added), so a run may switch
    ``--on-nan`` between stop and skip on resume.

    Example:
      >>> tx = skip_nonfinite(optax.sgd(0.1, momentum=0.9))
      >>> params = {"w": jnp.ones(2)}
      >>> state = tx.init(params)
      >>> updates, new_state = tx.update({"w": jnp.array([1.0, jnp.nan])}, state, params)
      >>> updates["w"].tolist(), bool((new_state[0].trace["w"] == 0).all())
      ([0.0, 0.0], True)
    """
    inner = optax.with_extra_args_support(inner)

    def update_fn(updates, state, params=None, **extra_args):
        new_updates, new_state = inner.update(updates, state, params, **extra_args)
        finite = jnp.all(
            jnp.asarray([jnp.all(jnp.isfinite(u)) for u in jax.tree.leaves(new_updates)])
        )
        zeros = jax.tree.map(jnp.zeros_like, new_updates)
        return skip_unless_finite(finite, (new_updates, new_state), (zeros, state))

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)


def build_from_config(
    config: config_lib.Config,
    steps_per_epoch: int,
    learning_rate: optax.ScalarOrSchedule | None = None,
) -> optax.GradientTransformationExtraArgs:
    """The optimizer of a resolved :class:`train.config.Config` (see :func:`resolve`), for
    ``steps_per_epoch`` batches per epoch: the registry entry's factory with the schedules,
    weight decay and layer-wise factor the config asks for.

    Args:
      config: the resolved config: its optimizer, schedule, learning rate, momentum, floor,
        cycle, weight decay, epochs, persistency, ``layerwise`` and ``on_nan`` (``skip``:
        a step whose updates are not finite is skipped, :func:`skip_nonfinite`).
      steps_per_epoch: batches per epoch.
      learning_rate: a learning rate to use as it is (a schedule, or an array of the range
        test) instead of ``config.learning_rate`` (``config.schedule`` then ``constant``).

    Example:
      >>> c = resolve(config_lib.Config(optimizer="sgd", schedule="step", epochs=4))
      >>> tx = build_from_config(c, steps_per_epoch=5)
      >>> float(learning_rate_of(tx.init({"w": jnp.zeros(2)})))
      0.05
    """
    spec = OPTIMIZERS[config.optimizer]
    total_steps = config.epochs * steps_per_epoch * config.persistency
    momentum = config.momentum
    if spec.cycles_momentum:
        momentum = build_momentum_schedule(config.schedule, momentum, total_steps=total_steps)
    # cyclic's floor is the schedule's lower bound; the Polyak floor stays the thesis's
    cyclic_base = config.min_learning_rate if config.schedule == "cyclic" else None
    lr = build_schedule(
        config.schedule,
        config.learning_rate if learning_rate is None else learning_rate,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        persistency=config.persistency,
        min_learning_rate=cyclic_base,
        cycle_epochs=config.cycle_epochs,
    )
    extra: dict[str, Any] = {}
    if spec.takes_floor:
        extra["min_learning_rate"] = None if cyclic_base is not None else config.min_learning_rate
    if spec.decoupled_weight_decay:
        extra["weight_decay"] = config.weight_decay
    if config.layerwise and spec.native_layerwise:
        extra["layerwise"] = True
    tx = spec.factory(lr, momentum, **extra)
    if config.weight_decay and not spec.decoupled_weight_decay:
        tx = optax.chain(optax.add_decayed_weights(config.weight_decay, kernel_mask), tx)
    if config.layerwise and not spec.native_layerwise:
        tx = po.layerwise(tx)
    tx = optax.with_extra_args_support(tx)
    return skip_nonfinite(tx) if config.on_nan == "skip" else tx


def learning_rate_of(opt_state: optax.OptState) -> jax.Array:
    """The learning rate of the last update (adaptive Nesterov: its eta), or NaN if none.

    Reads the last array field called ``learning_rate`` of the state (in the order of
    ``optax.tree.get_all_with_path``): the injected
    hyperparameter of ``optax.inject_hyperparams`` or adaptive Nesterov's eta. A state
    without one (any optax optimizer not built here) reports NaN, written as ``null``.

    Example:
      >>> tx = build_optimizer("adam", 0.01)
      >>> float(learning_rate_of(tx.init({"w": jnp.zeros(2)})))
      0.01
      >>> float(learning_rate_of(optax.adam(0.1).init({"w": jnp.zeros(2)})))
      nan
    """
    found = optax.tree.get_all_with_path(
        opt_state, "learning_rate", filtering=lambda _, value: isinstance(value, jax.Array)
    )
    if not found:
        return jnp.full((), jnp.nan, jnp.float32)
    return jnp.asarray(found[-1][1], jnp.float32)


def _spec(name: str) -> OptimizerSpec:
    _check_choice("optimizer", name, tuple(OPTIMIZERS))
    return OPTIMIZERS[name]


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_choice(argument: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{argument} must be one of {', '.join(choices)}; got {value!r}")


def _check_positive_int(argument: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{argument} must be a positive integer, got {value!r}")
