"""Orbax checkpoints of the training state, one per epoch, that survive faults.

A checkpoint ``<workdir>/checkpoints/<epoch>/`` holds two orbax items: ``state`` (the
arrays of :class:`train.loop.TrainState`: step, params, batch_stats, opt_state) and
``meta`` (JSON: the epoch, the accumulated wall time and the metrics history). Orbax
writes each checkpoint into ``<epoch>.orbax-checkpoint-tmp*`` and renames it when
complete, so only integer-named folders count as checkpoints; a kill or a full disk
leaves a temporary folder that :meth:`Checkpointer.cleanup_temporary` removes.

Saving is synchronous: when :meth:`Checkpointer.save` returns, the checkpoint is on disk
(the caller may then log the epoch as done). Whether the saved arrays were finite is
recorded in the checkpoint's orbax step metadata (``custom_metadata={"finite": ...}``), so
that rotation never deletes the newest finite checkpoint, across restarts too.

Every failure is a :class:`CheckpointError` with a one-line message; the log lines and
tracebacks that orbax and tensorstore print about it are dropped by
:func:`train.platform.log_noise.install`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import threading
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

DEFAULT_MAX_TO_KEEP = 3
TEMPORARY_MARK = ".orbax-checkpoint-tmp"  # orbax names a save in progress <name><mark>[-...]
_STEP_METADATA = "_CHECKPOINT_METADATA"  # orbax's per-checkpoint metadata file


Restored = tuple[int, Any, dict[str, Any], list[tuple[int, str]]]  # epoch, arrays, meta, skipped


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read, or that does not fit the run."""


class Checkpointer:
    """Saves and restores the training state under ``directory``.

    Args:
      directory: the checkpoint directory (``<workdir>/checkpoints``); created on save.
      max_to_keep: how many of the newest checkpoints to keep; the newest checkpoint
        saved with ``finite=True`` is kept as well.

    Example:
      >>> import tempfile, jax.numpy as jnp
      >>> ckpt = Checkpointer(tempfile.mkdtemp() + "/checkpoints")
      >>> ckpt.save(1, {"w": jnp.ones(2)}, {"epoch": 1})
      >>> epoch, arrays, meta, skipped = ckpt.restore_latest({"w": jnp.zeros(2)})
      >>> epoch, arrays["w"].tolist(), meta, skipped
      (1, [1.0, 1.0], {'epoch': 1}, [])
    """

    def __init__(self, directory: str | os.PathLike[str], max_to_keep: int = DEFAULT_MAX_TO_KEEP):
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
        self.directory = os.path.abspath(os.fspath(directory))
        self._max_to_keep = max_to_keep
        self._finite: dict[int, bool] = {}  # epoch -> saved with finite=True (read lazily)
        self._checkpointer: ocp.Checkpointer | None = None

    @property
    def _orbax(self) -> ocp.Checkpointer:
        if self._checkpointer is None:
            self._checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
        return self._checkpointer

    # Listing.

    def epochs(self) -> list[int]:
        """The epochs of the complete checkpoints (integer-named folders), ascending."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        except OSError as error:
            raise CheckpointError(f"cannot list checkpoints in {self.directory}: {error}") from None
        return sorted(
            int(name)
            for name in names
            if name.isdigit() and os.path.isdir(os.path.join(self.directory, name))
        )

    def has_checkpoints(self) -> bool:
        """Whether at least one complete checkpoint exists (temporary folders do not count)."""
        return bool(self.epochs())

    def latest_epoch(self) -> int | None:
        """The epoch of the newest complete checkpoint (not necessarily restorable)."""
        epochs = self.epochs()
        return epochs[-1] if epochs else None

    def exists(self) -> bool:
        """Whether the directory holds anything (even a broken or temporary checkpoint)."""
        return os.path.isdir(self.directory) and bool(os.listdir(self.directory))

    def cleanup_temporary(self) -> list[str]:
        """Deletes the temporary folders of interrupted saves; returns their paths."""
        if not _is_primary():
            return []
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return []
        except OSError as error:
            raise CheckpointError(f"cannot list checkpoints in {self.directory}: {error}") from None
        removed = []
        for name in names:
            if TEMPORARY_MARK in name:
                path = os.path.join(self.directory, name)
                try:
                    _remove(path)
                except OSError as error:
                    raise CheckpointError(
                        f"cannot delete the temporary checkpoint folder {path}: {error}"
                    ) from None
                removed.append(path)
        return removed

    # Saving.

    def save(self, epoch: int, arrays: Any, meta: dict[str, Any], *, finite: bool = True) -> None:
        """Saves ``arrays`` (a pytree) and ``meta`` (JSON-able) as checkpoint ``epoch``.

        Returns once the checkpoint is committed on disk. Checkpoints of ``epoch`` or later
        (from an abandoned continuation of the run) are replaced. Then the oldest
        checkpoints beyond ``max_to_keep`` are deleted, except the newest one saved with
        ``finite=True``.

        Args:
          epoch: the checkpoint's number (the epoch it ends).
          arrays: a pytree of arrays.
          meta: JSON-able metadata, returned as is by the restore methods.
          finite: whether ``arrays`` are finite (a diverged run saves ``False``).

        Raises:
          CheckpointError: if the checkpoint cannot be written (a full disk, permissions,
            an I/O or orbax error); no temporary folder is left and older checkpoints are
            intact.
        """
        path = os.path.join(self.directory, str(epoch))
        try:
            if _is_primary():
                os.makedirs(self.directory, exist_ok=True)
                for old in self.epochs():
                    if old >= epoch:
                        _remove(os.path.join(self.directory, str(old)))
                        self._finite.pop(old, None)
                self._remove_temporary(epoch)
            self._orbax.save(
                path,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)
                ),
                custom_metadata={"finite": bool(finite)},
            )
        except Exception as error:  # orbax and tensorstore raise many types
            self._abandon(epoch)
            raise CheckpointError(self._save_failure(epoch, arrays, meta, error)) from None
        self._finite[epoch] = bool(finite)
        if _is_primary():
            self._rotate()

    def _rotate(self) -> None:
        epochs = self.epochs()
        keep = set(epochs[-self._max_to_keep :])
        finite = [epoch for epoch in epochs if self._is_finite(epoch)]
        if finite:
            keep.add(finite[-1])
        for epoch in epochs:
            if epoch not in keep:
                path = os.path.join(self.directory, str(epoch))
                try:
                    _remove(path)
                except OSError as error:
                    raise CheckpointError(
                        f"cannot delete the old checkpoint {path}: {error}"
                    ) from None
                self._finite.pop(epoch, None)

    def _is_finite(self, epoch: int) -> bool:
        """Whether checkpoint ``epoch`` was saved with ``finite=True``.

        Checkpoints written before this flag existed count as finite; an unreadable flag
        (a damaged checkpoint) as not finite, so that it is not kept for its sake.
        """
        if epoch not in self._finite:
            path = os.path.join(self.directory, str(epoch), _STEP_METADATA)
            try:
                with open(path) as f:
                    custom = json.load(f).get("custom_metadata") or {}
                self._finite[epoch] = bool(custom.get("finite", True))
            except (OSError, ValueError, AttributeError):
                self._finite[epoch] = False
        return self._finite[epoch]

    def _remove_temporary(self, epoch: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.directory):
                if name.startswith(f"{epoch}{TEMPORARY_MARK}"):
                    with contextlib.suppress(OSError):
                        _remove(os.path.join(self.directory, name))

    def _abandon(self, epoch: int) -> None:
        """After a failed save: drops orbax's state, removes the save's temporary folder.

        orbax's save may raise while some of its writer threads still run (a full disk:
        one write fails, the array metadata's is still going), and a writer may start
        another. They are waited for here (at most :data:`_WRITER_WAIT_S`), so that none
        writes into the temporary folder after it is removed, and none is still running
        when the process exits.
        """
        deadline = time.monotonic() + _WRITER_WAIT_S
        if self._checkpointer is not None:
            with contextlib.suppress(Exception):
                self._checkpointer.close()
            self._checkpointer = None
        while True:  # until no writer is left, or the wait is over
            writers = _orbax_threads()
            if not writers or time.monotonic() >= deadline:
                break
            _join(writers, deadline - time.monotonic())
        if _is_primary():
            self._remove_temporary(epoch)

    def _save_failure(self, epoch: int, arrays: Any, meta: Any, error: BaseException) -> str:
        where = f"cannot save checkpoint {epoch} in {self.directory}"
        if _is_enospc(error):
            needed = sum(int(getattr(x, "nbytes", 0)) for x in jax.tree.leaves(arrays))
            with contextlib.suppress(TypeError, ValueError):
                needed += len(json.dumps(meta))
            try:
                free = _format_bytes(shutil.disk_usage(_existing_parent(self.directory)).free)
            except OSError:
                free = "an unknown amount"
            return (
                f"{where}: no space left on device (needs about {_format_bytes(needed)}, "
                f"{free} free)"
            )
        return f"{where}: {_one_line(error)}"

    # Restoring.

    def restore(self, target: Any, epoch: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restores checkpoint ``epoch`` (default: the newest) into the structure of ``target``.

        Args:
          target: a pytree of arrays with the shapes, dtypes and shardings to restore into
            (e.g. the arrays of a freshly created state).
          epoch: which checkpoint; ``None`` for the newest.

        Returns:
          ``(arrays, meta)``.

        Raises:
          CheckpointError: if there is no such checkpoint, or it cannot be read, or its
            arrays do not match ``target`` (another model, data set or optimizer).
        """
        if epoch is None:
            epoch = self.latest_epoch()
            if epoch is None:
                raise CheckpointError(f"no complete checkpoint in {self.directory}")
        path = os.path.join(self.directory, str(epoch))
        try:
            return self._restore(target, path)
        except _Unreadable as reason:
            raise CheckpointError(f"cannot restore checkpoint {path}: {reason}") from None

    def restore_latest(self, target: Any) -> Restored | None:
        """Restores the newest checkpoint that reads back and matches ``target``.

        Args:
          target: as for :meth:`restore`.

        Returns:
          ``(epoch, arrays, meta, skipped)``, where ``skipped`` lists ``(epoch, reason)``
          for each newer checkpoint that could not be restored; ``None`` if there is no
          complete checkpoint.

        Raises:
          CheckpointError: if checkpoints exist but none restores.
        """
        skipped: list[tuple[int, str]] = []
        for epoch in reversed(self.epochs()):
            try:
                arrays, meta = self._restore(target, os.path.join(self.directory, str(epoch)))
            except _Unreadable as reason:
                skipped.append((epoch, str(reason)))
                continue
            return epoch, arrays, meta, skipped
        if not skipped:
            return None
        reasons = "; ".join(f"{epoch}: {reason}" for epoch, reason in skipped)
        raise CheckpointError(f"no checkpoint in {self.directory} can be restored ({reasons})")

    def _restore(self, target: Any, path: str) -> tuple[Any, dict[str, Any]]:
        """Reads one checkpoint; raises :class:`_Unreadable` with a one-line reason."""
        if not os.path.isdir(path):
            raise _Unreadable("no such checkpoint")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        try:
            # The arrays' own metadata first: without it orbax would restore a subset of the
            # stored tree, and it casts dtypes silently.
            stored = _stored_arrays(path)
            _check_same_arrays(stored, abstract)
            restored = self._orbax.restore(
                path,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
        except _Unreadable:
            raise
        except Exception as error:  # orbax and tensorstore raise many types
            raise _Unreadable(_describe_read_error(error, path)) from None
        if not isinstance(restored.meta, dict):
            raise _Unreadable("its meta item is missing")
        return restored.state, restored.meta

    # Compatibility and shutdown.

    def wait(self) -> None:
        """Nothing to wait for: :meth:`save` is synchronous (kept for older callers)."""

    def close(self) -> None:
        """Releases orbax's resources (a later call reopens them)."""
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None


class _Unreadable(Exception):
    """Why one checkpoint cannot be restored (one line)."""


def _stored_arrays(path: str) -> Any:
    """The tree of shapes and dtypes in the checkpoint's ``state/_METADATA``."""
    try:
        stored = ocp.StandardCheckpointHandler().metadata(epath.Path(path) / "state")
    except FileNotFoundError as error:
        if "_METADATA" in str(error):
            raise _Unreadable("its state/_METADATA file is missing") from None
        raise
    except json.JSONDecodeError as error:
        raise _Unreadable(f"its state/_METADATA file is not valid JSON ({error.msg})") from None
    return getattr(stored, "tree", stored)


def _check_same_arrays(stored: Any, abstract: Any) -> None:
    want, got = _shapes(abstract), _shapes(stored)
    if got == want:
        return
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    if missing or extra:
        names = ", ".join("/".join(map(str, k)) for k in (missing or extra)[:3])
        what = "lacks" if missing else "has extra arrays"
        raise _Unreadable(
            f"its arrays do not match this run's model/optimizer (the checkpoint {what} {names})"
        )
    key = next(k for k in want if got[k] != want[k])
    (gs, gd), (ws, wd) = got[key], want[key]
    raise _Unreadable(
        f"its arrays do not match this run's model/optimizer ({'/'.join(map(str, key))} is "
        f"{gd.name}{list(gs)}, this run has {wd.name}{list(ws)})"
    )


def _shapes(tree: Any) -> dict[tuple[str, ...], tuple[tuple[int, ...], np.dtype]]:
    return {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in ocp.tree.to_flat_dict(tree).items()}


_LOCAL_FILE = re.compile(r'.*local file "([^"]+)": (.*)$')  # greedy: the innermost clause


def _describe_read_error(error: BaseException, path: str) -> str:
    """A short reason for a failed read (tensorstore messages run to kilobytes)."""
    if isinstance(error, json.JSONDecodeError):
        return f"a metadata file is not valid JSON ({error.msg})"
    if isinstance(error, KeyError) and "meta" in str(error):
        return "its meta item is missing"
    # Tensorstore nests "Error opening/reading X: ..." clauses; the innermost names the
    # damaged file and what is wrong with it.
    damaged = _LOCAL_FILE.match(_message(error))
    if damaged and damaged.group(1).startswith(path + os.sep):
        name = os.path.relpath(damaged.group(1), path)
        return _truncate(f"its data file {name} is truncated or damaged ({damaged.group(2)})")
    return _one_line(error)


def _message(error: BaseException) -> str:
    """The error's message on one line, without tensorstore's spec and source dumps."""
    message = " ".join(str(error).split())
    return message.split(" [tensorstore_spec", 1)[0].split(" [source locations", 1)[0]


def _one_line(error: BaseException) -> str:
    message = _message(error)
    return _truncate(f"{type(error).__name__}: {message}" if message else type(error).__name__)


def _truncate(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_enospc(error: BaseException) -> bool:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "errno", None) == errno.ENOSPC:
            return True
        if "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _format_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _existing_parent(path: str) -> str:
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _remove(path: str) -> None:
    """Deletes a checkpoint folder; renamed first, so a kill never leaves half of one."""
    if not os.path.lexists(path):
        return
    name = os.path.basename(path)
    if TEMPORARY_MARK not in name:
        doomed = os.path.join(os.path.dirname(path), f"{name}{TEMPORARY_MARK}-deleting")
        _remove(doomed)  # left by a kill during an earlier deletion
        os.rename(path, doomed)
        path = doomed
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def _is_primary() -> bool:
    """Whether this process writes the shared files (all processes call orbax's save)."""
    return jax.process_index() == 0


#: How long a failed save waits for orbax's writer threads (seconds).
_WRITER_WAIT_S = 10.0


def _orbax_threads() -> list[threading.Thread]:
    """The live threads that orbax started (its background writers)."""
    return [t for t in threading.enumerate() if type(t).__module__.startswith("orbax.")]


def _join(threads: list[threading.Thread], timeout: float) -> None:
    """Waits for ``threads`` to end, at most ``timeout`` seconds in all (``Thread.join``
    itself: orbax's threads override ``join`` to raise their target's error)."""
    deadline = time.monotonic() + timeout
    for t in threads:
        threading.Thread.join(t, max(0.0, deadline - time.monotonic()))
