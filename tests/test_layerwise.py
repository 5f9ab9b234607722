"""Tests of the layer-wise log-norm scaling (equation 9) against float64 NumPy references."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import polyak_optax as po
from tests._fast import slow_without_jit

# Three pytree shapes: nested dicts, a list with a scalar leaf, a Flax-like module tree.
STRUCTURES = (
    {"a": (3,), "b": {"c": (2, 2), "d": ()}},
    [(5,), (1, 4), ()],
    {"Dense_0": {"kernel": (3, 2), "bias": (2,)}, "Dense_1": {"kernel": (2, 1), "bias": (1,)}},
)


def _random_tree(rng: np.random.Generator, structure, low: float = -6.0, high: float = 3.0):
    """A float64 NumPy pytree with leaf scales 10**U(low, high), one scale per leaf."""

    def leaf(shape):
        return rng.normal(size=shape) * 10.0 ** rng.uniform(low, high)

    return jax.tree.map(leaf, structure, is_leaf=lambda x: isinstance(x, tuple))


def _np_factor(leaves) -> float:
    """1 + log(1 + 1/||g||) of one layer in float64; 0 for a zero layer."""
    norm = np.sqrt(sum(np.sum(np.abs(np.asarray(x, np.float64)) ** 2) for x in leaves))
    return 0.0 if norm == 0 else 1.0 + np.log1p(1.0 / norm)


def _np_factors(tree, layers=None):
    """Per-leaf float64 factors, leaves grouped by ``layers(path)`` (each leaf alone if None)."""
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    keys = [i if layers is None else layers(p) for i, (p, _) in enumerate(with_paths)]
    groups = {k: [x for kk, (_, x) in zip(keys, with_paths, strict=True) if kk == k] for k in keys}
    return jax.tree_util.tree_unflatten(treedef, [_np_factor(groups[k]) for k in keys])


def _f32(tree):
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


def _top_key(path):
    return path[0]


@slow_without_jit
class ScaleByLayerwiseLogNormTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("per_leaf", None), ("by_top_key", _top_key))
    def test_matches_float64_reference(self, layers):
        rng = np.random.default_rng(0)
        opt = po.scale_by_layerwise_log_norm(layers)
        update = self.variant(opt.update)
        for structure in STRUCTURES:
            state = opt.init(_f32(jax.tree.map(np.zeros_like, _random_tree(rng, structure))))
            for _ in range(6):
                grads = _random_tree(rng, structure)
                expected = jax.tree.map(lambda g, f: g * f, grads, _np_factors(grads, layers))
                out, state = update(_f32(grads), state)
                chex.assert_trees_all_equal_dtypes(out, _f32(grads))
                chex.assert_trees_all_close(out, expected, rtol=2e-5, atol=0)

    @chex.variants(with_jit=True, without_jit=True)
    def test_layerwise_adagrad_is_equation_12(self):
        """layerwise(adagrad) on a quadratic against hand-written AdaGrad with t_l, 5 steps."""
        lr = 0.05
        rng = np.random.default_rng(1)
        structure = STRUCTURES[2]
        curvature = jax.tree.map(
            lambda _: 10.0 ** rng.uniform(-5, 2), structure, is_leaf=tuple.__instancecheck__
        )
        target = _random_tree(rng, structure, 0.0, 0.0)
        x_ref = _random_tree(rng, structure, 0.0, 0.0)
        for init_acc, eps in ((0.0, 0.0), (0.1, 1e-7)):
            opt = po.layerwise(optax.adagrad(lr, initial_accumulator_value=init_acc, eps=eps))
            grad_fn = jax.jit(
                jax.grad(
                    lambda p: sum(
                        0.5 * c * jnp.sum((x - m) ** 2)
                        for c, x, m in zip(
                            *map(jax.tree.leaves, (curvature, p, target)), strict=True
                        )
                    )
                )
            )
            update = self.variant(opt.update)
            params = _f32(x_ref)
            state = opt.init(params)
            x = x_ref
            acc = jax.tree.map(lambda v, a=init_acc: np.full_like(v, a), x_ref)
            for _ in range(5):
                g = jax.tree.map(lambda c, v, m: c * (v - m), curvature, x, target)
                t_l = _np_factors(g)
                acc = jax.tree.map(lambda a, gi: a + gi**2, acc, g)
                x = jax.tree.map(
                    lambda v, gi, a, f, eps=eps: v - lr * f * gi / np.sqrt(a + eps), x, g, acc, t_l
                )
                updates, state = update(grad_fn(params), state, params)
                params = optax.apply_updates(params, updates)
                chex.assert_trees_all_close(params, x, rtol=1e-5, atol=1e-6)


def test_chain_equals_layerwise_for_plain_sgd():
    rng = np.random.default_rng(2)
    chained = optax.chain(po.scale_by_layerwise_log_norm(), optax.sgd(0.1))
    wrapped = po.layerwise(optax.sgd(0.1))
    for structure in STRUCTURES:
        grads = _f32(_random_tree(rng, structure))
        a, _ = jax.jit(chained.update)(grads, chained.init(grads))
        b, _ = jax.jit(wrapped.update)(grads, wrapped.init(grads))
        chex.assert_trees_all_close(a, b, rtol=1e-6, atol=0)
        chex.assert_trees_all_close(
            a, jax.tree.map(lambda g, f: -0.1 * f * g, grads, _np_factors(grads)), rtol=2e-5
        )


def test_chain_before_nesterov_is_the_papers_rule_and_layerwise_scales_the_velocity():
    """chain: v = mu v + t_l g (Caffe NAG with t_l); layerwise: t_l times the whole step."""
    lr, mu = 0.1, 0.9
    rng = np.random.default_rng(3)
    structure = STRUCTURES[0]
    grads_seq = [_random_tree(rng, structure) for _ in range(3)]
    chained = optax.chain(po.scale_by_layerwise_log_norm(), optax.sgd(lr, mu, nesterov=True))
    wrapped = po.layerwise(optax.sgd(lr, mu, nesterov=True))
    s_c, s_w = chained.init(_f32(grads_seq[0])), wrapped.init(_f32(grads_seq[0]))
    v_c = v_w = jax.tree.map(np.zeros_like, grads_seq[0])
    for g in grads_seq:
        f = _np_factors(g)
        v_c = jax.tree.map(lambda v, gi, fi: mu * v + fi * gi, v_c, g, f)
        want_c = jax.tree.map(lambda v, gi, fi: -lr * (fi * gi + mu * v), v_c, g, f)
        v_w = jax.tree.map(lambda v, gi: mu * v + gi, v_w, g)
        want_w = jax.tree.map(lambda v, gi, fi: -lr * fi * (gi + mu * v), v_w, g, f)
        u_c, s_c = chained.update(_f32(g), s_c)
        u_w, s_w = wrapped.update(_f32(g), s_w)
        chex.assert_trees_all_close(u_c, want_c, rtol=1e-5, atol=0)
        chex.assert_trees_all_close(u_w, want_w, rtol=1e-5, atol=0)


def test_grouped_layers_share_the_joint_norm():
    rng = np.random.default_rng(4)
    grads = _f32(_random_tree(rng, STRUCTURES[2], -3.0, 1.0))
    factors = po.layerwise_log_norm_factors(grads, layers=po.layers_by_module)
    for module in ("Dense_0", "Dense_1"):
        joint = _np_factor(jax.tree.leaves(grads[module]))
        np.testing.assert_allclose(factors[module]["kernel"], joint, rtol=1e-6)
        np.testing.assert_allclose(factors[module]["bias"], joint, rtol=1e-6)
    # One group for everything: the global norm.
    single = po.layerwise_log_norm_factors(grads, layers=lambda path: "all")
    want = 1 + np.log1p(1 / float(optax.tree.norm(grads)))
    chex.assert_trees_all_close(single, jax.tree.map(lambda _: want, grads), rtol=1e-6)
    # Per-leaf default differs from the grouping.
    per_leaf = po.layerwise_log_norm_factors(grads)
    assert not np.isclose(per_leaf["Dense_0"]["kernel"], factors["Dense_0"]["kernel"])


def test_layers_by_module_groups_flax_linen_and_nnx_parameters():
    flax = pytest.importorskip("flax", reason="the Flax grouping is checked on real Flax trees")
    from flax import nnx

    model = flax.linen.Sequential([flax.linen.Dense(3), flax.linen.Dense(2)])
    variables = model.init(jax.random.key(0), jnp.ones((1, 4)))
    for tree, prefix in ((variables, "['params']"), (variables["params"], "")):
        keys = jax.tree_util.tree_map_with_path(lambda p, _: po.layers_by_module(p), tree)
        assert sorted(jax.tree.leaves(keys)) == [f"{prefix}['layers_{i}']" for i in (0, 0, 1, 1)]
    state = nnx.state(nnx.Linear(4, 3, rngs=nnx.Rngs(0)), nnx.Param)
    keys = {po.layers_by_module(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]}
    assert keys == {""}, keys
    # Through the transform: kernel and bias of one Dense get one factor.
    grads = jax.tree.map(lambda x: jnp.full_like(x, 0.01), variables["params"])
    out, _ = po.scale_by_layerwise_log_norm(po.layers_by_module).update(grads, optax.EmptyState())
    for module in grads:
        joint = _np_factor(jax.tree.leaves(grads[module]))
        chex.assert_trees_all_close(
            out[module], jax.tree.map(lambda g, f=joint: g * f, grads[module]), rtol=1e-6
        )


def test_zero_gradient_layers_get_factor_one():
    grads = {"dead": jnp.zeros((3,)), "empty": jnp.zeros((0,)), "live": jnp.array([1e-18, -2e-18])}
    out, _ = po.scale_by_layerwise_log_norm().update(grads, optax.EmptyState())
    chex.assert_tree_all_finite(out)
    np.testing.assert_array_equal(out["dead"], 0.0)
    np.testing.assert_allclose(
        out["live"], np.array([1e-18, -2e-18]) * _np_factor([[1e-18, -2e-18]]), rtol=1e-5
    )
    factors = po.layerwise_log_norm_factors(grads)
    assert float(factors["dead"]) == 1.0 and float(factors["empty"]) == 1.0
    # Under layerwise, a layer with zero raw gradient takes the inner update unchanged:
    # momentum and Adam's first moment still move it (issue 10: Adam(0.1) gives -0.067).
    params = {"dead": jnp.ones(3), "live": jnp.ones(2)}
    first = {"dead": jnp.ones(3), "live": jnp.ones(2)}
    second = {"dead": jnp.zeros(3), "live": jnp.ones(2)}
    for inner in (optax.sgd(0.1, momentum=0.9, nesterov=True), optax.adam(0.1)):
        opt = po.layerwise(inner)
        state, plain_state = opt.init(params), inner.init(params)
        _, state = opt.update(first, state, params)
        _, plain_state = inner.update(first, plain_state, params)
        updates, _ = opt.update(second, state, params)
        plain, _ = inner.update(second, plain_state, params)
        chex.assert_tree_all_finite(updates)
        np.testing.assert_array_equal(updates["dead"], plain["dead"])
        assert np.all(np.abs(updates["dead"]) > 0.05)
        np.testing.assert_allclose(updates["live"], plain["live"] * (1 + np.log1p(2**-0.5)))
    # The zero leaf of a non-zero group is scaled by the group's finite factor.
    grouped, _ = po.scale_by_layerwise_log_norm(lambda p: 0).update(grads, optax.EmptyState())
    chex.assert_tree_all_finite(grouped)


def test_non_finite_gradients_stay_in_their_layer():
    grads = {
        "inf": jnp.array([jnp.inf, 1.0]),
        "nan": jnp.array([jnp.nan, 1.0]),
        "ok": jnp.array([3.0, 4.0]),
    }
    opt = po.layerwise(optax.sgd(0.1))
    out, _ = jax.jit(opt.update)(grads, opt.init(grads))
    assert out["inf"][0] == -jnp.inf
    np.testing.assert_allclose(out["inf"][1], -0.1, rtol=1e-6)  # factor 1 for an infinite norm
    assert np.all(np.isnan(out["nan"]))
    np.testing.assert_allclose(
        out["ok"], -0.1 * np.array([3.0, 4.0]) * (1 + np.log1p(0.2)), rtol=1e-6
    )


def test_bfloat16_updates_stay_bfloat16_with_float32_norms():
    rng = np.random.default_rng(5)
    grads64 = _random_tree(rng, STRUCTURES[0])
    grads = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16), grads64)
    grads_rounded = jax.tree.map(lambda x: np.asarray(x, np.float64), grads)
    factors = po.layerwise_log_norm_factors(grads)
    chex.assert_trees_all_equal_dtypes(factors, jax.tree.map(lambda _: jnp.float32(0), grads))
    chex.assert_trees_all_close(factors, _np_factors(grads_rounded), rtol=1e-5)
    out, _ = jax.jit(po.scale_by_layerwise_log_norm().update)(grads, optax.EmptyState())
    chex.assert_trees_all_equal_dtypes(out, grads)
    want = jax.tree.map(lambda g, f: g * f, grads_rounded, _np_factors(grads_rounded))
    chex.assert_trees_all_close(jax.tree.map(lambda x: x.astype(jnp.float32), out), want, rtol=1e-2)
    params = jax.tree.map(jnp.ones_like, grads)
    opt = po.layerwise(optax.adam(1e-3))
    updates, state = opt.update(grads, opt.init(params), params)
    chex.assert_trees_all_equal_dtypes(updates, params)
    chex.assert_trees_all_equal_dtypes(state, opt.init(params))


def test_extra_args_reach_the_inner_transform():
    """``value`` must reach optax.polyak_sgd; a plain transform gets the extra args dropped."""
    params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array([0.5])}
    loss_fn = lambda p: jnp.sum(p["w"] ** 2) + 3 * jnp.sum(p["b"] ** 2)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    polyak = optax.polyak_sgd(max_learning_rate=10.0)
    opt = po.layerwise(polyak)
    updates, _ = jax.jit(opt.update)(grads, opt.init(params), params, value=loss)
    plain, _ = polyak.update(grads, polyak.init(params), params, value=loss)
    step = float(loss) / float(optax.tree.norm(grads, squared=True))
    chex.assert_trees_all_close(plain, jax.tree.map(lambda g: -step * g, grads), rtol=1e-6)
    chex.assert_trees_all_close(
        updates, jax.tree.map(lambda u, f: u * f, plain, _np_factors(grads)), rtol=1e-6
    )
    # Another loss value changes the step: it is really passed through.
    other, _ = opt.update(grads, opt.init(params), params, value=2 * loss)
    chex.assert_trees_all_close(other, jax.tree.map(lambda u: 2 * u, updates), rtol=1e-6)
    # A transform without extra-args support, and scale_by itself, accept and drop them.
    plain_tx = optax.GradientTransformation(
        lambda p: optax.EmptyState(), lambda u, s, p=None: (u, s)
    )
    out, _ = po.layerwise(plain_tx).update(grads, optax.EmptyState(), params, value=loss)
    chex.assert_trees_all_close(
        out, jax.tree.map(lambda g, f: g * f, grads, _np_factors(grads)), rtol=1e-6
    )
    po.scale_by_layerwise_log_norm().update(grads, optax.EmptyState(), params, value=loss)


def test_state_is_the_inner_state():
    opt = po.layerwise(optax.inject_hyperparams(optax.sgd)(learning_rate=0.25))
    params = {"w": jnp.ones(2)}
    state = opt.init(params)
    _, state = opt.update(params, state, params)
    assert float(optax.tree.get(state, "learning_rate")) == 0.25


@pytest.mark.parametrize("name", ["scale_by", "layerwise_nesterov"])
def test_one_trace_and_one_reduction_per_leaf(name):
    chex.clear_trace_counter()  # the two parameters share the traced function's name
    if name == "scale_by":
        opt = optax.chain(po.scale_by_layerwise_log_norm(), optax.sgd(0.1, 0.9, nesterov=True))
    else:
        opt = po.layerwise(optax.sgd(0.1, momentum=0.9, nesterov=True))
    params = _f32(_random_tree(np.random.default_rng(6), STRUCTURES[2]))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(p, s):
        u, s = opt.update(p, s, p)
        return optax.apply_updates(p, u), s

    state = opt.init(params)
    for _ in range(3):
        params, state = step(params, state)
    chex.assert_tree_all_finite(params)
    jaxpr = jax.make_jaxpr(
        lambda g: po.scale_by_layerwise_log_norm().update(g, optax.EmptyState())
    )(params)
    reductions = [e for e in jaxpr.jaxpr.eqns if e.primitive.name.startswith("reduce")]
    sums = [e for e in reductions if e.primitive.name == "reduce_sum"]
    assert len(sums) == len(jax.tree.leaves(params))  # one per leaf
    # and one more: the per-layer factors, computed once as one vector, materialized
    # by one reduction of scalars (_layers.computed_once) that every leaf reads.
    others = [e for e in reductions if e.primitive.name != "reduce_sum"]
    assert len(others) == 1 and {v.aval.shape for v in others[0].invars} == {(2,), ()}
    assert not any(e.primitive.name in ("while", "scan", "cond") for e in jaxpr.jaxpr.eqns)


def test_bad_arguments_raise_value_error_naming_them():
    with pytest.raises(ValueError, match="layers"):
        po.scale_by_layerwise_log_norm(layers=3)
    with pytest.raises(ValueError, match="layers"):
        po.layerwise(optax.sgd(0.1), layers="kernel")
    with pytest.raises(ValueError, match="inner"):
        po.layerwise(0.1)
    with pytest.raises(ValueError, match="layers"):
        po.scale_by_layerwise_log_norm(layers=lambda path: [0]).init({"w": jnp.ones(2)})
    with pytest.raises(ValueError, match="layers"):
        po.layerwise_log_norm_factors({"w": jnp.ones(2)}, layers=lambda path: {})
    drops_leaf = optax.GradientTransformation(
        lambda p: optax.EmptyState(), lambda u, s, p=None: ({"w": u["w"]}, s)
    )
    with pytest.raises(ValueError, match="inner"):
        po.layerwise(drops_leaf).update({"w": jnp.ones(2), "b": jnp.ones(1)}, optax.EmptyState())
