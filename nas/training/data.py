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
        raise DataError(f"data {text!r}: unknown kind {kind!r}; use one of bundled, fashion-mnist[:DIR], "
                        "cifar10:DIR, cifar100:DIR, folder:DIR", field="data")
    path = Path(rest).expanduser() if sep and rest.strip() else None
    if kind == "bundled" and path is not None:
        raise DataError(f"data {text!r}: 'bundled' takes no directory", field="data")
    if kind in ("cifar10", "cifar100", "folder") and path is None:
        raise DataError(f"data {text!r}: {kind} needs a directory, e.g. {kind}:/data/{kind}", field="data")
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
            ImageFolder has fewer than two classes; the message names the path (``field="data"``).
    """
    from nas.training import readers

    ds = parse_data_spec(spec)
    try:
        return readers.read_data_set(ds, image_size=image_size)
    except DataError as e:
        if e.field is None:  # a file of the data set: the data spec is what to change
            e.field = "data"
        raise


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
        raise DataError(f"val_size={val_size}: a fraction must be strictly between 0 and 1", field="val_size")
    if n_val < 1 or n_val >= n:
        raise DataError(f"{dataset.source}: val_size={val_size} leaves no train or no validation images "
                        f"out of {n}", field="val_size")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    counts = np.array([len(p) for p in per_class])
    val_take = _allocate(counts, n_val)
    rest = counts - val_take
    n_train = int(rest.sum()) if train_size is None else int(train_size)
    if n_train < 1 or n_train > rest.sum():
        raise DataError(f"{dataset.source}: train_size={train_size} must be 1..{int(rest.sum())} after "
                        f"{n_val} validation images", field="train_size")
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
