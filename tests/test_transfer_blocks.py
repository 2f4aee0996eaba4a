"""The block step of a transfer (issue 14): blocks timed on the new machine correct every entry by block shape.

Synthetic truths on the shipped table's real entries (no timing): a new machine on which each entry's speed-up
follows its shape must be recovered from a few blocks; one on which it does not must not be made worse than the
networks alone. The real-ORT path is in test_transfer.py."""

from __future__ import annotations

import math

import pytest

from nas.arch import ArchConfig
from nas.latency import load_table, predict
from nas.latency.entry import Entry
from nas.latency.transfer import transfer_configs, transferred_table
from nas.latency.transfer_blocks import (MIN_REGRESSION_BLOCKS, BlockCorrection, block_correction, block_sample,
                                        corrected_source, recorded_blocks)

from spaces import timed_rows  # noqa: E402


@pytest.fixture(scope="module")
def shipped():
    return load_table()


def _truth(key) -> float:
    """A new machine's factor on an entry: faster for wide blocks, slower with SE and big kernels."""
    return math.exp(0.3 - 0.12 * math.log(key.out_channels) + 0.08 * key.se + 0.02 * key.kernel)


def _entries(table, keys, ref_ms: float = 2.0) -> list[Entry]:
    out = []
    for i, k in enumerate(keys):
        ms = table._ms[k.id] * _truth(k)
        out.append(Entry(key=k, raw_ms=ms, spread_pct=1.0, n=10, t=1000.0 + i, probe_ms=ref_ms, ratio=ms / ref_ms,
                         ms=ms))
    return out


def test_block_sample_is_seeded_distinct_and_of_the_table(shipped):
    space = shipped.space_object()
    a, b = block_sample(shipped, space, 40, seed=1), block_sample(shipped, space, 40, seed=1)
    assert [k.id for k in a] == [k.id for k in b]
    assert len({k.id for k in a}) == 40 and all(k.id in shipped.entries for k in a)
    assert [k.id for k in block_sample(shipped, space, 40, seed=2)] != [k.id for k in a]
    # every network has a stem and a down unit of each stage: the draw leans to blocks networks spend time in
    kinds = [k.kind for k in block_sample(shipped, space, 200, seed=3)]
    assert kinds.count("down") > kinds.count("head")


def test_correction_recovers_a_shape_dependent_speed_change_from_a_few_blocks(shipped):
    keys = block_sample(shipped, shipped.space_object(), 60, seed=0)
    measured = {k.id: shipped._ms[k.id] * _truth(k) for k in keys}
    corr = block_correction(shipped, measured)
    assert corr is not None and corr.figures["regression_blocks"] == 60
    # the shape explains it, one common factor does not (the ridge penalty shrinks the fit a little)
    assert corr.figures["cv_rms_pct"] < 1.0 and corr.figures["flat_rms_pct"] > 10.0
    err = [corr.ms[eid] / (shipped._ms[eid] * _truth(e.key)) - 1 for eid, e in shipped.entries.items()]
    assert math.sqrt(sum(x * x for x in err) / len(err)) < 0.02 and max(map(abs, err)) < 0.06
    for eid in shipped.entries:
        assert corr.cold[eid] / shipped._cold[eid] == pytest.approx(corr.ms[eid] / shipped._ms[eid], rel=1e-9)
    for k in keys:  # a timed block keeps its own time
        assert corr.ms[k.id] == measured[k.id]
    base = corrected_source(shipped, corr)
    c = ArchConfig.from_string(next(iter(shipped.calibration["nets"]))["config"])
    assert predict(c, base).latency_ms != predict(c, shipped).latency_ms
    assert shipped._ms is not base._ms  # the source is untouched


def test_too_few_blocks_give_no_correction(shipped):
    keys = block_sample(shipped, shipped.space_object(), MIN_REGRESSION_BLOCKS - 1, seed=0)
    assert block_correction(shipped, {k.id: shipped._ms[k.id] for k in keys}) is None


def _true_table(table):
    """``table`` as the new machine runs it: every entry (warm and cold) times its :func:`_truth`."""
    f = {eid: _truth(e.key) for eid, e in table.entries.items()}
    return corrected_source(table, BlockCorrection(ms={i: table._ms[i] * f[i] for i in f},
                                                   cold={i: table._cold[i] * f[i] for i in f}, figures={}))


def _rows(table, configs):
    true = _true_table(table)
    return timed_rows(configs, lambda c: predict(c, true).latency_ms, t0=2000.0)


def test_transfer_uses_the_blocks_where_they_lower_the_networks_loo_error(shipped):
    configs = transfer_configs(shipped.space_object(), resolution=shipped.resolution, count=20)
    rows = _rows(shipped, configs)
    blocks = _entries(shipped, block_sample(shipped, shipped.space_object(), 60, seed=0))
    plain = transferred_table(shipped, shipped.identity, rows)
    moved = transferred_table(shipped, shipped.identity, rows, blocks=blocks)
    bl = moved.transfer["blocks"]
    assert bl["used"] and bl["timed"] == 60 and len(bl["entries"]) == 60
    assert bl["network_score_pct"]["blocks"] < bl["network_score_pct"]["source"]
    assert not plain.transfer["blocks"]["used"] and plain.transfer["blocks"]["timed"] == 0
    held = transfer_configs(shipped.space_object(), resolution=shipped.resolution, count=40, seed=7)[5:]
    truth = [predict(c, _true_table(shipped)).latency_ms for c in held]
    err = lambda t: max(abs(predict(c, t).latency_ms / m - 1) for c, m in zip(held, truth))  # noqa: E731
    assert err(moved) < 0.01 < err(plain)
    # the blocks' probe samples join the table's timeline; the recorded blocks read back as entries
    assert len(moved.probe["samples"]) == 80
    assert [e.key.id for e in recorded_blocks(moved, shipped)] == [e.key.id for e in blocks]


def test_blocks_that_do_not_help_the_networks_are_not_used(shipped):
    """Blocks timed on a machine whose networks do not follow them (here: every block 'timed' 40 % slower at
    random, the networks exactly 1.3x the source): the networks' fit alone is kept."""
    import random

    rng = random.Random(0)
    configs = transfer_configs(shipped.space_object(), resolution=shipped.resolution, count=12)
    rows = timed_rows(configs, lambda c: 1.3 * predict(c, shipped).latency_ms, t0=1.0)
    keys = block_sample(shipped, shipped.space_object(), 40, seed=0)
    blocks = [Entry(key=k, raw_ms=1.0, spread_pct=1.0, n=10, t=100.0, probe_ms=2.0,
                    ratio=shipped._ms[k.id] * rng.uniform(0.6, 1.4) / 2.0) for k in keys]
    moved = transferred_table(shipped, shipped.identity, rows, blocks=blocks)
    assert not moved.transfer["blocks"]["used"] and moved.transfer["model"] == "scale"
    for c in configs[:4]:
        assert predict(c, moved).latency_ms == pytest.approx(1.3 * predict(c, shipped).latency_ms, rel=1e-4)
