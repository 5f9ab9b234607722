"""Every optimizer of the registry trains through ``train.run(Config(...))`` in every mode.

The factors: the optimizer (every name of :data:`train.optimizers.OPTIMIZERS`, read at
import, so that a new entry joins by itself, plus a user's own ``tx=`` whose state holds
the parameters themselves, one array under two names and Python scalars), ``layerwise``,
the schedule (every name of ``SCHEDULES``), persistency K in {1, 2}, resident or chunked
data (chunks of 3 batches: one full chunk and one padded), sharded or replicated
placement, 1 or 2 (fake CPU) devices, ``on_nan`` stop or skip, and a resume. A
deterministic pairwise covering array (:func:`covering_rows`) gives each optimizer two
rows whose two-valued factors are complementary (so every optimizer meets every value of
every other factor) and two different schedules, and covers every pair of values of any
two other factors.

Each row trains 2 epochs of 4 batches on a tiny model: both epochs finish with finite
losses, the step count and the device count are the row's, the epoch's outputs are
distinct buffers, and a resume row, restarted from its epoch-1 checkpoint (epoch 2's
deleted, as if the process had died before saving it), gives epoch 2's numbers again.

The rows run in two concurrent subprocesses (1 and 2 devices), this module as their
script, each with a persistent compilation cache of its own: a resume row's second run and
the optimizer-independent programs compile once.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import _cheap_compile
from train import optimizers
from train.config import SCHEDULES

REPO = Path(__file__).resolve().parents[1]
USER_TX = "user_tx"  # a user's optimizer passed as run(..., tx=...)
OPTIMIZERS = (*optimizers.OPTIMIZERS, USER_TX)
#: The two-valued factors: (name, value of a row's first occurrence, the other value).
BINARY = {
    "layerwise": (False, True),
    "persistency": (1, 2),
    "data_mode": ("resident", "chunked"),
    "data_placement": ("sharded", "replicated"),
    "num_devices": (1, 2),
    "on_nan": ("stop", "skip"),
    "resume": (False, True),
}
FACTORS = {**BINARY, "schedule": SCHEDULES}
TRAIN, TEST, BATCH, EPOCHS, CHUNK = 64, 16, 16, 2, 3
STEPS_PER_EPOCH = TRAIN // BATCH
RESULT = "matrix-result: "  # the prefix of the subprocess's result lines


def covering_rows() -> list[dict[str, Any]]:
    """The test matrix: two rows per optimizer, chosen greedily (deterministically) to cover
    the most pairs of values of two non-optimizer factors not yet covered.

    The second row of an optimizer takes the other value of every two-valued factor and
    another schedule, so each optimizer meets every value of every other factor.
    """
    names = list(FACTORS)
    combos = list(itertools.combinations(names, 2))
    pair_index = {
        ((a, x), (b, y)): i
        for i, (a, x, b, y) in enumerate(
            (a, x, b, y) for a, b in combos for x in FACTORS[a] for y in FACTORS[b]
        )
    }
    bits = list(itertools.product((0, 1), repeat=len(BINARY)))

    def row(b: tuple[int, ...], schedule: str) -> dict[str, Any]:
        return {**{f: BINARY[f][i] for f, i in zip(BINARY, b, strict=True)}, "schedule": schedule}

    # pairs[i, s]: the pairs that row (bits[i], SCHEDULES[s]) covers; the complementary
    # bits of bits[i] are bits[-1 - i].
    pairs = np.array(
        [
            [
                [pair_index[(a, r[a]), (b, r[b])] for a, b in combos]
                for r in (row(b, s) for s in SCHEDULES)
            ]
            for b in bits
        ]
    )
    count = np.zeros(len(pair_index), int)  # how many rows cover each pair so far
    rows = []
    for optimizer in OPTIMIZERS:
        # First the most pairs not yet covered, then the least covered ones (spread, not
        # repeated); two rows of an optimizer never cover the same pair.
        score = 1000 * (count[pairs] == 0).sum(-1) - count[pairs].sum(-1)  # [bits, schedule]
        total = score[:, :, None] + score[::-1, None, :]  # + its complement's, [b, s1, s2]
        total[:, np.arange(len(SCHEDULES)), np.arange(len(SCHEDULES))] = np.iinfo(int).min
        i, s1, s2 = np.unravel_index(np.argmax(total), total.shape)
        for b, s in ((bits[i], s1), (bits[-1 - i], s2)):
            count[pairs[bits.index(b), s]] += 1
            rows.append({"optimizer": optimizer, **row(b, SCHEDULES[s])})
    return rows


ROWS = covering_rows()


def _row_id(index: int, row: dict[str, Any]) -> str:
    parts = [f"{index:02d}", row["optimizer"], row["schedule"], f"K{row['persistency']}",
             row["data_mode"], row["data_placement"], f"{row['num_devices']}dev",
             f"nan-{row['on_nan']}"]  # fmt: skip
    parts += ["layerwise"] * row["layerwise"] + ["resume"] * row["resume"]
    return "-".join(parts)


def test_the_rows_cover_every_pair_and_every_optimizer_meets_every_value():
    names = list(FACTORS)
    for a, b in itertools.combinations(names, 2):
        seen = {(row[a], row[b]) for row in ROWS}
        missing = set(itertools.product(FACTORS[a], FACTORS[b])) - seen
        assert not missing, (a, b, missing)
    for optimizer in OPTIMIZERS:
        mine = [row for row in ROWS if row["optimizer"] == optimizer]
        for name, values in BINARY.items():
            assert {row[name] for row in mine} == set(values), (optimizer, name)
        assert len({row["schedule"] for row in mine}) == 2, optimizer
    assert {row["schedule"] for row in ROWS} == set(SCHEDULES)
    assert set(optimizers.OPTIMIZERS) < {row["optimizer"] for row in ROWS}


# --- what the subprocess runs -------------------------------------------------------------


def user_tx():
    """A user's optimizer (SGD) whose state holds the parameters themselves, one array
    under two names and Python scalars: what a donating epoch must still train."""
    import jax
    import jax.numpy as jnp
    import optax

    def init(params):
        zero = jnp.zeros((), jnp.float32)
        return {"start": params, "a": zero, "b": zero, "scale": 0.05, "count": 0}

    def update(updates, state, params=None, **extra):
        del params, extra
        updates = jax.tree.map(lambda g: -state["scale"] * g, updates)
        return updates, {**state, "a": state["a"] + 1.0, "count": state["count"] + 1}

    return optax.GradientTransformationExtraArgs(init, update)


def _config(row: dict[str, Any], workdir: str | None):
    from train.config import Config

    return Config(
        model="tiny",
        dataset="synthetic",
        synthetic_shape=(8, 8, 1),
        synthetic_size=(TRAIN, TEST),
        batch_size=BATCH,
        epochs=EPOCHS,
        progress=False,
        optimizer="sgd" if row["optimizer"] == USER_TX else row["optimizer"],
        layerwise=row["layerwise"],
        schedule=row["schedule"],
        persistency=row["persistency"],
        data_mode=row["data_mode"],
        chunk_batches=CHUNK if row["data_mode"] == "chunked" else None,
        data_placement=row["data_placement"],
        num_devices=row["num_devices"],
        on_nan=row["on_nan"],
        workdir=workdir,
    )


def _train_row(row: dict[str, Any], root: str) -> dict[str, Any]:
    """Trains one row (twice for a resume row); what the test checks, as JSON."""
    import jax

    import polyak_optax as po
    from train import run

    tx = None
    if row["optimizer"] == USER_TX:
        tx = po.layerwise(user_tx()) if row["layerwise"] else user_tx()
    states: list[dict[str, Any]] = []

    def on_epoch(record: dict[str, Any], state: Any) -> None:
        buffers = [
            {
                (shard.device.id, shard.data.unsafe_buffer_pointer())
                for shard in x.addressable_shards
            }
            for x in jax.tree.leaves(state.arrays())
        ]
        states.append(
            {
                "devices": len(jax.tree.leaves(state.params)[0].sharding.device_set),
                "distinct": len(set().union(*buffers)) == sum(map(len, buffers)),
            }
        )

    lines: list[str] = []
    workdir = os.path.join(root, "run") if row["resume"] else None
    config = _config(row, workdir)
    out: dict[str, Any] = {"history": run.run(config, log=lines.append, tx=tx, on_epoch=on_epoch)}
    if row["resume"]:
        shutil.rmtree(os.path.join(workdir, "checkpoints", str(EPOCHS)))
        resumed = run.run(config.replace(resume=True), log=lines.append, tx=tx, on_epoch=on_epoch)
        out["resumed"] = resumed
    out["states"] = states
    out["chunked_line"] = any("chunks of" in line for line in lines)
    return out


def _subprocess_main(rows_json: str) -> None:
    """Trains every row given (as JSON); prints one result line per row."""
    from train import report

    # curves.png is tests/test_cli.py's; here its drawings would be a fifth of the time.
    report.plot_curves = lambda history, path: None
    for index, row in json.loads(rows_json):
        start = time.process_time()
        with tempfile.TemporaryDirectory() as root:
            try:
                result = _train_row(row, root)
            except Exception as error:  # reported by the test, with the row
                result = {"error": f"{type(error).__name__}: {' '.join(str(error).split())}"}
        result["cpu_seconds"] = round(time.process_time() - start, 2)
        print(RESULT + json.dumps({"index": index, **result}), flush=True)


# --- the test -------------------------------------------------------------------------------


def _check(row: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """What is wrong with one row's result (an empty list: nothing)."""
    if "error" in result:
        return [result["error"]]
    problems = []
    history = result["history"]
    if [r["epoch"] for r in history] != list(range(1, EPOCHS + 1)):
        return [f"epochs {[r['epoch'] for r in history]}"]
    for record in history:
        steps = record["epoch"] * STEPS_PER_EPOCH * row["persistency"]
        if record["step"] != steps:
            problems.append(f"epoch {record['epoch']}: step {record['step']} != {steps}")
        for key in ("train_loss", "test_loss", "test_accuracy"):
            value = record[key]
            if value is None or not math.isfinite(value):
                problems.append(f"epoch {record['epoch']}: {key} {value}")
        if record["nonfinite_batches"]:
            problems.append(f"epoch {record['epoch']}: {record['nonfinite_batches']} NaN batches")
    for state in result["states"]:
        if state["devices"] != row["num_devices"]:
            problems.append(f"the state lives on {state['devices']} devices")
        if not state["distinct"]:
            problems.append("an epoch returned one buffer under two leaves")
    if result["chunked_line"] != (row["data_mode"] == "chunked"):
        problems.append(f"data mode is not {row['data_mode']}")
    if row["resume"]:
        resumed = result["resumed"]
        if resumed[0] != history[0]:
            problems.append("the resume lost epoch 1's record")
        for key in ("step", "train_loss", "train_accuracy", "test_loss", "test_accuracy",
                    "learning_rate"):  # fmt: skip
            got, want = resumed[-1][key], history[-1][key]
            same = got == want if None in (got, want) else got == pytest.approx(want, rel=1e-6)
            if not same:
                problems.append(f"resumed epoch {EPOCHS}: {key} {got} != {want}")
    return problems


def _start(devices: int, cache: Path) -> tuple[list, subprocess.Popen]:
    """Starts the subprocess that trains the rows on ``devices`` devices."""
    rows = [(i, row) for i, row in enumerate(ROWS) if row["num_devices"] == devices]
    env = _cheap_compile.environ(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_COMPILATION_CACHE_DIR=str(cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.test_matrix", json.dumps(rows)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return rows, process


@pytest.mark.slow
def test_every_row_trains(tmp_path):
    # Both subprocesses at once: on 2 cores the test takes about the time of one.
    started = [_start(devices, tmp_path / f"cache-{devices}") for devices in (1, 2)]
    try:
        outputs = [process.communicate(timeout=600) for _, process in started]
    finally:
        for _, process in started:
            process.kill()  # only if still running (a timeout)
    failures = []
    for (rows, process), (stdout, stderr) in zip(started, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
        results = {}
        for line in stdout.splitlines():
            if line.startswith(RESULT):
                parsed = json.loads(line[len(RESULT) :])
                results[parsed.pop("index")] = parsed
        assert sorted(results) == [i for i, _ in rows], stdout[-3000:] + stderr[-3000:]
        failures += [
            f"{_row_id(i, row)}: {'; '.join(problems)}"
            for i, row in rows
            if (problems := _check(row, results[i]))
        ]
    assert not failures, "\n".join(failures)


if __name__ == "__main__":
    _subprocess_main(sys.argv[1])
