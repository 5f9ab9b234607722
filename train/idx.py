"""Reader for the IDX files of MNIST and Fashion-MNIST, gzipped or not, in NumPy.

The IDX format (LeCun et al.): two zero bytes, a type code (0x08 unsigned byte,
0x09 signed byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the
number of dimensions, one big-endian uint32 per dimension, then the data in
big-endian C order. Gzip compression is recognized by its magic bytes, not by
the file name.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from train.data_errors import DataFormatError

__all__ = ["find_idx_files", "load_idx_split", "read_idx"]

_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (optionally gzipped) into a native-endian NumPy array.

    Args:
      path: the file.

    Returns:
      The array, with the shape and element type the header declares.

    Raises:
      DataFormatError: if the file is not valid gzip, has a bad magic number,
        or holds fewer or more data bytes than its header declares.
      OSError: if the file cannot be opened.

    Example:
      >>> import tempfile, os
      >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
      >>> with open(path, "wb") as f:
      ...     _ = f.write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 0, 9]))
      >>> read_idx(path)
      array([7, 0, 9], dtype=uint8)
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataFormatError(f"{path}: corrupt or truncated gzip data ({e})") from e
    if len(raw) < 4 or raw[:2] != b"\0\0":
        raise DataFormatError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()!r})")
    code, ndim = raw[2], raw[3]
    if code not in _DTYPES:
        raise DataFormatError(f"{path}: unknown IDX element type 0x{code:02x}")
    if ndim < 1:
        raise DataFormatError(f"{path}: IDX header declares {ndim} dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        what = "truncated" if found < expected else "has trailing bytes"
        raise DataFormatError(
            f"{path}: {what}: header declares shape {shape} ({expected} data bytes), "
            f"file has {found}"
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def find_idx_files(directory: str | os.PathLike, split: str) -> tuple[Path, Path] | None:
    """The (images, labels) IDX files of one split in ``directory``, or ``None``.

    Accepts the names MNIST and Fashion-MNIST ship with, ``{split}-images-idx3-ubyte``
    and ``{split}-labels-idx1-ubyte``, with ``.idx`` instead of ``-idx`` (some
    mirrors) and with or without ``.gz``.

    Args:
      directory: where to look.
      split: ``"train"`` or ``"t10k"``.

    Returns:
      The two paths, or ``None`` if either is missing.

    Example:
      >>> find_idx_files("/nonexistent", "train") is None
      True
    """
    directory = Path(directory)

    def first(kind: str, dims: int) -> Path | None:
        for sep in ("-", "."):
            for ext in ("", ".gz"):
                path = directory / f"{split}-{kind}{sep}idx{dims}-ubyte{ext}"
                if path.is_file():
                    return path
        return None

    images, labels = first("images", 3), first("labels", 1)
    return None if images is None or labels is None else (images, labels)


def load_idx_split(
    images_path: str | os.PathLike, labels_path: str | os.PathLike, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Reads and validates one split: uint8 ``[N, H, W, 1]`` images, int32 ``[N]`` labels.

    Args:
      images_path: IDX file of ``N x H x W`` unsigned bytes.
      labels_path: IDX file of ``N`` unsigned bytes.
      num_classes: labels must lie in ``[0, num_classes)``.

    Returns:
      ``(images, labels)``.

    Raises:
      DataFormatError: naming the file whose type, shape or labels are wrong.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataFormatError(
            f"{images_path}: expected uint8 images of rank 3, got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataFormatError(
            f"{labels_path}: expected uint8 labels of rank 1, got {labels.dtype} {labels.shape}"
        )
    if len(labels) != len(images):
        raise DataFormatError(
            f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path}"
        )
    if len(labels) and labels.max() >= num_classes:
        raise DataFormatError(
            f"{labels_path}: label {int(labels.max())} outside [0, {num_classes})"
        )
    return images[..., None].copy(), labels.astype(np.int32)
