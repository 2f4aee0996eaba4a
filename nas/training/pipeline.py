"""The in-memory input pipeline shared by the proxy, the zero-cost scores and full training.

Images are decoded and resized once per (data set, resolution, split) and cached as ``uint8`` tensors
(:func:`prepare`); each batch is an index, a cast, a normalisation and a flip on whole tensors
(:func:`make_batch`), which is a few per cent of a step, so no loader workers compete with the compute threads
for cores. On CUDA the cached tensors move to the GPU once (:func:`on_device`) and the same code runs there.
Normalisation uses per-channel statistics of the training images only (the validation split must not leak).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from nas.training.data import Dataset, DataSpec, Split, load_data, parse_data_spec, split_train_val

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

__all__ = ["Prepared", "resize_u8", "prepare", "resolve_data", "on_device", "make_batch"]

RESIZE_CHUNK = 4096  # images resized per interpolate call: bounds the float32 working memory (~200 MB at 64²x3)


@dataclass(frozen=True, eq=False)
class Prepared:
    """A train/validation split as cached ``uint8`` tensors, with its normalisation.

    Attributes:
        train_x / val_x: uint8 ``(N, C, R, R)``; train_y / val_y: int64 ``(N,)``.
        mean / std: float32 ``(1, C, 1, 1)`` in uint8 units, from the training images only.
        num_classes / channels: of the data set.
        data: what results record about the data (:meth:`Dataset.describe` plus the split's sizes and seed).
    """

    train_x: "torch.Tensor"
    train_y: "torch.Tensor"
    val_x: "torch.Tensor"
    val_y: "torch.Tensor"
    mean: "torch.Tensor"
    std: "torch.Tensor"
    num_classes: int
    channels: int
    data: dict[str, Any]


def resize_u8(images: "np.ndarray", resolution: int) -> "torch.Tensor":
    """uint8 NHWC numpy -> uint8 NCHW tensor at ``resolution``² (bilinear; antialiased when shrinking).

    Args:
        images: ``uint8 (N, H, W, C)``.
        resolution: the square output size in pixels.

    Returns:
        ``uint8 (N, C, resolution, resolution)`` (the input itself, made contiguous, if already that size).
    """
    import torch
    import torch.nn.functional as F

    with warnings.catch_warnings():  # a read-only (memory-mapped) array: only read here, never written
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        x = torch.from_numpy(images).permute(0, 3, 1, 2)
    if tuple(x.shape[2:]) == (resolution, resolution):
        return x.contiguous()
    out = torch.empty((x.shape[0], x.shape[1], resolution, resolution), dtype=torch.uint8)
    shrink = resolution < max(x.shape[2], x.shape[3])
    for i in range(0, x.shape[0], RESIZE_CHUNK):
        y = F.interpolate(x[i:i + RESIZE_CHUNK].float(), size=(resolution, resolution), mode="bilinear",
                          align_corners=False, antialias=shrink)
        out[i:i + RESIZE_CHUNK] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


@functools.lru_cache(maxsize=2)  # a search reuses one (data, resolution, split); 2 covers proxy + reference
def prepare(dataset: Dataset, resolution: int, val_size: "int | float", train_size: int | None,
            split_seed: int) -> Prepared:
    """Split ``dataset`` (:func:`~nas.training.data.split_train_val`), resize and cache it (CPU tensors).

    Cached on the arguments (a :class:`Dataset` hashes by identity), so pass one loaded data set per search.

    Raises:
        DataError: the sizes do not fit the data set.
    """
    import torch

    split: Split = split_train_val(dataset, val_size=val_size, train_size=train_size, seed=split_seed)
    tx = resize_u8(split.train_images, resolution)
    vx = resize_u8(split.val_images, resolution)
    mean = tx.float().mean(dim=(0, 2, 3), keepdim=True)
    std = tx.float().std(dim=(0, 2, 3), keepdim=True).clamp_min(1.0)  # a constant channel: no division by 0
    info = dataset.describe() | {"train_used": int(len(split.train_labels)), "val": int(len(split.val_labels)),
                                 "split_seed": split_seed}
    return Prepared(tx, torch.from_numpy(split.train_labels), vx, torch.from_numpy(split.val_labels),
                    mean, std, dataset.num_classes, dataset.channels, info)


@functools.lru_cache(maxsize=2)
def _load_cached(spec: str, image_size: int) -> Dataset:
    return load_data(spec, image_size=image_size)


def resolve_data(data: "Dataset | DataSpec | str", resolution: int) -> Dataset:
    """``data`` itself if loaded, else the data set of that spec (cached: the last two specs stay loaded).

    Raises:
        DataError: the spec is invalid or the data cannot be loaded.
    """
    if isinstance(data, Dataset):
        return data
    return _load_cached(str(parse_data_spec(data)), resolution)


def on_device(p: Prepared, device: "torch.device") -> Prepared:
    """``p`` with every tensor on ``device`` (``p`` itself on CPU; the cached CPU copy is never changed)."""
    if device.type == "cpu":
        return p
    return replace(p, train_x=p.train_x.to(device), train_y=p.train_y.to(device), val_x=p.val_x.to(device),
                   val_y=p.val_y.to(device), mean=p.mean.to(device), std=p.std.to(device))


def make_batch(p: Prepared, x_u8: "torch.Tensor", idx: "torch.Tensor", *, flip: bool,
               gen: "torch.Generator | None", channels_last: bool) -> "torch.Tensor":
    """One normalised float batch ``x_u8[idx]``, optionally flipped left-right per image.

    Args:
        p: gives the normalisation.
        x_u8: cached uint8 images on the model's device.
        idx: which images, on the same device.
        flip: flip each image with probability 1/2, drawn from ``gen`` (on CPU, so CPU and CUDA runs agree).
        gen: the run's generator (unused without ``flip``).
        channels_last: return channels-last memory (oneDNN's fast path on CPU).
    """
    import torch

    x = (x_u8[idx].float() - p.mean) / p.std
    if flip:
        mask = torch.rand(len(idx), generator=gen, device="cpu") < 0.5
        mask = mask.to(x.device).view(-1, 1, 1, 1)
        x = torch.where(mask, x.flip(3), x)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x
