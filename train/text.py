"""Byte-level language-model data: the Python standard library's own source code.

Every machine that runs this code has the text: the ``*.py`` files of the running
interpreter's standard library (``sysconfig.get_paths()["stdlib"]``). The selection is
fixed: every ``*.py`` file below that directory, sorted by relative path, except those
under a directory named ``site-packages``, ``dist-packages``, ``test``, ``tests``,
``idle_test`` or ``__pycache__``. A file goes to the validation split when the SHA-256 of
its relative path (POSIX form) starts with a byte below :data:`VALIDATION_BYTE` (about
10% of the files); whole files are held out, so validation text is never a shifted copy
of training text, and a file keeps its split across Python versions.

The corpus is the selected files' bytes concatenated in sorted order; its size and
SHA-256 (:func:`corpus_info`) tell whether two machines trained on the same bytes (the
standard library differs between Python versions). Each split's files are concatenated
in order and cut into non-overlapping windows of ``context`` bytes: the example is the
window (uint8 ``[context]``, so the loop's device-resident uint8 data path carries it)
and its labels are the next bytes (int32 ``[context]``: the same window shifted by one).

An epoch of ``python -m train --dataset python_stdlib`` is one pass over every training
window (about 81,000 of 128 bytes for Python 3.11's library); ``--train-subset N`` keeps
a seeded random choice of N windows, so an epoch is N / ``--batch-size`` steps. The
whole validation split is evaluated after every epoch.
"""

from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CONTEXT",
    "EXCLUDED_DIRS",
    "NAME",
    "VALIDATION_BYTE",
    "VOCAB",
    "corpus_files",
    "corpus_info",
    "load_dataset",
    "sequences",
    "stdlib_dir",
]

NAME = "python_stdlib"
VOCAB = 256  # bytes
CONTEXT = 128  # bytes per example by default
EXCLUDED_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
)
VALIDATION_BYTE = 26  # first byte of sha256(path) below this: validation (26/256 ~ 10%)


def stdlib_dir() -> Path:
    """The running interpreter's standard-library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def is_validation(relative_path: str) -> bool:
    """Whether a file (by its POSIX path relative to the corpus root) is held out.

    Example:
      >>> [is_validation(p) for p in ("os.py", "json/decoder.py")]
      [False, False]
    """
    return hashlib.sha256(relative_path.encode()).digest()[0] < VALIDATION_BYTE


def corpus_files(root: str | os.PathLike | None = None) -> list[Path]:
    """The corpus's files: ``*.py`` under ``root`` (default :func:`stdlib_dir`), sorted by
    relative path, none under :data:`EXCLUDED_DIRS`.

    Raises:
      FileNotFoundError: when ``root`` holds no such file.
    """
    root = stdlib_dir() if root is None else Path(root)
    files = sorted(
        (
            p
            for p in root.rglob("*.py")
            if p.is_file() and not EXCLUDED_DIRS.intersection(p.relative_to(root).parts[:-1])
        ),
        key=lambda p: _relative(p, root),
    )
    if not files:
        raise FileNotFoundError(f"no *.py files under {root}")
    return files


def _read(root: Path) -> tuple[bytes, bytes, dict[str, Any]]:
    """The training and validation byte streams and the corpus's facts."""
    files = corpus_files(root)
    digest = hashlib.sha256()
    train, validation = [], []
    for path in files:
        content = path.read_bytes()
        digest.update(content)
        (validation if is_validation(_relative(path, root)) else train).append(content)
    train_bytes, validation_bytes = b"".join(train), b"".join(validation)
    info = {
        "name": NAME,
        "root": str(root),
        "python": sys.version.split()[0],
        "files": len(files),
        "validation_files": len(validation),
        "size": len(train_bytes) + len(validation_bytes),
        "sha256": digest.hexdigest(),
        "train_bytes": len(train_bytes),
        "validation_bytes": len(validation_bytes),
    }
    return train_bytes, validation_bytes, info


def corpus_info(root: str | os.PathLike | None = None) -> dict[str, Any]:
    """The corpus's facts: ``size`` (bytes) and ``sha256`` of the concatenated files,
    file counts, the splits' sizes, the root and the Python version.

    Example:
      >>> info = corpus_info()
      >>> info["size"] == info["train_bytes"] + info["validation_bytes"], len(info["sha256"])
      (True, 64)
    """
    return _read(stdlib_dir() if root is None else Path(root))[2]


def sequences(stream: bytes, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows of ``stream`` and their next bytes.

    Returns:
      uint8 ``[N, context]`` inputs and int32 ``[N, context]`` labels, window ``i`` being
      ``stream[i * context : (i + 1) * context]`` and its labels the same shifted by one;
      ``N = (len(stream) - 1) // context``.

    Example:
      >>> x, y = sequences(b"abcdefg", 3)
      >>> x.tolist(), (y - ord("a")).tolist()
      ([[97, 98, 99], [100, 101, 102]], [[1, 2, 3], [4, 5, 6]])
    """
    if isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise ValueError(f"context must be an int >= 1, got {context!r}")
    data = np.frombuffer(stream, np.uint8)
    n = (len(data) - 1) // context
    if n < 1:
        raise ValueError(f"context {context} leaves no window in {len(data)} bytes")
    x = data[: n * context].reshape(n, context).copy()
    y = data[1 : n * context + 1].reshape(n, context).astype(np.int32)
    return x, y


def load_dataset(
    data_dir: str | os.PathLike | None = None,
    *,
    train_subset: int | None = None,
    seed: int = 0,
    context: int = CONTEXT,
):
    """The corpus as a :class:`train.data.Dataset` (``name="python_stdlib"``).

    ``train_images``/``test_images`` hold uint8 byte windows ``[N, context]`` and the
    labels their next bytes (see :func:`sequences`); ``num_classes`` is 256; ``mean`` and
    ``std`` are 0 and 1 (token inputs are not normalized). ``source`` names the corpus's
    size and SHA-256.

    Args:
      data_dir: a directory to take the ``*.py`` files from instead of the standard
        library (same selection and split rules).
      train_subset: keep this many training windows, a seeded uniform random choice;
        ``None`` keeps all.
      seed: seed of the subset choice.
      context: bytes per window.

    Raises:
      ValueError: for a bad ``train_subset`` or ``context``.
      FileNotFoundError: when the directory holds no ``*.py`` file.
    """
    from train import data as data_lib

    root = stdlib_dir() if data_dir is None else Path(data_dir).expanduser()
    train, validation, info = _read(root)
    x, y = sequences(train, context)
    xt, yt = sequences(validation, context)
    if train_subset is not None:
        if (
            isinstance(train_subset, bool)
            or not isinstance(train_subset, int)
            or not 1 <= train_subset <= len(x)
        ):
            raise ValueError(f"train_subset must be an int in [1, {len(x)}], got {train_subset!r}")
        keep = np.sort(np.random.default_rng(seed).choice(len(x), train_subset, replace=False))
        x, y = x[keep], y[keep]
    source = (
        f"{info['files']} *.py files under {root} (Python {info['python']}): "
        f"{info['size']} bytes, sha256 {info['sha256']}"
    )
    zero, one = np.zeros(1, np.float32), np.ones(1, np.float32)
    return data_lib.Dataset(x, y, xt, yt, VOCAB, NAME, zero, one, source)
