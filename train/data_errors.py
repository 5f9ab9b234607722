"""Errors raised by the data pipeline (re-exported by :mod:`train.data`)."""

from __future__ import annotations

__all__ = ["DataFormatError", "DatasetNotFoundError"]


class DatasetNotFoundError(FileNotFoundError, ValueError):
    """No source (``--data-dir``, Debian's files, TFDS) has the requested data set.

    A ``FileNotFoundError`` and a ``ValueError`` at once, so callers that catch
    either see it. The message is one line listing every way to get the data.
    """


class DataFormatError(ValueError):
    """A data file exists but is corrupt, truncated or not in the expected format.

    The message starts with the offending file's path.
    """
