"""Thesis Table 2.1: minibatch persistency K on the reduced AlexNet, batch x lr x K.

``python -m benchmarks.thesis_persistency [--grid full|reduced|smoke] [--data-dir DIR]``

The thesis's setup (chapter 2): SGD with momentum 0.5 and a constant learning rate
(0.001 or 0.01), batch 32 / 256 / 512, persistency K = 1 / 2 / 5, no augmentation, no
dropout, no weight decay (the thesis states none; ``--weight-decay`` tries one),
cross-entropy loss, 100 epochs. Each run is one :func:`train.run.run`, the training
function of ``python -m train`` (see :mod:`benchmarks._thesis`): AOT-compiled, compile
time excluded, the test set evaluated after every epoch (evaluation excluded from the time
axis), a non-finite training loss ends the run there. The report gives, per configuration and K, the
best test accuracy with the training time and epoch where it was first reached and the
lowest test loss likewise (Table 2.1's columns), the curves against time and against
epochs (PNG), and which of the thesis's claims hold in this run.

Data: Fashion-MNIST (Debian's IDX files or ``--data-dir``); ``--dataset cifar10`` with a
``--data-dir`` holding ``cifar-10-batches-py`` runs the thesis's own data set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from benchmarks import _common as C
from benchmarks import _thesis as T
from train.config import Config
from train.platform import xla_flags

BENCHMARK = "thesis_persistency"
MOMENTUM = 0.5  # thesis section 2.2

GRIDS: dict[str, dict[str, Any]] = {
    "full": {
        "model": "alexnet",
        "dataset": "fashion_mnist",
        "batch_sizes": (32, 256, 512),
        "learning_rates": (0.001, 0.01),
        "persistencies": (1, 2, 5),
        "epochs": 100,
        "train_subset": None,
        "test_subset": None,
        "seeds": (0,),
        "weight_decay": T.WEIGHT_DECAY,
    },
    "reduced": {
        "model": "lenet5",
        "dataset": "fashion_mnist",
        "batch_sizes": (32, 256, 512),
        "learning_rates": (0.001, 0.01),
        "persistencies": (1, 2, 5),
        "epochs": 12,
        "train_subset": 4096,
        "test_subset": 2000,
        "seeds": (0,),
        "weight_decay": T.WEIGHT_DECAY,
    },
    "smoke": {
        "model": "tiny",
        "dataset": "synthetic",
        "batch_sizes": (8,),
        "learning_rates": (0.01,),
        "persistencies": (1, 2),
        "epochs": 2,
        "train_subset": 32,
        "test_subset": 16,
        "seeds": (0,),
        "weight_decay": T.WEIGHT_DECAY,
    },
}
GRID_NOTES = {
    "full": "",
    "reduced": "CPU grid: LeNet-5 instead of the reduced AlexNet (AlexNet trains at about 100 "
    "images/s on 2 CPU cores, 10 minutes per Fashion-MNIST epoch), a class-balanced "
    "4,096-image training subset, a 2,000-image test subset, 12 epochs instead of 100, one "
    "seed; the full batch x lr x K grid. Full grid (AlexNet, full data, 100 epochs): "
    "`--grid full`.",
    "smoke": "smoke test: the tiny test model on synthetic 8x8x1 data; numbers mean nothing.",
}


def config_name(batch_size: int, lr: float) -> str:
    """Table 2.1's row label, e.g. ``512_01`` for batch 512 and lr 0.01.

    Example:
      >>> config_name(32, 0.001), config_name(512, 0.01)
      ('32_001', '512_01')
    """
    text = f"{lr:g}"
    return f"{batch_size}_{text[2:] if text.startswith('0.') else text.replace('.', '')}"


def make_config(
    grid: dict[str, Any], *, batch_size: int, learning_rate: float, persistency: int, seed: int
) -> Config:
    """The :class:`train.config.Config` of one Table 2.1 run of ``grid``.

    Example:
      >>> c = make_config(GRIDS["smoke"], batch_size=8, learning_rate=0.01, persistency=2,
      ...                 seed=0)
      >>> c.optimizer, c.schedule, c.momentum, c.persistency, c.augment, c.weight_decay
      ('sgd', 'constant', 0.5, 2, False, 0.0)
    """
    return Config(
        model=grid["model"],
        dataset=grid["dataset"],
        optimizer="sgd",
        schedule="constant",
        learning_rate=learning_rate,
        momentum=MOMENTUM,
        weight_decay=grid["weight_decay"],
        batch_size=batch_size,
        persistency=persistency,
        epochs=grid["epochs"],
        train_subset=grid["train_subset"],
        augment=False,
        seed=seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the grid; prints Table 2.1; writes the .md/.json/.png. Returns 0."""
    parser = C.base_parser(__doc__.splitlines()[0])
    T.add_training_flags(parser)
    parser.add_argument("--batch-sizes", type=C.positive_int, nargs="+")
    parser.add_argument("--learning-rates", type=float, nargs="+")
    parser.add_argument("--persistencies", type=C.positive_int, nargs="+")
    args = parser.parse_args(argv)
    grid_name, grid, note = C.chosen_grid(
        args,
        GRIDS,
        GRID_NOTES,
        {
            **T.training_overrides(args),
            "batch_sizes": args.batch_sizes,
            "learning_rates": args.learning_rates,
            "persistencies": args.persistencies,
        },
    )
    ds = T.load_data(grid["dataset"], args.data_dir, grid["train_subset"], grid["test_subset"])
    settings = {
        **grid,
        "momentum": MOMENTUM,
        "optimizer": "sgd (heavy-ball momentum, constant lr)",
        "augment": False,
        **T.data_settings(ds),
    }
    head = C.header(BENCHMARK, grid_name, note, settings)
    C.log(
        f"{BENCHMARK} on {head['device']}, grid {grid_name}: {settings['train_size']} train "
        f"/ {settings['test_size']} test images from {ds.source}"
    )

    runs = []
    for b in grid["batch_sizes"]:
        steps_per_epoch = len(ds.train_labels) // b
        for lr in grid["learning_rates"]:
            for k in grid["persistencies"]:
                for seed in grid["seeds"]:
                    config = make_config(
                        grid, batch_size=b, learning_rate=lr, persistency=k, seed=seed
                    )
                    out = T.train_one(config, ds)
                    summary = C.best_and_lowest(out["history"])
                    runs.append(
                        {
                            "config": config_name(b, lr),
                            "batch_size": b,
                            "learning_rate": lr,
                            "K": k,
                            "seed": seed,
                            "steps_per_epoch": steps_per_epoch,
                            **summary,
                            **out,
                        }
                    )
                    diverged = out["diverged_epoch"]
                    C.log(
                        f"  {config_name(b, lr)} K={k} seed={seed}: best acc "
                        f"{summary['max_accuracy']:.4f} (epoch {summary['max_accuracy_epoch']}),"
                        f" {T.total_time(out['history']):.1f}s training"
                        + (f"; diverged in epoch {diverged}" if diverged else "")
                    )

    rows = table_rows(runs)
    claims = evaluate_claims(runs, grid)
    payload = {**head, "rows": rows, "claims": claims, "runs": runs}
    figures = plot(runs, args.out_dir, grid_name, head["device"], grid["model"], grid["dataset"])
    payload["figures"] = [p.name for p in figures]
    markdown = render(payload)
    C.write_results(args.out_dir, BENCHMARK, payload, markdown)
    print(markdown)
    return 0


def table_rows(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table 2.1: one row per (configuration, K), mean and std over seeds."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["config"], r["K"]), []).append(r)
    rows = []
    for (config, k), rs in groups.items():
        row: dict[str, Any] = {
            "config": config,
            "batch_size": rs[0]["batch_size"],
            "learning_rate": rs[0]["learning_rate"],
            "K": k,
            "seeds": len(rs),
        }
        for key in (
            "max_accuracy",
            "max_accuracy_time_s",
            "max_accuracy_epoch",
            "min_loss",
            "min_loss_time_s",
            "min_loss_epoch",
        ):
            vals = [float("nan") if x[key] is None else float(x[key]) for x in rs]
            row[key], row[key + "_std"] = C.mean_std(vals)
        row["total_time_s"] = C.mean_std([T.total_time(x["history"]) for x in rs])[0]
        row["epoch_time_s"] = C.mean_std(
            [C.median([h["epoch_time"] for h in x["history"]] or [math.nan]) for x in rs]
        )[0]
        rows.append(row)
    return rows


def _best_within(history: Sequence[dict[str, Any]], seconds: float) -> float:
    vals = [h["test_accuracy"] for h in history if h["time"] <= seconds * 1.0001]
    return max(vals) if vals else float("nan")


def _diverged(*runs: dict[str, Any]) -> str:
    """``"; K=5 diverged in epoch 3"`` for the runs that diverged, or ``""``."""
    return "".join(
        f"; K={r['K']} diverged in epoch {r['diverged_epoch']}"
        for r in runs
        if r.get("diverged_epoch")
    )


def evaluate_claims(runs: Sequence[dict[str, Any]], grid: dict[str, Any]) -> list[dict[str, Any]]:
    """Checks the thesis's chapter-2 claims on these runs (first seed of each run).

    * K = 2 helps at large batches (256, 512): higher best accuracy than K = 1, and within
      K = 1's total training time;
    * K = 5 overfits sooner: its lowest test loss comes at an earlier epoch than K = 1's
      and the loss then rises;
    * a K = 5 epoch costs less than 5x a K = 1 epoch (thesis: ~3x at batch 32).

    A run that diverged is judged on its finite epochs, and the evidence says so; a run
    without a finite epoch takes part in no claim.
    """
    by = {(r["config"], r["K"]): r for r in runs if r["seed"] == grid["seeds"][0]}
    configs = list(dict.fromkeys(r["config"] for r in runs))
    claims = []
    for config in configs:
        r1, r2, r5 = (by.get((config, k)) for k in (1, 2, 5))
        r2, r5 = (r if r is not None and r["history"] else None for r in (r2, r5))
        if r1 is None or not r1["history"]:
            continue
        b = r1["batch_size"]
        if r2 is not None and b >= 256:
            t1 = T.total_time(r1["history"])
            at_time = _best_within(r2["history"], t1)
            holds = r2["max_accuracy"] > r1["max_accuracy"]
            claims.append(
                {
                    "claim": "K=2 helps at large batches",
                    "config": config,
                    "holds": bool(holds),
                    "evidence": f"best acc K=1 {r1['max_accuracy']:.4f}, "
                    f"K=2 {r2['max_accuracy']:.4f} (K=2 within K=1's {t1:.1f}s: {at_time:.4f})"
                    + _diverged(r1, r2),
                }
            )
        if r5 is not None:
            e1, e5 = r1["min_loss_epoch"], r5["min_loss_epoch"]
            last = r1["history"][-1]["epoch"]
            rises = r5["history"][-1]["test_loss"] > r5["min_loss"] * 1.02
            if e1 == last and e5 == last:
                verdict: bool | None = None
                evidence = (
                    f"not testable in {last} epochs: the lowest test loss is at the "
                    f"last epoch for K=1 and K=5"
                )
            else:
                verdict = bool(e5 < e1 and rises)
                evidence = (
                    f"lowest test loss at epoch {e5} for K=5 vs {e1} for K=1; K=5's "
                    f"final loss {r5['history'][-1]['test_loss']:.4f} vs its minimum "
                    f"{r5['min_loss']:.4f}"
                )
            claims.append(
                {
                    "claim": "K=5 overfits sooner",
                    "config": config,
                    "holds": verdict,
                    "evidence": evidence + _diverged(r1, r5),
                }
            )
            ratio = C.median([h["epoch_time"] for h in r5["history"]]) / C.median(
                [h["epoch_time"] for h in r1["history"]]
            )
            claims.append(
                {
                    "claim": "a K=5 epoch costs < 5x a K=1 epoch",
                    "config": config,
                    "holds": bool(ratio < 5.0),
                    "evidence": f"K=5 / K=1 epoch time {ratio:.2f}x",
                }
            )
    return claims


def plot(
    runs: Sequence[dict[str, Any]],
    out_dir: Any,
    grid_name: str,
    device: str,
    model: str,
    dataset: str,
) -> list[Any]:
    """Two PNGs (test accuracy, test loss): per configuration against time and epochs."""
    plt = C.pyplot()
    configs = list(dict.fromkeys(r["config"] for r in runs))
    colors = {1: "tab:blue", 2: "tab:orange", 5: "tab:green"}
    paths = []
    for metric, label in (("test_accuracy", "accuracy"), ("test_loss", "loss")):
        fig, axes = plt.subplots(
            len(configs), 2, figsize=(8, 2.0 * len(configs) + 0.6), squeeze=False
        )
        for i, config in enumerate(configs):
            for r in runs:
                if r["config"] != config:
                    continue
                t = [h["time"] for h in r["history"]]
                e = [h["epoch"] for h in r["history"]]
                y = [h[metric] for h in r["history"]]
                kw = {
                    "color": colors.get(r["K"]),
                    "lw": 1.2,
                    "marker": ".",
                    "ms": 3,
                    "label": f"K={r['K']}" if r["seed"] == runs[0]["seed"] else None,
                }
                axes[i, 0].plot(t, y, **kw)
                axes[i, 1].plot(e, y, **kw)
            axes[i, 0].set_ylabel(f"{config}\ntest {label}", fontsize=8)
            for ax in axes[i]:
                ax.tick_params(labelsize=7)
                ax.grid(alpha=0.3)
            axes[i, 0].legend(fontsize=7)
        axes[-1, 0].set_xlabel("training time (s)", fontsize=8)
        axes[-1, 1].set_xlabel("epoch", fontsize=8)
        fig.suptitle(
            f"Table 2.1 grid: {model} on {dataset}, test {label} ({device}, {grid_name} grid)",
            fontsize=9,
        )
        fig.tight_layout()
        paths.append(C.save_figure(fig, C.png_path(out_dir, BENCHMARK, label)))
    return paths


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _lines(text: str) -> list[str]:
    return [text, ""] if text else []


def render(payload: dict[str, Any]) -> str:
    """The Markdown report of a payload written by :func:`main`."""
    s = payload["settings"]

    def pm(row: dict[str, Any], key: str, fmt: str) -> str:
        v, sd = row[key], row[key + "_std"]
        if _missing(v):
            return "-"
        return format(v, fmt) + (f" ± {format(sd, fmt)}" if row["seeds"] > 1 else "")

    table = [
        [
            r["config"],
            r["K"],
            pm(r, "max_accuracy", ".4f"),
            pm(r, "max_accuracy_time_s", ".1f"),
            pm(r, "max_accuracy_epoch", ".0f"),
            pm(r, "min_loss", ".4f"),
            pm(r, "min_loss_time_s", ".1f"),
            pm(r, "min_loss_epoch", ".0f"),
            "-" if _missing(r["epoch_time_s"]) else f"{r['epoch_time_s']:.2f}",
        ]
        for r in payload["rows"]
    ]
    verdict = {True: "holds", False: "does not hold", None: "not testable"}
    claims = [
        [c["claim"], c["config"], verdict[c["holds"]], c["evidence"]] for c in payload["claims"]
    ]
    lines = [
        C.header_markdown(payload, "Thesis Table 2.1: minibatch persistency"),
        f"{s['model']} on {s['dataset']} ({s['train_size']} training / {s['test_size']} test "
        f"images, {'x'.join(map(str, s['image_shape']))}), SGD momentum {s['momentum']} with "
        f"a constant learning rate, no augmentation, weight decay "
        f"{s.get('weight_decay', 0.0):g}, {s['epochs']} epochs, seeds "
        f"{list(s['seeds'])}. Config `m_lr` as in the thesis (`512_01` = batch 512, lr 0.01). "
        "Time = training seconds (compile and evaluation excluded); loss = mean per-example "
        "cross entropy (the thesis's loss column is on another scale).",
        "",
        C.markdown_table(
            [
                "config",
                "K",
                "max acc",
                "time (s)",
                "epoch",
                "min loss",
                "time (s)",
                "epoch",
                "s / epoch",
            ],
            table,
        ),
        "",
        *_lines(
            T.diverged_note(payload["runs"], lambda r: f"{r['config']} K={r['K']} seed {r['seed']}")
        ),
        "The thesis's claims, checked on this run:",
        "",
        C.markdown_table(["claim", "config", "here", "evidence"], claims),
        "",
        "Curves: " + ", ".join(f"![{p}]({p})" for p in payload.get("figures", [])),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    xla_flags.apply()  # the training app's XLA:CPU flags, before jax starts its backends
    raise SystemExit(main())
