"""Rebuild ``fashion_mnist_subset.npz`` (the ``--data bundled`` set) from the full Fashion-MNIST.

Deterministic: a stratified draw of 600 train and 100 test images per class with
``numpy.random.default_rng(0)``, written with fixed zip timestamps so the file is byte-identical on every run.

    python -m nas._data.make_subset [/usr/share/datasets/fashion-mnist]

Source: Debian package ``dataset-fashion-mnist`` (Fashion-MNIST, MIT licence, (c) 2017 Zalando SE).
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import numpy as np

TRAIN_PER_CLASS = 600
TEST_PER_CLASS = 100
SEED = 0


def stratified(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    idx = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(10)]
    return np.sort(np.concatenate(idx))


def main(argv: list[str]) -> int:
    from nas.training.data import DEFAULT_FASHION_MNIST_DIR, load_data

    src = Path(argv[0]) if argv else DEFAULT_FASHION_MNIST_DIR
    ds = load_data(f"fashion-mnist:{src}")
    rng = np.random.default_rng(SEED)
    tr = stratified(ds.train_labels, TRAIN_PER_CLASS, rng)
    te = stratified(ds.test_labels, TEST_PER_CLASS, rng)
    arrays = {
        "x_train": ds.train_images[tr, :, :, 0], "y_train": ds.train_labels[tr].astype(np.uint8),
        "x_test": ds.test_images[te, :, :, 0], "y_test": ds.test_labels[te].astype(np.uint8),
    }
    out = Path(__file__).with_name("fashion_mnist_subset.npz")
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name, a in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, buf.getvalue(), compresslevel=9)
    print(f"{out}: {out.stat().st_size / 1e6:.2f} MB, train {len(tr)}, test {len(te)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
