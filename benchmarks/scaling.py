"""Scaling: resident against chunked epochs, 1/2/4 devices, 1 against 2 processes.

``python -m benchmarks.scaling [--grid full|reduced|smoke]``

Every configuration is a real ``python -m train`` run (through :func:`train.cli.main`) in
fresh processes: ``P`` processes of ``D`` devices each (fake CPU devices through
``--xla_force_host_platform_device_count`` on a CPU; on a GPU host, ``D`` GPUs of one
process), the data set sharded over the ``P x D`` devices, the training set either
device-resident (one jitted call per epoch) or in device-resident chunks of C batches
(``--data-mode chunked``: chunk i + 1 gathered on the host and copied while chunk i
trains). Two processes meet through ``jax.distributed`` on localhost (gloo collectives
on a CPU, each process pinned to its own share of the cores, as on hosts of their own, and
under ``SCHED_BATCH``, as the training app puts them: :mod:`train.platform.cpu_scheduling`).

A second table times the one collective a step of a model without batch norm issues (an
all-reduce of one flat float32 buffer: the gradients, the loss and the correct count)
alone, in the same layouts: in one process it is a copy between threads; across
processes it goes through gloo over TCP, each process free to use every core or pinned
(``sched_setaffinity``) to cores of its own, as on separate hosts, and with or without
``SCHED_BATCH``.

A third table runs the process ratio's two layouts (1 x 4 and 2 x 2, resident) again at
larger batches (``batch_sweep``; at least 16 batches an epoch): the second process adds
about one all-reduce's time to every step, whatever the batch, so its share shrinks as
a step's work grows.

``images_per_s`` = training images of an epoch / its ``epoch_time`` (training only:
compilation and evaluation excluded), the median over the epochs after the first. The
peak device memory comes from ``jax.local_devices()[0].memory_stats()`` where the
backend reports it (GPUs; not CPUs).

Targets (on a GPU): chunked >= 0.9x resident at batch >= 128; 2 processes
x 2 devices >= 0.9x 1 process x 4 devices.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import models
from benchmarks import _common as C
from train.platform import xla_flags

BENCHMARK = "scaling"
REPO = Path(__file__).resolve().parents[1]

# (processes, devices per process, data mode)
LAYOUTS = [
    (1, 1, "resident"),
    (1, 1, "chunked"),
    (1, 2, "resident"),
    (1, 2, "chunked"),
    (1, 4, "resident"),
    (1, 4, "chunked"),
    (2, 2, "resident"),
    (2, 2, "chunked"),
    (2, 1, "resident"),  # one device per process: the layout of a real multi-host run
]
# (processes, devices per process, each process pinned to its own cores, under SCHED_BATCH
# as the training app puts a multi-process CPU run: train.platform.cpu_scheduling)
ALLREDUCE_LAYOUTS = [
    (1, 2, False, False),
    (1, 4, False, False),
    (2, 1, False, False),
    (2, 1, False, True),
    (2, 1, True, False),
    (2, 1, True, True),
    (2, 2, False, True),
    (2, 2, True, True),
]
GRIDS: dict[str, dict[str, Any]] = {
    "full": {
        "model": "alexnet",
        "shape": (32, 32, 3),
        "train_size": 50000,
        "batch_size": 256,
        "chunk_batches": 16,
        "epochs": 4,
        "layouts": LAYOUTS,
        "allreduce_layouts": ALLREDUCE_LAYOUTS,
        "allreduce_repeats": 200,
        "batch_sweep": (1024, 2048),
    },
    "reduced": {
        "model": "lenet5",
        "shape": (28, 28, 1),
        "train_size": 4096,
        "batch_size": 128,
        "chunk_batches": 8,
        "epochs": 5,
        "layouts": LAYOUTS,
        "allreduce_layouts": ALLREDUCE_LAYOUTS,
        "allreduce_repeats": 100,
        "batch_sweep": (512, 1024),
    },
    "smoke": {
        "model": "tiny",
        "shape": (8, 8, 1),
        "train_size": 256,
        "batch_size": 16,
        "chunk_batches": 4,
        "epochs": 2,
        "layouts": [(1, 2, "resident"), (1, 2, "chunked"), (2, 1, "resident")],
        "allreduce_layouts": [(1, 2, False, False), (2, 1, True, True)],
        "allreduce_repeats": 3,
        "batch_sweep": (32,),
    },
}
GRID_NOTES = {
    "full": "",
    "reduced": "CPU grid: LeNet-5 on synthetic 28x28x1 images, 4096 per epoch, batch 128, "
    "chunks of 8 batches, 5 epochs (4 timed). The devices are fake CPU devices sharing the "
    "same cores, so more devices cannot be faster here: the numbers show the overheads of "
    "sharding, chunking and a second process, not a speed-up.",
    "smoke": "smoke test: the tiny test model; the numbers mean nothing.",
}

_CHILD = """
import json, sys
import jax
from train.cli import main
code = main(sys.argv[1:])
stats = jax.local_devices()[0].memory_stats() or {}
print("MEMORY " + json.dumps({k: stats.get(k) for k in ("peak_bytes_in_use", "bytes_limit")}))
sys.exit(code)
"""


_PIN = """
import os
os.sched_setaffinity(0, map(int, os.environ.pop("SCALING_CORES").split(",")))
"""

_ALLREDUCE_CHILD = """
import json, os, sys, time
size, repeats, coordinator, processes, process_id, batch = sys.argv[1:7]
if batch == "1":
    from train.platform import cpu_scheduling
    cpu_scheduling.apply()
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
if int(processes) > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, int(processes), int(process_id))
mesh = Mesh(np.array(jax.devices()), ("data",))
spec = P("data")
reduce = jax.jit(jax.shard_map(
    lambda x: jax.lax.psum(x, "data"), mesh=mesh, in_specs=spec, out_specs=spec))
local = np.ones((jax.local_device_count(), int(size)), np.float32)
x = jax.make_array_from_process_local_data(NamedSharding(mesh, spec), local)
times = []
for i in range(10 + int(repeats)):
    start = time.perf_counter()
    reduce(x).block_until_ready()
    if i >= 10:
        times.append(time.perf_counter() - start)
print("ALLREDUCE " + json.dumps(times))
"""


def core_shares(processes: int) -> list[list[int]]:
    """The cores of each of ``processes`` processes on this machine: process i's equal
    share of the cores this process may use, as if each had a host of its own.

    Example:
      >>> import os
      >>> core_shares(1) == [sorted(os.sched_getaffinity(0))]
      True
    """
    cores = sorted(os.sched_getaffinity(0))
    share = max(1, len(cores) // processes)
    return [cores[i * share : (i + 1) * share] or cores for i in range(processes)]


def _cpu_devices_env(devices: int) -> dict[str, str]:
    """The variables that give a CPU process ``devices`` devices; the user's own
    ``XLA_FLAGS`` are kept (the device count is the one this benchmark sets)."""
    user = os.environ.get("XLA_FLAGS", "")
    flags = f"{user} --xla_force_host_platform_device_count={devices}".strip()
    return {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags}


def allreduce_times(
    size: int, processes: int, devices: int, pinned: bool, batch: bool, repeats: int
) -> list[float]:
    """Seconds of each of ``repeats`` all-reduces of ``size`` float32 per device (after 10
    not timed), in ``processes`` fresh CPU processes of ``devices`` devices each; with
    ``pinned``, process i runs on its share of :func:`core_shares`; with ``batch``,
    under ``SCHED_BATCH`` (:mod:`train.platform.cpu_scheduling`)."""
    env = dict(os.environ, **_cpu_devices_env(devices))
    coordinator = f"localhost:{_free_port()}"
    argvs = [
        [str(size), str(repeats), coordinator, str(processes), str(i), "1" if batch else "0"]
        for i in range(processes)
    ]
    return _report_of_children(
        _ALLREDUCE_CHILD, argvs, [env] * processes, "ALLREDUCE",
        f"all-reduce {processes}x{devices}", cores=core_shares(processes) if pinned else None,
    )  # fmt: skip


def _report_of_children(
    script: str,
    argvs: Sequence[Sequence[str]],
    envs: Sequence[dict[str, str]],
    prefix: str,
    what: str,
    timeout: float = 600,
    cores: Sequence[Sequence[int]] | None = None,
) -> Any:
    """Runs ``python -c script`` once per argument list (all at once, in the repository),
    waits for all of them, and returns the JSON that the first one printed on its last
    line after ``prefix``; a child that fails raises ``RuntimeError`` naming ``what``.
    With ``cores``, child i pins itself to ``cores[i]`` first thing, before jax sizes its
    thread pool from the affinity (:data:`_PIN`; no ``preexec_fn``: a fork of this
    multithreaded process could deadlock)."""
    if cores is not None:
        script = _PIN + script
        envs = [
            dict(env, SCALING_CORES=",".join(map(str, pin)))
            for env, pin in zip(envs, cores, strict=True)
        ]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, *argv],
            cwd=REPO,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for argv, env in zip(argvs, envs, strict=True)
    ]
    outputs = [child.communicate(timeout=timeout) for child in children]
    for child, (_out, err) in zip(children, outputs, strict=True):
        if child.returncode != 0:
            raise RuntimeError(f"{what} failed: {err.strip()}")
    return json.loads(outputs[0][0].strip().splitlines()[-1].removeprefix(f"{prefix} "))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_layout(
    grid: dict[str, Any], processes: int, devices: int, mode: str, workdir: Path
) -> dict[str, Any]:
    """Trains one layout; returns its row (images/s, peak memory, epoch times)."""
    shape, size = grid["shape"], grid["train_size"]
    args = [
        "--dataset", "synthetic", "--synthetic-shape", ",".join(map(str, shape)),
        "--synthetic-size", f"{size},{grid['batch_size']}", "--model", grid["model"],
        "--optimizer", "sgd", "--schedule", "constant", "--learning-rate", "0.01",
        "--on-nan", "skip", "--batch-size", str(grid["batch_size"]),
        "--epochs", str(grid["epochs"]), "--data-mode", mode,
        "--chunk-batches", str(grid["chunk_batches"]), "--no-progress",
        "--workdir", str(workdir),
    ]  # fmt: skip
    env = dict(os.environ)
    cpu = C.device_info()["platform"] == "cpu"
    # several CPU processes: each on its own cores, as on hosts of their own
    pinned = cpu and processes > 1
    if cpu:
        env.update(_cpu_devices_env(devices))
    else:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, range(devices)))
    if processes > 1:
        port = _free_port()
        commands = [
            [*args, "--coordinator-address", f"localhost:{port}", "--num-processes",
             str(processes), "--process-id", str(i)]
            for i in range(processes)
        ]  # fmt: skip
        if not cpu:  # one process per group of GPUs
            envs = [
                dict(
                    env, CUDA_VISIBLE_DEVICES=",".join(str(i * devices + d) for d in range(devices))
                )
                for i in range(processes)
            ]
        else:
            envs = [env] * processes
    else:
        commands, envs = [args], [env]
    memory = _report_of_children(
        _CHILD, commands, envs, "MEMORY", f"layout {processes}x{devices} {mode}", timeout=3600,
        cores=core_shares(processes) if pinned else None,
    )  # fmt: skip
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    derived = json.loads((workdir / "config.json").read_text())["derived"]
    images = derived["steps_per_epoch"] * grid["batch_size"]
    times = [r["epoch_time"] for r in records[1:]] or [records[0]["epoch_time"]]
    return {
        "processes": processes,
        "devices_per_process": devices,
        "devices": processes * devices,
        "mode": mode,
        "pinned": pinned,
        "images_per_s": images / C.median(times),
        "peak_device_bytes": memory.get("peak_bytes_in_use"),
        "epoch_s": times,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark; prints the table; writes the .md/.json. Returns 0."""
    parser = C.base_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    grid_name, grid, note = C.chosen_grid(args, GRIDS, GRID_NOTES, {})
    info = C.device_info()
    if info["platform"] != "cpu":  # real devices: only the layouts this host has
        fits = [layout for layout in grid["layouts"] if layout[0] * layout[1] <= info["count"]]
        if len(fits) < len(grid["layouts"]):
            note += (
                f" This host has {info['count']} {info['platform'].upper()}(s): only the "
                f"layouts of at most {info['count']} devices ran."
            )
        grid["layouts"] = fits
    head = C.header(BENCHMARK, grid_name, note, dict(grid))
    C.log(f"{BENCHMARK} on {head['device']}, grid {grid_name}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (processes, devices, mode) in enumerate(grid["layouts"]):
            row = run_layout(grid, processes, devices, mode, Path(tmp) / str(i))
            rows.append(row)
            C.log(f"  {processes}x{devices} {mode}: {row['images_per_s']:.0f} img/s")
    floats = models.param_count(grid["model"], grid["shape"], 10) + 2  # + loss, correct
    allreduce = []
    for processes, devices, pinned, batch in grid["allreduce_layouts"]:
        times = allreduce_times(
            floats, processes, devices, pinned, batch, grid["allreduce_repeats"]
        )
        allreduce.append(
            {"processes": processes, "devices_per_process": devices, "pinned": pinned,
             "sched_batch": batch, "floats": floats, "median_ms": 1e3 * C.median(times),
             "min_ms": 1e3 * min(times), "max_ms": 1e3 * max(times)}
        )  # fmt: skip
        C.log(f"  all-reduce {processes}x{devices}{' pinned' if pinned else ''}"
              f"{' batch' if batch else ''}: {allreduce[-1]['median_ms']:.2f} ms")  # fmt: skip
    sweep = batch_sweep(grid)
    payload = {
        **head,
        "load_average": os.getloadavg(),
        "rows": rows,
        "allreduce": allreduce,
        "batch_sweep": sweep,
        "summary": summarize(rows),
        "targets": "on a GPU: chunked >= 0.9x resident at batch >= 128; 2 processes x 2 "
        "devices >= 0.9x 1 process x 4 devices",
    }
    markdown = render(payload)
    C.write_results(args.out_dir, BENCHMARK, payload, markdown)
    print(markdown)
    return 0


def batch_sweep(grid: dict[str, Any]) -> list[dict[str, Any]]:
    """The layouts of the process ratio (``PROCESS_RATIOS["two_processes_over_one"]``,
    resident) at each of ``grid["batch_sweep"]``'s batch sizes: one row per batch size
    with both images/s, their ratio and the milliseconds a step the second process adds."""
    two_layout, one_layout, _ = PROCESS_RATIOS["two_processes_over_one"]
    out = []
    for batch in grid.get("batch_sweep", ()):
        sized = dict(grid, batch_size=batch, train_size=max(grid["train_size"], 16 * batch))
        one, two = (_resident_images_per_s(sized, *layout) for layout in (one_layout, two_layout))
        out.append(
            {"batch_size": batch, "one_process_images_per_s": one,
             "two_processes_images_per_s": two, "ratio": two / one,
             "added_ms_per_step": 1e3 * batch * (1 / two - 1 / one)}
        )  # fmt: skip
        C.log(f"  batch {batch}: 2x2 / 1x4 {two / one:.2f}")
    return out


def _resident_images_per_s(grid: dict[str, Any], processes: int, devices: int) -> float:
    with tempfile.TemporaryDirectory() as workdir:
        return run_layout(grid, processes, devices, "resident", Path(workdir))["images_per_s"]


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The two target ratios where both sides were measured, and 2 processes of one
    device each against 1 process of two devices.

    Example:
      >>> rows = [{"processes": 1, "devices_per_process": 4, "mode": "resident",
      ...          "images_per_s": 100.0}, {"processes": 2, "devices_per_process": 2,
      ...          "mode": "resident", "images_per_s": 90.0}]
      >>> summarize(rows)["two_processes_over_one"]
      {'resident': 0.9}
    """
    ips = {(r["processes"], r["devices_per_process"], r["mode"]): r["images_per_s"] for r in rows}
    chunked = {
        f"{p}x{d}": ips[p, d, "chunked"] / ips[p, d, "resident"]
        for p, d, mode in ips
        if mode == "resident" and (p, d, "chunked") in ips
    }
    return {
        "chunked_over_resident": chunked,
        **{
            key: _layout_ratio(ips, top, bottom) for key, (top, bottom, _) in PROCESS_RATIOS.items()
        },
    }


#: Summary key -> (processes, devices) over (processes, devices), and its report label.
PROCESS_RATIOS = {
    "two_processes_over_one": ((2, 2), (1, 4), "2 processes x 2 devices / 1 process x 4 devices"),
    "one_device_per_process": ((2, 1), (1, 2), "2 processes x 1 device / 1 process x 2 devices"),
}


def _layout_ratio(
    ips: dict[tuple[int, int, str], float], top: tuple[int, int], bottom: tuple[int, int]
) -> dict[str, float]:
    """images/s of layout ``top`` over layout ``bottom``, per data mode measured for both."""
    return {
        mode: ips[(*top, mode)] / ips[(*bottom, mode)]
        for mode in ("resident", "chunked")
        if (*top, mode) in ips and (*bottom, mode) in ips
    }


def render(payload: dict[str, Any]) -> str:
    """The Markdown report."""
    s = payload["settings"]
    load = ", ".join(f"{x:.1f}" for x in payload["load_average"])
    lines = [
        C.header_markdown(payload, "Scaling: resident vs chunked, devices, processes"),
        f"* {s['model']} on synthetic {'x'.join(map(str, s['shape']))} images, "
        f"{s['train_size']} per epoch, batch {s['batch_size']}, chunks of "
        f"{s['chunk_batches']} batches, {s['epochs']} epochs (the first not timed); "
        "data sharded over all devices; SGD, K = 1.",
        f"* Load average (1, 5, 15 min) at the end: {load} on {payload['cpu_count']} cores. "
        "A shared, busy machine: the numbers are noisy.",
        "",
        C.markdown_table(
            [
                "processes x devices",
                "mode",
                "each process pinned",
                "images/s",
                "peak device memory",
            ],
            [_table_row(r) for r in payload["rows"]],
            align="lllrr",
        ),
    ]
    summary = payload["summary"]
    lines += ["", "Ratios (target >= 0.9 on a GPU):", ""]
    for layout, ratio in summary["chunked_over_resident"].items():
        lines.append(f"* chunked / resident, {layout}: {ratio:.2f}")
    for key, (_, _, label) in PROCESS_RATIOS.items():
        for mode, ratio in summary[key].items():
            lines.append(f"* {label} ({mode}): {ratio:.2f}")
    if payload.get("batch_sweep"):
        lines += [
            "",
            "2 processes x 2 devices against 1 process x 4 (resident) at larger batches "
            f"(at least 16 batches an epoch; batch {s['batch_size']} is the table above):",
            "",
            C.markdown_table(
                [
                    "batch",
                    "1 x 4 images/s",
                    "2 x 2 images/s",
                    "2 x 2 / 1 x 4",
                    "ms a step the second process adds",
                ],
                [
                    [
                        str(r["batch_size"]),
                        f"{r['one_process_images_per_s']:.0f}",
                        f"{r['two_processes_images_per_s']:.0f}",
                        f"{r['ratio']:.2f}",
                        f"{r['added_ms_per_step']:.1f}",
                    ]
                    for r in payload["batch_sweep"]
                ],
                align="lrrrr",
            ),
        ]
    if payload.get("allreduce"):
        floats = payload["allreduce"][0]["floats"]
        lines += [
            "",
            f"The all-reduce of one step's {floats:,} float32 (gradients, loss, correct count) "
            "alone, on CPU devices (ms; across processes through gloo over TCP):",
            "",
            C.markdown_table(
                [
                    "processes x devices",
                    "each process pinned to its own cores",
                    "SCHED_BATCH",
                    "median",
                    "min",
                    "max",
                ],
                [
                    [
                        f"{r['processes']} x {r['devices_per_process']}",
                        "yes" if r["pinned"] else "no",
                        "yes" if r.get("sched_batch") else "no",
                        *(f"{r[k]:.2f}" for k in ("median_ms", "min_ms", "max_ms")),
                    ]
                    for r in payload["allreduce"]
                ],
                align="lllrrr",
            ),
        ]
    return "\n".join(lines) + "\n"


def _table_row(row: dict[str, Any]) -> list[str]:
    peak = row["peak_device_bytes"]
    shown = "n/a (not reported)" if peak is None else f"{peak / 2**20:.1f} MiB"
    layout = f"{row['processes']} x {row['devices_per_process']}"
    pinned = "yes" if row.get("pinned") else "no"
    return [layout, row["mode"], pinned, f"{row['images_per_s']:.0f}", shown]


if __name__ == "__main__":
    xla_flags.apply()  # the training app's XLA:CPU flags, before jax starts its backends
    sys.exit(main())
