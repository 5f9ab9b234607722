"""models.conv: same values and gradients as lax, and canonical convolutions inside loops."""

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import models
from models.conv import conv_general_dilated
from tests._fast import slow_after, slow_unless

DN = ("NHWC", "HWIO", "NHWC")
CASES = (
    [
        (size, kernel, stride, padding)
        for size, kernel, stride, padding in itertools.product(
            (7,), (1, 2, 5), (1, 2, 3), ("SAME", "VALID", ((1, 2), (0, 1)), ((2, 0), (1, 1)))
        )
        if not (kernel == 1 and stride == 3)
    ]
    + [  # stride 1, output at most half the input: the input gradient by one product
        (12, 5, 1, "VALID"),
        (7, 5, 1, ((1, 0), (0, 1))),
    ]
    + [  # images smaller than the kernel: the im2col path
        (2, 3, 1, "SAME"),
        (1, 3, 1, "SAME"),
        (2, 3, 2, ((1, 1), (1, 1))),
        (3, 5, 1, ((2, 2), (2, 2))),
    ]
)


def _numpy_conv_and_vjp(x, w, stride, pads, cotangent):
    """Float64 reference: the output, and the gradients of <output, cotangent>."""
    x, w, ct = (np.asarray(a, np.float64) for a in (x, w, cotangent))
    (top, bottom), (left, right) = pads
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw = w.shape[:2]
    out_h, out_w = (xp.shape[1] - kh) // stride + 1, (xp.shape[2] - kw) // stride + 1
    y = np.zeros((x.shape[0], out_h, out_w, w.shape[3]))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(out_h):
        for j in range(out_w):
            rows, cols = slice(i * stride, i * stride + kh), slice(j * stride, j * stride + kw)
            y[:, i, j] = np.einsum("nhwc,hwco->no", xp[:, rows, cols], w)
            dw += np.einsum("nhwc,no->hwco", xp[:, rows, cols], ct[:, i, j])
            dxp[:, rows, cols] += np.einsum("hwco,no->nhwc", w, ct[:, i, j])
    dx = dxp[:, top : top + x.shape[1], left : left + x.shape[2]]
    return y, dx, dw


# `make test-fast`: a strided general case, the input gradient by one product, im2col.
FAST_CASES = [(7, 5, 2, "SAME"), (12, 5, 1, "VALID"), (2, 3, 1, "SAME")]


@pytest.mark.parametrize("channels", [3, 1])  # 1: the sum over taps (_single_channel_conv)
@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding"), slow_unless(CASES, FAST_CASES, several=True)
)
def test_values_and_gradients_equal_a_float64_reference(size, kernel, stride, padding, channels):
    kx, kw, kc = jax.random.split(jax.random.key(size * 100 + kernel * 10 + stride), 3)
    x = jax.random.normal(kx, (2, size, size + 1, channels))
    w = jax.random.normal(kw, (kernel, kernel, channels, 4))
    if isinstance(padding, str):
        pads = tuple(lax.padtype_to_pads(x.shape[1:3], w.shape[:2], (stride, stride), padding))
    else:
        pads = padding

    def ours(x, w):
        return conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=DN)

    got, vjp = jax.vjp(ours, x, w)
    cotangent = jax.random.normal(kc, got.shape)
    want, dx, dw = _numpy_conv_and_vjp(x, w, stride, pads, cotangent)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    got_dx, got_dw = vjp(cotangent)
    np.testing.assert_allclose(got_dx, dx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_dw, dw, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dilation", [{}, {"rhs_dilation": (2, 2)}])
def test_other_layouts_and_dilations_fall_back_to_lax(dilation):
    x = jax.random.normal(jax.random.key(0), (2, 3, 7, 7))  # NCHW, lax's default
    w = jax.random.normal(jax.random.key(1), (4, 3, 3, 3))  # OIHW

    def loss(conv, w):
        return jnp.sum(conv(x, w, (1, 1), "SAME", **dilation) ** 2)

    want = jax.grad(lambda w: loss(lax.conv_general_dilated, w))(w)
    got = jax.grad(lambda w: loss(conv_general_dilated, w))(w)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_training_step_in_a_loop_compiles_to_canonical_convolutions():
    """The property the module exists for: no naive (non-canonical) convolution in a loop."""
    model = models.create("lenet5", 10)
    x = jnp.zeros((4, 28, 28, 1))
    params = model.init(jax.random.key(0), x)["params"]

    def loss(p):
        return jnp.sum(model.apply({"params": p}, x) ** 2)

    def many(p):
        return lax.fori_loop(
            0, 2, lambda _, p: jax.tree.map(lambda a, g: a - g, p, jax.grad(loss)(p)), p
        )

    hlo = jax.jit(many).lower(params).compile().as_text()
    labels = re.findall(r"convolution\(.*?dim_labels=([a-z0-9_>-]+)", hlo)
    # conv2 forward, both kernel gradients (conv1's one-channel forward is a sum of taps,
    # conv2's input gradient per-tap products)
    assert len(labels) >= 3, hlo[:2000]
    if jax.default_backend() == "cpu":
        assert set(labels) == {"b01f_01io->b01f"}, labels


def test_images_smaller_than_the_kernel_compile_to_no_naive_convolution():
    """AlexNet's last 3x3 convolution sees 2x2 maps: XLA:CPU would swap image and kernel
    (``01fb_o01i->f01b``, a naive loop); the im2col path leaves no convolution at all."""
    x = jnp.ones((8, 2, 2, 16))
    w = jnp.ones((3, 3, 16, 4))

    def loss(x, w):
        return jnp.sum(conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN) ** 2)

    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile().as_text()
    if jax.default_backend() == "cpu":
        assert "convolution(" not in hlo


def test_input_gradient_of_a_valid_convolution_on_a_small_map_is_products():
    """LeNet-5's conv2 (12x12 in, 8x8 out): its input gradient as a convolution would spend
    most products on padding; it is computed as one matrix product and a sum instead."""
    x = jnp.ones((4, 12, 12, 20))
    w = jnp.ones((5, 5, 20, 50))

    def loss(x):
        return jnp.sum(conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=DN) ** 2)

    hlo = jax.jit(jax.grad(loss)).lower(x).compile().as_text()
    if jax.default_backend() == "cpu":
        assert len(re.findall(r"convolution\(", hlo)) == 1, hlo[:3000]  # the forward only


def test_input_gradient_sums_the_taps_one_kernel_row_or_column_at_a_time():
    """The 25 padded taps of a 5x5 kernel are summed in two passes (models.conv.
    _input_grad_by_one_product): no fused loop pads more than 5 of them. Summed in one
    loop (25 bounds-checked reads a value), LeNet-5's step took 2.85 ms for it, not 0.4."""
    x = jnp.ones((4, 12, 12, 20))
    w = jnp.ones((5, 5, 20, 50))

    def loss(x):
        return jnp.sum(conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=DN) ** 2)

    hlo = jax.jit(jax.grad(loss)).lower(x).compile().as_text()
    if jax.default_backend() != "cpu":
        return
    computations = re.split(r"\n(?=\S)", hlo)
    pads = [len(re.findall(r" pad\(", c)) for c in computations]
    assert sum(pads) >= 10, "both passes pad their taps"
    assert max(pads) <= 5, pads


@pytest.mark.parametrize("first", [1.0, float("nan")])
def test_kernel_gradient_of_a_large_input_reads_it_from_memory_with_the_same_values(first):
    """From 2**19 elements the input passes a runtime conditional (models.conv._materialized)
    before the kernel gradient's transpose; both branches give the input's values (the
    condition is the kernel's first element being finite)."""
    x = jax.random.normal(jax.random.key(0), (8, 64, 64, 16))
    w = jax.random.normal(jax.random.key(1), (3, 3, 16, 2)).at[0, 0, 0, 0].set(first)
    fwd = lambda x, w: conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=DN)
    ref = lambda x, w: lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=DN)
    cotangent = jax.random.normal(jax.random.key(2), fwd(x, w).shape)
    dw = jax.jit(lambda x, w: jax.vjp(fwd, x, w)[1](cotangent)[1])
    if jax.default_backend() == "cpu":
        assert "cond" in str(jax.make_jaxpr(dw)(x, w))
    got, want = dw(x, w), jax.vjp(ref, x, w)[1](cotangent)[1]
    finite = np.isfinite(want)
    np.testing.assert_array_equal(np.isfinite(got), finite)
    np.testing.assert_allclose(
        np.asarray(got)[finite], np.asarray(want)[finite], rtol=2e-3, atol=2e-3
    )


def test_one_channel_forward_is_a_sum_of_taps_read_from_memory():
    """LeNet-5's first layer (one input channel): no convolution in the forward pass, and
    its output passes the runtime conditional that keeps it out of the next fusion."""
    x = jnp.ones((4, 28, 28, 1))
    w = jnp.ones((5, 5, 1, 20))
    fwd = lambda x, w: conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=DN)
    if jax.default_backend() != "cpu":
        pytest.skip("the CPU backend's path")
    jaxpr = str(jax.make_jaxpr(fwd)(x, w))
    assert "conv_general_dilated" not in jaxpr and "cond" in jaxpr, jaxpr
    np.testing.assert_array_equal(fwd(x, w), jnp.full((4, 24, 24, 20), 25.0))


@pytest.mark.parametrize(
    ("size", "kernel", "padding", "window"),
    slow_after([(28, 5, 0, 2), (12, 3, 1, 2), (10, 3, 2, 3)], several=True),
    ids=["lenet5-conv1", "padded", "window-3"],
)  # `make test-fast`: LeNet-5's conv1, with and without ties
@pytest.mark.parametrize("ties", [False, True])
def test_fused_one_channel_conv_and_pool_equal_the_two_layers(size, kernel, padding, window, ties):
    """single_channel_conv_max_pool: the values of conv_general_dilated then max_pool bit
    for bit, the same gradients (each window's to its first largest element in row-major
    order, also among ties), and a float64 reference for both."""
    from models.conv import fused_single_channel_conv_max_pool_applies as applies
    from models.conv import single_channel_conv_max_pool
    from models.layers import max_pool

    kx, kw, kc = jax.random.split(jax.random.key(size), 3)
    x = jax.random.normal(kx, (3, size, size, 1))
    w = jax.random.normal(kw, (kernel, kernel, 1, 6))
    if ties:  # small integers: many windows hold their maximum more than once
        x, w = jnp.round(2 * x), jnp.round(w)
    pads = ((padding, padding), (padding, padding))
    assert applies(x, w, window, window, pads) == (jax.default_backend() == "cpu")

    def layers(x, w):
        return max_pool(
            conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=DN), window, window
        )

    def fused(x, w):
        return single_channel_conv_max_pool(x, w, pads, window)

    want, want_vjp = jax.vjp(jax.jit(layers), x, w)
    got, got_vjp = jax.vjp(jax.jit(fused), x, w)
    np.testing.assert_array_equal(got, want)
    cotangent = jax.random.normal(kc, got.shape)
    for a, b in zip(got_vjp(cotangent), want_vjp(cotangent), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-5)
    # float64: the pool's choice from the float64 convolution, its gradient through it
    out = size + 2 * padding - kernel + 1
    y, _, _ = _numpy_conv_and_vjp(x, w, 1, pads, np.zeros((3, out, out, 6)))
    n, oh, ow, c = y.shape
    tiles = y.reshape(n, oh // window, window, ow // window, window, c).transpose(0, 1, 3, 5, 2, 4)
    tiles = tiles.reshape(*tiles.shape[:4], window * window)
    np.testing.assert_allclose(got, tiles.max(-1), rtol=1e-5, atol=1e-5)
    if not ties:  # distinct values: the float64 choice is float32's
        first = tiles.argmax(-1)
        ct_y = np.zeros(tiles.shape)
        np.put_along_axis(ct_y, first[..., None], np.asarray(cotangent, np.float64)[..., None], -1)
        ct_y = ct_y.reshape(n, oh // window, ow // window, c, window, window)
        ct_y = ct_y.transpose(0, 1, 4, 2, 5, 3).reshape(n, oh, ow, c)
        _, dx, dw = _numpy_conv_and_vjp(x, w, 1, pads, ct_y)
        got_dx, got_dw = got_vjp(cotangent)
        np.testing.assert_allclose(got_dx, dx, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got_dw, dw, rtol=1e-4, atol=1e-4)


def test_lenet5_runs_its_first_layer_and_pool_as_one_op_on_the_cpu():
    """LeNet-5's conv1 and pool 1 take the fused op: no convolution in the forward pass."""
    if jax.default_backend() != "cpu":
        pytest.skip("the CPU backend's path")
    model = models.create("lenet5", 10)
    x = jnp.ones((2, 28, 28, 1))
    params = model.init(jax.random.key(0), x)
    jaxpr = str(jax.make_jaxpr(lambda p: model.apply(p, x))(params))
    assert "single_channel_conv_max_pool" in jaxpr, jaxpr
