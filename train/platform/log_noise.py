"""Keeps third-party log noise off stderr: orbax, tensorstore and TFDS reports of failures
that the training CLI already gives as one line.

:func:`install` (called by :func:`train.cli.main`) adds, once per process:

* a filter on the ``absl`` logger that drops the records logged from orbax's modules (a
  failed save's writer threads log the error with a traceback, some of them after the
  save has raised) and TFDS's warnings (its "no dataset_info.json" when a data set is
  not prepared, which the data registry reports itself);
* a filter on the ``asyncio`` logger that drops "<future class> exception was never
  retrieved": the reads a failed restore of a damaged checkpoint abandoned, and the
  writes of a save that failed on a full disk, reported when the process exits;
* a ``sys.unraisablehook`` that drops ``RuntimeError('Event loop is closed')``: when one
  array of a damaged checkpoint cannot be read, orbax closes its event loop while
  tensorstore's other reads are in flight, and each of their callbacks then reports the
  closed loop as a traceback. Every other report goes on to the previous hook.

Nothing else is dropped: the app's own errors, jax's warnings and every other library's
records pass.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from typing import Any

__all__ = ["install"]

_ORBAX = f"{os.sep}orbax{os.sep}"
_TFDS = f"{os.sep}tensorflow_datasets{os.sep}"
_NEVER_RETRIEVED = re.compile(r"\w*Future exception was never retrieved")


class _ThirdPartyAbsl(logging.Filter):
    """Drops absl records logged from orbax's modules and TFDS's warnings.

    Example:
      >>> record = lambda path, level: logging.LogRecord("absl", level, path, 1, "m", None, None)
      >>> drop = _ThirdPartyAbsl()
      >>> [drop.filter(record(p, logging.WARNING)) for p in (
      ...     "/site-packages/orbax/checkpoint/_src/futures/future.py",
      ...     "/site-packages/tensorflow_datasets/core/read_only_builder.py",
      ...     "/work/train/run.py")]
      [False, False, True]
      >>> drop.filter(record("/site-packages/tensorflow_datasets/core/x.py", logging.ERROR))
      True
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _ORBAX in record.pathname:
            return False
        return not (_TFDS in record.pathname and record.levelno < logging.ERROR)


class _NeverRetrieved(logging.Filter):
    """Drops asyncio's "<future class> exception was never retrieved" reports.

    Example:
      >>> record = lambda msg: logging.LogRecord("asyncio", 40, "", 0, msg, None, None)
      >>> drop = _NeverRetrieved()
      >>> [drop.filter(record(m)) for m in ("Future exception was never retrieved",
      ...     "_GatheringFuture exception was never retrieved", "Task was destroyed")]
      [False, False, True]
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return _NEVER_RETRIEVED.match(str(record.msg)) is None


def _drops_closed_loop(previous: Any) -> Any:
    def hook(unraisable: Any) -> None:
        error = unraisable.exc_value
        if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
            return
        previous(unraisable)

    hook.drops_closed_loop_reports = True  # type: ignore[attr-defined]
    return hook


def install() -> None:
    """Installs the filters and the hook above (a second call changes nothing).

    Example:
      >>> import logging, sys
      >>> absl, aio = logging.getLogger("absl"), logging.getLogger("asyncio")
      >>> before = absl.filters[:], aio.filters[:], sys.unraisablehook
      >>> install(); install()
      >>> [type(f).__name__ for f in absl.filters].count("_ThirdPartyAbsl")
      1
      >>> absl.filters[:], aio.filters[:], sys.unraisablehook = before  # as it was
    """
    # absl first: its logger must be absl's own class, which names the caller's module in
    # each record (a plain logger made here first would name absl's).
    with contextlib.suppress(ImportError):
        import absl.logging  # noqa: F401
    for name, kind in (("absl", _ThirdPartyAbsl), ("asyncio", _NeverRetrieved)):
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())
    if not getattr(sys.unraisablehook, "drops_closed_loop_reports", False):
        sys.unraisablehook = _drops_closed_loop(sys.unraisablehook)
