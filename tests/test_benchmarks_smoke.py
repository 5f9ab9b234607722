"""Smoke tests of the benchmark entry points: each runs its --smoke grid and writes results.

Not timed tests: the numbers of a smoke run mean nothing. What is checked is that every
``benchmarks.NAME.main`` runs end to end in seconds and writes a Markdown report and a
strict JSON file whose rows carry exactly the keys issue 7 specifies.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import jax
import pytest

import models
from benchmarks import _common
from tests import _cheap_compile

pytestmark = pytest.mark.slow  # each runs a benchmark end to end

ROW_KEYS = {
    "optimizer_overhead": {"model", "optimizer", "batch_size", "median_step_ms"},
    "persistency_throughput": {"model", "batch_size", "K", "loop", "images_per_s"},
    "thesis_persistency": None,  # Table 2.1 rows, checked below
    "thesis_adaptive": None,
    "lr_range_test_speed": {
        "model",
        "batch_size",
        "num_steps",
        "variant",
        "median_s",
        "speedup_of_scan",
    },
}
PNGS = {
    "optimizer_overhead": 0,
    "persistency_throughput": 0,
    "thesis_persistency": 2,
    "thesis_adaptive": 1,
    "lr_range_test_speed": 1,
}


def _run(name: str, out_dir: Path) -> dict:
    module = importlib.import_module(f"benchmarks.{name}")
    assert module.main(["--smoke", "--out-dir", str(out_dir)]) == 0
    md_path, json_path = _common.result_paths(out_dir, name)
    assert md_path.read_text().startswith("# ")
    assert _common.device_info()["label"] in md_path.read_text()
    payload = json.loads(json_path.read_text())  # strict JSON: NaN would not parse back
    assert payload["benchmark"] == name
    assert payload["device"] == _common.device_info()["label"]
    assert payload["grid"] == "smoke"
    assert payload["versions"]["jax"] == jax.__version__
    assert payload["rows"], "no rows written"
    pngs = sorted(out_dir.glob(f"{name}-*.png"))
    assert len(pngs) == PNGS[name]
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size < _common.MAX_PNG_BYTES
    return payload


#: What train.run records per epoch; the thesis benchmarks add ``time``.
RUN_RECORD_KEYS = {
    "epoch",
    "step",
    "wall_time",
    "epoch_time",
    "train_loss",
    "train_accuracy",
    "test_loss",
    "test_accuracy",
    "learning_rate",
    "nonfinite_batches",
    "compile_time",
}


def _check_train_run_history(run: dict, epochs: int) -> None:
    """A thesis run's history is train.run's records plus the cumulative training time."""
    history = run["history"]
    assert run["diverged_epoch"] is None and [h["epoch"] for h in history] == list(
        range(1, epochs + 1)
    )
    assert run["compile_s"] > 0
    total = 0.0
    for h in history:
        assert set(h) == RUN_RECORD_KEYS | {"time"}
        total += h["epoch_time"]
        assert h["time"] == pytest.approx(total, abs=1e-3) and h["time"] > 0
        assert h["time"] <= h["wall_time"] + 1e-3  # wall_time counts the evaluations too
        assert 0 <= h["test_accuracy"] <= 1 and h["nonfinite_batches"] == 0


@pytest.mark.parametrize("name", sorted(ROW_KEYS))
def test_smoke_run_writes_well_formed_results(name: str, tmp_path: Path) -> None:
    payload = _run(name, tmp_path)
    keys = ROW_KEYS[name]
    for row in payload["rows"]:
        if keys is not None:
            assert set(row) == keys, f"{name} row keys {sorted(row)}"
    if name == "optimizer_overhead":
        assert {r["optimizer"] for r in payload["rows"]} == {
            "nesterov",
            "adaptive_nesterov",
            "layerwise_nesterov",
            "adam",
        }
        assert all(r["median_step_ms"] > 0 for r in payload["rows"])
    elif name == "persistency_throughput":
        assert {r["loop"] for r in payload["rows"]} == {"device_resident", "host_fed"}
        assert all(r["images_per_s"] > 0 for r in payload["rows"])
    elif name == "thesis_persistency":
        assert {r["K"] for r in payload["rows"]} == {1, 2}
        assert payload["settings"]["weight_decay"] == 0.0  # the thesis states none
        for run in payload["runs"]:
            epochs = payload["settings"]["epochs"]
            _check_train_run_history(run, epochs)
            assert run["history"][-1]["step"] == epochs * run["K"] * run["steps_per_epoch"]
    elif name == "thesis_adaptive":
        assert {r["method"] for r in payload["rows"]} >= {"scheduled", "adaptive", "clr"}
        assert payload["settings"]["weight_decay"] == 0.0
        for run in payload["runs"]:
            _check_train_run_history(run, payload["settings"]["epochs"])
            steps = run["history"][-1]["step"]
            eta = run["eta"]
            assert len(eta) == steps and all(e is not None and e > 0 for e in eta)
            if run["method"] == "adaptive":
                assert all(0.001 - 1e-7 <= e <= 0.1 + 1e-7 for e in eta)
    elif name == "lr_range_test_speed":
        (res,) = payload["results"]
        assert res["max_rel_loss_diff"] < 1e-3
        assert all(math.isfinite(r["median_s"]) and r["median_s"] > 0 for r in payload["rows"])


def test_thesis_persistency_records_a_diverged_run(tmp_path: Path) -> None:
    """A non-finite loss stops the run (train.run.Diverged); the report keeps its finite
    epochs, names the epoch it diverged in, and still writes its table and curves."""
    module = importlib.import_module("benchmarks.thesis_persistency")
    argv = ["--smoke", "--out-dir", str(tmp_path), "--learning-rates", "1000", "--epochs", "2"]
    assert module.main(argv) == 0
    md_path, json_path = _common.result_paths(tmp_path, "thesis_persistency")
    payload = json.loads(json_path.read_text())
    assert len(payload["rows"]) == len(payload["runs"]) == 2  # K = 1, 2
    for run in payload["runs"]:
        assert run["diverged_epoch"] == len(run["history"]) + 1 <= 2
        assert all(h["nonfinite_batches"] == 0 for h in run["history"])
        assert all(math.isfinite(h["train_loss"]) for h in run["history"])
    assert "Diverged (non-finite training loss" in md_path.read_text()
    assert len(list(tmp_path.glob("thesis_persistency-*.png"))) == 2


def test_common_writes_strict_json_and_tables(tmp_path: Path) -> None:
    md, js = _common.write_results(tmp_path, "demo", {"device": "x", "v": [math.inf, 1.5]}, "# t")
    assert json.loads(js.read_text())["v"] == [None, 1.5]
    assert md.read_text() == "# t\n"
    assert _common.best_and_lowest([])["max_accuracy_epoch"] is None
    with pytest.raises(ValueError, match="grid"):
        _common.resolve_grid("huge")


def test_step_profile_finds_every_convolution_of_the_step(tmp_path):
    """LeNet-5's step holds 3 convolutions on the CPU: conv2's forward and both kernel
    gradients (conv1's one-channel forward is a sum of taps, the images need no input
    gradient, and conv2's is matrix products there: see models.conv); each is timed and
    sized."""
    from benchmarks import step_profile

    assert step_profile.main(["--smoke", "--out-dir", str(tmp_path)]) == 0
    md_path, json_path = _common.result_paths(tmp_path, "step_profile")
    payload = json.loads(json_path.read_text())
    (lenet,) = payload["models"]
    convs = lenet["convolutions"]
    assert len(convs) == (3 if jax.default_backend() == "cpu" else 5), convs
    # the two kernel gradients, in models.conv's (in, kh, kw, out) layout
    kernels = sorted(tuple(c["out"]) for c in convs if c["out"][1:3] == [5, 5])
    assert kernels == [(1, 5, 5, 20), (20, 5, 5, 50)], convs
    assert all(c["ms"] > 0 and c["gflop"] > 0 for c in convs)
    assert "## lenet5, batch 4" in md_path.read_text()
    # The ablations ran: every variant timed, and each one's model really changed.
    assert set(lenet["ablations_ms"]) == {"as is", *step_profile.ABLATIONS}
    assert all(ms > 0 for ms in lenet["ablations_ms"].values())
    assert "pools as subsampling" in md_path.read_text()
    # Our convolutions by layer: conv1's forward is a sum of taps fused with its pool and
    # conv2's input gradient is matrix products on the CPU, so neither is a convolution.
    by_layer = {tuple(layer["layers"]): layer for layer in lenet["layers"]}
    assert by_layer[("conv1",)]["kernel"] == [5, 5, 1, 20]
    if jax.default_backend() == "cpu":
        assert set(by_layer[("conv1",)]) == {"layers", "kernel", "kernel_grad"}
        assert set(by_layer[("conv2",)]) == {"layers", "kernel", "forward", "kernel_grad"}
    # PyTorch's step of the same network, layer by layer, where torch is installed
    if importlib.util.find_spec("torch") is None:
        assert lenet["pytorch"] is None
    else:
        theirs = {tuple(layer["kernel"]): layer for layer in lenet["pytorch"]["layers"]}
        assert set(theirs) == {(5, 5, 1, 20), (5, 5, 20, 50)}
        assert all(layer["forward"] > 0 and layer["backward"] > 0 for layer in theirs.values())
        assert lenet["pytorch"]["step_ms"] > 0
        assert "PyTorch: backward" in md_path.read_text()


def test_step_profile_falls_back_to_synthetic_images_without_fashion_mnist(tmp_path, monkeypatch):
    """Where Debian's Fashion-MNIST is not installed (here: an empty directory in its
    place), LeNet-5's profile runs on synthetic images of its shape and says so."""
    from benchmarks import step_profile
    from train import data as data_lib

    entry = dataclasses.replace(data_lib.DATASETS["fashion_mnist"], system_dir=tmp_path)
    monkeypatch.setitem(data_lib.DATASETS, "fashion_mnist", entry)
    step_profile.benchmark_data.cache_clear()
    try:
        ds = step_profile.benchmark_data("lenet5", 4)
    finally:
        step_profile.benchmark_data.cache_clear()
    assert ds.name == "synthetic" and ds.train_images.shape[1:] == (28, 28, 1)
    assert len(ds.train_images) >= 4 and ds.train_images.dtype == "uint8"


def test_step_profile_sums_the_layers_of_one_kernel_shape_and_tells_their_passes_apart():
    """Two layers of one square kernel (as many input as output channels): their forward
    passes come first in the step, then their input gradients; kernel gradients by layout."""
    from benchmarks import step_profile

    def row(lhs, rhs, out, ms):
        return {"lhs": lhs, "rhs": rhs, "out": out, "ms": ms}

    kernel = (3, 3, 8, 8)
    rows = [
        row([2, 6, 6, 8], [3, 3, 8, 8], [2, 6, 6, 8], 1.0),  # forward, layer a
        row([2, 6, 6, 8], [3, 3, 8, 8], [2, 6, 6, 8], 2.0),  # forward, layer b
        row([2, 6, 6, 8], [3, 3, 8, 8], [2, 6, 6, 8], 4.0),  # input gradient, layer b
        row([8, 6, 6, 2], [6, 6, 2, 8], [8, 3, 3, 8], 8.0),  # kernel gradient, layer b
        row([2, 6, 6, 8], [3, 3, 8, 8], [2, 6, 6, 8], 16.0),  # input gradient, layer a
        row([8, 6, 6, 2], [6, 6, 2, 8], [8, 3, 3, 8], 32.0),  # kernel gradient, layer a
        row([2, 6, 6, 4], [3, 3, 4, 5], [2, 6, 6, 5], 64.0),  # another model's: no layer
    ]
    found = step_profile.convolutions_by_kernel(rows, [kernel, kernel])
    assert found == {kernel: {"forward": 3.0, "input_grad": 20.0, "kernel_grad": 40.0}}


def test_step_profile_ablations_change_the_model_but_not_its_shapes():
    import jax.numpy as jnp

    import models
    from benchmarks import step_profile
    from models.layers import avg_pool, max_pool

    x = jnp.ones((2, 7, 7, 3))
    for pool, window, stride in [(max_pool, 2, 2), (avg_pool, 3, 2), (max_pool, 3, 2)]:
        assert step_profile._subsample(x, window, stride).shape == pool(x, window, stride).shape
    images = jnp.ones((2, 28, 28, 1))
    model = lambda: models.create("lenet5", 10)
    init = lambda: jax.eval_shape(model().init, jax.random.key(0), images)["params"]  # no FLOPs
    with step_profile.ablated("without conv biases"):
        params = init()
    assert "bias" not in params["conv1"] and "bias" in params["ip1"]
    assert "bias" in init()["conv1"]  # the patch ends with the block

    def forward() -> str:
        return str(jax.make_jaxpr(model().apply)({"params": init()}, images))

    # LeNet-5's conv1 and pool 1 are one op (models.conv), pool 2 is max_pool's two passes
    plain = forward()
    assert "single_channel_conv_max_pool" in plain and "_first_max_along" in plain
    with step_profile.ablated("pools as subsampling"):
        pools_removed = forward()
    assert "single_channel_conv_max_pool" not in pools_removed
    assert "_first_max_along" not in pools_removed


def test_scaling_smoke_runs_every_layout_and_reports_its_ratios(tmp_path, monkeypatch):
    """benchmarks/scaling.py through real ``python -m train`` processes (two of them meeting
    through jax.distributed for the 2 x 1 layout) on the smoke grid; its processes compile
    cheaply, as the suite's own (a smoke run's numbers mean nothing)."""
    from benchmarks import scaling

    for name, value in _cheap_compile.environ().items():
        monkeypatch.setenv(name, value)

    assert scaling.main(["--smoke", "--out-dir", str(tmp_path)]) == 0
    md_path, json_path = _common.result_paths(tmp_path, "scaling")
    payload = json.loads(json_path.read_text())
    layouts = {(r["processes"], r["devices_per_process"], r["mode"]) for r in payload["rows"]}
    assert layouts == set(scaling.GRIDS["smoke"]["layouts"])
    assert all(r["images_per_s"] > 0 for r in payload["rows"])
    assert set(payload["summary"]["chunked_over_resident"]) == {"1x2"}
    assert set(payload["summary"]["one_device_per_process"]) == {"resident"}
    assert "2 processes x 1 device / 1 process x 2 devices (resident)" in md_path.read_text()
    probes = {
        (r["processes"], r["devices_per_process"], r["pinned"], r["sched_batch"])
        for r in payload["allreduce"]
    }
    assert probes == set(scaling.GRIDS["smoke"]["allreduce_layouts"])
    # processes of a multi-process layout run on cores of their own (as on their own hosts)
    assert {r["pinned"] for r in payload["rows"] if r["processes"] > 1} == {True}
    assert {r["pinned"] for r in payload["rows"] if r["processes"] == 1} == {False}
    assert all(0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"] for r in payload["allreduce"])
    sweep = payload["batch_sweep"]
    assert [r["batch_size"] for r in sweep] == list(scaling.GRIDS["smoke"]["batch_sweep"])
    for r in sweep:
        ratio = r["two_processes_images_per_s"] / r["one_process_images_per_s"]
        assert r["ratio"] == pytest.approx(ratio)
    floats = models.param_count("tiny", (8, 8, 1)) + 2  # the step's flat buffer
    assert {r["floats"] for r in payload["allreduce"]} == {floats}
