"""An error the CLI did not expect ends in one line, its traceback in a file; ``--debug``
shows the traceback in place (train.cli.main)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests import _cheap_compile
from train import cli, run

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--dataset", "synthetic", "--synthetic-shape", "8,8,1", "--synthetic-size", "32,16",
         "--model", "tiny", "--batch-size", "16", "--epochs", "1", "--no-progress"]  # fmt: skip


def _raise_deep(*args, **kwargs):
    def inner():
        raise RuntimeError("planted failure\nsecond line")

    inner()


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith(f"{cli.PROG}: error: unexpected RuntimeError"), lines[0]
    assert "planted failure second line" in lines[0], lines[0]
    return lines[0]


def _log_path(line: str) -> Path:
    path = line.split("the traceback is in ", 1)[1].split(";", 1)[0]
    return Path(path)


def test_an_unexpected_error_ends_in_one_line_and_the_traceback_goes_to_the_workdir(
    tmp_path, monkeypatch, capsys
):
    workdir = tmp_path / "run"
    workdir.mkdir()
    monkeypatch.setattr(run, "run", _raise_deep)
    assert cli.main([*SMALL, "--workdir", str(workdir)]) == cli.UNEXPECTED_ERROR
    line = _one_error_line(capsys.readouterr().err)
    # Where it failed: the deepest frame of this repository's code.
    assert f"in tests/{Path(__file__).name}:" in line and "(inner)" in line, line
    assert _log_path(line) == workdir / cli.ERROR_LOG
    text = (workdir / cli.ERROR_LOG).read_text()
    assert "Traceback" in text and "RuntimeError: planted failure" in text
    assert f"--workdir {workdir}" in text.splitlines()[0]  # the command that failed


def test_without_a_workdir_the_traceback_goes_to_a_temporary_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(run, "run", _raise_deep)
    missing = tmp_path / "not-created"
    assert cli.main([*SMALL, "--workdir", str(missing)]) == cli.UNEXPECTED_ERROR
    path = _log_path(_one_error_line(capsys.readouterr().err))
    assert path.parent == tmp_path and path.name.startswith("train-error-"), path
    assert "RuntimeError: planted failure" in path.read_text()
    assert not missing.exists()


def test_an_unexpected_error_while_parsing_ends_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(cli, "parse_args", _raise_deep)
    assert cli.main(SMALL) == cli.UNEXPECTED_ERROR
    path = _log_path(_one_error_line(capsys.readouterr().err))
    assert path.parent == tmp_path and "planted failure" in path.read_text()


def test_debug_shows_the_traceback_in_place(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(run, "run", _raise_deep)
    with pytest.raises(RuntimeError, match="planted failure"):
        cli.main([*SMALL, "--workdir", str(tmp_path / "w"), cli.DEBUG_FLAG])
    with pytest.raises(RuntimeError, match="planted failure"):  # before the config exists
        monkeypatch.setattr(cli, "parse_args", _raise_deep)
        cli.main([cli.DEBUG_FLAG, *SMALL])
    assert not list(tmp_path.glob("train-error-*"))  # nothing written, nothing printed
    assert "unexpected" not in capsys.readouterr().err


# A failure deep inside training: the loss function raises while the epoch is traced. The
# command is `python -m train` itself (runpy), with one function replaced first.
_PLANTED = """
import runpy, sys
import train.loop
def cross_entropy(logits, labels):
    raise RuntimeError("planted failure\\nsecond line")
train.loop.cross_entropy = cross_entropy
sys.argv = ["python -m train", *sys.argv[1:]]
runpy.run_module("train", run_name="__main__")
"""


def _planted_run(*args: str) -> subprocess.CompletedProcess:
    env = _cheap_compile.environ()
    return subprocess.run(
        [sys.executable, "-c", _PLANTED, *SMALL, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_a_real_run_that_fails_unexpectedly_prints_one_line_and_writes_error_log(tmp_path):
    workdir = tmp_path / "run"
    result = _planted_run("--workdir", str(workdir))
    assert result.returncode == cli.UNEXPECTED_ERROR, result.stdout + result.stderr
    line = _one_error_line(result.stderr)
    assert "in train/loop.py:" in line, line  # the loss function's caller
    log = (workdir / cli.ERROR_LOG).read_text()
    assert _log_path(line) == workdir / cli.ERROR_LOG
    assert "Traceback" in log and "train/run.py" in log and "planted failure" in log
    debug = _planted_run("--workdir", str(tmp_path / "debug"), cli.DEBUG_FLAG)
    assert debug.returncode == 1  # Python's own exit status for an uncaught exception
    assert "Traceback" in debug.stderr and "RuntimeError: planted failure" in debug.stderr
    assert not (tmp_path / "debug" / cli.ERROR_LOG).exists()
