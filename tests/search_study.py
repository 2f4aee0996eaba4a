"""One real tiny search, shared by the search, report and export tests (built once per test session).

A tiny space at 32 px with a real latency table (onnxruntime, a light protocol), real proxy training on the
bundled data (a few steps per candidate) and a real SQLite study: what `nas search` leaves behind, instead of
studies built by hand to imitate it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nas.backends import MeasureSettings, get_backend
from nas.latency.build import build_table
from nas.latency.table import load_table
from nas.training.proxy import ProxySettings

FAST = MeasureSettings(warmup=1, min_repeats=3, max_repeats=10, min_time_s=0.0, rounds=1, retries=0)
# A few steps on a small slice of the bundled data: real training, ~0.3 s per candidate.
TINY_PROXY = ProxySettings(steps=4, resolution=16, batch_size=32, train_size=256, val_size=128, reports=2,
                           bn_recalibration=1, threads=1)
BUDGET = "0.13MFLOPs"  # the space spans 0.107 .. 0.150 M MACs (the 1000-class FC is most of it)
STUDY = "tiny"  # 8 trials, one of them an enqueued over-budget network, presets scored
FAILED_STUDY = "tiny-nan"  # one trial whose proxy training diverged
N_TRIALS = 8

SMALL = """
name = "small"
resolution = [32]
stem_channels = [8]
head_channels = [32, 48]
[[stages]]
depth = [1, 2]
width = [16, 24]
split_ratio = [0.5]
se = [false]
kernel = [3, 5]
[[stages]]
depth = [1, 2]
width = [32]
split_ratio = [0.5]
se = [false, true]
kernel = [3]
"""


@dataclass(frozen=True)
class TinyStudy:
    """Where the shared study lives."""

    root: Path  # small.toml, small.json (its table), other.json (the same table claiming another space)
    url: str  # the SQLite storage of STUDY and FAILED_STUDY
    out_dir: Path


_CACHE: dict[str, object] = {}


def tiny_env(tmp_path_factory) -> Path:
    """The folder with the tiny space and its latency table (built once per session)."""
    if "env" not in _CACHE:
        d = tmp_path_factory.mktemp("tiny-env")
        (d / "small.toml").write_text(SMALL)
        from nas.space import load_space

        space = load_space(d / "small.toml")
        build_table(space, get_backend("cpu"), out=d / "small.json", settings=FAST, network_settings=FAST,
                    calibration_nets=2)
        doc = json.loads((d / "small.json").read_text())
        doc["space"]["hash"] = "0" * 64  # the same table claiming another space: what a wrong table looks like
        doc["space"]["name"] = "other"
        (d / "other.json").write_text(json.dumps(doc))
        _CACHE["env"] = d
    return _CACHE["env"]  # type: ignore[return-value]


def tiny_study(tmp_path_factory) -> TinyStudy:
    """The shared study: a real search of ``N_TRIALS`` trials, one over budget (enqueued, so recorded
    infeasible without training), the presets scored, and a second study whose only trial diverged."""
    if "study" not in _CACHE:
        from nas.search import open_study, run_search
        from nas.space import load_space

        root = tiny_env(tmp_path_factory)
        out = tmp_path_factory.mktemp("tiny-study")
        space = load_space(root / "small.toml")
        table = load_table(root / "small.json", space=space)
        common = dict(budgets=[BUDGET], table=table, out_dir=out, proxy_settings=TINY_PROXY, threads=1,
                      fidelity="single")  # the shared study's figures are counted by the report tests
        res = run_search(space, n_trials=2, study=STUDY, presets="none", **common)
        open_study(study=STUDY, storage=res.storage).enqueue_trial(space.params_of(space.largest()))
        run_search(space, n_trials=N_TRIALS, study=STUDY, presets="all", **common)
        run_search(space, n_trials=1, study=FAILED_STUDY, presets="none", budgets=[BUDGET], table=table,
                   storage=res.storage, proxy_settings=TINY_PROXY.replace(lr=1e12, warmup_fraction=0.0), threads=1,
                   fidelity="single")
        _CACHE["study"] = TinyStudy(root=root, url=res.storage, out_dir=out)
    return _CACHE["study"]  # type: ignore[return-value]
