"""nas train: real training on the bundled data, kill -9 after the first checkpoint, resume, same result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nas.arch import ArchConfig, StageConfig
from nas.cli import main

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
CFG = ArchConfig(stages=(StageConfig(1, 16), StageConfig(2, 32), StageConfig(1, 64)), stem_channels=8,
                 head_channels=64, resolution=32)
# Small but real: 1,200 training images, 200 validation, 32² inputs, one thread (deterministic and gentle on CI).
ARGS = ["--data", "bundled", "--epochs", "3", "--train-size", "1200", "--val-size", "200", "--batch-size", "32",
        "--threads", "1", "--seed", "3"]


@pytest.fixture
def cfg_path(tmp_path) -> Path:
    p = tmp_path / "found.json"
    p.write_text(CFG.to_json())
    return p


def _run(args: list[str], capsys) -> tuple[int, dict]:
    rc = main(["train", *args, "--json"])
    out = capsys.readouterr().out
    return rc, (json.loads(out) if rc == 0 else {})


def test_resumes_after_kill(cfg_path, tmp_path, capsys):
    from nas.checkpoint import load_checkpoint
    from nas.training.train import read_checkpoint_epoch

    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "nas", "train", str(cfg_path), *ARGS, "--out", str(run), "--json"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ck = run / "checkpoint.pt"
    deadline = time.monotonic() + 120
    try:
        while not ck.exists():  # bounded: the deadline, or the child exiting
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert read_checkpoint_epoch(run) == 1  # killed during epoch 2
    assert not (run / "result.json").exists()

    rc, res = _run([str(cfg_path), *ARGS, "--out", str(run)], capsys)
    assert rc == 0
    assert res["resumed"] and res["started_epoch"] == 2 and res["epochs"] == 3
    assert [h["epoch"] for h in res["history"]] == [1, 2, 3] and read_checkpoint_epoch(run) == 3
    assert 0.0 <= res["val_accuracy"] <= 1.0 and res["test_accuracy"] is not None
    assert res["val_accuracy"] > 0.2  # 10 classes: clearly above chance after 3 short epochs

    # An uninterrupted run of the same seed ends with the very same weights: the resume restored everything.
    rc, full = _run([str(cfg_path), *ARGS, "--out", str(tmp_path / "full")], capsys)
    assert rc == 0 and not full["resumed"] and full["started_epoch"] == 1
    a, b = load_checkpoint(run / "model.pt").state_dict(), load_checkpoint(tmp_path / "full" / "model.pt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert res["val_accuracy"] == full["val_accuracy"] and res["test_accuracy"] == full["test_accuracy"]

    # Finished: re-running trains nothing and reports the stored result.
    rc, again = _run([str(cfg_path), *ARGS, "--out", str(run)], capsys)
    assert rc == 0 and again["started_epoch"] == 4 and again["val_accuracy"] == res["val_accuracy"]

    # The trained weights export (ONNX checked against PyTorch).
    rc = main(["export", str(cfg_path), "--weights", str(run / "model.pt"), "--format", "json,onnx", "--no-measure",
               "--out", str(tmp_path / "exp"), "--json"])
    doc = json.loads(capsys.readouterr().out)["exports"][0]
    assert rc == 0 and doc["onnx_max_abs_diff"] <= 1e-4
    assert doc["provenance"]["in_channels"] == 1 and doc["provenance"]["num_classes"] == 10
    assert doc["provenance"]["training"]["val_accuracy"] == res["val_accuracy"]


def test_refuses_a_different_run_in_the_same_folder(cfg_path, tmp_path, capsys):
    run = tmp_path / "run"
    small = ["--data", "bundled", "--epochs", "1", "--train-size", "200", "--val-size", "100", "--batch-size", "50",
             "--threads", "1"]
    rc, res = _run([str(cfg_path), *small, "--out", str(run)], capsys)
    assert rc == 0 and res["started_epoch"] == 1 and len(res["history"]) == 1
    assert main(["train", str(cfg_path), *small, "--lr", "0.05", "--out", str(run)]) == 2  # other settings
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "settings.lr" in err  # names the differing setting
    rc, res = _run([str(cfg_path), *small, "--lr", "0.05", "--out", str(run), "--restart"], capsys)
    assert rc == 0 and not res["resumed"]


@pytest.mark.parametrize("extra", [
    ["--out", "{file}/sub"],  # the out folder would be under a regular file
    ["--out", "/proc/nas-train-test"],
    ["--epochs", "0"],
    ["--data", "cifar10:/no/such/dir"],
    ["--batch-size", "1"],
])
def test_bad_inputs_exit_2(cfg_path, tmp_path, capsys, extra):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    args = [str(cfg_path), "--epochs", "1", "--train-size", "100", "--val-size", "50", "--out", str(tmp_path / "r")]
    args += [a.replace("{file}", str(blocker)) for a in extra]
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_tiny_map_fast_path_trains_the_same_network(cfg_path, tmp_path):
    """nas.training.fastpath's tiny-map path (on by default on CPU) changes speed, not the function: with and without it the
    run ends with (numerically) the same weights, saved under build_model's keys."""
    from nas.checkpoint import load_checkpoint
    from nas.training.train import TrainSettings, train

    s = TrainSettings(epochs=1, train_size=256, val_size=64, batch_size=64, threads=1, resolution=32)
    fast = train(cfg_path, settings=s, out_dir=tmp_path / "fast", seed=1)
    plain = train(cfg_path, settings=TrainSettings(**{**s.to_dict(), "tiny_map_path": False}), out_dir=tmp_path / "p",
                  seed=1)
    a, b = load_checkpoint(fast.files["model"]).state_dict(), load_checkpoint(plain.files["model"]).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-4) for k in a)


@pytest.mark.parametrize("kw,fld", [(dict(epochs=0), "epochs"), (dict(batch_size=1), "batch_size"),
                                    (dict(lr=0.0), "lr"), (dict(momentum=1.0), "momentum"),
                                    (dict(stem="vit"), "stem"), (dict(threads=0), "threads")])
def test_settings_errors_name_the_field(kw, fld):
    from nas.errors import UsageError
    from nas.training.train import TrainSettings

    with pytest.raises(UsageError) as e:
        TrainSettings(**kw)
    assert e.value.field == fld


def test_library_errors_carry_fields(cfg_path, tmp_path):
    from nas.errors import UsageError
    from nas.training.train import TrainSettings, train

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    s = TrainSettings(epochs=1, train_size=100, val_size=50, threads=1)
    with pytest.raises(UsageError) as e:
        train(cfg_path, settings=s, out_dir=blocker / "sub")
    assert e.value.field == "out"
    with pytest.raises(UsageError) as e:
        train(cfg_path, settings=s, out_dir=tmp_path / "r2", device="tpu")
    assert e.value.field == "device"


def test_package_reexports_lazily():
    import nas.training as t
    from nas.training.train import TrainSettings

    assert t.TrainSettings is TrainSettings and callable(t.proxy_train) and callable(t.load_data)
