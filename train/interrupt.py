"""Ctrl-C and SIGTERM during training: finish the running epoch, save it, then stop.

An epoch is one jitted call that Python cannot interrupt anyway; an exception arriving
afterwards could land inside a checkpoint save. So the first SIGINT or SIGTERM (what
schedulers and ``docker stop`` send) only asks the training loop to stop at the end of
the running epoch, which is then checkpointed as usual. A second signal makes the next
:meth:`StopAfterEpoch.check` raise :class:`Abort`: the loop checks while it polls the
running epoch, so this takes a fraction of a second. The handler itself never raises (an
exception raised from a signal handler can land in any Python code, a garbage-collection
callback for one, where it is swallowed). Inside :meth:`StopAfterEpoch.deferred` (a
checkpoint being written) the abort waits for the block to end.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import TextIO

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Abort(BaseException):
    """The second signal: stop now, keeping the last complete checkpoint."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_status(signum: int) -> int:
    """The shell's exit status for a run ended by ``signum``: 128 + the signal number.

    Example:
      >>> exit_status(signal.SIGINT), exit_status(signal.SIGTERM)
      (130, 143)
    """
    return 128 + int(signum)


class StopAfterEpoch:
    """A context manager whose ``requested`` turns true at the first SIGINT or SIGTERM.

    Outside the main thread (where signal handlers cannot be installed) it does nothing.

    Args:
      message: printed on ``stream`` at the first signal; ``{signal}`` is replaced by the
        signal's name.
      stream: where the message goes (default ``sys.stderr``).

    Example:
      >>> import io
      >>> out = io.StringIO()
      >>> stop = StopAfterEpoch("{signal}: stopping after this epoch", out)
      >>> stop._handle(signal.SIGTERM, None)  # what the first SIGTERM calls
      >>> stop.requested, stop.signum == signal.SIGTERM, out.getvalue()
      (True, True, 'SIGTERM: stopping after this epoch\\n')
    """

    def __init__(self, message: str, stream: TextIO | None = None):
        self.requested = False
        self.signum: int | None = None
        self._deferring = False
        self._abort_pending: int | None = None
        self._message = message
        self._stream = stream
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.requested:
            self.requested = True
            self.signum = signum
            name = signal.Signals(signum).name
            print(self._message.format(signal=name), file=self._stream or sys.stderr, flush=True)
        else:
            self._abort_pending = signum

    def check(self) -> None:
        """Raises :class:`Abort` if a second signal came (outside :meth:`deferred`)."""
        if self._abort_pending is not None and not self._deferring:
            raise Abort(self._abort_pending)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A block that an abort (the second signal) does not cut; it aborts right after."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        self.check()

    def __enter__(self) -> StopAfterEpoch:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        self._previous = {}
