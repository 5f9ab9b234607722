"""``python -m train``: train one model (the README's main job with no flags).

This module only parses, prints and sets exit codes. The flags, their defaults, checks
and help come from :class:`train.config.Config`; the training is :func:`train.run.run`.

Exit status: 0 done; 1 a bad input (data, workdir, flags' combination); 2 a bad command
line; 3 a checkpoint that cannot be saved or restored; 4 a non-finite training loss
(``--on-nan stop``); 70 an error the application did not expect (a bug): one line says
what failed and where, and names the file that holds the traceback (``<workdir>/error.log``,
or a temporary file while no workdir exists); ``--debug`` shows the traceback in place;
128 + N after signal N (130 for Ctrl-C, 143 for SIGTERM): the first signal finishes and
saves the running epoch, a second one stops at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import sys
import tempfile
import traceback
import types
import typing
from collections.abc import Sequence
from typing import Any

from train import config as config_lib
from train.config import Config

PROG = "python -m train"
EXAMPLES = """examples:
  python -m train                                   # the main job: LeNet-5, Fashion-MNIST
  python -m train --model cifar_quick --augment --optimizer nesterov --schedule onecycle \\
      --epochs 10 --weight-decay 5e-4 --workdir runs/quick
  python -m train --resume --workdir runs/quick --epochs 20   # continue, up to 20 epochs

  --debug   an unexpected error shows its traceback here (else it goes to <workdir>/error.log)
"""
DEBUG_FLAG = "--debug"  # a flag of the command line only, not a setting of the run
UNEXPECTED_ERROR = 70  # sysexits' EX_SOFTWARE: an internal error
ERROR_LOG = "error.log"
_PACKAGES = ("train", "models", "polyak_optax", "benchmarks", "tests")  # this repository


class UsageError(Exception):
    """A bad command line (reported as one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def _flag_type(field: dataclasses.Field) -> Any:
    """The argparse ``type`` of a field: converts text; the checks are the config's."""
    hint = typing.get_type_hints(Config)[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if isinstance(hint, types.UnionType) else hint
    if typing.get_origin(base) is tuple:
        length = len(typing.get_args(base))

        def sizes(text: str) -> tuple[int, ...]:
            try:
                values = tuple(int(v) for v in text.split(","))
            except ValueError:
                values = ()
            if len(values) != length:
                raise argparse.ArgumentTypeError(
                    f"expected {length} comma-separated integers, got {text!r}"
                )
            return values

        sizes.__name__ = "sizes"
        return sizes
    if base in (int, float):

        def number(text: str) -> Any:
            try:
                return base(text)
            except ValueError:
                kind = "an integer" if base is int else "a number"
                raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None

        number.__name__ = base.__name__
        return number
    return str


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The parser, one flag per :class:`~train.config.Config` field.

    With ``suppress_defaults`` the result holds only the flags given explicitly.
    """
    from train import optimizers

    rows = "\n".join(
        f"  {name:<20} lr {spec.learning_rate:<7g} momentum "
        f"{'-' if spec.momentum is None else spec.momentum:<5} {spec.about}"
        for name, spec in optimizers.OPTIMIZERS.items()
    )
    parser = _Parser(
        prog=PROG,
        description=(
            "Train a model of the thesis with minibatch persistency, adaptive Nesterov, "
            "layer-wise scaling and cyclical schedules. With no flags: the README's main job."
        ),
        epilog=f"optimizers and their defaults:\n{rows}\n\n{EXAMPLES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for field in config_lib.fields():
        meta = field.metadata
        names = [config_lib.flag_name(field.name)] + ([meta["short"]] if meta["short"] else [])
        default = argparse.SUPPRESS if suppress_defaults else field.default
        shown = "" if field.default in (None, False) else f" (default: {_show(field.default)})"
        metavar = field.name.upper()
        choices = getattr(meta["check"], "choices", None)
        if choices is not None:
            metavar = "{" + ",".join(choices() if callable(choices) else choices) + "}"
        if field.type in ("bool", bool):
            if field.default:  # --no-progress
                names = ["--no-" + field.name.replace("_", "-")]
                parser.add_argument(
                    *names,
                    dest=field.name,
                    action="store_false",
                    default=default,
                    help=meta["help"],
                )
            else:
                parser.add_argument(
                    *names,
                    dest=field.name,
                    action="store_true",
                    default=default,
                    help=meta["help"],
                )
            continue
        parser.add_argument(
            *names,
            dest=field.name,
            type=_flag_type(field),
            default=default,
            metavar=metavar,
            help=meta["help"] + shown,
        )
    return parser


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def parse_args(argv: Sequence[str] | None = None) -> tuple[Config, dict[str, Any]]:
    """The config of a command line and the flags given explicitly (name -> value).

    On ``--resume`` the config is the saved one of the workdir, changed by the explicit
    flags that may change (see :func:`train.config.merge_for_resume`).

    Raises:
      UsageError: an unknown flag or a value that does not parse or check.
      ValueError: a resumed run that cannot be read or a flag that contradicts it.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    build_parser().parse_args(argv)  # --help, and errors in the order of the command line
    explicit = vars(build_parser(suppress_defaults=True).parse_args(argv))
    try:
        config = Config(**explicit)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if config.resume:
        config = config_lib.merge_for_resume(_saved_config(config.workdir), explicit)
    return config, explicit


def _saved_config(workdir: str) -> Config:
    path = os.path.join(workdir, "config.json")
    if not os.path.isdir(workdir):
        raise ValueError(f"--resume: workdir {workdir} does not exist")
    if not os.path.exists(path):
        raise ValueError(f"--resume: {path} is missing; is {workdir} the workdir of a run?")
    try:
        with open(path) as f:
            return Config.from_json(json.load(f))
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"cannot read {path}: {_one_line(error)}") from None


def _default_workdir(config: Config) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join("runs", f"{stamp}-{config.dataset}-{config.model}-{config.optimizer}")
    path, n = base, 1
    while os.path.exists(path):
        path, n = f"{base}-{n}", n + 1
    return path


def _finish(config: Config, history: list[dict[str, Any]]) -> None:
    from train import progress, run

    workdir = config.workdir
    if history:
        label = f"{config.model}_{config.optimizer}_{config.batch_size}"
        print(progress.format_summary(history, label, config.persistency), flush=True)
    top = run.best(history)
    lines = [
        f"results: {workdir}",
        f"  metrics {os.path.join(workdir, 'metrics.jsonl')}, plot "
        f"{os.path.join(workdir, 'curves.png')}, TensorBoard: tensorboard --logdir "
        f"{os.path.dirname(os.path.abspath(workdir))}",
    ]
    if history:
        lines.append(
            f"  checkpoint {os.path.join(workdir, 'checkpoints', str(history[-1]['epoch']))}"
            + (
                f" (best test accuracy {100 * top['test_accuracy']:.2f}% at epoch {top['epoch']})"
                if top
                else ""
            )
        )
    lines.append(f"  train longer: {run.resume_command(workdir, config.epochs + 1)}")
    print("\n".join(lines), flush=True)


#: Set when a second signal aborted the run: ``python -m train`` then exits at once,
#: without waiting for the device to finish the abandoned epoch.
aborted = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parses ``argv`` (default ``sys.argv[1:]``), trains, returns the exit code.

    An exception of no expected kind ends in one line and exit status 70; the traceback
    goes to ``<workdir>/error.log`` (:func:`_unexpected`). ``--debug`` anywhere in
    ``argv`` lets it propagate instead, traceback and all.

    Example:
      >>> main(["--persistency", "0"])
      2
    """
    from train.platform import cpu_scheduling, log_noise, xla_flags

    xla_flags.apply()  # before anything starts jax's backends
    log_noise.install()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    try:
        config, _ = parse_args(argv)
    except UsageError as error:
        print(f"{PROG}: error: {error} (see --help)", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    except ValueError as error:
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except Exception as error:
        if debug:
            raise
        print(f"{PROG}: {_unexpected(error, None, argv)}", file=sys.stderr, flush=True)
        return UNEXPECTED_ERROR

    from train import distributed

    if distributed.requested(config):
        cpu_scheduling.apply()  # before jax starts its threads, which inherit the policy
    code = _main(config, argv, debug)
    if distributed.active() and code != 0:
        distributed.exit_now(code)  # a peer may be dead: no shutdown barrier
    return code


def _main(config: Config, argv: Sequence[str] = (), debug: bool = False) -> int:
    global aborted
    from train import checkpoints, distributed, run

    def fail(message: str, code: int) -> int:
        if distributed.active():
            message = f"[process {distributed.process_index()}] {message}"
            distributed.report_failure(message)
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)
        return code

    try:
        distributed.initialize(config)
        if config.workdir is None and distributed.active():
            config = config.replace(
                workdir=distributed.broadcast("workdir", _default_workdir, config)
            )
        if config.find_lr:
            from train import find_lr

            return find_lr.find_lr(
                config.replace(workdir=config.workdir or _default_workdir(config))
            )
        if config.workdir is None:
            config = config.replace(workdir=_default_workdir(config))
        history = run.run(config)
        if distributed.process_index() == 0:
            _finish(config, history)
        return 0
    except run.Aborted as error:
        aborted = True
        return fail(str(error), 128 + error.signum)
    except run.Interrupted as error:
        return fail(str(error), 128 + error.signum)
    except run.Diverged as error:
        return fail(f"error: {error}", 4)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except checkpoints.CheckpointError as error:
        return fail(f"error: {_one_line(error)}", 3)
    except (ValueError, OSError) as error:
        return fail(f"error: {_one_line(error)}", 1)
    except Exception as error:
        if debug:
            raise
        # In several processes this is most often a collective that failed with a peer.
        code = 1 if distributed.active() else UNEXPECTED_ERROR
        return fail(_unexpected(error, config.workdir, argv), code)


def _unexpected(error: BaseException, workdir: str | None, argv: Sequence[str]) -> str:
    """The one line of an unexpected error: what failed, where, and the file that now holds
    the full traceback (``<workdir>/error.log``, or a temporary file without a workdir)."""
    text = f"{PROG} {shlex.join(argv)}\n{datetime.datetime.now().isoformat()}\n\n" + "".join(
        traceback.format_exception(error)
    )
    path = _write_traceback(text, workdir)
    saved = f"the traceback is in {path}" if path else "the traceback could not be written"
    message = _one_line(error)
    if len(message) > 400:
        message = message[:400] + "..."
    return (
        f"error: unexpected {type(error).__name__}{_raised_at(error)}: {message} "
        f"({saved}; {DEBUG_FLAG} shows it here)"
    )


def _write_traceback(text: str, workdir: str | None) -> str | None:
    """Writes ``text`` to ``<workdir>/error.log`` or, failing that, a new temporary file;
    returns its path (``None`` if neither can be written)."""
    if workdir is not None and os.path.isdir(workdir):
        path = os.path.join(workdir, _error_log_name())
        try:
            with open(path, "w") as f:
                f.write(text)
            return path
        except OSError:
            pass
    try:
        fd, path = tempfile.mkstemp(prefix="train-error-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path
    except OSError:
        return None


def _error_log_name() -> str:
    """``error.log``; in a run of several processes, process i > 0 writes its own."""
    from train import distributed

    index = distributed.process_index() if distributed.active() else 0
    return ERROR_LOG if index == 0 else f"error-process{index}.log"


def _raised_at(error: BaseException) -> str:
    """`` in FILE:LINE (FUNCTION)`` of the deepest frame of this repository's code in the
    traceback (the deepest frame of all if none is), relative to the repository."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return ""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ours = [
        f
        for f in frames
        if os.path.relpath(os.path.abspath(f.filename), root).split(os.sep)[0] in _PACKAGES
    ]
    frame = (ours or frames)[-1]
    filename = os.path.relpath(os.path.abspath(frame.filename), root) if ours else frame.filename
    return f" in {filename}:{frame.lineno} ({frame.name})"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
