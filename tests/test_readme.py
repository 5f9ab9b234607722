"""Everything the README tells a user to run is run here (the README must stay true).

* Every ```python block is executed as written.
* Every command of every ```bash (sh, shell, console) block is either run, in the order
  of the README (a ``--resume`` continues the run before it), or matches one entry of
  :data:`ALLOWED`, a short list of commands that the suite covers in another way. A
  command that is neither fails the test: a new command in the README needs a way to run
  or an entry there.

``python -m train`` commands run in-process through :func:`train.cli.main` in a temporary
directory, with the substitutions of :func:`substitute` (small sizes, one epoch, data and
models that this machine has); ``make train`` runs the Makefile's recipe, checked to be
``python -m train``, the same way.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from train import cli

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", flags=re.MULTILINE | re.DOTALL)
SHELLS = {"bash", "sh", "shell", "console"}
BLOCKS = [(lang, body) for lang, body in FENCE.findall(README.read_text())]
PYTHON = [body for lang, body in BLOCKS if lang == "python"]

#: Commands the suite covers in another way: (pattern on the command, where it is covered).
ALLOWED = (
    (r"pip install( -e)? \.(\[[\w,-]+\])?", "installs the package: make test's venv does"),
    (r"make test", "the suite itself, what CI runs"),
    (
        r"python -m train .*--coordinator-address .*",
        "several processes: tests/test_scaling.py starts 2 local processes of this command",
    ),
    (r"srun .*python -m train .*", "SLURM's launcher around python -m train (jax finds it)"),
)

FRESH_EPOCHS, RESUMED_EPOCHS, TRAIN_SUBSET, MAX_BATCH, FIND_LR_STEPS = 1, 2, 256, 64, 10
BIG_MODELS = ("alexnet", "vgg16", "resnet34")  # built and run in tests/test_models.py
SMALL_MODEL = "cifar_quick"
ABSENT_DATA = {"cifar10": "32,32,3", "mnist": "28,28,1"}  # offline here: synthetic instead
PATH_FLAGS = ("--workdir", "--data-dir", "--data-cache")


def shell_commands(text: str) -> list[list[str]]:
    """The commands of a shell block: continuation lines joined, comments and a console's
    ``$`` prompt dropped, each split as the shell would (no expansion)."""
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line.strip().removeprefix("$ "), comments=True)
        if words:
            commands.append(words)
    return commands


COMMANDS = [words for lang, body in BLOCKS if lang in SHELLS for words in shell_commands(body)]


def _allowed(words: list[str]) -> str | None:
    line = " ".join(words)
    return next((why for pattern, why in ALLOWED if re.fullmatch(pattern, line)), None)


def _flag(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def _set(args: list[str], flag: str, value: str | None) -> list[str]:
    """``args`` with ``flag``'s value replaced (added if absent; removed for ``None``)."""
    if flag in args:
        i = args.index(flag)
        args = args[:i] + args[i + 2 :]
    return args if value is None else [*args, flag, value]


def substitute(args: list[str], root: Path, local_devices: int = 1) -> list[str]:
    """The arguments of ``python -m train ARGS`` as this test runs them.

    * paths (``--workdir``, ``--data-dir``, ``--data-cache``): ``~/x`` and ``/x`` move
      under ``root`` (relative ones are already there: the commands run in ``root``);
    * ``--model alexnet|vgg16|resnet34`` -> ``cifar_quick`` (the big models compile for
      longer on a CPU than this whole test may take; tests/test_models.py builds them);
    * ``--dataset cifar10|mnist`` (not on this machine) -> ``synthetic`` of the same shape;
    * ``--num-devices`` at most the local devices;
    * a new run: ``--epochs 1 --train-subset 256``, ``--batch-size`` at most 64, and
      ``--find-lr-steps 10`` for ``--find-lr``; a ``--resume``: ``--epochs 2``;
    * ``--no-progress``.

    Example:
      >>> substitute(["--model", "resnet34", "--epochs", "100"], Path("/t"))
      ['--model', 'cifar_quick', '--epochs', '1', '--train-subset', '256', '--no-progress']
    """
    args = list(args)
    for flag in PATH_FLAGS:
        value = _flag(args, flag)
        if value is not None and (value.startswith("~") or os.path.isabs(value)):
            moved = root / "home" / value[2:] if value.startswith("~") else root / value[1:]
            args[args.index(flag) + 1] = str(moved)
    if _flag(args, "--model") in BIG_MODELS:
        args[args.index("--model") + 1] = SMALL_MODEL
    dataset = _flag(args, "--dataset")
    if dataset in ABSENT_DATA:
        args = _set(_set(args, "--data-dir", None), "--dataset", "synthetic")
        args += ["--synthetic-shape", ABSENT_DATA[dataset], "--synthetic-size", "512,64"]
    devices = _flag(args, "--num-devices")
    if devices is not None and int(devices) > local_devices:
        args[args.index("--num-devices") + 1] = str(local_devices)
    if "--resume" in args:
        args = _set(args, "--epochs", str(RESUMED_EPOCHS))
    else:
        if "--epochs" in args:
            args[args.index("--epochs") + 1] = str(FRESH_EPOCHS)
        else:
            args += ["--epochs", str(FRESH_EPOCHS)]
        args += ["--train-subset", str(TRAIN_SUBSET)]
        batch = _flag(args, "--batch-size")
        if batch is not None and int(batch) > MAX_BATCH:
            args[args.index("--batch-size") + 1] = str(MAX_BATCH)
        if "--find-lr" in args:
            args += ["--find-lr-steps", str(FIND_LR_STEPS)]
    return [*args, "--no-progress"]


def _train_args(words: list[str]) -> list[str] | None:
    """The arguments of ``python -m train`` that ``words`` runs, or ``None``."""
    if words[:3] == ["python", "-m", "train"]:
        return words[3:]
    if words == ["make", "train"]:
        recipe = re.search(r"^train:.*\n\t(.*)$", (REPO / "Makefile").read_text(), re.M)
        assert recipe and recipe.group(1).split() == ["$(PY)", "-m", "train"], recipe
        return []
    return None


def test_readme_has_examples_and_commands():
    assert len(PYTHON) >= 1
    assert any(_train_args(words) is not None for words in COMMANDS)


def test_every_command_is_run_or_covered_elsewhere():
    unknown = [" ".join(w) for w in COMMANDS if _train_args(w) is None and not _allowed(w)]
    assert not unknown, f"README commands neither run by this test nor in ALLOWED: {unknown}"


def test_substitutions():
    root = Path("/r")
    got = substitute(
        ["--model", "vgg16", "--dataset", "cifar10", "--data-dir", "~/data", "--batch-size",
         "512", "--num-devices", "4", "--workdir", "/shared/run", "--data-cache", "c"],
        root,
    )  # fmt: skip
    assert got == [
        "--model", "cifar_quick", "--batch-size", "64", "--num-devices", "1", "--workdir",
        "/r/shared/run", "--data-cache", "c", "--dataset", "synthetic", "--synthetic-shape",
        "32,32,3", "--synthetic-size", "512,64", "--epochs", "1", "--train-subset", "256",
        "--no-progress",
    ]  # fmt: skip
    resumed = substitute(["--resume", "--workdir", "~/w", "--epochs", "150"], root)
    assert resumed == ["--resume", "--workdir", "/r/home/w", "--epochs", "2", "--no-progress"]
    find_lr = substitute(["--find-lr", "--model", "lenet5"], root)
    assert find_lr[-3:-1] == ["--find-lr-steps", "10"] and "--epochs" in find_lr
    assert _allowed(["pip", "install", "-e", ".[train]"]) and not _allowed(["pip", "install", "x"])
    assert _allowed(shell_commands("make test  # CI\n")[0])
    assert not _allowed(["rm", "-rf", "/"]) and _train_args(["rm", "-rf", "/"]) is None


@pytest.mark.slow
def test_every_train_command_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ran = 0
    for words in COMMANDS:
        args = _train_args(words)
        if args is None or _allowed(words):
            continue
        args = substitute(args, tmp_path)
        code = cli.main(args)
        out, err = capsys.readouterr()
        assert code == 0, f"{' '.join(words)} -> {args}: exit {code}\n{out[-2000:]}{err[-2000:]}"
        workdir = _flag(args, "--workdir")
        if workdir is not None and "--find-lr" not in args:
            lines = (tmp_path / workdir / "metrics.jsonl").read_text().splitlines()
            assert len(lines) == int(_flag(args, "--epochs")), (args, lines)
        ran += 1
    assert ran >= 1


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_readme_example_runs(index, capsys):
    exec(compile(PYTHON[index], f"README.md python block {index}", "exec"), {})
    if "print(" in PYTHON[index]:
        assert capsys.readouterr().out.strip()
