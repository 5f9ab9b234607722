"""Scale-out: the sharded data set, several processes under ``jax.distributed``, chunks.

Multi-device checks run in subprocesses with fake CPU devices
(``--xla_force_host_platform_device_count``); multi-process checks start ``python -m
train`` twice on localhost with CPU collectives (gloo). Everything is the tiny model on
synthetic 8x8x1 images.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import models
from train import loop, sharding
from train.optimizers import build_optimizer

REPO = Path(__file__).resolve().parents[1]


def _env(devices: int = 1, **extra: str) -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env.update(extra)
    return env


def _python(script: str, devices: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO, env=_env(devices), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_epoch_indices_draw_each_shard_without_replacement():
    key = jax.random.key(7)
    idx = loop.epoch_indices(key, 103, 12, 4)  # shards of 25 (3 examples left out), b = 3
    assert idx.shape == (8, 12)
    for s in range(4):
        part = idx[:, 3 * s : 3 * (s + 1)].ravel()
        assert len(set(part.tolist())) == len(part)  # without replacement
        assert ((part >= 25 * s) & (part < 25 * (s + 1))).all()  # only shard s's rows
    # One shard is the replicated mode's sampling.
    np.testing.assert_array_equal(
        loop.epoch_indices(key, 103, 12, 1), loop.epoch_indices(key, 103, 12, None)
    )


def test_one_device_sharded_equals_replicated_bitwise():
    tx = build_optimizer("sgd", learning_rate=0.05, momentum=0.9)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8)
    labels = rng.integers(0, 3, 40, dtype=np.int32)
    mesh = sharding.make_mesh(1)
    results = []
    for sharded in (False, True):
        state = loop.create_train_state(models.create("tiny", 3), tx, jax.random.key(0), (8, 8, 1))
        x = sharding.put_rows(images, mesh) if sharded else sharding.replicate(images, mesh)
        y = sharding.put_rows(labels, mesh) if sharded else sharding.replicate(labels, mesh)
        state, metrics = loop.train_epoch(
            sharding.replicate(state, mesh), x, y, jnp.full(1, 0.5), jnp.full(1, 0.3),
            jax.random.key(1), batch_size=8, augment=True,
            data_sharding=sharding.batch_sharding(mesh), sharded=sharded,
        )  # fmt: skip
        results.append(jax.device_get((state.params, metrics)))
    jax.tree.map(np.testing.assert_array_equal, *results)


_SHARDED = """
import jax, jax.numpy as jnp, numpy as np
import models
from train import augment, loop, sharding
from train.optimizers import build_optimizer

mesh = sharding.make_mesh()
S = mesh.size
assert S == 4, S
rng = np.random.default_rng(0)
N, B = 50, 8  # shards of 12 (2 examples left out), 3 batches of 2 per shard
images = rng.integers(0, 256, (N, 8, 8, 1), dtype=np.uint8)
labels = rng.integers(0, 3, N, dtype=np.int32)
mean, std = jnp.full(1, 0.5), jnp.full(1, 0.3)
tx = build_optimizer("sgd", learning_rate=0.05, momentum=0.9)
state0 = loop.create_train_state(models.create("tiny", 3), tx, jax.random.key(0), (8, 8, 1))
n = sharding.sharded_rows(N, mesh)
x, y = sharding.put_rows(images, mesh, n), sharding.put_rows(labels, mesh, n)
# Per-device data memory is 1/D of the data set, from the array's sharding.
assert sharding.device_bytes(x) * S == x.nbytes == n * 64, (sharding.device_bytes(x), x.nbytes)
assert sharding.device_bytes(y) * S == y.nbytes
assert all(s.data.shape == (n // S, 8, 8, 1) for s in x.addressable_shards)
state = sharding.replicate(state0.replace_arrays(jax.tree.map(jnp.copy, state0.arrays())), mesh)
key = jax.random.key(3)
data_sharding = sharding.batch_sharding(mesh)
state, metrics = loop.train_epoch(
    state, x, y, mean, std, key, batch_size=B, persistency=2, augment=True,
    data_sharding=data_sharding, sharded=True,
)
# The documented sampling, one batch at a time on one device.
perm_key, augment_key = jax.random.split(key)
indices = loop.epoch_indices(perm_key, n, B, S)
assert indices.shape == (6, 8), indices.shape
step = jax.jit(loop.persistent_step, static_argnames="persistency")
ref, losses = state0, []
for i, rows in enumerate(indices):
    xb = augment.augment(jax.random.fold_in(augment_key, i), jnp.asarray(images[rows]))
    ref, m = step(ref, augment.normalize(xb, mean, std), jnp.asarray(labels[rows]), persistency=2)
    losses.append(float(m["loss"]))
assert int(state.step) == int(ref.step) == 12
for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(ref.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
np.testing.assert_allclose(float(metrics["loss"]), np.mean(losses), rtol=1e-4)
# Evaluation of a sharded, padded test set equals the replicated evaluation.
test_x = rng.integers(0, 256, (37, 8, 8, 1), dtype=np.uint8)
test_y = rng.integers(0, 3, 37, dtype=np.int32)
sharded = loop.evaluate(
    state, sharding.put_rows(test_x, mesh, 40), sharding.put_rows(test_y, mesh, 40, fill=-1),
    mean, std, batch_size=8, data_sharding=data_sharding, sharded=True,
)
replicated = loop.evaluate(
    state, sharding.replicate(test_x, mesh), sharding.replicate(test_y, mesh), mean, std,
    batch_size=8, data_sharding=data_sharding,
)
np.testing.assert_allclose(float(sharded["loss"]), float(replicated["loss"]), rtol=1e-5)
assert float(sharded["accuracy"]) == float(replicated["accuracy"])
print("ok")
"""


def test_four_devices_hold_a_quarter_each_and_train_on_the_documented_batches():
    """Sharded over 4 fake devices: each device holds N/4 examples (from the shardings), the
    epoch trains on exactly the batches :func:`train.loop.epoch_indices` documents (a
    one-device loop over them gives the same parameters up to float rounding), and the
    sharded evaluation equals the replicated one."""
    result = _python(_SHARDED, devices=4)
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout + result.stderr
