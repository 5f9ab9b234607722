"""Tuning-free head-to-head on a byte-level transformer language model.

``python -m benchmarks.tuning_free_lm [--grid full|reduced|smoke] [--optimizers ...]
[--sweep-lrs ...] [--seeds N] [--steps N]``

The problem: a small GPT (:mod:`models.gpt`; ``gpt_small`` on the CPU grid, ``gpt`` on
the full grid) predicting the next byte of the Python standard library's source
(:mod:`train.text`; the corpus's size and SHA-256 go into the results, since the
library differs between Python versions). The loss never comes near 0 (a good byte
model of code sits near 1-2 bits per byte), while the Polyak methods assume f* = 0.

Every optimizer of :data:`UNTUNED` runs at its published defaults, built by
:data:`benchmarks.tuning_free.OPTIMIZERS` (the image head-to-head's registry) with a
constant learning rate. The bar, marked ``"tuned": true``: AdamW (b2 0.95, weight decay
0.1 on the matrices, as nanoGPT) with linear warm-up over the first 10% of the steps and
cosine decay to a tenth, at each of :data:`SWEEP_LRS`; the learning rate with the lowest
mean final validation loss is the baseline, and all of the sweep is reported (the sweep
is the baseline's tuning, done on the same validation bytes it is judged on).

Each run makes ONE pass over ``steps * batch_size`` distinct training windows (a seeded
choice; the seed also draws the initialization), in segments of ``eval_every`` steps,
each one jitted :func:`train.loop.train_epoch` over a segment's windows, and evaluates
(:func:`train.loop.evaluate`, schedule-free optimizers at their averaged parameters)
after every segment on a fixed, evenly spaced set of validation windows. Training time
excludes compilation and evaluation. Per evaluation point the rows keep the validation
bits per byte, the segment's mean training loss and mean learning rate (the Polyak
methods' step, from the optimizer state), and at the training iterate on one fixed
training batch: the loss L, the squared gradient norm ||g||^2 and, for optimizers with
an Adam second moment in their state, g^T D^-1 g (D = sqrt(v_hat) + eps from that
state), so that the variant's uncapped Polyak step 5 L / g^T D^-1 g can be set against
its cap.

Outputs ``results/tuning_free_lm-<device>.json`` (``corpus`` and ``rows``: problem,
optimizer, schedule, seed, tuned, learning_rate, val_bits_per_byte, steps, time_s,
curve), ``.md`` (tables) and ``.png`` (validation bits per byte against steps).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import models
import polyak_optax as po
from benchmarks import _common as C
from benchmarks import tuning_free as tf
from train import loop, text
from train import optimizers as train_optimizers
from train.platform import xla_flags

BENCHMARK = "tuning_free_lm"
VARIANT = tf.VARIANT
#: The untuned optimizers, at the image head-to-head's published defaults.
UNTUNED = (
    VARIANT,
    "adaptive_nesterov",
    "tuning_free_nesterov",
    "prodigy",
    "dadapt_adamw",
    "schedule_free_adamw",
    "momo_adam",
    "adam",
)
TUNED = "adamw_warmup_cosine"
#: Diagnostics of the variant (not published defaults, never peers; ``--ablations`` runs
#: them into their own report): its ceiling at schedule-free AdamW's published learning
#: rate, the variant without its Polyak step (so large a confidence that the step is
#: always the ceiling), and the variant told an oracle's f* = 2 nats (about the training
#: loss the best untuned optimizers end the CPU grid's budget at): would knowing f* help?
ABLATIONS = {
    f"{VARIANT}_cap2.5e-3": lambda: po.schedule_free_polyak_adam(max_learning_rate=2.5e-3),
    f"{VARIANT}_no_polyak": lambda: po.schedule_free_polyak_adam(confidence=1e30),
    f"{VARIANT}_oracle_f2.0": lambda: po.schedule_free_polyak_adam(f_min=2.0),
}
SWEEP_LRS = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
WARMUP_FRACTION = 0.1
FINAL_LR_FRACTION = 0.1
GOAL_RELATIVE_GAP = 0.02  # the variant within 2% of the tuned baseline's bits per byte
LN2 = math.log(2.0)


class Budget(NamedTuple):
    """Model and step budget of a grid."""

    model: str
    context: int
    batch_size: int
    steps: int
    eval_every: int
    val_sequences: int


GRIDS: dict[str, Budget] = {
    "full": Budget("gpt", 128, 64, 5000, 250, 2048),
    "reduced": Budget("gpt_small", 64, 16, 600, 50, 256),
    "smoke": Budget("gpt_small", 16, 4, 4, 2, 8),
}
NOTES = {
    "full": "Full grid (for a GPU): gpt (4 layers, width 128, 4 heads), context 128, "
    "batch 64, 5,000 steps, validation every 250 steps on 2,048 windows.",
    "reduced": "CPU grid (2 cores shared with other jobs): gpt_small (2 layers, width 64, "
    "4 heads), context 64, batch 16, 600 steps (9,600 distinct training windows, 614 kB), "
    "validation every 50 steps on 256 windows (16 kB).",
    "smoke": "Smoke grid: context 16, batch 4, 4 steps.",
}


def build(optimizer: str, learning_rate: float | None, steps: int) -> optax.GradientTransformation:
    """An untuned optimizer at its published defaults (constant), or the tuned AdamW at
    ``learning_rate`` with warm-up and cosine decay over ``steps``."""
    if optimizer in ABLATIONS:
        return ABLATIONS[optimizer]()
    if optimizer != TUNED:
        return tf.OPTIMIZERS[optimizer](None)
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=learning_rate,
        warmup_steps=max(1, int(WARMUP_FRACTION * steps)),
        decay_steps=steps,
        end_value=FINAL_LR_FRACTION * learning_rate,
    )
    matrices = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
    return optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=0.1, mask=matrices)


def corpus_windows(budget: Budget) -> tuple[Any, np.ndarray, np.ndarray, dict[str, Any]]:
    """The corpus's windows of ``budget.context`` bytes: the dataset, the fixed
    validation windows (evenly spaced over the held-out files), and the corpus's facts."""
    ds = text.load_dataset(context=budget.context)
    n = min(budget.val_sequences, len(ds.test_labels))
    rows = np.linspace(0, len(ds.test_labels) - 1, n).round().astype(int)
    return ds, ds.test_images[rows], ds.test_labels[rows], text.corpus_info()


def _second_moment(opt_state: Any) -> tuple[Any, jax.Array] | None:
    """``(nu, count)`` of the first state in ``opt_state`` with both fields (an Adam or
    ``scale_by_rms`` second moment), searched depth first; ``None`` if there is none."""
    if hasattr(opt_state, "nu") and hasattr(opt_state, "count"):
        return opt_state.nu, opt_state.count
    if isinstance(opt_state, tuple | list):
        for child in opt_state:
            found = _second_moment(child)
            if found is not None:
                return found
    return None


@jax.jit
def _probe(state: loop.TrainState, x: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    """L, ||g||^2 and (with a second moment in the state) g^T D^-1 g at the training
    iterate on one batch (``b2`` 0.999, eps 1e-8: the variant's defaults)."""

    def loss_fn(params: optax.Params) -> jax.Array:
        logits = state.apply_fn({"params": params}, x.astype(jnp.int32))
        return loop.cross_entropy(logits, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    out = {"loss": loss, "grad_sq_norm": optax.tree.norm(grads, squared=True)}
    moment = _second_moment(state.opt_state)
    if moment is not None:
        nu, count = moment
        correction = 1.0 - 0.999 ** jnp.maximum(count, 1).astype(jnp.float32)
        direction = jax.tree.map(lambda g, v: g / (jnp.sqrt(v / correction) + 1e-8), grads, nu)
        out["adam_metric_sq_norm"] = optax.tree.vdot(grads, direction)
    return out


def train_once(
    optimizer: str,
    seed: int,
    budget: Budget,
    data: tuple[Any, np.ndarray, np.ndarray],
    learning_rate: float | None = None,
) -> dict[str, Any]:
    """One run: a pass over ``steps * batch_size`` distinct windows, evaluated every
    ``eval_every`` steps; returns the final validation bits per byte and the curve."""
    ds, val_x, val_y = data
    segments = budget.steps // budget.eval_every
    per_segment = budget.eval_every * budget.batch_size
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(ds.train_labels), segments * per_segment, replace=False)
    train_x = jnp.asarray(ds.train_images[chosen].reshape(segments, per_segment, -1))
    train_y = jnp.asarray(ds.train_labels[chosen].reshape(segments, per_segment, -1))
    val_x, val_y = jnp.asarray(val_x), jnp.asarray(val_y)
    mean, std = jnp.asarray(ds.mean), jnp.asarray(ds.std)
    spec = train_optimizers.OPTIMIZERS.get(VARIANT if optimizer in ABLATIONS else optimizer)
    eval_params = spec.eval_params if spec is not None else None

    tx = build(optimizer, learning_rate, segments * budget.eval_every)
    model = models.create(budget.model, text.VOCAB)
    init_key, data_key = jax.random.split(jax.random.key(seed))
    state = loop.create_train_state(model, tx, init_key, (budget.context,))
    eval_batch = min(len(val_y), 64)
    evaluate = loop.evaluate.lower(
        state, val_x, val_y, mean, std, batch_size=eval_batch, eval_params=eval_params
    ).compile()
    epoch = loop.train_epoch.lower(
        state, train_x[0], train_y[0], mean, std, data_key, batch_size=budget.batch_size
    ).compile()
    probe_x, probe_y = train_x[0, : budget.batch_size], train_y[0, : budget.batch_size]

    def point(step: int, elapsed: float, metrics: dict[str, Any] | None) -> dict[str, Any]:
        val, probe = jax.device_get(
            (evaluate(state, val_x, val_y, mean, std), _probe(state, probe_x, probe_y))
        )
        entry = {
            "step": step,
            "time_s": round(elapsed, 3),
            "val_bits_per_byte": _finite(val["loss"] / LN2),
            "val_accuracy": _finite(val["accuracy"]),
            "train_loss": None if metrics is None else _finite(metrics["loss"]),
            "learning_rate": None if metrics is None else _finite(metrics["learning_rate"]),
            "probe_loss": _finite(probe["loss"]),
            "probe_grad_sq_norm": _finite(probe["grad_sq_norm"]),
        }
        if "adam_metric_sq_norm" in probe:
            entry["probe_adam_metric_sq_norm"] = _finite(probe["adam_metric_sq_norm"])
        return entry

    curve, elapsed = [point(0, 0.0, None)], 0.0
    for s in range(segments):
        t0 = time.perf_counter()
        state, metrics = epoch(
            state, train_x[s], train_y[s], mean, std, jax.random.fold_in(data_key, s)
        )
        metrics = jax.device_get(metrics)  # the segment's one host sync
        elapsed += time.perf_counter() - t0
        curve.append(point((s + 1) * budget.eval_every, elapsed, metrics))
        if curve[-1]["val_bits_per_byte"] is None:
            break  # diverged: the parameters are not finite
    final = curve[-1]["val_bits_per_byte"]
    return {
        "val_bits_per_byte": final,
        "steps": int(state.step),
        "time_s": round(elapsed, 3),
        "curve": curve,
    }


def _finite(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _score(value: float | None) -> float:
    """A final value for means: a diverged run counts as the uniform model's 8 bits."""
    return 8.0 if value is None else value


def summarize(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, float | None], dict[str, Any]]:
    """Per (optimizer, learning rate): final bits per byte over the seeds, mean and std.

    Example:
      >>> rows = [{"optimizer": "o", "learning_rate": None, "val_bits_per_byte": v}
      ...         for v in (2.0, 3.0)]
      >>> s = summarize(rows)[("o", None)]
      >>> s["mean"], s["diverged"]
      (2.5, 0)
    """
    out: dict[tuple[str, float | None], dict[str, Any]] = {}
    for row in rows:
        key = (row["optimizer"], row.get("learning_rate"))
        cell = out.setdefault(key, {"values": [], "diverged": 0})
        cell["values"].append(_score(row["val_bits_per_byte"]))
        cell["diverged"] += row["val_bits_per_byte"] is None
    for cell in out.values():
        cell["mean"], cell["std"] = C.mean_std(cell["values"])
    return out


def tuned_choice(stats: dict[tuple[str, float | None], dict[str, Any]]) -> float | None:
    """The swept learning rate of the tuned baseline with the lowest mean (or ``None``)."""
    swept = {lr: s["mean"] for (o, lr), s in stats.items() if o == TUNED}
    return min(swept, key=swept.get) if swept else None


def verdict(stats: dict[tuple[str, float | None], dict[str, Any]]) -> dict[str, Any] | None:
    """The goal: the variant's mean within 2% of the tuned baseline's, and no worse than
    any untuned optimizer's mean.

    Example:
      >>> stats = {(VARIANT, None): {"mean": 2.04}, ("adam", None): {"mean": 2.1},
      ...          (TUNED, 1e-3): {"mean": 2.0}, (TUNED, 3e-3): {"mean": 2.2}}
      >>> v = verdict(stats)
      >>> round(v["relative_gap"], 3), v["within_2_percent"], v["best_untuned"], v["met"]
      (0.02, True, 'schedule_free_polyak_adam', True)
    """
    lr = tuned_choice(stats)
    if (VARIANT, None) not in stats or lr is None:
        return None
    mine, tuned = stats[(VARIANT, None)]["mean"], stats[(TUNED, lr)]["mean"]
    untuned = {o: s["mean"] for (o, r), s in stats.items() if o != TUNED}
    best = min(untuned, key=untuned.get)
    gap = (mine - tuned) / tuned
    return {
        "variant": mine,
        "tuned": tuned,
        "tuned_learning_rate": lr,
        "relative_gap": gap,
        "within_2_percent": gap <= GOAL_RELATIVE_GAP + 1e-12,
        "best_untuned": best,
        "best_untuned_bits_per_byte": untuned[best],
        "rank_among_untuned": 1 + sum(v < mine for v in untuned.values()),
        "of_untuned": len(untuned),
        "met": gap <= GOAL_RELATIVE_GAP + 1e-12 and best == VARIANT,
    }


def _step_table(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Per Polyak-type optimizer: mean step size, L and the uncapped variant step."""
    table = []
    for optimizer in _untuned(rows):
        mine = [r for r in rows if r["optimizer"] == optimizer and r["curve"]]
        if not mine:
            continue
        for i in sorted({len(r["curve"]) for r in mine})[:1]:
            points = [e for r in mine for e in r["curve"][1:i]]
            rates = [e["learning_rate"] for e in points if e["learning_rate"] is not None]
            if not rates:
                continue
            ratio = [
                5 * e["probe_loss"] / e["probe_adam_metric_sq_norm"]
                for e in points
                if e.get("probe_adam_metric_sq_norm") and e["probe_loss"] is not None
            ]
            table.append(
                [
                    optimizer,
                    f"{min(rates):.3g} .. {max(rates):.3g}",
                    f"{np.median([e['train_loss'] for e in points if e['train_loss']]):.3f}",
                    f"{np.median([e['probe_grad_sq_norm'] for e in points]):.3g}",
                    f"{min(ratio):.3g} .. {max(ratio):.3g}"
                    if optimizer.startswith(VARIANT) and ratio
                    else "-",
                ]
            )
    return table


def _untuned(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The untuned optimizers (and ablations) present in ``rows``, in their order."""
    return list(dict.fromkeys(r["optimizer"] for r in rows if r["optimizer"] != TUNED))


def markdown(head: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    """The report: the goal's verdict, the head-to-head table, the sweep, the steps."""
    stats = summarize(rows)
    lr = tuned_choice(stats)
    seeds = sorted({r["seed"] for r in rows})
    corpus = head["corpus"]
    title = "Tuning-free head-to-head: a byte-level transformer LM"
    if head["benchmark"].endswith("_ablations"):
        title += ": ablations of the variant (not published defaults, never peers)"
    parts = [C.header_markdown(head, title), ""]
    parts.append(
        f"Corpus: {corpus['files']} `*.py` files of the Python {corpus['python']} standard "
        f"library ({corpus['size']:,} bytes, SHA-256 `{corpus['sha256']}`; "
        f"{corpus['train_bytes']:,} training / {corpus['validation_bytes']:,} validation bytes, "
        "whole files held out). Final validation bits per byte (lower is better), mean ± std "
        f"over {len(seeds)} seed(s); a diverged run counts as 8 bits. Training seconds exclude "
        "compilation and evaluation. Untuned optimizers at their published defaults "
        "(constant); the tuned AdamW (warm-up + cosine) at the best of the swept learning "
        "rates, chosen on the same validation loss."
    )
    v = verdict(stats)
    if v is not None:
        parts += ["", "## The goal", ""]
        parts.append(
            C.markdown_table(
                [
                    "variant (bits/byte)",
                    "tuned AdamW (bits/byte)",
                    "tuned lr",
                    "gap",
                    "within 2%",
                    "best untuned",
                    "its bits/byte",
                    "variant's rank (untuned)",
                    "goal met",
                ],
                [
                    [
                        f"{v['variant']:.4f}",
                        f"{v['tuned']:.4f}",
                        f"{v['tuned_learning_rate']:g}",
                        f"{100 * v['relative_gap']:+.2f}%",
                        "yes" if v["within_2_percent"] else "no",
                        v["best_untuned"],
                        f"{v['best_untuned_bits_per_byte']:.4f}",
                        f"{v['rank_among_untuned']}/{v['of_untuned']}",
                        "yes" if v["met"] else "no",
                    ]
                ],
            )
        )
    table = []
    keys = [(o, None) for o in _untuned(rows)]
    if lr is not None:
        keys.append((TUNED, lr))
    best = min(stats[k]["mean"] for k in keys) if keys else None
    for key in keys:
        s = stats[key]
        mine = [r for r in rows if (r["optimizer"], r.get("learning_rate")) == key]
        value = f"{s['mean']:.4f} ± {s['std']:.4f}"
        if s["diverged"]:
            value += f" ({s['diverged']}/{len(s['values'])} diverged)"
        name = key[0] if key[1] is None else f"{key[0]} (tuned, lr {key[1]:g})"
        table.append(
            [
                f"**{name}**" if key[0] == VARIANT else name,
                f"**{value}**" if s["mean"] == best else value,
                f"{np.mean([r['time_s'] for r in mine]):.1f}",
            ]
        )
    parts += ["", "## Head-to-head", ""]
    parts.append(C.markdown_table(["optimizer", "val bits/byte", "train s"], table))
    sweep = sorted(lr_ for (o, lr_) in stats if o == TUNED)
    if sweep:
        parts += ["", f"## The tuned baseline's sweep ({TUNED})", ""]
        parts.append(
            C.markdown_table(
                ["peak lr", "val bits/byte", "chosen"],
                [
                    [
                        f"{x:g}",
                        f"{stats[(TUNED, x)]['mean']:.4f} ± {stats[(TUNED, x)]['std']:.4f}",
                        "yes" if x == lr else "",
                    ]
                    for x in sweep
                ],
            )
        )
    steps = _step_table(rows)
    if steps:
        parts += ["", "## Step sizes of the optimizers that report one", ""]
        parts.append(
            "Per evaluation segment: the segment's mean step size (the Polyak methods' "
            "learning rate from their state), the segment's mean training loss L, and at "
            "the training iterate on one fixed training batch the squared gradient norm and, "
            "for the variant and its ablations, the uncapped Polyak step at f* = 0, "
            "5 L / g^T D^-1 g (D from the state's second moment), to set against the cap "
            "(1e-2 but where an ablation changes it). Ranges over the segments and seeds; "
            "medians for L and the squared gradient norm."
        )
        parts.append("")
        parts.append(
            C.markdown_table(
                [
                    "optimizer",
                    "step size",
                    "median L",
                    "median sq. grad norm",
                    "uncapped Polyak step at f* = 0",
                ],
                steps,
            )
        )
    return "\n".join(parts) + "\n"


def plot(out_dir: Path, rows: Sequence[dict[str, Any]], benchmark: str = BENCHMARK) -> Path:
    """Mean validation bits per byte against steps, one line per optimizer (the tuned
    baseline at its chosen learning rate, the other swept rates dashed)."""
    plt = C.pyplot()
    stats = summarize(rows)
    chosen = tuned_choice(stats)
    fig, ax = plt.subplots(figsize=(8, 5))
    palette = plt.get_cmap("tab10")
    colors = [palette(i) for i in range(10) if i != 3]  # red is the tuned baseline's
    lines = [(o, None) for o in _untuned(rows)] + sorted(k for k in stats if k[0] == TUNED)
    for i, (optimizer, lr) in enumerate(lines):
        curves = [
            r["curve"]
            for r in rows
            if r["optimizer"] == optimizer and r.get("learning_rate") == lr and r["curve"]
        ]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        steps = [e["step"] for e in curves[0][:length]]
        values = np.mean(
            [[_score(e["val_bits_per_byte"]) for e in c[:length]] for c in curves], axis=0
        )
        if optimizer == VARIANT:
            style = {"lw": 3, "color": "black", "label": optimizer}
        elif optimizer == TUNED:
            style = {"lw": 2 if lr == chosen else 0.8, "color": "tab:red",
                     "ls": "-" if lr == chosen else ":", "label": f"{TUNED} lr {lr:g}"
                     + (" (tuned)" if lr == chosen else "")}  # fmt: skip
        else:
            style = {"lw": 1.2, "color": colors[i % len(colors)], "label": optimizer}
        ax.plot(steps, values, marker="o", ms=2, **style)
    ax.set_xlabel("optimizer steps")
    ax.set_ylabel("validation bits per byte (mean over seeds)")
    finals = [_score(r["val_bits_per_byte"]) for r in rows]
    if finals:
        ax.set_ylim(min(finals) - 0.2, min(8.2, max(np.percentile(finals, 90) + 1.5, 3)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("byte-level GPT on the Python standard library")
    return C.save_figure(fig, C.png_path(out_dir, benchmark))


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the head-to-head and the tuned baseline's sweep; writes the results; 0."""
    parser = C.base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--optimizers", nargs="+", choices=(*UNTUNED, TUNED, *ABLATIONS), default=None
    )
    parser.add_argument(
        "--ablations",
        action="store_true",
        help="run the variant's ablations (default: all of ABLATIONS; never peers) into "
        f"{BENCHMARK}_ablations-<device>.md/.json/.png",
    )
    parser.add_argument(
        "--sweep-lrs", nargs="+", type=float, default=None, help=f"default {SWEEP_LRS}"
    )
    parser.add_argument(
        "--seeds", type=C.positive_int, default=None, help="seeds 0..N-1 (default 3; smoke 1)"
    )
    parser.add_argument("--steps", type=C.positive_int, default=None, help="override the grid's")
    parser.add_argument("--compile-cache", type=Path, default=None)
    args = parser.parse_args(argv)
    grid = C.grid_of(args)
    budget, note = GRIDS[grid], NOTES[grid]
    if args.steps is not None:
        budget = budget._replace(steps=max(args.steps, budget.eval_every))
        note += f" Overridden: steps={budget.steps}."
    if any(lr <= 0 or not math.isfinite(lr) for lr in args.sweep_lrs or ()):
        parser.error(f"--sweep-lrs must be positive numbers, got {args.sweep_lrs}")
    tf._use_compile_cache(args.compile_cache)
    optimizers = args.optimizers or list(ABLATIONS if args.ablations else (*UNTUNED, TUNED))
    benchmark = BENCHMARK + ("_ablations" if args.ablations else "")
    sweep = tuple(args.sweep_lrs or SWEEP_LRS)
    seeds = range(args.seeds or (1 if grid == "smoke" else 3))
    ds, val_x, val_y, corpus = corpus_windows(budget)
    settings = {
        **budget._asdict(),
        "optimizers": optimizers,
        "sweep_lrs": list(sweep),
        "seeds": list(seeds),
        "warmup_fraction": WARMUP_FRACTION,
        "final_lr_fraction": FINAL_LR_FRACTION,
        "params": models.param_count(budget.model, (budget.context,), text.VOCAB),
    }
    head = {**C.header(BENCHMARK, grid, note, settings), "corpus": corpus, "benchmark": benchmark}
    problem = f"{budget.model}_python_stdlib"
    runs = [(o, None) for o in optimizers if o != TUNED]
    if TUNED in optimizers:
        runs += [(TUNED, lr) for lr in sweep]
    rows = []
    for optimizer, lr in runs:
        for seed in seeds:
            r = train_once(optimizer, seed, budget, (ds, val_x, val_y), lr)
            jax.clear_caches()  # the persistent cache keeps the code for the next seed
            C.log(
                f"{optimizer}{'' if lr is None else f' lr {lr:g}'} seed {seed}: "
                f"{r['val_bits_per_byte']} bits/byte, {r['time_s']:.1f} s"
            )
            rows.append(
                {
                    "problem": problem,
                    "optimizer": optimizer,
                    "schedule": "warmup_cosine" if optimizer == TUNED else "constant",
                    "seed": seed,
                    "tuned": optimizer == TUNED,
                    "learning_rate": lr,
                    **r,
                }
            )
    stats = summarize(rows)
    lr = tuned_choice(stats)
    for row in rows:
        if row["tuned"]:
            row["chosen"] = row["learning_rate"] == lr
    payload = {**head, "variant": VARIANT, "verdict": verdict(stats), "rows": rows}
    report = markdown(head, rows)
    C.write_results(args.out_dir, benchmark, payload, report)
    plot(args.out_dir, rows, benchmark)
    print(report)
    return 0


if __name__ == "__main__":
    xla_flags.apply()  # the training app's XLA:CPU flags, before jax starts its backends
    raise SystemExit(main())
