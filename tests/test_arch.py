import json

import pytest

from nas.arch import PRESETS, ArchConfig, StageConfig, load_config, preset
from nas.errors import ConfigError


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trips(name, tmp_path):
    cfg = PRESETS[name]
    assert ArchConfig.from_json(cfg.to_json()) == cfg
    assert ArchConfig.from_string(cfg.to_string()) == cfg
    assert ArchConfig.from_json(cfg.to_json()).hash() == cfg.hash()
    path = tmp_path / "c.json"
    path.write_text(cfg.to_json())
    assert load_config(path) == cfg
    # an export file wraps the config with provenance
    path.write_text(json.dumps({"config": cfg.to_dict(), "provenance": {"trial": 3}}))
    assert load_config(path) == cfg


def test_hash_is_content_based():
    a = preset("1x")
    b = ArchConfig.from_dict({**a.to_dict(), "name": "other label"})
    assert a == b and a.hash() == b.hash()
    c = ArchConfig.from_dict({**a.to_dict(), "head_channels": 2048})
    assert c.hash() != a.hash()


def test_preset_aliases():
    assert preset("1x") is preset("shufflenetv2-1.0x") is preset("1.0x")
    with pytest.raises(ConfigError) as e:
        preset("shufflenetv2-3x")
    assert e.value.field == "preset"


def _stage(**kw):
    base = dict(depth=4, width=116, split_ratio=0.5, se=False, kernel=3)
    base.update(kw)
    return base


@pytest.mark.parametrize(
    "stage,field",
    [
        (_stage(width=117), r"stages\[0\]\.width"),
        (_stage(split_ratio=1.2), r"stages\[0\]\.split_ratio"),
        (_stage(split_ratio=0.0), r"stages\[0\]\.split_ratio"),
        (_stage(width=118, split_ratio=0.25), r"stages\[0\]\.split_ratio"),
        (_stage(kernel=4), r"stages\[0\]\.kernel"),
        (_stage(depth=0), r"stages\[0\]\.depth"),
        (_stage(se="yes"), r"stages\[0\]\.se"),
        (_stage(colour="red"), r"stages\[0\]\.colour"),
    ],
)
def test_invalid_configs_name_the_field(stage, field):
    with pytest.raises(ConfigError, match=field):
        ArchConfig.from_dict({"stages": [stage]})


def test_unknown_and_missing_top_keys():
    with pytest.raises(ConfigError, match="'widths'"):
        ArchConfig.from_dict({"stages": [_stage()], "widths": 3})
    with pytest.raises(ConfigError, match="'stages'"):
        ArchConfig.from_dict({"resolution": 224})
    with pytest.raises(ConfigError, match="stem_channels"):
        ArchConfig(stages=(StageConfig(4, 116),), stem_channels=0)
    with pytest.raises(ConfigError, match="JSON"):
        ArchConfig.from_json("{not json")


def test_blocks_follow_the_network():
    cfg = preset("1x")
    blocks = cfg.blocks()
    assert [b.kind for b in blocks] == ["stem"] + ["down"] + ["basic"] * 3 + ["down"] + ["basic"] * 7 + [
        "down"] + ["basic"] * 3 + ["head"]
    assert [b.resolution for b in blocks if b.kind == "down"] == [56, 28, 14]
    assert blocks[-1].resolution == 7
    assert len({b.id for b in blocks}) == 8
