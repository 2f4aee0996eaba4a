"""MACs and parameters of any ``nn.Module`` (the reference networks and the guideline benchmarks are not
``ArchConfig``s, so :mod:`nas.macs`'s analytic counter does not apply).

"FLOPs" means multiply-adds (MACs), as everywhere in ``nas`` (see :mod:`nas.units`): convolutions and linear
layers only, which is what ``torch.utils.flop_counter.FlopCounterMode`` counts divided by two (cross-checked in
the tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["module_macs"]


def module_macs(model: "nn.Module", input_shape: Sequence[int]) -> tuple[int, int]:
    """Multiply-adds and parameters of ``model`` for one input of ``input_shape`` (batch included).

    Counts conv and linear layers only (the paper's FLOPs; BN, ReLU, pooling, adds are free), per
    image: MACs are divided by the batch size.

    Returns:
        ``(macs, params)``; ``params`` counts trainable parameters.
    """
    import torch
    from torch import nn

    total = [0]

    def hook(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        if isinstance(mod, nn.Conv2d):
            per_out = (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
            total[0] += out.numel() * per_out
        elif isinstance(mod, nn.Linear):
            total[0] += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        was_training = model.training
        model.eval()
        # On the model's device: a model built under ``torch.device("meta")`` is counted without any
        # arithmetic (shapes only), which makes counting 19 reference nets take well under a second.
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros(tuple(input_shape), device=device))
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total[0] // int(input_shape[0]), params
