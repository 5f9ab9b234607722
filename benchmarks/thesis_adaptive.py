"""Thesis Figures 3.5 and 3.8: scheduled Nesterov SGD vs adaptive Nesterov vs CLR.

``python -m benchmarks.thesis_adaptive [--grid full|reduced|smoke] [--data-dir DIR]``

Methods (batch 512, the thesis's augmentation: random flip and 4-pixel translation), each
also in its layer-wise variant (``po.layerwise``, equation 9 of the layer-specific paper):

* ``scheduled``: SGD with Nesterov momentum 0.5, learning rate 0.1 / 0.01 / 0.001 over
  40% / 30% / 30% of the epochs (thesis section 3.4; ``--boundaries 0.5 0.75`` gives the
  150/75/75-of-300 schedule of section 3.5);
* ``adaptive``: ``po.adaptive_nesterov`` with the thesis's settings (alpha 0.9, gamma 1,
  f* = 0, ||g||^2 clipped to [1e-4, 1e10], eta clipped to [0.001, 0.1]);
* ``clr``: SGD with Nesterov momentum 0.5 and Smith's triangular cyclical learning rate
  between 0.001 and 0.1 (``po.cyclic_schedule``), half-cycle ``--clr-half-cycle`` epochs
  (thesis: 10 epochs' iterations over 300 epochs; default here epochs / 10).

``--lr-scale`` multiplies every learning rate of every method alike (the CPU grid halves
them: Caffe's LeNet-5 diverges at the thesis's 0.1 under the scheduled SGD).

No weight decay: the thesis states none (see :mod:`benchmarks._thesis`); ``--weight-decay``
adds L2 on the kernels to every method alike.

Every run is one :func:`train.run.run`, the training function of ``python -m train``
(AOT-compiled; compile and evaluation excluded from the time axis; a non-finite training
loss ends the run there). The method's optimizer is passed to it wrapped in
:func:`with_eta_trace`, which records the learning rate (eta) of every iteration in the
optimizer state, read back after each epoch, so the loop itself is untouched. The report
gives best accuracy and lowest loss with time and epoch, the time each method needs to
reach the scheduled baseline's best accuracy, and one PNG: accuracy and loss against time
and epochs, and eta per iteration on linear and log scales.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import polyak_optax as po
from benchmarks import _common as C
from benchmarks import _thesis as T
from train import loop
from train.config import Config
from train.optimizers import build_optimizer, kernel_mask, learning_rate_of
from train.platform import xla_flags

BENCHMARK = "thesis_adaptive"
METHODS = (
    "scheduled",
    "adaptive",
    "clr",
    "scheduled_layerwise",
    "adaptive_layerwise",
    "clr_layerwise",
)
SCHEDULED_MOMENTUM = 0.5  # thesis section 3.4
ADAPTIVE_MOMENTUM = 0.9  # thesis equation 3.3.5
LR_MIN, LR_MAX = 0.001, 0.1

GRIDS: dict[str, dict[str, Any]] = {
    "full": {
        "model": "alexnet",
        "dataset": "fashion_mnist",
        "batch_size": 512,
        "epochs": 100,
        "train_subset": None,
        "test_subset": None,
        "seeds": (0, 1, 2),
        "methods": METHODS,
        "lr_scale": 1.0,
        "weight_decay": T.WEIGHT_DECAY,
    },
    "reduced": {
        "model": "lenet5",
        "dataset": "fashion_mnist",
        "batch_size": 512,
        "epochs": 15,
        "train_subset": 10240,
        "test_subset": 2000,
        "seeds": (0,),
        "methods": METHODS,
        "lr_scale": 0.5,
        "weight_decay": T.WEIGHT_DECAY,
    },
    "smoke": {
        "model": "tiny",
        "dataset": "synthetic",
        "batch_size": 8,
        "epochs": 2,
        "train_subset": 32,
        "test_subset": 16,
        "seeds": (0,),
        "methods": ("scheduled", "adaptive", "clr"),
        "lr_scale": 1.0,
        "weight_decay": T.WEIGHT_DECAY,
    },
}
GRID_NOTES = {
    "full": "",
    "reduced": "CPU grid: LeNet-5 instead of the reduced AlexNet (about 100 images/s on 2 "
    "CPU cores), a class-balanced 10,240-image Fashion-MNIST training subset (20 batches of "
    "512 per epoch), a 2,000-image test subset, 15 epochs instead of 100, one seed, and "
    "every learning rate halved (lr_scale 0.5: scheduled 0.05 / 0.005 / 0.0005, CLR and "
    "adaptive eta in [0.0005, 0.05]): Caffe's LeNet-5 diverges under the scheduled "
    "Nesterov SGD at the thesis's 0.1 (NaN loss in epoch 2). Full grid (AlexNet, full "
    "data, 100 epochs, 3 seeds, lr_scale 1): `--grid full`.",
    "smoke": "smoke test: the tiny test model on synthetic 8x8x1 data; numbers mean nothing.",
}


class EtaTraceState(NamedTuple):
    """State of :func:`with_eta_trace`: the inner state and the eta of every update so far."""

    inner: optax.OptState
    eta_trace: jax.Array  # shape=(capacity,), float32, NaN where not yet written
    trace_index: jax.Array  # shape=(), int32


def with_eta_trace(
    tx: optax.GradientTransformationExtraArgs, capacity: int
) -> optax.GradientTransformationExtraArgs:
    """Wraps ``tx`` so that its state records the learning rate of each update.

    The learning rate is read with :func:`train.optimizers.learning_rate_of` after each
    update and written at the update's index (the last slot once ``capacity`` is reached).

    Example:
      >>> tx = with_eta_trace(build_optimizer("sgd", 0.1), capacity=3)
      >>> params = {"w": jnp.ones(2)}
      >>> state = tx.init(params)
      >>> updates, state = tx.update(params, state, params, value=jnp.float32(1.0))
      >>> params = optax.apply_updates(params, updates)
      >>> [round(float(x), 3) for x in state.eta_trace[:1]], int(state.trace_index)
      ([0.1], 1)
    """
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")

    def init_fn(params: optax.Params) -> EtaTraceState:
        return EtaTraceState(
            inner=tx.init(params),
            eta_trace=jnp.full((capacity,), jnp.nan, jnp.float32),
            trace_index=jnp.zeros((), jnp.int32),
        )

    def update_fn(
        updates: optax.Updates,
        state: EtaTraceState,
        params: optax.Params | None = None,
        **extra_args: Any,
    ) -> tuple[optax.Updates, EtaTraceState]:
        updates, inner = tx.update(updates, state.inner, params, **extra_args)
        eta = learning_rate_of(inner).astype(jnp.float32)
        index = jnp.minimum(state.trace_index, capacity - 1)
        trace = lax.dynamic_update_index_in_dim(state.eta_trace, eta, index, 0)
        return updates, EtaTraceState(inner, trace, state.trace_index + 1)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def make_method(
    name: str,
    *,
    steps_per_epoch: int,
    epochs: int,
    boundaries: Sequence[float],
    clr_half_cycle: float,
    lr_scale: float = 1.0,
    weight_decay: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """The optimizer of method ``name`` (see the module docstring), without the eta trace.

    ``lr_scale`` multiplies every learning rate of every method alike (the scheduled
    rates, the CLR bounds and adaptive Nesterov's eta bounds). ``weight_decay`` is L2 on
    the kernels added to the gradient before the method (and before the layer-wise
    factor), as :func:`train.optimizers.build_optimizer` applies it.

    Example:
      >>> tx = make_method("clr_layerwise", steps_per_epoch=10, epochs=5,
      ...                  boundaries=(0.4, 0.7), clr_half_cycle=1.0)
      >>> callable(tx.update)
      True

    Weight decay reaches the kernels only (here a zero gradient, Nesterov momentum 0.5:
    the update is -0.1 * (1 + 0.5) * 0.5 * w):

      >>> tx = make_method("scheduled", steps_per_epoch=1, epochs=1, boundaries=(0.4, 0.7),
      ...                  clr_half_cycle=1.0, weight_decay=0.5)
      >>> params = {"Dense_0": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}}
      >>> zero = jax.tree.map(jnp.zeros_like, params)
      >>> updates, _ = tx.update(zero, tx.init(params), params, value=jnp.float32(1.0))
      >>> updates["Dense_0"]["kernel"].tolist(), updates["Dense_0"]["bias"].tolist()
      ([-0.075, -0.075], [0.0, 0.0])
    """
    if name not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {name!r}")
    if not lr_scale > 0:
        raise ValueError(f"lr_scale must be positive, got {lr_scale}")
    base, layerwise = name.removesuffix("_layerwise"), name.endswith("_layerwise")
    total = steps_per_epoch * epochs
    lr_min, lr_max = LR_MIN * lr_scale, LR_MAX * lr_scale
    if base == "adaptive":
        return build_optimizer(
            "adaptive_nesterov",
            lr_max,
            ADAPTIVE_MOMENTUM,
            min_learning_rate=lr_min,
            steps_per_epoch=steps_per_epoch,
            epochs=epochs,
            layerwise=layerwise,
            weight_decay=weight_decay,
        )
    if base == "clr":
        return build_optimizer(
            "nesterov",
            lr_max,
            SCHEDULED_MOMENTUM,
            schedule="cyclic",
            min_learning_rate=lr_min,
            cycle_epochs=clr_half_cycle,
            steps_per_epoch=steps_per_epoch,
            epochs=epochs,
            layerwise=layerwise,
            weight_decay=weight_decay,
        )
    # 0.1 / 0.01 / 0.001 with the drops at the given fractions of the run.
    steps = sorted({max(1, round(f * total)) for f in boundaries})
    schedule = optax.piecewise_constant_schedule(lr_max, {s: 0.1 for s in steps})
    inner = optax.inject_hyperparams(optax.sgd, static_args=("nesterov",))(
        learning_rate=schedule, momentum=SCHEDULED_MOMENTUM, nesterov=True
    )
    if weight_decay:
        inner = optax.chain(optax.add_decayed_weights(weight_decay, kernel_mask), inner)
    if layerwise:
        inner = po.layerwise(inner)
    return optax.with_extra_args_support(inner)


def method_config(
    name: str, grid: dict[str, Any], *, seed: int, augment: bool, clr_half_cycle: float
) -> Config:
    """The :class:`train.config.Config` of one run of method ``name`` on ``grid``.

    The optimizer itself comes from :func:`make_method` (passed to :func:`train.run.run`
    as ``tx``); the config's optimizer, schedule and rates name the same method in the
    run's settings.

    Example:
      >>> c = method_config("clr_layerwise", GRIDS["smoke"], seed=0, augment=True,
      ...                   clr_half_cycle=1.0)
      >>> c.optimizer, c.schedule, c.layerwise, c.learning_rate, c.min_learning_rate
      ('nesterov', 'cyclic', True, 0.1, 0.001)
    """
    if name not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {name!r}")
    base = name.removesuffix("_layerwise")
    lr_min, lr_max = LR_MIN * grid["lr_scale"], LR_MAX * grid["lr_scale"]
    optimizer, schedule, momentum, floor = {
        "scheduled": ("nesterov", "step", SCHEDULED_MOMENTUM, None),
        "adaptive": ("adaptive_nesterov", "constant", ADAPTIVE_MOMENTUM, lr_min),
        "clr": ("nesterov", "cyclic", SCHEDULED_MOMENTUM, lr_min),
    }[base]
    return Config(
        model=grid["model"],
        dataset=grid["dataset"],
        optimizer=optimizer,
        layerwise=name.endswith("_layerwise"),
        schedule=schedule,
        learning_rate=lr_max,
        min_learning_rate=floor,
        momentum=momentum,
        cycle_epochs=clr_half_cycle,
        weight_decay=grid["weight_decay"],
        batch_size=grid["batch_size"],
        epochs=grid["epochs"],
        train_subset=grid["train_subset"],
        augment=augment,
        seed=seed,
    )


def train_method(
    name: str,
    ds: Any,
    grid: dict[str, Any],
    *,
    seed: int,
    augment: bool,
    boundaries: Sequence[float],
    clr_half_cycle: float,
) -> dict[str, Any]:
    """One run of method ``name``: :func:`benchmarks._thesis.train_one` with the method's
    optimizer wrapped in :func:`with_eta_trace`; adds ``"eta"``, the learning rate of
    every iteration that ran (read from the optimizer state after each epoch).
    """
    epochs = grid["epochs"]

    def build(steps_per_epoch: int) -> optax.GradientTransformationExtraArgs:
        tx = make_method(
            name,
            steps_per_epoch=steps_per_epoch,
            epochs=epochs,
            boundaries=boundaries,
            clr_half_cycle=clr_half_cycle,
            lr_scale=grid["lr_scale"],
            weight_decay=grid["weight_decay"],
        )
        return with_eta_trace(tx, steps_per_epoch * epochs)

    trace: dict[str, Any] = {"eta": np.zeros(0, np.float32), "count": 0}

    def read_trace(record: dict[str, Any], state: loop.TrainState) -> None:
        # a copy: the next epoch donates the state's buffers
        eta, count = jax.device_get((state.opt_state.eta_trace, state.opt_state.trace_index))
        trace["eta"], trace["count"] = np.array(eta, copy=True), int(count)

    config = method_config(name, grid, seed=seed, augment=augment, clr_half_cycle=clr_half_cycle)
    out = T.train_one(config, ds, tx=build, on_epoch=read_trace)
    eta = trace["eta"][: min(trace["count"], len(trace["eta"]))]
    return {**out, "eta": eta.tolist()}


def main(argv: Sequence[str] | None = None) -> int:
    """Runs every method; prints the tables; writes the .md/.json/.png. Returns 0."""
    parser = C.base_parser(__doc__.splitlines()[0])
    T.add_training_flags(parser)
    parser.add_argument("--batch-size", type=C.positive_int)
    parser.add_argument("--methods", nargs="+", choices=METHODS)
    parser.add_argument(
        "--boundaries",
        type=float,
        nargs=2,
        default=(0.4, 0.7),
        help="fractions of the run where the scheduled lr drops x0.1",
    )
    parser.add_argument(
        "--clr-half-cycle", type=float, help="CLR half-cycle in epochs (default epochs / 10)"
    )
    parser.add_argument("--no-augment", action="store_true", help="Figure 3.5's setup")
    parser.add_argument(
        "--lr-scale", type=float, help="multiply every method's learning rates by this"
    )
    args = parser.parse_args(argv)
    grid_name, grid, note = C.chosen_grid(
        args,
        GRIDS,
        GRID_NOTES,
        {
            **T.training_overrides(args),
            "batch_size": args.batch_size,
            "methods": args.methods,
            "lr_scale": args.lr_scale,
        },
    )
    if not 0 < args.boundaries[0] < args.boundaries[1] < 1:
        raise ValueError(f"--boundaries must satisfy 0 < a < b < 1, got {args.boundaries}")
    half_cycle = args.clr_half_cycle or max(grid["epochs"] / 10, 0.5)
    ds = T.load_data(grid["dataset"], args.data_dir, grid["train_subset"], grid["test_subset"])
    batch = grid["batch_size"]
    steps_per_epoch = len(ds.train_labels) // batch
    augment = not args.no_augment
    settings = {
        **grid,
        "augment": augment,
        "boundaries": list(args.boundaries),
        "clr_half_cycle_epochs": half_cycle,
        "lr_range": [LR_MIN * grid["lr_scale"], LR_MAX * grid["lr_scale"]],
        "scheduled_momentum": SCHEDULED_MOMENTUM,
        "adaptive_momentum": ADAPTIVE_MOMENTUM,
        "steps_per_epoch": steps_per_epoch,
        **T.data_settings(ds),
    }
    head = C.header(BENCHMARK, grid_name, note, settings)
    C.log(
        f"{BENCHMARK} on {head['device']}, grid {grid_name}: {settings['train_size']} train "
        f"/ {settings['test_size']} test images, {steps_per_epoch} steps/epoch"
    )

    runs = []
    for seed in grid["seeds"]:
        for method in grid["methods"]:
            out = train_method(
                method,
                ds,
                grid,
                seed=seed,
                augment=augment,
                boundaries=args.boundaries,
                clr_half_cycle=half_cycle,
            )
            summary = C.best_and_lowest(out["history"])
            runs.append({"method": method, "seed": seed, **summary, **out})
            diverged = out["diverged_epoch"]
            C.log(
                f"  {method} seed={seed}: best acc {summary['max_accuracy']:.4f} "
                f"(epoch {summary['max_accuracy_epoch']}), "
                f"{T.total_time(out['history']):.1f}s training"
                + (f"; diverged in epoch {diverged}" if diverged else "")
            )

    rows = summarize(runs, grid)
    payload = {**head, "rows": rows, "runs": runs}
    payload["figures"] = [plot(runs, args.out_dir, grid_name, head["device"], settings).name]
    markdown = render(payload)
    C.write_results(args.out_dir, BENCHMARK, payload, markdown)
    print(markdown)
    return 0


def summarize(runs: Sequence[dict[str, Any]], grid: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per method, mean and std over seeds, with the time to the scheduled best."""
    sched = {r["seed"]: r for r in runs if r["method"] == "scheduled"}
    rows = []
    for method in dict.fromkeys(r["method"] for r in runs):
        rs = [r for r in runs if r["method"] == method]
        row: dict[str, Any] = {"method": method, "seeds": len(rs)}
        for key in (
            "max_accuracy",
            "max_accuracy_time_s",
            "max_accuracy_epoch",
            "min_loss",
            "min_loss_time_s",
            "min_loss_epoch",
        ):
            row[key], row[key + "_std"] = C.mean_std(
                [float("nan") if r[key] is None else float(r[key]) for r in rs]
            )
        row["total_time_s"], row["total_time_s_std"] = C.mean_std(
            [T.total_time(r["history"]) for r in rs]
        )
        reach_t, reach_e, reached = [], [], 0
        for r in rs:
            if r["seed"] not in sched:
                continue
            t, e = C.time_to_reach(r["history"], sched[r["seed"]]["max_accuracy"])
            reach_t.append(t)
            reach_e.append(float("nan") if e is None else float(e))
            reached += e is not None
        if reach_t:
            row["reached_scheduled_best"] = f"{reached}/{len(reach_t)}"
            ok = [t for t in reach_t if math.isfinite(t)]
            oke = [e for e in reach_e if math.isfinite(e)]
            row["time_to_scheduled_best_s"] = C.mean_std(ok)[0] if ok else float("nan")
            row["epoch_to_scheduled_best"] = C.mean_std(oke)[0] if oke else float("nan")
        etas = [x for r in rs for x in r["eta"] if x is not None and math.isfinite(x)]
        row["eta_min"], row["eta_max"] = (min(etas), max(etas)) if etas else (math.nan, math.nan)
        row["eta_median"] = C.median(etas) if etas else math.nan
        rows.append(row)
    return rows


def plot(
    runs: Sequence[dict[str, Any]],
    out_dir: Any,
    grid_name: str,
    device: str,
    settings: dict[str, Any],
) -> Any:
    """One PNG: accuracy and loss against time and epochs; eta per iteration, lin and log."""
    plt = C.pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.4))
    colors = {"scheduled": "tab:blue", "adaptive": "tab:orange", "clr": "tab:green"}
    first_seed = runs[0]["seed"]
    for r in runs:
        base = r["method"].removesuffix("_layerwise")
        kw = {
            "color": colors[base],
            "lw": 1.1,
            "ls": "--" if r["method"].endswith("_layerwise") else "-",
            "label": r["method"] if r["seed"] == first_seed else None,
            "alpha": 1.0 if r["seed"] == first_seed else 0.4,
        }
        t = [h["time"] for h in r["history"]]
        e = [h["epoch"] for h in r["history"]]
        axes[0, 0].plot(t, [h["test_accuracy"] for h in r["history"]], **kw)
        axes[0, 1].plot(e, [h["test_accuracy"] for h in r["history"]], **kw)
        axes[1, 0].plot(t, [h["test_loss"] for h in r["history"]], **kw)
        axes[1, 1].plot(e, [h["test_loss"] for h in r["history"]], **kw)
        if r["seed"] == first_seed:
            eta = [math.nan if x is None else x for x in r["eta"]]
            axes[0, 2].plot(range(1, len(eta) + 1), eta, **{**kw, "lw": 0.8, "label": None})
            axes[1, 2].semilogy(range(1, len(eta) + 1), eta, **{**kw, "lw": 0.8, "label": None})
    titles = [
        ["test accuracy vs time (s)", "test accuracy vs epoch", "eta per iteration"],
        ["test loss vs time (s)", "test loss vs epoch", "eta per iteration (log)"],
    ]
    for i in range(2):
        for j in range(3):
            axes[i, j].set_title(titles[i][j], fontsize=9)
            axes[i, j].tick_params(labelsize=7)
            axes[i, j].grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(
        f"Figures 3.5/3.8: {settings['model']} on {settings['dataset']}, batch "
        f"{settings['batch_size']}, augment={settings['augment']} ({device}, "
        f"{grid_name} grid)",
        fontsize=10,
    )
    fig.tight_layout()
    return C.save_figure(fig, C.png_path(out_dir, BENCHMARK))


def render(payload: dict[str, Any]) -> str:
    """The Markdown report of a payload written by :func:`main`."""
    s = payload["settings"]

    def pm(row: dict[str, Any], key: str, fmt: str) -> str:
        v = row[key]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        sd = row.get(key + "_std")
        return format(v, fmt) + (f" ± {format(sd, fmt)}" if row["seeds"] > 1 and sd else "")

    table = [
        [
            r["method"],
            pm(r, "max_accuracy", ".4f"),
            pm(r, "max_accuracy_time_s", ".1f"),
            pm(r, "max_accuracy_epoch", ".1f"),
            pm(r, "min_loss", ".4f"),
            pm(r, "min_loss_epoch", ".1f"),
            pm(r, "total_time_s", ".1f"),
            r.get("reached_scheduled_best", "-"),
            pm(r, "time_to_scheduled_best_s", ".1f"),
            pm(r, "epoch_to_scheduled_best", ".1f"),
            f"{r['eta_min']:.4g} / {r['eta_median']:.4g} / {r['eta_max']:.4g}",
        ]
        for r in payload["rows"]
    ]
    lo, hi = s["lr_range"]
    lines = [
        C.header_markdown(payload, "Thesis Figures 3.5/3.8: adaptive Nesterov vs schedule vs CLR"),
        f"{s['model']} on {s['dataset']} ({s['train_size']} training / {s['test_size']} test "
        f"images), batch {s['batch_size']}, {s['epochs']} epochs ({s['steps_per_epoch']} "
        f"iterations each), augmentation {'on' if s['augment'] else 'off'}, weight decay "
        f"{s.get('weight_decay', 0.0):g}, seeds "
        f"{list(s['seeds'])}. scheduled: Nesterov momentum {s['scheduled_momentum']}, lr "
        f"{hi:g} / {hi / 10:g} / {hi / 100:g} with drops at {s['boundaries'][0]:.0%} and "
        f"{s['boundaries'][1]:.0%} of the run; adaptive: alpha {s['adaptive_momentum']}, eta "
        f"in [{lo:g}, {hi:g}]; clr: Nesterov momentum {s['scheduled_momentum']}, triangular "
        f"lr in [{lo:g}, {hi:g}], "
        f"half-cycle {s['clr_half_cycle_epochs']:g} epochs; `_layerwise`: wrapped in "
        "`po.layerwise` (eta shown is the base rate before the per-layer factor). Times are "
        "training seconds (compile and evaluation excluded).",
        "",
        C.markdown_table(
            [
                "method",
                "max acc",
                "time (s)",
                "epoch",
                "min loss",
                "epoch",
                "total time (s)",
                "reached sched. best",
                "time to it (s)",
                "epoch",
                "eta min / median / max",
            ],
            table,
        ),
        "",
        *(
            [note, ""]
            if (
                note := T.diverged_note(
                    payload["runs"], lambda r: f"{r['method']} seed {r['seed']}"
                )
            )
            else []
        ),
        "Curves: " + ", ".join(f"![{p}]({p})" for p in payload.get("figures", [])),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    xla_flags.apply()  # the training app's XLA:CPU flags, before jax starts its backends
    raise SystemExit(main())
