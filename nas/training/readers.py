"""Readers of the data-set files on disk, one per kind of ``data`` spec, into a :class:`~nas.training.data.Dataset`.

The bundled Fashion-MNIST subset (an ``.npz`` inside the package), Fashion-MNIST IDX files, the CIFAR "python
version" pickles (through an unpickler that only accepts numpy arrays: a pickle can otherwise run arbitrary
code) and ImageFolder trees (decoded with Pillow). Every failure is a :class:`~nas.errors.DataError` whose
one-line message names the path.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np

from nas.errors import DataError
from nas.training.data import Dataset, DataSpec

__all__ = ["read_data_set", "read_idx", "BUNDLED_FILE", "FASHION_MNIST_CLASSES", "IMAGE_SUFFIXES",
           "MAX_FOLDER_IMAGES"]

BUNDLED_FILE = "fashion_mnist_subset.npz"
FASHION_MNIST_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                         "sneaker", "bag", "ankle boot")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
MAX_FOLDER_IMAGES = 1_000_000  # an ImageFolder is decoded into memory; refuse trees far beyond that


def read_data_set(spec: DataSpec, *, image_size: int) -> Dataset:
    """Read the data set ``spec`` names (``image_size``: the square size ImageFolder images are resized to).

    Raises:
        DataError: the directory is missing or empty, or a file is missing, truncated or corrupt.
    """
    if spec.kind == "bundled":
        return _load_bundled()
    assert spec.path is not None
    _require_dir(spec.path)
    if spec.kind == "fashion-mnist":
        return _load_fashion_mnist(spec.path)
    if spec.kind in ("cifar10", "cifar100"):
        return _load_cifar(spec.path, fine=spec.kind == "cifar100")
    if not isinstance(image_size, int) or image_size < 8:
        raise DataError(f"image_size={image_size!r}: must be an integer of at least 8 pixels", field="image_size")
    return _load_folder(spec.path, image_size=image_size)


def _require_dir(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: data directory not found")
    if not path.is_dir():
        raise DataError(f"{path}: not a directory")
    if not any(path.iterdir()):
        raise DataError(f"{path}: data directory is empty")


# ----------------------------------------------------------------------------------------- bundled
def _load_bundled() -> Dataset:
    from importlib import resources

    ref = resources.files("nas._data").joinpath(BUNDLED_FILE)
    try:
        with ref.open("rb") as f, np.load(io.BytesIO(f.read())) as z:
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{ref}: bundled data set missing or corrupt ({e}); reinstall nas") from None
    return Dataset(
        name="bundled", source=f"nas/_data/{BUNDLED_FILE}",
        train_images=arrays["x_train"][..., None], train_labels=arrays["y_train"].astype(np.int64),
        test_images=arrays["x_test"][..., None], test_labels=arrays["y_test"].astype(np.int64),
        classes=FASHION_MNIST_CLASSES,
    )


# ----------------------------------------------------------------------------------------- IDX (MNIST format)
def read_idx(path: Path) -> np.ndarray:
    """Read one (optionally gzipped) IDX file of unsigned bytes: magic ``0x0000 08 NDIM``, big-endian sizes."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    except EOFError:
        raise DataError(f"{path}: truncated gzip file") from None
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(shape))
    if len(raw) - header != count:
        raise DataError(f"{path}: IDX payload has {len(raw) - header} bytes, header says {count}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(directory: Path, names: tuple[str, ...]) -> Path:
    for n in names:
        if (directory / n).is_file():
            return directory / n
    raise DataError(f"{directory / names[0]}: missing (expected one of {', '.join(names)})")


def _load_fashion_mnist(directory: Path) -> Dataset:
    def idx(stem: str) -> np.ndarray:
        return read_idx(_find(directory, (f"{stem}.gz", stem)))

    xtr, ytr = idx("train-images-idx3-ubyte"), idx("train-labels-idx1-ubyte")
    xte, yte = idx("t10k-images-idx3-ubyte"), idx("t10k-labels-idx1-ubyte")
    for x, y, what in ((xtr, ytr, "train"), (xte, yte, "t10k")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{directory}: {what} images {x.shape} and labels {y.shape} do not match")
        if y.size and int(y.max()) >= len(FASHION_MNIST_CLASSES):
            raise DataError(f"{directory}: {what} labels go up to {int(y.max())}, expected 0..9")
    return Dataset(name="fashion-mnist", source=str(directory), train_images=xtr[..., None],
                   train_labels=ytr.astype(np.int64), test_images=xte[..., None],
                   test_labels=yte.astype(np.int64), classes=FASHION_MNIST_CLASSES)


# ----------------------------------------------------------------------------------------- CIFAR
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR pickles hold dicts, lists, bytes and numpy arrays; refuse any other global (code execution)."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"),
                ("_codecs", "encode")}  # protocol-2 pickles written by Python 3 encode bytes through it

    def find_class(self, module: str, name: str):  # noqa: D401
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a data file")


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            obj = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # any unpickling failure means a corrupt or foreign file
        raise DataError(f"{path}: not a CIFAR python-version batch ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR python-version batch (top level is {type(obj).__name__})")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _cifar_arrays(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    if "data" not in d or label_key not in d:
        raise DataError(f"{path}: batch lacks the 'data' or '{label_key}' entry")
    data = np.asarray(d["data"], dtype=np.uint8)
    labels = np.asarray(d[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(f"{path}: data has shape {data.shape} for {len(labels)} labels, expected (N, 3072)")
    # Rows are 1024 red, 1024 green, 1024 blue values of a 32x32 image (row-major): to NHWC.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _load_cifar(directory: Path, *, fine: bool) -> Dataset:
    sub = "cifar-100-python" if fine else "cifar-10-batches-py"
    if (directory / sub).is_dir():
        directory = directory / sub
    if fine:
        train_files, test_file, meta_file, label_key = ["train"], "test", "meta", "fine_labels"
        names_key, n_classes = "fine_label_names", 100
    else:
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_file, meta_file, label_key, names_key, n_classes = "test_batch", "batches.meta", "labels", \
            "label_names", 10
    for name in [*train_files, test_file]:
        if not (directory / name).is_file():
            raise DataError(f"{directory / name}: CIFAR batch file missing")
    parts = [_cifar_arrays(directory / n, label_key) for n in train_files]
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = _cifar_arrays(directory / test_file, label_key)
    classes = tuple(str(i) for i in range(n_classes))
    if (directory / meta_file).is_file():
        names = _unpickle(directory / meta_file).get(names_key)
        if isinstance(names, list) and len(names) == n_classes:
            classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    for y, what in ((ytr, "train"), (yte, "test")):
        if y.size and (int(y.min()) < 0 or int(y.max()) >= n_classes):
            raise DataError(f"{directory}: {what} labels outside 0..{n_classes - 1}")
    return Dataset(name="cifar100" if fine else "cifar10", source=str(directory),
                   train_images=np.ascontiguousarray(xtr), train_labels=ytr,
                   test_images=np.ascontiguousarray(xte), test_labels=yte, classes=classes)


# ----------------------------------------------------------------------------------------- ImageFolder
def _load_folder(directory: Path, *, image_size: int) -> Dataset:
    from PIL import Image, UnidentifiedImageError

    class_dirs = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(f"{directory}: an ImageFolder needs at least two class sub-folders, found "
                        f"{len(class_dirs)}")
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, cdir in enumerate(class_dirs):
        files = sorted(p for p in cdir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{cdir}: class folder has no images ({', '.join(IMAGE_SUFFIXES)})")
        if len(images) + len(files) > MAX_FOLDER_IMAGES:
            raise DataError(f"{directory}: more than {MAX_FOLDER_IMAGES} images; use a subset")
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("RGB")
                    if im.size != (image_size, image_size):
                        im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
                    images.append(np.asarray(im, dtype=np.uint8))
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
                raise DataError(f"{f}: cannot decode image ({type(e).__name__})") from None
            labels.append(label)
    return Dataset(name="folder", source=str(directory), train_images=np.stack(images),
                   train_labels=np.asarray(labels, dtype=np.int64), test_images=None, test_labels=None,
                   classes=tuple(p.name for p in class_dirs))
