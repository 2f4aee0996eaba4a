"""nas export: the Pareto trials of a real tiny search (tests/search_study.py) in every format, the Python
search -> export path, checks, configs and presets, and bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import nas
from nas.arch import ArchConfig, StageConfig
from nas.cli import main
from nas.errors import ExportError, NasError, UsageError
from nas.export import FORMATS, candidates_from_study, export_candidate
from nas.search import TrialRecord, open_study, pareto_records

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
from search_study import BUDGET, FAILED_STUDY, STUDY, TINY_PROXY, tiny_study  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    # Export checks run small models; one thread avoids oversubscribing the shared 2-core CI machine.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny_config(width: int, *, ratio: float = 0.5, se: bool = False, kernel: int = 3,
                residual: bool = False) -> ArchConfig:
    return ArchConfig(stages=(StageConfig(1, width), StageConfig(2, 2 * width, ratio, se, kernel),
                              StageConfig(1, 4 * width)), stem_channels=8, head_channels=64, resolution=32,
                      residual=residual)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_study(tmp_path_factory)


def _records(tiny) -> list[TrialRecord]:
    return [TrialRecord.from_trial(t) for t in open_study(study=STUDY, storage=tiny.url).get_trials()]


def _export(args: list[str], capsys) -> tuple[int, dict]:
    rc = main(["export", *args, "--json"])
    out = capsys.readouterr().out
    return rc, (json.loads(out) if rc == 0 else {})


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.load: we test the format we ship
def test_every_pareto_trial_of_a_real_search_exports_in_all_formats(tiny, tmp_path, capsys):
    study = open_study(study=STUDY, storage=tiny.url)
    front = sorted(pareto_records(study), key=lambda r: r.number)
    rc, doc = _export(["--study", STUDY, "--storage", tiny.url, "--pareto", "--out", str(tmp_path),
                       "--dynamic-batch"], capsys)
    assert rc == 0
    exports = doc["exports"]
    assert front and [e["provenance"]["trial"] for e in exports] == [r.number for r in front]
    sattrs = study.user_attrs
    for e, rec in zip(exports, front):
        assert set(e["files"]) == {"json", "onnx", "torchscript", "pt"}
        assert all(Path(f).is_file() for f in e["files"].values())
        assert e["onnx_max_abs_diff"] <= 1e-4 and e["torchscript_max_abs_diff"] <= 1e-4
        assert e["measured_latency_ms"] > 0 and e["predicted_latency_ms"] == rec.latency_ms

        # JSON: config + provenance; the Python one-liner builds it.
        found = json.loads(Path(e["files"]["json"]).read_text())
        cfg = ArchConfig.from_dict(rec.config)
        assert ArchConfig.from_dict(found["config"]) == cfg
        prov = found["provenance"]
        assert prov["accuracy"] == rec.accuracy and prov["latency_ms"] == rec.latency_ms and prov["study"] == STUDY
        assert prov["space_hash"] == sattrs["space_hash"]
        assert prov["table"]["fingerprint"] == sattrs["table"]["fingerprint"]
        num_classes = sattrs["num_classes"]
        assert prov["num_classes"] == prov["search_num_classes"] == num_classes  # the study's head by default
        assert prov["search_seed"] == 0 and prov["nas_version"] == nas.__version__ and prov["exported_at"]
        assert prov["onnx_check"]["opset"] == nas.export.ONNX_OPSET  # the latency tables' opset (test_onnx_export)
        assert prov["onnx_check"]["dynamic_batch"] and prov["onnx_check"]["batches_checked"] == [1, 2]
        assert prov["onnx_check"]["measured"]["on"]["threads"] == 1
        assert prov["params"] == sum(p.numel() for p in nas.build_model(e["files"]["json"], num_classes).parameters())
        _same_function(e["files"])
    assert not list(tmp_path.glob(".*.tmp")), "atomic writes leave no temp files"


def _same_function(files: dict[str, str]) -> None:
    """pt, TorchScript and ONNX (a fresh onnxruntime session; batch 3 where its batch axis is dynamic, else the
    file's static batch) compute the same function."""
    import onnxruntime as ort

    from nas.export import load_checkpoint

    model = load_checkpoint(files["pt"])
    scripted = torch.jit.load(files["torchscript"])
    sess = ort.InferenceSession(files["onnx"], providers=["CPUExecutionProvider"])
    batch = sess.get_inputs()[0].shape[0]
    x = torch.randn(batch if isinstance(batch, int) else 3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), scripted(x), atol=1e-5)
    (y,) = sess.run(None, {"input": x.numpy()})
    with torch.no_grad():
        assert float(abs(y - model(x).numpy()).max()) <= 1e-4


def test_search_to_export_in_python(tiny, tmp_path):
    """The notebook path: the Pareto front of run_search's result, exported with export_candidate."""
    from nas.search import run_search
    from nas.space import load_space

    space = load_space(tiny.root / "small.toml")
    table = nas.load_table(tiny.root / "small.json", space=space)
    res = run_search(space, budgets=[BUDGET], table=table, n_trials=4, study="py", out_dir=tmp_path / "run",
                     proxy_settings=TINY_PROXY, presets="none", threads=1, fidelity="single")
    study = open_study(study="py", storage=res.storage)
    assert res.n_trials == 4 and len(study.trials) == 4 and res.pareto
    assert [r.number for r in res.pareto] == [r.number for r in pareto_records(study)]
    for rec in res.pareto:
        out = export_candidate(rec, study=study, out_dir=tmp_path, formats=["json", "onnx"], measure=False)
        assert set(out.files) == {"json", "onnx"} and out.onnx_max_abs_diff <= 1e-4
        assert nas.load_config(out.files["json"]) == ArchConfig.from_dict(rec.config)
        assert Path(out.files["onnx"]).stat().st_size > 1000
    with pytest.raises(UsageError) as e:
        export_candidate(res.pareto[0], out_dir=tmp_path, formats="json")
    assert e.value.field == "study"


def test_best_under_picks_most_accurate_feasible(tiny, tmp_path, capsys):
    ok = [r for r in _records(tiny) if r.state == "COMPLETE" and r.feasible]
    limit = sorted(r.latency_ms for r in ok)[len(ok) // 2]
    within = [r for r in ok if r.latency_ms <= limit]
    best = min(within, key=lambda r: (-r.accuracy, r.latency_ms, r.number))
    rc, doc = _export(["--study", STUDY, "--storage", tiny.url, "--best-under", f"{limit}ms", "--format", "json",
                       "--out", str(tmp_path)], capsys)
    assert rc == 0 and [e["provenance"]["trial"] for e in doc["exports"]] == [best.number]
    smallest = min(ok, key=lambda r: (r.macs, r.number))
    only = [r for r in ok if r.macs <= smallest.macs]
    best = min(only, key=lambda r: (-r.accuracy, r.macs, r.number))
    rc, doc = _export(["--study", STUDY, "--storage", tiny.url, "--best-under", f"{smallest.macs}MACs",
                       "--format", "json", "--out", str(tmp_path)], capsys)
    assert rc == 0 and [e["provenance"]["trial"] for e in doc["exports"]] == [best.number]


def test_single_trial_and_json_only(tiny, tmp_path, capsys):
    front = {r.number for r in pareto_records(open_study(study=STUDY, storage=tiny.url))}
    rec = next(r for r in _records(tiny) if r.state == "COMPLETE" and r.feasible and r.number not in front)
    rc, doc = _export(["--study", STUDY, "--storage", tiny.url, "--trial", str(rec.number), "--format", "json",
                       "--out", str(tmp_path)], capsys)
    assert rc == 0
    (e,) = doc["exports"]
    assert list(e["files"]) == ["json"] and e["measured_latency_ms"] is None
    assert Path(e["files"]["json"]).name == f"{STUDY}-trial{rec.number}.json"


def _infeasible_trial(tiny) -> int:
    return next(r.number for r in _records(tiny) if r.feasible is False)


@pytest.mark.parametrize("args, field", [
    (["--trial", "99"], "trial"),  # no such trial
    (["--study", FAILED_STUDY, "--trial", "0"], "trial"),  # failed trial (its proxy training diverged)
    (["--trial", "INFEASIBLE"], "trial"),  # over-budget trial
    (["--trial", "0", "--format", "json,png"], "format"),  # unknown format
    (["--best-under", "0.01ms"], "best_under"),  # nothing within the budget
    (["--best-under", "5 parsecs"], None),  # not a budget
    ([], None),  # --study without a selector
])
def test_bad_study_exports_exit_2(tiny, tmp_path, capsys, args, field):
    args = [str(_infeasible_trial(tiny)) if a == "INFEASIBLE" else a for a in args]
    study = [] if "--study" in args else ["--study", STUDY]
    rc = main(["export", *study, "--storage", tiny.url, *args, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    if field is not None and "--format" not in args:  # the same choice through the library names its field
        name = FAILED_STUDY if FAILED_STUDY in args else STUDY
        st = open_study(study=name, storage=tiny.url)
        kw = ({"trial": int(args[args.index("--trial") + 1])} if "--trial" in args
              else {"best_under": args[args.index("--best-under") + 1]})
        with pytest.raises(NasError) as e:
            candidates_from_study(st, **kw)
        assert e.value.field == field


def test_missing_study_or_storage_exit_2(tiny, tmp_path, capsys):
    assert main(["export", "--study", "nope", "--storage", tiny.url, "--pareto", "--out", str(tmp_path)]) == 2
    assert main(["export", "--study", STUDY, "--storage", f"sqlite:///{tmp_path}/none.db", "--pareto",
                 "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "none.db").exists(), "a missing database is not created"
    capsys.readouterr()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("cfg", [tiny_config(16, ratio=0.25, se=True, kernel=5), tiny_config(24, residual=True)],
                         ids=["se-split0.25-k5", "residual"])
def test_configs_outside_the_tiny_space_export_and_check(cfg, tmp_path):
    """Variants the tiny search never proposes (SE with split 0.25 and 5x5 kernels, residual units)."""
    out = export_candidate(cfg, out_dir=tmp_path, formats=FORMATS, num_classes=10, measure=False)
    assert set(out.files) == set(FORMATS)
    assert out.onnx_max_abs_diff <= 1e-4 and out.torchscript_max_abs_diff <= 1e-4
    _same_function(out.files)


def test_unwritable_out_exit_2(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for out in (blocker / "sub", Path("/proc/nas-export-test")):
        rc = main(["export", "--preset", "0.5x", "--format", "json", "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1


def test_export_config_file_and_preset(tmp_path, capsys):
    cfg_path = tmp_path / "found.json"
    cfg_path.write_text(tiny_config(8).to_json())
    rc, doc = _export([str(cfg_path), "--format", "json,pt", "--out", str(tmp_path / "o")], capsys)
    assert rc == 0
    (e,) = doc["exports"]
    # the shared file names its source without this machine's directories (issue 14)
    assert e["provenance"]["source"] == "found.json" and e["name"] == "found"
    assert str(tmp_path) not in Path(e["files"]["json"]).read_text()
    # Re-exporting an exported file keeps its provenance and stays loadable.
    rc, doc = _export([e["files"]["json"], "--format", "json", "--out", str(tmp_path / "o2")], capsys)
    assert rc == 0 and nas.load_config(doc["exports"][0]["files"]["json"]) == tiny_config(8)
    rc, doc = _export(["--preset", "0.5x", "--format", "json", "--out", str(tmp_path / "o3")], capsys)
    assert rc == 0 and doc["exports"][0]["provenance"]["preset"] == "shufflenetv2-0.5x"
    assert math.isclose(doc["exports"][0]["provenance"]["mflops"], 40.9, abs_tol=1.0)  # the paper's 41 MFLOPs
    assert main(["export", "--preset", "0.5x", str(cfg_path), "--out", str(tmp_path)]) == 2  # two sources
    assert main(["export", "--preset", "no-such-net", "--out", str(tmp_path)]) == 2
    capsys.readouterr()


def test_library_errors_are_typed(tmp_path):
    from nas.export import candidate_from_config, export, parse_formats

    with pytest.raises(ExportError) as e:
        parse_formats("json,gif")
    assert e.value.field == "format"
    assert parse_formats("all") == ("json", "onnx", "torchscript", "pt")
    with pytest.raises(ExportError) as e:
        export(candidate_from_config(tiny_config(8)), out_dir="/proc/nope", formats=["json"])
    assert e.value.field == "out"


def test_predicted_latency_from_a_table(tmp_path, capsys):
    """A config export with --table records the prediction and the table's identity and hash beside the
    latency measured right after export."""
    from nas.backends import MeasureSettings, get_backend
    from nas.space import load_space
    from nas.latency.build import build_table

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
    assert prov["table"]["path"] == "t.json" and prov["source"] == "c.json"  # no machine-local directories
    assert str(tmp_path) not in Path(doc["exports"][0]["files"]["json"]).read_text()


def test_export_timing_keeps_the_median_of_several_paired_passes():
    """Issue 14: one paired timing of a whole network is noisy on a VM; the export reports the median-ratio pass
    of several, with every pass's ratio and their spread (real ORT, the probe the default table uses)."""
    from nas.backends import MeasureSettings
    from nas.backends.onnxruntime import export_onnx
    from nas.builder import build_model
    from nas.export.timing import measure_exported

    cfg = ArchConfig(resolution=32, stem_channels=8, head_channels=32,
                     stages=(StageConfig(depth=1, width=16, split_ratio=0.5, se=False, kernel=3),) * 2)
    data = export_onnx(build_model(cfg, 10).eval(), input_shape=(1, 3, 32, 32))
    fast = MeasureSettings(warmup=1, min_repeats=3, max_repeats=10, min_time_s=0.0, rounds=3, retries=0)
    m = measure_exported(data, input_shape=(1, 3, 32, 32), table=None, predicted_ms=None, settings=fast, passes=3)
    assert len(m["passes"]) == 3 and m["passes"] == sorted(m["passes"])
    assert m["ratio_to_probe"] == m["passes"][1]  # the median pass is the one reported
    assert m["pass_spread_pct"] == pytest.approx(100 * (m["passes"][2] - m["passes"][0]) / m["passes"][1], abs=0.01)
    one = measure_exported(data, input_shape=(1, 3, 32, 32), table=None, predicted_ms=None, settings=fast, passes=1)
    assert len(one["passes"]) == 1 and one["pass_spread_pct"] == 0.0
