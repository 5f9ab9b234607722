"""Faults injected for real into ``python -m train`` runs: signals, a diverging loss, a
damaged or half-written checkpoint, a full disk, two runs in one workdir, a terminal.

Every run is the tiny model on synthetic 8x8x1 images, so a subprocess costs its imports
and one small compilation. What the user sees is checked from outside: the exit status,
stderr (one line, no traceback) and the files of the workdir.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import _cheap_compile
from tests._cheap_compile import run_train

pytestmark = pytest.mark.slow  # every test runs `python -m train` in subprocesses

REPO = Path(__file__).resolve().parents[1]
PROG = "python -m train"
TINY = [
    "--dataset", "synthetic", "--synthetic-shape", "8,8,1", "--synthetic-size", "64,32",
    "--model", "tiny", "--batch-size", "16", "--optimizer", "sgd", "--schedule", "constant",
]  # fmt: skip
# Long epochs of the tiny model, to signal a run in the middle of one.
SLOW = [
    "--dataset", "synthetic", "--synthetic-shape", "8,8,1", "--synthetic-size", "4096,32",
    "--model", "tiny", "--batch-size", "8", "--persistency", "24", "--optimizer", "sgd",
    "--schedule", "constant",
]  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    return _cheap_compile.environ(**extra)


def _start(*args: str | os.PathLike) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "train", *map(str, args)],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _records(workdir: Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait_until(process: subprocess.Popen, ready: Callable[[], bool]) -> None:
    """Polls ``ready`` while ``process`` runs (at most 240 s)."""
    deadline = time.monotonic() + 240
    while not ready():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run did not get there in time"
        time.sleep(0.05)


def _wait_for_epochs(process: subprocess.Popen, workdir: Path, epochs: int) -> None:
    _wait_until(process, lambda: len(_records(workdir)) >= epochs)


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def _checkpoint_epochs(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_sigterm_finishes_and_saves_the_epoch_and_names_the_resume_command(tmp_path):
    workdir = tmp_path / "run"
    process = _start(*TINY, "--epochs", 100000, "--workdir", workdir)
    _wait_for_epochs(process, workdir, 2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "SIGTERM" in lines[0], err
    saved = len(_records(workdir))
    command = f"python -m train --resume --workdir {workdir} --epochs 100000"
    assert lines[1] == f"{PROG}: SIGTERM: epoch {saved} is saved: continue with {command}"
    assert _checkpoint_epochs(workdir)[-1] == saved
    # The printed command works, and the target epochs of config.json stay 100000.
    result = run_train("--resume", "--workdir", workdir, "--epochs", saved + 1)
    assert result.returncode == 0, result.stderr
    assert [r["epoch"] for r in _records(workdir)] == list(range(1, saved + 2))
    assert json.loads((workdir / "config.json").read_text())["epochs"] == 100000


def test_a_second_signal_stops_within_seconds_and_keeps_the_last_checkpoint(tmp_path):
    workdir = tmp_path / "run"
    process = _start(*SLOW, "--epochs", 1000, "--workdir", workdir)
    _wait_for_epochs(process, workdir, 1)
    epoch_time = _records(workdir)[0]["epoch_time"]
    # Into epoch 2, away from both of its ends: a first signal that lands in the tail of
    # epoch 1 (its record is written before the TensorBoard flush) stops the run before
    # the second one arrives (a CI failure).
    time.sleep(0.25 * epoch_time)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    waited = time.monotonic() - sent
    assert process.returncode == 143, err
    assert "stopped at once" in err.strip().splitlines()[-1], err
    assert "Traceback" not in err
    # Far less than an epoch (the run does not wait for the abandoned one).
    assert waited < max(3.0, 0.5 * epoch_time), (waited, epoch_time)
    kept = _checkpoint_epochs(workdir)[-1]
    assert [r["epoch"] for r in _records(workdir)] == list(range(1, kept + 1))


# sgd on the tiny model, one-cycle to a peak of 200: finite in the first epoch, NaN later.
DIVERGING = [*TINY[:-4], "--optimizer", "sgd", "--schedule", "onecycle", "--learning-rate", "200"]


def test_a_diverging_run_stops_with_one_line_and_keeps_the_last_finite_checkpoint(tmp_path):
    workdir = tmp_path / "run"
    result = run_train(*DIVERGING, "--epochs", 5, "--keep-checkpoints", 1, "--workdir", workdir)
    assert result.returncode == 4, result.stdout + result.stderr
    line = _one_line(result.stderr)
    assert line.startswith(f"{PROG}: error: the training loss is not finite in epoch "), line
    records = _records(workdir)
    assert records, "the first epoch should be finite"
    assert all(r["train_loss"] is not None for r in records)
    assert _checkpoint_epochs(workdir) == [records[-1]["epoch"]]
    assert f"keeping the checkpoint of epoch {records[-1]['epoch']}" in line
    diverged_in = records[-1]["epoch"] + 1
    # --on-nan skip (which --resume may change) skips the steps whose update is not finite:
    # from the same checkpoint, the same batches now train through the epoch that diverged.
    result = run_train("--resume", "--workdir", workdir, "--on-nan", "skip")
    assert result.returncode == 0, result.stderr
    records = _records(workdir)
    assert [r["epoch"] for r in records] == list(range(1, 6))
    assert diverged_in <= 5
    assert all(r["test_loss"] is not None for r in records)


def _truncate_data_files(checkpoint: Path) -> None:
    files = [p for p in checkpoint.rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files, sorted(checkpoint.rglob("*"))
    for path in files:
        with open(path, "r+b") as f:
            f.truncate(max(0, path.stat().st_size // 3))


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("faults") / "run"
    result = run_train(*TINY, "--epochs", 2, "--workdir", workdir)
    assert result.returncode == 0, result.stderr
    return workdir


@pytest.mark.parametrize("damage", ["truncated", "no-metadata", "garbage-metadata"])
def test_resume_falls_back_to_the_newest_checkpoint_that_restores(two_epochs, tmp_path, damage):
    workdir = tmp_path / "run"
    shutil.copytree(two_epochs, workdir)
    latest = workdir / "checkpoints" / "2"
    if damage == "truncated":
        _truncate_data_files(latest)
    elif damage == "no-metadata":
        (latest / "_CHECKPOINT_METADATA").unlink(missing_ok=True)
        for path in latest.rglob("_METADATA"):
            path.unlink()
    else:
        for path in latest.rglob("_METADATA"):
            path.write_bytes(b"\x00garbage{")
    result = run_train("--resume", "--workdir", workdir, "--epochs", 3)
    assert result.returncode == 0, result.stderr
    assert "skipped checkpoint 2:" in result.stdout, result.stdout
    assert "resuming" in result.stdout and "after epoch 1" in result.stdout
    records = _records(workdir)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    # Epoch 2 was trained again from checkpoint 1: the same numbers as the first time.
    assert records[1]["train_loss"] == pytest.approx(_records(two_epochs)[1]["train_loss"])


def test_a_run_whose_only_save_was_interrupted_starts_again_without_overwrite(tmp_path):
    """A save killed for real (SIGKILL while orbax writes) leaves a temporary folder."""
    workdir = tmp_path / "run"
    process = _start(*TINY, "--epochs", 1, "--workdir", workdir)
    checkpoints_dir = workdir / "checkpoints"
    deadline = time.monotonic() + 240
    while not (checkpoints_dir.exists() and any(checkpoints_dir.iterdir())):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.001)
    process.kill()
    process.communicate()
    leftovers = [p for p in checkpoints_dir.iterdir() if "tmp" in p.name]
    if not leftovers:  # the save won the race; make the leftover as orbax names it
        shutil.rmtree(checkpoints_dir)
        (checkpoints_dir / "1.orbax-checkpoint-tmp-1234").mkdir(parents=True)
    for args in (["--resume"], []):
        result = run_train(*TINY, "--epochs", 1, "--workdir", workdir, *args)
        assert result.returncode == 0, result.stderr
        assert not [p for p in checkpoints_dir.iterdir() if "tmp" in p.name]
        assert _checkpoint_epochs(workdir) == [1]
        shutil.rmtree(checkpoints_dir)  # the plain rerun must not need --overwrite either
        (checkpoints_dir / "1.orbax-checkpoint-tmp-99").mkdir(parents=True)


def test_a_second_run_into_a_busy_workdir_exits_at_once(tmp_path):
    workdir = tmp_path / "run"
    first = _start(*SLOW, "--epochs", 1000, "--workdir", workdir)
    try:
        # config.json is written once the run holds the workdir's lock
        _wait_until(first, (workdir / "config.json").exists)
        for args in ([*TINY, "--epochs", 1], ["--resume"]):
            started = time.monotonic()
            second = run_train(*args, "--workdir", workdir)
            assert time.monotonic() - started < 60
            assert second.returncode == 1
            line = _one_line(second.stderr)
            assert "in use by another run" in line and f"pid {first.pid}" in line, line
            assert first.poll() is None  # the first run goes on, its files untouched
    finally:
        first.send_signal(signal.SIGTERM)
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    epochs = [r["epoch"] for r in _records(workdir)]
    assert epochs == list(range(1, len(epochs) + 1))


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")


def test_a_full_disk_gives_one_line_and_keeps_the_older_checkpoints(two_epochs, tmp_path):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "4m")
    try:
        workdir = disk / "run"
        shutil.copytree(two_epochs, workdir, ignore=shutil.ignore_patterns("events.out.*"))
        # What checkpoint 2 takes on this tmpfs (whole pages per file, not file sizes).
        checkpoint_usage = sum(
            p.stat().st_blocks * 512 for p in (workdir / "checkpoints" / "2").rglob("*")
        )
        # Room for the small files written before the save (lock, config, metrics, events:
        # a page each) and a third of a checkpoint: the save starts, then fails.
        room = 8 * 4096 + checkpoint_usage // 3
        free = shutil.disk_usage(disk).free
        (disk / "filler").write_bytes(b"\0" * max(0, free - room))
        result = run_train("--resume", "--workdir", workdir, "--epochs", 3)
        assert result.returncode in (1, 3), result.stdout + result.stderr
        line = _one_line(result.stderr)
        assert "cannot save checkpoint 3" in line and "no space left" in line, line
        assert [r["epoch"] for r in _records(workdir)] == [1, 2]
        assert _checkpoint_epochs(workdir) == [1, 2]
        assert not [p for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]
        (disk / "filler").unlink()  # space again: the intact checkpoint 2 resumes
        result = run_train("--resume", "--workdir", workdir, "--epochs", 3)
        assert result.returncode == 0, result.stderr
        assert [r["epoch"] for r in _records(workdir)] == [1, 2, 3]
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_terminal_and_piped_runs_give_identical_numbers(tmp_path):
    """On a terminal the live line is drawn; the computation, and so the numbers, is the
    same; piped, only one line per epoch is printed."""
    piped = tmp_path / "piped"
    result = run_train(*TINY, "--epochs", 2, "--workdir", piped)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert sum(line.startswith("epoch ") for line in result.stdout.splitlines()) == 2

    terminal = tmp_path / "terminal"
    leader, follower = pty.openpty()
    try:
        process = subprocess.run(
            [sys.executable, "-m", "train", *TINY, "--epochs", "2", "--workdir", str(terminal)],
            cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=follower, timeout=300,
            check=False,
        )  # fmt: skip
    finally:
        os.close(follower)
        os.close(leader)
    assert process.returncode == 0
    numbers = ("step", "train_loss", "train_accuracy", "test_loss", "test_accuracy")
    for mine, theirs in zip(_records(terminal), _records(piped), strict=True):
        assert [mine[k] for k in numbers] == [theirs[k] for k in numbers]
