"""The language-model head-to-head (benchmarks/tuning_free_lm.py): one command, one table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import _common
from benchmarks import tuning_free_lm as lm
from train import text


@pytest.mark.slow  # runs the benchmark end to end on the real corpus
def test_smoke_run_writes_rows_corpus_table_and_plot(tmp_path: Path):
    args = ["--smoke", "--out-dir", str(tmp_path), "--sweep-lrs", "1e-3", "3e-3"]
    args += ["--optimizers", lm.VARIANT, "adam", lm.TUNED]
    assert lm.main(args) == 0
    md_path, json_path = _common.result_paths(tmp_path, lm.BENCHMARK)
    payload = json.loads(json_path.read_text())
    assert payload["corpus"]["sha256"] == text.corpus_info()["sha256"]
    assert payload["corpus"]["size"] > 1_000_000
    rows = payload["rows"]
    assert [(r["optimizer"], r["learning_rate"]) for r in rows] == [
        (lm.VARIANT, None),
        ("adam", None),
        (lm.TUNED, 1e-3),
        (lm.TUNED, 3e-3),
    ]
    for row in rows:
        assert row["tuned"] == (row["optimizer"] == lm.TUNED)
        assert row["steps"] == lm.GRIDS["smoke"].steps
        assert math.isfinite(row["val_bits_per_byte"]) and 0 < row["val_bits_per_byte"] < 9
        assert [e["step"] for e in row["curve"]] == [0, 2, 4]
        assert row["curve"][-1]["val_bits_per_byte"] == row["val_bits_per_byte"]
    variant = rows[0]["curve"][-1]
    assert 0 < variant["learning_rate"] <= 1e-2  # the Polyak step, at most its cap
    assert variant["probe_adam_metric_sq_norm"] > 0
    assert sum(r.get("chosen", False) for r in rows) == 1
    assert payload["verdict"]["tuned_learning_rate"] in (1e-3, 3e-3)
    report = md_path.read_text()
    assert payload["corpus"]["sha256"] in report and "## The goal" in report
    png = _common.png_path(tmp_path, lm.BENCHMARK)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_build_gives_the_swept_adamw_its_schedule():
    import jax.numpy as jnp

    tx = lm.build(lm.TUNED, 1e-2, steps=100)
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    state = tx.init(params)
    updates, _ = tx.update({"w": jnp.ones((2, 2)), "b": jnp.ones(2)}, state, params)
    assert float(jnp.abs(updates["w"]).max()) == 0.0  # warm-up starts at 0


def test_the_ablations_are_the_variant_with_one_setting_changed():
    import jax.numpy as jnp

    params = {"w": jnp.ones(3)}
    for name in lm.ABLATIONS:
        tx = lm.build(name, None, steps=10)
        state = tx.init(params)
        updates, state = tx.update({"w": jnp.ones(3)}, state, params, value=jnp.asarray(9.0))
        assert float(jnp.abs(updates["w"]).max()) > 0
    capped = lm.build(f"{lm.VARIANT}_cap2.5e-3", None, steps=10)
    state = capped.init(params)
    _, state = capped.update({"w": jnp.ones(3)}, state, params, value=jnp.asarray(100.0))
    from train.optimizers import learning_rate_of

    assert float(learning_rate_of(state)) == pytest.approx(2.5e-3)  # a large loss: the cap
