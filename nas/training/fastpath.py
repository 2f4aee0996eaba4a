"""The exact tiny-map fast path: depthwise and 1x1 convs on maps of <= 2x2 pixels computed as small products.

With the ImageNet stem a 32² input leaves 2x2 and 1x1 maps in the last two stages. There oneDNN's depthwise
backward costs 10-15 ms per call for 128 images (thread CPU time, 1 thread: ~40x its arithmetic), and a 1x1
conv 2-3x a plain GEMM. :func:`use_tiny_map_path` wraps those convs in :class:`TinyMapConv` (same weights, same
function); :func:`plain_convs` undoes it for a while, so a ``state_dict`` has ``build_model``'s keys. Measured on
ShuffleNetV2 1x, batch 128: ~1.7x the images/s of the plain network (``benchmarks/bench_train_throughput.py``).

torch is imported inside functions (``import nas`` stays free of it), so the wrapper class is built once, on
first use, by :func:`tiny_map_conv_class`.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Iterator

__all__ = ["TINY_MAP_PIXELS", "tiny_map_conv_class", "is_tiny_map_conv", "use_tiny_map_path", "plain_convs"]

TINY_MAP_PIXELS = 4  # maps of at most 2x2 pixels; from 4x4 up, oneDNN's own kernels are faster (measured)


@functools.cache  # one class per process, so ``isinstance`` recognises every wrapper
def tiny_map_conv_class() -> type:
    """The :class:`TinyMapConv` wrapper class (an ``nn.Module`` wrapping one ``nn.Conv2d``)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class TinyMapConv(nn.Module):
        """The same convolution, computed another way on maps of <= 2x2 pixels (same weights, same function).

        On such maps a depthwise conv is a per-channel (H·W x Ho·Wo) matrix (built by convolving the identity
        basis: exact taps, padding and stride) and a 1x1 conv is ``F.linear``; autograd differentiates both
        cheaply. Larger maps go through the wrapped conv unchanged.
        """

        def __init__(self, conv: nn.Conv2d) -> None:
            super().__init__()
            self.conv = conv
            self.depthwise = conv.groups == conv.in_channels == conv.out_channels > 1
            self.pointwise = conv.groups == 1 and conv.kernel_size == (1, 1) and conv.stride == (1, 1) \
                and conv.padding == (0, 0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            c = self.conv
            b, ch, h, w = x.shape
            if h * w > TINY_MAP_PIXELS or c.padding_mode != "zeros":
                return c(x)
            if self.pointwise:
                y = F.linear(x.permute(0, 2, 3, 1).reshape(-1, ch), c.weight.flatten(1), c.bias)
                return y.view(b, h, w, -1).permute(0, 3, 1, 2)
            kh, kw = c.kernel_size
            if h == w == 1 and c.padding == (kh // 2, kw // 2) and c.dilation == (1, 1):
                y = x * c.weight[:, 0, kh // 2, kw // 2].view(1, -1, 1, 1)  # only the centre tap sees the pixel
            else:
                eye = torch.eye(h * w, dtype=x.dtype, device=x.device).view(h * w, 1, h, w).expand(h * w, ch, h, w)
                basis = F.conv2d(eye, c.weight, None, c.stride, c.padding, c.dilation, ch)  # (HW, C, Ho, Wo)
                ho, wo = basis.shape[2:]
                m = basis.flatten(2)  # m[i, c, o]: output pixel o's weight on input pixel i, per channel
                xf = x.reshape(b, ch, h * w)
                y = xf[:, :, 0:1] * m[0]
                for i in range(1, h * w):  # at most 4 multiply-adds on (B, C, Ho·Wo): cheaper than a bmm here
                    y = y + xf[:, :, i:i + 1] * m[i]
                y = y.view(b, ch, ho, wo)
            if c.bias is not None:
                y = y + c.bias.view(1, -1, 1, 1)
            return y

    return TinyMapConv


def is_tiny_map_conv(module: Any) -> bool:
    """Whether ``module`` is a :class:`TinyMapConv` wrapper."""
    return isinstance(module, tiny_map_conv_class())


def use_tiny_map_path(module: Any) -> None:
    """Wrap every depthwise and 1x1 conv of ``module`` in place (see ``TinyMapConv``); parameters are shared.

    Parameters keep their order, so an optimizer state saved from the plain network still lines up.
    """
    from torch import nn

    cls = tiny_map_conv_class()
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d) and (child.groups == child.in_channels == child.out_channels > 1
                                             or (child.groups == 1 and child.kernel_size == (1, 1))):
            setattr(module, name, cls(child))
        else:
            use_tiny_map_path(child)


@contextlib.contextmanager
def plain_convs(model: Any) -> Iterator[Any]:
    """Temporarily undo :func:`use_tiny_map_path`, so ``model.state_dict()`` has ``build_model``'s keys."""
    swapped = []

    def unwrap(module: Any) -> None:
        for name, child in list(module.named_children()):
            if is_tiny_map_conv(child):
                setattr(module, name, child.conv)
                swapped.append((module, name, child))
            else:
                unwrap(child)

    unwrap(model)
    try:
        yield model
    finally:
        for module, name, wrapper in swapped:
            setattr(module, name, wrapper)
