import json

import pytest

from nas.arch import ArchConfig
from nas.builder import build_model
from nas.cli import main


def test_flops_json(capsys):
    assert main(["flops", "--preset", "shufflenetv2-1.0x", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == 2_278_604 and abs(out["mflops"] - 144.9) < 0.1


def test_space_show_json(capsys):
    assert main(["space", "show", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["architectures"] > 1e6 and out["mflops_min"] < 41 < out["mflops_max"]


def test_sample_configs_build_run_and_reload(tmp_path, capsys):
    import torch

    assert main(["sample", "--n", "3", "--seed", "5", "--out", str(tmp_path), "--json"]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert len(files) == 3
    for f in files:
        cfg = ArchConfig.from_json(open(f).read())
        assert ArchConfig.from_json(cfg.to_json()) == cfg
        model = build_model(f).eval()
        with torch.no_grad():
            for res in (224, 32):
                assert model(torch.randn(1, 3, res, res)).shape == (1, 1000)


def _cfg(tmp_path, **stage):
    d = {"stages": [{"depth": 2, "width": 48, "split_ratio": 0.5, "se": False, "kernel": 3, **stage}]}
    p = tmp_path / "c.json"
    p.write_text(json.dumps(d))
    return str(p)


@pytest.mark.parametrize(
    "argv_fn,field",
    [
        (lambda t: ["flops", _cfg(t, width=47)], "width"),
        (lambda t: ["flops", _cfg(t, split_ratio=1.2)], "split_ratio"),
        (lambda t: ["flops", "--preset", "shufflenetv2-9x"], "--preset"),
        (lambda t: ["flops", str(t / "missing.json")], "missing.json"),
        (lambda t: ["space", "show", str(t / "nope.toml")], "nope.toml"),
        (lambda t: ["sample", "--n", "0", "--out", str(t)], "--n"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys, argv_fn, field):
    assert main(argv_fn(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and field in err and "Traceback" not in err


def test_bad_space_file_key_exits_2(tmp_path, capsys):
    p = tmp_path / "s.toml"
    p.write_text('name = "x"\nresolution = [224]\nstem_channels = [24]\nhead_channels = ["big"]\n'
                 "[[stages]]\ndepth=[2]\nwidth=[48]\nsplit_ratio=[0.5]\nse=[false]\nkernel=[3]\n")
    assert main(["space", "show", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert "head_channels" in err and "\n" not in err
