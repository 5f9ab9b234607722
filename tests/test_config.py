"""Tests of the one config (train.config), the parser made from it (train.cli) and the
optimizer registry (train.optimizers): each flag defined once, checked once, every
registered optimizer trainable, weight decay with Caffe/PyTorch (and AdamW) semantics."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import models
import polyak_optax as po
from tests._fast import slow_after
from train import cli, config, data, optimizers
from train.config import Config


def test_every_field_is_a_flag_and_round_trips_through_the_parser():
    parser_dests = {a.dest for a in cli.build_parser()._actions if a.dest != "help"}
    assert parser_dests == {f.name for f in dataclasses.fields(Config)}
    parsed, explicit = cli.parse_args([])
    assert parsed == Config() and explicit == {}
    parsed, explicit = cli.parse_args(
        ["--batch-size", "64", "-K", "3", "--synthetic-shape", "8,8,1", "--no-progress"]
    )
    assert parsed == Config(batch_size=64, persistency=3, synthetic_shape=(8, 8, 1),
                            progress=False)  # fmt: skip
    assert explicit == {"batch_size": 64, "persistency": 3, "synthetic_shape": (8, 8, 1),
                        "progress": False}  # fmt: skip


def test_json_form_round_trips():
    c = Config(optimizer="adam", learning_rate=0.01, synthetic_size=(10, 5), workdir="w")
    assert Config.from_json({**c.to_json(), "derived": {"x": 1}}) == c


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"batch_size": 0}, "--batch-size: must be an integer >= 1, got 0"),
        ({"momentum": 1.0}, "--momentum: must be a number in [0, 1), got 1.0"),
        ({"learning_rate": -1.0}, "--learning-rate: must be a number in (0, inf)"),
        ({"optimizer": "nope"}, "--optimizer: invalid choice 'nope'"),
        ({"schedule": "nope"}, "--schedule: invalid choice 'nope'"),
        ({"on_nan": "ignore"}, "--on-nan: invalid choice 'ignore' (choose from stop, skip)"),
        ({"weight_decay": float("nan")}, "--weight-decay"),
        ({"synthetic_shape": (8, 8)}, "--synthetic-shape"),
        ({"resume": True}, "--resume: needs --workdir"),
        ({"resume": True, "overwrite": True, "workdir": "w"}, "exclude each other"),
        ({"find_lr_min": 1.0, "find_lr_max": 0.5}, "--find-lr-min: must be below"),
    ],
)
def test_bad_values_raise_value_errors_naming_the_flag(changes, needle):
    with pytest.raises(ValueError) as error:
        Config(**changes)
    assert needle in str(error.value)


def test_bad_command_line_is_a_usage_error_naming_the_flag():
    for argv, needle in ((["--epochs", "two"], "--epochs"), (["--epochs", "0"], "--epochs")):
        with pytest.raises(cli.UsageError, match=needle):
            cli.parse_args(argv)


def test_resume_keeps_the_saved_numbers_and_the_target_epochs():
    saved = Config(epochs=4, learning_rate=0.05, workdir="w")
    merged = config.merge_for_resume(saved, {"resume": True, "workdir": "w", "data_dir": "d"})
    assert (merged.epochs, merged.learning_rate, merged.data_dir) == (4, 0.05, "d")
    assert merged.resume
    assert config.merge_for_resume(saved, {"epochs": 9}).epochs == 9
    assert config.merge_for_resume(saved, {"learning_rate": 0.05}) == saved  # equal: fine
    with pytest.raises(ValueError, match=r"--learning-rate 0\.1 differs"):
        config.merge_for_resume(saved, {"learning_rate": 0.1})
    may_change = {f.name for f in config.fields() if f.metadata["resume"]}
    assert {"epochs", "data_dir", "workdir", "on_nan", "progress"} <= may_change
    assert not {"learning_rate", "batch_size", "seed", "optimizer", "model"} & may_change


def test_help_shows_each_optimizers_defaults_and_ends_with_three_examples():
    text = cli.build_parser().format_help()
    for name, spec in optimizers.OPTIMIZERS.items():
        assert f"{name} " in text and f"lr {spec.learning_rate:<7g}" in text
    for registry in (models.MODELS, data.DATASETS):
        for name, spec in registry.items():
            assert f"  {name:<20} {spec.about}" in text
    tail = text.strip().split("examples:")[-1].strip().splitlines()
    assert sum(line.lstrip().startswith("python -m train") for line in tail) == 3


def test_resolve_fills_each_default_once():
    assert optimizers.resolve(Config(optimizer="adaptive_nesterov")).min_learning_rate == 1e-3
    assert optimizers.resolve(Config(optimizer="sgd", schedule="onecycle")).momentum == 0.95
    assert optimizers.resolve(Config(optimizer="sgd", schedule="cyclic")).min_learning_rate == (
        pytest.approx(0.005)
    )
    assert optimizers.resolve(Config(optimizer="prodigy")).momentum is None
    with pytest.raises(ValueError, match="--momentum: adagrad has no momentum"):
        optimizers.resolve(Config(optimizer="adagrad", momentum=0.5))


def _quadratic_steps(tx: optax.GradientTransformation, steps: int = 30) -> jax.Array:
    params = {"Dense_0": {"kernel": jnp.full((3, 2), 2.0), "bias": jnp.ones(2)}}
    state = tx.init(params)

    def loss_fn(p):
        return sum(jnp.sum(x**2) for x in jax.tree.leaves(p)) + 0.1

    @jax.jit  # one compilation, not one dispatch per operation and step
    def step(params, state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = tx.update(grads, state, params, value=loss)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    return loss_fn(params), state


@pytest.mark.parametrize("name", sorted(optimizers.OPTIMIZERS))
@pytest.mark.parametrize("schedule", slow_after(["constant", "onecycle"]))  # fast: constant
def test_every_registered_optimizer_decreases_a_quadratic(name, schedule):
    tx = optimizers.build_optimizer(name, schedule=schedule, steps_per_epoch=30)
    loss, state = _quadratic_steps(tx)
    assert float(loss) < 26.1  # the start: 6 * 4 + 2 + 0.1 (defaults differ in speed)
    lr = float(optimizers.learning_rate_of(state))
    assert np.isnan(lr) or lr >= 0


def test_l2_weight_decay_reaches_kernels_only_before_momentum():
    """sgd + weight decay == sgd on the gradient plus wd * kernel (biases untouched)."""
    params = {"Conv_0": {"kernel": jnp.full((2, 2), 3.0), "bias": jnp.full(2, 5.0)}}
    grads = {"Conv_0": {"kernel": jnp.full((2, 2), 0.5), "bias": jnp.full(2, 0.25)}}
    tx = optimizers.build_optimizer("nesterov", 0.1, 0.9, weight_decay=0.01)
    expected_grads = {"Conv_0": {"kernel": grads["Conv_0"]["kernel"] + 0.01 * 3.0,
                                 "bias": grads["Conv_0"]["bias"]}}  # fmt: skip
    reference = optax.sgd(0.1, momentum=0.9, nesterov=True)
    state, ref_state = tx.init(params), reference.init(params)
    for _ in range(3):
        updates, state = tx.update(grads, state, params)
        expected, ref_state = reference.update(expected_grads, ref_state, params)
        chex.assert_trees_all_close(updates, expected, rtol=1e-6)


def test_adam_weight_decay_is_decoupled():
    params = {"Dense_0": {"kernel": jnp.full((2,), 3.0), "bias": jnp.full((2,), 5.0)}}
    grads = jax.tree.map(jnp.ones_like, params)
    tx = optimizers.build_optimizer("adam", 1e-2, weight_decay=0.1)
    reference = optax.adamw(1e-2, weight_decay=0.1, mask=optimizers.kernel_mask)
    updates, _ = tx.update(grads, tx.init(params), params)
    expected, _ = reference.update(grads, reference.init(params), params)
    # injected float32 hyperparameters against Python floats: rounding only
    chex.assert_trees_all_close(updates, expected, rtol=1e-4)
    # L2 in the gradient would be rescaled by Adam's normalization; decoupled is not.
    assert float(updates["Dense_0"]["kernel"][0]) != float(updates["Dense_0"]["bias"][0])


def test_skip_nonfinite_keeps_every_count_in_step():
    tx = optimizers.skip_nonfinite(
        optimizers.build_optimizer("sgd", 0.1, schedule="onecycle", steps_per_epoch=10)
    )
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    _, state = tx.update({"w": jnp.ones(2)}, state, params)
    _, skipped = tx.update({"w": jnp.array([1.0, jnp.inf])}, state, params)
    chex.assert_trees_all_equal(skipped, state)


def _counts(opt_state) -> list[int]:
    leaves = jax.tree_util.tree_flatten_with_path(opt_state)[0]
    return [int(x) for path, x in leaves if getattr(path[-1], "name", None) == "count"]


@pytest.mark.parametrize("on_nan", ["stop", "skip"])
def test_a_nan_step_leaves_every_schedule_of_the_app_on_one_count(on_nan):
    """The CLI's adaptive Nesterov under one-cycle (scheduled ceiling AND momentum):
    after a NaN batch in the middle, all counts agree (the optimizer's own skip, or
    --on-nan skip around it)."""
    c = optimizers.resolve(Config(optimizer="adaptive_nesterov", schedule="onecycle",
                                  epochs=1, on_nan=on_nan))  # fmt: skip
    tx = optimizers.build_from_config(c, steps_per_epoch=20)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    for k in range(6):
        g = {"w": jnp.full(3, jnp.nan if k == 3 else 0.5)}
        updates, state = tx.update(g, state, params, value=jnp.float32(1.0))
        params = optax.apply_updates(params, updates)
    counts = _counts(state)
    assert counts and len(set(counts)) == 1, counts
    assert counts[0] == 5  # the NaN step advanced none
    chex.assert_tree_all_finite(params)


def test_the_apps_adaptive_nesterov_keeps_no_grad_buffer():
    tx = optimizers.build_optimizer("adaptive_nesterov", schedule="onecycle", steps_per_epoch=5)
    params = {"w": jnp.ones((100,))}
    state_size = sum(x.size for x in jax.tree.leaves(tx.init(params)))
    assert state_size <= 100 + 8  # the velocity and a few scalars


def test_layerwise_adaptive_nesterov_is_the_transforms_own_layerwise_option():
    """--layerwise with adaptive_nesterov: factors where the gradient enters the velocity
    (po.adaptive_nesterov(layerwise=True)), not po.layerwise around the whole output."""
    tx = optimizers.build_optimizer("adaptive_nesterov", 0.1, 0.9, layerwise=True)
    reference = po.adaptive_nesterov(0.9, store_grad=False, layerwise=True)
    wrapped = po.layerwise(po.adaptive_nesterov(0.9, store_grad=False))
    params = {"a": jnp.ones(3), "b": jnp.full(2, 2.0)}
    s, r, w = tx.init(params), reference.init(params), wrapped.init(params)
    for k in range(3):
        g = {"a": jnp.full(3, 0.1 * (k + 1)), "b": jnp.full(2, 1e-3)}
        u, s = tx.update(g, s, params, value=jnp.float32(2.0))
        ur, r = reference.update(g, r, params, value=jnp.float32(2.0))
        uw, w = wrapped.update(g, w, params, value=jnp.float32(2.0))
    chex.assert_trees_all_close(u, ur, rtol=1e-6)
    with pytest.raises(AssertionError):
        chex.assert_trees_all_close(u, uw, rtol=1e-6)
