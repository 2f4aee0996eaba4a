import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nas.arch import PRESETS
from nas.builder import build_model
from nas.macs import count_macs
from nas.space import load_space

PAPER_MFLOPS = {"shufflenetv2-0.5x": 41, "shufflenetv2-1.0x": 146, "shufflenetv2-1.5x": 299, "shufflenetv2-2.0x": 591}


def torch_count(cfg, *, num_classes=1000, in_channels=3, stem="imagenet"):
    """PyTorch's own count. On the meta device: shapes and FlopCounterMode work, no weights are
    initialised and nothing is computed, so hundreds of configs stay cheap."""
    with torch.device("meta"):
        model = build_model(cfg, num_classes, in_channels=in_channels, stem=stem).eval()
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model(torch.zeros(1, in_channels, cfg.resolution, cfg.resolution))
    return fc.get_total_flops() // 2, sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(PAPER_MFLOPS))
def test_presets_match_the_paper(name):
    m = count_macs(PRESETS[name])
    assert abs(m.macs / 1e6 - PAPER_MFLOPS[name]) / PAPER_MFLOPS[name] < 0.02


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_agree_with_flop_counter(name):
    cfg = PRESETS[name]
    m = count_macs(cfg)
    assert (m.macs, m.params) == torch_count(cfg)


def test_sampled_configs_agree_with_flop_counter():
    """>= 200 sampled configs of the default space, at several resolutions, class counts and both stems."""
    space = load_space()
    rng = random.Random(2024)
    for i in range(200):
        cfg = space.sample(rng).with_resolution(rng.choice([32, 64, 160, 224]))
        extra = {"num_classes": rng.choice([10, 1000])}
        if i % 3 == 0:
            extra.update(in_channels=1, stem="cifar")
        m = count_macs(cfg, **extra)
        assert (m.macs, m.params) == torch_count(cfg, **extra), cfg.to_string()
    for cfg in (space.smallest(), space.largest()):
        assert (count_macs(cfg).macs, count_macs(cfg).params) == torch_count(cfg)
