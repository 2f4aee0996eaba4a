"""Offline image data sets for the proxy trainer, chosen with one ``--data SPEC`` string.

Specs (parsed by :func:`parse_data_spec`):

* ``bundled`` (default): a stratified 6,000 train + 1,000 test subset of Fashion-MNIST (28x28 grey)
  shipped inside the package (``nas/_data/``, MIT licence, (c) Zalando SE; see ``nas/_data/NOTICE``), so a
  plain ``pip install`` trains out of the box with no download.
* ``fashion-mnist[:DIR]``: the full 60k/10k set as gzipped IDX files (default DIR
  ``/usr/share/datasets/fashion-mnist``, where Debian's ``dataset-fashion-mnist`` installs it).
* ``cifar10:DIR`` / ``cifar100:DIR``: the standard "python version" pickles (``cifar-10-batches-py`` /
  ``cifar-100-python``); DIR may be that folder or its parent. Read without torchvision, through an
  unpickler that only accepts numpy arrays (a pickle can otherwise run arbitrary code).
* ``folder:DIR``: an ImageFolder layout, one sub-folder per class, decoded with Pillow to RGB and resized
  to a square ``image_size`` when loaded (the images must be stacked into one array).

Everything is returned in memory as ``uint8`` arrays ``(N, H, W, C)``. :func:`split_train_val` carves
a validation split out of the *train* split only (stratified, deterministic for a seed); the test split
is never used by the search. Every failure is a :class:`~nas.errors.DataError` whose one-line message
names the path.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nas.errors import DataError

__all__ = [
    "DATA_KINDS",
    "DEFAULT_FASHION_MNIST_DIR",
    "DataSpec",
    "Dataset",
    "Split",
    "parse_data_spec",
    "load_data",
    "split_train_val",
]

DATA_KINDS = ("bundled", "fashion-mnist", "cifar10", "cifar100", "folder")
DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
BUNDLED_FILE = "fashion_mnist_subset.npz"
FASHION_MNIST_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                         "sneaker", "bag", "ankle boot")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
MAX_FOLDER_IMAGES = 1_000_000  # an ImageFolder is decoded into memory; refuse trees far beyond that


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data`` value: ``kind`` in :data:`DATA_KINDS` and an optional directory."""

    kind: str
    path: Path | None = None

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


@dataclass(frozen=True, eq=False)  # eq=False: hashed by identity, so loaded sets can key caches cheaply
class Dataset:
    """Images in memory. ``*_images`` are ``uint8 (N, H, W, C)``, ``*_labels`` ``int64 (N,)``.

    ``test_images`` is ``None`` for an ImageFolder (it has no test split).
    """

    name: str
    source: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray | None
    test_labels: np.ndarray | None
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[3])

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.train_images.shape[1]), int(self.train_images.shape[2])

    def describe(self) -> dict:
        """Small JSON-able summary (what results record about their data)."""
        return {"name": self.name, "source": self.source, "train": int(len(self.train_labels)),
                "test": 0 if self.test_labels is None else int(len(self.test_labels)),
                "classes": self.num_classes, "channels": self.channels, "size": list(self.image_size)}


@dataclass(frozen=True, eq=False)
class Split:
    """A train/validation split carved from a data set's train split; indices refer to ``train_images``."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    train_indices: np.ndarray
    val_indices: np.ndarray
    num_classes: int
    channels: int


# ----------------------------------------------------------------------------------------- parsing
def parse_data_spec(spec: "str | DataSpec") -> DataSpec:
    """Parse ``bundled``, ``fashion-mnist[:DIR]``, ``cifar10:DIR``, ``cifar100:DIR`` or ``folder:DIR``.

    Raises:
        DataError: unknown kind, or a kind that needs a DIR given without one.
    """
    if isinstance(spec, DataSpec):
        return spec
    text = str(spec).strip()
    kind, sep, rest = text.partition(":")
    kind = kind.strip().lower()
    aliases = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "cifar-10": "cifar10",
               "cifar-100": "cifar100", "imagefolder": "folder"}
    kind = aliases.get(kind, kind)
    if kind not in DATA_KINDS:
        raise DataError(f"--data {text!r}: unknown kind {kind!r}; use one of bundled, fashion-mnist[:DIR], "
                        "cifar10:DIR, cifar100:DIR, folder:DIR")
    path = Path(rest).expanduser() if sep and rest.strip() else None
    if kind == "bundled" and path is not None:
        raise DataError(f"--data {text!r}: 'bundled' takes no directory")
    if kind in ("cifar10", "cifar100", "folder") and path is None:
        raise DataError(f"--data {text!r}: {kind} needs a directory, e.g. {kind}:/data/{kind}")
    if kind == "fashion-mnist" and path is None:
        path = DEFAULT_FASHION_MNIST_DIR
    return DataSpec(kind, path)


def load_data(spec: "str | DataSpec" = "bundled", *, image_size: int = 32) -> Dataset:
    """Load a data set into memory.

    Args:
        spec: a ``--data`` string (see the module docstring) or a parsed :class:`DataSpec`.
        image_size: for ``folder:`` only, the square size in pixels every image is resized to when decoded.

    Returns:
        A :class:`Dataset` of ``uint8`` NHWC arrays.

    Raises:
        DataError: the directory is missing or empty, a file is missing, truncated or corrupt, or an
            ImageFolder has fewer than two classes; the message names the path.
    """
    ds = parse_data_spec(spec)
    if ds.kind == "bundled":
        return _load_bundled()
    assert ds.path is not None
    _require_dir(ds.path)
    if ds.kind == "fashion-mnist":
        return _load_fashion_mnist(ds.path)
    if ds.kind in ("cifar10", "cifar100"):
        return _load_cifar(ds.path, fine=ds.kind == "cifar100")
    if not isinstance(image_size, int) or image_size < 8:
        raise DataError(f"image_size={image_size!r}: must be an integer of at least 8 pixels")
    return _load_folder(ds.path, image_size=image_size)


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


# ----------------------------------------------------------------------------------------- splitting
def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over classes in proportion to ``counts`` (largest remainder; exact sum, never above counts)."""
    want = counts * (total / max(1, counts.sum()))
    out = np.minimum(np.floor(want).astype(np.int64), counts)
    order = np.argsort(-(want - out), kind="stable")
    i = 0
    while out.sum() < total and i < 2 * len(counts):  # bounded: at most two passes over the classes
        c = order[i % len(counts)]
        if out[c] < counts[c]:
            out[c] += 1
        i += 1
    return out


def split_train_val(dataset: Dataset, *, val_size: int | float = 0.1, train_size: int | None = None,
                    seed: int = 0) -> Split:
    """Carve a stratified validation split out of ``dataset``'s train split.

    The two index sets are disjoint and both come from the train split; the test split is not touched.
    The same ``seed`` gives the same split.

    Args:
        dataset: a loaded :class:`Dataset`.
        val_size: number of validation images, or a fraction in (0, 1) of the train split.
        train_size: number of training images to keep from what remains (stratified); ``None`` keeps all.
        seed: seeds the per-class permutation.

    Returns:
        A :class:`Split`.

    Raises:
        DataError: the sizes do not fit the data set.
    """
    labels = dataset.train_labels
    n = len(labels)
    n_val = int(round(val_size * n)) if isinstance(val_size, float) else int(val_size)
    if isinstance(val_size, float) and not 0.0 < val_size < 1.0:
        raise DataError(f"val_size={val_size}: a fraction must be strictly between 0 and 1")
    if n_val < 1 or n_val >= n:
        raise DataError(f"{dataset.source}: val_size={val_size} leaves no train or no validation images "
                        f"out of {n}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    counts = np.array([len(p) for p in per_class])
    val_take = _allocate(counts, n_val)
    rest = counts - val_take
    n_train = int(rest.sum()) if train_size is None else int(train_size)
    if n_train < 1 or n_train > rest.sum():
        raise DataError(f"{dataset.source}: train_size={train_size} must be 1..{int(rest.sum())} after "
                        f"{n_val} validation images")
    train_take = _allocate(rest, n_train)
    val_idx = np.concatenate([p[:k] for p, k in zip(per_class, val_take)])
    train_idx = np.concatenate([p[k:k + t] for p, k, t in zip(per_class, val_take, train_take)])
    # Sorted so that the order does not depend on class grouping; the trainer shuffles with its own seed.
    val_idx.sort()
    train_idx.sort()
    return Split(train_images=dataset.train_images[train_idx], train_labels=labels[train_idx],
                 val_images=dataset.train_images[val_idx], val_labels=labels[val_idx],
                 train_indices=train_idx, val_indices=val_idx, num_classes=dataset.num_classes,
                 channels=dataset.channels)
