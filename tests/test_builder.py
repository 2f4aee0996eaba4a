import random

import pytest
import torch

from nas.arch import PRESETS, ArchConfig
from nas.builder import build_block, build_model
from nas.space import load_space

# torchvision.models.shufflenet_v2_x*_* parameter counts (1000 classes).
TORCHVISION_PARAMS = {
    "shufflenetv2-0.5x": 1_366_792,
    "shufflenetv2-1.0x": 2_278_604,
    "shufflenetv2-1.5x": 3_503_624,
    "shufflenetv2-2.0x": 7_393_996,
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_presets_match_torchvision_params(name):
    model = build_model(PRESETS[name])
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[name]


def test_build_model_accepts_dict_path_and_name(tmp_path):
    cfg = PRESETS["shufflenetv2-0.5x"]
    p = tmp_path / "found.json"
    p.write_text(cfg.to_json())
    for src in (cfg, cfg.to_dict(), p, str(p), "shufflenetv2-0.5x"):
        assert build_model(src, num_classes=10).config == cfg


@pytest.mark.parametrize("stem,res", [("imagenet", 224), ("imagenet", 32), ("cifar", 32)])
def test_forward_shapes(stem, res):
    model = build_model(PRESETS["shufflenetv2-0.5x"], num_classes=7, stem=stem).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, res, res)).shape == (2, 7)


def test_blocks_compose_to_the_model():
    """Running the table's blocks one after another gives exactly the whole model's output."""
    cfg = load_space().sample(random.Random(3)).with_resolution(64)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    modules = [model.stem] + [u for stage in model.stages for u in stage] + [model.head]
    keys = cfg.blocks()
    assert len(modules) == len(keys)
    x = torch.randn(1, 3, 64, 64)
    y = x
    with torch.no_grad():
        for key, module in zip(keys, modules):
            assert y.shape[1:] == (key.in_channels, key.resolution, key.resolution)
            block = build_block(key)
            block.load_state_dict(module.state_dict())
            y = block.eval()(y)
        assert torch.allclose(y, model(x), atol=1e-5)


def test_unequal_split_and_extras_run():
    d = PRESETS["shufflenetv2-0.5x"].to_dict()
    d["stages"][1]["split_ratio"] = 0.25
    d["stages"][2]["split_ratio"] = 0.75
    d["stages"][0]["se"] = True
    d["stages"][0]["kernel"] = 7
    for extra in ({}, {"residual": True}, {"extra_dw": True}):
        cfg = ArchConfig.from_dict({**d, **extra})
        with torch.no_grad():
            assert build_model(cfg, 5).eval()(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_interleave_equals_the_paper_shuffle():
    from nas.blocks import channel_shuffle, concat_shuffle

    a, b = torch.randn(2, 6, 5, 5), torch.randn(2, 6, 5, 5)
    assert torch.equal(concat_shuffle(a, b), channel_shuffle(torch.cat((a, b), 1), 12))
    # the paper's shuffle: output channel 2i is a's i-th, 2i+1 is b's i-th
    assert torch.equal(concat_shuffle(a, b)[:, 1::2], b)
