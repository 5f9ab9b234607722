"""Console output of the training CLI: a bar per epoch, one line per epoch, the summary.

An epoch is ONE jitted call with one host sync at its end, so the bar cannot poll the
device. Instead the device loop reports the number of finished batches about 50 times an
epoch through a one-way ``jax.debug.callback`` (see :func:`train.loop.train_epoch`'s
``on_progress``): the device never waits for the host, and without a bar (not a terminal,
or ``--no-progress``) no callback is compiled in at all. When the epoch's call returns, its
line (losses, accuracies, eta, time) is printed above the bar.

The summary reproduces the columns of the thesis's Table 2.1: the best test accuracy with
the wall time and the epoch where it was reached, and the lowest test loss likewise.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from tqdm.auto import tqdm


def format_epoch(record: dict[str, Any], epochs: int) -> str:
    """One console line for an epoch's record (see :mod:`train.cli` for the fields).

    Example:
      >>> print(format_epoch({"epoch": 3, "train_loss": 0.41, "train_accuracy": 0.85,
      ...                     "test_loss": 0.38, "test_accuracy": 0.8652,
      ...                     "learning_rate": 0.05, "epoch_time": 2.5, "wall_time": 7.5}, 10))
      epoch  3/10  train loss 0.4100 acc 85.00%  test loss 0.3800 acc 86.52%  eta 5.000e-02 ...
    """
    width = len(str(epochs))
    return (
        f"epoch {record['epoch']:>{width}}/{epochs}  "
        f"train loss {_num(record['train_loss'], '.4f')} "
        f"acc {_pct(record['train_accuracy'])}  "
        f"test loss {_num(record['test_loss'], '.4f')} "
        f"acc {_pct(record['test_accuracy'])}  "
        f"eta {_num(record['learning_rate'], '.3e')}  "
        f"{record['epoch_time']:.1f}s (total {record['wall_time']:.1f}s)"
    )


def _num(x: float | None, spec: str) -> str:
    return "nan" if x is None or not math.isfinite(x) else format(x, spec)


def _pct(x: float | None) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{100 * x:.2f}%"


def summary(history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Best test accuracy and lowest test loss, each with its wall time and epoch.

    Non-finite losses (a diverged run) are ignored; ``None`` fields when no epoch has one.

    Example:
      >>> h = [{"epoch": 1, "wall_time": 2.0, "test_accuracy": 0.8, "test_loss": 0.5},
      ...      {"epoch": 2, "wall_time": 4.0, "test_accuracy": 0.9, "test_loss": 0.6}]
      >>> summary(h)["best_accuracy"], summary(h)["lowest_loss_epoch"]
      (0.9, 1)
    """
    out: dict[str, Any] = {}
    for key, name, better in (
        ("test_accuracy", "best_accuracy", max),
        ("test_loss", "lowest_loss", min),
    ):
        finite = [r for r in history if r.get(key) is not None and math.isfinite(r[key])]
        best = better(finite, key=lambda r, k=key: r[k]) if finite else None
        out[name] = None if best is None else best[key]
        out[f"{name}_time"] = None if best is None else best["wall_time"]
        out[f"{name}_epoch"] = None if best is None else best["epoch"]
    return out


def format_summary(history: Sequence[dict[str, Any]], configuration: str, persistency: int) -> str:
    """The thesis's Table 2.1 row for this run, with its header.

    Example:
      >>> h = [{"epoch": 1, "wall_time": 2.0, "test_accuracy": 0.8, "test_loss": 0.5}]
      >>> print(format_summary(h, "lenet5_128", 1))
                           accuracy                      loss
      configuration  K  max-value  time(s)  epoch  min-value  time(s)  epoch
      lenet5_128     1     0.8000      2.0      1    0.50000      2.0      1
    """
    s = summary(history)
    name_width = max(len("configuration"), len(configuration))

    def cell(value: Any, spec: str, width: int) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"

    header = (
        f"{'':{name_width}}  {'':>1}  {'accuracy':>{9 + 2 + 7 + 2 + 5}}  "
        f"{'loss':>{9 + 2 + 7 + 2 + 5}}"
    ).rstrip()
    columns = (
        f"{'configuration':<{name_width}}  K  max-value  time(s)  epoch  min-value  time(s)  epoch"
    )
    row = (
        f"{configuration:<{name_width}}  {persistency}  "
        f"{cell(s['best_accuracy'], '.4f', 9)}  {cell(s['best_accuracy_time'], '.1f', 7)}  "
        f"{cell(s['best_accuracy_epoch'], 'd', 5)}  "
        f"{cell(s['lowest_loss'], '.5f', 9)}  {cell(s['lowest_loss_time'], '.1f', 7)}  "
        f"{cell(s['lowest_loss_epoch'], 'd', 5)}"
    )
    return "\n".join([header, columns, row])


class EpochProgress:
    """A tqdm bar over the batches of each epoch, plus one printed line per epoch.

    Args:
      epochs: total epochs of the run.
      initial: epochs already done (when resuming).
      enabled: show the bar (lines are printed either way); ``None`` shows it only on a
        terminal.
      stream: where the lines go (default ``sys.stdout``; the bar writes to ``sys.stderr``).

    Example:
      >>> import io
      >>> out = io.StringIO()
      >>> with EpochProgress(2, enabled=False, stream=out) as progress:
      ...     progress.start_epoch(1, num_batches=10)
      ...     progress.on_progress is None  # no bar: nothing to report to
      ...     progress.write("hello")
      True
      >>> out.getvalue()
      'hello\\n'
    """

    def __init__(
        self,
        epochs: int,
        initial: int = 0,
        enabled: bool | None = None,
        stream: TextIO | None = None,
    ):
        self._epochs = epochs
        self._epoch = initial
        self._stream = stream
        if enabled is None:
            enabled = sys.stderr.isatty()
        self._enabled = bool(enabled)
        self._bar: tqdm | None = None
        self._postfix: dict[str, str] = {}

    @property
    def on_progress(self):
        """The ``on_progress`` callback for :func:`train.loop.train_epoch` (``None`` if off)."""
        return self.batches_done if self._enabled else None

    def start_epoch(self, epoch: int, num_batches: int) -> None:
        """Opens the bar of ``epoch`` (of ``num_batches`` batches)."""
        self._close_bar()
        self._epoch = epoch
        if self._enabled:
            self._bar = tqdm(
                total=num_batches,
                desc=f"epoch {epoch}/{self._epochs}",
                unit="batch",
                leave=False,
                dynamic_ncols=True,
                file=sys.stderr,
            )
            if self._postfix:
                self._bar.set_postfix(self._postfix, refresh=False)

    def batches_done(self, done: int) -> None:
        """Moves the bar to ``done`` batches (called from the device loop's callback)."""
        bar = self._bar
        if bar is not None and done > bar.n:
            bar.update(done - bar.n)

    def write(self, line: str) -> None:
        """Prints a line above the bar."""
        stream = self._stream if self._stream is not None else sys.stdout
        if self._bar is None:
            print(line, file=stream, flush=True)
        else:
            self._bar.write(line, file=stream)

    def update(self, record: dict[str, Any], epochs: int) -> None:
        """Closes the epoch's bar and prints the epoch's line."""
        self._close_bar()
        self._postfix = {
            "last test acc": _pct(record["test_accuracy"]),
            "loss": _num(record["test_loss"], ".4f"),
        }
        self.write(format_epoch(record, epochs))

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        """Removes the bar."""
        self._close_bar()

    def __enter__(self) -> EpochProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
