"""A network the table timed whole is predicted by that timing (the presets, every calibration or transfer
network); every other network by its blocks. On the shipped table (real timings, no measuring here)."""

from __future__ import annotations

import copy
import json
import random

import pytest

from nas.arch import PRESETS, ArchConfig
from nas.cli import main
from nas.latency import load_table, predict


@pytest.fixture(scope="module")
def shipped():
    return load_table()


def test_a_timed_network_is_predicted_by_its_timing_and_reports_the_model_beside_it(shipped):
    f = shipped.rescaler()
    nets = [n for n in shipped.calibration["nets"] if not n.get("flagged")]
    assert len(nets) >= 20
    for n in nets:
        c = ArchConfig.from_string(n["config"])
        p, m = predict(c, shipped), predict(c, shipped, timed=False)
        assert p.timed and not m.timed
        assert p.latency_ms == pytest.approx(f(n["raw_ms"], n.get("ratio"), n["t"]), rel=1e-12)
        assert p.model_ms == pytest.approx(m.latency_ms, rel=1e-12) and m.model_ms == m.latency_ms
        assert p.uncertainty_ms == pytest.approx(shipped.calibration["rel_error"] * p.latency_ms)
    # the presets are among them; the shipped table's 0.5x runs 4 % under its blocks' model
    half = predict(PRESETS["shufflenetv2-0.5x"].with_resolution(224), shipped)
    assert half.timed and half.latency_ms < 0.97 * half.model_ms


def test_other_networks_use_the_blocks(shipped):
    timed = {n["config"] for n in shipped.calibration["nets"]}
    rng = random.Random(3)
    space = shipped.space_object()
    for _ in range(20):
        c = space.sample(rng, fixed={"resolution": 224})
        if c.to_string() in timed:
            continue
        p = predict(c, shipped)
        assert not p.timed and p.latency_ms == p.model_ms == predict(c, shipped, timed=False).latency_ms


def test_flagged_and_repeated_timings(shipped):
    t = copy.deepcopy(shipped)
    n = t.calibration["nets"][0]
    c = ArchConfig.from_string(n["config"])
    t.calibration = {**t.calibration, "nets": [{**n, "flagged": True}] + t.calibration["nets"][1:]}
    assert not predict(c, t).timed  # a noisy timing is not used (the new calibration dict is seen)
    f = t.rescaler()
    twice = [{**n, "raw_ms": n["raw_ms"] * k, "ratio": n["ratio"] * k} for k in (1.0, 1.1, 1.3)]
    t.calibration = {**t.calibration, "nets": twice + t.calibration["nets"][1:]}
    assert predict(c, t).latency_ms == pytest.approx(f(twice[1]["raw_ms"], twice[1]["ratio"], n["t"]))  # median


def test_cli_predict_says_when_it_uses_the_tables_own_timing(capsys):
    assert main(["predict", "shufflenetv2-1.0x", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["timed"] is True and doc["model_ms"] > 0 and doc["latency_ms"] != doc["model_ms"]
    assert main(["predict", "shufflenetv2-1.0x"]) == 0
    assert "timed this network whole" in capsys.readouterr().out
