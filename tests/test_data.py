"""nas.training.data and readers: every --data kind on real files written on the fly, the bundled subset, the split, the errors."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from nas.training.data import DEFAULT_FASHION_MNIST_DIR, DataSpec, load_data, parse_data_spec, split_train_val
from nas.training.readers import read_idx
from nas.errors import DataError


# ----------------------------------------------------------------------------------------- writers of real formats
def write_cifar10(root: Path, *, per_batch: int = 8, skip: str | None = None) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for n in names:
        if n == skip:
            continue
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(i % 10) for i in range(per_batch)]
        with (d / n).open("wb") as f:
            pickle.dump({b"batch_label": n.encode(), b"labels": labels, b"data": data, b"filenames": []}, f)
    with (d / "batches.meta").open("wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)], b"num_vis": 3072}, f)
    return d


def write_cifar100(root: Path, *, n: int = 20) -> Path:
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("train", "test"):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with (d / name).open("wb") as f:
            pickle.dump({b"data": data, b"fine_labels": [i % 100 for i in range(n)],
                         b"coarse_labels": [i % 20 for i in range(n)]}, f, protocol=2)
    with (d / "meta").open("wb") as f:
        pickle.dump({b"fine_label_names": [f"f{i}".encode() for i in range(100)]}, f)
    return d


def write_folder(root: Path, classes=("cat", "dog", "emu"), per_class: int = 4) -> Path:
    from PIL import Image

    rng = np.random.default_rng(2)
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            size = (20 + 3 * i, 18 + ci)  # mixed sizes: the loader resizes
            arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            mode_img = Image.fromarray(arr)
            if i == 0:
                mode_img = mode_img.convert("L")  # grey files are converted to RGB
            mode_img.save(root / c / f"{i}.png")
    (root / classes[0] / "notes.txt").write_text("not an image; ignored")
    return root


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))


# ----------------------------------------------------------------------------------------- specs
@pytest.mark.parametrize("text,kind,path", [
    ("bundled", "bundled", None),
    ("fashion-mnist", "fashion-mnist", DEFAULT_FASHION_MNIST_DIR),
    ("fashion-mnist:/x/y", "fashion-mnist", Path("/x/y")),
    ("CIFAR10:/d", "cifar10", Path("/d")),
    ("cifar-100:/d", "cifar100", Path("/d")),
    ("folder:rel/dir", "folder", Path("rel/dir")),
])
def test_parse_data_spec(text, kind, path):
    spec = parse_data_spec(text)
    assert spec == DataSpec(kind, path)
    assert parse_data_spec(str(spec)) == spec


@pytest.mark.parametrize("text", ["imagenet", "cifar10", "folder", "folder:", "bundled:/x"])
def test_parse_data_spec_errors(text):
    with pytest.raises(DataError) as e:
        parse_data_spec(text)
    assert e.value.field == "data"


# ----------------------------------------------------------------------------------------- sources
def test_bundled_subset():
    ds = load_data("bundled")
    assert ds.train_images.shape == (6000, 28, 28, 1) and ds.train_images.dtype == np.uint8
    assert ds.test_images.shape == (1000, 28, 28, 1)
    assert ds.num_classes == 10 and ds.channels == 1
    assert np.bincount(ds.train_labels).tolist() == [600] * 10
    assert np.bincount(ds.test_labels).tolist() == [100] * 10
    assert ds.train_images.std() > 20  # real pictures, not a blank array


@pytest.mark.skipif(not (DEFAULT_FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists(),
                    reason="dataset-fashion-mnist not installed")
def test_bundled_subset_is_drawn_from_the_full_set():
    full = read_idx(DEFAULT_FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    bundled = load_data("bundled").test_images[:, :, :, 0]
    seen = {img.tobytes() for img in full}
    assert all(img.tobytes() in seen for img in bundled[:50])


def test_fashion_mnist_idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 28, 28))
    y = np.arange(30) % 10
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", x)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x[:10])
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y[:10])
    ds = load_data(f"fashion-mnist:{tmp_path}")
    assert ds.train_images.shape == (30, 28, 28, 1)
    assert np.array_equal(ds.train_images[..., 0], x.astype(np.uint8))
    assert ds.test_labels.tolist() == list(range(10))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels"):
        load_data(f"fashion-mnist:{tmp_path}")


def test_idx_corrupt(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">3I", 5, 28, 28) + b"\x00" * 10))
    with pytest.raises(DataError, match=str(bad)):
        read_idx(bad)


@pytest.mark.parametrize("parent", [True, False])
def test_cifar10(tmp_path, parent):
    d = write_cifar10(tmp_path)
    ds = load_data(f"cifar10:{tmp_path if parent else d}")
    assert ds.train_images.shape == (40, 32, 32, 3) and ds.test_images.shape == (8, 32, 32, 3)
    assert ds.classes[3] == "c3" and ds.num_classes == 10 and ds.channels == 3
    with (d / "data_batch_1").open("rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"][0]
    # row layout: 1024 red, 1024 green, 1024 blue, each 32x32 row-major
    assert ds.train_images[0, 0, 1, 0] == raw[1] and ds.train_images[0, 0, 0, 2] == raw[2048]


def test_cifar100(tmp_path):
    write_cifar100(tmp_path)
    ds = load_data(f"cifar100:{tmp_path}")
    assert ds.num_classes == 100 and ds.classes[99] == "f99"
    assert ds.train_labels.tolist() == [i % 100 for i in range(20)]


def test_cifar_missing_batch_names_the_file(tmp_path):
    d = write_cifar10(tmp_path, skip="data_batch_3")
    with pytest.raises(DataError) as e:
        load_data(f"cifar10:{d}")
    assert str(d / "data_batch_3") in str(e.value) and "\n" not in str(e.value)


def test_cifar_pickle_with_code_is_refused(tmp_path):
    d = write_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with (d / "data_batch_2").open("wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(DataError, match="data_batch_2") as e:
        load_data(f"cifar10:{d}")
    assert e.value.field == "data"


def test_image_folder(tmp_path):
    root = write_folder(tmp_path / "imgs")
    ds = load_data(f"folder:{root}", image_size=16)
    assert ds.train_images.shape == (12, 16, 16, 3) and ds.test_images is None
    assert ds.classes == ("cat", "dog", "emu")
    assert ds.train_labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_image_folder_one_class(tmp_path):
    root = write_folder(tmp_path / "imgs", classes=("only",))
    with pytest.raises(DataError, match=str(root)):
        load_data(f"folder:{root}")


def test_image_folder_corrupt_image_names_the_file(tmp_path):
    root = write_folder(tmp_path / "imgs")
    bad = root / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DataError) as e:
        load_data(f"folder:{root}")
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("kind", ["cifar10", "cifar100", "folder", "fashion-mnist"])
def test_missing_and_empty_dirs(tmp_path, kind):
    with pytest.raises(DataError, match="not found") as e:
        load_data(f"{kind}:{tmp_path / 'nope'}")
    assert e.value.field == "data"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty") as e:
        load_data(f"{kind}:{tmp_path / 'empty'}")
    assert e.value.field == "data"


# ----------------------------------------------------------------------------------------- split
def test_split_is_stratified_disjoint_and_deterministic():
    ds = load_data("bundled")
    a = split_train_val(ds, val_size=1000, train_size=3000, seed=0)
    b = split_train_val(ds, val_size=1000, train_size=3000, seed=0)
    c = split_train_val(ds, val_size=1000, train_size=3000, seed=1)
    assert np.array_equal(a.val_indices, b.val_indices) and np.array_equal(a.train_indices, b.train_indices)
    assert not np.array_equal(a.val_indices, c.val_indices)
    assert not set(a.val_indices) & set(a.train_indices)
    assert np.bincount(a.val_labels).tolist() == [100] * 10
    assert np.bincount(a.train_labels).tolist() == [300] * 10
    assert np.array_equal(a.val_images, ds.train_images[a.val_indices])
    full = split_train_val(ds, val_size=0.1, seed=0)
    assert len(full.val_labels) == 600 and len(full.train_labels) == 5400


@pytest.mark.parametrize("kw,fld", [(dict(val_size=0), "val_size"), (dict(val_size=6000), "val_size"),
                                    (dict(val_size=1.5), "val_size"), (dict(val_size=100, train_size=5950), "train_size")])
def test_split_errors(kw, fld):
    with pytest.raises(DataError) as e:
        split_train_val(load_data("bundled"), **kw)
    assert e.value.field == fld


def test_folder_image_size_is_checked(tmp_path):
    root = write_folder(tmp_path / "imgs")
    with pytest.raises(DataError) as e:
        load_data(f"folder:{root}", image_size=4)
    assert e.value.field == "image_size"
