"""Zero-cost scores: rank untrained networks from one batch (NASWOT) or none (synflow), for huge spaces.

Both score the network at initialisation, built under the same seed, stem and resolution as
:func:`~nas.training.proxy.proxy_train` would train it, and see the same data pipeline
(:mod:`nas.training.pipeline`).
"""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping

from nas.arch import ArchConfig, load_config
from nas.errors import DataError, UsageError
from nas.training.data import Dataset, DataSpec
from nas.training.loop import session
from nas.training.pipeline import make_batch, prepare, resolve_data
from nas.training.proxy import PROXY_PRESETS, ProxySettings

__all__ = ["ZERO_COST_METHODS", "zero_cost_score"]

ZERO_COST_METHODS = ("naswot", "synflow")


def zero_cost_score(
    config: "ArchConfig | Mapping[str, Any] | str",
    *,
    data: "Dataset | DataSpec | str" = "bundled",
    settings: ProxySettings = PROXY_PRESETS["quick"],
    method: Literal["naswot", "synflow"] = "naswot",
    batch_size: int = 64,
    seed: int = 0,
) -> float:
    """A training-free score of ``config`` at initialisation (higher = predicted more accurate).

    ``naswot`` (Mellor et al., 2021): log-determinant of the kernel of binary ReLU activation codes over one
    batch of training images; networks whose ReLUs separate the images better score higher. ``synflow``
    (Tanaka et al., 2020): log of the summed |θ·∂R/∂θ| for R = sum of the output of the network with all
    weights made positive, on an all-ones input (data-independent; float64 to avoid overflow).

    Args:
        config: an :class:`ArchConfig`, its dict form, a JSON path or a preset name.
        data: as for :func:`~nas.training.proxy.proxy_train` (``settings`` gives the resolution, stem and split).
        settings: the resolution, stem and split to score under.
        method: ``"naswot"`` or ``"synflow"``.
        batch_size: images in the batch (NASWOT's kernel is batch_size²).
        seed: seeds weight init and the batch drawn.

    Returns:
        The score (``-inf`` if NASWOT's kernel is singular).

    Raises:
        UsageError: unknown method (``field="method"``) or bad batch size (``field="batch_size"``).
        DataError / ConfigError: as for :func:`~nas.training.proxy.proxy_train`.
    """
    import torch

    from nas.builder import build_model

    if method not in ZERO_COST_METHODS:
        raise UsageError(f"method {method!r} is unknown; use one of {list(ZERO_COST_METHODS)}", field="method")
    if not isinstance(batch_size, int) or batch_size < 2:
        raise UsageError(f"batch_size={batch_size!r}: must be an integer of at least 2", field="batch_size")
    cfg = load_config(config)
    s = settings
    p = prepare(resolve_data(data, s.resolution), s.resolution, s.val_size, s.train_size, s.split_seed)
    if len(p.train_y) < batch_size:
        raise DataError(f"{p.data['source']}: {len(p.train_y)} training images, fewer than batch_size={batch_size}",
                        field="batch_size")
    with session(seed=seed, threads=None):
        model = build_model(cfg, p.num_classes, in_channels=p.channels, stem=s.stem)
    if method == "synflow":
        return _synflow(model, p.channels, s.resolution)
    idx = torch.randperm(len(p.train_y), generator=torch.Generator().manual_seed(seed))[:batch_size]
    return _naswot(model, make_batch(p, p.train_x, idx, flip=False, gen=None, channels_last=False))


def _naswot(model: Any, x: Any) -> float:
    """log |K| of the Hamming-agreement kernel of ReLU codes over batch ``x`` (``-inf`` if singular)."""
    import torch
    from torch import nn

    n = x.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64)

    def hook(_m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        codes = (out.detach().flatten(1) > 0).double()
        kernel.add_(codes @ codes.t()).add_((1 - codes) @ (1 - codes).t())  # Hamming agreement

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        model.train()  # batch statistics: at init the running stats are 0/1 and carry no information
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if float(sign) > 0 else float("-inf")


def _synflow(model: Any, channels: int, resolution: int) -> float:
    """log of the summed |θ·∂R/∂θ| with all weights made positive, on an all-ones float64 input."""
    import torch

    model = model.double().eval()  # eval: BN at init is the identity (mean 0, var 1), as the method assumes
    with torch.no_grad():
        for q in model.state_dict().values():
            if q.is_floating_point():
                q.abs_()
    model.zero_grad()
    out = model(torch.ones(1, channels, resolution, resolution, dtype=torch.float64))
    out.sum().backward()
    total = sum(float((q.detach() * q.grad).abs().sum()) for q in model.parameters() if q.grad is not None)
    return math.log(total) if total > 0 else float("-inf")
