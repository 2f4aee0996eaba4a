"""Latency lookup tables: measure every block of a space on the target, predict whole networks from them.

One module per noun:

- :mod:`~nas.latency.defaults`: the shipped table's path, a build's default file name, measurement protocols;
- :mod:`~nas.latency.probe`: the reference probe and drift rescaling;
- :mod:`~nas.latency.probe_spec`: which probe a table uses (probe/2, or probe/3 sized to the space and cache);
- :mod:`~nas.latency.entry`, :mod:`~nas.latency.table`: the file format (entries, identity, load and save);
- :mod:`~nas.latency.measure`: one block or network timed paired with the probe;
- :mod:`~nas.latency.cold`: cold-weights copies (ONNX graph replication);
- :mod:`~nas.latency.calibrate`: the fit from block sums to whole networks;
- :mod:`~nas.latency.build`: the build passes (blocks, verify, cold, calibration), resumable;
- :mod:`~nas.latency.prediction`: prediction and lazy filling (not ``predict``: that name is the function);
- :mod:`~nas.latency.validate`: end-to-end validation and its plot;
- :mod:`~nas.latency.identity_check`: is a table used on the machine it was built on;
- :mod:`~nas.latency.transfer`, :mod:`~nas.latency.transfer_fit`: a table moved to another machine in minutes;
- :mod:`~nas.latency.paths`: no machine-local paths in the files written.

The public functions below are imported on first use, so ``import nas.latency`` imports neither torch nor
onnxruntime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nas._lazy import lazy_exports

__all__ = ["build_table", "load_table", "resolve_table", "predict", "Prediction", "validate_table",
           "plot_validation", "LatencyTable", "Entry", "default_table_path", "default_table_name", "kendall_tau",
           "transfer_table", "table_mismatch", "check_table_identity"]

_LAZY = {
    "build_table": "nas.latency.build",
    "load_table": "nas.latency.table",
    "resolve_table": "nas.latency.table",
    "LatencyTable": "nas.latency.table",
    "Entry": "nas.latency.entry",
    "predict": "nas.latency.prediction",
    "Prediction": "nas.latency.prediction",
    "validate_table": "nas.latency.validate",
    "plot_validation": "nas.latency.validate",
    "kendall_tau": "nas.latency.validate",
    "default_table_path": "nas.latency.defaults",
    "default_table_name": "nas.latency.defaults",
    "transfer_table": "nas.latency.transfer",
    "table_mismatch": "nas.latency.identity_check",
    "check_table_identity": "nas.latency.identity_check",
}

if TYPE_CHECKING:  # pragma: no cover
    from nas.latency.build import build_table
    from nas.latency.defaults import default_table_name, default_table_path
    from nas.latency.entry import Entry
    from nas.latency.identity_check import check_table_identity, table_mismatch
    from nas.latency.prediction import Prediction, predict
    from nas.latency.table import LatencyTable, load_table, resolve_table
    from nas.latency.transfer import transfer_table
    from nas.latency.validate import kendall_tau, plot_validation, validate_table


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
