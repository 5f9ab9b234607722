"""Where a run's numbers go: ``metrics.jsonl``, TensorBoard event files and ``curves.png``.

:class:`RunReport` is told each epoch's record only after that epoch's checkpoint is
committed, so the files never run ahead of what ``--resume`` can restore.

* ``metrics.jsonl``: one JSON object per epoch, non-finite numbers as ``null``; rewritten
  atomically when a resumed run cuts it back to its checkpoint.
* TensorBoard: scalars under ``train/``, ``test/`` and ``optimizer/``, written with
  ``tensorboardX`` into the workdir, so ``tensorboard --logdir runs`` shows every run.
* ``curves.png``: loss, accuracy and learning rate against the epoch, redrawn after an
  epoch once ``plot_interval_s`` seconds have passed since the last drawing, and at
  :meth:`RunReport.close` (written to a temporary file and renamed, so a viewer never sees
  half a file). A drawing costs about 0.4 s, the first one 1.5 s (importing matplotlib):
  after every one of many short epochs it would cost more than the epochs.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"


def _summary_writer() -> Any:
    """``tensorboardX.SummaryWriter``, imported without torch: its writer module imports
    torch, where installed (the benchmarks' PyTorch arm), for type hints only, which took
    seconds of every run's start."""
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # type: ignore[assignment]  # an ImportError for it
    try:
        from tensorboardX import SummaryWriter
    finally:
        if hide and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return SummaryWriter


def finite_or_none(x: Any) -> float | None:
    """``float(x)``, or ``None`` when it is not finite (JSON has no NaN).

    Example:
      >>> finite_or_none(0.5), finite_or_none(float("nan"))
      (0.5, None)
    """
    x = float(x)
    return x if math.isfinite(x) else None


def remove_outputs(workdir: str) -> None:
    """Deletes the curves and TensorBoard event files of an earlier run in ``workdir``."""
    for name in os.listdir(workdir):
        if name == CURVES_FILE or name.startswith("events.out.tfevents."):
            os.remove(os.path.join(workdir, name))


class RunReport:
    """The metrics files of one workdir.

    Args:
      workdir: the run's directory (created if needed).
      tensorboard: also write TensorBoard event files (needs ``tensorboardX``).
      plot_interval_s: the least time between two drawings of ``curves.png``; 0 draws
        after every epoch.

    Example:
      >>> import tempfile
      >>> report = RunReport(tempfile.mkdtemp(), tensorboard=False)
      >>> report.restart([])
      >>> report.add([{"epoch": 1, "train_loss": 0.5, "test_loss": 0.4,
      ...              "test_accuracy": 0.9, "train_accuracy": 0.8, "learning_rate": None}])
      >>> open(report.metrics_path).read()
      '{"epoch": 1, "train_loss": 0.5, ..., "learning_rate": null}\\n'
      >>> os.path.exists(report.curves_path)  # drawn at the latest by close()
      False
      >>> report.close()
      >>> os.path.exists(report.curves_path)
      True
    """

    def __init__(self, workdir: str, tensorboard: bool = True, plot_interval_s: float = 20.0):
        if plot_interval_s < 0:
            raise ValueError(f"plot_interval_s must be >= 0, got {plot_interval_s}")
        os.makedirs(workdir, exist_ok=True)
        self.plot_interval_s = plot_interval_s
        self._last_plot = time.monotonic()
        self._unplotted: list[dict[str, Any]] | None = None
        self.workdir = workdir
        self.metrics_path = os.path.join(workdir, METRICS_FILE)
        self.curves_path = os.path.join(workdir, CURVES_FILE)
        self._writer = None
        if tensorboard:
            self._writer = _summary_writer()(logdir=workdir)

    def restart(self, history: Sequence[dict[str, Any]]) -> None:
        """Rewrites ``metrics.jsonl`` to hold exactly ``history`` (a resumed run's epochs)."""
        tmp = self.metrics_path + ".tmp"
        with open(tmp, "w") as f:
            for record in history:
                f.write(json.dumps(record) + "\n")
        os.replace(tmp, self.metrics_path)

    def add(self, history: Sequence[dict[str, Any]], final: bool = False) -> None:
        """Appends the last record of ``history``; redraws the curves from all of it when
        ``final`` (the run stops after this epoch) or when ``plot_interval_s`` has passed
        since the last drawing (else :meth:`close` does)."""
        record = history[-1]
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in record.items():
                if key in ("epoch", "step") or value is None or isinstance(value, str):
                    continue
                group = key.split("_")[0] if key.startswith(("train_", "test_")) else "run"
                if key == "learning_rate":
                    group = "optimizer"
                self._writer.add_scalar(f"{group}/{key}", value, record["epoch"])
            self._writer.flush()
        self._unplotted = list(history)
        if final or time.monotonic() - self._last_plot >= self.plot_interval_s:
            self._plot()

    def _plot(self) -> None:
        if self._unplotted:
            plot_curves(self._unplotted, self.curves_path)
        self._unplotted = None
        self._last_plot = time.monotonic()

    def close(self) -> None:
        """Draws the curves not drawn yet and closes the TensorBoard writer.

        A drawing that fails here (a full disk) is skipped: ``close`` runs while a run
        ends, maybe on another error, and the curves only show ``metrics.jsonl``.
        """
        with contextlib.suppress(OSError):
            self._plot()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def plot_curves(history: Sequence[dict[str, Any]], path: str) -> None:
    """Draws loss, accuracy and learning rate against the epoch into the PNG ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [r["epoch"] for r in history]

    def series(key: str) -> list[float]:
        return [math.nan if r.get(key) is None else r[key] for r in history]

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for key, label in (("train_loss", "train"), ("test_loss", "test")):
        axes[0].plot(epochs, series(key), marker="o", label=label)
    axes[0].set(title="loss", xlabel="epoch")
    axes[0].legend()
    for key, label in (("train_accuracy", "train"), ("test_accuracy", "test")):
        axes[1].plot(epochs, [100 * v for v in series(key)], marker="o", label=label)
    axes[1].set(title="accuracy (%)", xlabel="epoch")
    axes[1].legend()
    axes[2].plot(epochs, series("learning_rate"), marker="o")
    axes[2].set(title="mean learning rate (eta)", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
