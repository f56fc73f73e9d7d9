"""How a device reads its own files: ``shoal client --data PATH``.

On a real deployment each device holds data that only it has, in whatever shape its owner
keeps it. :func:`read_local` turns one file or folder of it into a :class:`LabeledData`:

- a folder of class subfolders of images (``cats/001.png``): one class per subfolder
- a folder holding ``train.csv`` / ``train.npz`` / ``train.safetensors`` / ``train.txt``
  (or exactly one file of those formats)
- a ``.csv`` table (:func:`shoal.data.loaders.load_csv`), an ``.npz`` or ``.safetensors``
  file with arrays ``x`` and ``y``, or a ``.txt`` file for next-character prediction

Labels are class indices as written (or a name's index in ``classes``), never renumbered by
what this one device happens to hold, so every device means the same class by the same
index. The server never calls this on a device's data, which never leaves the device; it
may read its own test set with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shoal.data.datasets import LabeledData
from shoal.data.loaders import _split, load_csv
from shoal.data.shakespeare import SEQ_LEN, VOCAB, encode_text, windows
from shoal.errors import DataError

if TYPE_CHECKING:
    import PIL.Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
FILE_FORMATS = ("csv", "npz", "safetensors", "txt")
_GRAY_MODES = ("1", "L", "LA", "La", "F")  # one band of intensity (plus alpha, dropped)


def read_local(
    path: str | Path,
    *,
    label_column: str = "label",
    classes: Sequence[str] | None = None,
    test_fraction: float = 0.0,
    seed: int = 0,
    seq_len: int = SEQ_LEN,
) -> LabeledData:
    """One device's data at ``path``, held out ``test_fraction`` for testing (``test`` is
    None at 0).

    ``classes`` names the classes in index order: class folders and CSV labels are looked
    up in it, and ``num_classes`` is its length. Without it, labels (and class folder
    names) must be integers 0..k-1 and ``num_classes`` is the largest plus one. Splits are
    stratified by label, except text, whose test windows are the text's tail.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist; pass the file or folder that holds this device's data")
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"test_fraction must be in [0, 1), got {test_fraction}")
    names = _check_classes(classes)
    name = path.resolve().name or str(path)
    if path.is_dir() and _class_folders(path):
        x, y = _read_images(path, names)
        return _labeled(name, path, x, y, names, test_fraction, seed)
    file = _data_file(path) if path.is_dir() else path
    suffix = file.suffix.lower()
    if suffix == ".csv":
        table = load_csv(file, label_column, test_fraction, seed, classes=names)
        return dataclasses.replace(table, name=name)
    if suffix in (".npz", ".safetensors"):
        x, y = _read_arrays(file)
        return _labeled(name, file, x, y, names, test_fraction, seed)
    if suffix == ".txt":
        if names is not None:
            raise DataError(f"{file}: text predicts the next character, so classes do not apply; drop them")
        return _read_text(name, file, test_fraction, seq_len)
    raise DataError(
        f"{file}: unknown format {file.suffix!r}; shoal reads .{', .'.join(FILE_FORMATS)} files "
        f"and folders of class subfolders of images ({' '.join(IMAGE_SUFFIXES)})"
    )


def _check_classes(classes: Sequence[str] | None) -> list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, str):  # "cat" would be read as the classes c, a, t
        raise DataError(f"classes must be a list of class names, got the string {classes!r}")
    names = list(classes)
    if not names or len(set(names)) != len(names):
        raise DataError(f"classes must be distinct names, one per class, got {names}")
    return names


def _labeled(
    name: str,
    source: Path,
    x: np.ndarray,
    y: np.ndarray,
    classes: list[str] | None,
    test_fraction: float,
    seed: int,
) -> LabeledData:
    """Checked features [n, ...] and labels [n] split stratified."""
    if x.ndim < 2:
        raise DataError(f"{source}: x has shape {list(x.shape)}; it must be [examples, features...]")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(
            f"{source}: y must be a 1-D array of integer class indices, got {y.dtype}{list(y.shape)}"
        )
    if x.dtype.kind not in "fiub":
        raise DataError(f"{source}: x must be numeric, got {x.dtype}")
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{source}: x has {x.shape[0]} rows but y has {y.shape[0]}; they must match")
    if len(y) == 0:
        raise DataError(f"{source} holds no examples")
    if y.min() < 0:
        raise DataError(f"{source}: label {int(y.min())} is negative; labels are class indices 0..k-1")
    num_classes = len(classes) if classes is not None else int(y.max()) + 1
    if y.max() >= num_classes:
        raise DataError(
            f"{source}: label {int(y.max())} is outside the {num_classes} classes {classes}; "
            "labels are indices into classes"
        )
    return _split(name, x.astype(np.float32), y.astype(np.int64), num_classes, test_fraction, seed)


def _data_file(folder: Path) -> Path:
    """The one data file in a folder that is not an image folder."""
    named = [folder / f"train.{ext}" for ext in FILE_FORMATS if (folder / f"train.{ext}").is_file()]
    if len(named) == 1:
        return named[0]
    files = sorted(
        f for f in folder.iterdir() if f.is_file() and f.suffix.lower().lstrip(".") in FILE_FORMATS
    )
    if len(files) == 1:
        return files[0]
    raise DataError(
        f"{folder}: found {[f.name for f in files] or 'no data file'}; shoal looks for exactly "
        f"one train.<ext> (or exactly one file) of .{', .'.join(FILE_FORMATS)}, or for class "
        f"subfolders of images ({' '.join(IMAGE_SUFFIXES)}); pass the file itself or keep one in the folder"
    )


def _images(folder: Path) -> list[Path]:
    return sorted(
        f
        for f in folder.iterdir()
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")
    )


def _class_folders(root: Path) -> list[Path]:
    """The subfolders of ``root`` that hold images, in name order."""
    return sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and _images(d))


def _class_id(folder: Path, classes: list[str] | None) -> int:
    if classes is not None:
        if folder.name not in classes:
            raise DataError(
                f"{folder}: class folder {folder.name!r} is not one of the classes {classes}; "
                "rename the folder or add the class"
            )
        return classes.index(folder.name)
    if not (folder.name.isascii() and folder.name.isdigit()):
        raise DataError(
            f"{folder}: class folder {folder.name!r} is not a class index; name class folders "
            "0, 1, 2, ... or pass the class names (classes) in index order"
        )
    return int(folder.name)


def _read_images(root: Path, classes: list[str] | None) -> tuple[np.ndarray, np.ndarray]:
    """Every image under ``root``'s class folders: x [n, C, H, W] in [0, 1], y [n]."""
    from PIL import Image

    loose = _images(root)
    if loose:
        raise DataError(f"{loose[0]} is not in a class folder; move every image into its class's folder")
    pixels, labels = [], []
    first: tuple[Path, tuple[int, ...]] | None = None  # the file the others must match, its [C, H, W]
    for folder in _class_folders(root):
        label = _class_id(folder, classes)
        for file in _images(folder):
            try:
                with Image.open(file) as image:
                    a = _pixels(image)
            except (OSError, Image.DecompressionBombError) as exc:
                raise DataError(f"{file} could not be read as an image ({exc}); fix or remove it") from exc
            if first is None:
                first = (file, a.shape)
            elif a.shape != first[1]:
                raise DataError(
                    f"{file} is {_describe(a.shape)} but {first[0]} is {_describe(first[1])}; "
                    "every image must have the same size and channels: resize or convert them first"
                )
            pixels.append(a)
            labels.append(label)
    return np.stack(pixels), np.array(labels, dtype=np.int64)


def _pixels(image: PIL.Image.Image) -> np.ndarray:
    """[C, H, W] float32 in [0, 1]: 1 channel for grayscale, 3 for anything in colour."""
    if image.mode.startswith("I"):  # 16-bit grayscale (PNG): convert("L") would clip at 255
        gray: np.ndarray = np.clip(np.asarray(image, dtype=np.float32) / 65535.0, 0.0, 1.0)  # [H, W]
        return gray[None]
    if image.mode not in ("L", "RGB"):
        image = image.convert("L" if image.mode in _GRAY_MODES else "RGB")
    a = np.asarray(image, dtype=np.float32) / 255.0
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # [H, W, 3] -> [3, H, W]


def _describe(shape: tuple[int, ...]) -> str:
    c, h, w = shape
    return f"{w}x{h} with {c} channel{'s' if c > 1 else ''}"


def _read_arrays(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """Arrays ``x`` and ``y`` of an .npz or .safetensors file."""
    try:
        arrays = _load_arrays(file)
    except Exception as exc:  # zipfile, pickle and safetensors' own errors: all mean a bad file
        raise DataError(
            f"{file} could not be read ({exc}); write it with np.savez(path, x=..., y=...) "
            "or safetensors.numpy.save_file({'x': ..., 'y': ...}, path)"
        ) from exc
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(
            f"{file}: no array {' or '.join(map(repr, missing))}; it holds {sorted(arrays)}; "
            "save the features as x and the integer labels as y"
        )
    return arrays["x"], arrays["y"]


def _load_arrays(file: Path) -> dict[str, np.ndarray]:
    if file.suffix.lower() == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(file)
    loaded = np.load(file, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # an .npy array saved under an .npz name
        raise ValueError(f"one {loaded.dtype}{list(loaded.shape)} array, not an .npz archive")
    with loaded:
        return {k: loaded[k] for k in loaded.files}


def _read_text(name: str, file: Path, test_fraction: float, seq_len: int) -> LabeledData:
    """Next-character prediction over the text, whitespace collapsed as in shoal's Shakespeare."""
    if seq_len < 1:
        raise DataError(f"seq_len must be at least 1, got {seq_len}")
    try:
        text = " ".join(file.read_text(encoding="utf-8").split())
    except UnicodeDecodeError as exc:
        raise DataError(f"{file} is not UTF-8 text ({exc}); save it as UTF-8") from exc
    unknown = sorted(set(text) - set(VOCAB))
    if unknown:
        raise DataError(
            f"{file}: characters {unknown} are outside the model's vocabulary "
            f"(shoal.data.shakespeare.VOCAB: {VOCAB!r}); replace or remove them"
        )
    ids = encode_text(text)
    # cut the text, not the windows, so no test character is ever in a training window
    cut = round(len(ids) * (1 - test_fraction))
    train, test = windows(ids[:cut], seq_len), windows(ids[cut:], seq_len)
    if len(train) == 0:
        raise DataError(f"{file}: {cut} characters to train on, fewer than seq_len + 1 = {seq_len + 1}")
    if test_fraction > 0 and len(test) == 0:
        raise DataError(
            f"{file}: the last {test_fraction:.0%} of the text is {len(ids) - cut} characters, fewer "
            f"than seq_len + 1 = {seq_len + 1}; use more text or a larger test_fraction"
        )
    return LabeledData(name, train, test if test_fraction > 0 else None, len(VOCAB))
