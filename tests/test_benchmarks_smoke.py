"""Smoke tests of the benchmark entry points: each runs its --smoke grid and writes results.

Not timed tests: the numbers of a smoke run mean nothing. What is checked is that every
``benchmarks.NAME.main`` runs end to end in seconds and writes a Markdown report and a
strict JSON file whose rows carry exactly the keys issue 7 specifies.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import jax
import pytest

from benchmarks import _common

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
        for run in payload["runs"]:
            times = [h["time"] for h in run["history"]]
            assert times == sorted(times) and times[0] > 0
            assert all(0 <= h["test_accuracy"] <= 1 for h in run["history"])
    elif name == "thesis_adaptive":
        assert {r["method"] for r in payload["rows"]} >= {"scheduled", "adaptive", "clr"}
        for run in payload["runs"]:
            steps = run["history"][-1]["step"]
            eta = run["eta"]
            assert len(eta) == steps and all(e is not None and e > 0 for e in eta)
            if run["method"] == "adaptive":
                assert all(0.001 - 1e-7 <= e <= 0.1 + 1e-7 for e in eta)
    elif name == "lr_range_test_speed":
        (res,) = payload["results"]
        assert res["max_rel_loss_diff"] < 1e-3
        assert all(math.isfinite(r["median_s"]) and r["median_s"] > 0 for r in payload["rows"])


def test_common_writes_strict_json_and_tables(tmp_path: Path) -> None:
    md, js = _common.write_results(tmp_path, "demo", {"device": "x", "v": [math.inf, 1.5]}, "# t")
    assert json.loads(js.read_text())["v"] == [None, 1.5]
    assert md.read_text() == "# t\n"
    assert _common.best_and_lowest([])["max_accuracy_epoch"] is None
    with pytest.raises(ValueError, match="grid"):
        _common.resolve_grid("huge")
