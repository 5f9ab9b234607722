"""Tests of the training CLI (train.cli), its console output (train.progress) and its files.

Training runs call ``train.cli.main`` in-process (the imports are paid once); what must
be observed from outside (exit status, stderr, no traceback, a process with 8 fake
devices) runs ``python -m train`` in a subprocess from the repository root. Errors of the
command line fail before training, so those subprocesses cost only the imports.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import _cheap_compile
from tests._cheap_compile import run_train
from tests.test_scaling import assert_same_numbers
from train import checkpoints, cli, interrupt, progress
from train.config import Config
from train.data import DEBIAN_FASHION_MNIST_DIR

REPO = Path(__file__).resolve().parents[1]
FASHION_MNIST_FILE = DEBIAN_FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz"
METRIC_KEYS = {
    "epoch",
    "step",
    "wall_time",
    "train_loss",
    "test_loss",
    "test_accuracy",
    "learning_rate",
}
# Compared between runs that must give the same numbers (not the times).
NUMERIC_KEYS = ("step", "train_loss", "train_accuracy", "test_loss", "test_accuracy")

# 64 training images of 8x8x1 in batches of 16 (4 batches), K = 2: 8 steps per epoch. The
# cyclic schedule (half-cycle of half an epoch) moves the rate within every epoch, and
# augmentation draws from each epoch's key, so resuming must restore both exactly.
SYNTHETIC = [
    "--dataset",
    "synthetic",
    "--synthetic-shape",
    "8,8,1",
    "--synthetic-size",
    "64,32",
    "--model",
    "tiny",
    "--batch-size",
    "16",
    "--persistency",
    "2",
    "--schedule",
    "cyclic",
    "--cycle-epochs",
    "0.5",
    "--augment",
    "--no-progress",
]
SYNTHETIC_STEPS_PER_EPOCH = (64 // 16) * 2


def _subprocess_env(**extra: str) -> dict[str, str]:
    return _cheap_compile.environ(**extra)


def _assert_one_line_error(
    result: subprocess.CompletedProcess, *needles: str, ignore_logging: bool = False
) -> str:
    """A non-zero exit whose stderr is exactly one ``polyak-train: error:`` line.

    ``ignore_logging`` drops absl log lines that third-party libraries (TFDS) print before
    the error; the error must still be the last line and the only one of its kind.
    """
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    if ignore_logging:
        lines = [line for line in lines if not re.match(r"(DEBUG|INFO|WARNING):absl:", line)]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{cli.PROG}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _main(*args: str | os.PathLike) -> int:
    return cli.main([str(a) for a in args])


def _records(workdir: Path) -> list[dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _config(workdir: Path) -> dict:
    return json.loads((workdir / "config.json").read_text())


def _check_run(workdir: Path, epochs: int, steps_per_epoch: int) -> list[dict]:
    """The files every run writes: metrics (one finite record per epoch), config, checkpoints."""
    records = _records(workdir)
    assert [r["epoch"] for r in records] == list(range(1, epochs + 1))
    for record in records:
        assert set(record) >= METRIC_KEYS, record
        for key, value in record.items():
            assert isinstance(value, (int, float)) and math.isfinite(value), (key, record)
        assert record["step"] == record["epoch"] * steps_per_epoch
        assert 0.0 <= record["test_accuracy"] <= 1.0
        assert record["learning_rate"] > 0
        assert record["wall_time"] >= 0
    config = _config(workdir)
    flags = vars(cli.build_parser().parse_args([]))
    assert set(flags) <= set(config), set(flags) - set(config)
    assert config["epochs"] == epochs
    assert config["derived"]["optimizer_steps_per_epoch"] == steps_per_epoch
    ckpt = checkpoints.Checkpointer(workdir / "checkpoints")
    try:
        assert ckpt.latest_epoch() == epochs
    finally:
        ckpt.close()
    assert (workdir / "checkpoints" / str(epochs)).is_dir()
    return records


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> Path:
    """One epoch of SYNTHETIC in a workdir shared by the tests (copy it before changing it)."""
    workdir = tmp_path_factory.mktemp("synthetic") / "run"
    assert _main(*SYNTHETIC, "--epochs", 1, "--workdir", workdir) == 0
    return workdir


@pytest.mark.slow  # trains through the CLI in-process
def test_synthetic_run_writes_metrics_config_and_checkpoints(synthetic_run):
    _check_run(synthetic_run, epochs=1, steps_per_epoch=SYNTHETIC_STEPS_PER_EPOCH)
    config = _config(synthetic_run)
    # Given flags as given, the rest resolved: defaults and per-optimizer values filled in.
    assert config["model"] == "tiny"
    assert config["batch_size"] == 16
    assert config["persistency"] == 2
    assert config["synthetic_shape"] == [8, 8, 1]
    assert config["optimizer"] == Config().optimizer == "adaptive_nesterov"
    assert config["learning_rate"] == 0.1
    assert config["momentum"] == 0.9
    assert config["min_learning_rate"] == pytest.approx(0.01)  # cyclic: lr / 10
    assert config["seed"] == 0
    assert config["derived"]["num_train"] == 64
    assert config["derived"]["num_test"] == 32
    assert config["derived"]["steps_per_epoch"] == 4
    assert config["derived"]["image_shape"] == [8, 8, 1]


@pytest.mark.slow
def test_fashion_mnist_subset_run(tmp_path, capsys):
    """One epoch of LeNet-5 (the default model) on 200 Fashion-MNIST images, K = 2."""
    if not FASHION_MNIST_FILE.exists():
        pytest.skip(f"{FASHION_MNIST_FILE} is absent (Debian's dataset-fashion-mnist)")
    workdir = tmp_path / "run"
    code = _main(
        "--train-subset", 200, "--batch-size", 32, "-K", 2, "--epochs", 1,
        "--workdir", workdir, "--no-progress",
    )  # fmt: skip
    assert code == 0
    (record,) = _check_run(workdir, epochs=1, steps_per_epoch=(200 // 32) * 2)
    config = _config(workdir)
    assert config["model"] == "lenet5"
    assert config["dataset"] == "fashion_mnist"
    assert config["batch_size"] == 32
    assert config["learning_rate"] == 0.1
    assert config["train_subset"] == 200
    derived = config["derived"]
    assert (derived["num_train"], derived["num_test"]) == (200, 10000)
    assert derived["image_shape"] == [28, 28, 1]
    assert derived["dropped_per_epoch"] == 200 - 6 * 32
    # Real images with their labels: one epoch of 200 images beats chance (10%) clearly.
    assert record["test_accuracy"] > 0.2, record
    out = capsys.readouterr().out
    assert "epoch 1/1" in out
    assert "max-value" in out  # the summary table


@pytest.mark.slow
def test_resume_gives_the_numbers_of_an_uninterrupted_run(synthetic_run, tmp_path):
    """2 epochs in one go == 1 epoch (the shared run) + ``--resume --epochs 2``."""
    straight = tmp_path / "straight"
    assert _main(*SYNTHETIC, "--epochs", 2, "--workdir", straight) == 0
    resumed = tmp_path / "resumed"
    shutil.copytree(synthetic_run, resumed)
    # Only --epochs changes: every numerical flag comes from the saved config.
    assert _main("--resume", "--workdir", resumed, "--epochs", 2, "--no-progress") == 0

    expected = _check_run(straight, epochs=2, steps_per_epoch=SYNTHETIC_STEPS_PER_EPOCH)
    got = _check_run(resumed, epochs=2, steps_per_epoch=SYNTHETIC_STEPS_PER_EPOCH)
    assert got[0] == _records(synthetic_run)[0]  # the history before the resume is kept
    for mine, theirs in zip(got, expected, strict=True):
        for key in (*NUMERIC_KEYS, "learning_rate"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-6, abs=1e-7), key


@pytest.mark.slow  # trains through the CLI in-process
def test_resume_refuses_a_conflicting_flag(synthetic_run, capsys):
    before = (synthetic_run / "metrics.jsonl").read_text()
    code = _main("--resume", "--workdir", synthetic_run, "--batch-size", 8, "--no-progress")
    assert code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{cli.PROG}: error: "), err
    assert "--batch-size 8" in err[0] and "16" in err[0]
    assert (synthetic_run / "metrics.jsonl").read_text() == before


@pytest.mark.slow  # trains through the CLI in-process
def test_resume_of_a_finished_run_trains_nothing(synthetic_run, tmp_path, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(synthetic_run, workdir)
    assert _main("--resume", "--workdir", workdir, "--epochs", 1, "--no-progress") == 0
    assert "already trained" in capsys.readouterr().out
    assert _records(workdir) == _records(synthetic_run)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model", "nope"], "--model"),
        (["--optimizer", "nope"], "--optimizer"),
        (["--schedule", "nope"], "--schedule"),
        (["--dataset", "nope"], "--dataset"),
        (["--persistency", "0"], "--persistency"),
        (["--batch-size", "-3"], "--batch-size"),
        (["--resume"], "--workdir"),
    ],
    ids=["model", "optimizer", "schedule", "dataset", "persistency-0", "batch-size", "resume"],
)
@pytest.mark.slow
def test_bad_flags_fail_with_one_line(args, needle):
    result = run_train(*args, "--no-progress")
    assert result.returncode == 2
    _assert_one_line_error(result, needle)


@pytest.mark.slow
def test_missing_data_set_fails_with_one_line_listing_the_ways_to_get_it(tmp_path):
    """``--dataset mnist --data-dir EMPTY``: no IDX files; TFDS (if installed) has nothing
    prepared there and cannot download (network access is cut through the proxy vars)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    no_network = "http://127.0.0.1:9"
    env = _subprocess_env(
        http_proxy=no_network, https_proxy=no_network, HTTP_PROXY=no_network,
        HTTPS_PROXY=no_network, NO_PROXY="", no_proxy="",
    )  # fmt: skip
    result = run_train(
        "--dataset", "mnist", "--data-dir", str(empty), "--workdir", str(tmp_path / "run"),
        "--no-progress", env=env,
    )  # fmt: skip
    line = _assert_one_line_error(result, "'mnist' not found", "--data-dir", ignore_logging=True)
    assert "(1)" in line and "(2)" in line  # numbered ways to get the data
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_corrupted_checkpoint_fails_with_one_line(synthetic_run, tmp_path):
    """Garbage in the array data files of the checkpoint (orbax's OCDBT ``d/`` files, the
    metadata intact): the reads fail inside orbax's asynchronous restore, and ``--resume``
    still ends with one line and no traceback."""
    workdir = tmp_path / "run"
    shutil.copytree(synthetic_run, workdir)
    state_dir = workdir / "checkpoints" / "1" / "state"
    data_files = [p for p in state_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
    assert data_files, sorted(state_dir.rglob("*"))  # the layout of orbax 0.12
    for path in data_files:
        path.write_bytes(b"this is not a checkpoint\n")
    result = run_train("--resume", "--workdir", str(workdir), "--epochs", "2", "--no-progress")
    _assert_one_line_error(result, "checkpoint", str(workdir / "checkpoints"))
    assert result.returncode == 3
    assert [r["epoch"] for r in _records(workdir)] == [1]


@pytest.mark.slow  # trains through the CLI in-process
def test_unreadable_checkpoint_directory_fails_with_one_line(synthetic_run, tmp_path, capsys):
    """Every file of the checkpoint overwritten, metadata included (in-process)."""
    workdir = tmp_path / "run"
    shutil.copytree(synthetic_run, workdir)
    for path in (workdir / "checkpoints" / "1").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    assert _main("--resume", "--workdir", workdir, "--epochs", 2, "--no-progress") == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(f"{cli.PROG}: error: ") and "checkpoint" in err[-1]


def _interrupted_run(workdir: Path, signals: int) -> tuple[subprocess.CompletedProcess, int]:
    """A long synthetic run sent ``signals`` SIGINTs once it has finished 2 epochs."""
    args = [*SYNTHETIC[: SYNTHETIC.index("--schedule")], "--no-progress", "--epochs", "100000"]
    process = subprocess.Popen(
        [sys.executable, "-m", "train", *args, "--workdir", str(workdir)],
        cwd=REPO,
        env=_subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = workdir / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    for _ in range(signals):
        process.send_signal(signal.SIGINT)
        time.sleep(0.02)  # two signals at once would reach Python's handler as one
    out, err = process.communicate(timeout=120)
    result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return result, checkpoints.Checkpointer(workdir / "checkpoints").latest_epoch()


@pytest.mark.slow
def test_ctrl_c_finishes_and_saves_the_running_epoch_then_resumes(tmp_path):
    workdir = tmp_path / "run"
    result, saved = _interrupted_run(workdir, signals=1)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and "SIGINT" in lines[0], result.stderr
    assert lines[1] == (
        f"{cli.PROG}: SIGINT: epoch {saved} is saved: continue with python -m train --resume "
        f"--workdir {workdir} --epochs 100000"
    )
    assert [r["epoch"] for r in _records(workdir)] == list(range(1, saved + 1))
    assert _main("--resume", "--workdir", workdir, "--epochs", saved + 1) == 0
    assert [r["epoch"] for r in _records(workdir)] == list(range(1, saved + 2))


@pytest.mark.slow
def test_a_second_ctrl_c_keeps_metrics_and_checkpoints_in_step(tmp_path):
    """Aborted mid-epoch or stopped after it (a race), the files agree and resume works."""
    workdir = tmp_path / "run"
    result, saved = _interrupted_run(workdir, signals=2)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    resume = f"python -m train --resume --workdir {workdir} --epochs 100000"
    assert last in (
        f"{cli.PROG}: SIGINT: epoch {saved} is saved: continue with {resume}",
        f"{cli.PROG}: SIGINT: stopped at once; the checkpoint of epoch {saved} is kept: "
        f"continue with {resume}",
    ), result.stderr
    assert [r["epoch"] for r in _records(workdir)] == list(range(1, saved + 1))
    assert _main("--resume", "--workdir", workdir, "--epochs", saved + 1) == 0
    assert [r["epoch"] for r in _records(workdir)] == list(range(1, saved + 2))


def test_stop_after_epoch_asks_first_and_aborts_on_the_second_signal():
    stream = io.StringIO()
    stop = interrupt.StopAfterEpoch("stopping", stream)
    stop._handle(signal.SIGINT, None)
    assert stop.requested and stream.getvalue() == "stopping\n"
    stop._handle(signal.SIGINT, None)  # the handler never raises...
    with pytest.raises(interrupt.Abort):
        stop.check()  # ...the loop's next check does
    with pytest.raises(interrupt.Abort), stop.deferred():
        stop._handle(signal.SIGINT, None)  # deferred: the block runs to its end
        finished = True
    assert finished


@pytest.mark.slow
def test_workdir_holding_a_run_needs_resume_or_overwrite(synthetic_run):
    before = (synthetic_run / "metrics.jsonl").read_text()
    result = run_train(*SYNTHETIC, "--workdir", str(synthetic_run))
    _assert_one_line_error(result, "already holds a run", "--resume", "--overwrite")
    assert (synthetic_run / "metrics.jsonl").read_text() == before


def test_more_devices_than_there_are_fails_with_one_line(tmp_path, capsys):
    import jax

    too_many = jax.local_device_count() + 1
    code = _main(*SYNTHETIC, "--num-devices", too_many, "--workdir", tmp_path / "run")
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "num_devices" in err[0], err


_SHARDED_SCRIPT = """
import sys
import jax
from train.cli import main
assert jax.device_count() == 8, jax.devices()
for num_devices, workdir in (("1", sys.argv[1]), ("8", sys.argv[2])):
    code = main([*sys.argv[3:], "--num-devices", num_devices, "--workdir", workdir])
    if code:
        sys.exit(code)
"""


@pytest.mark.slow
def test_eight_devices_give_the_single_device_numbers(tmp_path):
    """Data parallelism over 8 fake CPU devices (batch norm statistics, gradient all-reduce
    and adaptive eta across the shards) reproduces the single-device run; with the data set
    replicated, the sampling is the single device's too (the sharded mode's is checked in
    tests/test_scaling.py)."""
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    args = [*SYNTHETIC, "--epochs", "2", "--data-placement", "replicated"]
    result = subprocess.run(
        [sys.executable, "-c", _SHARDED_SCRIPT, str(single), str(sharded), *args],
        cwd=REPO,
        # Optimized XLA: there the 8-device run matches bit for bit; with most
        # optimizations disabled, the sums' order differs between 1 and 8 devices and the
        # losses drift apart by ~2e-4 (measured) within an epoch.
        env=dict(
            os.environ,
            JAX_PLATFORMS="cpu",
            JAX_DISABLE_MOST_OPTIMIZATIONS="0",
            XLA_FLAGS="--xla_force_host_platform_device_count=8",
        ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert _config(single)["derived"]["num_devices"] == 1
    assert _config(sharded)["derived"]["num_devices"] == 8
    assert len(_config(sharded)["derived"]["devices"]) == 8
    expected = _check_run(single, epochs=2, steps_per_epoch=SYNTHETIC_STEPS_PER_EPOCH)
    got = _check_run(sharded, epochs=2, steps_per_epoch=SYNTHETIC_STEPS_PER_EPOCH)
    assert_same_numbers(got, expected)


@pytest.mark.slow  # trains through the CLI in-process
def test_find_lr_writes_the_plot_and_the_suggestion(tmp_path, capsys):
    workdir = tmp_path / "lr"
    code = _main(
        *SYNTHETIC, "--find-lr", "--optimizer", "sgd", "--find-lr-steps", 12,
        "--workdir", workdir,
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "suggestion" in out and str(workdir / "lr_range_test.png") in out
    assert (workdir / "lr_range_test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((workdir / "lr_range_test.json").read_text())
    assert result["flags"]["optimizer"] == "sgd"
    assert len(result["learning_rates"]) == len(result["losses"]) == 12
    assert result["learning_rates"] == sorted(result["learning_rates"])
    for key in ("suggestion", "valley"):
        assert 1e-7 <= result[key] <= 10.0, (key, result[key])
    assert 1e-8 <= result["minimum"] <= 1.0  # the loss minimum's rate / 10
    assert f"{result['suggestion']:.3g}" in out
    import matplotlib.pyplot as plt

    plt.close("all")


def test_find_lr_refuses_adaptive_nesterov(tmp_path, capsys):
    code = _main(*SYNTHETIC, "--find-lr", "--optimizer", "adaptive_nesterov", "--workdir", tmp_path)
    assert code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{cli.PROG}: error: --find-lr"), err
    assert "adaptive_nesterov" in err[0]
    assert not (tmp_path / "lr_range_test.png").exists()


# --- train.progress ---------------------------------------------------------------------


def _record(epoch: int, test_accuracy: float | None, test_loss: float | None) -> dict:
    return {
        "epoch": epoch,
        "wall_time": 2.0 * epoch,
        "epoch_time": 2.0,
        "train_loss": 1.0,
        "train_accuracy": 0.5,
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
        "learning_rate": 0.01,
    }


def test_epoch_progress_draws_a_live_line_only_when_enabled(capsys):
    lines: list[str] = []
    bar = progress.EpochProgress(2, enabled=True, write=lines.append)
    bar.start_epoch(1)
    bar.tick(3.0)
    assert "epoch 1/2: 3s" in capsys.readouterr().err
    bar.update(_record(1, 0.8, 0.5))  # the epoch's line; 2 s sets the next expectation
    assert lines == [progress.format_epoch(_record(1, 0.8, 0.5), 2)]
    bar.start_epoch(2)
    bar.tick(1.0)
    assert "epoch 2/2: 1s of ~2s (50%)" in capsys.readouterr().err
    bar.close()
    assert capsys.readouterr().err == "\r\033[K"  # the live line is cleared
    quiet = progress.EpochProgress(3, enabled=False, write=lines.append)
    quiet.start_epoch(1)
    quiet.tick(5.0)
    quiet.update(_record(1, 0.25, 1.5))
    assert capsys.readouterr().err == ""
    assert "test loss 1.5000 acc 25.00%" in lines[-1]


def test_format_summary_gives_best_accuracy_and_lowest_loss_with_their_epochs():
    history = [
        _record(1, 0.70, 0.90),
        _record(2, 0.85, 0.40),
        _record(3, 0.80, 0.35),
        _record(4, None, None),  # a diverged epoch is ignored
    ]
    header, columns, row = progress.format_summary(history, "tiny_sgd_16", 2).splitlines()
    assert "accuracy" in header and "loss" in header
    assert columns.split() == [
        "configuration", "K", "max-value", "time(s)", "epoch", "min-value", "time(s)", "epoch",
    ]  # fmt: skip
    assert row.split() == ["tiny_sgd_16", "2", "0.8500", "4.0", "2", "0.35000", "6.0", "3"]
    empty_row = progress.format_summary([_record(1, None, None)], "x", 1).splitlines()[-1]
    assert empty_row.split() == ["x", "1", "-", "-", "-", "-", "-", "-"]
