"""Tests of models/: parameter counts, output shapes, batch norm, pooling, validation."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models.layers import avg_pool, ceil_padding, max_pool
from tests._fast import slow, slow_after

#: The models with a ``batch_stats`` collection.
BATCH_NORM = {"vgg16", "resnet34", "tiny"}


def _conv(k: int, cin: int, cout: int, bias: bool = True) -> int:
    return k * k * cin * cout + (cout if bias else 0)


def _dense(nin: int, nout: int) -> int:
    return nin * nout + nout


def _bn(c: int) -> int:
    return 2 * c  # scale and offset; running statistics are not parameters


def _expected_count(name: str, h: int, c: int, k: int) -> int:
    """Parameter counts derived layer by layer from the architectures' definitions."""
    if name == "lenet5":
        s = h - 4  # conv 5x5 valid
        s = -(-s // 2)  # ceil-mode pool
        s = -(-(s - 4) // 2)
        return _conv(5, c, 20) + _conv(5, 20, 50) + _dense(s * s * 50, 500) + _dense(500, k)
    if name == "cifar_quick":
        s = h
        for _ in range(3):
            s = -(-max(s - 3, 0) // 2) + 1  # 3x3/2 ceil-mode pools
        convs = _conv(5, c, 32) + _conv(5, 32, 32) + _conv(5, 32, 64)
        return convs + _dense(s * s * 64, 64) + _dense(64, k)
    if name == "alexnet":
        chans = [c, 64, 192, 384, 256, 256]
        convs = sum(
            _conv(kk, a, b) for kk, a, b in zip([11, 5, 3, 3, 3], chans, chans[1:], strict=False)
        )
        s = h
        for _ in range(5):
            s = -(-s // 2)
        return convs + _dense(s * s * 256, 256) + _dense(256, k)
    if name == "vgg16":
        chans = [c, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
        convs = sum(_conv(3, a, b) + _bn(b) for a, b in itertools.pairwise(chans))
        s = h
        for _ in range(5):
            s = -(-s // 2)
        return convs + _dense(s * s * 512, k)
    if name == "resnet34":
        total = _conv(3, c, 64, bias=False) + _bn(64)
        cin = 64
        for stage, blocks in enumerate([3, 4, 6, 3]):
            cout = 64 * 2**stage
            for b in range(blocks):
                total += _conv(3, cin, cout, False) + _bn(cout) + _conv(3, cout, cout, False)
                total += _bn(cout)
                if b == 0 and stage > 0:
                    total += _conv(1, cin, cout, False) + _bn(cout)
                cin = cout
        return total + _dense(512, k)
    raise AssertionError(name)


def _abstract_init(name: str, shape: tuple[int, ...], num_classes: int = 10):
    model = models.create(name, num_classes)
    init = functools.partial(model.init_with_output, train=False)
    return jax.eval_shape(init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))


def test_model_names_are_the_documented_ones():
    assert models.MODEL_NAMES == ("lenet5", "cifar_quick", "alexnet", "vgg16", "resnet34")


@pytest.mark.parametrize("name", models.MODEL_NAMES)
@pytest.mark.parametrize(("shape", "num_classes"), [((32, 32, 3), 10), ((28, 28, 1), 10)])
def test_param_count_matches_architecture(name, shape, num_classes):
    got = models.param_count(name, shape, num_classes)
    assert got == _expected_count(name, shape[0], shape[2], num_classes)


def test_param_counts_agree_with_documents():
    # Thesis section 2.3.2: 2.5M (AlexNet), 14.7M (VGG16), 21.2M (ResNet34), rounded.
    assert round(models.param_count("alexnet") / 1e6, 1) == 2.5
    assert round(models.param_count("vgg16") / 1e6, 1) == 14.7
    assert 21.2e6 <= models.param_count("resnet34") < 21.3e6
    # Caffe's reference networks: LeNet on MNIST and cifar10_quick on CIFAR-10.
    assert models.param_count("lenet5", (28, 28, 1)) == 431_080
    assert models.param_count("cifar_quick", (32, 32, 3)) == 145_578


def test_param_count_depends_on_num_classes():
    assert models.param_count("resnet34", num_classes=100) - models.param_count("resnet34") == (
        90 * 512 + 90
    )


@pytest.mark.parametrize("name", [*models.MODEL_NAMES, "tiny"])
@pytest.mark.parametrize("shape", [(3, 28, 28, 1), (3, 32, 32, 3), (2, 17, 23, 2)])
def test_output_shape_and_collections(name, shape):
    logits, variables = _abstract_init(name, shape, num_classes=7)
    assert logits.shape == (shape[0], 7)
    assert logits.dtype == jnp.float32
    expected = {"params", "batch_stats"} if name in BATCH_NORM else {"params"}
    assert set(variables) == expected


# VGG16's and ResNet-34's forward passes take seconds to compile: out of `make test-fast`.
_LARGE = ("vgg16", "resnet34")


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in _LARGE else n for n in models.MODEL_NAMES]
    + ["tiny"],
)
def test_forward_pass_is_finite_and_input_dependent(name):
    model = models.create(name, 10)
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
    variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), x)

    @jax.jit
    def forward(variables, x):
        train_out, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
        eval_out = model.apply(variables, x, train=False)
        return train_out, eval_out, updates

    train_out, eval_out, updates = forward(variables, x)
    assert train_out.shape == eval_out.shape == (2, 10)
    assert np.all(np.isfinite(train_out)) and np.all(np.isfinite(eval_out))
    assert not np.allclose(eval_out[0], eval_out[1])  # the two inputs differ
    if name in BATCH_NORM:
        assert set(updates) == {"batch_stats"}
    else:
        assert not updates
        np.testing.assert_array_equal(train_out, eval_out)  # no train-only layers


def test_batch_norm_updates_running_statistics_in_training():
    model = models.create("tiny", 4)
    x = jax.random.normal(jax.random.key(0), (6, 8, 8, 3)) * 2.0 + 1.0
    variables = model.init(jax.random.key(1), x, train=False)
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    kernel = variables["params"]["Conv_0"]["kernel"]
    conv = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    conv = np.asarray(conv, np.float64)
    stats = updates["batch_stats"]["BatchNorm_0"]
    # PyTorch-equivalent momentum 0.1 from the initial mean 0 and variance 1.
    np.testing.assert_allclose(stats["mean"], 0.1 * conv.mean(axis=(0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * conv.var(axis=(0, 1, 2)), rtol=1e-4)


def test_batch_norm_train_uses_batch_eval_uses_running_statistics():
    model = models.create("tiny", 4)
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
    other = x.at[1:].set(jax.random.normal(jax.random.key(2), (3, 8, 8, 3)) * 5.0)
    variables = model.init(jax.random.key(1), x, train=False)
    # Training: example 0's logits depend on the rest of the batch.
    train_a, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
    train_b, _ = model.apply(variables, other, train=True, mutable=["batch_stats"])
    assert not np.allclose(train_a[0], train_b[0], atol=1e-5)
    # Evaluation: they do not, and changing the running statistics changes them.
    eval_a = model.apply(variables, x, train=False)
    eval_b = model.apply(variables, other, train=False)
    np.testing.assert_allclose(eval_a[0], eval_b[0], rtol=1e-6, atol=1e-6)
    shifted = jax.tree.map(lambda s: s + 3.0, variables["batch_stats"])
    eval_c = model.apply({**variables, "batch_stats": shifted}, x, train=False)
    assert not np.allclose(eval_a, eval_c, atol=1e-4)


def test_initializers_follow_caffe_fillers():
    model = models.create("cifar_quick", 10)
    init = jax.jit(functools.partial(model.init, train=False))
    params = init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
    assert np.std(params["conv1"]["kernel"]) == pytest.approx(1e-4, rel=0.1)
    assert np.std(params["conv2"]["kernel"]) == pytest.approx(0.01, rel=0.1)
    assert np.std(params["ip1"]["kernel"]) == pytest.approx(0.1, rel=0.1)
    assert not np.any(params["ip1"]["bias"])


@pytest.mark.parametrize("size", range(1, 40))
@pytest.mark.parametrize(("window", "stride"), [(2, 2), (3, 2), (3, 1)])
def test_ceil_padding_gives_caffe_output_size(size, window, stride):
    before, after = ceil_padding(size, window, stride)
    out = (size + before + after - window) // stride + 1
    caffe = int(np.ceil(max(size - window, 0) / stride)) + 1
    assert before == 0 and out == caffe
    assert (out - 1) * stride < size  # the last window starts inside the image


def test_ceil_mode_pooling_against_numpy():
    x = np.arange(2 * 7 * 5 * 3, dtype=np.float32).reshape(2, 7, 5, 3) % 11
    got_max = np.asarray(max_pool(jnp.asarray(x), 2, 2))
    got_avg = np.asarray(avg_pool(jnp.asarray(x), 3, 2))
    assert got_max.shape == (2, 4, 3, 3) and got_avg.shape == (2, 3, 2, 3)
    for i in range(4):
        for j in range(3):
            window = x[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]  # numpy clips the border
            np.testing.assert_array_equal(got_max[:, i, j], window.max(axis=(1, 2)))
    for i in range(3):
        for j in range(2):
            window = x[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
            np.testing.assert_allclose(got_avg[:, i, j], window.mean(axis=(1, 2)), rtol=1e-6)


def test_bad_arguments_raise_value_error_naming_them():
    with pytest.raises(ValueError, match="name"):
        models.create("alexnet2", 10)
    with pytest.raises(ValueError, match="num_classes"):
        models.create("alexnet", 0)
    with pytest.raises(ValueError, match="num_classes"):
        models.create("alexnet", 10.0)
    with pytest.raises(ValueError, match="input_shape"):
        models.param_count("alexnet", (32, 32))
    with pytest.raises(ValueError, match="name"):
        models.param_count("resnet")
    with pytest.raises(ValueError, match="size"):
        ceil_padding(0, 2, 2)


@pytest.mark.parametrize(
    ("shape", "window", "stride", "ties"),
    # `make test-fast`: the first case without ties and the first with them
    slow_after(
        [
            (shape, window, stride, False)
            for shape in [(2, 7, 5, 3), (1, 9, 11, 2), (2, 1, 1, 2)]
            for window, stride in [(2, 2), (3, 2), (3, 1), (3, 3)]
        ],
        several=True,
    )
    + slow_after(
        [((2, 7, 5, 3), window, stride, True) for window, stride in [(2, 2), (3, 2), (3, 3)]],
        several=True,
    ),
)
def test_pooling_values_and_gradients_equal_lax_reduce_window(shape, window, stride, ties):
    """The strided-slice pools against flax's reduce_window pools, with gradients; with
    ``ties`` the inputs take 3 values (and ReLU's zeros), so most windows hold equal maxima
    and the max's gradient must go to the same element as ``select_and_scatter``'s."""
    import flax.linen as nn

    from models.layers import _padding

    x = jax.random.normal(jax.random.key(window * 10 + stride), shape)
    if ties:
        x = jax.nn.relu(jnp.round(x))
    pads = _padding(x, window, stride)
    win, strides = (window, window), (stride, stride)
    pairs = [
        (lambda x: max_pool(x, window, stride), lambda x: nn.max_pool(x, win, strides, pads)),
        (
            lambda x: avg_pool(x, window, stride),
            lambda x: nn.avg_pool(x, win, strides, pads, count_include_pad=False),
        ),
    ]
    for ours, ref in pairs:
        got, want = jax.jit(ours)(x), jax.jit(ref)(x)  # jitted: one compile, not one per op
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        ct = jax.random.normal(jax.random.key(1), got.shape)
        grad = lambda f, ct=ct: jax.jit(jax.grad(lambda x: jnp.sum(f(x) * ct)))(x)
        np.testing.assert_allclose(grad(ours), grad(ref), rtol=1e-5, atol=1e-5)
        if ours is pairs[0][0]:  # the max: the same values, the gradient to the same elements
            np.testing.assert_array_equal(got, want)
            # An element chosen by several overlapping windows adds their gradients in
            # another order (last-bit differences); a gradient sent to another element
            # of a window would differ by a whole cotangent.
            np.testing.assert_allclose(grad(ours), grad(ref), rtol=1e-6, atol=1e-6)
            if window == stride:
                np.testing.assert_array_equal(grad(ours), grad(ref))


@pytest.mark.parametrize(
    "layer",
    [
        # (input shape, features, padding, pool window, stride): cifar_quick's conv1,
        # LeNet-5's conv1 (one channel: the tap sum of models/conv.py) and conv2
        ((2, 32, 32, 3), 32, 2, 3, 2),
        slow(((2, 28, 28, 1), 20, 0, 2, 2)),  # `make test-fast` keeps cifar_quick's
        slow(((2, 12, 12, 20), 50, 0, 2, 2)),
    ],
    ids=["cifar_quick-conv1", "lenet5-conv1", "lenet5-conv2"],
)
def test_a_conv_with_its_bias_after_the_pool_is_conv_then_pool(layer):
    """cifar_quick's conv1 and LeNet-5's two convolutions add their bias after the max
    pool (models.caffe._ConvMaxPool): the same parameters, initial values and outputs as
    Conv followed by max_pool, and the same gradients up to the order of the bias
    gradient's sum."""
    import flax.linen as nn

    from models.caffe import _ConvMaxPool, _gaussian
    from models.layers import Conv

    shape, features, padding, window, stride = layer

    class ConvThenPool(nn.Module):
        @nn.compact
        def __call__(self, x):
            conv = Conv(
                features, (5, 5), padding=padding, kernel_init=_gaussian(1e-2), name="conv1"
            )
            return max_pool(conv(x), window, stride)

    class PoolThenBias(nn.Module):
        @nn.compact
        def __call__(self, x):
            return _ConvMaxPool(
                features, (5, 5), padding, window, stride, _gaussian(1e-2), name="conv1"
            )(x)

    x = jax.random.normal(jax.random.key(1), shape)
    old, new = ConvThenPool(), PoolThenBias()
    params = old.init(jax.random.key(0), x)
    jax.tree.map(np.testing.assert_array_equal, params, new.init(jax.random.key(0), x))
    noise = lambda a: a + 0.01 * jax.random.normal(jax.random.key(3), a.shape)
    params = jax.tree.map(noise, params)  # a bias that is not zero
    np.testing.assert_array_equal(old.apply(params, x), new.apply(params, x))
    grads = [jax.grad(lambda p, m=m: jnp.sum(m.apply(p, x) ** 2))(params) for m in (old, new)]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), *grads)
