"""Orbax checkpoints of the training state, one per epoch, the last few kept.

A checkpoint ``<workdir>/checkpoints/<epoch>/`` holds two items: ``state`` (the arrays of
:class:`train.loop.TrainState`: step, params, batch_stats, opt_state) and ``meta`` (JSON:
the epoch, the accumulated wall time and the metrics history). Orbax writes each
checkpoint to a temporary directory and renames it when complete, so an interrupted save
never shadows the previous epoch. Saving is asynchronous: the device-to-host copy happens
inside :meth:`Checkpointer.save` (so donating the state to the next epoch is safe) and the
file writing overlaps the next epoch.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp

DEFAULT_MAX_TO_KEEP = 3


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the run."""


class Checkpointer:
    """Saves and restores the training state under ``directory``.

    Args:
      directory: the checkpoint directory (``<workdir>/checkpoints``); created on save.
      max_to_keep: how many of the latest checkpoints to keep.

    Example:
      >>> import tempfile, jax.numpy as jnp
      >>> ckpt = Checkpointer(tempfile.mkdtemp() + "/checkpoints")
      >>> ckpt.save(1, {"w": jnp.ones(2)}, {"epoch": 1})
      >>> ckpt.latest_epoch()
      1
      >>> arrays, meta = ckpt.restore({"w": jnp.zeros(2)})
      >>> arrays["w"].tolist(), meta["epoch"]
      ([1.0, 1.0], 1)
      >>> ckpt.close()
    """

    def __init__(self, directory: str | os.PathLike[str], max_to_keep: int = DEFAULT_MAX_TO_KEEP):
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
        self.directory = os.path.abspath(os.fspath(directory))
        self._max_to_keep = max_to_keep
        self._manager: ocp.CheckpointManager | None = None

    @property
    def manager(self) -> ocp.CheckpointManager:
        """The orbax ``CheckpointManager`` (created on first use)."""
        if self._manager is None:
            options = ocp.CheckpointManagerOptions(max_to_keep=self._max_to_keep, create=True)
            self._manager = ocp.CheckpointManager(
                self.directory, options=options, item_names=("state", "meta")
            )
        return self._manager

    def exists(self) -> bool:
        """Whether the directory exists and holds anything (even a broken checkpoint)."""
        return os.path.isdir(self.directory) and bool(os.listdir(self.directory))

    def latest_epoch(self) -> int | None:
        """The epoch of the newest complete checkpoint, or ``None``."""
        if not os.path.isdir(self.directory):
            return None
        try:
            return self.manager.latest_step()
        except Exception as error:  # orbax raises many types for a damaged directory
            raise CheckpointError(f"cannot read checkpoints in {self.directory}: {error}") from None

    def save(self, epoch: int, arrays: Any, meta: dict[str, Any]) -> None:
        """Saves ``arrays`` (a pytree) and ``meta`` (JSON-able) as checkpoint ``epoch``."""
        self.manager.save(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)
            ),
        )

    def restore(self, target: Any, epoch: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restores checkpoint ``epoch`` (default: the latest) into the structure of ``target``.

        Args:
          target: a pytree of arrays with the shapes, dtypes and shardings to restore into
            (e.g. the arrays of a freshly created state).
          epoch: which checkpoint; ``None`` for the latest.

        Returns:
          ``(arrays, meta)``.

        Raises:
          CheckpointError: if there is no checkpoint, or it cannot be read, or its arrays
            do not match ``target`` (another model, data set or optimizer).
        """
        if epoch is None:
            epoch = self.latest_epoch()
        if epoch is None:
            raise CheckpointError(f"no complete checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        _drop_closed_loop_reports()
        try:
            restored = self.manager.restore(
                epoch,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
        except Exception as error:  # orbax raises many types for damaged or foreign files
            message = " ".join(str(error).split())[:300]
            raise CheckpointError(
                f"cannot restore checkpoint {os.path.join(self.directory, str(epoch))}: "
                f"{type(error).__name__}: {message}"
            ) from None
        _check_same_shapes(abstract, restored.state, self.directory, epoch)
        if not isinstance(restored.meta, dict):
            raise CheckpointError(f"checkpoint {epoch} in {self.directory} has no metadata")
        return restored.state, restored.meta

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        if self._manager is not None:
            self._manager.wait_until_finished()

    def close(self) -> None:
        """Finishes pending saves and releases the manager."""
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None


def _drop_closed_loop_reports() -> None:
    """Keeps a failed restore's stray tracebacks off stderr (installs a filter once).

    When one array of a damaged checkpoint cannot be read, orbax's restore raises and closes
    its asyncio event loop while tensorstore's other reads are still in flight; as they
    finish, their callbacks find the loop closed and Python prints each
    ``RuntimeError('Event loop is closed')`` as a traceback through ``sys.unraisablehook``,
    after the CLI's one-line error. This filter drops exactly those reports and passes every
    other one on to the previous hook.
    """
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_loop_reports", False):
        return

    def hook(unraisable: Any) -> None:
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
            return
        previous(unraisable)

    hook.drops_closed_loop_reports = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def _check_same_shapes(expected: Any, restored: Any, directory: str, epoch: int) -> None:
    got = jax.tree.map(lambda x: (x.shape, x.dtype), restored)
    want = jax.tree.map(lambda x: (x.shape, x.dtype), expected)
    if jax.tree.structure(got) != jax.tree.structure(want) or got != want:
        raise CheckpointError(
            f"checkpoint {epoch} in {directory} does not match this run's model/optimizer "
            "(different parameter shapes or optimizer state)"
        )
