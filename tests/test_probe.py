"""The reference probe's versions (issue 15): probe/3 sized to the space and the board's cache, probe/2 tables
loading, predicting and validating with probe/2 as before, a probe/3 tiny table built and validated, and the
build's plain progress lines when stderr is a file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nas.backends import get_backend
from nas.errors import TableMismatchError
from nas.latency import build_table, load_table, predict, validate_table
from nas.latency.probe_spec import (MEMORY_PROBE_COPIES, PROBE_ID, PROBE_V2, ProbeSpec, memory_unit_bytes,
                                    probe_spec_for, spec_of)
from nas.space import load_space

from spaces import FAST  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "search_spaces" / "tiny.toml"
DEFAULT = REPO / "search_spaces" / "shufflenetv2.toml"


def test_probe3_memory_half_fits_the_space_and_caps_at_probe2():
    tiny = probe_spec_for(load_space(TINY), resolution=32)
    assert tiny.version == 3 and tiny.memory_copies == MEMORY_PROBE_COPIES
    largest = tiny.sized_from["space_max_weight_bytes"]
    assert tiny.memory_bytes <= largest < 2 * tiny.memory_bytes  # ~ the largest network's weights
    assert tiny.memory_bytes < PROBE_V2.memory_bytes / 50  # 0.15 MB, not 15 MB
    big = probe_spec_for(load_space(DEFAULT), resolution=224)
    assert big.memory_shape == PROBE_V2.memory_shape and big.memory_copies == PROBE_V2.memory_copies  # as today
    assert big.id != PROBE_ID and big.id.startswith("probe/3")


def test_probe3_overflows_a_cache_the_space_overflows_and_ignores_a_bigger_one():
    space = load_space(DEFAULT)
    small_llc = probe_spec_for(space, resolution=224, llc_bytes=2 * 2**20)  # a Pi 4: 1 MB L2, networks overflow
    assert small_llc.memory_shape == PROBE_V2.memory_shape  # the 15.5 MB cap already overflows it
    big_llc = probe_spec_for(space, resolution=224, llc_bytes=32 * 2**20)  # a server: 32 MB L3 < 101 MB nets
    assert big_llc.memory_bytes >= 1.2 * 32 * 2**20 and big_llc.sized_from["llc_bytes"] == 32 * 2**20
    huge_llc = probe_spec_for(load_space(TINY), resolution=32, llc_bytes=480 * 2**20)  # tiny nets fit: no change
    assert huge_llc.memory_shape == probe_spec_for(load_space(TINY), resolution=32).memory_shape
    assert memory_unit_bytes(976) * 8 == PROBE_V2.memory_bytes


def test_spec_of_rebuilds_the_recorded_probe_and_refuses_unknown_ones():
    assert spec_of({"id": PROBE_ID, "input_shape": [3, 64, 64]}) is PROBE_V2
    spec = probe_spec_for(load_space(TINY), resolution=32, llc_bytes=2**20)
    assert spec_of(spec.record()) == spec
    forged = {**spec.record(), "memory": {"copies": 8, "width": 96, "resolution": 7}}  # id says 88 wide
    assert spec_of(forged) is None
    assert spec_of({"id": "probe/1: old"}) is None
    assert spec_of({"version": 3, "memory": {"copies": "x"}}) is None
    assert PROBE_V2.record() == {"id": PROBE_ID, "input_shape": [3, 64, 64]}  # probe/2 tables' fields as before
    assert ProbeSpec(version=3, memory_width=88).memory_shape == (88, 7, 7)


# probe/3's id for the default space on a 32 MiB-LLC host before the compute half was sized (session 5).
PROBE3_DEFAULT_S5 = ("probe/3: sqrt(compute x memory); compute = conv3x3s2 3-24, 1x1 24-64, dw3x3 64, 1x1 64-128, "
                     "dw3x3s2 128, 1x1 128-128 (BN+ReLU each), 3x64x64; memory = 8 copies of "
                     "basic_r7_i1608_o1608_s0.5_k3 (41.8 MB of weights)")


def test_probe3_compute_half_follows_a_small_resolution_and_older_tables_keep_theirs():
    tiny = probe_spec_for(load_space(TINY), resolution=32)
    assert tiny.compute_shape == (3, 32, 32) and "3x32x32" in tiny.id
    assert tiny.record()["input_shape"] == [3, 32, 32] and spec_of(tiny.record()) == tiny
    big = probe_spec_for(load_space(DEFAULT), resolution=224, llc_bytes=32 * 2**20)
    assert big.compute_shape == (3, 64, 64) and big.id == PROBE3_DEFAULT_S5  # >= 64 px: the id is unchanged
    # A tiny table recorded before the compute half was sized: 3x64x64 in its fields, and so in its probe.
    before = {**tiny.record(), "input_shape": [3, 64, 64],
              "id": tiny.id.replace("3x32x32", "3x64x64")}
    old = spec_of(before)
    assert old is not None and old.compute_shape == (3, 64, 64) and old.id == before["id"]
    assert spec_of({**before, "input_shape": [3, 32, 32]}) is None  # fields that disagree with the id


def test_sized_compute_half_is_what_a_build_times(monkeypatch):
    import nas.latency.probe as p

    shapes = []
    backend = get_backend("cpu")
    real = backend.portable
    monkeypatch.setattr(backend, "portable", lambda m, input_shape: shapes.append(tuple(input_shape))
                        or real(m, input_shape=input_shape))
    probe = p.portable_probe(backend, probe_spec_for(load_space(TINY), resolution=32))
    assert probe.compute_shape == (3, 32, 32) and shapes[0] == (3, 32, 32)
    (m, probe_ms, ratio), = p.paired_many(backend, probe, [probe.compute], [(3, 32, 32)], FAST)
    assert m.median_ms > 0 and probe_ms > 0 and ratio > 0  # real ORT sessions at the sized shape


# Predictions of the shipped (probe/2) table by the code before probe/3 existed (commit 9dd088a).
BEFORE_PROBE3 = [
    ("r224_c24_d2w32s0.25k3_d2w64s0.25k3_d2w128s0.25k3_h1024", 0.4303554175776358, 0.011120615440167599),
    ("r224_c24_d8w292s0.75k7e_d10w584s0.75k7e_d8w1168s0.75k7e_h2048", 47.63016986045465, 1.2303770826522273),
    ("r224_c24_d6w116s0.75k7_d2w584s0.5k7e_d3w192s0.75k7e_h2048", 6.3936179701433, 0.16530349812592882),
    ("r224_c24_d7w48s0.75k7e_d2w488s0.25k7_d2w320s0.25k5e_h1536", 1.9922815761246224, 0.05146961170342786),
    ("r224_c24_d7w292s0.75k3e_d7w64s0.25k5_d3w320s0.75k7e_h2048", 8.31714254441702, 0.21492599752153133),
]


def test_shipped_probe2_table_loads_and_predicts_as_before():
    from nas.arch import ArchConfig

    table = load_table()
    assert table.probe["id"] == PROBE_ID and spec_of(table.probe) is PROBE_V2
    for config, latency_ms, uncertainty_ms in BEFORE_PROBE3:
        p = predict(ArchConfig.from_string(config), table)
        assert (p.latency_ms, p.uncertainty_ms) == pytest.approx((latency_ms, uncertainty_ms), rel=1e-12)


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "tiny.json"
    table = build_table(load_space(TINY), get_backend("cpu"), out=out, settings=FAST, network_settings=FAST,
                        calibration_nets=4, verify=False, cold=False)
    return table, out


def test_new_tiny_table_records_probe3_and_validates_with_it(tiny_table, monkeypatch):
    table, out = tiny_table
    assert table.complete and table.probe["version"] == 3
    spec = spec_of(load_table(out).probe)
    assert spec is not None and spec.memory_width < 976 and spec.memory_shape == tuple(
        [table.probe["memory"]["width"], 7, 7])
    import nas.latency.validate as v

    used = []
    real = v.portable_probe
    monkeypatch.setattr(v, "portable_probe", lambda b, s: used.append(s) or real(b, s))
    fig = validate_table(load_table(out), get_backend("cpu"), samples=3, save=False)
    assert used == [spec] and fig["modes"]
    resumed = build_table(load_space(TINY), get_backend("cpu"), out=out, settings=FAST, network_settings=FAST,
                          calibration_nets=4, verify=False, cold=False)
    assert resumed.probe["id"] == table.probe["id"]  # a resumed build keeps the table's probe


def test_probe2_table_is_validated_and_filled_with_probe2(tiny_table, tmp_path, monkeypatch):
    table, out = tiny_table
    old = load_table(out)
    for k in ("version", "memory", "sized_from"):
        old.probe.pop(k, None)
    old.probe["id"] = PROBE_ID  # as a table built before probe/3
    first = next(iter(old.entries))
    del old.entries[first]
    old.save(tmp_path / "old.json")
    import nas.latency.prediction as p
    import nas.latency.validate as v

    used = []
    for mod in (p, v):
        real = mod.portable_probe
        monkeypatch.setattr(mod, "portable_probe", lambda b, s, real=real: used.append(s) or real(b, s))
    lazy = load_table(tmp_path / "old.json")
    cfg = next(c for c in [lazy.space_object().smallest(), lazy.space_object().largest()]
               if first in {b.id for b in c.blocks()})
    predict(cfg, lazy, backend=get_backend("cpu"))  # measures the missing entry
    validate_table(load_table(tmp_path / "old.json"), get_backend("cpu"), samples=3, save=False)
    assert used and all(s is PROBE_V2 for s in used)
    assert not lazy.missing(cfg.blocks())  # filled with probe/2's samples
    lazy.probe["id"] = "probe/1: retired"
    lazy.save(tmp_path / "older.json")
    with pytest.raises(TableMismatchError) as e:
        validate_table(load_table(tmp_path / "older.json"), get_backend("cpu"), samples=3, save=False)
    assert e.value.field == "table"


def test_build_with_stderr_to_a_file_writes_progress_lines(tmp_path):
    err = tmp_path / "build.log"
    code = ("import sys; import nas.cli.progress as p; p.PLAIN_EVERY_S = 0.0; from nas.cli import main; "
            f"sys.exit(main(['build-latency-table', '--space', {str(TINY)!r}, '--out', {str(tmp_path / 't.json')!r}, "
            "'--limit', '4', '--calibration-nets', '0', '--no-verify', '--no-cold', '--blocks-per-request', '1']))")
    with err.open("w") as f:
        r = subprocess.run([sys.executable, "-c", code], stderr=f, stdout=subprocess.PIPE, text=True, timeout=300,
                           env={**os.environ, "COLUMNS": "120"})
    assert r.returncode == 0
    lines = [ln for ln in err.read_text().splitlines() if ln.startswith("blocks: ")]
    assert len(lines) >= 4 and "/16 (" in lines[0]
    assert any(", eta " in ln for ln in lines)  # entries done / total with an ETA


def test_validate_agent_built_table_without_remote_says_add_remote(tiny_table, tmp_path, capsys):
    from nas.cli import main

    table, out = tiny_table
    agent = load_table(out)
    agent.identity["measured_via"] = "nas agent at 127.0.0.1:8765"
    agent.save(tmp_path / "agent.json")
    assert main(["validate-table", str(tmp_path / "agent.json"), "--samples", "2"]) == 2
    err = capsys.readouterr().err
    assert "--remote" in err and "HOST:PORT" in err and "127.0.0.1:8765" in err


class _Counting:
    """A real onnxruntime backend that records how many models each ``measure_many`` call carried, with an
    optional agent-style time limit (``limits``)."""

    def __init__(self, limits=None):
        self.inner, self.calls = get_backend("cpu"), []
        if limits is not None:
            self.limits = limits

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def measure_many(self, models, *, input_shapes, settings=None):
        self.calls.append(len(models))
        return self.inner.measure_many(models, input_shapes=input_shapes, settings=settings)


def test_build_times_blocks_in_groups_with_one_probe_per_group(tmp_path):
    space = load_space(TINY)
    n = len(space.enumerate_blocks(resolution=32))
    backend = _Counting()
    table = build_table(space, backend, out=tmp_path / "g.json", settings=FAST, network_settings=FAST,
                        calibration_nets=0, verify=False, cold=False, blocks_per_request=5)
    assert len(table.entries) == n
    assert backend.calls == [2 + 5] * (n // 5) + ([2 + n % 5] if n % 5 else [])  # probe halves + blocks
    assert len(table.probe["samples"]) == len(backend.calls)  # one probe time per request
    groups = {}
    for e in table.entries.values():
        assert e.ratio > 0 and e.raw_ms > 0
        groups.setdefault(e.t, []).append(e)
    assert sorted(len(g) for g in groups.values()) == sorted(c - 2 for c in backend.calls)
    for g in groups.values():  # a group shares its probe rounds
        assert len({e.probe_ms for e in g}) == 1


def test_group_respects_the_bytes_cap_and_shrinks_under_an_agent_time_limit(tmp_path, monkeypatch):
    import nas.latency.build as build

    space = load_space(TINY)
    monkeypatch.setattr(build, "GROUP_MAX_BYTES", 1)  # every block is over it: one block per request
    backend = _Counting()
    build_table(space, backend, out=tmp_path / "b.json", settings=FAST, network_settings=FAST, calibration_nets=0,
                verify=False, cold=False, limit=4)
    assert backend.calls == [3] * 4
    monkeypatch.undo()
    slow = _Counting(limits={"max_seconds": 1e-3})  # any group takes over half of it: down to one block
    build_table(space, slow, out=tmp_path / "s.json", settings=FAST, network_settings=FAST, calibration_nets=0,
                verify=False, cold=False, limit=6, blocks_per_request=4)
    assert slow.calls == [2 + 4, 3, 3]


def test_a_group_refused_for_the_agent_time_limit_is_halved_and_sent_again(tmp_path):
    from nas.errors import MeasurementError

    class Capped(_Counting):
        def measure_many(self, models, *, input_shapes, settings=None):
            if len(models) > 2 + 3:  # as the agent answers a request that ran past --max-seconds
                self.calls.append(-len(models))
                raise MeasurementError("measurement killed after 120.1 s: past this agent's max_seconds limit 120 s",
                                       field="max_seconds")
            return super().measure_many(models, input_shapes=input_shapes, settings=settings)

    space = load_space(TINY)
    capped = Capped()
    table = build_table(space, capped, out=tmp_path / "c.json", settings=FAST, network_settings=FAST,
                        calibration_nets=0, verify=False, cold=False, limit=8, blocks_per_request=8)
    assert capped.calls == [-10, -6, 4, 4, 4, 4]  # 8 refused, 4 refused, then pairs, none lost
    assert len(table.entries) == 8


def test_blocks_per_request_below_one_is_a_usage_error(tmp_path, capsys):
    from nas.cli import main

    assert main(["build-latency-table", "--space", str(TINY), "--out", str(tmp_path / "t.json"),
                 "--blocks-per-request", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["nas: error: --blocks-per-request 0: must be >= 1"]
