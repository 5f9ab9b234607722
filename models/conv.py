"""A drop-in ``lax.conv_general_dilated`` whose gradients stay fast inside loops on the CPU.

Why: inside a ``lax.fori_loop``/``lax.scan`` body, XLA's CPU backend leaves the kernel
gradient of an NHWC convolution in a non-canonical layout (``f01b_i01o->01bf``) and then
cannot hand it to its Eigen convolution kernel; it emits a naive loop nest instead
(jax-ml/jax#12868). The device-resident epoch is exactly such a loop, and there LeNet-5's
training step runs several times slower than the same step jitted on its own. Writing the
two backward convolutions ourselves, with the transposes spelled out, gives XLA canonical
``b01f_01io->b01f`` convolutions in the loop as well, and the step inside the loop is as
fast as outside it (the timings are in ``benchmarks/NOTES.md``).

A one-channel input (LeNet-5's first layer) is convolved as a sum over the kernel's taps
(:func:`_single_channel_conv`), faster there than Eigen's convolution; followed by a
tiling max pool, the two run as one op (:func:`single_channel_conv_max_pool`).

The custom gradient is used on the CPU backend for plain NHWC/HWIO convolutions (any
stride and padding, no dilation, one feature group); everything else, and every other
backend (cuDNN has no such problem), calls ``lax.conv_general_dilated`` unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "conv_general_dilated",
    "fused_single_channel_conv_max_pool_applies",
    "single_channel_conv_max_pool",
]

_NHWC = ("NHWC", "HWIO", "NHWC")
# Inputs from this size on are read from memory by the kernel gradient (_materialized).
_MATERIALIZE_MIN_SIZE = 1 << 19
Padding = tuple[tuple[int, int], ...]


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: lax.ConvGeneralDilatedDimensionNumbers = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: lax.PrecisionLike = None,
    preferred_element_type: jax.typing.DTypeLike | None = None,
) -> jax.Array:
    """``lax.conv_general_dilated`` with loop-friendly gradients on the CPU (same signature).

    Pass it to Flax as ``nn.Conv(..., conv_general_dilated=conv_general_dilated)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x, w = jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4))
      >>> dn = ("NHWC", "HWIO", "NHWC")
      >>> y = conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)
      >>> y.shape, float(y[0, 2, 2, 0])
      ((2, 6, 6, 4), 27.0)
      >>> loss = lambda w: jnp.sum(conv_general_dilated(x, w, (2, 2), "SAME",
      ...                                               dimension_numbers=dn) ** 2)
      >>> ref = lambda w: jnp.sum(jax.lax.conv_general_dilated(x, w, (2, 2), "SAME",
      ...                                                      dimension_numbers=dn) ** 2)
      >>> bool(jnp.allclose(jax.grad(loss)(w), jax.grad(ref)(w)))
      True
    """
    ndim = lhs.ndim - 2
    strides = tuple(int(s) for s in window_strides)
    plain = (
        jax.default_backend() == "cpu"
        and lhs.ndim == 4
        and rhs.ndim == 4
        and _is_nhwc(lhs.shape, rhs.shape, dimension_numbers)
        and all(d == 1 for d in (lhs_dilation or (1,) * ndim))
        and all(d == 1 for d in (rhs_dilation or (1,) * ndim))
        and feature_group_count == 1
        and batch_group_count == 1
        and preferred_element_type is None
        and lhs.dtype == rhs.dtype
    )
    if not plain:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            batch_group_count=batch_group_count,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
    if isinstance(padding, str):
        pads = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
    else:
        pads = padding
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    if lhs.shape[1] < rhs.shape[0] or lhs.shape[2] < rhs.shape[1]:
        return _conv_as_matmul(lhs, rhs, strides, pads, precision)
    return _conv_nhwc(lhs, rhs, strides, pads, precision)


def _conv_as_matmul(
    x: jax.Array, w: jax.Array, strides: tuple[int, ...], pads: Padding, precision
) -> jax.Array:
    """The convolution as one matrix product of the strided patches (im2col).

    For images smaller than the kernel (AlexNet's and VGG16's last 2x2 maps under a 3x3
    kernel): XLA:CPU swaps the roles of image and kernel there, gets a non-canonical
    ``01fb_o01i->f01b`` convolution and runs it as a naive loop, forward and backward.
    The patches of such small images are small, and the product and its gradients
    (products and pads) run as Eigen matrix products.
    """
    kh, kw, cin, cout = w.shape
    # [batch, out_h, out_w, kh * kw * cin], ordered like the HWIO kernel's rows
    patches = jnp.concatenate(_taps(x, (kh, kw), strides, pads), axis=-1)
    kernel = w.reshape(kh * kw * cin, cout)
    return lax.dot_general(patches, kernel, (((3,), (0,)), ((), ())), precision=precision)


def _taps(
    x: jax.Array, kernel: tuple[int, int], strides: tuple[int, ...], pads: Padding
) -> list[jax.Array]:
    """The strided slices of the padded ``x`` that meet each kernel tap, row-major (the
    HWIO kernel's order), each of the output's spatial shape."""
    x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    out_h = (x.shape[1] - kernel[0]) // strides[0] + 1
    out_w = (x.shape[2] - kernel[1]) // strides[1] + 1
    rows = (out_h - 1) * strides[0] + 1
    cols = (out_w - 1) * strides[1] + 1
    return [
        x[:, i : i + rows : strides[0], j : j + cols : strides[1], :]
        for i in range(kernel[0])
        for j in range(kernel[1])
    ]


def _is_nhwc(lhs_shape: Sequence[int], rhs_shape: Sequence[int], dimension_numbers) -> bool:
    if dimension_numbers is None:
        return False  # lax's default is NCHW/OIHW
    expected = lax.conv_dimension_numbers(lhs_shape, rhs_shape, _NHWC)
    given = lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers)
    return given == expected


def _conv(
    x: jax.Array, w: jax.Array, strides, pads, precision, lhs_dilation=None, rhs_dilation=None
):
    return lax.conv_general_dilated(
        x,
        w,
        strides,
        pads,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=_NHWC,
        precision=precision,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_nhwc(
    x: jax.Array, w: jax.Array, strides: tuple[int, ...], pads: Padding, precision
) -> jax.Array:
    return _forward(x, w, strides, pads, precision)


def _conv_nhwc_fwd(x, w, strides, pads, precision):
    return _forward(x, w, strides, pads, precision), (x, w)


def _forward(
    x: jax.Array, w: jax.Array, strides: tuple[int, ...], pads: Padding, precision
) -> jax.Array:
    if w.shape[2] == 1 and x.dtype == jnp.float32:
        return _single_channel_conv(x, w, strides, pads)
    return _conv(x, w, strides, pads, precision)


def _single_channel_conv(
    x: jax.Array, w: jax.Array, strides: tuple[int, ...], pads: Padding
) -> jax.Array:
    """The convolution of a one-channel image as a sum over the kernel's taps.

    Each tap adds its strided slice of the image times the tap's row of output channels;
    XLA fuses the sum into one loop over the output. Eigen's convolution contracts over
    only ``kh * kw`` values per output here and is slower at it than this sum (float32;
    the order of the sum differs, so results differ in the last bits). The output is then
    read from memory (:func:`_materialized`): fused into the max pool that follows, the
    sum would be recomputed there. A three-channel first layer (cifar_quick's) keeps the
    convolution: there the sum is faster alone but not inside the whole step.
    """
    kh, kw, _, _ = w.shape
    taps = _taps(x, (kh, kw), strides, pads)
    total = taps[0] * w[0, 0, 0]
    for k, tap in enumerate(taps[1:], 1):
        total = total + tap * w[k // kw, k % kw, 0]
    return _materialized(total, w, min_size=0)


def _materialized(
    x: jax.Array, kernel: jax.Array, min_size: int = _MATERIALIZE_MIN_SIZE
) -> jax.Array:
    """``x`` as stored in memory, so that XLA:CPU cannot recompute it inside a transpose.

    The kernel gradient transposes the layer's input ``x`` to (C, H, W, N). XLA:CPU fuses
    the cheap elementwise producer of ``x`` (cifar_quick: conv1's bias, max pool 3/2 and
    ReLU) into that transpose and recomputes it there in transposed order, where every
    read is a cache miss. An optimization barrier does not stop it (XLA expands barriers
    before fusion); a conditional on a runtime value does: both branches return ``x`` (the
    second adds 0.0, which only turns a -0.0 into +0.0, and runs only when the layer's
    ``kernel``'s first element is not finite), and the transpose reads the stored ``x``.
    Inputs under 512k elements skip it (LeNet-5's, where the conditional costs more than
    it saves). The condition reads the kernel, which every device holds, and not
    ``x``, which is split over the devices: an element of ``x`` cost a collective per step
    (a cross-process one in a multi-process run).
    """
    if x.size < min_size:
        return x
    return jax.lax.cond(jnp.isfinite(kernel.reshape(-1)[0]), lambda t: t, lambda t: t + 0.0, x)


def _conv_nhwc_bwd(strides, pads, precision, residuals, dy):
    x, w = residuals
    out = dy.shape[1:3]
    dw = _kernel_grad(x, jnp.transpose(dy, (1, 2, 0, 3)), w, strides, pads, precision)
    by = _input_grad_by_conv
    if _products_pay(x.shape[1:3], out, pads):
        by = _input_grad_by_one_product if strides == (1, 1) else _input_grad_by_products
    dx = by(dy, w, x.shape, strides, pads, precision)
    return dx.astype(x.dtype), dw.astype(w.dtype)


def _input_grad_by_conv(
    dy: jax.Array,
    w: jax.Array,
    x_shape: Sequence[int],
    strides: tuple[int, ...],
    pads: Padding,
    precision,
) -> jax.Array:
    """The input gradient as a convolution: the output gradient, dilated by the stride,
    convolved with the flipped kernel whose input and output channels swap (jax's own
    padding rule). A negative padding (a forward padding wider than the kernel) is applied
    as a slice: XLA:CPU's unoptimized convolution reads garbage for negative paddings."""
    pads_dx, crops = [], []
    for size, k, s, n, (lo, _) in zip(
        x_shape[1:3], w.shape[:2], strides, dy.shape[1:3], pads, strict=True
    ):
        before = k - lo - 1
        after = size + k - 1 - ((n - 1) * s + 1) - before
        pads_dx.append((max(before, 0), max(after, 0)))
        crops.append(slice(max(-before, 0), max(-before, 0) + size))
    w_flipped = jnp.transpose(jnp.flip(w, (0, 1)), (0, 1, 3, 2))
    dx = _conv(dy, w_flipped, (1, 1), tuple(pads_dx), precision, lhs_dilation=strides)
    return dx[:, crops[0], crops[1], :]


def _kernel_grad(
    x: jax.Array,
    dy_hwnc: jax.Array,
    w: jax.Array,
    strides: tuple[int, ...],
    pads: Padding,
    precision,
) -> jax.Array:
    """The kernel gradient of a convolution of NHWC ``x`` from its output gradient laid
    out ``(h, w, n, c)``: one convolution in which the images' channels act as the batch,
    the examples as the contracted features and the output gradient as the
    (stride-dilated) kernel. ``x`` is read from memory when large (:func:`_materialized`).
    """
    x = _materialized(x, w)
    dw = _conv(
        jnp.transpose(x, (3, 1, 2, 0)), dy_hwnc, (1, 1), pads, precision, rhs_dilation=strides
    )
    return jnp.transpose(dw[:, : w.shape[0], : w.shape[1], :], (1, 2, 0, 3))


_conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd)


def _input_grad_by_one_product(
    dy: jax.Array,
    w: jax.Array,
    x_shape: Sequence[int],
    strides: tuple[int, ...],
    pads: Padding,
    precision,
) -> jax.Array:
    """The input gradient of a stride-1 convolution as one matrix product and two sums.

    ``dy @ w^T`` over all kernel taps at once (one Eigen product with ``kh * kw * cin``
    columns) gives every tap's contribution. The taps are then summed in two passes, each
    read from memory (:func:`_materialized`): first the ``kw`` taps of each kernel row,
    padded to their column offsets (one loop over ``(n, out_h, padded_w, kh * cin)``),
    then the ``kh`` rows, padded to their row offsets. The first pass reads runs of
    ``kh * cin`` values, the second runs of ``cin``, each with one bounds check per run
    instead of 25 per value. Without the first read XLA fuses both sums
    into one loop over the input; without the second it fuses the sum into the max pool's
    gradient, which reads it several times. Both passes together are faster than a single
    sum of the 25 padded taps, which is faster than one product per tap added in place
    (:func:`_input_grad_by_products`, which strided convolutions keep).
    """
    del strides  # (1, 1): the caller takes this path for stride 1 only
    kh, kw, cin, cout = w.shape
    n, out_h, out_w = dy.shape[:3]
    padded = (x_shape[1] + pads[0][0] + pads[0][1], x_shape[2] + pads[1][0] + pads[1][1])
    kernel = jnp.transpose(w, (3, 1, 0, 2)).reshape(cout, kw * kh * cin)  # (o, (j, i, c))
    flat = lax.dot_general(
        dy.reshape(-1, cout), kernel, (((1,), (0,)), ((), ())), precision=precision
    )
    taps = flat.reshape(n, out_h, out_w, kw, kh * cin)
    rows = None  # (n, out_h, padded_w, kh * cin): each kernel row's taps at their columns
    for j in range(kw):
        tap = jnp.pad(taps[:, :, :, j], ((0, 0), (0, 0), (j, padded[1] - out_w - j), (0, 0)))
        rows = tap if rows is None else rows + tap
    rows = _materialized(rows, w, min_size=0).reshape(n, out_h, padded[1], kh, cin)
    total = None
    for i in range(kh):
        row = jnp.pad(rows[:, :, :, i], ((0, 0), (i, padded[0] - out_h - i), (0, 0), (0, 0)))
        total = row if total is None else total + row
    total = _materialized(total, w, min_size=0)
    top, left = pads[0][0], pads[1][0]
    return total[:, top : top + x_shape[1], left : left + x_shape[2], :]


def _products_pay(size: Sequence[int], out: Sequence[int], pads: Padding) -> bool:
    """Whether the input gradient is better computed by matrix products
    (:func:`_input_grad_by_one_product` for stride 1, :func:`_input_grad_by_products`
    otherwise) than by a convolution.

    The convolution form of the input gradient computes one product per input pixel and
    kernel tap, most of them on the zeros of its padding (and of its stride dilation)
    when the output has far fewer pixels than the input: a VALID convolution over a small
    map (LeNet-5's second: 12x12 in, 8x8 out) or a strided one, and products of the
    output's pixels are faster there. cifar_quick's and AlexNet's SAME convolutions (as
    many output pixels as input) keep the convolution, which is faster there; hence the
    rule on the ratio of pixels, with non-negative padding.
    """
    ratio = (size[0] * size[1]) / (out[0] * out[1])
    return ratio >= 2.0 and all(lo >= 0 and hi >= 0 for lo, hi in pads)


def _input_grad_by_products(
    dy: jax.Array,
    w: jax.Array,
    x_shape: Sequence[int],
    strides: tuple[int, ...],
    pads: Padding,
    precision,
) -> jax.Array:
    """The input gradient as one matrix product per kernel tap, added in place (col2im).

    Tap ``(i, j)`` sends ``dy @ w[i, j]^T`` to the input pixels at offset ``(i, j)`` with
    the stride's step; the sums are in-place updates of one padded buffer, whose padding is
    cut at the end. Written as a sum of padded arrays instead, XLA fused that sum into the
    max pool's gradient, which reads it several times: the step got slower, not faster.
    """
    kh, kw = w.shape[:2]
    out_h, out_w = dy.shape[1:3]
    padded = (x_shape[1] + pads[0][0] + pads[0][1], x_shape[2] + pads[1][0] + pads[1][1])
    flat = dy.reshape(-1, dy.shape[3])
    total = jnp.zeros((dy.shape[0], *padded, w.shape[2]), dy.dtype)
    for i in range(kh):
        for j in range(kw):
            tap = lax.dot_general(flat, w[i, j], (((1,), (1,)), ((), ())), precision=precision)
            rows = slice(i, i + (out_h - 1) * strides[0] + 1, strides[0])
            cols = slice(j, j + (out_w - 1) * strides[1] + 1, strides[1])
            total = total.at[:, rows, cols, :].add(tap.reshape(*dy.shape[:3], w.shape[2]))
    top, left = pads[0][0], pads[1][0]
    return total[:, top : top + x_shape[1], left : left + x_shape[2], :]


def fused_single_channel_conv_max_pool_applies(
    x: jax.Array, w: jax.Array, window: int, stride: int, pads: Padding
) -> bool:
    """Whether :func:`single_channel_conv_max_pool` takes this stride-1 convolution and
    max pool: the CPU backend, a float32 one-channel NHWC input and a pool whose windows
    tile the convolution's output.

    Example:
      >>> import jax.numpy as jnp
      >>> x, w = jnp.ones((2, 28, 28, 1)), jnp.ones((5, 5, 1, 20))  # LeNet-5's conv1
      >>> fused_single_channel_conv_max_pool_applies(x, w, 2, 2, ((0, 0), (0, 0)))
      True
      >>> fused_single_channel_conv_max_pool_applies(x, w, 3, 2, ((0, 0), (0, 0)))
      False
    """
    if jax.default_backend() != "cpu" or x.ndim != 4 or w.ndim != 4:
        return False
    if x.shape[-1] != 1 or w.shape[2] != 1 or x.dtype != jnp.float32 or w.dtype != jnp.float32:
        return False
    out_h = x.shape[1] + pads[0][0] + pads[0][1] - w.shape[0] + 1
    out_w = x.shape[2] + pads[1][0] + pads[1][1] - w.shape[1] + 1
    tiles = out_h % window == 0 and out_w % window == 0
    return window == stride and tiles and min(out_h, out_w) > 0


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def single_channel_conv_max_pool(
    x: jax.Array, w: jax.Array, pads: Padding, window: int
) -> jax.Array:
    """A stride-1 convolution of a one-channel NHWC image, then a tiling max pool (NHWC out).

    The tap sum of :func:`_single_channel_conv` (the same products, added in the same
    order) computed channels-first, ``(n, c, h, w)``, where XLA:CPU vectorizes it along the
    image's width rather than along LeNet-5's 20 channels; then each window's first
    largest element in row-major order (as :func:`models.layers.max_pool`); then the
    pooled map, 4x smaller, transposed to NHWC. The backward pass sends each window's
    gradient to its chosen element directly in the ``(h, w, n, c)`` layout that the kernel
    gradient's convolution reads. Values equal the unfused layers' bit for bit, gradients
    up to the order of the sums. The sum is read from memory before the pool, which would
    otherwise recompute it; the pooled map is not (see the comment in the code).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> x, w = jnp.ones((2, 6, 6, 1)), jnp.ones((3, 3, 1, 4))
      >>> y = single_channel_conv_max_pool(x, w, ((0, 0), (0, 0)), 2)
      >>> y.shape, float(y[0, 0, 0, 0])
      ((2, 2, 2, 4), 9.0)
    """
    return _fused_fwd(x, w, pads, window)[0]


def _fused_fwd(x, w, pads, window):
    kh, kw, _, cout = w.shape
    total = None
    for k, tap in enumerate(_taps(x, (kh, kw), (1, 1), pads)):  # tap: (n, out_h, out_w, 1)
        term = tap[:, None, :, :, 0] * w[k // kw, k % kw, 0][None, :, None, None]
        total = term if total is None else total + term
    total = _materialized(total, w, min_size=0)  # (n, c, out_h, out_w)
    n, _, out_h, out_w = total.shape
    ph, pw = out_h // window, out_w // window
    tiles = total.reshape(n, cout, ph, window, pw, window)
    best, which = tiles[:, :, :, 0, :, 0], jnp.zeros((n, cout, ph, pw), jnp.int8)
    for k in range(1, window * window):
        tap = tiles[:, :, :, k // window, :, k % window]
        later_is_larger = tap > best  # strict: a tie keeps the earlier element
        best = jnp.where(later_is_larger, tap, best)
        which = jnp.where(later_is_larger, jnp.int8(k), which)
    # Not behind _materialized's conditional: with it, LeNet-5 on 2 CPU devices in one
    # process drifts from the one-device numbers, differently from run to run (a race).
    out = jnp.transpose(best, (0, 2, 3, 1))
    # the choices laid out as the backward pass reads them: (ph, pw, n, c)
    return out, (x, w, jnp.transpose(which, (2, 3, 0, 1)))


def _fused_bwd(pads, window, residuals, g):
    x, w, which = residuals
    g = jnp.transpose(g, (1, 2, 0, 3))  # (ph, pw, n, c)
    zero = jnp.zeros((), g.dtype)
    rows = []
    for p in range(window):
        cols = [jnp.where(which == p * window + q, g, zero) for q in range(window)]
        rows.append(jnp.stack(cols, axis=2))  # (ph, pw, window, n, c)
    dy = jnp.stack(rows, axis=1)  # (ph, window, pw, window, n, c)
    ph, pw = g.shape[:2]
    dy = dy.reshape(ph * window, pw * window, *g.shape[2:])  # (out_h, out_w, n, c)
    dw = _kernel_grad(x, dy, w, (1, 1), pads, None)
    dx = _input_grad_by_conv(jnp.transpose(dy, (2, 0, 1, 3)), w, x.shape, (1, 1), pads, None)
    return dx.astype(x.dtype), dw.astype(w.dtype)


single_channel_conv_max_pool.defvjp(_fused_fwd, _fused_bwd)
