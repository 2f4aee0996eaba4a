"""Export of found configs (JSON, ONNX, TorchScript, state_dict) and checkpoints.

Modules: ``candidates`` (what to export: a trial of a study, a config file, a preset), ``formats`` (the writers
and :func:`export_candidate`), ``checks`` (ONNX and TorchScript checked against PyTorch), ``checkpoint`` (the
``.pt`` format). Names are re-exported lazily: ``import nas.export`` imports neither torch nor optuna.
"""

from __future__ import annotations

from nas._lazy import lazy_exports

_EXPORTS = {
    "export_candidate": "nas.export.formats",
    "export": "nas.export.formats",
    "ExportResult": "nas.export.formats",
    "FORMATS": "nas.export.formats",
    "parse_formats": "nas.export.formats",
    "Candidate": "nas.export.candidates",
    "candidate_from_config": "nas.export.candidates",
    "candidates_from_study": "nas.export.candidates",
    "ONNX_OPSET": "nas.export.checks",
    "export_onnx_bytes": "nas.export.checks",
    "check_onnx": "nas.export.checks",
    "CHECKPOINT_FORMAT": "nas.export.checkpoint",
    "checkpoint_dict": "nas.export.checkpoint",
    "load_checkpoint": "nas.export.checkpoint",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
