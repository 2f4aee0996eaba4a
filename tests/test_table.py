"""Latency tables on a tiny real space at 32 px: build (real onnxruntime), file format, predict, validate,
CLI exit codes, and kill -9 of a real build subprocess followed by a resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nas.arch import ArchConfig
from nas.backends import get_backend
from nas.cli import main
from nas.errors import MissingEntriesError, TableError, TableMismatchError, UsageError
from nas.space import load_space
from nas.latency import (LatencyTable, build_table, default_table_path, kendall_tau, load_table, predict,
                         validate_table)

from spaces import FAST, TINY  # noqa: E402

REPO = Path(__file__).resolve().parents[1]



@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tables")
    (d / "tiny.toml").write_text(TINY)
    (d / "other.toml").write_text(TINY.replace('name = "tiny"', 'name = "other"').replace("[16, 24]", "[16]"))
    return d


@pytest.fixture(scope="module")
def built(tiny_dir) -> tuple[LatencyTable, Path]:
    space = load_space(tiny_dir / "tiny.toml")
    out = tiny_dir / "tiny.json"
    table = build_table(space, get_backend("cpu"), out=out, settings=FAST, network_settings=FAST,
                        calibration_nets=4, progress=None)
    return table, out


def test_build_is_complete_self_describing_and_calibrated(built, tiny_dir):
    table, out = built
    space = load_space(tiny_dir / "tiny.toml")
    assert table.complete and len(table.entries) == len(space.enumerate_blocks(resolution=32)) == 12
    doc = json.loads(out.read_text())
    for k in ("schema", "identity", "space", "resolution", "threads", "batch", "num_classes", "settings",
              "network_settings", "probe", "calibration", "method", "entries"):
        assert k in doc
    assert doc["space"]["hash"] == space.hash and doc["identity"]["runtime"] == "onnxruntime"
    assert doc["space"]["source"] == "tiny.toml"  # no machine-local directory in a file written for sharing
    assert "transfer" not in doc  # only a transferred table has one
    assert doc["probe"]["ref_ms"] > 0 and len(doc["probe"]["samples"]) >= 2
    basics = [e for e in table.entries.values() if e.key.kind == "basic"]
    assert basics and all(2 <= len(e.runs()) <= 3 for e in basics)  # the verify pass
    cal = doc["calibration"]
    assert cal["model"] in cal["models"] and len(cal["nets"]) == 4
    assert {"none", "offset", "scale"} <= set(cal["models"])
    # the stored space rebuilds the space
    assert table.space_object().hash == space.hash


def test_round_trip_and_predict(built, tiny_dir):
    table, out = built
    again = load_table(out, space=load_space(tiny_dir / "tiny.toml"))
    assert again.entries.keys() == table.entries.keys()
    for k, e in table.entries.items():
        assert again.entries[k].raw_ms == pytest.approx(e.raw_ms, rel=1e-4)
        assert again.entries[k].key == e.key
    cfg = load_space(tiny_dir / "tiny.toml").smallest()
    p = predict(cfg, again)
    cal = again.calibration
    expected = (cal["scale"] * sum(again.entries[b.id].ms for b in cfg.blocks())
                + cal["per_block_ms"] * (len(cfg.blocks()) - 1))
    assert p.latency_ms == pytest.approx(expected, rel=1e-6)
    assert p.uncertainty_ms > 0 and p.blocks == len(cfg.blocks())


def test_predict_refuses_other_resolution_and_lists_missing(built):
    table, _ = built
    cfg = table.space_object().largest()
    with pytest.raises(TableMismatchError) as mismatch:
        predict(cfg.with_resolution(64), table)
    assert mismatch.value.field == "config"
    wider = ArchConfig(stages=tuple(cfg.stages[:1]) + (cfg.stages[1].__class__(depth=2, width=40),),
                       stem_channels=8, head_channels=32, resolution=32)
    with pytest.raises(MissingEntriesError) as e:
        predict(wider, table)
    assert e.value.missing and all("40" in m for m in e.value.missing) and e.value.field == "table"


def test_lazy_table_measures_missing_entries_on_demand(built, tmp_path):
    table, out = built
    copy = tmp_path / "lazy.json"
    copy.write_text(out.read_text())
    lazy = load_table(copy)
    cfg = ArchConfig(stages=(lazy.space_object().smallest().stages[0],
                             lazy.space_object().smallest().stages[1].__class__(depth=2, width=40)),
                     stem_channels=8, head_channels=32, resolution=32)
    p = predict(cfg, lazy, backend=get_backend("cpu"))
    assert p.latency_ms > 0 and all(b.id in load_table(copy).entries for b in cfg.blocks())


def test_load_errors(built, tiny_dir, tmp_path):
    _, out = built
    with pytest.raises(TableMismatchError):
        load_table(out, space=load_space(tiny_dir / "other.toml"))
    trunc = tmp_path / "trunc.json"
    trunc.write_text(out.read_text()[:500])
    with pytest.raises(TableError):
        load_table(trunc)
    with pytest.raises(TableError) as absent:
        load_table(tmp_path / "absent.json")
    assert absent.value.field == "table"
    notable = tmp_path / "notable.json"
    notable.write_text('{"hello": 1}')
    with pytest.raises(TableError):
        load_table(notable)
    partial = tmp_path / "partial.json"
    doc = json.loads(out.read_text())
    doc["entries"] = dict(list(doc["entries"].items())[:5])
    partial.write_text(json.dumps(doc))
    with pytest.raises(MissingEntriesError) as e:
        load_table(partial, space=load_space(tiny_dir / "tiny.toml"))
    assert len(e.value.missing) == 7


def test_validate_stores_figures(built, tmp_path):
    table, out = built
    copy = tmp_path / "v.json"
    copy.write_text(out.read_text())
    t = load_table(copy)
    fig = validate_table(t, get_backend("cpu"), samples=4, seed=1)
    for k in ("mape_pct", "within_5_pct", "within_10_pct", "kendall_tau", "kendall_tau_macs", "drift_pct",
              "build_drift_pct", "modes"):
        assert k in fig
    assert len(fig["nets"]) == 4 and all(n["predicted_ms"] > 0 and n["ms"] > 0 for n in fig["nets"])
    assert json.loads(copy.read_text())["validation"]["samples"] == 4
    assert set(fig["modes"]) == {"window", "paired", "none"}
    with pytest.raises(TableMismatchError) as e:  # another thread count is another identity
        validate_table(t, get_backend("cpu", threads=2), samples=2)
    assert e.value.field == "backend"
    with pytest.raises(UsageError) as few:
        validate_table(t, get_backend("cpu"), samples=1)
    assert few.value.field == "samples"
    assert fig["passes"] == 1 and fig["repeat_within_5_pct"] is None  # one pass: no repeatability to report
    with pytest.raises(UsageError) as none:
        validate_table(t, get_backend("cpu"), samples=2, passes=0)
    assert none.value.field == "passes"


def test_validate_with_passes_compares_median_timings_and_reports_repeatability(built, tmp_path):
    """Every network timed twice (real onnxruntime): its median-ratio timing is compared, every pass's ratio is
    kept, and the machine's repeatability is a share of timings and a spread."""
    table, out = built
    copy = tmp_path / "v2.json"
    copy.write_text(out.read_text())
    fig = validate_table(load_table(copy), get_backend("cpu"), samples=3, seed=2, passes=2, save=False)
    assert fig["passes"] == 2 and 0.0 <= fig["repeat_within_5_pct"] <= 100.0 and fig["pass_to_pass_std_pct"] >= 0
    for n in fig["nets"]:
        assert len(n["pass_ratios"]) == 2 and n["ratio"] == min(n["pass_ratios"])  # lower middle of two


def test_repeatability_counts_each_timing_against_the_others():
    from nas.latency.validate import repeatability

    rows = lambda *xs: [{"ratio": x} for x in xs]  # noqa: E731
    # network 1: 1.00, 1.02, 1.01 (all within 5 % of the others' mean); network 2: 1.0, 1.0, 1.2 (the 1.2 is
    # 20 % over the others' mean, each 1.0 is 9 % under theirs): 3 + 0 of 6
    rep = repeatability([rows(1.00, 1.02, 1.01), rows(1.0, 1.0, 1.2)])
    assert rep["repeat_within_5_pct"] == 50.0 and rep["pass_to_pass_std_pct"] > 0
    assert repeatability([rows(1.0), rows(2.0)])["repeat_within_5_pct"] is None


def test_kendall_tau():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)


def test_default_table_path_points_into_the_package():
    p = default_table_path()
    assert p.parent.name == "latency_tables" and p.suffix == ".json"
    if not p.exists():
        pytest.skip("the shipped table is built by benchmarks/build_shipped_table.sh on a quiet machine")
    t = load_table(p, space=load_space())
    assert t.complete and t.calibration and t.validation


# --------------------------------------------------------------------------- CLI
def test_cli_build_limit_predict_validate_plot(built, tiny_dir, tmp_path, capsys):
    out = tmp_path / "cli.json"
    space = str(tiny_dir / "tiny.toml")
    assert main(["build-latency-table", "--space", space, "--out", str(out), "--limit", "3", "--json"]) == 0
    assert len(json.loads(out.read_text())["entries"]) == 3
    assert main(["predict", "shufflenetv2-1.0x", "--table", str(out)]) == 2  # incomplete: missing entries
    small = tmp_path / "small.json"
    small.write_text(load_space(tiny_dir / "tiny.toml").smallest().to_json())
    assert main(["predict", str(small), "--table", str(out), "--measure-missing", "--json"]) == 0  # lazy table
    assert len(json.loads(out.read_text())["entries"]) > 3
    _, table_path = built
    cfg = tmp_path / "cfg.json"
    cfg.write_text(load_space(tiny_dir / "tiny.toml").smallest().to_json())
    capsys.readouterr()
    assert main(["predict", str(cfg), "--table", str(table_path), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["latency_ms"] > 0 and res["mflops"] > 0 and res["params"] > 0
    copy = tmp_path / "val.json"
    copy.write_text(table_path.read_text())
    png = tmp_path / "scatter.png"
    assert main(["validate-table", str(copy), "--samples", "3", "--plot", str(png), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 3
    assert png.stat().st_size > 1000 and json.loads(copy.read_text())["validation"]["samples"] == 3


def test_cli_errors_exit_2(built, tiny_dir, tmp_path):
    _, table_path = built
    bad = tmp_path / "bad.json"
    bad.write_text(table_path.read_text()[:-200])
    cfg = tmp_path / "cfg.json"
    cfg.write_text(load_space(tiny_dir / "tiny.toml").smallest().to_json())
    assert main(["predict", str(cfg), "--table", str(bad)]) == 2  # truncated JSON
    assert main(["validate-table", str(bad)]) == 2
    # a table of another space cannot be resumed for this one
    assert main(["build-latency-table", "--space", str(tiny_dir / "other.toml"), "--out", str(table_path)]) == 2
    assert main(["build-latency-table", "--space", str(tiny_dir / "tiny.toml"), "--out", str(tmp_path / "x.json"),
                 "--threads", "0"]) == 2
    if not platform_is_arm():
        assert main(["build-latency-table", "--device", "arm", "--out", str(tmp_path / "arm.json")]) == 2
    from nas.backends.cuda import cuda_available

    if not cuda_available():
        assert main(["build-latency-table", "--device", "gpu", "--out", str(tmp_path / "gpu.json")]) == 2


def platform_is_arm() -> bool:
    import platform

    return platform.machine().lower() in ("aarch64", "arm64")


def test_kill_9_loses_at_most_the_group_in_flight_and_resume_measures_only_the_rest(tiny_dir, tmp_path):
    out = tmp_path / "killed.json"
    cmd = [sys.executable, "-m", "nas", "build-latency-table", "--space", str(tiny_dir / "tiny.toml"),
           "--out", str(out), "--calibration-nets", "0", "--blocks-per-request", "3"]  # saved every 3 entries
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hang_guard = time.monotonic() + 900  # only against a hang: the loop ends when 3 entries exist or the build exits
    try:
        while time.monotonic() < hang_guard:
            if out.exists():
                try:
                    if len(json.loads(out.read_text())["entries"]) >= 3:
                        break
                except json.JSONDecodeError:  # never happens with atomic writes; keep polling to be sure
                    pytest.fail("the table file was seen half-written")
            if proc.poll() is not None:
                pytest.fail("the build finished before it could be killed")
            time.sleep(0.05)
        else:
            pytest.fail("no entries written within 15 minutes (a hung build)")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = json.loads(out.read_text())["entries"]  # valid JSON after kill -9
    assert 3 <= len(before) < 12
    assert main(["build-latency-table", "--space", str(tiny_dir / "tiny.toml"), "--out", str(out), "--resume",
                 "--calibration-nets", "0", "--json"]) == 0
    after = json.loads(out.read_text())["entries"]
    assert len(after) == 12
    for k, e in before.items():  # nothing already measured was measured again
        assert after[k]["t"] == e["t"] and after[k]["raw_ms"] == e["raw_ms"]
    assert not list(tmp_path.glob(".killed.json.*.tmp"))  # a temp file of the killed run is cleaned up


# --------------------------------------------------------------------------- cold-weights entries
def test_cold_copies_time_a_wide_block_as_copies_that_evict_each_other():
    import numpy as np
    import onnxruntime as ort

    from nas.arch import BlockKey
    from nas.builder import build_block
    from nas.latency.cold import COLD_TARGET_BYTES, ColdRun, cold_copies, measure_cold, replicate_onnx, weight_bytes
    from nas.latency.defaults import BLOCK_SETTINGS, COLD_SETTINGS
    from nas.latency.probe import PROBE_SHAPE, paired, reference_probe

    backend = get_backend("cpu")
    small = BlockKey(kind="basic", resolution=28, in_channels=48, out_channels=48)
    assert cold_copies(small) == 0 and measure_cold(small, backend, None, num_classes=1000, settings=FAST) is None
    wide = BlockKey(kind="head", resolution=7, in_channels=464, out_channels=1024)  # 1.5 M params: 6 MB
    k = cold_copies(wide)
    assert weight_bytes(wide) == 4 * (464 * 1024 + 2 * 1024 + 1024 * 1000 + 1000)
    assert k == -(-COLD_TARGET_BYTES // weight_bytes(wide)) == 6
    one = backend.portable(build_block(wide).eval(), input_shape=(464, 7, 7))
    x = np.random.default_rng(0).standard_normal((1, 464, 7, 7)).astype(np.float32)
    sess = ort.InferenceSession(one)
    single = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    many = ort.InferenceSession(replicate_onnx(one, k))
    got = many.run(None, {many.get_inputs()[0].name: x})[0]
    assert got.shape == (1, k) and got[0, 0] == pytest.approx(float(single.reshape(-1)[0]), rel=1e-5)
    assert len(set(np.round(got[0], 6))) == k  # every copy has weights of its own
    probe = backend.portable(reference_probe(), input_shape=PROBE_SHAPE)
    cold = measure_cold(wide, backend, probe, num_classes=1000, settings=COLD_SETTINGS)
    # The warm time paired with the probe too, so that load from other processes cancels in the comparison.
    _, _, warm_ratio = paired(backend, probe, one, (464, 7, 7), BLOCK_SETTINGS)
    assert cold.copies == k and cold.n >= 5 and cold.probe_ms > 0
    assert 0.5 * warm_ratio < cold.ratio < 4 * warm_ratio  # per copy, not per call of all copies
    assert cold.ratio == pytest.approx(cold.raw_ms / cold.probe_ms, rel=0.5)  # median of ratios ~ ratio of medians
    assert ColdRun.from_list(cold.to_list()) == cold and len(cold.to_list()) == 7  # stored as a 7-number list


def test_prediction_blends_warm_and_cold_entries_by_network_weight_size(built, tiny_dir):
    import copy

    from nas.latency.calibrate import cold_share

    assert cold_share(3.0, None, None) == 0.0
    assert cold_share(3.0, 4.0, 8.0) == 0.0 and cold_share(10.0, 4.0, 8.0) == 1.0
    assert cold_share(6.0, 4.0, 8.0) == pytest.approx(0.5) and cold_share(5.0, 4.0, 4.0) == 1.0
    table = copy.deepcopy(built[0])
    cfg = load_space(tiny_dir / "tiny.toml").smallest()
    ids = [b.id for b in cfg.blocks()]
    mb = sum(table._wbytes[i] for i in ids) / 1e6
    for i in ids:
        table._cold[i] = 2.0 * table._ms[i]
    cal = table.calibration
    warm = sum(table._ms[i] for i in ids)
    base = cal["per_block_ms"] * (len(ids) - 1)
    cal.update(cold_from_mb=None, cold_full_mb=None)
    assert predict(cfg, table).latency_ms == pytest.approx(cal["scale"] * warm + base)
    cal.update(cold_from_mb=mb / 2, cold_full_mb=mb * 1.5)  # half way: warm + 0.5 * (cold - warm)
    assert predict(cfg, table).latency_ms == pytest.approx(cal["scale"] * 1.5 * warm + base)
    cal.update(cold_from_mb=0.0, cold_full_mb=mb / 2)
    assert predict(cfg, table).latency_ms == pytest.approx(cal["scale"] * 2.0 * warm + base)


def test_reference_probe_is_compute_and_memory_and_old_tables_are_refused_for_new_measurements(built):
    import copy

    from nas.arch import BlockKey
    from nas.latency.cold import weight_bytes
    from nas.latency.probe import (MEMORY_PROBE_COPIES, MEMORY_PROBE_SHAPE, PROBE_ID, PROBE_SHAPE, Probe, paired,
                                   portable_probe)

    backend = get_backend("cpu")
    probe = portable_probe(backend)
    assert isinstance(probe, Probe) and "memory" in PROBE_ID
    unit = BlockKey(kind="basic", resolution=MEMORY_PROBE_SHAPE[1], in_channels=MEMORY_PROBE_SHAPE[0],
                    out_channels=MEMORY_PROBE_SHAPE[0])
    assert MEMORY_PROBE_COPIES * weight_bytes(unit) > 8 * 2**20  # overflows any L2: follows the memory system
    m, probe_ms, ratio = paired(backend, probe, probe.compute, PROBE_SHAPE, FAST)
    # The compute half timed against sqrt(compute x memory): ratio = sqrt(compute / memory) < 1.
    assert 0 < ratio < 1 and probe_ms > m.median_ms
    old = copy.deepcopy(built[0])
    old.probe["id"] = "probe/1: ..."
    with pytest.raises(TableMismatchError) as e:
        validate_table(old, backend, samples=2)
    assert e.value.field == "table"



# --------------------------------------------------------------------------- stored calibration and quality
def test_calibration_is_used_as_stored_and_refitted_only_when_asked(built, tmp_path):
    _, out = built
    doc = json.loads(out.read_text())
    fitted = doc["calibration"]
    doc["calibration"] = dict(fitted, scale=fitted["scale"] * 2)  # a stored fit that today's code would not make
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(doc))
    t = load_table(tampered)
    assert t.calibration["scale"] == fitted["scale"] * 2  # used as stored, not refitted on load
    cfg = t.space_object().smallest()
    sum_ms = sum(t.entries[b.id].ms for b in cfg.blocks())
    assert predict(cfg, t).latency_ms == pytest.approx(2 * fitted["scale"] * sum_ms
                                                       + fitted["per_block_ms"] * (len(cfg.blocks()) - 1), rel=1e-9)
    t.recalibrate()  # the refit sees entries as saved (6 significant digits): equal to that precision
    assert t.calibration["model"] == fitted["model"]
    assert t.calibration["scale"] == pytest.approx(fitted["scale"], rel=1e-5)
    # A table with timed networks but no stored fit (written before fits were stored) is fitted once on load.
    doc["calibration"] = {"nets": fitted["nets"]}
    old = tmp_path / "unfitted.json"
    old.write_text(json.dumps(doc))
    again = load_table(old).calibration
    assert again["model"] == fitted["model"]
    for k in ("scale", "per_block_ms"):  # both stored rounded to 6 decimals: equal to +-1e-6, plus the refit's
        assert again[k] == pytest.approx(fitted[k], rel=1e-5, abs=2e-6)  # entries at 6 significant digits


def test_tiny_table_predicts_real_networks_within_a_factor_of_two(built):
    """A loose quality bound on a real (tiny, 32 px) build: whole networks timed end to end with the same
    backend, paired with the reference probe and put on the table's speed as a build does (validate_table), are
    all predicted within a factor of 2, and networks measured >= 40 % apart are mostly ranked right. A broken
    sum, calibration or rescaling is off by more than that; load from other processes cancels in the pairing
    (seen here: predicted / measured 0.90-1.12). 40 %, not 20 %: on the 2026-12-03 EPYC VM one paired time of
    a tiny network varied 12.8 % (std) over 5 minutes (benchmarks/bench_probe.py), so two networks 20 % apart
    were misordered by the measurement itself under load. Each network is timed in 3 passes and its median
    timing judged: on the contended 2026-12-04 EPYC (family 25 model 1) single timings misordered 2 of 6 such
    pairs."""
    table, _ = built
    fig = validate_table(table, get_backend("cpu"), samples=8, seed=3, save=False, passes=3)
    ratios = [n["predicted_ms"] / n["ms"] for n in fig["nets"]]
    assert all(0.5 < r < 2.0 for r in ratios), ratios
    nets = list({n["config"]: n for n in fig["nets"]}.values())  # a tiny space draws repeats
    apart = [(a, b) for i, a in enumerate(nets) for b in nets[i + 1:]
             if max(a["ms"], b["ms"]) > 1.4 * min(a["ms"], b["ms"])]
    right = [(a["ms"] > b["ms"]) == (a["predicted_ms"] > b["predicted_ms"]) for a, b in apart]
    if len(right) >= 3:
        assert sum(right) >= 0.75 * len(right), list(zip(apart, right))


def test_public_api_imports_light_and_errors_name_their_field(tiny_dir, tmp_path):
    code = ("import sys, nas.latency; from nas.latency import build_table, load_table, predict, resolve_table; "
            "import nas.latency.prediction, nas.latency.build, nas.latency.validate; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
    space = load_space(tiny_dir / "tiny.toml")
    with pytest.raises(UsageError) as e:
        build_table(space, get_backend("cpu"), resolution=64, out=tmp_path / "r64.json")
    assert e.value.field == "resolution" and not (tmp_path / "r64.json").exists()
    with pytest.raises(UsageError) as e:
        build_table(space, get_backend("cpu"), rescale="sometimes", out=tmp_path / "r.json", limit=0)
    assert e.value.field == "rescale"
    from nas.latency import resolve_table

    assert resolve_table(None, use_default=False) is None
    with pytest.raises(TableError) as e:
        resolve_table(tmp_path / "absent.json")
    assert e.value.field == "table"
