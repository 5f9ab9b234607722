"""Tests of the data pipeline: IDX and CIFAR readers, TFDS, sources, subsets, statistics."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from train import data
from train.cifar import read_cifar_batch
from train.data import DataFormatError, DatasetNotFoundError, load_dataset
from train.idx import read_idx

_IDX_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def _idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding written from the format's definition, independent of train.idx."""
    header = struct.pack(">BBBB", 0, 0, _IDX_CODES[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write(path, payload: bytes, compress: bool = False) -> str:
    with open(path, "wb") as f:
        f.write(gzip.compress(payload) if compress else payload)
    return str(path)


def _write_idx_set(directory, rng, n_train=12, n_test=5, compress=True, sep="-", side=6):
    os.makedirs(directory, exist_ok=True)
    arrays = {
        "train-images": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        "train-labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        "t10k-labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    paths = {}
    for stem, array in arrays.items():
        dims = 3 if "images" in stem else 1
        name = f"{stem}{sep}idx{dims}-ubyte" + (".gz" if compress else "")
        paths[stem] = _write(os.path.join(directory, name), _idx_bytes(array), compress)
    return arrays, paths


@pytest.mark.parametrize("dtype", list(_IDX_CODES))
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, dtype, compress):
    rng = np.random.default_rng(0)
    array = (rng.normal(size=(3, 4, 5)) * 50).astype(dtype)
    path = _write(tmp_path / "x-idx3-ubyte", _idx_bytes(array), compress)
    got = read_idx(path)
    assert got.dtype == dtype.newbyteorder("=") and got.shape == (3, 4, 5)
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"\x01" + b[1:], "magic"),
        (lambda b: b[:2] + b"\x07" + b[3:], "element type"),
        (lambda b: b[:-7], "truncated"),
        (lambda b: b + b"\x00\x00", "trailing"),
        (lambda b: b[:6], "truncated IDX header"),
        (lambda b: b"", "magic"),
    ],
)
def test_read_idx_rejects_corrupt_files_naming_them(tmp_path, mutate, message):
    payload = _idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    path = _write(tmp_path / "broken-idx3-ubyte", mutate(payload))
    with pytest.raises(DataFormatError, match=message) as info:
        read_idx(path)
    assert str(tmp_path / "broken-idx3-ubyte") in str(info.value)


def test_read_idx_rejects_truncated_and_corrupt_gzip(tmp_path):
    compressed = gzip.compress(_idx_bytes(np.zeros((50, 7, 7), np.uint8)))
    truncated = _write(tmp_path / "a.gz", compressed[: len(compressed) // 2])
    with pytest.raises(DataFormatError, match="gzip") as info:
        read_idx(truncated)
    assert "a.gz" in str(info.value)
    corrupt = bytearray(compressed)
    corrupt[12:20] = b"\xff" * 8
    with pytest.raises(DataFormatError, match=r"b\.gz"):
        read_idx(_write(tmp_path / "b.gz", bytes(corrupt)))


@pytest.mark.parametrize(("compress", "sep", "subdir"), [(True, "-", ""), (False, ".", "mnist")])
def test_load_idx_from_data_dir(tmp_path, compress, sep, subdir):
    arrays, _ = _write_idx_set(
        tmp_path / subdir, np.random.default_rng(1), compress=compress, sep=sep
    )
    ds = load_dataset("mnist", tmp_path, download=False)
    assert ds.train_images.shape == (12, 6, 6, 1) and ds.test_images.shape == (5, 6, 6, 1)
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
    np.testing.assert_array_equal(ds.train_images[..., 0], arrays["train-images"])
    np.testing.assert_array_equal(ds.train_labels, arrays["train-labels"])
    np.testing.assert_array_equal(ds.test_images[..., 0], arrays["t10k-images"])
    np.testing.assert_array_equal(ds.test_labels, arrays["t10k-labels"])
    assert ds.num_classes == 10 and ds.name == "mnist" and str(tmp_path) in ds.source
    mean = arrays["train-images"].mean() / 255.0
    np.testing.assert_allclose(ds.mean, [mean], rtol=1e-5)


def test_idx_set_with_bad_labels_or_sizes_names_the_file(tmp_path):
    rng = np.random.default_rng(2)
    _, paths = _write_idx_set(tmp_path, rng, compress=False)
    _write(paths["train-labels"], _idx_bytes(np.full(12, 10, np.uint8)))
    with pytest.raises(DataFormatError, match="label 10") as info:
        load_dataset("fashion_mnist", tmp_path)
    assert paths["train-labels"] in str(info.value)
    _write(paths["train-labels"], _idx_bytes(np.zeros(11, np.uint8)))
    with pytest.raises(DataFormatError, match="11 labels for 12 images"):
        load_dataset("fashion_mnist", tmp_path)
    _write(paths["train-labels"], _idx_bytes(np.zeros(12, np.uint8)))
    _write(paths["t10k-images"], _idx_bytes(np.zeros((5, 6), np.uint8)))
    with pytest.raises(DataFormatError, match="rank 3") as info:
        load_dataset("fashion_mnist", tmp_path)
    assert paths["t10k-images"] in str(info.value)


@pytest.mark.slow
@pytest.mark.skipif(
    data.idx.find_idx_files(data.DEBIAN_FASHION_MNIST_DIR, "train") is None,
    reason="Debian's dataset-fashion-mnist package is not installed",
)
def test_real_fashion_mnist_from_debian_package():
    ds = load_dataset("fashion_mnist")
    assert ds.train_images.shape == (60000, 28, 28, 1) and ds.test_images.shape == (
        10000,
        28,
        28,
        1,
    )
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
    assert np.bincount(ds.train_labels).tolist() == [6000] * 10
    assert np.bincount(ds.test_labels).tolist() == [1000] * 10
    # The published Fashion-MNIST statistics: mean 0.2860, std 0.3530.
    np.testing.assert_allclose(ds.mean, [0.2860], atol=1e-4)
    np.testing.assert_allclose(ds.std, [0.3530], atol=1e-4)
    assert str(data.DEBIAN_FASHION_MNIST_DIR) in ds.source


def _cifar_batch(rng, n):
    return {
        b"batch_label": b"testing batch",
        b"labels": rng.integers(0, 10, n).tolist(),
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def _write_cifar(directory, rng, sizes=(3, 2, 2, 2, 1, 4)):
    os.makedirs(directory, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {}
    for name, n in zip(names, sizes, strict=True):
        batches[name] = _cifar_batch(rng, n)
        with open(os.path.join(directory, name), "wb") as f:
            pickle.dump(batches[name], f, protocol=2)
    return batches


def test_cifar_batch_layout_is_channel_planes_row_major(tmp_path):
    batch = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [7]}
    batch[b"data"][0, 0 * 1024 + 1 * 32 + 2] = 11  # red at row 1, column 2
    batch[b"data"][0, 1 * 1024 + 31 * 32 + 0] = 22  # green at row 31, column 0
    batch[b"data"][0, 2 * 1024 + 5] = 33  # blue at row 0, column 5
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    images, labels = read_cifar_batch(tmp_path / "test_batch")
    assert images.shape == (1, 32, 32, 3) and labels.tolist() == [7]
    assert images[0, 1, 2, 0] == 11 and images[0, 31, 0, 1] == 22 and images[0, 0, 5, 2] == 33
    assert images.sum() == 66


@pytest.mark.parametrize("nested", [True, False])
def test_load_cifar10_from_data_dir(tmp_path, nested):
    directory = tmp_path / "cifar-10-batches-py" if nested else tmp_path
    batches = _write_cifar(directory, np.random.default_rng(3))
    ds = load_dataset("cifar10", tmp_path, download=False)
    assert ds.train_images.shape == (10, 32, 32, 3) and ds.test_images.shape == (4, 32, 32, 3)
    expected = np.concatenate([batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)])
    np.testing.assert_array_equal(ds.train_labels, expected)
    first = batches["data_batch_1"][b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(ds.train_images[0], first)
    assert ds.mean.shape == ds.std.shape == (3,) and ds.mean.dtype == np.float32


def test_cifar_corrupt_truncated_incomplete_and_malicious_files(tmp_path):
    _write_cifar(tmp_path, np.random.default_rng(4))
    path = tmp_path / "data_batch_3"
    payload = path.read_bytes()
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataFormatError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path)
    path.write_bytes(payload)
    (tmp_path / "data_batch_5").unlink()
    with pytest.raises(DataFormatError, match=r"data_batch_5.*missing"):
        load_dataset("cifar10", tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f, protocol=2)
    with pytest.raises(DataFormatError, match="not allowed"):
        read_cifar_batch(tmp_path / "test_batch")
    assert not (tmp_path / "pwned").exists()
    bad = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump(bad, f, protocol=2)
    with pytest.raises(DataFormatError, match="labels outside"):
        read_cifar_batch(tmp_path / "test_batch")


@pytest.mark.parametrize(("name", "shape"), [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_source_under_mock_data(tmp_path, name, shape):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        ds = load_dataset(name, download=False, train_subset=4)
    assert ds.train_images.shape == (4, *shape) and ds.test_images.shape == (6, *shape)
    assert ds.train_images.dtype == np.uint8 and ds.test_labels.dtype == np.int32
    assert ds.test_labels.min() >= 0 and ds.test_labels.max() < 10
    assert ds.source == "TFDS" and ds.num_classes == 10


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_data_set_gives_one_line_listing_the_ways(tmp_path, name):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name, tmp_path, download=False)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, FileNotFoundError)
    assert "\n" not in message
    assert "tfds.data_source" in message and "--data-dir" in message and str(tmp_path) in message
    assert ("apt-get install dataset-fashion-mnist" in message) == (name == "fashion_mnist")
    assert ("cifar-10-batches-py" in message) == (name == "cifar10")
    with pytest.raises(DatasetNotFoundError, match="not a directory"):
        load_dataset(name, tmp_path / "absent", download=False)


def test_select_subset_is_balanced_seeded_and_sorted():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 10, 5000)
    for size in (1, 10, 57, 1000):
        idx = data.select_subset(labels, size, seed=3)
        assert len(idx) == size == len(np.unique(idx))
        assert np.all(np.diff(idx) > 0)
        counts = np.bincount(labels[idx], minlength=10)
        assert counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(
        data.select_subset(labels, 50, 1), data.select_subset(labels, 50, 1)
    )
    assert not np.array_equal(data.select_subset(labels, 50, 1), data.select_subset(labels, 50, 2))
    skewed = np.array([0] * 95 + [1] * 3 + [2] * 2)
    assert np.bincount(skewed[data.select_subset(skewed, 12, 0)]).tolist() == [7, 3, 2]
    for bad in (0, 5001, 2.5, True):
        with pytest.raises(ValueError, match="train_subset"):
            data.select_subset(labels, bad)


def test_train_subset_applies_to_training_split_and_statistics():
    full = load_dataset("synthetic", synthetic_shape=(4, 4, 2), synthetic_size=(300, 30))
    ds = load_dataset(
        "synthetic", synthetic_shape=(4, 4, 2), synthetic_size=(300, 30), train_subset=40
    )
    assert ds.train_images.shape == (40, 4, 4, 2) and ds.test_images.shape == (30, 4, 4, 2)
    np.testing.assert_array_equal(ds.test_images, full.test_images)
    mean, std = data.channel_stats(ds.train_images)
    np.testing.assert_array_equal(ds.mean, mean)
    np.testing.assert_array_equal(ds.std, std)


def test_channel_stats_match_float64_numpy():
    rng = np.random.default_rng(6)
    for _ in range(5):
        images = rng.integers(0, 256, (7, 5, 3, 4), dtype=np.uint8) // np.uint8(rng.integers(1, 9))
        mean, std = data.channel_stats(images)
        x = images.astype(np.float64) / 255.0
        np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), rtol=1e-6)
        np.testing.assert_allclose(std, x.std(axis=(0, 1, 2)), rtol=1e-5)
    _, std = data.channel_stats(np.full((2, 2, 2, 1), 9, np.uint8))
    assert std.tolist() == [1.0]


def test_synthetic_is_seeded_and_shaped():
    a = load_dataset("synthetic", synthetic_shape=(5, 6, 1), synthetic_size=(20, 8), seed=1)
    b = load_dataset("synthetic", synthetic_shape=(5, 6, 1), synthetic_size=(20, 8), seed=1)
    c = load_dataset("synthetic", synthetic_shape=(5, 6, 1), synthetic_size=(20, 8), seed=2)
    assert a.train_images.shape == (20, 5, 6, 1) and a.test_labels.shape == (8,)
    np.testing.assert_array_equal(a.train_images, b.train_images)
    assert not np.array_equal(a.train_images, c.train_images)
    assert a.train_labels.min() >= 0 and a.train_labels.max() < a.num_classes


def test_bad_arguments_raise_value_error_naming_them():
    with pytest.raises(ValueError, match="name"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="synthetic_shape"):
        load_dataset("synthetic", synthetic_shape=(32, 32))
    with pytest.raises(ValueError, match="synthetic_size"):
        load_dataset("synthetic", synthetic_size=(0, 10))
    with pytest.raises(ValueError, match="train_subset"):
        load_dataset("synthetic", synthetic_size=(10, 2), train_subset=11)


def test_load_for_config_passes_every_data_setting(tmp_path):
    from train.config import Config

    config = Config(
        dataset="synthetic",
        synthetic_shape=(4, 5, 1),
        synthetic_size=(30, 6),
        train_subset=12,
        seed=3,
        data_cache=str(tmp_path),
    )
    ds = data.load_for_config(config)
    want = load_dataset(
        "synthetic", synthetic_shape=(4, 5, 1), synthetic_size=(30, 6), train_subset=12, seed=3
    )
    np.testing.assert_array_equal(ds.train_images, want.train_images)
    np.testing.assert_array_equal(ds.test_labels, want.test_labels)
    np.testing.assert_array_equal(ds.mean, want.mean)
    assert (
        ds.source.startswith("memory-mapped") and (tmp_path / "synthetic-4x5x1-30-6-seed3").is_dir()
    )
