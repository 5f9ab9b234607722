"""One run per workdir: an advisory lock on ``<workdir>/.lock``.

Two runs writing into one workdir would interleave their ``metrics.jsonl`` lines and
overwrite each other's ``config.json`` and checkpoints. :class:`WorkdirLock` takes
``fcntl.flock(LOCK_EX | LOCK_NB)`` on the lock file for the whole run; the kernel releases
it when the process ends, however it ends, so a killed run never leaves a stale lock. The
file holds the holder's pid and host, for the message a second run prints.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from types import TracebackType

LOCK_FILE = ".lock"


class WorkdirBusy(ValueError):
    """The workdir is locked by another run."""


class WorkdirLock:
    """Holds the workdir's lock inside a ``with`` block (creating the workdir if needed).

    A second lock on the same workdir, from another process or this one, raises
    :class:`WorkdirBusy` at once instead of waiting.

    Args:
      workdir: the run's directory.

    Example:
      >>> import tempfile
      >>> workdir = tempfile.mkdtemp()
      >>> with WorkdirLock(workdir):
      ...     try:
      ...         WorkdirLock(workdir).acquire()
      ...     except WorkdirBusy as busy:
      ...         print("busy")
      busy
      >>> with WorkdirLock(workdir):  # released at the end of the first block
      ...     pass
    """

    def __init__(self, workdir: str | os.PathLike[str]):
        self.workdir = os.path.abspath(os.fspath(workdir))
        self.path = os.path.join(self.workdir, LOCK_FILE)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Takes the lock.

        Raises:
          WorkdirBusy: if another run holds it.
          ValueError: if the workdir or its lock file cannot be created or written.
        """
        if self._fd is not None:
            raise RuntimeError(f"the lock on {self.workdir} is already held by this object")
        try:
            os.makedirs(self.workdir, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise ValueError(f"cannot lock workdir {self.workdir}: {error}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _read_holder(fd)
            os.close(fd)
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise ValueError(f"cannot lock workdir {self.workdir}: {error}") from None
            raise WorkdirBusy(
                f"workdir {self.workdir} is in use by another run ({holder}); wait for it or "
                "choose another --workdir"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        except OSError as error:
            os.close(fd)  # also releases the lock
            raise ValueError(f"cannot lock workdir {self.workdir}: {error}") from None
        self._fd = fd

    def release(self) -> None:
        """Releases the lock (the file stays, empty: deleting it would race a new holder)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """``pid N`` (with ``on host H`` when another host holds it) from the lock file."""
    try:
        fields = os.pread(fd, 256, 0).decode(errors="replace").split()
    except OSError:
        fields = []
    if not fields or not fields[0].isdigit():
        return "pid unknown"
    if len(fields) > 1 and fields[1] != socket.gethostname():
        return f"pid {fields[0]} on host {fields[1]}"
    return f"pid {fields[0]}"
