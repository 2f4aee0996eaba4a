"""The block step of a transfer: a few blocks timed on the new machine correct every entry of the source.

Whole networks alone fit one correction per block group (:mod:`nas.latency.transfer_fit`); but how much slower
or faster a block runs on another CPU varies block by block (Session 11, shipped table -> a family-25 EPYC: the
ratio new / source of the 1,030 entries had a log-std of 9.3 %, 5-12 % within each family and kernel). So a
transfer also times :data:`TRANSFER_BLOCKS` blocks drawn from the space's entries, weighted by how much of a
random network's time they make up (:func:`block_sample`), and fits a ridge regression of log(new / source) on
each block's shape (:func:`block_features`): kind, resolution, widths, kernel, SE, split, MACs, weights and its
source time. The timed blocks keep their own times; every other entry is the source's times the fitted factor
(:func:`block_correction`). The network-level fit then runs on top of the corrected entries, and the transfer
keeps the correction only where it lowers that fit's leave-one-out error (:func:`nas.latency.transfer`). The
timed blocks are recorded in the new table (:func:`block_records`; read back by :func:`recorded_blocks`), so
the corrected entries its fit started from can be rebuilt (:func:`transfer_base`).

Offline on Session 11's data (shipped table, full build and 50 held-out networks here, 3 passes each): 40
networks alone 76 % of the held-out within +-5 %; with 60-120 blocks drawn this way 90-93 %. Tried and not
kept: 14 more features (activation sizes, MACs per weight, per-kind slopes, squares) and the mean residual of
the 5 nearest timed blocks cut the per-block error from 5.2 to 4.1 % (96 blocks) but left the held-out networks
where they were (87-91 % either way, MAPE 2.2-2.4 %, two held-out sets, three block draws each).
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from nas.arch import BlockKey
from nas.latency.entry import Entry
from nas.latency.rounding import sig

if TYPE_CHECKING:  # pragma: no cover
    from nas.latency.table import LatencyTable
    from nas.space import SearchSpace

__all__ = ["TRANSFER_BLOCKS", "MIN_REGRESSION_BLOCKS", "BlockCorrection", "block_sample", "block_features",
           "block_correction", "corrected_source", "block_times", "block_records", "block_entries", "recorded_blocks",
           "transfer_base"]

TRANSFER_BLOCKS = 96  # six 16-block requests; offline 60 and 120 blocks gave the same held-out figures
MIN_REGRESSION_BLOCKS = 24  # about twice the regression's 13 coefficients
RIDGE = 1.0  # ridge penalty on the standardised features (offline: 0.1 and 1 alike, 10 worse)
USAGE_DRAWS = 400  # random networks of the space that weight the draw of blocks
CV_FOLDS = 5


@dataclass(frozen=True)
class BlockCorrection:
    """Corrected entry times of a source table (ms at the new machine's reference speed).

    Attributes:
        ms: warm time of every entry; the timed blocks' own, the others the source's times the fitted factor.
        cold: cold-weights time of every entry, the source's times the same factor as its warm time.
        figures: ``regression_blocks`` (timed blocks fitted), ``cv_rms_pct`` (k-fold error of the regression
            on them), ``flat_rms_pct`` (the same with one common factor: what the regression has to beat).
    """

    ms: dict[str, float]
    cold: dict[str, float]
    figures: dict[str, Any]


def block_sample(source: "LatencyTable", space: "SearchSpace", count: int, seed: int) -> list[BlockKey]:
    """``count`` distinct entries of ``source``, drawn without replacement with probability proportional to
    their share of the time of :data:`USAGE_DRAWS` random networks of ``space`` (a block every network has, as
    the stem, is likely; one that a few rare networks have is not)."""
    rng = random.Random(seed)
    weight: dict[str, float] = {}
    keys: dict[str, BlockKey] = {}
    for _ in range(USAGE_DRAWS):
        for b in space.sample(rng, fixed={"resolution": source.resolution}).blocks():
            if b.id in source._ms:
                weight[b.id] = weight.get(b.id, 0.0) + source._ms[b.id]
                keys[b.id] = b
    # Efraimidis-Spirakis: the `count` largest u ** (1 / w) are a weighted draw without replacement.
    order = sorted(weight, key=lambda i: rng.random() ** (1.0 / weight[i]), reverse=True)
    return [keys[i] for i in order[:count]]


def block_features(key: BlockKey, source_ms: float, num_classes: int = 1000) -> list[float]:
    """The regression's inputs for one block (without the intercept)."""
    from nas.macs import block_macs

    m = block_macs(key, num_classes=num_classes)
    return [float(key.kind == "basic"), float(key.kind == "down"), float(key.kind == "head"),
            math.log(key.resolution), math.log(key.in_channels), math.log(key.out_channels), float(key.kernel),
            float(bool(key.se)), float(key.split_ratio or 0.0), math.log(max(m.macs, 1)),
            math.log(max(m.params, 1)), math.log(max(source_ms, 1e-6))]


def _ridge(x: Any, y: Any, idx: Any) -> Any:
    """Ridge weights (intercept unpenalised) on the rows ``idx`` of standardised features ``x``."""
    import numpy as np

    a = x[idx]
    pen = RIDGE * np.eye(a.shape[1])
    pen[0, 0] = 0.0
    return np.linalg.solve(a.T @ a + pen, a.T @ y[idx])


def block_correction(source: "LatencyTable", measured: dict[str, float]) -> BlockCorrection | None:
    """Fit log(measured / source) on :func:`block_features` and correct every entry (see the module).

    Args:
        source: the source table.
        measured: timed blocks here, id -> ms at the new table's reference speed.

    Returns:
        The correction; None with fewer than :data:`MIN_REGRESSION_BLOCKS` timed blocks.
    """
    import numpy as np

    timed = [i for i in measured if i in source._ms and measured[i] > 0]
    if len(timed) < MIN_REGRESSION_BLOCKS:
        return None
    ids = list(source._ms)
    raw = np.array([block_features(source.entries[i].key, source._ms[i], source.num_classes) for i in ids])
    pos = {i: k for k, i in enumerate(ids)}
    rows = np.array([pos[i] for i in timed])
    mu, sd = raw[rows].mean(0), raw[rows].std(0)
    sd[sd == 0] = 1.0  # a feature constant over the timed blocks (a one-kernel space) carries nothing
    x = np.hstack([np.ones((len(ids), 1)), (raw - mu) / sd])
    y = np.zeros(len(ids))
    y[rows] = [math.log(measured[i] / source._ms[i]) for i in timed]
    folds = np.arange(len(rows)) % CV_FOLDS
    cv, flat = [], []
    for k in range(CV_FOLDS):
        train, test = rows[folds != k], rows[folds == k]
        cv.extend(y[test] - x[test] @ _ridge(x, y, train))
        flat.extend(y[test] - float(np.mean(y[train])))
    factor = np.exp(x @ _ridge(x, y, rows))
    ms, cold = {}, {}
    for k, i in enumerate(ids):
        ms[i] = measured[i] if i in measured and measured[i] > 0 else source._ms[i] * float(factor[k])
        cold[i] = source._cold[i] * ms[i] / source._ms[i]
    rms = lambda e: round(100.0 * float(np.sqrt(np.mean(np.square(e)))), 2)  # noqa: E731
    return BlockCorrection(ms=ms, cold=cold, figures={"regression_blocks": len(timed), "cv_rms_pct": rms(cv),
                                                      "flat_rms_pct": rms(flat)})


def corrected_source(source: "LatencyTable", correction: BlockCorrection) -> "LatencyTable":
    """A copy of ``source`` predicting with the corrected entries (its calibration's fit as stored, without its
    networks: their timings are the source machine's); ``source`` is unchanged."""
    out = copy.copy(source)
    out.calibration = {**(source.calibration or {}), "nets": []}
    out._ms = dict(correction.ms)
    out._cold = dict(correction.cold)
    out._var = {i: v * (correction.ms[i] / source._ms[i]) ** 2 for i, v in source._var.items()}
    return out


def block_records(blocks: Sequence[Entry]) -> list[list[Any]]:
    """Timed blocks as ``[id, t, raw_ms, probe_ms, ratio]`` (the table's ``transfer.blocks.entries``)."""
    return [[e.key.id, round(e.t, 3), sig(e.raw_ms), sig(e.probe_ms), sig(e.ratio)] for e in blocks]


def block_entries(records: Sequence[Sequence[Any]], source: "LatencyTable") -> list[Entry]:
    """:func:`block_records` read back as entries keyed like ``source``'s."""
    return [Entry(key=source.entries[eid].key, raw_ms=raw_ms, spread_pct=0.0, n=0, t=t, probe_ms=probe_ms,
                  ratio=ratio, ms=raw_ms) for eid, t, raw_ms, probe_ms, ratio in records if eid in source.entries]


def block_times(blocks: Sequence[Entry], ref_ms: float) -> dict[str, float]:
    """Timed blocks as ms at the reference speed ``ref_ms``, by entry id (what the block step fits)."""
    return {e.key.id: e.ratio * ref_ms for e in blocks}


def transfer_base(table: "LatencyTable", source: "LatencyTable") -> "LatencyTable":
    """The entries a transferred ``table``'s network fit started from: ``source``'s, corrected by the table's
    timed blocks where it used them."""
    if not ((table.transfer or {}).get("blocks") or {}).get("used"):
        return source
    correction = block_correction(source, block_times(recorded_blocks(table, source), table.probe["ref_ms"]))
    return source if correction is None else corrected_source(source, correction)


def recorded_blocks(table: "LatencyTable", source: "LatencyTable") -> list[Entry]:
    """The blocks a transferred ``table`` timed (its ``transfer.blocks.entries``), as entries keyed like
    ``source``'s; a table from before the block step has none."""
    return block_entries(((table.transfer or {}).get("blocks") or {}).get("entries", []), source)
