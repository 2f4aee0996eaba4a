"""Export found architectures: JSON with provenance, ONNX, TorchScript and a ``state_dict`` checkpoint.

What a user takes away from a search. :func:`export_candidate` (or :func:`export`, for a
:class:`~nas.export.candidates.Candidate`) writes one network in the requested formats and checks every binary
format right after writing it (:mod:`nas.export.checks`):

* **JSON** ``{"config": {...}, "provenance": {...}}``: MACs, params, the predicted latency with the latency
  table's identity and hash, the proxy accuracy, trial, study, space hash, seed, tool version, time; and the
  ONNX check's figures. ``nas.build_model("found.json")`` and :func:`nas.load_config` read it back.
* **ONNX**: the graph the latency tables time (the one exporter, :mod:`nas.export.checks`), checked against
  PyTorch, and timed on this machine paired with the reference probe, on the table's reference speed, beside
  the predicted latency (:mod:`nas.export.timing`: measured / predicted compares like with like).
* **TorchScript** (``torch.jit.trace``), loaded back and compared with PyTorch.
* **pt**: the checkpoint of :mod:`nas.export.checkpoint`; ``nas train`` writes the same format.

Every file is written atomically (:mod:`nas._io`). Weights are the seeded initialisation unless ``weights`` is
given: a search ranks architectures, it does not keep trained weights.

``checkpoint_dict``, ``load_checkpoint``, ``Candidate``, ``candidate_from_config``, ``candidates_from_study``,
``export_onnx_bytes``, ``check_onnx`` and the constants are re-exported here from their modules.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

from nas import _io
from nas.arch import ArchConfig
from nas.errors import ConfigError, ExportError
from nas.export.candidates import Candidate, candidate_from_config, candidates_from_study
from nas.export.checkpoint import CHECKPOINT_FORMAT, checkpoint_dict, load_checkpoint, read_checkpoint
from nas.export.checks import (ONNX_OPSET, ONNX_TOLERANCE, check_batches, check_onnx, export_onnx_bytes,
                               torchscript_bytes)
from nas.latency.paths import portable_source

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    from torch import nn

    from nas.backends.base import MeasureSettings
    from nas.search.results import TrialRecord

__all__ = [
    "FORMATS",
    "ONNX_OPSET",
    "ONNX_TOLERANCE",
    "CHECKPOINT_FORMAT",
    "Candidate",
    "ExportResult",
    "parse_formats",
    "candidate_from_config",
    "candidates_from_study",
    "export",
    "export_candidate",
    "export_onnx_bytes",
    "check_onnx",
    "load_checkpoint",
    "checkpoint_dict",
    "atomic_write_bytes",
    "ensure_writable_dir",
]

FORMATS: tuple[str, ...] = ("json", "onnx", "torchscript", "pt")
SUFFIX = {"json": ".json", "onnx": ".onnx", "torchscript": ".torchscript.pt", "pt": ".pt"}
DEFAULT_NUM_CLASSES = 1000  # the ImageNet head, when neither the caller nor the study's table says otherwise


# ----------------------------------------------------------------------------------------- small helpers
def atomic_write_bytes(path: "str | Path", data: bytes) -> Path:
    """:func:`nas._io.atomic_write_bytes`, with a failure as an :class:`ExportError` on ``out``.

    Raises:
        ExportError: the folder is not writable (the message names the path; ``field="out"``).
    """
    p = Path(path)
    try:
        return _io.atomic_write_bytes(p, data)
    except OSError as e:
        raise ExportError(f"out {p.parent}: cannot write {p.name} ({e.strerror or e}); choose another folder",
                          field="out") from None


def ensure_writable_dir(path: "str | Path") -> Path:
    """:func:`nas._io.ensure_writable_dir` raising :class:`ExportError` (``field="out"``)."""
    from nas._io import ensure_writable_dir as ensure

    return ensure(path, error=ExportError, field="out")


def parse_formats(text: "str | Sequence[str]") -> tuple[str, ...]:
    """``"json,onnx"`` (or a list) -> ``("json", "onnx")``; ``"all"`` means every format.

    Raises:
        ExportError: an unknown or empty format (``field="format"``).
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for raw in items:
        f = raw.strip().lower()
        if f == "all":
            out.extend(FORMATS)
        elif f in FORMATS:
            out.append(f)
        else:
            raise ExportError(f"format {raw.strip()!r}: unknown; choose from {','.join(FORMATS)} (or all)",
                              field="format")
    if not out:
        raise ExportError(f"format {text!r}: empty; choose from {','.join(FORMATS)}", field="format")
    return tuple(dict.fromkeys(out))


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# ----------------------------------------------------------------------------------------- export
@dataclass
class ExportResult:
    """What :func:`export` wrote and measured.

    Attributes:
        name: file stem.
        files: format -> path written.
        provenance: the JSON file's provenance (also when JSON was not requested).
        onnx_max_abs_diff / torchscript_max_abs_diff: the checks' figures (None if the format was not written).
        measured_latency_ms: the ONNX file on onnxruntime CPU, batch 1, this machine now (None if not measured).
        measured_at_table_speed_ms: the same, timed paired with the reference probe and put on the table's
            reference speed (:mod:`nas.export.timing`); None without a table.
        measured_over_predicted: ``measured_at_table_speed_ms / predicted_latency_ms`` (like for like).
        predicted_latency_ms: from the trial (or ``table``); None when unknown.
    """

    name: str
    config: dict[str, Any]
    files: dict[str, str]
    provenance: dict[str, Any]
    onnx_max_abs_diff: float | None = None
    torchscript_max_abs_diff: float | None = None
    measured_latency_ms: float | None = None
    measured_spread_pct: float | None = None
    predicted_latency_ms: float | None = None
    measured_at_table_speed_ms: float | None = None
    measured_over_predicted: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Head:
    """What ``build_model`` needs besides the config."""

    num_classes: int
    in_channels: int
    stem: str


def _model(cfg: ArchConfig, head: _Head, *, weights: "str | Path | None", seed: int,
           prov: dict[str, Any]) -> "tuple[nn.Module, _Head]":
    """The network to export (eval mode): ``weights``' (its head wins) or the seeded initialisation."""
    import torch

    from nas.builder import build_model

    if weights is not None:
        ck = read_checkpoint(weights)
        ck_cfg = ArchConfig.from_json(ck["config"])
        if ck_cfg != cfg:
            raise ConfigError(f"weights {weights}: trained for {ck_cfg.to_string()}, not {cfg.to_string()}",
                              field="weights")
        head = _Head(ck["num_classes"], ck["in_channels"], ck["stem"])
        model = build_model(cfg, head.num_classes, in_channels=head.in_channels, stem=head.stem)
        model.load_state_dict(ck["state_dict"])
        prov["weights"] = str(weights)
        with contextlib.suppress(ValueError):
            prov["training"] = json.loads(ck.get("provenance") or "{}").get("training")
    else:
        with torch.random.fork_rng(devices=[]):  # seeded init; the caller's global RNG state is left alone
            torch.manual_seed(seed)
            model = build_model(cfg, head.num_classes, in_channels=head.in_channels, stem=head.stem)
        prov["weights"] = f"initialisation (seed {seed}); train with `nas train`"  # stored text: unchanged
    return model.eval(), head


def _record_figures(prov: dict[str, Any], cfg: ArchConfig, head: _Head, table: "str | Path | None") -> None:
    """The exported network's MACs and params (the trial's, for the searched head, move to ``search_*``) and,
    when the candidate has none, the latency predicted from ``table`` with the table's identity and hash."""
    import hashlib

    from nas.macs import count_macs

    mc = count_macs(cfg, num_classes=head.num_classes, in_channels=head.in_channels, stem=head.stem)
    for k in ("macs", "mflops", "params"):
        if k in prov:
            prov[f"search_{k}"] = prov.pop(k)
    prov.update(macs=mc.macs, mflops=round(mc.mflops, 3), params=mc.params, num_classes=head.num_classes,
                in_channels=head.in_channels, stem=head.stem, resolution=cfg.resolution, config_hash=cfg.hash(),
                config_string=cfg.to_string())
    if prov.get("latency_ms") is None and table is not None:
        from nas.latency.prediction import predict
        from nas.latency.table import load_table

        t = load_table(table)
        pr = predict(cfg, t)
        # latency_timed: the table timed this network whole and latency_ms is that timing; latency_model_ms is
        # its blocks' calibrated sum either way
        prov.update(latency_ms=pr.latency_ms, latency_uncertainty_ms=pr.uncertainty_ms, latency_timed=pr.timed,
                    latency_model_ms=pr.model_ms,
                    table={"path": portable_source(str(table)),
                           "sha256": hashlib.sha256(Path(table).read_bytes()).hexdigest(), "space_hash": t.space_hash, "identity": t.describe()})


def _graph_note(opset: int, dynamic_batch: bool) -> str:
    """How the file's graph relates to the one the latency tables time for this network."""
    if opset != ONNX_OPSET:
        return f"the latency tables' graph at opset {opset} instead of {ONNX_OPSET}"
    return "the latency tables' graph with a dynamic batch axis" if dynamic_batch else "the latency tables' graph"


def _write_onnx(result: ExportResult, model: "nn.Module", path: Path, *, input_shape: tuple[int, ...], opset: int,
                dynamic_batch: bool, measure: bool, table: "str | Path | None",
                measure_settings: "MeasureSettings | None") -> None:
    """Export with the tables' exporter, check, write, and time the written bytes paired with the probe."""
    from nas.export.timing import export_table, measure_exported

    data = export_onnx_bytes(model, input_shape=input_shape, opset=opset, dynamic_batch=dynamic_batch)
    batches = check_batches(input_shape, dynamic_batch=dynamic_batch)
    result.onnx_max_abs_diff = check_onnx(data, model, input_shape=input_shape, batches=batches)
    result.files["onnx"] = str(atomic_write_bytes(path, data))
    check: dict[str, Any] = {"opset": opset, "dynamic_batch": dynamic_batch, "max_abs_diff": result.onnx_max_abs_diff,
                             "tolerance": ONNX_TOLERANCE, "batches_checked": list(batches),
                             "graph": _graph_note(opset, dynamic_batch)}
    if measure:
        meas = measure_exported(data, input_shape=input_shape, table=export_table(table, result.provenance),
                                predicted_ms=result.predicted_latency_ms, settings=measure_settings)
        result.measured_latency_ms = meas["latency_ms"]
        result.measured_spread_pct = meas["spread_pct"]
        result.measured_at_table_speed_ms = meas["at_table_speed_ms"]
        result.measured_over_predicted = meas["measured_over_predicted"]
        check["measured"] = meas
        check["measured_over_predicted"] = meas["measured_over_predicted"]
    result.provenance["onnx_check"] = check


def _write_rest(result: ExportResult, model: "nn.Module", cfg: ArchConfig, head: _Head, out: Path, name: str,
                fmts: Sequence[str], input_shape: tuple[int, ...]) -> None:
    """TorchScript, then (with the finished provenance) pt and JSON."""
    import torch

    import nas

    prov = result.provenance
    if "torchscript" in fmts:
        data, diff = torchscript_bytes(model, input_shape=input_shape)
        result.torchscript_max_abs_diff = diff
        result.files["torchscript"] = str(atomic_write_bytes(out / f"{name}{SUFFIX['torchscript']}", data))
        prov["torchscript_check"] = {"max_abs_diff": diff, "batches_checked": [1, 2]}
    prov.update(nas_version=nas.__version__, exported_at=_now())
    if "pt" in fmts:
        buf = io.BytesIO()
        torch.save(checkpoint_dict(model, cfg, num_classes=head.num_classes, in_channels=head.in_channels,
                                   stem=head.stem, provenance=prov), buf)
        result.files["pt"] = str(atomic_write_bytes(out / f"{name}{SUFFIX['pt']}", buf.getvalue()))
    if "json" in fmts:
        text = json.dumps({"config": cfg.to_dict(), "provenance": prov}, indent=2, default=str) + "\n"
        result.files["json"] = str(atomic_write_bytes(out / f"{name}{SUFFIX['json']}", text.encode()))


def export(candidate: Candidate, *, out_dir: "str | Path", formats: Sequence[str] = FORMATS,
           num_classes: int = DEFAULT_NUM_CLASSES, in_channels: int = 3,
           stem: Literal["imagenet", "cifar"] = "imagenet", weights: "str | Path | None" = None,
           opset: int = ONNX_OPSET, measure: bool = True, table: "str | Path | None" = None, seed: int = 0,
           measure_settings: "MeasureSettings | None" = None, dynamic_batch: bool = False) -> ExportResult:
    """Write ``candidate`` in ``formats`` under ``out_dir`` and check each binary format.

    Args:
        candidate: from :func:`candidate_from_config` or :func:`candidates_from_study`.
        out_dir: folder (created); files are ``<name>.json``, ``.onnx``, ``.torchscript.pt``, ``.pt``.
        formats: any of :data:`FORMATS` (:func:`parse_formats` reads ``"json,onnx"``).
        num_classes / in_channels / stem: the network head, input channels and stem (taken from ``weights``
            when given).
        weights: a ``.pt`` checkpoint of the same config (``nas train``'s ``model.pt``) to export instead of the
            seeded initialisation.
        opset: ONNX opset (default :data:`ONNX_OPSET`, the latency tables').
        measure: time the ONNX file on this machine (ORT CPU, batch 1, the table's threads), paired with the
            reference probe and put on the table's reference speed (:mod:`nas.export.timing`); needs ``"onnx"``.
        table: a latency table to predict the latency from when the candidate has no predicted latency, and
            whose reference speed the measurement is put on (default: the study's table, when its file exists).
        seed: seeds the weight initialisation.
        measure_settings: the timing protocol (default: the tables' whole-network protocol).
        dynamic_batch: a symbolic batch axis, which batched deployments need: the tables' graph up to the
            batch axis, +1 to +4 % of latency at batch 1. Default False: the static batch-1 graph the latency
            tables time, byte for byte, so the prediction is for the file shipped (see :mod:`nas.export.checks`).

    Returns:
        An :class:`ExportResult`.

    Raises:
        ExportError: unknown format, an unwritable ``out_dir``, an export or check failure.
        ConfigError: ``weights`` is missing, corrupt or for another config.
        TableError: ``table`` cannot be used for this config.
    """
    fmts = parse_formats(list(formats))
    out = ensure_writable_dir(out_dir)
    cfg = candidate.config
    prov: dict[str, Any] = dict(candidate.provenance)
    model, head = _model(cfg, _Head(num_classes, in_channels, stem), weights=weights, seed=seed, prov=prov)
    _record_figures(prov, cfg, head, table)
    input_shape = (1, head.in_channels, cfg.resolution, cfg.resolution)
    result = ExportResult(name=candidate.name, config=cfg.to_dict(), files={}, provenance=prov,
                          predicted_latency_ms=prov.get("latency_ms"))
    if "onnx" in fmts:
        _write_onnx(result, model, out / f"{candidate.name}{SUFFIX['onnx']}", input_shape=input_shape, opset=opset,
                    dynamic_batch=dynamic_batch, table=table,
                    measure=measure, measure_settings=measure_settings)
    _write_rest(result, model, cfg, head, out, candidate.name, fmts, input_shape)
    return result


def export_candidate(source: "Candidate | TrialRecord | int | ArchConfig | Mapping[str, Any] | str | Path", *,
                     out_dir: "str | Path", formats: "Sequence[str] | str" = FORMATS,
                     study: "optuna.Study | None" = None, num_classes: int | None = None, in_channels: int = 3,
                     stem: Literal["imagenet", "cifar"] = "imagenet", weights: "str | Path | None" = None,
                     opset: int = ONNX_OPSET, measure: bool = True, table: "str | Path | None" = None,
                     seed: int = 0, measure_settings: "MeasureSettings | None" = None,
                     dynamic_batch: bool = False) -> ExportResult:
    """Export one network, a search trial or a config, in ``formats``: the Python entry point of ``nas export``.

    Args:
        source: a trial of ``study`` (a :class:`~nas.search.results.TrialRecord`, e.g. from
            ``run_search(...).pareto``, or its number), a :class:`~nas.export.candidates.Candidate`, or a
            config (an ``ArchConfig``, its dict, a JSON file, a preset name).
        out_dir: the folder (created).
        formats: any of :data:`FORMATS`, as a list or ``"json,onnx"`` (default all).
        study: the study the trial belongs to (:func:`nas.search.open_study`); needed for a trial.
        num_classes: the classifier head; default the study's head (its table's), else 1000.
        in_channels, stem, weights, opset, measure, table, seed, measure_settings, dynamic_batch: as for
            :func:`export`.

    Returns:
        An :class:`ExportResult` (files written, checks' figures, measured and predicted latency).

    Raises:
        UsageError: a trial without ``study`` (``field="study"``).
        StorageError: no such trial.
        ExportError: an unknown format, an unwritable ``out_dir``, a failed/pruned/infeasible trial, a failed
            check.
        ConfigError: an invalid config, or ``weights`` for another config.
    """
    from nas.errors import UsageError
    from nas.search.results import TrialRecord

    fmts = parse_formats(formats)
    if isinstance(source, (TrialRecord, int)) and not isinstance(source, bool):
        if study is None:
            raise UsageError("study: exporting a trial needs the study it belongs to", field="study")
        number = source.number if isinstance(source, TrialRecord) else source
        (candidate,) = candidates_from_study(study, trial=number)
    elif isinstance(source, Candidate):
        candidate = source
    else:
        candidate = candidate_from_config(source)
    heads = num_classes or int(candidate.provenance.get("search_num_classes") or DEFAULT_NUM_CLASSES)
    return export(candidate, out_dir=out_dir, formats=fmts, num_classes=heads, in_channels=in_channels, stem=stem,
                  weights=weights, opset=opset, measure=measure, table=table, seed=seed,
                  measure_settings=measure_settings, dynamic_batch=dynamic_batch)
