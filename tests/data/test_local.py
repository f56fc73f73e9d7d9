import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import save_file

from shoal.data import load_csv, read_local
from shoal.data.shakespeare import VOCAB
from shoal.errors import DataError


def _png(path, size=(6, 4), mode="L", value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 0, 255)).save(path)


def _image_folder(root, names=("0", "1"), per_class=3, mode="L"):
    for c, name in enumerate(names):
        for i in range(per_class):
            _png(root / name / f"{i:02d}.png", mode=mode, value=50 * (c + 1))
    return root


def test_image_folder_with_integer_class_names(tmp_path):
    data = read_local(_image_folder(tmp_path / "site"))
    assert data.name == "site" and data.num_classes == 2 and data.test is None
    assert data.train.x.shape == (6, 1, 4, 6) and data.train.x.dtype == torch.float32
    assert data.train.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.allclose(data.train.x[0], torch.full((1, 4, 6), 50 / 255))


def test_image_folder_maps_names_through_classes_and_keeps_colour(tmp_path):
    root = _image_folder(tmp_path / "pets", names=("dog", "cat"), mode="RGB")
    data = read_local(root, classes=["bird", "cat", "dog"])
    assert data.num_classes == 3 and data.input_shape == (3, 4, 6)
    assert sorted(data.train.y.tolist()) == [1, 1, 1, 2, 2, 2]
    assert float(data.train.x.max()) == 1.0 and float(data.train.x.min()) == 0.0


def test_image_modes_become_one_or_three_channels(tmp_path):
    (tmp_path / "rgba" / "0").mkdir(parents=True)
    Image.new("RGBA", (5, 5), (10, 20, 30, 40)).save(tmp_path / "rgba" / "0" / "a.png")
    assert read_local(tmp_path / "rgba").input_shape == (3, 5, 5)
    (tmp_path / "deep" / "0").mkdir(parents=True)
    Image.fromarray(np.full((5, 5), 65535 // 5, np.uint16)).save(tmp_path / "deep" / "0" / "a.png")
    deep = read_local(tmp_path / "deep").train.x  # 16-bit grayscale scaled by 65535, not clipped at 255
    assert deep.shape == (1, 1, 5, 5) and torch.allclose(deep, torch.full_like(deep, 0.2))


def test_image_folder_refusals(tmp_path):
    root = _image_folder(tmp_path / "a", names=("cat", "dog"))
    with pytest.raises(DataError, match=r"class folder 'dog' is not one of the classes \['cat', 'bird'\]"):
        read_local(root, classes=["cat", "bird"])
    with pytest.raises(DataError, match="'cat' is not a class index"):
        read_local(root)
    root = _image_folder(tmp_path / "b")
    _png(root / "1" / "99.png", size=(7, 4))
    with pytest.raises(DataError, match=r"99.png is 7x4 with 1 channel but .*00.png is 6x4"):
        read_local(root)
    root = _image_folder(tmp_path / "c")
    _png(root / "1" / "99.png", mode="RGB")
    with pytest.raises(DataError, match="6x4 with 3 channels but"):
        read_local(root)


def test_npz_and_safetensors_round_trip(tmp_path):
    x = np.arange(40, dtype=np.int32).reshape(10, 2, 2)
    y = np.array([0, 1, 2, 3, 4] * 2)
    np.savez(tmp_path / "train.npz", x=x, y=y, extra=np.zeros(1))
    save_file({"x": x.astype(np.float64), "y": y}, str(tmp_path / "d.safetensors"))
    for path in (tmp_path / "train.npz", tmp_path / "d.safetensors"):
        data = read_local(path)
        assert data.train.x.dtype == torch.float32 and data.input_shape == (2, 2)
        assert data.train.y.tolist() == y.tolist() and data.num_classes == 5
        assert torch.equal(data.train.x, torch.from_numpy(x.astype(np.float32)))
    assert read_local(tmp_path / "train.npz", classes=list("abcdefg")).num_classes == 7


def test_array_refusals(tmp_path):
    np.savez(tmp_path / "a.npz", features=np.zeros((3, 2)), y=np.zeros(3, np.int64))
    with pytest.raises(DataError, match=r"no array 'x'; it holds \['features', 'y'\]"):
        read_local(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", x=np.zeros((3, 2)), y=np.array([0, -1, 0]))
    with pytest.raises(DataError, match="label -1 is negative"):
        read_local(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", x=np.zeros((3, 2)), y=np.array([0, 1, 2]))
    with pytest.raises(DataError, match="label 2 is outside the 2 classes"):
        read_local(tmp_path / "c.npz", classes=["a", "b"])
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2)), y=np.array([0.0, 1.0, 0.0]))
    with pytest.raises(DataError, match="integer class indices"):
        read_local(tmp_path / "d.npz")
    np.savez(tmp_path / "e.npz", x=np.zeros((4, 2)), y=np.array([0, 1, 0]))
    with pytest.raises(DataError, match="x has 4 rows but y has 3"):
        read_local(tmp_path / "e.npz")
    np.savez(tmp_path / "f.npz", x=np.zeros((0, 2)), y=np.zeros(0, np.int64))
    with pytest.raises(DataError, match="holds no examples"):
        read_local(tmp_path / "f.npz")
    (tmp_path / "g.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(DataError, match=r"g.safetensors could not be read"):
        read_local(tmp_path / "g.safetensors")


def test_csv_through_read_local(tmp_path):
    (tmp_path / "site.csv").write_text("a,b,y\n" + "".join(f"{i},{i % 4},{i % 2}\n" for i in range(20)))
    data = read_local(tmp_path / "site.csv", label_column="y", test_fraction=0.2)
    assert data.name == "site.csv" and data.input_shape == (2,) and data.num_classes == 2
    assert len(data.train) == 16 and len(data.test or []) == 4
    assert read_local(tmp_path / "site.csv", label_column="y", classes=["0", "1", "2"]).num_classes == 3


def test_integer_csv_labels_keep_their_value_across_devices(tmp_path):
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    one.write_text("f,label\n1,2\n2,10\n3,2\n")  # sorted as strings, "10" came before "2"
    two.write_text("f,label\n1,10\n2,7\n")
    a, b = load_csv(one, "label", test_fraction=0.0), load_csv(two, "label", test_fraction=0.0)
    assert a.train.y.tolist() == [2, 10, 2] and b.train.y.tolist() == [10, 7]
    assert a.num_classes == b.num_classes == 11


def test_csv_label_names(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("f,label\n1,dog\n2,cat\n3,dog\n")
    assert load_csv(path, "label", 0.0).train.y.tolist() == [1, 0, 1]  # sorted names
    data = load_csv(path, "label", 0.0, classes=["dog", "bird", "cat"])
    assert data.train.y.tolist() == [0, 2, 0] and data.num_classes == 3
    with pytest.raises(DataError, match=r"t.csv:3: label 'cat' is not one of the classes \['dog'\]"):
        load_csv(path, "label", 0.0, classes=["dog"])
    path.write_text("f,label\n1,0\n2,-1\n")
    with pytest.raises(DataError, match=r"t.csv:3: label '-1' is negative"):
        load_csv(path, "label", 0.0)


def test_text_is_next_character_prediction_split_at_the_tail(tmp_path):
    text = "To be, or not to be:\nthat is the question.\n" * 5
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "train.txt").write_text(text, encoding="utf-8")
    data = read_local(tmp_path / "notes", seq_len=10, test_fraction=0.2)
    assert data.name == "notes" and data.num_classes == len(VOCAB) and data.input_shape == (10,)
    assert data.train.x.dtype == torch.int64
    flat = " ".join(text.split())  # newlines collapse into spaces
    cut = round(len(flat) * 0.8)
    assert len(data.train) == cut - 10 and len(data.test or []) == len(flat) - cut - 10
    assert data.train.y[0] == VOCAB.index(flat[10])
    with pytest.raises(DataError, match="classes do not apply"):
        read_local(tmp_path / "notes", classes=["a"])
    (tmp_path / "bad.txt").write_text("price: 5€", encoding="utf-8")
    with pytest.raises(DataError, match=r"\['5', '€'\] are outside .*shoal.data.shakespeare.VOCAB"):
        read_local(tmp_path / "bad.txt")


def test_split_sizes_are_stratified(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((40, 3)), y=np.repeat([0, 1], [30, 10]))
    data = read_local(tmp_path / "d.npz", test_fraction=0.25, seed=1)
    assert len(data.train) == 30 and data.test is not None and len(data.test) == 10
    assert np.bincount(data.test.y.numpy()).tolist() == [8, 2]
    assert torch.equal(read_local(tmp_path / "d.npz", test_fraction=0.25, seed=1).test.y, data.test.y)
    with pytest.raises(DataError, match="test_fraction must be in"):
        read_local(tmp_path / "d.npz", test_fraction=1.0)


def test_path_refusals(tmp_path):
    with pytest.raises(DataError, match="nowhere does not exist"):
        read_local(tmp_path / "nowhere")
    (tmp_path / "data.parquet").write_bytes(b"")
    with pytest.raises(DataError, match=r"unknown format '.parquet'; shoal reads .csv, .npz"):
        read_local(tmp_path / "data.parquet")
    (tmp_path / "a.csv").write_text("f,label\n1,0\n")
    (tmp_path / "b.npz").write_bytes(b"")
    with pytest.raises(DataError, match=r"found \['a.csv', 'b.npz'\]; shoal looks for exactly one"):
        read_local(tmp_path)
    (tmp_path / "train.csv").write_text("f,label\n1,0\n2,1\n")  # train.<ext> settles it
    assert len(read_local(tmp_path).train) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="found no data file"):
        read_local(tmp_path / "empty")
