"""Character-level text as an image-classification data set: next character from context.

The text is the license collection every Debian system ships in
``/usr/share/common-licenses`` (base-files; about 300 kB of English legal prose), so the
data set is reachable offline. Each example is the one-hot encoding of ``context``
characters, stored as a uint8 "image" ``[context, vocab, 1]`` (0 or 255) so that the
image pipeline (device-resident uint8, per-channel normalization) carries it unchanged;
its label is the class of the next character.

Characters are lower-cased and mapped to :data:`VOCAB` = 30 classes: the 26 letters,
white space (runs collapsed to one space), ``.``, ``,``, and one class shared by every
digit and every other symbol. Whole files
are held out for the test set (``Apache-2.0``, ``MPL-2.0``), so the test text is not a
shifted copy of the training text; symlinked duplicates (``GPL`` -> ``GPL-3``) count once.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

__all__ = [
    "LICENSES_DIR",
    "TEST_FILES",
    "VOCAB",
    "encode",
    "load_dataset",
    "load_license_chars",
]

LICENSES_DIR = Path("/usr/share/common-licenses")
TEST_FILES = ("Apache-2.0", "MPL-2.0")
VOCAB = 30  # a-z, space, '.', ',', and digits with every other symbol
_SPACE, _DOT, _COMMA, _OTHER = 26, 27, 28, 29


def encode(text: str) -> np.ndarray:
    """Class indices (uint8) of the characters of ``text`` after lower-casing.

    Example (a digit and ``!`` share the last class):
      >>> encode("Ab, 1.\\n\\n z!").tolist()
      [0, 1, 28, 26, 29, 27, 26, 25, 29]
    """
    text = re.sub(r"\s+", " ", text.lower())
    out = np.full(len(text), _OTHER, np.uint8)
    chars = np.frombuffer(text.encode("ascii", "replace"), np.uint8)
    letters = (chars >= ord("a")) & (chars <= ord("z"))
    out[letters] = chars[letters] - ord("a")
    out[chars == ord(" ")] = _SPACE
    out[chars == ord(".")] = _DOT
    out[chars == ord(",")] = _COMMA
    return out  # digits and other symbols keep _OTHER


def _windows(codes: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(codes) - context
    idx = np.arange(n)[:, None] + np.arange(context)[None, :]
    images = np.zeros((n, context, VOCAB, 1), np.uint8)
    np.put_along_axis(images[..., 0], codes[idx][..., None].astype(np.int64), 255, axis=2)
    return images, codes[context:].astype(np.int32)


def load_license_chars(
    directory: str | Path = LICENSES_DIR, context: int = 12
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_images, train_labels, test_images, test_labels)`` of the license text.

    Args:
      directory: the license directory (Debian: ``/usr/share/common-licenses``).
      context: characters of context per example (the image height).

    Returns:
      uint8 ``[N, context, VOCAB, 1]`` one-hot images and int32 labels in
      ``[0, VOCAB)``, for the training files and for :data:`TEST_FILES`.

    Raises:
      FileNotFoundError: when the directory holds no license text.
    """
    directory = Path(directory)
    files = sorted(p for p in directory.glob("*") if p.is_file() and not p.is_symlink())
    if not files:
        raise FileNotFoundError(f"no license text in {directory}")
    train = [p for p in files if p.name not in TEST_FILES]
    test = [p for p in files if p.name in TEST_FILES] or train[-1:]

    def read(paths: list[Path]) -> np.ndarray:
        return encode(" ".join(p.read_text(errors="replace") for p in paths))

    return (*_windows(read(train), context), *_windows(read(test), context))


def load_dataset(
    data_dir: str | Path | None = None, *, train_subset: int | None = None, seed: int = 0
):
    """The license text as a :class:`train.data.Dataset` (``name="license_chars"``).

    ``train_subset`` keeps a seeded uniform random subset of the training windows (not
    :func:`train.data.select_subset`'s class balance: balancing next characters would
    distort the task).
    """
    from train import data as data_lib

    x, y, xt, yt = load_license_chars(LICENSES_DIR if data_dir is None else data_dir)
    if train_subset is not None and train_subset < len(y):
        keep = np.sort(np.random.default_rng(seed).choice(len(y), train_subset, False))
        x, y = x[keep], y[keep]
    mean, std = data_lib.channel_stats(x)
    return data_lib.Dataset(
        x, y, xt, yt, VOCAB, "license_chars", mean, std, str(data_dir or LICENSES_DIR)
    )
