import random
from pathlib import Path

import pytest

from nas.arch import PRESETS
from nas.errors import SpaceError
from nas.macs import count_macs
from nas.space import load_space

SPACE_FILES = sorted(Path(__file__).resolve().parent.parent.joinpath("search_spaces").glob("*.toml"))


@pytest.mark.parametrize("path", SPACE_FILES, ids=lambda p: p.name)
def test_shipped_spaces_load_and_sample(path):
    space = load_space(path)
    rng = random.Random(0)
    for _ in range(50):
        cfg = space.sample(rng)
        assert space.contains(cfg)
        ids = {b.id for b in space.enumerate_blocks(resolution=cfg.resolution)}
        assert {b.id for b in cfg.blocks()} <= ids
    lo, hi = count_macs(space.smallest()), count_macs(space.largest())
    assert lo.macs < hi.macs


def test_default_space_contains_the_paper_presets():
    space = load_space()
    for name, cfg in PRESETS.items():
        if not cfg.stages[0].se:
            assert space.contains(cfg), name
    assert space.hash == load_space(SPACE_FILES[0]).hash


def test_hash_ignores_comments_and_order(tmp_path):
    text = load_space().source and Path(load_space().source).read_text()
    p = tmp_path / "copy.toml"
    p.write_text("# a comment\n" + text.replace("head_channels = [1024, 1536, 2048]", "head_channels = [2048, 1024, 1536]"))
    assert load_space(p).hash == load_space().hash


def test_optuna_sampling_uses_knob_names():
    import optuna

    space = load_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    cfg = space.sample(trial)
    assert set(trial.params) == set(space.knobs())
    assert space.params_of(cfg) == trial.params


GOOD = """
name = "t"
resolution = [64]
stem_channels = [8]
head_channels = [32]
[[stages]]
depth = [1, 2]
width = [16]
split_ratio = [0.5]
se = [false]
kernel = [3]
"""


@pytest.mark.parametrize(
    "text,needle",
    [
        (GOOD.replace('name = "t"\n', ""), "'name'"),
        (GOOD.replace("head_channels = [32]", "head_channels = [32]\ncolour = [1]"), "'colour'"),
        (GOOD.replace("kernel = [3]", "kernel = 3"), "kernel"),
        (GOOD.replace("width = [16]", 'width = ["16"]'), "width"),
        (GOOD.replace("width = [16]", "width = [15]"), "width"),
        (GOOD.replace("split_ratio = [0.5]", "split_ratio = [1.2]"), "split_ratio"),
        (GOOD.replace("kernel = [3]", "kernel = [4]"), "kernel"),
        (GOOD.replace("depth = [1, 2]\n", ""), "'depth'"),
        (GOOD + "\n[[oops", "TOML"),
    ],
)
def test_bad_space_files(tmp_path, text, needle):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(SpaceError, match=needle):
        load_space(p)
    assert load_space(_write(tmp_path, GOOD)).size == 2


def _write(tmp_path, text):
    p = tmp_path / "good.toml"
    p.write_text(text)
    return p


def test_missing_space_file(tmp_path):
    with pytest.raises(SpaceError, match="not found"):
        load_space(tmp_path / "nope.toml")
