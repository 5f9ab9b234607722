"""Tuning-free head-to-head: adaptive Nesterov against optax's learning-rate-free optimizers.

``python -m benchmarks.tuning_free [--grid full|reduced|smoke] [--problems ...]
[--optimizers ...] [--seeds N]``

Every optimizer runs at its published defaults, the same on every problem (no tuning),
in two schedule columns: ``constant`` and ``annealed``, where one shared one-cycle
multiplier (``po.onecycle_schedule``: warm-up over 30% of the steps from 1/25, cosine
down to 1/25e4) multiplies each optimizer's learning rate; for the Polyak methods that
rate is the ceiling of the step, for ``polyak_sgd`` its ``scaling``. Schedule-free
optimizers (the library's ``schedule_free_polyak_adam`` and ``schedule_free_polyak``
among them) are evaluated at their averaged parameters (``schedule_free_eval_params``),
as their authors prescribe. The verdicts judge ``schedule_free_polyak_adam`` against
every other optimizer of the grid, the library's other presets ``schedule_free_polyak``
and ``tuning_free_nesterov`` included.

Reported per (problem, optimizer, schedule) over the seeds: final test accuracy as
mean ± std and the training time (compilation and evaluation excluded) until the test
accuracy first reaches the problem's target at an epoch's end (``null`` when never).
Outputs ``results/tuning_free-<device>.md`` (tables), ``.json`` (raw rows: problem,
optimizer, schedule, seed, test_accuracy, time_to_target_s, and the per-epoch curves)
and ``-<problem>.png`` (test accuracy against epochs, one panel per schedule).

One function, :func:`train_once`, does one run through :func:`train.run.run` (the
training app's own epochs), with this script's optimizer builder passed as ``tx=``.

The seeds of a cell run the same programs, so the script turns on JAX's persistent
compilation cache (a temporary folder, or ``--compile-cache DIR`` to keep it): seeds 1 and
2 load the executables seed 0 compiled. Compilation is never part of a reported time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

import polyak_optax as po
from benchmarks import _common as C
from train import data as data_lib
from train.config import Config
from train.platform import xla_flags
from train.run import Diverged, run

BENCHMARK = "tuning_free"
VARIANT = "schedule_free_polyak_adam"  # the library preset the verdicts judge
SCHEDULES = ("constant", "annealed")


class Problem(NamedTuple):
    """One benchmark problem; ``train_subset``/``epochs`` are the full-grid sizes."""

    model: str
    dataset: str
    augment: bool
    batch_size: int
    epochs: int
    train_subset: int | None
    target: float  # test accuracy whose first crossing is timed
    rationale: str


PROBLEMS: dict[str, Problem] = {
    "lenet5": Problem(
        "lenet5",
        "fashion_mnist",
        False,
        128,
        10,
        None,
        0.88,
        "the project's main job: a small non-BN CNN that can interpolate its data (f* ~ 0)",
    ),
    "bn_cnn_aug": Problem(
        "bn_cnn",
        "fashion_mnist",
        True,
        128,
        10,
        None,
        0.88,
        "batch norm makes the loss scale-invariant in the conv weights; augmentation "
        "keeps the training loss far from 0",
    ),
    "logreg": Problem(
        "linear",
        "fashion_mnist",
        False,
        128,
        10,
        None,
        0.83,
        "multinomial logistic regression on pixels: convex, and f* > 0 (it cannot "
        "interpolate), the classic weak spot of Polyak steps",
    ),
    "char_mlp": Problem(
        "mlp",
        "license_chars",
        False,
        128,
        10,
        None,
        0.45,
        "not vision: next-character prediction (30 classes) by an MLP on 12 one-hot "
        "characters of the Debian license texts; high label noise, f* far above 0",
    ),
}

# The reduced (CPU) grid: subsets and epochs per problem; every other setting as in full.
REDUCED: dict[str, dict[str, Any]] = {
    "lenet5": {"train_subset": 2_500, "epochs": 2, "batch_size": 32, "test_subset": 3_000},
    "bn_cnn_aug": {"train_subset": 4_000, "epochs": 2, "batch_size": 64, "test_subset": 5_000},
    "logreg": {"train_subset": 30_000, "epochs": 3},
    "char_mlp": {"train_subset": 20_000, "epochs": 3},
}
SMOKE: dict[str, Any] = {"train_subset": 256, "epochs": 1, "test_subset": 256}
REDUCED_NOTE = (
    "CPU grid (2 cores shared with other jobs): lenet5 on 2,500 class-balanced training "
    "images for 2 epochs at batch 32, first 3,000 test images; bn_cnn_aug on 4,000 images "
    "for 2 epochs at batch 64, first 5,000 test images; logreg on 30,000 images for 3 "
    "epochs (batch 128, full test set); char_mlp on 20,000 random windows for 3 epochs "
    "(batch 128, full test text). Targets as in the full grid except lenet5 0.75 and "
    "bn_cnn_aug 0.70."
)
REDUCED_TARGETS = {"lenet5": 0.75, "bn_cnn_aug": 0.70}


def _lr(base: float, multiplier: Callable[[jax.Array], jax.Array] | None) -> Any:
    """``base``, or the schedule ``base * multiplier(count)``."""
    if multiplier is None:
        return base
    return lambda count: base * multiplier(count)


# name -> factory(multiplier or None) -> optimizer, each at its published defaults.
OPTIMIZERS: dict[str, Callable[[Any], optax.GradientTransformation]] = {
    VARIANT: lambda m: po.schedule_free_polyak_adam(max_learning_rate=_lr(1e-2, m)),
    "schedule_free_polyak": lambda m: po.schedule_free_polyak(max_learning_rate=_lr(1.0, m)),
    "tuning_free_nesterov": lambda m: po.tuning_free_nesterov(max_learning_rate=_lr(1.0, m)),
    "adaptive_nesterov": lambda m: po.adaptive_nesterov(max_learning_rate=_lr(0.1, m)),
    "nesterov": lambda m: optax.sgd(_lr(0.01, m), momentum=0.9, nesterov=True),
    "adam": lambda m: optax.adam(_lr(1e-3, m)),
    "polyak_sgd": lambda m: optax.polyak_sgd(scaling=_lr(1.0, m)),
    "momo": lambda m: optax.contrib.momo(_lr(1.0, m)),
    "momo_adam": lambda m: optax.contrib.momo_adam(_lr(1e-2, m)),
    "prodigy": lambda m: optax.contrib.prodigy(_lr(1.0, m)),
    "dadapt_adamw": lambda m: optax.contrib.dadapt_adamw(_lr(1.0, m)),
    "dog": lambda m: optax.contrib.dog(_lr(1.0, m)),
    "schedule_free_sgd": lambda m: optax.contrib.schedule_free_sgd(_lr(1.0, m)),
    "schedule_free_adamw": lambda m: optax.contrib.schedule_free_adamw(_lr(0.0025, m)),
}
# Ablations of the variant (not published defaults, so never peers; ``--ablations`` runs
# them into their own report): name -> (the training app's registry name, factory).
ABLATIONS: dict[str, tuple[str, Callable[[Any], optax.GradientTransformation]]] = {
    # schedule-free AdamW at the variant's cap, without the Polyak step or the follow rule
    "schedule_free_adamw_1e-2": (
        "schedule_free_adamw",
        lambda m: optax.contrib.schedule_free_adamw(_lr(1e-2, m)),
    ),
    # the variant without its Polyak step (gamma so large that the step is the cap)
    "schedule_free_polyak_adam_no_polyak": (
        VARIANT,
        lambda m: po.schedule_free_polyak_adam(max_learning_rate=_lr(1e-2, m), confidence=1e30),
    ),
    # the variant at other confidences: SPS's own 2, 3, 4
    **{
        f"schedule_free_polyak_adam_gamma{gamma}": (
            VARIANT,
            lambda m, gamma=gamma: po.schedule_free_polyak_adam(
                max_learning_rate=_lr(1e-2, m), confidence=float(gamma)
            ),
        )
        for gamma in (2, 3, 4)
    },
}


def factory_of(optimizer: str) -> Callable[[Any], optax.GradientTransformation]:
    """The factory ``multiplier -> optimizer`` of a grid optimizer or an ablation."""
    return ABLATIONS[optimizer][1] if optimizer in ABLATIONS else OPTIMIZERS[optimizer]


def load_problem_data(problem: Problem, train_subset: int | None, seed: int = 0):
    """The problem's ``Dataset`` (subsets: class-balanced images, random text windows)."""
    return data_lib.load_dataset(problem.dataset, train_subset=train_subset, seed=seed)


_PREPARED: dict[tuple[str, int | None, int | None], Any] = {}


def _prepare(name: str, train_subset: int | None, test_subset: int | None) -> Any:
    """The problem's data set, its test set cut to ``test_subset`` (loaded once)."""
    key = (name, train_subset, test_subset)
    if key not in _PREPARED:
        ds = load_problem_data(PROBLEMS[name], train_subset)
        _PREPARED[key] = ds._replace(
            test_images=ds.test_images[:test_subset], test_labels=ds.test_labels[:test_subset]
        )
    return _PREPARED[key]


def make_tx(optimizer: str, schedule: str, epochs: int) -> Callable[[int], Any]:
    """The builder ``steps_per_epoch -> optimizer`` that :func:`train.run.run` calls:
    the optimizer at its published defaults, its learning rate (the ceiling for the
    Polyak methods) multiplied by one-cycle when ``schedule`` is ``annealed``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")

    def build(steps_per_epoch: int) -> Any:
        multiplier = None
        if schedule == "annealed":
            multiplier = po.onecycle_schedule(epochs * steps_per_epoch, 1.0)
        return factory_of(optimizer)(multiplier)

    return build


def train_once(
    problem: str,
    optimizer: str,
    schedule: str,
    seed: int,
    *,
    epochs: int | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    batch_size: int | None = None,
    target: float | None = None,
) -> dict[str, Any]:
    """One run through :func:`train.run.run`; the final accuracy, time to target, curves.

    Args:
      problem: a key of :data:`PROBLEMS`.
      optimizer: a key of :data:`OPTIMIZERS` (also the training app's registry name,
        which gives schedule-free its averaged evaluation parameters) or of
        :data:`ABLATIONS`.
      schedule: ``constant`` or ``annealed`` (the shared one-cycle multiplier).
      seed: initialization and data-order seed.
      epochs, train_subset, test_subset, batch_size: sizes (default: the problem's full
        grid).
      target: the test accuracy whose first crossing is timed (default: the problem's).

    Returns:
      ``{"test_accuracy", "time_to_target_s", "epochs": [{"epoch", "time_s",
      "train_loss", "test_loss", "test_accuracy"}, ...]}``; a diverged run keeps its
      finite epochs and reports the accuracy of the last one (0.0 if none).
    """
    spec = PROBLEMS[problem]
    epochs = spec.epochs if epochs is None else epochs
    train_subset = spec.train_subset if train_subset is None else train_subset
    target = spec.target if target is None else target
    config = Config(
        model=spec.model,
        dataset=spec.dataset,
        optimizer=ABLATIONS[optimizer][0] if optimizer in ABLATIONS else optimizer,
        schedule="constant",  # the optimizer (built below) carries the schedule
        batch_size=spec.batch_size if batch_size is None else batch_size,
        epochs=epochs,
        augment=spec.augment,
        seed=seed,
        num_devices=1,
        progress=False,
    )
    try:
        history = run(
            config,
            dataset=_prepare(problem, train_subset, test_subset),
            log=None,
            tx=make_tx(optimizer, schedule, epochs),
        )
    except Diverged as stop:
        history = stop.history
    curve, elapsed, time_to_target = [], 0.0, None
    for record in history:
        elapsed += record["epoch_time"]
        acc = record["test_accuracy"]
        if time_to_target is None and acc is not None and acc >= target:
            time_to_target = elapsed
        curve.append(
            {
                "epoch": record["epoch"],
                "time_s": elapsed,
                "train_loss": record["train_loss"],
                "test_loss": record["test_loss"],
                "test_accuracy": acc,
            }
        )
    final = curve[-1]["test_accuracy"] if curve else None
    return {
        "test_accuracy": 0.0 if final is None else final,
        "time_to_target_s": time_to_target,
        "epochs": curve,
    }


def grid_sizes(grid: str, name: str) -> dict[str, Any]:
    """``train_once`` size keywords of ``problem`` on ``grid`` (full: the problem's own)."""
    if grid == "full":
        return {}
    if grid == "smoke":
        return dict(SMOKE)
    sizes = dict(REDUCED[name])
    if name in REDUCED_TARGETS:
        sizes["target"] = REDUCED_TARGETS[name]
    return sizes


def summarize(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Per (problem, optimizer, schedule): accuracies, mean, std and mean time to target.

    Example:
      >>> rows = [{"problem": "p", "optimizer": "o", "schedule": "constant", "seed": s,
      ...          "test_accuracy": a, "time_to_target_s": t}
      ...         for s, a, t in [(0, 0.8, 1.0), (1, 0.9, None)]]
      >>> s = summarize(rows)[("p", "o", "constant")]
      >>> round(s["mean"], 3), s["reached"], s["time_to_target_s"]
      (0.85, 1, 1.0)
    """
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["problem"], row["optimizer"], row["schedule"])
        out.setdefault(key, {"accs": [], "times": [], "no_finite_epoch": 0})
        out[key]["accs"].append(row["test_accuracy"])
        # a run whose very first epoch was not finite counts as 0.0 (the format)
        out[key]["no_finite_epoch"] += row.get("curve", None) == []
        if row["time_to_target_s"] is not None:
            out[key]["times"].append(row["time_to_target_s"])
    for s in out.values():
        s["mean"], s["std"] = C.mean_std(s["accs"])
        s["reached"] = len(s["times"])
        s["time_to_target_s"] = float(np.mean(s["times"])) if s["times"] else None
    return out


#: The library's own optimizers of the grid; every other one comes from optax or
#: optax.contrib: the alternatives a user has without this library.
LIBRARY_OPTIMIZERS = frozenset(
    {VARIANT, "schedule_free_polyak", "tuning_free_nesterov", "adaptive_nesterov"}
)


def verdicts(
    stats: dict[tuple[str, str, str], dict[str, Any]], variant: str = VARIANT
) -> list[dict[str, Any]]:
    """The issue's goal per (problem, schedule): the variant's mean against the best peer.

    Judged twice: against every other optimizer of the grid (``best_peer``, ``verdict``,
    ...), and under ``against_optax`` the same keys against optax's optimizers alone, the
    library's other presets left out. A verdict is ``best`` (above every peer's mean),
    ``within 0.3`` (at most 0.3 points below the best peer) or ``short``.

    Example:
      >>> stats = {("p", o, "constant"): {"mean": m} for o, m in
      ...          [(VARIANT, 0.80), ("schedule_free_polyak", 0.81), ("adam", 0.79)]}
      >>> [(v["verdict"], v["against_optax"]["verdict"]) for v in verdicts(stats)]
      [('short', 'best')]
    """
    out = []
    for problem, schedule in sorted({(p, s) for p, _, s in stats}):
        peers = {
            o: v["mean"]
            for (p, o, s), v in stats.items()
            if p == problem and s == schedule and o != variant and o not in ABLATIONS
        }
        if (problem, variant, schedule) not in stats or not peers:
            continue
        mine = stats[(problem, variant, schedule)]["mean"]
        judged = {"problem": problem, "schedule": schedule, "variant": mine}
        judged.update(_judge(mine, peers))
        optax_peers = {o: v for o, v in peers.items() if o not in LIBRARY_OPTIMIZERS}
        if optax_peers:
            judged["against_optax"] = _judge(mine, optax_peers)
        out.append(judged)
    return out


def _judge(mine: float, peers: dict[str, float]) -> dict[str, Any]:
    """``mine`` against the best of ``peers`` (name -> mean accuracy)."""
    best_peer = max(peers, key=peers.get)
    gap = 100 * (mine - peers[best_peer])
    return {
        "best_peer": best_peer,
        "best_peer_accuracy": peers[best_peer],
        "gap_points": gap,
        "rank": 1 + sum(v > mine for v in peers.values()),
        "of": len(peers) + 1,
        "verdict": "best" if gap > 0 else ("within 0.3" if gap >= -0.3 else "short"),
    }


def target_of(head: dict[str, Any], problem: str) -> float:
    """The target accuracy a run of ``head``'s grid used for ``problem``."""
    settings = head.get("settings", {}).get("problems", {}).get(problem, {})
    return settings.get("target") or PROBLEMS[problem].target


def markdown(head: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    """The report: the goal's verdicts, then one table per problem."""
    stats = summarize(rows)
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    present = {r["optimizer"] for r in rows}
    optimizers = [o for o in (*OPTIMIZERS, *ABLATIONS) if o in present]  # the variant first
    seeds = sorted({r["seed"] for r in rows})
    ablations = [o for o in ABLATIONS if o in present]
    title = "Tuning-free head-to-head" + (": ablations" if ablations else "")
    parts = [C.header_markdown(head, title), ""]
    parts.append(
        f"Final test accuracy (%), mean ± std over {len(seeds)} seed(s); time to target: "
        "mean training seconds (compilation and evaluation excluded) until the test "
        "accuracy first reached the problem's target at an epoch's end, over the seeds "
        "that reached it (n/N). Every optimizer of the grid at its published defaults, the same on "
        "every problem; `annealed` multiplies each optimizer's learning rate (the Polyak "
        "methods' ceiling) by one shared one-cycle schedule. **Bold**: the best mean of "
        "the column."
    )
    if ablations:
        parts.append(
            f"\nAblations of {VARIANT}, not at published defaults and never peers: "
            + ", ".join(f"`{o}`" for o in ablations)
            + " (see `ABLATIONS` in the script)."
        )
    judged = verdicts(stats)
    if judged:
        parts += ["", "## The variant against the best peer", ""]
        parts.append(
            C.markdown_table(
                [
                    "problem",
                    "schedule",
                    f"{VARIANT} (%)",
                    "best peer",
                    "peer (%)",
                    "gap (points)",
                    "rank",
                    "verdict",
                    "best optax peer",
                    "peer (%)",
                    "gap (points)",
                    "verdict against optax",
                ],
                [
                    [
                        v["problem"],
                        v["schedule"],
                        f"{100 * v['variant']:.2f}",
                        v["best_peer"],
                        f"{100 * v['best_peer_accuracy']:.2f}",
                        f"{v['gap_points']:+.2f}",
                        f"{v['rank']}/{v['of']}",
                        v["verdict"],
                        *(
                            [
                                o["best_peer"],
                                f"{100 * o['best_peer_accuracy']:.2f}",
                                f"{o['gap_points']:+.2f}",
                                o["verdict"],
                            ]
                            if (o := v.get("against_optax"))
                            else ["-"] * 4
                        ),
                    ]
                    for v in judged
                ],
            )
        )
    for problem in problems:
        spec = PROBLEMS[problem]
        parts += [
            "",
            f"## {problem}",
            "",
            f"{spec.rationale}. Target {100 * target_of(head, problem):.0f}%.",
            "",
        ]
        best = {
            s: max(
                (stats[(problem, o, s)]["mean"] for o in optimizers if (problem, o, s) in stats),
                default=None,
            )
            for s in SCHEDULES
        }
        table = []
        for o in optimizers:
            line = [o]
            for s in SCHEDULES:
                st = stats.get((problem, o, s))
                if st is None:
                    line += ["", ""]
                    continue
                n = len(st["accs"])
                acc = f"{100 * st['mean']:.2f} ± {100 * st['std']:.2f}"
                if st["no_finite_epoch"] == n:
                    acc = "diverged (no finite epoch)"
                elif st["no_finite_epoch"]:
                    acc += f" ({st['no_finite_epoch']}/{n} diverged, counted as 0)"
                line.append(f"**{acc}**" if st["mean"] == best[s] else acc)
                t = st["time_to_target_s"]
                line.append("never" if t is None else f"{t:.1f} s ({st['reached']}/{n})")
            table.append(line)
        parts.append(
            C.markdown_table(
                [
                    "optimizer",
                    "constant: accuracy",
                    "constant: time to target",
                    "annealed: accuracy",
                    "annealed: time to target",
                ],
                table,
            )
        )
    return "\n".join(parts) + "\n"


def plot(out_dir, rows: Sequence[dict[str, Any]], benchmark: str = BENCHMARK) -> list[Any]:
    """One PNG per problem: mean test accuracy against epochs, one panel per schedule."""
    plt = C.pyplot()
    paths = []
    for problem in dict.fromkeys(r["problem"] for r in rows):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        mine = [r for r in rows if r["problem"] == problem]
        present = {r["optimizer"] for r in mine}
        optimizers = [o for o in (*OPTIMIZERS, *ABLATIONS) if o in present]
        colors = plt.get_cmap("tab20")
        for ax, schedule in zip(axes, SCHEDULES, strict=True):
            for i, o in enumerate(optimizers):
                curves = [
                    r["curve"]
                    for r in mine
                    if r["optimizer"] == o and r["schedule"] == schedule and r.get("curve")
                ]
                if not curves:
                    continue
                acc = 100 * np.mean([[e["test_accuracy"] for e in c] for c in curves], axis=0)
                epochs = [e["epoch"] for e in curves[0]]
                style = (
                    {"lw": 3, "color": "black"} if o == VARIANT else {"lw": 1.2, "color": colors(i)}
                )
                ax.plot(epochs, acc, marker="o", ms=3, label=o, **style)
            ax.set_title(f"{problem}: {schedule}")
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("test accuracy (%), mean over seeds")
        lo = np.percentile([100 * r["test_accuracy"] for r in mine], 10) - 5
        axes[0].set_ylim(bottom=max(0, lo))
        drawn = [ax for ax in axes if ax.lines]  # a run of one schedule draws one panel
        (drawn or axes)[-1].legend(fontsize=7, loc="lower right", ncol=2)
        paths.append(C.save_figure(fig, C.png_path(out_dir, benchmark, problem)))
    return paths


def merged_commands(payloads: Sequence[dict[str, Any]]) -> list[str]:
    """The commands that made the rows of ``payloads``, a merged file's parts flattened.

    Example:
      >>> merged_commands([{"command": "merged: a + b"}, {"command": "c"}, {"command": "b"}])
      ['a', 'b', 'c']
    """
    parts = []
    for payload in payloads:
        command = payload["command"].split(" | merged: ")[-1].removeprefix("merged: ")
        parts.extend(command.split(" + "))
    return list(dict.fromkeys(parts))


def _use_compile_cache(folder: Path | None) -> None:
    """Turns on JAX's persistent compilation cache in ``folder`` (a temporary one if None)."""
    if folder is None:
        import atexit
        import shutil
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="tuning_free-jax-cache-"))
        atexit.register(shutil.rmtree, folder, True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the grid (or rebuilds the report from ``--from-json`` files); returns 0."""
    parser = C.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", choices=sorted(PROBLEMS), default=None)
    parser.add_argument(
        "--optimizers", nargs="+", choices=sorted((*OPTIMIZERS, *ABLATIONS)), default=None
    )
    parser.add_argument(
        "--ablations",
        action="store_true",
        help="run the variant's ablations (default: all of ABLATIONS; never peers) into "
        "tuning_free_ablations-<device>.md/.json/-<problem>.png",
    )
    parser.add_argument("--schedules", nargs="+", choices=SCHEDULES, default=list(SCHEDULES))
    parser.add_argument(
        "--seeds", type=C.positive_int, default=None, help="seeds 0..N-1 (default 3; smoke 1)"
    )
    parser.add_argument(
        "--from-json",
        nargs="+",
        type=str,
        default=None,
        help="rebuild tables and plots from the rows of these result files (e.g. parts of "
        "a grid run in parallel); a later file's row replaces an earlier one of the same run",
    )
    parser.add_argument(
        "--compile-cache",
        type=Path,
        default=None,
        help="folder of JAX's persistent compilation cache (default: a temporary folder)",
    )
    parser.add_argument("--no-compile-cache", action="store_true", help="compile every run afresh")
    args = parser.parse_args(argv)
    grid = C.grid_of(args)
    if not (args.from_json or args.no_compile_cache):
        _use_compile_cache(args.compile_cache)
    problems = args.problems or list(PROBLEMS)
    optimizers = args.optimizers or list(ABLATIONS if args.ablations else OPTIMIZERS)
    benchmark = BENCHMARK + ("_ablations" if args.ablations else "")
    seeds = range(args.seeds or (1 if grid == "smoke" else 3))
    note = {
        "full": "Full grid: every problem on its whole training set, 10 epochs.",
        "reduced": REDUCED_NOTE,
        "smoke": "Smoke grid: 256 training and test examples, 1 epoch.",
    }[grid]
    settings = {
        "problems": {p: {**PROBLEMS[p]._asdict(), **grid_sizes(grid, p)} for p in problems},
        "optimizers": optimizers,
        "schedules": args.schedules,
        "seeds": list(seeds),
    }
    if args.from_json:
        import json

        payloads = [json.loads(Path(path).read_text()) for path in args.from_json]
        # A later file's row replaces an earlier one of the same run (a rerun of a subset).
        key = lambda r: (r["problem"], r["optimizer"], r["schedule"], r["seed"])
        rows = list({key(row): row for p in payloads for row in p["rows"]}.values())
        head = payloads[0]
        for p in payloads[1:]:  # every part's problem settings (sizes, targets)
            head["settings"]["problems"].update(p["settings"]["problems"])
        head["grid_note"] = " ".join(dict.fromkeys(p["grid_note"] for p in payloads))
        head["benchmark"] = benchmark
        head["command"] = "merged: " + " + ".join(merged_commands(payloads))
        head["date"] = " + ".join(
            dict.fromkeys(d for p in payloads for d in p["date"].split(" + "))
        )
    else:
        head = {**C.header(BENCHMARK, grid, note, settings), "benchmark": benchmark}
        rows = []
        for problem in problems:
            for optimizer in optimizers:
                for schedule in args.schedules:
                    for seed in seeds:
                        r = train_once(
                            problem, optimizer, schedule, seed, **grid_sizes(grid, problem)
                        )
                        # Each run's executables stay mapped while jax's caches hold them
                        # (about 225 memory maps a run): a grid of 312 runs reached the
                        # kernel's 65,530 (LLVM: "Cannot allocate memory", then SIGSEGV).
                        # The persistent cache keeps the compiled code for the next seed.
                        jax.clear_caches()
                        C.log(
                            f"{problem} {optimizer} {schedule} seed {seed}: "
                            f"{100 * r['test_accuracy']:.2f}% "
                            f"(time to target {r['time_to_target_s']})"
                        )
                        rows.append(
                            {
                                "problem": problem,
                                "optimizer": optimizer,
                                "schedule": schedule,
                                "seed": seed,
                                "test_accuracy": r["test_accuracy"],
                                "time_to_target_s": r["time_to_target_s"],
                                "curve": r["epochs"],
                            }
                        )
    payload = {**head, "variant": VARIANT, "verdicts": verdicts(summarize(rows)), "rows": rows}
    report = markdown(head, rows)
    C.write_results(args.out_dir, benchmark, payload, report)
    plot(args.out_dir, rows, benchmark)
    print(report)
    return 0


if __name__ == "__main__":
    xla_flags.apply()  # the training app's XLA:CPU flags, before jax starts its backends
    raise SystemExit(main())
