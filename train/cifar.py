"""Reader for CIFAR-10's ``cifar-10-batches-py`` pickles, without TensorFlow.

Each batch file is a pickled dict with ``data``, a uint8 ``[N, 3072]`` array
(the 1024 red, then green, then blue values of a 32x32 image, row-major), and
``labels``, a list of N ints in [0, 10). The training set is ``data_batch_1``
to ``data_batch_5``, the test set ``test_batch``. Pickles can run code, so the
unpickler here only accepts the few NumPy globals an array needs.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from train.data_errors import DataFormatError

__all__ = ["TEST_FILE", "TRAIN_FILES", "find_cifar_dir", "load_cifar10", "read_cifar_batch"]

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
_SIDE, _CHANNELS = 32, 3

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def _field(batch: dict, key: str) -> Any:
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    return None


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Reads one CIFAR-10 python batch: uint8 ``[N, 32, 32, 3]`` images, int32 labels.

    Args:
      path: a ``data_batch_*`` or ``test_batch`` file.

    Returns:
      ``(images, labels)`` in NHWC order.

    Raises:
      DataFormatError: naming ``path`` if it is not such a pickle, is truncated,
        or holds data of the wrong shape or labels outside [0, 10).

    Example:
      >>> import os, pickle, tempfile, numpy as np
      >>> path = os.path.join(tempfile.mkdtemp(), "test_batch")
      >>> batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 9]}
      >>> with open(path, "wb") as f:
      ...     pickle.dump(batch, f, protocol=2)
      >>> images, labels = read_cifar_batch(path)
      >>> images.shape, labels.tolist()
      ((2, 32, 32, 3), [3, 9])
    """
    path = Path(path)
    with open(path, "rb") as f:
        try:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
        except Exception as e:  # corrupt pickles raise many types
            raise DataFormatError(f"{path}: not a readable CIFAR-10 pickle ({e!r})") from e
    if not isinstance(batch, dict):
        raise DataFormatError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    data, labels = _field(batch, "data"), _field(batch, "labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise DataFormatError(f"{path}: missing 'data' array or 'labels'")
    size = _SIDE * _SIDE * _CHANNELS
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != size:
        raise DataFormatError(
            f"{path}: expected uint8 data [N, {size}], got {data.dtype} {data.shape}"
        )
    labels = np.asarray(labels)
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(f"{path}: expected {len(data)} integer labels, got {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= 10):
        raise DataFormatError(f"{path}: labels outside [0, 10)")
    images = data.reshape(-1, _CHANNELS, _SIDE, _SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int32)


def find_cifar_dir(directory: str | os.PathLike) -> Path | None:
    """``directory/cifar-10-batches-py`` or ``directory`` itself if it holds the batches.

    Example:
      >>> find_cifar_dir("/nonexistent") is None
      True
    """
    directory = Path(directory)
    for candidate in (directory / "cifar-10-batches-py", directory):
        if (candidate / TEST_FILE).is_file() or (candidate / TRAIN_FILES[0]).is_file():
            return candidate
    return None


def load_cifar10(directory: str | os.PathLike) -> tuple[np.ndarray, ...]:
    """Reads all six batches: ``(train_images, train_labels, test_images, test_labels)``.

    Args:
      directory: the ``cifar-10-batches-py`` folder.

    Raises:
      DataFormatError: naming a missing or bad batch file.
    """
    directory = Path(directory)
    parts = []
    for name in (*TRAIN_FILES, TEST_FILE):
        if not (directory / name).is_file():
            raise DataFormatError(f"{directory / name}: missing (incomplete cifar-10-batches-py)")
        parts.append(read_cifar_batch(directory / name))
    train_images = np.concatenate([p[0] for p in parts[:-1]])
    train_labels = np.concatenate([p[1] for p in parts[:-1]])
    return train_images, train_labels, *parts[-1]
