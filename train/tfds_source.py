"""Data sets from tensorflow-datasets through ``tfds.data_source`` (no TensorFlow needed).

``tfds.data_source`` gives random access to data prepared in the
``array_record`` format, in a TFDS data dir (``~/tensorflow_datasets`` by
default). Prepared data are read first; downloading and preparing is tried only when
TFDS's download host answers (offline, TFDS would retry for minutes), and a failure
becomes one message that the caller extends with the other sources.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["TfdsUnavailable", "load_tfds"]


#: Where TFDS downloads MNIST, Fashion-MNIST and CIFAR-10 from.
DOWNLOAD_HOST = "https://storage.googleapis.com"


def _can_download(timeout: float = 3.0) -> bool:
    """Whether the download host answers within ``timeout`` s (through the usual proxies)."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(DOWNLOAD_HOST, timeout=timeout).close()
    except urllib.error.HTTPError:
        return True  # an answer, even an error status, means the network is there
    except (OSError, ValueError):
        return False
    return True


class TfdsUnavailable(Exception):
    """TFDS is not installed or does not have the data set prepared (the reason is the message)."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(error).__name__}: {line[:160]}"


def _to_arrays(source, num_classes: int, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    examples = [source[i] for i in range(len(source))]
    if not examples:
        raise TfdsUnavailable(f"TFDS split {name}/{split} is empty")
    images = np.stack([np.asarray(ex["image"], dtype=np.uint8) for ex in examples])
    labels = np.asarray([int(ex["label"]) for ex in examples], dtype=np.int32)
    if images.ndim == 3:
        images = images[..., None]
    if labels.min() < 0 or labels.max() >= num_classes:
        raise TfdsUnavailable(f"TFDS split {name}/{split} has labels outside [0, {num_classes})")
    return images, labels


def load_tfds(
    name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True
) -> tuple[tuple[np.ndarray, ...], int]:
    """Loads the train and test splits of a TFDS image-classification data set.

    Args:
      name: a TFDS name with ``image`` and ``label`` features (``mnist``,
        ``fashion_mnist``, ``cifar10``).
      data_dir: the TFDS data dir; ``None`` for TFDS's default.
      download: let TFDS download and prepare the data (``array_record``
        format) when it is not prepared yet.

    Returns:
      ``((train_images, train_labels, test_images, test_labels), num_classes)``
      with uint8 NHWC images and int32 labels.

    Raises:
      TfdsUnavailable: TFDS is missing, or could neither find nor prepare the
        data; the message says why in one line.

    Example:
      >>> import tensorflow_datasets as tfds
      >>> with tfds.testing.mock_data(num_examples=4):
      ...     (x, y, x_test, y_test), k = load_tfds("mnist", download=False)
      >>> x.shape, x.dtype, y.dtype, k
      ((4, 28, 28, 1), dtype('uint8'), dtype('int32'), 10)
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise TfdsUnavailable(f"tensorflow-datasets is not installed ({e})") from e

    def source(download: bool):
        return tfds.data_source(
            name,
            split=["train", "test"],
            data_dir=None if data_dir is None else os.fspath(data_dir),
            download=download,
            builder_kwargs={"file_format": "array_record"},
        )

    try:
        try:  # prepared data: no network needed
            train, test = source(download=False)
        except Exception:
            if not download:
                raise
            if not _can_download():  # offline, TFDS would retry for minutes
                raise TfdsUnavailable(
                    f"not prepared in the TFDS data dir, and {DOWNLOAD_HOST} is unreachable"
                ) from None
            train, test = source(download=True)
        num_classes = int(train.dataset_info.features["label"].num_classes)
    except TfdsUnavailable:
        raise
    except Exception as e:  # TFDS raises many types for "not there", offline or unprepared
        raise TfdsUnavailable(_first_line(e)) from e
    arrays = (
        *_to_arrays(train, num_classes, name, "train"),
        *_to_arrays(test, num_classes, name, "test"),
    )
    return arrays, num_classes
