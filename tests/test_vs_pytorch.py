"""benchmarks.vs_pytorch: the PyTorch twins compute the same function and take the same steps.

Skipped without torch (the ``bench`` extra). The smoke run checks the result files; the
twin tests check the claim the comparison rests on: same network, same weights, same
optimizer, so that the two arms differ only in how fast they run.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[bench]')")

import models  # noqa: E402
from benchmarks import _common, vs_pytorch  # noqa: E402

SHAPES = {"lenet5": (28, 28, 1), "cifar_quick": (32, 32, 3), "alexnet": (32, 32, 3)}


def _flax_and_torch(name: str, seed: int = 0):
    shape = SHAPES[name]
    model = models.create(name, 10)
    params = model.init(jax.random.key(seed), jnp.zeros((1, *shape)))["params"]
    if name == "cifar_quick":  # Caffe's tiny conv1 filler makes every logit ~equal: scale up
        params = jax.tree.map(lambda p: p * 30.0, params)
    net = vs_pytorch.torch_model(name, jax.device_get(params), shape)
    return model, params, net


@pytest.mark.parametrize("name", vs_pytorch.MODELS)
def test_torch_twin_computes_the_same_logits(name: str) -> None:
    model, params, net = _flax_and_torch(name)
    x = np.random.default_rng(1).normal(size=(3, *SHAPES[name])).astype(np.float32)
    want = np.asarray(model.apply({"params": params}, x))
    with torch.no_grad():
        got = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    assert np.abs(want).max() > 1e-3  # not a trivially zero network
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5 * np.abs(want).max())


def test_torch_nesterov_steps_equal_optax() -> None:
    model, params, net = _flax_and_torch("lenet5")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    tx = optax.sgd(vs_pytorch.LEARNING_RATE, vs_pytorch.MOMENTUM, nesterov=True)
    state = tx.init(params)
    loss_fn = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        model.apply({"params": p}, x), y
    ).mean()
    opt = torch.optim.SGD(
        net.parameters(), lr=vs_pytorch.LEARNING_RATE, momentum=vs_pytorch.MOMENTUM, nesterov=True
    )
    xt, yt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y)
    for _ in range(3):
        grads = jax.grad(loss_fn)(params)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    got = net.conv1.weight.detach().numpy().transpose(2, 3, 1, 0)
    np.testing.assert_allclose(got, params["conv1"]["kernel"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        net.ip2.weight.detach().numpy().T, params["ip2"]["kernel"], rtol=1e-4, atol=1e-6
    )


@pytest.mark.slow
def test_smoke_run_writes_results(tmp_path: Path) -> None:
    assert vs_pytorch.main(["--smoke", "--out-dir", str(tmp_path)]) == 0
    md, js = _common.result_paths(tmp_path, "vs_pytorch")
    payload = json.loads(js.read_text())
    assert payload["grid"] == "smoke" and payload["versions"]["torch"] == torch.__version__
    assert "loadavg_start" in payload and payload["device"] in md.read_text()
    (row,) = payload["rows"]
    assert (row["model"], row["batch_size"]) == ("lenet5", 32)
    for arm in vs_pytorch.ARMS:
        assert row[f"{arm}_images_per_s"] > 0
        assert 0.0 <= row[f"{arm}_test_accuracy"] <= 1.0
    assert row["ratio"] == pytest.approx(row["jax_images_per_s"] / row["torch_images_per_s"])
    png = _common.png_path(tmp_path, "vs_pytorch")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_points_a_missed_target_to_the_step_profile() -> None:
    """A batch-128 cell below its target sends the reader to ``step_profile``'s per-layer
    comparison; a grid that meets every target does not."""
    committed = Path(__file__).parents[1] / "benchmarks" / "results" / "vs_pytorch-cpu.json"
    payload = json.loads(committed.read_text())

    def with_ratio(ratio: float) -> dict:
        rows = [dict(r, ratio=ratio) for r in payload["rows"]]
        return dict(payload, rows=rows)

    assert "benchmarks.step_profile" in vs_pytorch.render(with_ratio(0.5))
    assert "(target >= 1.2x: missed)" in vs_pytorch.render(with_ratio(1.1))
    assert "benchmarks.step_profile" not in vs_pytorch.render(with_ratio(2.0))
