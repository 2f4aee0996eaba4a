"""Tables that travel (issue 14): the identity check on use (a doctored identity), the transfer of a tiny real
table (real onnxruntime) validated like a built one, and no machine-local paths in shipped tables."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nas.backends import get_backend
from nas.cli import main
from nas.errors import TableError, TableMismatchError, UsageError
from nas.latency import build_table, check_table_identity, load_table, predict, table_mismatch, validate_table
from nas.latency.transfer import transfer_configs, transfer_table, transferred_table
from nas.space import load_space

from spaces import FAST, timed_rows  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOCAL_PATH = re.compile(r'"(/work|/home|/tmp|/root|/Users|/private|[A-Za-z]:\\\\)[^"]*"')

TINY = """
name = "tiny"
resolution = [32]
stem_channels = [8]
head_channels = [32, 64]
[[stages]]
depth = [1, 2, 3]
width = [16, 24]
split_ratio = [0.5]
se = [false]
kernel = [3]
[[stages]]
depth = [1, 2]
width = [32, 48]
split_ratio = [0.5]
se = [false, true]
kernel = [3]
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A tiny complete table built here, its identity then doctored to another CPU (a 'foreign' table)."""
    d = tmp_path_factory.mktemp("transfer")
    (d / "tiny.toml").write_text(TINY)
    out = d / "tiny.json"
    build_table(load_space(d / "tiny.toml"), get_backend("cpu"), out=out, settings=FAST, network_settings=FAST,
                calibration_nets=4, verify=False, cold=False)
    doc = json.loads(out.read_text())
    doc["identity"]["cpu_model"] = "Imaginary CPU 9000"
    foreign = d / "foreign.json"
    foreign.write_text(json.dumps(doc))
    return foreign


@pytest.fixture
def cfg(tmp_path) -> Path:
    """The tiny space's smallest network as a config file."""
    (tmp_path / "tiny.toml").write_text(TINY)
    p = tmp_path / "cfg.json"
    p.write_text(load_space(tmp_path / "tiny.toml").smallest().to_json())
    return p


def test_mismatch_is_listed_and_strict_raises_with_field_table(source):
    table = load_table(source)
    diff = table_mismatch(table)
    assert any(d.startswith("cpu_model") and "Imaginary CPU 9000" in d for d in diff)
    assert check_table_identity(table) == diff
    with pytest.raises(TableMismatchError) as e:
        check_table_identity(table, strict=True)
    assert e.value.field == "table"
    here = dict(table.identity)
    assert table_mismatch(table, here=here) == []  # the same identity: no mismatch
    table.identity["measured_via"] = "nas agent at board:1234"  # a remote table describes the board: not compared
    assert table_mismatch(table) == []


def test_a_table_without_cpu_signature_named_only_amd_epyc_is_not_vouched_for(source):
    """The shipped table records "AMD EPYC" and no family/model: behind that name, CPUs a third apart in speed."""
    table = load_table(source)
    here = {**table.identity, "cpu_model": "AMD EPYC", "cpu_signature": "x86 family 26 model 2 stepping 1"}
    table.identity = {k: v for k, v in here.items() if k != "cpu_signature"}
    diff = table_mismatch(table, here=here)
    assert diff == ["cpu_signature table not recorded ('AMD EPYC' names several CPUs) vs here "
                    "'x86 family 26 model 2 stepping 1'"]
    table.identity["cpu_signature"] = here["cpu_signature"]  # recorded and equal: fine
    assert table_mismatch(table, here=here) == []
    named = {**here, "cpu_model": "Intel(R) Xeon(R) Platinum 8488C"}  # a model number names one CPU
    table.identity = {k: v for k, v in named.items() if k != "cpu_signature"}
    assert table_mismatch(table, here=named) == []


def test_cli_predict_warns_in_one_line_strict_exits_2_json_carries_it(source, cfg, capsys):
    capsys.readouterr()
    assert main(["predict", str(cfg), "--table", str(source)]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("nas: warning:")
    assert "Imaginary CPU 9000" in lines[0] and "--transfer-from" in lines[0] and "build-latency-table" in lines[0]
    assert main(["predict", str(cfg), "--table", str(source), "--strict"]) == 2
    assert main(["predict", str(cfg), "--table", str(source), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["table_mismatch"] and out["table_mismatch"][0].startswith("cpu_model")


def test_cli_validate_table_warns_validates_here_and_does_not_save(source, tmp_path, capsys):
    copy = tmp_path / "v.json"
    copy.write_text(source.read_text())
    assert main(["validate-table", str(copy), "--strict", "--samples", "2"]) == 2
    capsys.readouterr()
    assert main(["validate-table", str(copy), "--samples", "2", "--passes", "0"]) == 2
    err = capsys.readouterr().err
    assert "--passes 0" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["validate-table", str(copy), "--samples", "2", "--json"]) == 0
    res = capsys.readouterr()
    assert json.loads(res.out)["table_mismatch"] and "nas: warning:" in res.err
    assert json.loads(copy.read_text())["validation"] is None  # another machine's figures are not stored


def test_transfer_writes_this_machines_identity_provenance_and_loo_and_validates(source, tmp_path):
    src = load_table(source)
    backend = get_backend("cpu")
    out = tmp_path / "moved.json"
    t = transfer_table(src, backend, n_networks=8, n_blocks=10, budget_s=None, out=out)
    assert table_mismatch(t) == [] and t.identity["cpu_model"] != "Imaginary CPU 9000"
    tr = json.loads(out.read_text())["transfer"]
    # 10 real blocks timed here with the source's probe (too few for the regression: recorded, not used)
    bl = tr["blocks"]
    assert bl["timed"] == 10 and not bl["used"] and len(bl["entries"]) == 10
    assert all(src.entries[eid] and raw > 0 and probe > 0 and ratio > 0 for eid, _, raw, probe, ratio in bl["entries"])
    assert tr["source"]["identity"]["cpu_model"] == "Imaginary CPU 9000" and len(tr["source"]["sha256"]) == 64
    assert tr["source"]["file"] == "foreign.json" and tr["networks"] == 8
    assert tr["model"] in tr["models"] and "scale" in tr["models"] and tr["loo_mape_pct"] >= 0
    assert len(tr["loo_errors_pct"]) == 8
    loaded = load_table(out)
    assert loaded.complete and loaded.calibration["model"] == f"transfer:{tr['model']}"
    c = loaded.space_object().smallest()
    assert predict(c, loaded).latency_ms > 0
    fig = validate_table(loaded, backend, samples=4, seed=1)
    assert fig["table_mismatch"] == [] and fig["samples"] == 4
    for n in fig["nets"]:  # a tiny table on a busy machine: only a loose bound, as test_table's
        assert 0.5 < n["predicted_ms"] / n["ms"] < 2.0
    with pytest.raises(TableError) as e:
        transfer_table(src, backend, n_networks=3, out=out)
    assert e.value.field == "out"
    with pytest.raises(UsageError) as e:
        transfer_table(src, backend, n_networks=1)
    assert e.value.field == "n_networks"
    with pytest.raises(UsageError) as e:
        transfer_table(src, backend, n_blocks=-1)
    assert e.value.field == "n_blocks"


def test_single_scale_fit_reproduces_a_uniformly_slower_machine(source):
    """Networks 'timed' at exactly 1.3x the source's predictions: every model finds 1.3; one scale is chosen."""
    src = load_table(source)
    configs = transfer_configs(src.space_object(), resolution=src.resolution, count=8)
    rows = timed_rows(configs, lambda c: 1.3 * predict(c, src).latency_ms)
    t = transferred_table(src, src.identity, rows)
    assert t.transfer["model"] == "scale" and t.transfer["loo_mape_pct"] < 1e-6
    for c in configs:
        assert predict(c, t).latency_ms == pytest.approx(1.3 * predict(c, src).latency_ms, rel=1e-4)


def test_transfer_configs_start_with_presets_span_macs_and_are_distinct():
    from nas.macs import count_macs

    space = load_space()
    cs = transfer_configs(space, resolution=224, count=20)
    assert len(cs) == 20 and len({c.hash() for c in cs}) == 20
    macs = sorted(count_macs(c).macs for c in cs[5:10])  # a prefix of the draws already spans the range
    assert macs[-1] / macs[0] > 3


def test_cli_transfer_flags_need_transfer_from(tmp_path):
    assert main(["build-latency-table", "--transfer-nets", "5", "--out", str(tmp_path / "x.json")]) == 2
    assert main(["build-latency-table", "--transfer-blocks", "5", "--out", str(tmp_path / "x.json")]) == 2


def test_shipped_tables_hold_no_machine_local_paths():
    files = sorted((REPO / "latency_tables").glob("*.json"))
    assert files
    for f in files:
        hits = LOCAL_PATH.findall(f.read_text())
        assert not hits, f"{f.name}: machine-local paths {hits[:3]}"


def test_saved_tables_write_a_portable_space_source(tmp_path):
    from nas.latency.paths import portable_source

    shipped = load_space()
    assert portable_source(shipped.source) == "search_spaces/shufflenetv2.toml"
    assert portable_source("rel/space.toml") == "rel/space.toml"
    assert portable_source("/somewhere/else/my.toml") == "my.toml"
    t = load_table()  # an old file with an absolute source still loads; a re-save writes a portable one
    t.space["source"] = "/work/main/search_spaces/shufflenetv2.toml"
    t.save(tmp_path / "copy.json")
    assert json.loads((tmp_path / "copy.json").read_text())["space"]["source"] == "search_spaces/shufflenetv2.toml"


def test_cli_transfer_times_networks_and_blocks_and_reports_both(source, tmp_path, capsys):
    out = tmp_path / "moved.json"
    rc = main(["build-latency-table", "--device", "cpu", "--transfer-from", str(source), "--transfer-nets", "4",
               "--transfer-blocks", "5", "--out", str(out), "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["networks"] == 4 and doc["blocks"]["timed"] == 5 and doc["blocks"]["used"] is False
    assert "entries" not in doc["blocks"] and load_table(out).transfer["blocks"]["timed"] == 5
    assert main(["build-latency-table", "--device", "cpu", "--transfer-from", str(source), "--transfer-blocks", "-1",
                 "--out", str(tmp_path / "y.json")]) == 2
    assert "--transfer-blocks -1" in capsys.readouterr().err


def test_an_interrupted_transfer_resumes_from_its_partial_file(source, tmp_path):
    """Ctrl-C after 3 networks: they are on disk; the same call again times only the rest, keeps the 3 as they
    were, and removes the partial file once the table is written."""
    src = load_table(source)
    backend = get_backend("cpu")
    out = tmp_path / "moved.json"
    partial = tmp_path / "moved.json.partial"

    def stop_at_fourth(stage, done, total, label):
        if stage == "transfer" and done == 3 and label:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        transfer_table(src, backend, n_networks=6, n_blocks=4, budget_s=None, out=out, progress=stop_at_fourth)
    saved = json.loads(partial.read_text())
    assert len(saved["rows"]) == 3 and saved["blocks"] == [] and not out.exists()
    with pytest.raises(UsageError) as e:  # another seed: the partial file is not this transfer's
        transfer_table(src, backend, n_networks=6, seed=7, out=out)
    assert e.value.field == "out" and partial.exists()
    t = transfer_table(src, backend, n_networks=6, n_blocks=4, budget_s=None, out=out)
    assert t.transfer["networks"] == 6 and t.transfer["blocks"]["timed"] == 4
    assert t.calibration["nets"][:3] == saved["rows"] and not partial.exists()
    assert len({r["config"] for r in t.calibration["nets"]}) == 6
