"""Faults around checkpoints and the workdir (train.checkpoints, train.workdir_lock).

Each fault is injected for real: data files truncated and metadata deleted or overwritten
on disk, a save SIGKILLed mid-write in a subprocess, a tmpfs too small for the next
checkpoint, a read-only filesystem, and a second process taking the workdir lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

from train.checkpoints import TEMPORARY_MARK, Checkpointer, CheckpointError
from train.workdir_lock import WorkdirBusy, WorkdirLock

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _as_under_the_cli():
    """Each test runs with the CLI's log filters (train.platform.log_noise), removed after."""
    from train.platform import log_noise

    loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
    before = [logger.filters[:] for logger in loggers], sys.unraisablehook
    log_noise.install()
    yield
    for logger, filters in zip(loggers, before[0], strict=True):
        logger.filters[:] = filters
    sys.unraisablehook = before[1]


def _arrays(value: float, size: int = 6) -> dict:
    return {
        "step": jnp.int32(np.nan_to_num(value)),
        "params": {"w": jnp.full((size, 3), value, jnp.float32), "b": jnp.arange(3.0) + value},
    }


def _target(size: int = 6) -> dict:
    return _arrays(0.0, size)


def _saved(directory: Path, epochs, max_to_keep: int = 3) -> Checkpointer:
    ckpt = Checkpointer(directory, max_to_keep=max_to_keep)
    for epoch in epochs:
        ckpt.save(epoch, _arrays(epoch), {"epoch": epoch})
    return ckpt


def _temporary(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if TEMPORARY_MARK in name)


def _assert_restores(ckpt: Checkpointer, epoch: int) -> None:
    arrays, meta = ckpt.restore(_target(), epoch)
    assert meta == {"epoch": epoch}
    np.testing.assert_array_equal(arrays["params"]["w"], np.full((6, 3), epoch, np.float32))
    assert int(arrays["step"]) == epoch


def test_save_is_synchronous_and_round_trips(tmp_path):
    ckpt = Checkpointer(tmp_path / "checkpoints")
    assert not ckpt.has_checkpoints() and ckpt.restore_latest(_target()) is None
    ckpt.save(1, _arrays(1.0), {"epoch": 1, "history": [{"loss": 0.5}]})
    # Committed on return: the final folder with orbax's commit marker, no temporary one.
    assert (tmp_path / "checkpoints" / "1" / "commit_success.txt").is_file()
    assert _temporary(tmp_path / "checkpoints") == []
    epoch, arrays, meta, skipped = ckpt.restore_latest(_target())
    assert (epoch, meta, skipped) == (1, {"epoch": 1, "history": [{"loss": 0.5}]}, [])
    np.testing.assert_array_equal(arrays["params"]["b"], [1.0, 2.0, 3.0])
    ckpt.close()


def _truncate_data_files(step_dir: Path) -> None:
    data = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert data, f"no OCDBT data files under {step_dir}"
    for path in data:
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)


def _delete_metadata(step_dir: Path) -> None:
    (step_dir / "state" / "_METADATA").unlink()


def _garbage_metadata(step_dir: Path) -> None:
    (step_dir / "state" / "_METADATA").write_bytes(b"\x00garbage{{")


def _delete_meta_item(step_dir: Path) -> None:
    for path in sorted((step_dir / "meta").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (step_dir / "meta").rmdir()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_truncate_data_files, "is truncated or damaged"),
        (_delete_metadata, "its state/_METADATA file is missing"),
        (_garbage_metadata, "its state/_METADATA file is not valid JSON"),
        (_delete_meta_item, "meta item is missing"),
    ],
)
def test_restore_latest_skips_a_damaged_newest_checkpoint(tmp_path, capfd, damage, reason):
    ckpt = _saved(tmp_path, [1, 2, 3])
    damage(tmp_path / "3")
    epoch, arrays, meta, skipped = ckpt.restore_latest(_target())
    assert epoch == 2 and meta == {"epoch": 2}
    np.testing.assert_array_equal(arrays["params"]["w"], np.full((6, 3), 2.0, np.float32))
    assert [e for e, _ in skipped] == [3]
    assert reason in skipped[0][1] and "\n" not in skipped[0][1], skipped
    assert ckpt.latest_epoch() == 3  # complete, though not restorable
    with pytest.raises(CheckpointError) as error:
        ckpt.restore(_target(), 3)
    assert str(error.value).startswith(f"cannot restore checkpoint {tmp_path / '3'}: ")
    assert reason in str(error.value)
    assert capfd.readouterr().err == ""


def test_restore_latest_skips_checkpoints_of_another_model(tmp_path):
    """Shapes and dtypes are compared before reading: orbax would cast a dtype silently."""
    ckpt = _saved(tmp_path, [1], max_to_keep=4)
    ckpt.save(2, _arrays(2.0, size=7), {"epoch": 2})  # another width
    ckpt.save(3, dict(_arrays(3.0), step=jnp.float32(3)), {"epoch": 3})  # another dtype
    ckpt.save(4, {"step": jnp.int32(4)}, {"epoch": 4})  # fewer arrays
    epoch, _, _, skipped = ckpt.restore_latest(_target())
    assert epoch == 1
    assert [e for e, _ in skipped] == [4, 3, 2]
    reasons = dict(skipped)
    assert "lacks params/b" in reasons[4]
    assert "step is float32[], this run has int32[]" in reasons[3]
    assert "params/w is float32[7, 3], this run has float32[6, 3]" in reasons[2]


def test_restore_latest_fails_with_one_line_when_nothing_restores(tmp_path):
    ckpt = _saved(tmp_path, [1, 2])
    _garbage_metadata(tmp_path / "1")
    _truncate_data_files(tmp_path / "2")
    with pytest.raises(CheckpointError) as error:
        ckpt.restore_latest(_target())
    message = str(error.value)
    assert "\n" not in message and len(message) < 1000
    assert "2: " in message and "1: its state/_METADATA file is not valid JSON" in message


_INTERRUPTED_SAVE = """
import sys, numpy as np, jax.numpy as jnp
from train.checkpoints import Checkpointer
arrays = {"w": jnp.asarray(np.random.default_rng(0).random(4_000_000, dtype=np.float32))}
ckpt = Checkpointer(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
ckpt.save(1, arrays, {"epoch": 1})
"""


def _kill_during_first_save(directory: Path) -> list[str]:
    """Starts a 16 MB save in a subprocess and SIGKILLs it once array data is on disk."""
    child = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTED_SAVE, str(directory)],
        cwd=REPO,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        child.stdin.write("\n")
        child.stdin.flush()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and child.poll() is None:
            temporary = _temporary(directory) if directory.is_dir() else []
            written = [
                p for t in temporary for p in (directory / t).rglob("*") if p.parent.name == "d"
            ]
            if written:
                child.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL, "the save ended before it could be killed"
    return _temporary(directory)


@pytest.mark.slow
def test_a_save_killed_mid_write_leaves_only_a_temporary_folder(tmp_path):
    directory = tmp_path / "checkpoints"
    (leftover,) = _kill_during_first_save(directory)
    assert leftover.startswith(f"1{TEMPORARY_MARK}")
    ckpt = Checkpointer(directory)
    assert not ckpt.has_checkpoints()
    assert ckpt.latest_epoch() is None and ckpt.restore_latest(_target()) is None
    assert ckpt.exists()  # what the old CLI took for "already holds a run"
    assert ckpt.cleanup_temporary() == [str(directory / leftover)]
    assert os.listdir(directory) == [] and ckpt.cleanup_temporary() == []
    ckpt.save(1, _arrays(1.0), {"epoch": 1})
    assert ckpt.has_checkpoints()
    _assert_restores(ckpt, 1)


def test_a_leftover_temporary_folder_does_not_block_saving_that_epoch(tmp_path):
    ckpt = _saved(tmp_path, [1])
    leftover = tmp_path / f"2{TEMPORARY_MARK}-1234"  # an older orbax's name, half written
    (leftover / "state").mkdir(parents=True)
    (leftover / "state" / "partial").write_bytes(b"x" * 100)
    assert ckpt.latest_epoch() == 1
    ckpt.save(2, _arrays(2.0), {"epoch": 2})
    assert _temporary(tmp_path) == [] and ckpt.epochs() == [1, 2]


def test_saving_an_epoch_again_replaces_it_and_later_ones(tmp_path):
    """A run resumed from epoch 1 (after 2 and 3 were skipped) saves 2 again."""
    ckpt = _saved(tmp_path, [1, 2, 3])
    ckpt.save(2, _arrays(20.0), {"epoch": 2, "again": True})
    assert ckpt.epochs() == [1, 2]
    epoch, arrays, meta, _ = ckpt.restore_latest(_target())
    assert (epoch, meta, float(arrays["step"])) == (2, {"epoch": 2, "again": True}, 20.0)


def test_rotation_keeps_the_last_finite_checkpoint_across_restarts(tmp_path):
    ckpt = Checkpointer(tmp_path, max_to_keep=3)
    ckpt.save(1, _arrays(1.0), {"epoch": 1}, finite=True)
    for epoch in range(2, 7):
        ckpt.save(epoch, _arrays(np.nan), {"epoch": epoch}, finite=False)
    assert ckpt.epochs() == [1, 4, 5, 6]
    _assert_restores(ckpt, 1)
    ckpt.close()

    restarted = Checkpointer(tmp_path, max_to_keep=3)  # a new process reads the flags on disk
    restarted.save(7, _arrays(np.nan), {"epoch": 7}, finite=False)
    assert restarted.epochs() == [1, 5, 6, 7]
    _assert_restores(restarted, 1)
    restarted.save(8, _arrays(8.0), {"epoch": 8})  # a newer finite one releases epoch 1
    assert restarted.epochs() == [6, 7, 8]
    restarted.save(9, _arrays(9.0), {"epoch": 9})
    assert restarted.epochs() == [7, 8, 9]


# Real filesystems that fail: a small tmpfs, then the same one remounted read-only.


@pytest.fixture
def tmpfs(tmp_path):
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=True)


def _big(value: float) -> dict:
    """About 400 kB that does not compress: two fit in the 1 MB tmpfs, three do not."""
    rng = np.random.default_rng(int(value))
    return {"w": jnp.asarray(rng.random(100_000, dtype=np.float32)), "step": jnp.int32(value)}


def test_a_full_disk_fails_with_one_line_and_keeps_older_checkpoints(tmpfs, capfd, caplog):
    directory = tmpfs / "checkpoints"
    ckpt = Checkpointer(directory, max_to_keep=3)
    ckpt.save(1, _big(1), {"epoch": 1})
    ckpt.save(2, _big(2), {"epoch": 2})
    with pytest.raises(CheckpointError) as error:
        ckpt.save(3, _big(3), {"epoch": 3})
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"cannot save checkpoint 3 in {directory}: no space left on device")
    assert re.search(r"\(needs about 400\.0 kB, \d+\.\d kB free\)$", message), message
    assert capfd.readouterr().err == ""
    assert caplog.records == []  # pytest captures orbax's absl logging before stderr
    assert sorted(os.listdir(directory)) == ["1", "2"]  # no temporary folder left
    epoch, arrays, _, skipped = Checkpointer(directory).restore_latest(_big(0))
    assert (epoch, skipped) == (2, [])
    np.testing.assert_array_equal(arrays["w"], _big(2)["w"])
    ckpt.restore(_big(0), 1)
    shutil.rmtree(directory / "1")  # space freed: the same Checkpointer saves again
    ckpt.save(3, _big(3), {"epoch": 3})
    assert ckpt.epochs() == [2, 3]


_FILL_DISK_THEN_DAMAGE = """
import pathlib, sys, numpy as np, jax.numpy as jnp
from train.checkpoints import Checkpointer, CheckpointError
from train.platform import log_noise
log_noise.install()
ckpt = Checkpointer(sys.argv[1])
arrays = lambda epoch: {"w": jnp.asarray(np.random.default_rng(epoch).random(100_000, np.float32))}
for epoch in (1, 2, 3):
    try:
        ckpt.save(epoch, arrays(epoch), {"epoch": epoch})
    except CheckpointError as error:
        print(error)
for path in (pathlib.Path(sys.argv[1]) / "2").rglob("*"):
    if path.parent.name == "d":
        path.write_bytes(path.read_bytes()[:50])
epoch, _, _, skipped = ckpt.restore_latest(arrays(0))
print(epoch, skipped)
"""


@pytest.mark.slow
def test_faults_print_nothing_on_stderr_outside_pytest(tmpfs):
    """As the CLI meets them (with its log filters): outside pytest, orbax's absl log lines
    and tensorstore's late callbacks would reach stderr (pytest captures both before
    ``capfd`` sees them)."""
    result = subprocess.run(
        [sys.executable, "-c", _FILL_DISK_THEN_DAMAGE, str(tmpfs / "checkpoints")],
        cwd=REPO,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode, result.stderr) == (0, "")
    full_disk, fallback = result.stdout.splitlines()
    assert full_disk.startswith("cannot save checkpoint 3 in ") and "no space left" in full_disk
    assert fallback.startswith("1 [(2, 'its data file state/"), fallback


def test_a_read_only_filesystem_fails_with_one_line(tmpfs, capfd):
    directory = tmpfs / "checkpoints"
    ckpt = Checkpointer(directory)
    ckpt.save(1, _arrays(1.0), {"epoch": 1})
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    with pytest.raises(CheckpointError) as error:
        ckpt.save(2, _arrays(2.0), {"epoch": 2})
    message = str(error.value)
    assert "\n" not in message and "Read-only file system" in message, message
    assert message.startswith(f"cannot save checkpoint 2 in {directory}: ")
    assert capfd.readouterr().err == ""
    assert os.listdir(directory) == ["1"]
    _assert_restores(ckpt, 1)


# The workdir lock.

_TAKE_LOCK = """
import sys, time
from train.workdir_lock import WorkdirBusy, WorkdirLock
start = time.monotonic()
try:
    with WorkdirLock(sys.argv[1]):
        print("locked", flush=True)
        if len(sys.argv) > 2:
            time.sleep(60)
except WorkdirBusy as busy:
    print(f"busy after {time.monotonic() - start:.3f} s: {busy}", flush=True)
    sys.exit(3)
"""


def _take_lock(workdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _TAKE_LOCK, str(workdir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.slow
def test_a_second_process_cannot_take_a_busy_workdir(tmp_path):
    workdir = tmp_path / "run"
    with WorkdirLock(workdir):
        assert (workdir / ".lock").read_text().split()[0] == str(os.getpid())
        result = _take_lock(workdir)
        assert result.returncode == 3, result
        seconds, message = result.stdout.split(" s: ", 1)
        assert float(seconds.removeprefix("busy after ")) < 1.0
        assert message.strip() == (
            f"workdir {workdir} is in use by another run (pid {os.getpid()}); wait for it or "
            "choose another --workdir"
        )
        with pytest.raises(WorkdirBusy, match="in use by another run"):
            WorkdirLock(workdir).acquire()  # in this process too
    result = _take_lock(workdir)
    assert (result.returncode, result.stdout) == (0, "locked\n"), result


@pytest.mark.slow
def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    workdir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", _TAKE_LOCK, str(workdir), "hold"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(WorkdirBusy, match=f"pid {holder.pid}\\)"):
            WorkdirLock(workdir).acquire()
    finally:
        holder.kill()
        holder.wait()
    with WorkdirLock(workdir):
        assert (workdir / ".lock").read_text().split()[0] == str(os.getpid())


def _orbax_writer(seconds: float, name: str = "array_type_handler", then: Any = None):
    """A real orbax background writer thread that fails after ``seconds`` (as a metadata
    write on a full disk does), logging its error with a traceback to absl; before it
    fails it calls ``then`` (to start another writer, as a save's threads do)."""
    from orbax.checkpoint._src.futures import future

    def write():
        time.sleep(seconds)
        if then is not None:
            then()
        raise OSError(28, "No space left on device")

    thread = future._SignalingThread(
        target=write, send_signals=[], receive_signals=[], timeout_secs=60, name=name
    )
    thread.start()
    return thread


@contextlib.contextmanager
def _absl_records() -> Iterator[list[logging.LogRecord]]:
    """The absl records that pass its filters while the block runs; the filters that the
    block adds are removed after it."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    absl = logging.getLogger("absl")
    filters = list(absl.filters)
    absl.addHandler(handler)
    try:
        yield records
    finally:
        absl.removeHandler(handler)
        absl.filters[:] = filters


@pytest.mark.parametrize("outlives_the_wait", [False, True])
def test_a_failed_save_waits_for_orbax_writers_and_drops_their_reports(
    tmp_path, monkeypatch, outlives_the_wait
):
    """A save that fails can leave orbax writer threads running; when the process exited
    first, one printed a traceback after the CLI's one-line error. After the failure they
    are waited for (bounded), and the CLI's log filters drop their reports, also those of
    a writer that outlives the wait."""
    from train import checkpoints

    if outlives_the_wait:
        monkeypatch.setattr(checkpoints, "_WRITER_WAIT_S", 0.05)
    with _absl_records() as records:
        writer = _orbax_writer(0.5)
        Checkpointer(tmp_path / "ckpt")._abandon(3)  # what a failed save calls
        assert writer.is_alive() == outlives_the_wait
        threading.Thread.join(writer, 5.0)  # orbax's own join raises the writer's error
        assert not writer.is_alive()
        assert not [r for r in records if r.thread == writer.ident], records


def test_a_failed_save_drops_the_reports_of_writers_started_while_it_waits(tmp_path):
    """A writer that the failed save's threads start after the failure (here: after the
    save's first writer was seen) is waited for, and its report dropped, like the first."""
    later: list[threading.Thread] = []
    with _absl_records() as records:
        first = _orbax_writer(0.2, "coordinator", then=lambda: later.append(_orbax_writer(0.3)))
        Checkpointer(tmp_path / "ckpt")._abandon(3)
        assert len(later) == 1 and not later[0].is_alive() and not first.is_alive()
        writers = {first.ident, later[0].ident}
        assert not [r for r in records if r.thread in writers], records
