"""Ctrl-C during training: finish the running epoch, save it, then stop.

An epoch is one jitted call that Python cannot interrupt anyway; a ``KeyboardInterrupt``
arriving afterwards could land inside orbax's asynchronous save. So the first SIGINT only
asks the training loop to stop at the end of the running epoch (which is then checkpointed
as usual); a second SIGINT raises ``KeyboardInterrupt`` at once, for a user who will not
wait, except inside :meth:`StopAfterEpoch.deferred` (a checkpoint being handed to orbax),
where it waits for the block to end.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import TextIO


class StopAfterEpoch:
    """A context manager whose ``requested`` turns true at the first Ctrl-C.

    Outside the main thread (where signal handlers cannot be installed) it does nothing.

    Args:
      message: printed on ``stream`` at the first Ctrl-C.
      stream: where the message goes (default ``sys.stderr``).

    Example:
      >>> import io, signal
      >>> out = io.StringIO()
      >>> stop = StopAfterEpoch("stopping after this epoch", out)
      >>> stop._handle(signal.SIGINT, None)  # what the first Ctrl-C calls
      >>> stop.requested, out.getvalue()
      (True, 'stopping after this epoch\\n')
    """

    def __init__(self, message: str, stream: TextIO | None = None):
        self.requested = False
        self._deferring = False
        self._abort_pending = False
        self._message = message
        self._stream = stream
        self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.requested:
            self.requested = True
            print(self._message, file=self._stream or sys.stderr, flush=True)
        elif self._deferring:
            self._abort_pending = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A block that an abort (the second Ctrl-C) does not cut; it aborts right after."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self._abort_pending:
            raise KeyboardInterrupt

    def __enter__(self) -> StopAfterEpoch:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
