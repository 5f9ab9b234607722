"""LR range test speed: ``po.lr_range_test``'s single compiled scan against a Python loop.

``python -m benchmarks.lr_range_test_speed [--grid full|reduced|smoke]``

Both sweep the same ``num_steps`` (100) learning rates (the exact rates the scan used) with
the same optimizer (SGD, momentum 0.9) on the same model and batch (a batch of
Fashion-MNIST training images), from the same initial parameters:

* ``scan``: one call of ``po.lr_range_test`` (one jitted ``lax.scan``);
* ``python_loop``: the usual LR finder (fastai's ``lr_find``, PyTorch's LR finders): a
  Python ``for`` loop over the rates calling a jitted step (compiled once, the rate a
  traced argument) and reading the loss back after every step (``float(loss)``) to smooth
  it and stop at divergence, as the scan stops (both record the same steps);
* ``python_loop_async``: the same loop keeping the losses on the device and syncing once
  at the end, told in advance how many steps the scan recorded (the loop's best case, for
  reference).

Each variant is warmed up once (compilation measured apart), then timed ``repeats`` times;
the medians and the speed-up of the scan are reported, and the two sweeps' losses are
compared step by step (they must agree up to float rounding). One PNG shows the test's
loss curve and its suggestions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import models
import polyak_optax as po
from benchmarks import _common as C
from train import augment
from train import data as data_lib
from train.platform import xla_flags

BENCHMARK = "lr_range_test_speed"
VARIANTS = ("scan", "python_loop", "python_loop_async")
TARGET_SPEEDUP = 5.0

GRIDS: dict[str, dict[str, Any]] = {
    "full": {
        "configs": [("lenet5", "fashion_mnist", 128), ("alexnet", "fashion_mnist", 128)],
        "num_steps": 100,
        "repeats": 5,
    },
    "reduced": {
        "configs": [("lenet5", "fashion_mnist", 128)],
        "num_steps": 100,
        "repeats": 3,
    },
    "smoke": {
        "configs": [("mlp", "synthetic", 8)],
        "num_steps": 10,
        "repeats": 1,
    },
}
GRID_NOTES = {
    "full": "",
    "reduced": "CPU grid: LeNet-5 only (AlexNet's 100 steps take ~2 minutes per sweep on "
    "this CPU), 3 repeats. Full grid (LeNet-5 and AlexNet, 5 repeats): `--grid full`.",
    "smoke": "smoke test: the MLP on synthetic 8x8x1 data, 10 steps; numbers mean nothing.",
}
MIN_LR, MAX_LR = 1e-5, 10.0
MOMENTUM = 0.9


def optimizer_factory(lr: jax.typing.ArrayLike) -> optax.GradientTransformation:
    """SGD with momentum 0.9 at learning rate ``lr`` (a float or a traced scalar)."""
    return optax.sgd(lr, momentum=MOMENTUM)


def make_problem(model_name: str, dataset: str, batch_size: int, seed: int = 0) -> tuple:
    """``(loss_fn, params, batch)`` for one model on one normalized batch of real images."""
    if dataset == "synthetic":
        ds = data_lib.load_dataset(
            "synthetic", synthetic_shape=(8, 8, 1), synthetic_size=(batch_size, 1), seed=seed
        )
    else:
        ds = data_lib.load_dataset(dataset, train_subset=batch_size, seed=seed)
    x = augment.normalize(jnp.asarray(ds.train_images[:batch_size]), ds.mean, ds.std)
    y = jnp.asarray(ds.train_labels[:batch_size])
    model = models.create(model_name, ds.num_classes)
    variables = model.init(jax.random.key(seed), x[:1], train=False)
    if "batch_stats" in variables:
        raise ValueError(f"model {model_name!r} has batch norm; use one without")

    def loss_fn(params: optax.Params, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        images, labels = batch
        logits = model.apply({"params": params}, images, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return loss_fn, variables["params"], (x, y)


def python_loop(
    loss_fn: Callable[..., jax.Array],
    params: optax.Params,
    batch: Any,
    learning_rates: np.ndarray,
    *,
    sync_every_step: bool,
    num_steps: int | None = None,
) -> Callable[[], np.ndarray]:
    """A compiled-once Python-loop sweep; returns ``run() -> losses`` (NaN after a stop).

    With ``sync_every_step`` it is fastai's and PyTorch's LR finder: the loss comes back to
    the host after every step, is smoothed there, and the sweep stops once the smoothed
    loss exceeds 4x its best (as ``po.lr_range_test`` does inside its scan). Without, the
    losses stay on the device until the end and the loop runs ``num_steps`` steps (the
    number the scan recorded: the loop's best case, knowing in advance where to stop).

    Example:
      >>> loss_fn = lambda p, b: jnp.sum((p["w"] - b) ** 2)
      >>> run = python_loop(loss_fn, {"w": jnp.zeros(2)}, jnp.ones(2), np.array([0.1, 0.1]),
      ...                   sync_every_step=True)
      >>> [round(float(v), 3) for v in run()]
      [2.0, 1.28]
    """

    def step(params: optax.Params, opt_state: Any, lr: jax.Array) -> tuple:
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = optimizer_factory(lr).update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(step)
    opt_state0 = optimizer_factory(learning_rates[0]).init(params)
    steps = len(learning_rates) if num_steps is None else num_steps

    def run() -> np.ndarray:
        p, s = params, opt_state0
        losses: list[Any] = []
        average, best = 0.0, float("inf")
        for i, lr in enumerate(learning_rates[:steps]):
            p, s, loss = step(p, s, jnp.float32(lr))
            if not sync_every_step:
                losses.append(loss)
                continue
            value = float(loss)  # what an LR finder does: smooth and check on the host
            losses.append(value)
            average = 0.98 * average + 0.02 * value
            smoothed = average / (1 - 0.98 ** (i + 1))
            best = min(best, smoothed)
            if not math.isfinite(smoothed) or smoothed > 4.0 * best:
                break
        out = np.full(len(learning_rates), np.nan)
        out[: len(losses)] = np.asarray(jax.device_get(losses), np.float64)
        return out

    return run


def bench_config(
    model_name: str, dataset: str, batch_size: int, num_steps: int, repeats: int
) -> dict[str, Any]:
    """Timings (s) of the three variants plus the scan's result and the loss agreement."""
    loss_fn, params, batch = make_problem(model_name, dataset, batch_size)

    def scan() -> Any:
        return po.lr_range_test(
            loss_fn,
            params,
            batch,
            optimizer_factory,
            min_lr=MIN_LR,
            max_lr=MAX_LR,
            num_steps=num_steps,
        )

    first_s, result = C.timed(scan)
    lrs = np.asarray(result.learning_rates, np.float64)
    runners: dict[str, Callable[[], Any]] = {
        "scan": scan,
        "python_loop": python_loop(loss_fn, params, batch, lrs, sync_every_step=True),
        "python_loop_async": python_loop(
            loss_fn, params, batch, lrs, sync_every_step=False, num_steps=result.num_recorded
        ),
    }
    first = {"scan": first_s}
    outputs: dict[str, Any] = {"scan": result}
    for name in VARIANTS[1:]:
        first[name], outputs[name] = C.timed(runners[name])
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(repeats):
        for name in VARIANTS:
            times[name].append(C.timed(runners[name])[0])
    scan_losses = np.asarray(result.losses, np.float64)
    loop_losses = outputs["python_loop"]
    mask = np.isfinite(scan_losses) & np.isfinite(loop_losses)
    # Compare while the loss is still moderate (at most 10x its minimum, or at most its first
    # value where it reaches 0): after divergence float rounding explodes.
    finite = np.abs(loop_losses[mask])
    limit = max(10 * finite.min(), finite[0])
    moderate = mask & (np.abs(loop_losses) <= limit)
    agree = float(
        np.max(
            np.abs(scan_losses[moderate] - loop_losses[moderate])
            / np.maximum(1.0, np.abs(loop_losses[moderate]))
        )
    )
    return {
        "model": model_name,
        "dataset": dataset,
        "batch_size": batch_size,
        "num_steps": num_steps,
        "first_call_s": first,
        "times_s": times,
        "compile_estimate_s": {n: first[n] - C.median(times[n]) for n in VARIANTS},
        "max_rel_loss_diff": agree,
        "compared_steps": int(moderate.sum()),
        "result": {
            "learning_rates": lrs.tolist(),
            "losses": scan_losses.tolist(),
            "smoothed_losses": np.asarray(result.smoothed_losses, np.float64).tolist(),
            "suggestion": float(result.suggestion),
            "valley": float(result.valley),
            "minimum": float(result.minimum),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark; prints the table; writes the .md/.json/.png. Returns 0."""
    parser = C.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=C.positive_int, help="override the grid's repeats")
    args = parser.parse_args(argv)
    grid_name, grid, note = C.chosen_grid(args, GRIDS, GRID_NOTES, {"repeats": args.repeats})
    settings = {
        **grid,
        "min_lr": MIN_LR,
        "max_lr": MAX_LR,
        "optimizer": "sgd momentum 0.9",
        "mode": "exponential",
    }
    head = C.header(BENCHMARK, grid_name, note, settings)
    C.log(f"{BENCHMARK} on {head['device']}, grid {grid_name}")
    results = []
    for model_name, dataset, batch_size in grid["configs"]:
        res = bench_config(model_name, dataset, batch_size, grid["num_steps"], grid["repeats"])
        results.append(res)
        C.log(
            f"  {model_name}: "
            + ", ".join(f"{n} {C.median(res['times_s'][n]):.3f}s" for n in VARIANTS)
        )
    rows = []
    for res in results:
        scan_s = C.median(res["times_s"]["scan"])
        for name in VARIANTS:
            t = C.median(res["times_s"][name])
            rows.append(
                {
                    "model": res["model"],
                    "batch_size": res["batch_size"],
                    "num_steps": res["num_steps"],
                    "variant": name,
                    "median_s": t,
                    "speedup_of_scan": t / scan_s,
                }
            )
    payload = {
        **head,
        "rows": rows,
        "results": results,
        "target": "scan >= 5x faster than the Python-loop sweep (on a GPU)",
    }
    payload["figures"] = [plot(results[0], args.out_dir, grid_name, head["device"]).name]
    markdown = render(payload)
    C.write_results(args.out_dir, BENCHMARK, payload, markdown)
    print(markdown)
    return 0


def plot(res: dict[str, Any], out_dir: Any, grid_name: str, device: str) -> Any:
    """The range test's raw and smoothed loss against the learning rate, with suggestions."""
    plt = C.pyplot()
    r = res["result"]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.semilogx(r["learning_rates"], r["losses"], lw=0.8, alpha=0.5, label="loss")
    ax.semilogx(r["learning_rates"], r["smoothed_losses"], lw=1.5, label="smoothed loss")
    for name, color in (
        ("suggestion", "tab:red"),
        ("valley", "tab:green"),
        ("minimum", "tab:purple"),
    ):
        if np.isfinite(r[name]):
            ax.axvline(r[name], color=color, ls="--", lw=1, label=f"{name} {r[name]:.2g}")
    finite = [v for v in r["smoothed_losses"] if v is not None and np.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) * 0.9, max(finite[0] * 1.5, min(finite) * 1.5))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(
        f"LR range test: {res['model']}, batch {res['batch_size']}, "
        f"{res['num_steps']} steps ({device}, {grid_name})",
        fontsize=9,
    )
    fig.tight_layout()
    return C.save_figure(fig, C.png_path(out_dir, BENCHMARK))


def render(payload: dict[str, Any]) -> str:
    """The Markdown report of a payload written by :func:`main`."""
    table = [
        [
            r["model"],
            r["batch_size"],
            r["num_steps"],
            r["variant"],
            f"{1e3 * r['median_s']:.1f}",
            f"{r['speedup_of_scan']:.2f}x",
        ]
        for r in payload["rows"]
    ]
    extra = []
    for res in payload["results"]:
        sp = C.median(res["times_s"]["python_loop"]) / C.median(res["times_s"]["scan"])
        extra.append(
            f"{res['model']}: scan {sp:.2f}x faster than the Python loop (target >= "
            f"{TARGET_SPEEDUP:g}x on a GPU: {'met' if sp >= TARGET_SPEEDUP else 'missed'} here); "
            f"first calls (compile included): "
            + ", ".join(f"{n} {s:.2f}s" for n, s in res["first_call_s"].items())
            + f"; losses of scan and loop agree to {res['max_rel_loss_diff']:.1e} (relative, "
            f"{res['compared_steps']} steps before divergence); suggestion "
            f"{res['result']['suggestion']:.3g}, valley {res['result']['valley']:.3g}, "
            f"minimum/10 {res['result']['minimum']:.3g}"
        )
    lines = [
        C.header_markdown(payload, "LR range test: compiled scan vs Python loop"),
        "Median wall time of one whole sweep (warm: compilation excluded); *x* = that time "
        "over the scan's. `python_loop` reads the loss after every step, as an LR finder "
        "does; `python_loop_async` syncs once at the end.",
        "",
        C.markdown_table(
            ["model", "batch", "steps", "variant", "median sweep (ms)", "time / scan's"], table
        ),
        "",
        *[f"* {e}." for e in extra],
        "",
        "Curve: " + ", ".join(f"![{p}]({p})" for p in payload.get("figures", [])),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    xla_flags.apply()  # the training app's XLA:CPU flags, before jax starts its backends
    raise SystemExit(main())
