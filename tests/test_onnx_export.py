"""The one ONNX exporter (issue 14, "the table times what you ship"): latency tables, board-agent requests and
``nas export`` produce the same graph for the same network, and export's timing is paired with the reference
probe and put on the table's speed, so its measured / predicted ratio compares like with like."""

from __future__ import annotations

import json

import pytest

from nas.arch import ArchConfig, StageConfig
from nas.cli import main

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from nas.backends.base import MeasureSettings  # noqa: E402
from nas.backends.onnxruntime import INPUT_NAME, OPSET, OUTPUT_NAME, OnnxRuntimeBackend, export_onnx  # noqa: E402
from nas.export import export_candidate  # noqa: E402
from nas.export.checks import ONNX_OPSET, export_onnx_bytes  # noqa: E402
from nas.latency.defaults import default_table_path  # noqa: E402

# A few rounds of a few runs: the tests check what is reported, not how precisely it is timed.
LIGHT = MeasureSettings(warmup=1, min_repeats=4, max_repeats=8, min_time_s=0.0, rounds=4, rewarm=1, retries=0)
SHIPPED_PRESET = "shufflenetv2-0.5x"  # a network of the shipped table's space (224 px), the fastest preset


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny_config() -> ArchConfig:
    return ArchConfig(stages=(StageConfig(1, 16), StageConfig(2, 32, 0.5, True, 5), StageConfig(1, 64)),
                      stem_channels=8, head_channels=64, resolution=32, name="tiny")


def seeded_model(cfg: ArchConfig, num_classes: int = 10, seed: int = 0):
    """The network export writes for ``seed`` (export seeds the initialisation the same way)."""
    from nas.builder import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(cfg, num_classes).eval()


def _graph(data: bytes, *, batch_as: int | None = None):
    m = onnx.load_from_string(data)
    if batch_as is not None:  # a symbolic batch axis, written as the static graph's batch
        for v in list(m.graph.input) + list(m.graph.output):
            v.type.tensor_type.shape.dim[0].Clear()
            v.type.tensor_type.shape.dim[0].dim_value = batch_as
    return m


def test_tables_agent_and_export_use_one_exporter():
    cfg = tiny_config()
    model = seeded_model(cfg)
    shape = (1, 3, 32, 32)
    table_graph = OnnxRuntimeBackend(device="cpu", threads=1, batch=1).portable(model, input_shape=shape[1:])
    assert export_onnx_bytes(model, input_shape=shape, dynamic_batch=False) == table_graph  # byte for byte
    assert export_onnx(model, input_shape=shape) == table_graph  # what the remote backend sends the agent
    m = _graph(table_graph)
    assert ONNX_OPSET == OPSET and [(o.domain, o.version) for o in m.opset_import] == [("", OPSET)]
    assert [i.name for i in m.graph.input] == [INPUT_NAME] and [o.name for o in m.graph.output] == [OUTPUT_NAME]

    assert export_onnx_bytes(model, input_shape=shape) == table_graph  # what `nas export` ships by default
    # With --dynamic-batch: the same graph up to the symbolic batch axis.
    shipped = _graph(export_onnx_bytes(model, input_shape=shape, dynamic_batch=True), batch_as=1)
    assert shipped.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    assert shipped.graph.node == m.graph.node and shipped.graph.initializer == m.graph.initializer
    assert shipped.graph.input == m.graph.input and shipped.graph.output == m.graph.output


def test_the_exported_file_is_the_tables_graph(tmp_path):
    cfg = tiny_config()
    table_graph = OnnxRuntimeBackend(device="cpu", threads=1, batch=1).portable(seeded_model(cfg),
                                                                                  input_shape=(3, 32, 32))
    static = export_candidate(cfg, out_dir=tmp_path / "static", formats="onnx", num_classes=10, measure=False)
    assert open(static.files["onnx"], "rb").read() == table_graph
    assert static.provenance["onnx_check"]["graph"] == "the latency tables' graph"
    assert static.provenance["onnx_check"]["batches_checked"] == [1]
    dyn = export_candidate(cfg, out_dir=tmp_path / "dyn", formats="onnx", num_classes=10, measure=False,
                           dynamic_batch=True)
    data = open(dyn.files["onnx"], "rb").read()
    assert data == export_onnx(seeded_model(cfg), input_shape=(1, 3, 32, 32), dynamic_batch=True)
    assert dyn.provenance["onnx_check"]["batches_checked"] == [1, 2] and dyn.provenance["onnx_check"]["dynamic_batch"]


def test_export_reports_the_paired_ratio_to_the_tables_prediction(tmp_path, capsys, monkeypatch):
    import nas.latency.defaults

    monkeypatch.setattr(nas.latency.defaults, "NETWORK_SETTINGS", LIGHT)  # export's default protocol, shortened
    table = str(default_table_path())
    args = ["export", "--preset", SHIPPED_PRESET, "--format", "onnx", "--table", table, "--out", str(tmp_path)]
    assert main([*args, "--json"]) == 0
    (e,) = json.loads(capsys.readouterr().out)["exports"]
    meas = e["provenance"]["onnx_check"]["measured"]
    assert meas["paired"] and meas["probe_ms"] > 0 and meas["ratio_to_probe"] > 0
    assert meas["table_probe_ms"] > 0 and meas["at_table_speed_ms"] == e["measured_at_table_speed_ms"]
    assert meas["at_table_speed_ms"] == pytest.approx(meas["ratio_to_probe"] * meas["table_probe_ms"], rel=1e-3)
    assert e["predicted_latency_ms"] > 0
    assert e["measured_over_predicted"] == pytest.approx(e["measured_at_table_speed_ms"] / e["predicted_latency_ms"],
                                                         rel=1e-3)
    assert isinstance(meas["table_mismatch"], list)  # non-empty on a CPU other than the table's

    assert main(args) == 0
    assert "meas/pred" in capsys.readouterr().out


def test_without_a_table_export_says_why_there_is_no_ratio(tmp_path):
    r = export_candidate(tiny_config(), out_dir=tmp_path, formats="onnx", num_classes=10, measure_settings=LIGHT)
    meas = r.provenance["onnx_check"]["measured"]
    assert r.measured_latency_ms > 0 and meas["paired"] and meas["ratio_to_probe"] > 0
    assert r.measured_over_predicted is None and meas["at_table_speed_ms"] is None and meas["why_not"]
