"""Data sets as uint8 NumPy arrays, from offline files, Debian's package, TFDS or random.

``load_dataset`` returns a :class:`Dataset` of uint8 NHWC images and int32
labels, ready to be put on the device once; normalization and augmentation run
later on the device (:mod:`train.augment`). The registry :data:`DATASETS` holds every
name with its number of classes and kind of files. Sources are tried in this order:

1. ``data_dir``, when given: IDX files (MNIST, Fashion-MNIST; gzipped or not,
   in ``data_dir`` or ``data_dir/<name>``) or CIFAR-10's ``cifar-10-batches-py``
   (in or as ``data_dir``); failing that, ``data_dir`` as a TFDS data dir.
2. with no ``data_dir``, the entry's ``system_dir`` where it has one: Fashion-MNIST's
   ``/usr/share/datasets/fashion-mnist``, where Debian's ``dataset-fashion-mnist``
   package installs the IDX files.
3. TFDS (``tfds.data_source``) in its default data dir, downloading if allowed.

If none has the data, :class:`DatasetNotFoundError` says, in one line, how to
get it. A file that exists but is corrupt raises :class:`DataFormatError`
naming it, rather than falling through to the next source.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from train import cifar, idx, license_chars_data, text
from train.data_errors import DataFormatError, DatasetNotFoundError
from train.tfds_source import TfdsUnavailable, load_tfds

if TYPE_CHECKING:
    from train.config import Config

__all__ = [
    "DATASETS",
    "DEBIAN_FASHION_MNIST_DIR",
    "DataFormatError",
    "Dataset",
    "DatasetNotFoundError",
    "DatasetSpec",
    "channel_stats",
    "load_dataset",
    "load_for_config",
    "select_subset",
    "synthetic_dataset",
]

DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One entry of the data-set registry :data:`DATASETS`.

    Attributes:
      about: one line for ``--help``.
      num_classes: the number of classes.
      files: what holds the data: ``"idx"`` (MNIST's IDX files), ``"cifar"`` (CIFAR-10's
        python batches), ``"random"`` (generated: :func:`synthetic_dataset`) or ``None``
        (the entry's own :attr:`load`).
      system_dir: where a system package installs the files, tried without ``--data-dir``.
      system_package: the name of that package.
      load: ``load(data_dir, train_subset=, seed=) -> Dataset`` for a data set of its own
        kind (``files=None``), instead of the image sources.
    """

    about: str
    num_classes: int = 10
    files: str | None = "idx"
    system_dir: Path | None = None
    system_package: str | None = None
    load: Callable[..., Dataset] | None = None


#: The data sets of ``--dataset``, by name: one entry each.
DATASETS: dict[str, DatasetSpec] = {
    "fashion_mnist": DatasetSpec(
        "Fashion-MNIST, 28x28x1",
        system_dir=DEBIAN_FASHION_MNIST_DIR,
        system_package="dataset-fashion-mnist",
    ),
    "mnist": DatasetSpec("MNIST, 28x28x1"),
    "cifar10": DatasetSpec("CIFAR-10, 32x32x3", files="cifar"),
    "synthetic": DatasetSpec(
        "uniform random images (--synthetic-shape, --synthetic-size), for throughput",
        files="random",
    ),
    "license_chars": DatasetSpec(
        "next character of Debian's license texts (tuning-free benchmark)",
        num_classes=license_chars_data.VOCAB,
        files=None,
        load=license_chars_data.load_dataset,
    ),
    "python_stdlib": DatasetSpec(
        "bytes of the Python standard library's source, next byte (language models)",
        num_classes=text.VOCAB,
        files=None,
        load=text.load_dataset,
    ),
}


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"name must be one of {', '.join(DATASETS)}, got {name!r}")
    return DATASETS[name]


class Dataset(NamedTuple):
    """A loaded image-classification data set (host NumPy arrays).

    Attributes:
      train_images: uint8 ``[N, H, W, C]``.
      train_labels: int32 ``[N]`` in ``[0, num_classes)``.
      test_images: uint8 ``[M, H, W, C]``.
      test_labels: int32 ``[M]``.
      num_classes: number of classes.
      name: the data set's name (a key of :data:`DATASETS`).
      mean: float32 ``[C]`` channel means of the training images on the [0, 1] scale.
      std: float32 ``[C]`` channel standard deviations of the same.
      source: where the data came from, for logs.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    name: str
    mean: np.ndarray
    std: np.ndarray
    source: str = ""


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and standard deviation of uint8 images on the [0, 1] scale.

    Computed from a 256-bin histogram per channel, so CIFAR-10's 150M values
    need no float copy.

    Args:
      images: uint8 ``[N, H, W, C]``.

    Returns:
      ``(mean, std)``, float32 ``[C]`` each (population standard deviation; a
      constant channel gets std 1 so that normalizing by it stays finite).

    Example:
      >>> import numpy as np
      >>> x = np.array([0, 255, 0, 255], np.uint8).reshape(4, 1, 1, 1)
      >>> [a.tolist() for a in channel_stats(x)]
      [[0.5], [0.5]]
    """
    if images.dtype != np.uint8 or images.ndim != 4 or images.size == 0:
        raise ValueError(
            f"images must be non-empty uint8 [N, H, W, C], got {images.dtype} {images.shape}"
        )
    values = np.arange(256, dtype=np.float64) / 255.0
    counts = np.zeros((images.shape[-1], 256), np.float64)
    block = max(1, (64 << 20) // max(1, images[0].size))  # 64 MB at a time (memory maps)
    for start in range(0, len(images), block):
        part = np.asarray(images[start : start + block])
        for c in range(images.shape[-1]):
            counts[c] += np.bincount(part[..., c].ravel(), minlength=256)
    means, stds = [], []
    for c in range(images.shape[-1]):
        p = counts[c] / counts[c].sum()
        mean = p @ values
        means.append(mean)
        std = np.sqrt(max(p @ (values - mean) ** 2, 0.0))
        stds.append(std if std > 0 else 1.0)
    return np.asarray(means, np.float32), np.asarray(stds, np.float32)


def select_subset(labels: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Indices of a seeded, class-balanced random subset of ``size`` examples.

    Classes are visited round-robin in a random order, each contributing its
    next randomly chosen example, so class counts differ by at most one while
    every class has examples left (a rare class runs out first and the others
    fill in). The indices come back sorted.

    Args:
      labels: int ``[N]``.
      size: how many to keep, ``1 <= size <= N``.
      seed: NumPy seed of the choice.

    Returns:
      int64 ``[size]`` sorted indices into ``labels``.

    Raises:
      ValueError: if ``size`` is out of range.

    Example:
      >>> import numpy as np
      >>> labels = np.array([0] * 90 + [1] * 10)
      >>> np.bincount(labels[select_subset(labels, 10, seed=0)]).tolist()
      [5, 5]
    """
    n = len(labels)
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or not 1 <= size <= n:
        raise ValueError(f"train_subset must be an int in [1, {n}], got {size!r}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    shuffled = np.asarray(labels)[perm]
    # Rank of each shuffled example within its class (0 for the first seen, ...).
    order = np.argsort(shuffled, kind="stable")
    starts = np.searchsorted(shuffled[order], shuffled[order], side="left")
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - starts
    # Break ties between classes of equal rank by a random class order.
    class_priority = rng.permutation(int(shuffled.max()) + 1)[shuffled]
    chosen = np.lexsort((class_priority, rank))[:size]
    return np.sort(perm[chosen])


def synthetic_dataset(
    shape: tuple[int, int, int] = (32, 32, 3),
    size: tuple[int, int] = (50000, 10000),
    num_classes: int = 10,
    seed: int = 0,
) -> tuple[np.ndarray, ...]:
    """Uniform random uint8 images and labels, for throughput work.

    Returns:
      ``(train_images, train_labels, test_images, test_labels)``.

    Example:
      >>> x, y, x_test, y_test = synthetic_dataset((8, 8, 1), (5, 2))
      >>> x.shape, x.dtype, y.dtype, x_test.shape
      ((5, 8, 8, 1), dtype('uint8'), dtype('int32'), (2, 8, 8, 1))
    """
    shape, size = tuple(shape), tuple(size)
    if len(shape) != 3 or not all(isinstance(d, int) and d >= 1 for d in shape):
        raise ValueError(f"synthetic_shape must be 3 ints >= 1 (H, W, C), got {shape!r}")
    if len(size) != 2 or not all(isinstance(d, int) and d >= 1 for d in size):
        raise ValueError(f"synthetic_size must be 2 ints >= 1 (train, test), got {size!r}")
    rng = np.random.default_rng(seed)
    arrays = []
    for n in size:
        arrays.append(rng.integers(0, 256, (n, *shape), dtype=np.uint8))
        arrays.append(rng.integers(0, num_classes, n, dtype=np.int32))
    return tuple(arrays)


def _load_idx_dir(directory: Path, num_classes: int) -> tuple[np.ndarray, ...] | None:
    train, test = idx.find_idx_files(directory, "train"), idx.find_idx_files(directory, "t10k")
    if train is None or test is None:
        return None
    return (*idx.load_idx_split(*train, num_classes), *idx.load_idx_split(*test, num_classes))


def _not_found(name: str, tried: list[str]) -> DatasetNotFoundError:
    spec = DATASETS[name]
    if spec.files == "cifar":
        files = (
            "cifar-10-batches-py/ (unpack https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz)"
        )
    else:
        files = (
            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            "t10k-labels-idx1-ubyte (optionally .gz)"
        )
    ways = [
        f'prepare it with TFDS where there is network access (python -c "import '
        f"tensorflow_datasets as tfds; tfds.data_source('{name}', "
        f"builder_kwargs={{'file_format': 'array_record'}})\") and pass that TFDS data dir "
        f"as --data-dir if it is not ~/tensorflow_datasets",
    ]
    if spec.system_dir is not None:
        ways.append(
            f"install Debian's package (sudo apt-get install {spec.system_package}), "
            f"which puts the IDX files in {spec.system_dir}"
        )
    ways.append(f"pass --data-dir DIR holding {files}")
    return DatasetNotFoundError(
        f"data set {name!r} not found; to get it: "
        + "; or ".join(f"({i}) {w}" for i, w in enumerate(ways, 1))
        + ". Tried: "
        + "; ".join(tried)
    )


def _load_raw(
    name: str, data_dir: str | os.PathLike | None, download: bool
) -> tuple[tuple[np.ndarray, ...], str]:
    """The four arrays of an image data set and where they came from: ``--data-dir``'s
    files, else the system package's, else TFDS (see the module docstring)."""
    spec, tried = DATASETS[name], []
    if data_dir is not None:
        found = _read_files(name, Path(data_dir).expanduser(), tried)
        if found is not None:
            return found
    elif spec.system_dir is not None:
        arrays = _load_idx_dir(spec.system_dir, spec.num_classes)
        if arrays is not None:
            return arrays, f"IDX files in {spec.system_dir}"
        tried.append(f"no IDX files in {spec.system_dir}")
    try:
        arrays, tfds_classes = load_tfds(name, data_dir, download=download)
    except TfdsUnavailable as e:
        where = "default data dir" if data_dir is None else f"data dir {data_dir}"
        tried.append(f"TFDS ({where}, download={download}): {e}")
        raise _not_found(name, tried) from None
    if tfds_classes != spec.num_classes:
        raise DataFormatError(f"TFDS {name}: {tfds_classes} classes, expected {spec.num_classes}")
    return arrays, "TFDS" if data_dir is None else f"TFDS data dir {data_dir}"


def _read_files(
    name: str, directory: Path, tried: list[str]
) -> tuple[tuple[np.ndarray, ...], str] | None:
    """The data set from its files in ``directory`` (``--data-dir``), or ``None`` with what
    was tried appended to ``tried``."""
    if not directory.is_dir():
        raise _not_found(name, [f"--data-dir {directory} is not a directory"])
    if DATASETS[name].files == "cifar":
        found = cifar.find_cifar_dir(directory)
        if found is not None:
            return cifar.load_cifar10(found), f"cifar-10-batches-py in {found}"
        tried.append(f"no cifar-10-batches-py in {directory}")
        return None
    for candidate in (directory, directory / name):
        arrays = _load_idx_dir(candidate, DATASETS[name].num_classes)
        if arrays is not None:
            return arrays, f"IDX files in {candidate}"
    tried.append(f"no IDX files in {directory} or {directory / name}")
    return None


_SPLITS = ("train_images", "train_labels", "test_images", "test_labels")


_STATS = ("train_mean", "train_std")  # channel_stats of the training images


def _memory_mapped(
    cache_dir: str | os.PathLike, key: str, build: Callable[[], tuple[tuple[np.ndarray, ...], str]]
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, np.ndarray], str]:
    """The four arrays as read-only memory maps of ``.npy`` files in ``cache_dir/key``,
    written once from ``build()`` (the IDX/CIFAR/TFDS readers), and the training images'
    :func:`channel_stats`, kept beside them: later runs, and every process of a
    multi-process run, read only the rows they use.

    The files are written to a temporary directory that is then renamed to
    ``cache_dir/key``, so a reader sees all of them or none; of concurrent writers the
    first rename wins and the others drop their copy.
    """
    directory = Path(cache_dir).expanduser() / key
    files = [directory / f"{split}.npy" for split in _SPLITS]
    if not all(f.is_file() for f in files):
        arrays, _ = build()
        _write_directory(
            directory, {**dict(zip(_SPLITS, arrays, strict=True)), **_stats(arrays[0])}
        )
    try:
        arrays = tuple(np.load(f, mmap_mode="r") for f in files)
        stats_files = [directory / f"{name}.npy" for name in _STATS]
        if not all(f.is_file() for f in stats_files):  # a cache of an earlier version
            for path, array in _stats(arrays[0]).items():
                tmp = directory / f".{path}.{os.getpid()}.npy"
                np.save(tmp, array)
                os.replace(tmp, directory / f"{path}.npy")
        mean, std = (np.load(f) for f in stats_files)
    except (OSError, ValueError) as error:
        raise DataFormatError(f"{directory}: unreadable memory-mapped data ({error})") from None
    return arrays, (mean, std), f"memory-mapped {directory}"


def _stats(train_images: np.ndarray) -> dict[str, np.ndarray]:
    return dict(zip(_STATS, channel_stats(train_images), strict=True))


def _write_directory(directory: Path, arrays: dict[str, np.ndarray]) -> None:
    """Writes ``arrays`` as ``directory/<name>.npy`` all at once (temporary directory,
    then rename); a complete ``directory`` written meanwhile by another process wins."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(array))
        complete = [directory / f"{name}.npy" for name in _SPLITS]
        if directory.exists() and not all(f.is_file() for f in complete):
            shutil.rmtree(directory, ignore_errors=True)  # an interrupted earlier writer's
        try:
            os.rename(tmp, directory)
        except OSError:
            if not all(f.is_file() for f in complete):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    train_subset: int | None = None,
    seed: int = 0,
    synthetic_shape: tuple[int, int, int] = (32, 32, 3),
    synthetic_size: tuple[int, int] = (50000, 10000),
    download: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Loads a data set by name from the first source that has it (see the module docstring).

    Args:
      name: a key of :data:`DATASETS` (``fashion_mnist``, ``mnist``, ``cifar10``,
        ``synthetic``...).
      data_dir: a directory with the raw files or a TFDS data dir (``--data-dir``).
      train_subset: keep only this many training examples, chosen by
        :func:`select_subset` (seeded, class-balanced); ``None`` keeps all.
      seed: seed of the subset choice and of the synthetic data.
      synthetic_shape: ``(H, W, C)`` of synthetic images.
      synthetic_size: ``(train, test)`` sizes of the synthetic set.
      download: allow TFDS to download (it needs network access).
      cache_dir: keep the data set as uint8 ``.npy`` files in ``cache_dir/<name>`` (written
        once from the readers, with the training set's mean and std) and return read-only
        memory maps of them, so that host RAM does not bound the data set and a process
        reads only the rows it uses (a ``train_subset`` is copied into RAM).

    Returns:
      The :class:`Dataset`; ``mean``/``std`` are computed on the (subset of
      the) training images.

    Raises:
      ValueError: for a bad ``name``, ``train_subset`` or synthetic argument.
      DatasetNotFoundError: if no source has the data set.
      DataFormatError: if a file is corrupt or truncated (the message names it).

    Example:
      >>> ds = load_dataset("synthetic", synthetic_shape=(8, 8, 3), synthetic_size=(100, 20),
      ...                   train_subset=50)
      >>> ds.train_images.shape, ds.test_labels.shape, ds.num_classes, ds.mean.shape
      ((50, 8, 8, 3), (20,), 10, (3,))
    """
    spec = _spec(name)
    if spec.load is not None:
        return spec.load(data_dir, train_subset=train_subset, seed=seed)

    def build() -> tuple[tuple[np.ndarray, ...], str]:
        if spec.files == "random":
            arrays = synthetic_dataset(synthetic_shape, synthetic_size, spec.num_classes, seed)
            return arrays, "synthetic (uniform random)"
        return _load_raw(name, data_dir, download)

    stats = None
    if cache_dir is None:
        arrays, source = build()
    else:
        key = name
        if spec.files == "random":
            shape, size = "x".join(map(str, synthetic_shape)), "-".join(map(str, synthetic_size))
            key = f"{name}-{shape}-{size}-seed{seed}"
        arrays, stats, source = _memory_mapped(cache_dir, key, build)
    train_images, train_labels, test_images, test_labels = arrays
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataFormatError(
            f"{source}: train images {train_images.shape[1:]} and test images "
            f"{test_images.shape[1:]} differ in shape"
        )
    if train_subset is not None:
        keep = select_subset(train_labels, train_subset, seed)
        train_images, train_labels = train_images[keep], train_labels[keep]
        stats = None
    mean, std = channel_stats(train_images) if stats is None else stats
    return Dataset(
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        num_classes=spec.num_classes,
        name=name,
        mean=mean,
        std=std,
        source=source,
    )


def load_for_config(config: Config) -> Dataset:
    """:func:`load_dataset` with a run's settings: its data set, ``--data-dir``,
    ``--train-subset``, ``--seed``, synthetic shape and size, and ``--data-cache``."""
    return load_dataset(
        config.dataset,
        config.data_dir,
        train_subset=config.train_subset,
        seed=config.seed,
        synthetic_shape=tuple(config.synthetic_shape),
        synthetic_size=tuple(config.synthetic_size),
        cache_dir=config.data_cache,
    )
