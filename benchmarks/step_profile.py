"""Where a training step's time goes: each convolution of the step, timed alone.

``python -m benchmarks.step_profile [--grid reduced|smoke] [--models ...] [--batch-size N]``

For each model, the jitted training step (:func:`train.loop.train_step`, Nesterov SGD) is
traced, and every ``conv_general_dilated`` in its jaxpr is listed (the forward
convolutions, and the input- and kernel-gradient convolutions of the backward pass,
nested jaxprs included) with its exact shapes and parameters, except the gradient of the
images (the custom gradient of :mod:`models.conv` computes it; XLA removes it, unused).
Each is then jitted and timed alone on random inputs (warm-up excluded, median of
repeats), beside the whole step.

The report gives per convolution its milliseconds, GFLOP/s (2 x multiply-adds) and share
of the step, and the step's total in convolutions, so a missed speed target can be
traced to the layers that cost it (issue 14: "profile it; do not guess"). Timing one
convolution alone leaves out what a fused step overlaps, so the shares are estimates; the
convolution sum is not expected to equal the step exactly.

What the convolutions leave of LeNet-5's and cifar_quick's step is split by ablation: the
step is timed in alternation with the same model without its convolutions' biases, and
with its pooling layers replaced by strided subsampling of the same output shape.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
from collections.abc import Iterator, Sequence
from typing import Any
from unittest import mock

import jax
import jax.numpy as jnp
from jax import lax

import models
import models.alexnet
import models.caffe
from benchmarks import _common as C
from models import layers
from train import loop, xla_flags
from train.optimizers import build_optimizer

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


def _step_and_args(name: str, batch: int, ablation: str | None = None) -> tuple[Any, tuple]:
    """The jitted training step of ``name`` and its arguments (``ablation`` applied)."""
    shape = SHAPES[name]
    with ablated(ablation):
        tx = build_optimizer("nesterov", 0.01, 0.9)
        state = loop.create_train_state(models.create(name, 10), tx, jax.random.key(0), shape)
        x = jax.random.normal(jax.random.key(1), (batch, *shape))
        y = jax.random.randint(jax.random.key(2), (batch,), 0, 10)
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
    return {
        "model": name,
        "batch_size": batch,
        "step_ms": step_ms,
        "conv_ms": sum(r["ms"] for r in rows),
        "convolutions": rows,
        "ablations_ms": (
            ablate(name, batch, repeats, (step, (state, x, y))) if name in ABLATED_MODELS else {}
        ),
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
    head["xla_flags_applied"] = list(xla_flags.APPLIED)
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


if __name__ == "__main__":
    sys.exit(main())
