"""Optimizer overhead: median jitted training-step time per model and optimizer.

``python -m benchmarks.optimizer_overhead [--grid full|reduced|smoke]``

One training step is :func:`train.loop.train_step` (forward, backward, optimizer update,
batch-norm statistics) jitted with the state donated, on synthetic normalized 32x32x3
images, for every model and each optimizer of :data:`OPTIMIZERS` built by
:func:`train.optimizers.build_optimizer`:

* ``nesterov``: ``optax.sgd(nesterov=True)`` (momentum 0.9);
* ``adaptive_nesterov``: ``po.adaptive_nesterov(store_grad=False)`` with the thesis's
  defaults (the training app's configuration: no params-sized ``grad`` buffer);
* ``layerwise_nesterov``: ``po.layerwise`` around the Nesterov SGD;
* ``adam``: ``optax.adam``.

Each is wrapped in ``optax.inject_hyperparams`` (its learning rate is in the state, as the
training CLI builds them), except adaptive Nesterov, whose eta is its state's
``learning_rate``. The optimizer-state bytes of each are reported beside the times.

The optimizers of one model are compiled first, ``compile_rounds`` times each in a
rotating order (the median compile time is reported, with its ratio to Nesterov's
compile time in the same round), warmed up, then timed side by side: each round times
every optimizer once, in a rotating order, so that load from other processes hits all of
them alike. A sample is ``steps_per_sample`` consecutive steps with one
``block_until_ready`` at the end. The report gives the median step time, the paired ratio
to Nesterov (median over rounds of the per-round ratio) and, separately, the time of the
optimizer update alone (``tx.update`` + ``apply_updates`` on the model's parameter
tree), which is what the optimizer adds to a step.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

import models
import polyak_optax as po
from benchmarks import _common as C
from train import loop
from train.platform import xla_flags

BENCHMARK = "optimizer_overhead"
OPTIMIZERS = ("nesterov", "adaptive_nesterov", "layerwise_nesterov", "adam")
TARGET_RATIO = 1.03  # adaptive and layer-wise within 3% of Nesterov on a GPU
COMPILE_TARGET = 1.3  # compile time within 1.3x Nesterov's
STATE_TARGET_BYTES = 64  # adaptive Nesterov's state <= Nesterov's + 64 bytes

GRIDS: dict[str, dict[str, Any]] = {
    "full": {
        "models": ("alexnet", "vgg16", "resnet34"),
        "batch_size": 512,
        "image_shape": (32, 32, 3),
        "rounds": 20,
        "steps_per_sample": 5,
        "warmup_steps": 3,
        "update_rounds": 20,
        "updates_per_sample": 20,
        "compile_rounds": 3,
    },
    "reduced": {
        "models": ("alexnet", "vgg16", "resnet34"),
        "batch_size": 16,
        "image_shape": (32, 32, 3),
        "rounds": 10,
        "steps_per_sample": 1,
        "warmup_steps": 1,
        "update_rounds": 5,
        "updates_per_sample": 5,
        "compile_rounds": 3,
    },
    "smoke": {
        "models": ("tiny",),
        "batch_size": 4,
        "image_shape": (8, 8, 3),
        "rounds": 2,
        "steps_per_sample": 1,
        "warmup_steps": 1,
        "update_rounds": 2,
        "updates_per_sample": 1,
        "compile_rounds": 1,
    },
}

GRID_NOTES = {
    "full": "",
    "reduced": "CPU grid: batch 16 instead of 512 (a batch-512 ResNet-34 step takes "
    "minutes on 2 cores), 10 rounds of 1 step instead of 20 rounds of 5 steps; same models, "
    "optimizers, 3 compile rounds and 32x32x3 synthetic data. Full grid: `--grid full`.",
    "smoke": "smoke test: the tiny test model on 8x8x3, 2 rounds; the numbers mean nothing.",
}


def make_optimizer(name: str) -> optax.GradientTransformationExtraArgs:
    """The optimizer ``name`` of :data:`OPTIMIZERS`, as the training app configures it.

    Example:
      >>> tx = make_optimizer("adaptive_nesterov")
      >>> state = tx.init({"w": jnp.zeros(1000)})
      >>> state_bytes(state) - 4 * 1000  # velocity + count, eta and value
      12
    """
    sgd = optax.inject_hyperparams(optax.sgd, static_args=("nesterov",))
    if name == "nesterov":
        tx = sgd(learning_rate=0.01, momentum=0.9, nesterov=True)
    elif name == "adaptive_nesterov":
        tx = po.adaptive_nesterov(store_grad=False)  # alpha 0.9, eta in [1e-3, 1e-1]
    elif name == "layerwise_nesterov":
        tx = po.layerwise(sgd(learning_rate=0.01, momentum=0.9, nesterov=True))
    elif name == "adam":
        tx = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
    else:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    return optax.with_extra_args_support(tx)


def state_bytes(opt_state: optax.OptState) -> int:
    """Bytes of the optimizer state's arrays."""
    return sum(int(x.nbytes) for x in jax.tree.leaves(opt_state))


def _update_only(
    tx: optax.GradientTransformationExtraArgs,
    grads: optax.Updates,
    opt_state: optax.OptState,
    params: optax.Params,
) -> tuple[optax.Params, optax.OptState]:
    updates, opt_state = tx.update(grads, opt_state, params, value=jnp.float32(2.3))
    return optax.apply_updates(params, updates), opt_state


def _interleaved(runners: dict[str, Any], rounds: int, per_sample: int) -> dict[str, list[float]]:
    """Times each runner once per round in a rotating order; seconds per call."""
    names = list(runners)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            samples[name].append(runners[name](per_sample) / per_sample)
    return samples


def bench_model(model_name: str, grid: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Step and update-only timings of every optimizer on one model."""
    model = models.create(model_name, 10)
    shape, batch = grid["image_shape"], grid["batch_size"]
    kx, ky, kinit = jax.random.split(jax.random.key(seed), 3)
    images = jax.random.normal(kx, (batch, *shape), jnp.float32)
    labels = jax.random.randint(ky, (batch,), 0, 10)

    states: dict[str, Any] = {}
    compiled: dict[str, Any] = {}
    compile_samples: dict[str, list[float]] = {n: [] for n in OPTIMIZERS}
    opt_bytes: dict[str, int] = {}
    for name in OPTIMIZERS:
        states[name] = loop.create_train_state(model, make_optimizer(name), kinit, shape)
        opt_bytes[name] = state_bytes(states[name].opt_state)
    for r in range(grid["compile_rounds"]):  # side by side, in a rotating order
        order = OPTIMIZERS[r % len(OPTIMIZERS) :] + OPTIMIZERS[: r % len(OPTIMIZERS)]
        for name in order:
            # A new function each time: jax caches the lowering and the executable.
            fresh = jax.jit(lambda *a: loop.train_step(*a), donate_argnums=0)
            lowered = fresh.lower(states[name], images, labels)
            seconds, compiled[name] = C.timed(lowered.compile)
            compile_samples[name].append(seconds)
    for name in OPTIMIZERS:
        state = states[name]
        for _ in range(grid["warmup_steps"]):
            state, _ = compiled[name](state, images, labels)
        states[name] = C.block(state)
    compile_s = {n: C.median(v) for n, v in compile_samples.items()}
    compile_ratio = {
        n: C.median(
            [t / b for t, b in zip(compile_samples[n], compile_samples["nesterov"], strict=True)]
        )
        for n in OPTIMIZERS
    }
    C.log(
        f"  {model_name}: compiled in " + ", ".join(f"{n} {s:.1f}s" for n, s in compile_s.items())
    )

    def step_runner(name: str, n: int) -> float:
        def run() -> Any:
            state = states[name]
            for _ in range(n):
                state, metrics = compiled[name](state, images, labels)
            states[name] = state
            return state, metrics

        return C.timed(run)[0]

    step_s = _interleaved(
        {n: functools.partial(step_runner, n) for n in OPTIMIZERS},
        grid["rounds"],
        grid["steps_per_sample"],
    )

    # The optimizer alone, on the real parameter tree with gradient-sized inputs.
    params = states["nesterov"].params
    grads = jax.tree.map(lambda p: 1e-3 * jnp.ones_like(p), params)
    upd_params: dict[str, Any] = {}
    upd_states: dict[str, Any] = {}
    upd_fns: dict[str, Any] = {}
    for name in OPTIMIZERS:
        tx = make_optimizer(name)
        p = jax.tree.map(jnp.copy, params)
        s = tx.init(p)
        fn = jax.jit(functools.partial(_update_only, tx), donate_argnums=(1, 2))
        upd_fns[name] = fn.lower(grads, s, p).compile()
        upd_params[name], upd_states[name] = C.block(upd_fns[name](grads, s, p))

    def update_runner(name: str, n: int) -> float:
        def run() -> Any:
            p, s = upd_params[name], upd_states[name]
            for _ in range(n):
                p, s = upd_fns[name](grads, s, p)
            upd_params[name], upd_states[name] = p, s
            return p, s

        return C.timed(run)[0]

    update_s = _interleaved(
        {n: functools.partial(update_runner, n) for n in OPTIMIZERS},
        grid["update_rounds"],
        grid["updates_per_sample"],
    )
    for buffers in (states, upd_params, upd_states):  # free device memory before the next model
        buffers.clear()
    base = step_s["nesterov"]
    return {
        "model": model_name,
        "param_count": models.param_count(model_name, shape, 10),
        "compile_s": compile_s,
        "compile_samples_s": compile_samples,
        "compile_ratio": compile_ratio,
        "state_bytes": opt_bytes,
        "step_s": step_s,
        "update_s": update_s,
        "paired_ratio": {
            n: C.median([t / b for t, b in zip(step_s[n], base, strict=True)]) for n in OPTIMIZERS
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark; prints the table; writes the .md/.json. Returns 0."""
    parser = C.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", help="override the grid's models")
    parser.add_argument("--batch-size", type=C.positive_int, help="override the batch size")
    parser.add_argument("--rounds", type=C.positive_int, help="override the timing rounds")
    parser.add_argument("--compile-rounds", type=C.positive_int, help="override the compile rounds")
    args = parser.parse_args(argv)
    grid_name, grid, note = C.chosen_grid(
        args,
        GRIDS,
        GRID_NOTES,
        {
            "models": args.models,
            "batch_size": args.batch_size,
            "rounds": args.rounds,
            "compile_rounds": args.compile_rounds,
        },
    )
    head = C.header(BENCHMARK, grid_name, note, grid)
    C.log(f"{BENCHMARK} on {head['device']}, grid {grid_name}")

    results: list[dict[str, Any]] = []
    for model_name in grid["models"]:
        results.append(bench_model(model_name, grid))
        markdown = write(args.out_dir, head, grid, results)  # after every model
    print(markdown)
    return 0


def write(
    out_dir: Any, head: dict[str, Any], grid: dict[str, Any], results: list[dict[str, Any]]
) -> str:
    """Writes the .md/.json of the models measured so far; returns the Markdown."""
    rows, ratios, update_rows = [], [], []
    for res in results:
        for name in OPTIMIZERS:
            step_ms = 1e3 * C.median(res["step_s"][name])
            rows.append(
                {
                    "model": res["model"],
                    "optimizer": name,
                    "batch_size": grid["batch_size"],
                    "median_step_ms": step_ms,
                }
            )
            update_rows.append(
                {
                    "model": res["model"],
                    "optimizer": name,
                    "median_update_ms": 1e3 * C.median(res["update_s"][name]),
                }
            )
            ratios.append(
                {
                    "model": res["model"],
                    "optimizer": name,
                    "ratio_to_nesterov": res["paired_ratio"][name],
                    "within_3_percent": bool(res["paired_ratio"][name] <= TARGET_RATIO),
                }
            )

    payload = {
        **head,
        "rows": rows,
        "ratios": ratios,
        "update_only": update_rows,
        "param_counts": {r["model"]: r["param_count"] for r in results},
        "compile_s": {r["model"]: r["compile_s"] for r in results},
        "compile_samples_s": {r["model"]: r["compile_samples_s"] for r in results},
        "compile_ratio": {r["model"]: r["compile_ratio"] for r in results},
        "state_bytes": {r["model"]: r["state_bytes"] for r in results},
        "raw_step_s": {r["model"]: r["step_s"] for r in results},
        "raw_update_s": {r["model"]: r["update_s"] for r in results},
        "target": "adaptive_nesterov and layerwise_nesterov each <= 1.03 x nesterov's step "
        "time on every model (on a GPU); compile time <= 1.3 x nesterov's; adaptive "
        "Nesterov's state <= nesterov's + 64 bytes",
    }
    markdown = render(payload)
    C.write_results(out_dir, BENCHMARK, payload, markdown)
    return markdown


def render(payload: dict[str, Any]) -> str:
    """The Markdown report of a payload written by :func:`main`."""
    by_key = {(r["model"], r["optimizer"]): r for r in payload["rows"]}
    ratio = {(r["model"], r["optimizer"]): r["ratio_to_nesterov"] for r in payload["ratios"]}
    upd = {(r["model"], r["optimizer"]): r["median_update_ms"] for r in payload["update_only"]}
    model_names = list(dict.fromkeys(r["model"] for r in payload["rows"]))
    table = []
    for m in model_names:
        for o in OPTIMIZERS:
            table.append(
                [
                    m,
                    o,
                    by_key[m, o]["batch_size"],
                    f"{by_key[m, o]['median_step_ms']:.2f}",
                    f"{ratio[m, o]:.3f}",
                    f"{upd[m, o]:.3f}",
                    f"{100 * upd[m, o] / by_key[m, 'nesterov']['median_step_ms']:.2f}%",
                ]
            )
    checks = []
    for m in model_names:
        for o in ("adaptive_nesterov", "layerwise_nesterov"):
            verdict = "met" if ratio[m, o] <= TARGET_RATIO else "missed"
            checks.append(f"{m}/{o}: x{ratio[m, o]:.3f} ({verdict})")
    state_table, checks10 = [], []
    for m in model_names:
        base = payload["state_bytes"][m]["nesterov"]
        for o in OPTIMIZERS:
            nbytes = payload["state_bytes"][m][o]
            state_table.append(
                [
                    m,
                    o,
                    f"{payload['compile_s'][m][o]:.1f}",
                    f"{payload['compile_ratio'][m][o]:.2f}",
                    f"{nbytes:,}",
                    f"{nbytes - base:+,}",
                ]
            )
        c = payload["compile_ratio"][m]["adaptive_nesterov"]
        extra = payload["state_bytes"][m]["adaptive_nesterov"] - base
        checks10.append(
            f"{m}: compile x{c:.2f} ({'met' if c <= COMPILE_TARGET else 'missed'}), "
            f"state {extra:+d} B ({'met' if extra <= STATE_TARGET_BYTES else 'missed'})"
        )
    lines = [
        C.header_markdown(payload, "Optimizer overhead"),
        "Median time of one jitted training step (forward, backward, update) on synthetic "
        f"{'x'.join(map(str, payload['settings']['image_shape']))} data, the optimizers timed "
        "side by side in rotating order; compile and "
        "warm-up excluded. *ratio* = median over rounds of the step time divided by "
        "Nesterov's in the same round. *update* = `tx.update` + `apply_updates` alone on the "
        "model's parameters; *update / step* = that time over Nesterov's whole step.",
        "",
        C.markdown_table(
            [
                "model",
                "optimizer",
                "batch",
                "median step (ms)",
                "ratio to nesterov",
                "update (ms)",
                "update / step",
            ],
            table,
        ),
        "",
        f"Compile time of the training step on {payload['device']} (median of "
        f"{payload['settings'].get('compile_rounds', 1)} compiles side by side, the ratio "
        "is the median of the per-round ratios to Nesterov's) and optimizer-state bytes:",
        "",
        C.markdown_table(
            [
                "model",
                "optimizer",
                "compile (s)",
                "compile ratio",
                "state bytes",
                "state - nesterov",
            ],
            state_table,
        ),
        "",
        f"Targets: compile <= {COMPILE_TARGET}x Nesterov's, adaptive Nesterov's "
        f"state <= Nesterov's + {STATE_TARGET_BYTES} bytes. Here: " + "; ".join(checks10) + ".",
        "",
        f"Target (on a GPU): adaptive and layer-wise within 3% of Nesterov. "
        f"Here ({payload['device']}): " + "; ".join(checks) + ".",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    xla_flags.apply()  # the training app's XLA:CPU flags, before jax starts its backends
    raise SystemExit(main())
