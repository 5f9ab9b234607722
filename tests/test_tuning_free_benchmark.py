"""Smoke test of benchmarks/tuning_free.py (not timed: a smoke run's numbers mean nothing).

Checks that the script runs end to end on its smoke grid and writes the report, the
plots and the raw JSON in the format issue 11 specifies, and that ``--from-json``
rebuilds the same report from the raw rows.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import _common
from benchmarks import tuning_free as tf

ROW_KEYS = {"problem", "optimizer", "schedule", "seed", "test_accuracy", "time_to_target_s"}


@pytest.mark.slow
def test_smoke_grid_writes_the_results_in_the_issue_format(tmp_path):
    argv = [
        "--smoke",
        "--problems",
        "logreg",
        "--optimizers",
        tf.VARIANT,
        "schedule_free_sgd",
        "--no-compile-cache",  # jax's cache is process-wide: keep it off in the suite
        "--out-dir",
        str(tmp_path),
    ]
    assert tf.main(argv) == 0
    md_path, json_path = _common.result_paths(tmp_path, tf.BENCHMARK)
    payload = json.loads(json_path.read_text())
    assert payload["variant"] == tf.VARIANT
    assert payload["device"] == _common.device_info()["label"]
    rows = payload["rows"]
    assert len(rows) == 2 * 2  # optimizers x schedules, one problem and one seed
    for row in rows:
        assert set(row) >= ROW_KEYS
        assert row["schedule"] in ("constant", "annealed")
        assert 0.0 <= row["test_accuracy"] <= 1.0
        assert row["time_to_target_s"] is None or row["time_to_target_s"] >= 0
    assert {v["problem"] for v in payload["verdicts"]} == {"logreg"}
    assert "## logreg" in md_path.read_text()
    png = _common.png_path(tmp_path, tf.BENCHMARK, "logreg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rebuilt = tmp_path / "rebuilt"
    assert tf.main(["--from-json", str(json_path), "--out-dir", str(rebuilt)]) == 0
    again = json.loads(_common.result_paths(rebuilt, tf.BENCHMARK)[1].read_text())
    assert again["rows"] == rows


def test_every_problem_states_its_rationale_and_reduced_sizes():
    assert len(tf.PROBLEMS) >= 4
    for name, problem in tf.PROBLEMS.items():
        assert len(problem.rationale) > 20, name
        assert name in tf.REDUCED
    assert set(tf.OPTIMIZERS) >= {
        "adaptive_nesterov",
        tf.VARIANT,
        "schedule_free_polyak",
        "tuning_free_nesterov",
        "nesterov",
        "adam",
        "polyak_sgd",
        "momo",
        "momo_adam",
        "prodigy",
        "dadapt_adamw",
        "dog",
        "schedule_free_sgd",
        "schedule_free_adamw",
    }


@pytest.mark.slow
def test_ablations_run_into_their_own_report_and_are_never_peers(tmp_path):
    argv = [
        "--smoke",
        "--ablations",
        "--problems",
        "logreg",
        "--optimizers",
        tf.VARIANT,
        "schedule_free_polyak_adam_no_polyak",
        "--schedules",
        "constant",
        "--no-compile-cache",
        "--out-dir",
        str(tmp_path),
    ]
    assert tf.main(argv) == 0
    md_path, json_path = _common.result_paths(tmp_path, tf.BENCHMARK + "_ablations")
    payload = json.loads(json_path.read_text())
    assert {r["optimizer"] for r in payload["rows"]} == {
        tf.VARIANT,
        "schedule_free_polyak_adam_no_polyak",
    }
    assert payload["verdicts"] == []  # an ablation is no peer: nothing to judge against
    assert "schedule_free_polyak_adam_no_polyak" in md_path.read_text()
    assert not _common.result_paths(tmp_path, tf.BENCHMARK)[1].exists()


def test_the_confidence_ablations_are_the_variant_at_their_own_gamma():
    import jax.numpy as jnp

    import polyak_optax as po

    params, grads = jnp.array([1.0, -2.0, 0.5]), jnp.array([0.3, -0.1, 0.2])

    def first_update(opt):
        updates, _ = opt.update(grads, opt.init(params), params, value=jnp.float32(0.001))
        return updates

    seen = []
    for gamma in (2, 3, 4):
        name, factory = tf.ABLATIONS[f"schedule_free_polyak_adam_gamma{gamma}"]
        assert name == tf.VARIANT
        expected = po.schedule_free_polyak_adam(max_learning_rate=1e-2, confidence=gamma)
        ours = first_update(factory(None))
        assert jnp.array_equal(ours, first_update(expected)), gamma
        seen.append(ours)
    assert not jnp.array_equal(seen[0], seen[2])  # the Polyak step binds: gamma matters
    default = first_update(tf.OPTIMIZERS[tf.VARIANT](None))
    assert jnp.array_equal(default, first_update(po.schedule_free_polyak_adam(confidence=5.0)))
