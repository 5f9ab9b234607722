"""Where a training step's time goes: each convolution of the step, timed alone.

``python -m benchmarks.step_profile [--grid reduced|smoke] [--models ...] [--batch-size N]``

For each model, the jitted training step (:func:`train.loop.train_step`, Nesterov SGD,
on a batch of :mod:`benchmarks.vs_pytorch`'s images) is traced, and every
``conv_general_dilated`` in its jaxpr is listed (the forward convolutions, and the
input- and kernel-gradient convolutions of the backward pass, nested jaxprs included)
with its exact shapes and parameters, except the gradient of the images (the custom
gradient of :mod:`models.conv` computes it; XLA removes it, unused). Each is then jitted
and timed alone on random inputs (warm-up excluded, median of repeats), beside the whole
step.

The report gives per convolution its milliseconds, GFLOP/s (2 x multiply-adds) and share
of the step, and the step's total in convolutions, so a missed speed target can be
traced to the layers that cost it. Timing one
convolution alone leaves out what a fused step overlaps, so the shares are estimates; the
convolution sum is not expected to equal the step exactly.

What the convolutions leave of LeNet-5's and cifar_quick's step is split by ablation: the
step is timed in alternation with the same model without its convolutions' biases, and
with its pooling layers replaced by strided subsampling of the same output shape.

Where PyTorch is installed (the ``bench`` extra), the same network's PyTorch training step
(:func:`benchmarks.vs_pytorch.torch_model`, Nesterov SGD, the same batch of images) is
timed too, and ``torch.profiler`` splits it by layer: each convolution's forward and
backward time beside ours, so a gap to PyTorch can be placed in a layer, or outside the
convolutions.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from unittest import mock

import jax
import jax.numpy as jnp
from jax import lax

import models
import models.alexnet
import models.caffe
from benchmarks import _common as C
from benchmarks import vs_pytorch
from models import layers
from train import augment, loop
from train import data as data_lib
from train.data_errors import DatasetNotFoundError
from train.optimizers import build_optimizer
from train.platform import xla_flags

BENCHMARK = "step_profile"
ABLATED_MODELS = ("lenet5", "cifar_quick")  # AlexNet's step is 1.3 s: the conv table suffices
SHAPES = {"lenet5": (28, 28, 1), "cifar_quick": (32, 32, 3), "alexnet": (32, 32, 3)}
GRIDS: dict[str, dict[str, Any]] = {
    "full": {"models": ("lenet5", "cifar_quick", "alexnet"), "batch_size": 128, "repeats": 20},
    "reduced": {
        "models": ("lenet5", "cifar_quick", "alexnet"),
        "batch_size": 128,
        "repeats": 10,
    },
    "smoke": {"models": ("lenet5",), "batch_size": 4, "repeats": 2},
}
GRID_NOTES = {
    "full": "",
    "reduced": "CPU grid: the vs_pytorch target cells (batch 128), 10 repeats.",
    "smoke": "smoke test: LeNet-5 at batch 4; the numbers mean nothing.",
}


def step_convolutions(jaxpr: Any) -> list[Any]:
    """Every ``conv_general_dilated`` equation of ``jaxpr`` and of its nested jaxprs.

    Example:
      >>> import jax.numpy as jnp
      >>> dn = ("NHWC", "HWIO", "NHWC")
      >>> f = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
      ...                                                dimension_numbers=dn).sum()
      >>> x, w = jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 2))
      >>> len(step_convolutions(jax.make_jaxpr(jax.grad(f, argnums=(0, 1)))(x, w).jaxpr))
      3
    """
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            found.append(eqn)
        for value in eqn.params.values():
            for sub in value if isinstance(value, list | tuple) else (value,):
                inner = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                if hasattr(inner, "eqns"):
                    found.extend(step_convolutions(inner))
    return found


def conv_flops(eqn: Any) -> float:
    """2 x the multiply-adds of one convolution equation (groups of 1)."""
    out = eqn.outvars[0].aval.shape
    rhs = eqn.invars[1].aval.shape
    spec = eqn.params["dimension_numbers"].rhs_spec  # (out feature, in feature, spatial...)
    kernel = rhs[spec[1]] * math.prod(rhs[d] for d in spec[2:])
    return 2.0 * math.prod(out) * kernel


def _median_ms(fn: Any, args: Sequence[Any], repeats: int) -> float:
    C.block(fn(*args))  # warm-up
    return 1e3 * C.median([C.timed(fn, *args)[0] for _ in range(repeats)])


def _subsample(x: jax.Array, window: int, stride: int) -> jax.Array:
    """A pooling layer's output shape taken by strided subsampling (no window work): the
    first of the pool's strided windows, with the pool's own ceil-mode padding."""
    padded = jnp.pad(x, [(0, 0), *layers._padding(x, window, stride), (0, 0)])
    return layers._strided_windows(padded, window, stride)[0]


#: Variants of the models timed beside the real step: each removes one kind of work.
ABLATIONS: dict[str, dict[str, Any]] = {
    "without conv biases": {
        "Conv": functools.partial(layers.Conv, use_bias=False),
        # a convolution whose bias is added after its pool (LeNet-5, cifar_quick's conv1)
        "_ConvMaxPool": functools.partial(models.caffe._ConvMaxPool, use_bias=False),
    },
    # (LeNet-5's first convolution and pool run as one op: unfused here, then subsampled)
    "pools as subsampling": {
        "max_pool": _subsample,
        "avg_pool": _subsample,
        "fused_single_channel_conv_max_pool_applies": lambda *args: False,
    },
}
MODEL_MODULES = (models.caffe, models.alexnet)


@contextlib.contextmanager
def ablated(ablation: str | None) -> Iterator[None]:
    """Within it, the models are built with ``ablation`` (a key of :data:`ABLATIONS`)."""
    with contextlib.ExitStack() as stack:
        for attr, value in ABLATIONS.get(ablation, {}).items():
            for module in MODEL_MODULES:
                if hasattr(module, attr):
                    stack.enter_context(mock.patch.object(module, attr, value))
        yield


@functools.cache
def benchmark_data(name: str, batch: int) -> data_lib.Dataset:
    """At least ``batch`` training images of ``name``'s ``vs_pytorch`` data set
    (Fashion-MNIST for LeNet-5, synthetic 32x32x3 otherwise; synthetic images of
    LeNet-5's shape where Fashion-MNIST is not installed): the step's batch is its first.

    Real images rather than random numbers: PyTorch's step of LeNet-5 is slower on
    standard normal inputs than on Fashion-MNIST images (``benchmarks/NOTES.md``); ours
    does not depend on the values.
    """
    size = max(batch, 1000)
    try:
        return vs_pytorch.load_data(name, size, 10, None)
    except DatasetNotFoundError:
        return data_lib.load_dataset(
            "synthetic", synthetic_shape=SHAPES[name], synthetic_size=(size, 10)
        )


def _step_and_args(name: str, batch: int, ablation: str | None = None) -> tuple[Any, tuple]:
    """The jitted training step of ``name`` and its arguments (``ablation`` applied)."""
    shape = SHAPES[name]
    with ablated(ablation):
        tx = build_optimizer("nesterov", 0.01, 0.9)
        state = loop.create_train_state(models.create(name, 10), tx, jax.random.key(0), shape)
        ds = benchmark_data(name, batch)
        x = augment.normalize(ds.train_images[:batch], ds.mean, ds.std)
        y = jnp.asarray(ds.train_labels[:batch])
        step = jax.jit(loop.train_step)
        C.block(step(state, x, y))  # traced and compiled under the patch
    return step, (state, x, y)


def ablate(name: str, batch: int, repeats: int, as_is: tuple[Any, tuple]) -> dict[str, float]:
    """Step milliseconds of the model (``as_is``: its compiled step and arguments) and of
    each ablation, timed in alternation."""
    variants = {None: as_is}
    variants.update({a: _step_and_args(name, batch, a) for a in ABLATIONS})
    times: dict[Any, list[float]] = {a: [] for a in variants}
    for _ in range(repeats):
        for a, (step, args) in variants.items():
            times[a].append(C.timed(step, *args)[0])
    return {a or "as is": 1e3 * C.median(t) for a, t in times.items()}


def profile_model(name: str, batch: int, repeats: int) -> dict[str, Any]:
    """The step's time, each of its convolutions' time, FLOP rate and share, and what
    the step costs without its conv biases or its pooling windows (:data:`ABLATIONS`)."""
    step, (state, x, y) = _step_and_args(name, batch)
    step_ms = _median_ms(step, (state, x, y), repeats)
    rows = []
    convolutions = step_convolutions(jax.make_jaxpr(loop.train_step)(state, x, y).jaxpr)
    for i, eqn in enumerate(convolutions):
        lhs, rhs = (v.aval for v in eqn.invars)
        if eqn.outvars[0].aval.shape == x.shape:  # the images' gradient: XLA drops it
            continue
        args = [jax.random.normal(jax.random.key(10 + i), a.shape, a.dtype) for a in (lhs, rhs)]
        conv = jax.jit(lambda a, b, eqn=eqn: lax.conv_general_dilated_p.bind(a, b, **eqn.params))
        ms = _median_ms(conv, args, repeats)
        flops = conv_flops(eqn)
        rows.append(
            {
                "conv": i,
                "lhs": list(lhs.shape),
                "rhs": list(rhs.shape),
                "out": list(eqn.outvars[0].aval.shape),
                "ms": ms,
                "gflop": flops / 1e9,
                "gflop_per_s": flops / 1e6 / ms,
                "share_of_step": ms / step_ms,
            }
        )
    kernels = conv_kernels(state.params)
    by_kernel = convolutions_by_kernel(rows, [k for _, k in kernels])
    return {
        "model": name,
        "batch_size": batch,
        "data": benchmark_data(name, batch).name,
        "step_ms": step_ms,
        "conv_ms": sum(r["ms"] for r in rows),
        "convolutions": rows,
        "layers": [
            {
                "layers": [layer for layer, k in kernels if k == kernel],
                "kernel": list(kernel),
                **parts,
            }
            for kernel, parts in by_kernel.items()
        ],
        "ablations_ms": (
            ablate(name, batch, repeats, (step, (state, x, y))) if name in ABLATED_MODELS else {}
        ),
        "pytorch": torch_step_profile(name, state.params, batch, repeats),
    }


def conv_kernels(params: Any) -> list[tuple[str, tuple[int, ...]]]:
    """``(layer name, HWIO kernel shape)`` of every 2-D convolution in ``params``, in order.

    Example:
      >>> import numpy as np
      >>> conv = {"kernel": np.zeros((5, 5, 1, 20))}
      >>> conv_kernels({"conv1": conv, "ip1": {"kernel": np.zeros((8, 2))}})
      [('conv1', (5, 5, 1, 20))]
    """
    found = []
    for name, leaf in params.items():
        kernel = leaf.get("kernel") if isinstance(leaf, Mapping) else None
        if kernel is not None and len(kernel.shape) == 4:
            found.append((name, tuple(int(d) for d in kernel.shape)))
    return found


def convolutions_by_kernel(
    rows: Sequence[dict[str, Any]], kernels: Sequence[tuple[int, ...]]
) -> dict[tuple[int, ...], dict[str, float]]:
    """Our convolution rows (:func:`profile_model`) summed per HWIO kernel shape of the
    model's layers (``kernels``, one entry per layer): the milliseconds of the
    ``forward``, ``input_grad`` and ``kernel_grad`` that ran as convolutions (a part
    computed otherwise, e.g. by matrix products, is absent). Layers of one shape share an
    entry, as in PyTorch's profile (:func:`torch_step_profile`).

    A kernel gradient is an output laid out (in, kh, kw, out); a forward convolution takes
    the kernel and its input channels; an input gradient takes the kernel with its channels
    swapped and gives the input channels. Where the two cannot be told apart (as many
    input as output channels), the first matches are the forward passes, which come first
    in the step.

    Example:
      >>> rows = [{"lhs": [8, 12, 12, 20], "rhs": [5, 5, 20, 50], "out": [8, 8, 8, 50], "ms": 2.0},
      ...         {"lhs": [20, 12, 12, 8], "rhs": [8, 8, 8, 50], "out": [20, 5, 5, 50], "ms": 3.0}]
      >>> convolutions_by_kernel(rows, [(5, 5, 20, 50)])
      {(5, 5, 20, 50): {'forward': 2.0, 'kernel_grad': 3.0}}
    """
    found: dict[tuple[int, ...], dict[str, float]] = {tuple(k): {} for k in kernels}
    forwards = {k: 0 for k in found}
    for row in rows:
        lhs, rhs, out = (tuple(row[k]) for k in ("lhs", "rhs", "out"))
        for kernel, parts in found.items():
            kh, kw, cin, cout = kernel
            if out == (cin, kh, kw, cout):
                part = "kernel_grad"
            elif rhs == kernel and lhs[-1] == cin and forwards[kernel] < kernels.count(kernel):
                part = "forward"
                forwards[kernel] += 1
            elif rhs == (kh, kw, cout, cin) and lhs[-1] == cout and out[-1] == cin:
                part = "input_grad"
            else:
                continue
            parts[part] = parts.get(part, 0.0) + row["ms"]
            break
    return found


def torch_step_profile(name: str, params: Any, batch: int, repeats: int) -> dict[str, Any] | None:
    """PyTorch's training step of the same network on the same batch
    (:func:`benchmark_data`; :class:`benchmarks.vs_pytorch.TorchArm`'s model, optimizer and
    normalization): its median time, and per HWIO kernel shape (the layers of one shape
    together) the convolutions' forward and backward milliseconds a step under
    ``torch.profiler``. ``None`` without torch, or where ``vs_pytorch`` would run PyTorch
    on a GPU (this profile times CPU ops)."""
    try:
        import torch
    except ImportError:
        return None
    if vs_pytorch.torch_device() != "cpu":
        return None
    arm = vs_pytorch.TorchArm(name, params, benchmark_data(name, batch), batch)
    step = functools.partial(arm.step, arm.x[:batch], arm.y[:batch])
    step()  # warm-up
    times = [C.timed(step)[0] for _ in range(repeats)]
    profiled = max(1, min(repeats, 4))
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True
    ) as prof:
        for _ in range(profiled):
            step()
    layers: dict[tuple[int, ...], dict[str, float]] = {}
    # (op, index of its weight among the inputs): the public ops, whose time includes
    # whichever kernel (oneDNN or not) they dispatch to
    ops = {"aten::convolution": ("forward", 1), "aten::convolution_backward": ("backward", 2)}
    for event in prof.key_averages(group_by_input_shape=True):
        if event.key not in ops:
            continue
        part, index = ops[event.key]
        cout, cin, kh, kw = event.input_shapes[index]  # OIHW
        layer = layers.setdefault((kh, kw, cin, cout), {})
        layer[part] = layer.get(part, 0.0) + event.cpu_time_total / 1e3 / profiled
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "step_ms": 1e3 * C.median(times),
        "conv_ms": sum(sum(v.values()) for v in layers.values()),
        "layers": [{"kernel": list(k), **v} for k, v in layers.items()],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the profile; prints and writes the report. Returns 0."""
    parser = C.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(SHAPES), help="override the models")
    parser.add_argument("--batch-size", type=C.positive_int, help="override the batch size")
    args = parser.parse_args(argv)
    grid_name, grid, note = C.chosen_grid(
        args, GRIDS, GRID_NOTES, {"models": args.models, "batch_size": args.batch_size}
    )
    head = C.header(BENCHMARK, grid_name, note, grid)
    head["xla_flags_applied"] = list(xla_flags.in_effect())
    results = []
    for name in grid["models"]:
        results.append(profile_model(name, grid["batch_size"], grid["repeats"]))
        r = results[-1]
        C.log(f"  {name}: step {r['step_ms']:.1f} ms, convolutions {r['conv_ms']:.1f} ms")
    payload = {**head, "models": results}
    markdown = render(payload)
    C.write_results(args.out_dir, BENCHMARK, payload, markdown)
    print(markdown)
    return 0


def render(payload: dict[str, Any]) -> str:
    """The Markdown report."""
    lines = [
        C.header_markdown(payload, "Training-step profile: the convolutions"),
        "Each `conv_general_dilated` of the jitted training step (Nesterov SGD), timed alone "
        "with its exact shapes; the step timed whole. An output of the kernel's size laid "
        "out (in, kh, kw, out) is a kernel gradient, one of the input's size an input "
        "gradient. Shares are estimates (a fused step overlaps work).",
        "",
    ]
    for r in payload["models"]:
        lines += [
            f"## {r['model']}, batch {r['batch_size']}: step {r['step_ms']:.1f} ms, of which "
            f"convolutions alone {r['conv_ms']:.1f} ms ({100 * r['conv_ms'] / r['step_ms']:.0f}%)",
            "",
        ]
        table = [
            [
                c["conv"],
                "x".join(map(str, c["lhs"])),
                "x".join(map(str, c["rhs"])),
                "x".join(map(str, c["out"])),
                f"{c['ms']:.2f}",
                f"{c['gflop']:.3f}",
                f"{c['gflop_per_s']:.1f}",
                f"{100 * c['share_of_step']:.0f}%",
            ]
            for c in r["convolutions"]
        ]
        lines.append(
            C.markdown_table(
                ["#", "lhs", "rhs", "out", "ms", "GFLOP", "GFLOP/s", "of step"],
                table,
                align="llllrrrr",
            )
        )
        lines.append("")
        if r.get("pytorch"):
            lines += _pytorch_lines(r)
        if r.get("ablations_ms"):
            base = r["ablations_ms"]["as is"]
            lines += [
                "The whole step beside variants of the model without one kind of work, "
                "timed in alternation (the difference estimates that work's cost):",
                "",
                C.markdown_table(
                    ["variant", "step ms", "saved ms", "saved"],
                    [
                        [v, f"{ms:.1f}", f"{base - ms:.1f}", f"{100 * (base - ms) / base:.0f}%"]
                        for v, ms in r["ablations_ms"].items()
                    ],
                    align="lrrr",
                ),
                "",
            ]
    return "\n".join(lines)


PYTORCH_COLUMNS = [
    "layers",
    "kernel (HWIO)",
    "ours: forward",
    "ours: input gradient",
    "ours: kernel gradient",
    "PyTorch: forward",
    "PyTorch: backward",
]


def _pytorch_lines(r: dict[str, Any]) -> list[str]:
    """The report's comparison with PyTorch's step, layer by layer."""
    torch_profile = r["pytorch"]
    theirs = {tuple(layer["kernel"]): layer for layer in torch_profile["layers"]}

    def cell(ms: float | None) -> str:
        return "—" if ms is None else f"{ms:.2f}"

    table = []
    for layer in r["layers"]:
        mine = [layer.get(part) for part in ("forward", "input_grad", "kernel_grad")]
        other = theirs.get(tuple(layer["kernel"]), {})
        table.append(
            [
                ", ".join(layer["layers"]),
                "x".join(map(str, layer["kernel"])),
                cell(mine[0]),
                cell(mine[1]),
                cell(mine[2]),
                cell(other.get("forward")),
                cell(other.get("backward")),
            ]
        )
    return [
        f"Against PyTorch {torch_profile['torch']} ({torch_profile['threads']} threads), the "
        f"same network and batch of images ({r.get('data', 'the vs_pytorch data')}), "
        "Nesterov SGD: its step "
        f"{torch_profile['step_ms']:.1f} ms against our {r['step_ms']:.1f} ms; its "
        f"convolutions take {torch_profile['conv_ms']:.1f} ms of its step (`torch.profiler`, "
        f"forward and backward ops), ours {r['conv_ms']:.1f} ms alone. Per layer (ms; ours "
        "timed alone as above; PyTorch's backward holds both gradients, the first layer's "
        "only the kernel's; — : not a convolution here, e.g. matrix products or a sum of "
        "taps, or not computed, as the images' gradient):",
        "",
        C.markdown_table(PYTORCH_COLUMNS, table, align="llrrrrr"),
        "",
    ]


if __name__ == "__main__":
    xla_flags.apply()  # the training app's XLA:CPU flags, before jax starts its backends
    sys.exit(main())
