"""Persistency throughput: the device-resident epoch loop against a host-fed loop.

``python -m benchmarks.persistency_throughput [--grid full|reduced|smoke]``

For each model, batch size and persistency K, one epoch over a synthetic uint8 training
set is timed in two ways:

* ``device_resident``: :func:`train.loop.train_epoch`, the whole epoch as one jitted call
  (data on the device, permutation, slicing and normalization on the device, K steps per
  batch in ``lax.fori_loop``, one host sync per epoch);
* ``host_fed``: what most training code does: a Python loop that permutes on the host,
  slices a NumPy batch, transfers it with ``jax.device_put`` and calls a jitted
  :func:`train.loop.persistent_step` (normalization inside the jit); the loop dispatches
  asynchronously and blocks once at the end of the epoch (its best case).

Both loops do the same work (same model, optimizer, batches, K). Compilation is done ahead
of time and excluded; each repeat times the two loops back to back, and the median epoch
time over repeats is reported as

* ``images_per_s``: optimizer steps x batch / s (training images per second), and
* fresh images per second: distinct images consumed per second = ``images_per_s / K``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import models
from benchmarks import _common as C
from train import augment, loop
from train.data import synthetic_dataset
from train.optimizers import build_optimizer
from train.platform import xla_flags

BENCHMARK = "persistency_throughput"
LOOPS = ("device_resident", "host_fed")

# (model, image shape, batch sizes, persistencies, epoch size)
GRIDS: dict[str, dict[str, Any]] = {
    "full": {
        "configs": [
            ("alexnet", (32, 32, 3), (32, 256, 512), (1, 2, 5), 10240),
            ("lenet5", (28, 28, 1), (32, 256, 512), (1, 2, 5), 10240),
        ],
        "repeats": 5,
    },
    "reduced": {
        "configs": [
            ("lenet5", (28, 28, 1), (32, 256, 512), (1, 2, 5), 2048),
            ("alexnet", (32, 32, 3), (32,), (1, 2), 256),
        ],
        "repeats": 3,
    },
    "smoke": {
        "configs": [("tiny", (8, 8, 1), (4,), (1, 2), 16)],
        "repeats": 1,
    },
}
GRID_NOTES = {
    "full": "",
    "reduced": "CPU grid: LeNet-5 (28x28x1) over the full batch x K grid with a 2048-image "
    "epoch, and AlexNet (32x32x3, about 100 training images/s on 2 CPU cores) only at "
    "batch 32 with K 1 and 2 "
    "on a 256-image epoch; 3 repeats. Full grid (AlexNet and LeNet-5, 10240-image epochs, "
    "5 repeats): `--grid full`.",
    "smoke": "smoke test: the tiny test model; the numbers mean nothing.",
}


def host_fed_epoch(
    step: Any,
    state: loop.TrainState,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
) -> tuple[loop.TrainState, jax.Array]:
    """The naive loop: host permutation, NumPy slicing, one transfer and one call per batch.

    Returns the new state and the epoch's mean loss (a device scalar).

    Example:
      >>> import optax
      >>> state = loop.create_train_state(models.create("tiny", 2), build_optimizer("sgd", 0.1),
      ...                                 jax.random.key(0), (4, 4, 1))
      >>> step = jax.jit(loop.train_step)
      >>> x, y = np.zeros((5, 4, 4, 1), np.float32), np.zeros(5, np.int32)
      >>> state, loss = host_fed_epoch(step, state, x, y, 2, np.random.default_rng(0))
      >>> int(state.step)
      2
    """
    perm = rng.permutation(len(images))
    losses = []
    for i in range(len(images) // batch_size):
        idx = perm[i * batch_size : (i + 1) * batch_size]
        x = jax.device_put(images[idx])
        y = jax.device_put(labels[idx])
        state, metrics = step(state, x, y)
        losses.append(metrics["loss"])
    return state, jnp.mean(jnp.stack(losses))


def bench_config(
    model_name: str,
    shape: tuple[int, int, int],
    batch_size: int,
    persistency: int,
    num_images: int,
    repeats: int,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Epoch times (s) of both loops, measured back to back ``repeats`` times."""
    images_np, labels_np, _, _ = synthetic_dataset(shape, (num_images, 1), 10, seed)
    mean = jnp.full((shape[-1],), 0.5, jnp.float32)
    std = jnp.full((shape[-1],), 0.29, jnp.float32)
    images, labels = jax.device_put(images_np), jax.device_put(labels_np)
    model = models.create(model_name, 10)
    tx = build_optimizer("sgd", 0.01, 0.5)  # the thesis's SGD with momentum 0.5
    key = jax.random.key(seed)
    state_dev = loop.create_train_state(model, tx, key, shape)
    state_host = loop.create_train_state(model, tx, key, shape)

    epoch_fn = loop.train_epoch.lower(
        state_dev, images, labels, mean, std, key, batch_size=batch_size, persistency=persistency
    ).compile()

    def host_step(state: loop.TrainState, x: jax.Array, y: jax.Array) -> Any:
        return loop.persistent_step(state, augment.normalize(x, mean, std), y, persistency)

    x0 = jax.device_put(images_np[:batch_size])
    y0 = jax.device_put(labels_np[:batch_size])
    step_fn = jax.jit(host_step, donate_argnums=0).lower(state_host, x0, y0).compile()
    state_host, _ = C.block(step_fn(state_host, x0, y0))  # warm-up call

    rng = np.random.default_rng(seed)
    times: dict[str, list[float]] = {name: [] for name in LOOPS}
    for r in range(repeats):
        k = jax.random.fold_in(key, r)
        seconds, (state_dev, _) = C.timed(epoch_fn, state_dev, images, labels, mean, std, k)
        times["device_resident"].append(seconds)
        seconds, (state_host, _) = C.timed(
            host_fed_epoch, step_fn, state_host, images_np, labels_np, batch_size, rng
        )
        times["host_fed"].append(seconds)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark; prints the table; writes the .md/.json. Returns 0."""
    parser = C.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=C.positive_int, help="override the grid's repeats")
    args = parser.parse_args(argv)
    grid_name, grid, note = C.chosen_grid(args, GRIDS, GRID_NOTES, {"repeats": args.repeats})
    head = C.header(BENCHMARK, grid_name, note, grid)
    C.log(f"{BENCHMARK} on {head['device']}, grid {grid_name}")

    rows, details = [], []
    for model_name, shape, batch_sizes, persistencies, num_images in grid["configs"]:
        for batch_size in batch_sizes:
            for k in persistencies:
                times = bench_config(model_name, shape, batch_size, k, num_images, grid["repeats"])
                steps = (num_images // batch_size) * k
                for name in LOOPS:
                    epoch_s = C.median(times[name])
                    ips = steps * batch_size / epoch_s
                    rows.append(
                        {
                            "model": model_name,
                            "batch_size": batch_size,
                            "K": k,
                            "loop": name,
                            "images_per_s": ips,
                        }
                    )
                    details.append(
                        {
                            "model": model_name,
                            "image_shape": list(shape),
                            "batch_size": batch_size,
                            "K": k,
                            "loop": name,
                            "epoch_images": (num_images // batch_size) * batch_size,
                            "optimizer_steps": steps,
                            "median_epoch_s": epoch_s,
                            "epoch_s": times[name],
                            "images_per_s": ips,
                            "fresh_images_per_s": ips / k,
                        }
                    )
                C.log(
                    f"  {model_name} b={batch_size} K={k}: "
                    + ", ".join(f"{d['loop']} {d['images_per_s']:.0f} img/s" for d in details[-2:])
                )

    payload = {
        **head,
        "rows": rows,
        "details": details,
        "definitions": {
            "images_per_s": "optimizer steps x batch size / epoch seconds (training images "
            "per second); fresh images per second = images_per_s / K",
        },
        "summary": summarize(details),
        "targets": "on a GPU: device_resident >= 2x host_fed at batch 32 and >= 1.2x at 512; "
        "a K = 2 epoch takes <= 2x the time of a K = 1 epoch",
    }
    markdown = render(payload)
    C.write_results(args.out_dir, BENCHMARK, payload, markdown)
    print(markdown)
    return 0


def summarize(details: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Speed-ups of the device-resident loop and the K = 2 / K = 1 epoch-time ratios.

    Example:
      >>> d = [{"model": "m", "batch_size": 32, "K": k, "loop": lp, "median_epoch_s": s}
      ...      for k, lp, s in [(1, "device_resident", 1.0), (1, "host_fed", 2.0),
      ...                       (2, "device_resident", 1.5), (2, "host_fed", 3.0)]]
      >>> s = summarize(d)
      >>> s["speedup"][0]["device_over_host"], s["k_ratio"][0]["epoch_time_ratio"]
      (2.0, 1.5)
    """
    t = {(d["model"], d["batch_size"], d["K"], d["loop"]): d["median_epoch_s"] for d in details}
    speedup, k_ratio = [], []
    for model, b, k, lp in t:
        if lp != "device_resident":
            continue
        if (model, b, k, "host_fed") in t:
            speedup.append(
                {
                    "model": model,
                    "batch_size": b,
                    "K": k,
                    "device_over_host": t[model, b, k, "host_fed"] / t[model, b, k, lp],
                }
            )
        for kk in (2, 5):
            if k == 1 and (model, b, kk, lp) in t:
                for loop_name in LOOPS:
                    if (model, b, kk, loop_name) in t and (model, b, 1, loop_name) in t:
                        k_ratio.append(
                            {
                                "model": model,
                                "batch_size": b,
                                "K": kk,
                                "loop": loop_name,
                                "epoch_time_ratio": t[model, b, kk, loop_name]
                                / t[model, b, 1, loop_name],
                            }
                        )
    return {"speedup": speedup, "k_ratio": k_ratio}


def render(payload: dict[str, Any]) -> str:
    """The Markdown report of a payload written by :func:`main`."""
    d = {(x["model"], x["batch_size"], x["K"], x["loop"]): x for x in payload["details"]}
    sp = {
        (s["model"], s["batch_size"], s["K"]): s["device_over_host"]
        for s in payload["summary"]["speedup"]
    }
    table = []
    for model, b, k, lp in d:
        if lp != "device_resident":
            continue
        dev, host = d[model, b, k, "device_resident"], d[model, b, k, "host_fed"]
        table.append(
            [
                model,
                b,
                k,
                f"{dev['images_per_s']:.0f}",
                f"{dev['fresh_images_per_s']:.0f}",
                f"{host['images_per_s']:.0f}",
                f"{host['fresh_images_per_s']:.0f}",
                f"{sp[model, b, k]:.2f}x",
            ]
        )
    kr = [
        [x["model"], x["batch_size"], x["loop"], f"K={x['K']}", f"{x['epoch_time_ratio']:.2f}x"]
        for x in payload["summary"]["k_ratio"]
    ]
    verdicts = []
    for (model, b, k), s in sp.items():
        if k == 1 and b in (32, 512):
            need = 2.0 if b == 32 else 1.2
            verdict = "met" if s >= need else "missed"
            verdicts.append(f"{model} batch {b}: {s:.2f}x (target >= {need}x: {verdict})")
    for x in payload["summary"]["k_ratio"]:
        if x["K"] == 2 and x["loop"] == "device_resident":
            r = x["epoch_time_ratio"]
            verdicts.append(
                f"{x['model']} batch {x['batch_size']} K=2 epoch {r:.2f}x K=1 "
                f"(target <= 2x: {'met' if r <= 2.0 else 'missed'})"
            )
    lines = [
        C.header_markdown(payload, "Persistency throughput"),
        "Training images/s = optimizer steps x batch / s; fresh images/s = distinct images "
        "consumed per second (= training images/s / K). Median over repeats, the two loops "
        "timed back to back in each repeat; compilation excluded. Synthetic uint8 data.",
        "",
        C.markdown_table(
            [
                "model",
                "batch",
                "K",
                "device-resident img/s",
                "device-resident fresh img/s",
                "host-fed img/s",
                "host-fed fresh img/s",
                "device / host",
            ],
            table,
        ),
        "",
        "Epoch time against K = 1 (same loop, same batch):",
        "",
        C.markdown_table(["model", "batch", "loop", "K", "epoch time / K=1's"], kr),
        "",
        f"Targets (on a GPU), measured here on {payload['device']}: " + "; ".join(verdicts) + ".",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    xla_flags.apply()  # the training app's XLA:CPU flags, before jax starts its backends
    raise SystemExit(main())
