"""Console output of the training app: a live line per epoch, one line per epoch, the summary.

An epoch is ONE jitted call with one host sync at its end, and nothing is compiled into it
for the console: the computation, and so every number, is the same in a terminal, piped
or in CI. While the epoch runs, the host polls it; on a terminal it redraws one status
line with the elapsed time and, from the previous epoch's duration, the expected
remainder. When the epoch ends its line (losses, accuracies, eta, time) is printed; where
stderr is not a terminal that line is all that is printed.

The summary reproduces the columns of the thesis's Table 2.1: the best test accuracy with
the wall time and the epoch where it was reached, and the lowest test loss likewise.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import Any


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
    """The live status line of the running epoch (terminal only), plus one line per epoch.

    Args:
      epochs: total epochs of the run.
      enabled: draw the live line on stderr; ``None`` draws it only when stderr is a
        terminal. The epoch lines are printed either way.
      write: prints one line (default: ``print`` to stdout).

    Example:
      >>> import io
      >>> out = io.StringIO()
      >>> progress = EpochProgress(2, enabled=False, write=lambda s: print(s, file=out))
      >>> progress.start_epoch(1)
      >>> progress.tick(3.0)  # nothing drawn when disabled
      >>> progress.write("hello")
      >>> out.getvalue()
      'hello\\n'
    """

    def __init__(
        self,
        epochs: int,
        enabled: bool | None = None,
        write: Callable[[str], None] | None = None,
    ):
        self._epochs = epochs
        self._epoch = 0
        self._write = write or (lambda line: print(line, flush=True))
        self._enabled = sys.stderr.isatty() if enabled is None else bool(enabled)
        self._last_epoch_time: float | None = None
        self._drawn = False

    @property
    def enabled(self) -> bool:
        """Whether the live line is drawn."""
        return self._enabled

    def start_epoch(self, epoch: int) -> None:
        """The live line now follows ``epoch``."""
        self._epoch = epoch

    def tick(self, elapsed: float) -> None:
        """Redraws the live line: ``elapsed`` seconds into the running epoch."""
        if not self._enabled:
            return
        line = f"epoch {self._epoch}/{self._epochs}: {elapsed:.0f}s"
        if self._last_epoch_time:
            fraction = min(elapsed / self._last_epoch_time, 0.99)
            line += f" of ~{self._last_epoch_time:.0f}s ({100 * fraction:.0f}%)"
        sys.stderr.write("\r\033[K" + line)
        sys.stderr.flush()
        self._drawn = True

    def write(self, line: str) -> None:
        """Prints a line (clearing the live line first)."""
        self.close()
        self._write(line)

    def update(self, record: dict[str, Any]) -> None:
        """Prints the epoch's line; its duration sets the next epoch's expectation."""
        self._last_epoch_time = record["epoch_time"]
        self.write(format_epoch(record, self._epochs))

    def close(self) -> None:
        """Clears the live line."""
        if self._drawn:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self._drawn = False
