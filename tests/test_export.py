"""nas export: a real Optuna study in SQLite, every Pareto trial in every format, checks, and bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import nas
from nas.arch import ArchConfig, StageConfig
from nas.cli import main
from nas.errors import ExportError

optuna = pytest.importorskip("optuna")
torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def _one_thread():
    # Export checks run small models; one thread avoids oversubscribing the shared 2-core CI machine.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny(width: int, *, ratio: float = 0.5, se: bool = False, kernel: int = 3, residual: bool = False) -> ArchConfig:
    return ArchConfig(stages=(StageConfig(1, width), StageConfig(2, 2 * width, ratio, se, kernel),
                              StageConfig(1, 4 * width)), stem_channels=8, head_channels=64, resolution=32,
                      residual=residual)


# (config, accuracy, latency_ms, state, feasible)
TRIALS = [
    (tiny(8), 0.70, 0.20, "COMPLETE", True),  # Pareto: fastest
    (tiny(16, ratio=0.25, se=True, kernel=5), 0.80, 0.40, "COMPLETE", True),  # Pareto: SE, split 0.25, k5
    (tiny(24, residual=True), 0.85, 0.90, "COMPLETE", True),  # Pareto: most accurate feasible, residual
    (tiny(16), 0.75, 0.50, "COMPLETE", True),  # dominated by trial 1
    (tiny(32), 0.95, 0.10, "COMPLETE", False),  # would dominate everything, but breaks the budget
    (tiny(8), 0.0, 0.0, "FAIL", False),
]


@pytest.fixture(scope="module")
def study_db(tmp_path_factory) -> tuple[str, str]:
    from nas.macs import count_macs

    path = tmp_path_factory.mktemp("study") / "search.db"
    storage = f"sqlite:///{path}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s1", storage=storage, directions=["maximize", "minimize"])
    for k, v in {"space_hash": "ab" * 32, "space": "shufflenetv2", "seed": 7, "nas_version": nas.__version__,
                 "table": {"path": "latency_tables/t.json", "fingerprint": "cd" * 32, "space_hash": "ab" * 32,
                           "describe": "cpu (x86_64), onnxruntime, threads=1, batch=1, 32px", "resolution": 32,
                           "num_classes": 10},
                 "budgets": ["1ms"], "objective": "latency", "proxy": {"kind": "train"}, "data": "bundled",
                 "num_classes": 10, "metric_names": ["accuracy", "latency_ms"]}.items():
        study.set_user_attr(k, v)
    for i, (cfg, acc, lat, state, feasible) in enumerate(TRIALS):
        mc = count_macs(cfg)
        attrs = {"config": cfg.to_dict(), "macs": mc.macs, "mflops": mc.mflops, "params": mc.params,
                 "latency_ms": lat, "latency_uncertainty_ms": 0.01, "accuracy": acc, "duration_s": 1.0,
                 "feasible": feasible, "seed": i}
        if state == "FAIL":
            attrs["failure"] = "TrainingDivergedError: loss became nan at step 3"
            study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs=attrs))
        else:
            study.add_trial(optuna.trial.create_trial(values=[acc, lat], user_attrs=attrs,
                                                      constraints={"latency_ms": lat - 1.0 if feasible else 0.5}))
    return storage, "s1"


def _export(args: list[str], capsys) -> tuple[int, dict]:
    rc = main(["export", *args, "--json"])
    out = capsys.readouterr().out
    return rc, (json.loads(out) if rc == 0 else {})


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.load: we test the format we ship
def test_every_pareto_trial_exports_in_all_formats(study_db, tmp_path, capsys):
    storage, name = study_db
    rc, doc = _export(["--study", name, "--storage", storage, "--pareto", "--out", str(tmp_path)], capsys)
    assert rc == 0
    exports = doc["exports"]
    assert [e["provenance"]["trial"] for e in exports] == [0, 1, 2]  # 3 dominated, 4 infeasible, 5 failed
    for e, (cfg, acc, lat, _, _) in zip(exports, TRIALS):
        assert set(e["files"]) == {"json", "onnx", "torchscript", "pt"}
        assert all(Path(f).is_file() for f in e["files"].values())
        assert e["onnx_max_abs_diff"] <= 1e-4 and e["torchscript_max_abs_diff"] <= 1e-4
        assert e["measured_latency_ms"] > 0 and e["predicted_latency_ms"] == lat

        # JSON: config + provenance; the Python one-liner builds it.
        found = json.loads(Path(e["files"]["json"]).read_text())
        assert ArchConfig.from_dict(found["config"]) == cfg
        prov = found["provenance"]
        assert prov["accuracy"] == acc and prov["latency_ms"] == lat and prov["study"] == name
        assert prov["space_hash"] == "ab" * 32 and prov["table"]["fingerprint"] == "cd" * 32
        assert prov["num_classes"] == prov["search_num_classes"] == 10  # the study's head by default
        assert prov["search_seed"] == 7 and prov["nas_version"] == nas.__version__ and prov["exported_at"]
        assert prov["onnx_check"]["opset"] == 13 and prov["onnx_check"]["measured"]["on"]["threads"] == 1
        assert prov["params"] == sum(p.numel() for p in nas.build_model(e["files"]["json"], 10).parameters())
        assert nas.build_model(e["files"]["json"]).config == cfg

        # pt and TorchScript reproduce the same function (same seeded weights).
        from nas.export.formats import load_checkpoint

        model = load_checkpoint(e["files"]["pt"])
        scripted = torch.jit.load(e["files"]["torchscript"])
        x = torch.randn(3, 3, 32, 32)
        with torch.no_grad():
            assert torch.allclose(model(x), scripted(x), atol=1e-5)

        # ONNX: dynamic batch, same outputs in a fresh onnxruntime session.
        import onnxruntime as ort

        sess = ort.InferenceSession(e["files"]["onnx"], providers=["CPUExecutionProvider"])
        (y,) = sess.run(None, {"input": x.numpy()})
        with torch.no_grad():
            assert float(abs(y - model(x).numpy()).max()) <= 1e-4
    assert not list(tmp_path.glob(".*.tmp")), "atomic writes leave no temp files"


def test_best_under_picks_most_accurate_feasible(study_db, tmp_path, capsys):
    storage, name = study_db
    rc, doc = _export(["--study", name, "--storage", storage, "--best-under", "0.6ms", "--format", "json",
                       "--out", str(tmp_path)], capsys)
    assert rc == 0 and [e["provenance"]["trial"] for e in doc["exports"]] == [1]
    from nas.macs import count_macs

    limit = f"{count_macs(TRIALS[0][0]).macs + 1}MACs"  # only the smallest network fits
    rc, doc = _export(["--study", name, "--storage", storage, "--best-under", limit, "--format", "json",
                       "--out", str(tmp_path)], capsys)
    assert rc == 0 and [e["provenance"]["trial"] for e in doc["exports"]] == [0]


def test_single_trial_and_json_only(study_db, tmp_path, capsys):
    storage, name = study_db
    rc, doc = _export(["--study", name, "--storage", storage, "--trial", "3", "--format", "json",
                       "--out", str(tmp_path)], capsys)
    assert rc == 0
    (e,) = doc["exports"]
    assert list(e["files"]) == ["json"] and e["measured_latency_ms"] is None
    assert Path(e["files"]["json"]).name == "s1-trial3.json"


@pytest.mark.parametrize("args", [
    ["--trial", "99"],  # no such trial
    ["--trial", "5"],  # failed trial
    ["--trial", "4"],  # infeasible trial
    ["--trial", "0", "--format", "json,png"],  # unknown format
    ["--best-under", "0.01ms"],  # nothing within the budget
    ["--best-under", "5 parsecs"],  # not a budget
    [],  # --study without a selector
])
def test_bad_study_exports_exit_2(study_db, tmp_path, capsys, args):
    storage, name = study_db
    rc = main(["export", "--study", name, "--storage", storage, *args, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_missing_study_or_storage_exit_2(study_db, tmp_path, capsys):
    storage, _ = study_db
    assert main(["export", "--study", "nope", "--storage", storage, "--pareto", "--out", str(tmp_path)]) == 2
    assert main(["export", "--study", "s1", "--storage", f"sqlite:///{tmp_path}/none.db", "--pareto",
                 "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "none.db").exists(), "a missing database is not created"
    capsys.readouterr()


def test_unwritable_out_exit_2(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for out in (blocker / "sub", Path("/proc/nas-export-test")):
        rc = main(["export", "--preset", "0.5x", "--format", "json", "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1


def test_export_config_file_and_preset(tmp_path, capsys):
    cfg_path = tmp_path / "found.json"
    cfg_path.write_text(tiny(8).to_json())
    rc, doc = _export([str(cfg_path), "--format", "json,pt", "--out", str(tmp_path / "o")], capsys)
    assert rc == 0
    (e,) = doc["exports"]
    assert e["provenance"]["source"] == str(cfg_path) and e["name"] == "found"
    # Re-exporting an exported file keeps its provenance and stays loadable.
    rc, doc = _export([e["files"]["json"], "--format", "json", "--out", str(tmp_path / "o2")], capsys)
    assert rc == 0 and nas.load_config(doc["exports"][0]["files"]["json"]) == tiny(8)
    rc, doc = _export(["--preset", "0.5x", "--format", "json", "--out", str(tmp_path / "o3")], capsys)
    assert rc == 0 and doc["exports"][0]["provenance"]["preset"] == "shufflenetv2-0.5x"
    assert math.isclose(doc["exports"][0]["provenance"]["mflops"], 40.9, abs_tol=1.0)  # the paper's 41 MFLOPs
    assert main(["export", "--preset", "0.5x", str(cfg_path), "--out", str(tmp_path)]) == 2  # two sources
    assert main(["export", "--preset", "no-such-net", "--out", str(tmp_path)]) == 2
    capsys.readouterr()


def test_library_errors_are_typed(tmp_path):
    from nas.export.formats import candidate_from_config, export, parse_formats

    with pytest.raises(ExportError):
        parse_formats("json,gif")
    assert parse_formats("all") == ("json", "onnx", "torchscript", "pt")
    with pytest.raises(ExportError):
        export(candidate_from_config(tiny(8)), out_dir="/proc/nope", formats=["json"])


def test_predicted_latency_from_a_table(tmp_path, capsys):
    """A config export with --table records the prediction and the table's identity and hash beside the
    latency measured right after export."""
    from nas.backends import MeasureSettings, get_backend
    from nas.space import load_space
    from nas.latency.table import build_table

    (tmp_path / "s.toml").write_text(
        'name = "s"\nresolution = [32]\nstem_channels = [8]\nhead_channels = [32]\n'
        + "[[stages]]\ndepth = [1]\nwidth = [16]\nsplit_ratio = [0.5]\nse = [false]\nkernel = [3]\n" * 2)
    space = load_space(tmp_path / "s.toml")
    fast = MeasureSettings(warmup=2, min_repeats=5, max_repeats=40, min_time_s=0.01, rounds=2, retries=0)
    build_table(space, get_backend("cpu"), out=tmp_path / "t.json", settings=fast, network_settings=fast,
                calibration_nets=0, progress=None)
    (tmp_path / "c.json").write_text(space.smallest().to_json())
    rc, doc = _export([str(tmp_path / "c.json"), "--table", str(tmp_path / "t.json"), "--format", "json,onnx",
                       "--out", str(tmp_path / "o")], capsys)
    assert rc == 0
    prov = json.loads(Path(doc["exports"][0]["files"]["json"]).read_text())["provenance"]
    assert prov["latency_ms"] > 0 and prov["table"]["space_hash"] == space.hash and len(prov["table"]["sha256"]) == 64
    assert prov["onnx_check"]["measured"]["latency_ms"] > 0 and prov["onnx_check"]["measured_over_predicted"] > 0
