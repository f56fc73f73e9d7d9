from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from shoal.data import (
    digits,
    fashion_mnist,
    fashion_mnist_available,
    load_csv,
    load_idx,
    mnist_subset,
)
from shoal.errors import DataError


def write_idx(path, arr: np.ndarray, code: int = 0x08, compress: bool = False) -> None:
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    (gzip.open if compress else open)(path, "wb").write(raw)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("x.idx.gz" if compress else "x.idx")
    write_idx(path, arr, compress=compress)
    assert np.array_equal(load_idx(path), arr)


def test_idx_big_endian_floats(tmp_path):
    arr = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    write_idx(tmp_path / "f.idx", arr, code=0x0D)
    assert np.array_equal(load_idx(tmp_path / "f.idx"), arr)


def test_idx_errors_name_the_problem(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="bad magic"):
        load_idx(tmp_path / "bad")
    arr = np.zeros((10, 5), np.uint8)
    write_idx(tmp_path / "t.idx", arr)
    (tmp_path / "t.idx").write_bytes((tmp_path / "t.idx").read_bytes()[:-7])
    with pytest.raises(DataError, match="truncated"):
        load_idx(tmp_path / "t.idx")
    with pytest.raises(DataError, match="does not exist"):
        load_idx(tmp_path / "nope.idx")
    (tmp_path / "z.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="corrupt"):
        load_idx(tmp_path / "z.gz")


def test_fashion_mnist_missing_folder_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist(tmp_path / "none")


def test_fashion_mnist_from_idx_files_in_a_folder(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 4)):
        write_idx(
            tmp_path / f"{prefix}-images-idx3-ubyte.gz",
            rng.integers(0, 256, (n, 28, 28)).astype(np.uint8),
            compress=True,
        )
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))
    data = fashion_mnist(tmp_path)
    assert data.train.x.shape == (12, 1, 28, 28) and data.test is not None and len(data.test) == 4
    assert float(data.train.x.max()) <= 1.0


@pytest.mark.skipif(not fashion_mnist_available(), reason="apt-get install dataset-fashion-mnist to run")
def test_real_fashion_mnist():
    data = fashion_mnist()
    assert data.train.x.shape == (60000, 1, 28, 28) and data.test is not None and len(data.test) == 10000
    assert np.bincount(data.train.y.numpy()).tolist() == [6000] * 10


def test_mnist_subset_is_stratified():
    data = mnist_subset(test_fraction=0.2, seed=0)
    assert len(data.train) == 4000 and data.test is not None and len(data.test) == 1000
    assert np.bincount(data.test.y.numpy()).tolist() == [100] * 10
    assert data.input_shape == (1, 28, 28)


def test_digits():
    data = digits()
    assert data.input_shape == (1, 8, 8) and len(data.train) + len(data.test or []) == 1797


def test_csv_loader(tmp_path):
    path = tmp_path / "sites.csv"
    path.write_text(
        "age,dose,outcome\n" + "".join(f"{i},{i % 3},{'yes' if i % 2 else 'no'}\n" for i in range(40))
    )
    data = load_csv(path, "outcome", test_fraction=0.25)
    assert data.num_classes == 2 and data.input_shape == (2,)
    assert len(data.train) == 30 and abs(float(data.train.x.mean())) < 1e-5  # standardized on train
    with pytest.raises(DataError, match="no column 'label'"):
        load_csv(path, "label")
    path.write_text("a,label\n1,x\nfoo,y\n")
    with pytest.raises(DataError, match=r"sites.csv:3: column 'a' has non-numeric value 'foo'"):
        load_csv(path, "label")
