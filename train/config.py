"""The training configuration: one frozen dataclass, the single source of every flag.

Each field of :class:`Config` carries, in its metadata, the flag's help text, how its
value is checked, and whether a ``--resume`` may change it. From that one place come the
command-line parser (:mod:`train.cli`), the checks (:meth:`Config.__post_init__`), the
``config.json`` form (:meth:`Config.to_json` / :meth:`Config.from_json`) and the resume
rules (:func:`merge_for_resume`). Adding a flag is adding one field.

A frozen dataclass rather than ``ml_collections`` or ``tyro``: it needs nothing beyond the
standard library, it type-checks, and the flags, their checks and their JSON form stay
one table that the tests read.

Example:
  >>> config = Config(epochs=3, batch_size=64)
  >>> config.epochs, config.optimizer
  (3, 'adaptive_nesterov')
  >>> Config(batch_size=0)
  Traceback (most recent call last):
  ...
  ValueError: --batch-size: must be an integer >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

#: Names accepted by ``--dataset`` (see :mod:`train.data`).
DATASETS = ("fashion_mnist", "mnist", "cifar10", "synthetic", "license_chars", "python_stdlib")
#: Names accepted by ``--schedule`` (see :mod:`train.optimizers`).
SCHEDULES = ("constant", "step", "cyclic", "onecycle", "cosine")
ON_NAN = ("stop", "skip")
DATA_PLACEMENTS = ("sharded", "replicated")
DATA_MODES = ("auto", "resident", "chunked")


def _field(
    default: Any,
    help: str,
    *,
    check: Callable[[Any], str | None] | None = None,
    resume: bool = False,
    short: str | None = None,
    cli: bool = True,
) -> Any:
    """A config field: ``help`` for ``--help``; ``check(value)`` returns an error or None;
    ``resume``: whether ``--resume`` may change it (it does not change the numbers)."""
    meta = {"help": help, "check": check, "resume": resume, "short": short, "cli": cli}
    return dataclasses.field(default=default, metadata=meta)


def _int_at_least(low: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            return f"must be an integer >= {low}, got {value!r}"
        return None

    return check


def _number_in(
    low: float, high: float | None = None, *, low_open: bool = False, high_open: bool = True
) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and (value > low if low_open else value >= low)
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            lo = f"{'(' if low_open else '['}{low:g}"
            hi = f"{high:g}{')' if high_open else ']'}" if high is not None else "inf)"
            return f"must be a number in {lo}, {hi}, got {value!r}"
        return None

    return check


def _one_of(choices: Callable[[], tuple[str, ...]] | tuple[str, ...]):
    def check(value: Any) -> str | None:
        names = choices() if callable(choices) else choices
        if value not in names:
            return f"invalid choice {value!r} (choose from {', '.join(names)})"
        return None

    check.choices = choices  # type: ignore[attr-defined]
    return check


def _positive_ints(length: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if (
            not isinstance(value, tuple)
            or len(value) != length
            or not all(isinstance(v, int) and v >= 1 for v in value)
        ):
            return f"expected {length} comma-separated positive integers, got {value!r}"
        return None

    return check


def _optional(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    def optional(value: Any) -> str | None:
        return None if value is None else check(value)

    optional.inner = check  # type: ignore[attr-defined]
    return optional


def _model_names() -> tuple[str, ...]:
    from models import registry  # lazily: flax is imported only when a model is needed

    return registry.ALL_NAMES


def _optimizer_names() -> tuple[str, ...]:
    from train import optimizers

    return tuple(optimizers.OPTIMIZERS)


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of a training run (the defaults are the README's main job)."""

    model: str = _field("lenet5", "the network", check=_one_of(_model_names))
    dataset: str = _field("fashion_mnist", "the data set", check=_one_of(DATASETS))
    data_dir: str | None = _field(
        None, "where the data set's files are (IDX, CIFAR-10 batches, TFDS dir)", resume=True
    )
    optimizer: str = _field(
        "adaptive_nesterov", "the optimizer (see the table below)", check=_one_of(_optimizer_names)
    )
    layerwise: bool = _field(False, "layer-specific rates: x(1 + log(1 + 1/|g_l|))")
    schedule: str = _field(
        "onecycle",
        "learning-rate schedule (the eta ceiling for Polyak-type optimizers)",
        check=_one_of(SCHEDULES),
    )
    learning_rate: float | None = _field(
        None,
        "learning rate (peak of cyclic/onecycle/cosine; eta ceiling of adaptive Nesterov); "
        "default per optimizer",
        check=_optional(_number_in(0, low_open=True)),
    )
    min_learning_rate: float | None = _field(
        None,
        "eta floor of adaptive_nesterov (1e-3) or lower bound of cyclic (lr/10)",
        check=_optional(_number_in(0)),
    )
    momentum: float | None = _field(
        None,
        "momentum (Adam: b1; onecycle: the cycle's maximum); default per optimizer",
        check=_optional(_number_in(0, 1)),
    )
    weight_decay: float = _field(
        0.0,
        "weight decay on kernels (conv/dense weights, not biases or norms): L2 added to "
        "the gradient before momentum, decoupled (AdamW) for adam",
        check=_number_in(0),
    )
    cycle_epochs: float = _field(
        10.0, "half-cycle of the cyclic schedule, in epochs", check=_number_in(0, low_open=True)
    )
    batch_size: int = _field(128, "minibatch size m", check=_int_at_least(1))
    eval_batch_size: int = _field(1000, "test-set batch size", check=_int_at_least(1), resume=True)
    persistency: int = _field(
        1,
        "minibatch persistency K: optimizer steps per minibatch (1 = plain SGD)",
        check=_int_at_least(1),
        short="-K",
    )
    epochs: int = _field(
        7, "epochs to train (in all, counting resumed ones)", check=_int_at_least(1), resume=True
    )
    train_subset: int | None = _field(
        None, "train on this many training examples", check=_optional(_int_at_least(1))
    )
    augment: bool = _field(False, "random flip and 4-pixel translation")
    seed: int = _field(0, "PRNG seed", check=_int_at_least(0))
    on_nan: str = _field(
        "stop",
        "a non-finite training loss: stop the run (exit 4) or skip (keep training)",
        check=_one_of(ON_NAN),
        resume=True,
    )
    workdir: str | None = _field(
        None, "output directory (default: a new one under ./runs)", resume=True
    )
    resume: bool = _field(False, "continue the run in --workdir", resume=True)
    overwrite: bool = _field(False, "start over in a --workdir that holds a run", resume=True)
    keep_checkpoints: int = _field(3, "checkpoints to keep", check=_int_at_least(1), resume=True)
    num_devices: int | None = _field(
        None,
        "data-parallel devices (default: all local)",
        check=_optional(_int_at_least(1)),
        resume=True,
    )
    data_placement: str = _field(
        "sharded",
        "the training and test sets on the devices: sharded (each of D devices holds 1/D; "
        "a batch takes batch/D examples of each device's shard) or replicated (a full copy "
        "on each device; the single-device sampling on any number of devices)",
        check=_one_of(DATA_PLACEMENTS),
    )
    data_mode: str = _field(
        "auto",
        "resident: the whole training set on the devices; chunked: device-resident chunks "
        "of --chunk-batches batches, the next one copied while one trains (same numbers); "
        "auto: chunked when the data set would take over half the free device memory",
        check=_one_of(DATA_MODES),
        resume=True,
    )
    chunk_batches: int | None = _field(
        None,
        "batches per chunk of the chunked mode (default: 1/8 of the free device memory, "
        "at most 64 batches where that is unknown)",
        check=_optional(_int_at_least(1)),
        resume=True,
    )
    data_cache: str | None = _field(
        None,
        "keep the data set as uint8 .npy files here (written once) and read them memory-"
        "mapped: host RAM no longer bounds it, and each process reads only its rows "
        "(default: none in one process; <workdir>/data-cache, written by process 0, in "
        "several)",
        resume=True,
    )
    coordinator_address: str | None = _field(
        None,
        "HOST:PORT of process 0, to train in several processes under jax.distributed "
        "(with --num-processes and --process-id; unset on SLURM: JAX detects the job)",
        resume=True,
    )
    num_processes: int | None = _field(
        None, "processes of a multi-process run", check=_optional(_int_at_least(1)), resume=True
    )
    process_id: int | None = _field(
        None,
        "this process's index in [0, --num-processes)",
        check=_optional(_int_at_least(0)),
        resume=True,
    )
    barrier_timeout: float = _field(
        300.0,
        "seconds a process waits for the others (joining, each epoch's end) before all stop",
        check=_number_in(0, low_open=True),
        resume=True,
    )
    find_lr: bool = _field(False, "run the LR range test instead of training", resume=True)
    find_lr_steps: int = _field(100, "range-test steps", check=_int_at_least(5), resume=True)
    find_lr_min: float = _field(
        1e-7, "range start", check=_number_in(0, low_open=True), resume=True
    )
    find_lr_max: float = _field(10.0, "range end", check=_number_in(0, low_open=True), resume=True)
    progress: bool = _field(
        True,
        "no live progress line on a terminal (one line per epoch is printed anyway)",
        resume=True,
    )
    synthetic_shape: tuple[int, int, int] = _field(
        (32, 32, 3), "H,W,C of synthetic", check=_positive_ints(3)
    )
    synthetic_size: tuple[int, int] = _field(
        (50000, 10000), "TRAIN,TEST sizes of synthetic", check=_positive_ints(2)
    )

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            check = field.metadata["check"]
            error = check(getattr(self, field.name)) if check is not None else None
            if error is not None:
                raise ValueError(f"{flag_name(field.name)}: {error}")
        if self.resume and self.workdir is None:
            raise ValueError("--resume: needs --workdir (the directory of the run)")
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite exclude each other")
        if (
            self.process_id is not None
            and self.num_processes is not None
            and self.process_id >= self.num_processes
        ):
            raise ValueError(
                f"--process-id: must be below --num-processes ({self.num_processes}), "
                f"got {self.process_id}"
            )
        if self.find_lr_min >= self.find_lr_max:
            raise ValueError("--find-lr-min: must be below --find-lr-max")

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The JSON form (``config.json``): one key per field, tuples as lists."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_json(cls, saved: Mapping[str, Any]) -> Config:
        """The config of a ``config.json`` (unknown keys, such as ``derived``, ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in names}
        return cls(**values)


def fields() -> Iterator[dataclasses.Field]:
    """The fields of :class:`Config` in flag order."""
    yield from dataclasses.fields(Config)


def flag_name(name: str) -> str:
    """``batch_size`` -> ``--batch-size``.

    Example:
      >>> flag_name("train_subset")
      '--train-subset'
    """
    return "--" + name.replace("_", "-")


def merge_for_resume(saved: Config, given: Mapping[str, Any]) -> Config:
    """The config of a resumed run: the saved one, with the flags ``given`` explicitly.

    Flags that do not change the numbers (``resume=True`` in their metadata, such as
    ``--epochs`` or ``--data-dir``) may differ; any other explicit flag must equal the
    saved value. ``epochs`` never goes below the saved target unless given explicitly.

    Raises:
      ValueError: naming the first flag that differs from the run being resumed.

    Example:
      >>> saved = Config(epochs=4, batch_size=64, workdir="w")
      >>> merge_for_resume(saved, {"resume": True, "workdir": "w"}).epochs
      4
      >>> merge_for_resume(saved, {"batch_size": 32})
      Traceback (most recent call last):
      ...
      ValueError: --batch-size 32 differs from the run being resumed (64); ...
    """
    changes = {}
    for field in dataclasses.fields(Config):
        if field.name not in given:
            continue
        value, old = given[field.name], getattr(saved, field.name)
        if field.metadata["resume"]:
            changes[field.name] = value
        elif value != old:
            raise ValueError(
                f"{flag_name(field.name)} {value} differs from the run being resumed ({old}); "
                "start a new run in another --workdir to change it"
            )
    return saved.replace(**changes)
