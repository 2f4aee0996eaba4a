"""nas.training.proxy, zero_cost and fastpath: real training steps on the bundled Fashion-MNIST subset and on an
ImageFolder written on the fly."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from nas.arch import ArchConfig, StageConfig
from nas.cli import main
from nas.errors import DataError, TrainingDivergedError, UsageError
from nas.training.proxy import PROXY_PRESETS, ProxySettings, proxy_settings, proxy_train
from nas.training.zero_cost import ZERO_COST_METHODS, zero_cost_score

from test_data import write_folder  # tests/ is on sys.path (pytest rootdir-relative imports)

# A small but complete network (stem, three stages, a basic unit, head) that trains in well under a second.
TINY = ArchConfig(stages=(StageConfig(1, 16), StageConfig(2, 32), StageConfig(1, 64)), stem_channels=8,
                  head_channels=64, name="tiny")
FAST = ProxySettings(steps=6, train_size=256, val_size=100, batch_size=32, reports=2, bn_recalibration=1,
                     resolution=32, threads=1)


def test_same_seed_same_accuracy():
    a = proxy_train(TINY, settings=FAST, seed=3)
    b = proxy_train(TINY, settings=FAST, seed=3)
    c = proxy_train(TINY, settings=FAST, seed=4)
    assert a.accuracy == b.accuracy and a.history == b.history and a.final_loss == b.final_loss
    assert c.final_loss != a.final_loss  # the seed is used
    assert 0.0 <= a.accuracy <= 1.0
    assert a.steps == a.total_steps == 6 and a.images_seen == 6 * 32 and not a.pruned
    assert [s for s, _ in a.history] == [3, 6]
    assert a.data["train_used"] == 256 and a.data["val"] == 100
    json.dumps(a.to_dict())


def test_training_learns_on_real_images():
    s = FAST.replace(steps=30, train_size=1000, val_size=200, lr=0.05, batch_size=64, reports=1,
                     bn_recalibration=2)
    r = proxy_train(TINY, settings=s, seed=0)
    assert r.accuracy > 0.4  # chance is 0.1 on Fashion-MNIST's ten classes


def test_callback_prunes_and_sees_every_report():
    seen = []

    def stop_at_first(step: int, acc: float) -> bool:
        seen.append((step, acc))
        return True

    r = proxy_train(TINY, settings=FAST.replace(reports=3), callback=stop_at_first)
    assert r.pruned and r.steps == 2 < r.total_steps and len(seen) == 1 and r.history == tuple(seen)

    steps = []
    r = proxy_train(TINY, settings=FAST.replace(reports=3), callback=lambda s, a: steps.append(s) and False)
    assert steps == [2, 4, 6] and not r.pruned


def test_evaluation_count_does_not_change_training():
    a = proxy_train(TINY, settings=FAST.replace(reports=1))
    b = proxy_train(TINY, settings=FAST.replace(reports=3))
    assert a.final_loss == b.final_loss and a.accuracy == b.accuracy


def test_divergence_raises_typed_error():
    with pytest.raises(TrainingDivergedError) as e:
        proxy_train(TINY, settings=FAST.replace(lr=1e6))
    assert "\n" not in str(e.value) and e.value.field == "lr"


def test_global_rng_and_threads_are_restored():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    threads = torch.get_num_threads()
    proxy_train(TINY, settings=FAST.replace(steps=2, reports=1, threads=1 if threads != 1 else 2))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == threads


def test_image_folder_rgb_and_cifar_stem(tmp_path):
    root = write_folder(tmp_path / "imgs", per_class=8)
    s = FAST.replace(train_size=None, val_size=6, batch_size=8, steps=2, resolution=16, stem="cifar")
    r = proxy_train(TINY, data=f"folder:{root}", settings=s)
    assert r.data["channels"] == 3 and r.data["classes"] == 3 and r.data["train_used"] == 18


@pytest.mark.parametrize("kw", [dict(epochs=0), dict(steps=0), dict(resolution=4), dict(stem="vit"),
                                dict(batch_size=1), dict(lr=0.0), dict(lr=float("nan")), dict(momentum=1.0),
                                dict(optimizer="lamb"), dict(val_size=0), dict(reports=0), dict(threads=0),
                                dict(bn_recalibration=-1)])
def test_settings_validation(kw):
    with pytest.raises(UsageError) as e:
        ProxySettings(**kw)
    assert e.value.field == next(iter(kw))


def test_presets():
    assert set(PROXY_PRESETS) >= {"quick", "standard", "reference"}
    q, ref = proxy_settings("quick"), proxy_settings("reference")
    assert ref.epochs >= 10 * q.epochs and ref.replace(epochs=q.epochs) == q  # 10x the steps, same recipe
    with pytest.raises(UsageError) as e:
        proxy_settings("instant")
    assert e.value.field == "proxy_preset"


def test_data_too_small_for_split():
    with pytest.raises(DataError):
        proxy_train(TINY, settings=FAST.replace(val_size=6000))


@pytest.mark.parametrize("method", ZERO_COST_METHODS)
def test_zero_cost_score(method):
    s = FAST.replace(resolution=32)
    a = zero_cost_score(TINY, settings=s, method=method, batch_size=16, seed=1)
    b = zero_cost_score(TINY, settings=s, method=method, batch_size=16, seed=1)
    assert math.isfinite(a) and a == b
    with pytest.raises(UsageError) as e:
        zero_cost_score(TINY, settings=s, method="grasp")
    assert e.value.field == "method"
    with pytest.raises(UsageError) as e:
        zero_cost_score(TINY, settings=s, method=method, batch_size=1)
    assert e.value.field == "batch_size"


def test_cli_proxy_train_json(tmp_path, capsys):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(TINY.to_json())
    rc = main(["proxy-train", str(cfg), "--steps", "2", "--train-size", "128", "--threads", "1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and 0.0 <= out["accuracy"] <= 1.0 and out["steps"] == 2
    assert out["config_hash"] == TINY.hash()


def test_cli_zero_cost_json(tmp_path, capsys):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(TINY.to_json())
    rc = main(["zero-cost", str(cfg), "--method", "naswot", "--json"])
    assert rc == 0 and math.isfinite(json.loads(capsys.readouterr().out)["score"])


@pytest.mark.parametrize("argv", [
    ["proxy-train", "missing.json"],
    ["proxy-train"],
    ["proxy-train", "--preset", "9x"],
    ["proxy-train", "--preset", "0.5x", "--data", "cifar10:/nonexistent/dir"],
    ["proxy-train", "--preset", "0.5x", "--epochs", "-1"],
    ["proxy-train", "--preset", "0.5x", "--budget", "forever"],
])
def test_cli_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1


def test_cli_names_the_flag_of_the_field(capsys):
    """The library says proxy_preset; proxy-train's flag for it is --budget (dest proxy_preset)."""
    assert main(["proxy-train", "--preset", "0.5x", "--budget", "forever"]) == 2
    assert capsys.readouterr().err.startswith("nas: error: --budget")  # the flag, not the field name


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_trains():
    r = proxy_train(TINY, settings=FAST, device="cuda")
    assert r.device.startswith("cuda") and 0.0 <= r.accuracy <= 1.0


def test_cuda_unavailable_is_a_typed_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    from nas.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError) as e:
        proxy_train(TINY, settings=FAST, device="cuda")
    assert e.value.field == "device"


def test_bad_device_is_a_usage_error():
    with pytest.raises(UsageError) as e:
        proxy_train(TINY, settings=FAST, device="tpu")
    assert e.value.field == "device"


@pytest.mark.parametrize("kind,h,stride,kernel", [("dw", 1, 1, 3), ("dw", 1, 1, 7), ("dw", 2, 1, 3), ("dw", 2, 2, 5),
                                                  ("dw", 2, 1, 7), ("dw", 4, 1, 3), ("pw", 1, 1, 1), ("pw", 2, 1, 1)])
def test_tiny_map_path_is_the_same_function(kind, h, stride, kernel):
    from torch import nn

    from nas.training.fastpath import tiny_map_conv_class

    torch.manual_seed(0)
    c = 6
    conv = nn.Conv2d(c, c if kind == "dw" else 10, kernel, stride, kernel // 2, groups=c if kind == "dw" else 1,
                     bias=kind == "pw")
    fast = tiny_map_conv_class()(conv)
    x = torch.randn(3, c, h, h, requires_grad=True)
    y_ref, y = conv(x), fast(x)
    assert y.shape == y_ref.shape and torch.allclose(y, y_ref, atol=1e-6)
    g_ref = torch.autograd.grad(y_ref.square().sum(), (x, conv.weight))
    g = torch.autograd.grad(y.square().sum(), (x, conv.weight))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g, g_ref))


def test_tiny_map_wrappers_come_off_for_state_dict():
    from torch import nn

    from nas.builder import build_model
    from nas.training.fastpath import is_tiny_map_conv, plain_convs, use_tiny_map_path

    model = build_model(TINY, 10, in_channels=1)
    keys = list(model.state_dict())
    use_tiny_map_path(model)
    assert any(is_tiny_map_conv(m) for m in model.modules()) and list(model.state_dict()) != keys
    with plain_convs(model):
        assert list(model.state_dict()) == keys and not any(is_tiny_map_conv(m) for m in model.modules())
    assert any(is_tiny_map_conv(m) for m in model.modules())
    assert not is_tiny_map_conv(nn.Conv2d(2, 2, 1))


def test_old_import_paths_still_work():
    from nas.training import proxy

    assert proxy.zero_cost_score is zero_cost_score and proxy.ZERO_COST_METHODS == ZERO_COST_METHODS


def test_accuracy_se_is_the_binomial_error_on_the_eval_count():
    from nas.training.proxy import binomial_se

    r = proxy_train(TINY, settings=FAST, seed=0)
    assert r.eval_images == FAST.val_size == r.data["val"]
    assert r.accuracy_se == pytest.approx(math.sqrt(r.accuracy * (1 - r.accuracy) / r.eval_images))
    assert r.to_dict()["accuracy_se"] == r.accuracy_se and r.to_dict()["eval_images"] == r.eval_images
    assert binomial_se(0.75, 1000) == pytest.approx(0.01369, abs=1e-5) and binomial_se(1.0, 10) == 0.0
    for kw, field in ((dict(accuracy=0.5, n=0), "n"), (dict(accuracy=1.5, n=10), "accuracy")):
        with pytest.raises(UsageError) as e:
            binomial_se(**kw)
        assert e.value.field == field


def test_rungs_are_valid_and_increase_in_compute():
    from nas.training.proxy import PROXY_RUNGS

    rungs = list(PROXY_RUNGS.values())
    assert list(PROXY_RUNGS) == [f"rung{k}" for k in range(len(rungs))] and len(rungs) >= 2
    assert rungs[0] == PROXY_PRESETS["quick"]  # rung 0 is the quick proxy (same study identity)
    bundled_train = 6000  # nas/_data: every rung must fit the default data set
    for s in rungs:
        s.validate()
        assert s.val_size + (s.train_size or 0) <= bundled_train
    images = [s.planned_steps() * s.batch_size for s in rungs]
    assert all(b >= 2 * a for a, b in zip(images, images[1:])), images
    assert rungs[0].planned_steps() == 39  # half a pass over 5,000 images in batches of 64
    with pytest.raises(UsageError) as e:
        ProxySettings(train_size=None).planned_steps()
    assert e.value.field == "n_train"
