"""Export found architectures: JSON with provenance, ONNX, TorchScript and a ``state_dict`` checkpoint.

What a user takes away from a search. A :class:`Candidate` is a config plus where it came from (a trial of
an Optuna study, a config file, a preset); :func:`export` writes it in the requested formats and checks
every binary format right after writing it:

* **JSON** ``{"config": {...}, "provenance": {...}}``: MACs, params, the predicted latency with the latency
  table's identity and hash, the proxy accuracy, trial, study, space hash, seed, tool version, time; and the
  ONNX check's figures. ``nas.build_model("found.json")`` and :func:`nas.load_config` read it back.
* **ONNX**, opset :data:`ONNX_OPSET` = 13, dynamic batch axis, TorchScript exporter (``dynamo=False``: no
  onnxscript, weights inline). Opset 13 because every op of these networks (Conv, Relu, Split with sizes as
  an input, Concat, Reshape, Transpose, MaxPool, GlobalAveragePool, Gemm, Sigmoid, Mul) exists in it, and it
  is the newest opset the converters for the paper's ARM targets read (ncnn, MNN, TNN, onnx2tf/TFLite,
  TensorRT 7+, onnxruntime 1.7+); opset 17 would add nothing these graphs use. Checked on the spot: the
  onnxruntime output (full graph optimisation, as deployed) matches PyTorch's in eval mode on random input at
  batch 1 and 2 (max abs diff <= :data:`ONNX_TOLERANCE`), and the latency is measured on this machine
  (onnxruntime CPU, 1 thread, batch 1, through :mod:`nas.backends`) and reported beside the predicted one.
* **TorchScript** (``torch.jit.trace``), loaded back and compared with PyTorch the same way.
* **pt**: ``{"format", "config", "num_classes", "in_channels", "stem", "state_dict", "provenance"}``, loadable
  with ``torch.load(path, weights_only=True)``; :func:`load_checkpoint` rebuilds the module. ``nas train``
  writes the same format, so a trained network exports with ``weights=``.

Every file is written atomically (temp file in the same folder, then ``os.replace``). Weights are the seeded
initialisation unless ``weights`` is given: a search ranks architectures, it does not keep trained weights.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import os
import re
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

from nas.arch import ArchConfig, load_config
from nas.errors import BudgetError, ConfigError, ExportError, StorageError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    import torch
    from torch import nn

    from nas.backends.base import MeasureSettings

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
    "export_onnx_bytes",
    "check_onnx",
    "load_checkpoint",
    "checkpoint_dict",
    "atomic_write_bytes",
    "ensure_writable_dir",
]

FORMATS: tuple[str, ...] = ("json", "onnx", "torchscript", "pt")
SUFFIX = {"json": ".json", "onnx": ".onnx", "torchscript": ".torchscript.pt", "pt": ".pt"}
ONNX_OPSET = 13  # see the module docstring: the newest opset the mobile converters read; nothing newer is used
ONNX_TOLERANCE = 1e-4  # max abs difference ORT vs PyTorch (float32; fused Conv+BN reorders sums: ~1e-6 typical)
CHECKPOINT_FORMAT = "nas-state-dict/1"
CHECK_SEED = 0  # the random check input is fixed so a failure reproduces


# ----------------------------------------------------------------------------------------- small helpers
def atomic_write_bytes(path: "str | Path", data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temp file in the same folder, fsync, ``os.replace``.

    A reader (or a crash) sees the old file or the new one, never a partial one.

    Raises:
        ExportError: the folder is not writable (the message names the path).
    """
    p = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    except OSError as e:
        raise ExportError(f"{p.parent}: cannot write there ({e.strerror}); choose another --out") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ExportError(f"{p}: cannot write ({e.strerror}); choose another --out") from None
    return p


def ensure_writable_dir(path: "str | Path") -> Path:
    """Create ``path`` (and parents) and prove it writable with a probe file, before any slow work.

    Raises:
        ExportError: it cannot be created or written (a parent is a file, a read-only or virtual file
            system, no permission).
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=p, prefix=".nas-write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ExportError(f"--out {p}: not a writable directory ({e.strerror or e}); choose another --out") from None
    return p


def parse_formats(text: "str | Sequence[str]") -> tuple[str, ...]:
    """``"json,onnx"`` (or a list) -> ``("json", "onnx")``; ``"all"`` means every format.

    Raises:
        ExportError: an unknown or empty format.
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
            raise ExportError(f"--format {raw.strip()!r}: unknown; choose from {','.join(FORMATS)} (or all)")
    if not out:
        raise ExportError(f"--format {text!r}: empty; choose from {','.join(FORMATS)}")
    return tuple(dict.fromkeys(out))


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "model"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# ----------------------------------------------------------------------------------------- candidates
@dataclass(frozen=True)
class Candidate:
    """A config to export and where it came from.

    Attributes:
        config: the architecture.
        name: file stem of the exported files (``mystudy-trial12``, ``shufflenetv2-1.0x``, ``found``).
        provenance: what is known about its origin (trial attributes, study attributes, source file).
    """

    config: ArchConfig
    name: str
    provenance: dict[str, Any] = field(default_factory=dict)


def candidate_from_config(source: "ArchConfig | Mapping[str, Any] | str | Path", *,
                          name: str | None = None) -> Candidate:
    """A :class:`Candidate` from a config object, a JSON file (plain or exported) or a preset name.

    Raises:
        ConfigError: the file or preset is invalid or missing.
    """
    cfg = load_config(source)
    prov: dict[str, Any] = {}
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.suffix == ".json" or p.is_file():
            prov["source"] = str(p)
            with contextlib.suppress(OSError, ValueError):
                doc = json.loads(p.read_text())
                if isinstance(doc, dict) and isinstance(doc.get("provenance"), dict):
                    prov.update(doc["provenance"])  # re-exporting keeps the original provenance
                    prov["source"] = str(p)
            stem = p.name.removesuffix(".json")
        else:
            prov["preset"] = cfg.name or str(source)
            stem = cfg.name or str(source)
    else:
        stem = cfg.name or f"config-{cfg.hash()[:8]}"
    return Candidate(config=cfg, name=_safe_name(name or stem), provenance=prov)


_TRIAL_KEYS = ("macs", "mflops", "params", "latency_ms", "latency_uncertainty_ms", "accuracy", "score", "seed",
               "duration_s")
# The search's own seed, version and head width are kept as search_*; the export records its own.
_STUDY_KEYS = ("space_hash", "space_name", "table", "budgets", "objective", "seed", "nas_version", "proxy", "data",
               "num_classes", "metric_names")
_RENAMED = ("seed", "nas_version", "num_classes")


def _infeasible_reason(t: "optuna.trial.FrozenTrial") -> str | None:
    if t.user_attrs.get("feasible") is False:
        return str(t.user_attrs.get("infeasible") or "it broke the search's budget (feasible=false)")
    bad = {k: v for k, v in (t.constraints or {}).items() if v > 0}
    if bad:
        return "constraint(s) violated: " + ", ".join(f"{k}={v:g}" for k, v in bad.items())
    return None


def _check_exportable(t: "optuna.trial.FrozenTrial", study_name: str) -> None:
    from optuna.trial import TrialState

    where = f"trial {t.number} of study {study_name!r}"
    if t.state == TrialState.FAIL:
        why = t.user_attrs.get("failure") or "no reason recorded"
        raise ExportError(f"{where} failed ({str(why).splitlines()[0][:160]}); nothing to export, pick a "
                          "completed trial (e.g. --pareto)")
    if t.state == TrialState.PRUNED:
        raise ExportError(f"{where} was pruned (its proxy accuracy is incomplete); pick a completed trial")
    if t.state != TrialState.COMPLETE:
        raise ExportError(f"{where} has not finished (state {t.state.name}); wait for it or pick another")
    reason = _infeasible_reason(t)
    if reason:
        raise ExportError(f"{where} is infeasible: {reason}; pick a feasible trial (e.g. --pareto)")
    if not isinstance(t.user_attrs.get("config"), Mapping):
        raise ExportError(f"{where} has no 'config' user attribute; it was not written by `nas search`")


def _trial_candidate(study: "optuna.Study", t: "optuna.trial.FrozenTrial") -> Candidate:
    _check_exportable(t, study.study_name)
    try:
        cfg = ArchConfig.from_dict(t.user_attrs["config"])
    except ConfigError as e:
        raise ExportError(f"trial {t.number} of study {study.study_name!r}: stored config is invalid ({e})") from None
    prov: dict[str, Any] = {"study": study.study_name, "trial": t.number}
    prov.update({k: t.user_attrs[k] for k in _TRIAL_KEYS if k in t.user_attrs})
    if "accuracy" not in prov and t.values:
        prov["accuracy"] = t.values[0]
    sattrs = study.user_attrs
    for k in _STUDY_KEYS:
        if k in sattrs:
            prov[("search_" + k) if k in _RENAMED else k] = sattrs[k]
    prov["values"] = list(t.values or [])
    return Candidate(config=cfg, name=_safe_name(f"{study.study_name}-trial{t.number}"), provenance=prov)


_BUDGET_ATTR = {"latency_ms": "latency_ms", "macs": "macs", "params": "params"}


def candidates_from_study(study: "optuna.Study", *, trial: int | None = None, pareto: bool = False,
                          best_under: "str | None" = None) -> list[Candidate]:
    """Pick trials of a finished (or running) search study to export.

    Exactly one selector: ``trial`` (its number), ``pareto`` (every trial of the Pareto front,
    ``study.best_trials``, constraints honoured, infeasible trials left out), or ``best_under`` (a budget such
    as ``5ms``, ``150MFLOPs`` or ``3Mparams``: the most accurate feasible trial within it).

    Returns:
        The candidates, Pareto trials in trial-number order.

    Raises:
        UsageError: not exactly one selector.
        StorageError: the trial does not exist.
        ExportError: the trial failed, was pruned, is unfinished or infeasible; the front is empty.
        BudgetError: the budget cannot be parsed, or no trial meets it.
    """
    from optuna.trial import TrialState

    if sum([trial is not None, bool(pareto), best_under is not None]) != 1:
        raise UsageError("choose exactly one of --trial N, --pareto, --best-under BUDGET")
    trials = study.get_trials(deepcopy=False)
    name = study.study_name
    if trial is not None:
        found = [t for t in trials if t.number == trial]
        if not found:
            span = f"trials 0..{max(t.number for t in trials)}" if trials else "no trials yet"
            raise StorageError(f"--trial {trial}: study {name!r} has no such trial ({span})")
        return [_trial_candidate(study, found[0])]
    if pareto:
        front = [t for t in study.best_trials if _infeasible_reason(t) is None
                 and isinstance(t.user_attrs.get("config"), Mapping)]
        if not front:
            raise ExportError(f"study {name!r}: no completed feasible trial yet, so no Pareto front to export")
        return [_trial_candidate(study, t) for t in sorted(front, key=lambda t: t.number)]
    from nas.units import parse_budget

    budget = parse_budget(str(best_under))
    key = _BUDGET_ATTR[budget.metric]
    ok = [t for t in trials if t.state == TrialState.COMPLETE and _infeasible_reason(t) is None
          and isinstance(t.user_attrs.get("config"), Mapping) and t.user_attrs.get(key) is not None
          and float(t.user_attrs[key]) <= budget.limit]
    if not ok:
        raise BudgetError(f"--best-under {budget.text}: no completed feasible trial of study {name!r} is within it")

    def rank(t: "optuna.trial.FrozenTrial") -> tuple[float, float, int]:
        acc = t.user_attrs.get("accuracy", t.values[0] if t.values else float("-inf"))
        return (-float(acc), float(t.user_attrs[key]), t.number)  # most accurate, then cheapest, then oldest

    return [_trial_candidate(study, min(ok, key=rank))]


# ----------------------------------------------------------------------------------------- models
def checkpoint_dict(model: "nn.Module", config: ArchConfig, *, num_classes: int, in_channels: int, stem: str,
                    provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``.pt`` payload (tensors, strings and numbers only: ``torch.load(weights_only=True)`` reads it)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "config": config.to_json(indent=None),
        "num_classes": int(num_classes),
        "in_channels": int(in_channels),
        "stem": stem,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "provenance": json.dumps(dict(provenance or {}), default=str),
    }


def _read_checkpoint(path: "str | Path") -> dict[str, Any]:
    import torch

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: checkpoint not found")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a corrupt or foreign file
        raise ConfigError(f"{p}: not a readable checkpoint ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{p}: not a nas checkpoint (format {CHECKPOINT_FORMAT}); write one with "
                          "`nas export --format pt` or `nas train`")
    return ck


def load_checkpoint(path: "str | Path") -> "nn.Module":
    """Rebuild the network of a ``.pt`` written by :func:`export` or ``nas train`` (eval mode).

    Raises:
        ConfigError: the file is missing, corrupt, not a nas checkpoint, or its weights do not fit its config.
    """
    from nas.builder import build_model

    ck = _read_checkpoint(path)
    model = build_model(ArchConfig.from_json(ck["config"]), ck["num_classes"], in_channels=ck["in_channels"],
                        stem=ck["stem"])
    try:
        model.load_state_dict(ck["state_dict"])
    except RuntimeError as e:
        raise ConfigError(f"{path}: weights do not fit the stored config ({str(e).splitlines()[0][:120]})") from None
    return model.eval()


@contextlib.contextmanager
def _quiet():
    """The TorchScript exporter and ``torch.jit`` are deprecated upstream; we choose them on purpose
    (fast, no onnxscript, weights inline), so their deprecation and tracer warnings are noise here."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def export_onnx_bytes(model: "nn.Module", *, input_shape: Sequence[int], opset: int = ONNX_OPSET) -> bytes:
    """Serialize ``model`` (eval mode) to ONNX with a dynamic batch axis: input ``input``, output ``logits``.

    Raises:
        ExportError: the exporter failed.
    """
    import torch

    model.eval()
    x = torch.zeros(tuple(int(s) for s in input_shape), dtype=torch.float32)
    buf = io.BytesIO()
    try:
        with torch.no_grad(), _quiet():
            torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=int(opset), input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              do_constant_folding=True)
    except Exception as e:  # the exporter raises many types; report one line
        raise ExportError(f"ONNX export (opset {opset}) failed: {str(e).splitlines()[0][:200]}") from e
    return buf.getvalue()


def _check_inputs(input_shape: Sequence[int], seed: int) -> list["torch.Tensor"]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    c, h, w = (int(s) for s in input_shape[1:])
    return [torch.randn((b, c, h, w), generator=gen) for b in (1, 2)]  # batch 2 proves the dynamic axis


def check_onnx(onnx_bytes: bytes, model: "nn.Module", *, input_shape: Sequence[int], seed: int = CHECK_SEED,
               tolerance: float = ONNX_TOLERANCE) -> float:
    """Run the ONNX model in onnxruntime (CPU, full graph optimisation, 1 thread) and PyTorch (eval mode) on
    random inputs at batch 1 and 2; return the max abs difference of the outputs.

    Raises:
        ExportError: onnxruntime cannot load or run it, or the difference exceeds ``tolerance``.
    """
    import onnxruntime as ort
    import torch

    from nas.backends.onnxruntime import session_options

    try:
        sess = ort.InferenceSession(onnx_bytes, sess_options=session_options(1), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(f"onnxruntime cannot load the exported model: {str(e).splitlines()[0][:200]}") from None
    model.eval()
    worst = 0.0
    for x in _check_inputs(input_shape, seed):
        with torch.no_grad():
            ref = model(x).numpy()
        try:
            (out,) = sess.run(None, {"input": x.numpy()})
        except Exception as e:
            raise ExportError(f"onnxruntime cannot run the exported model at batch {x.shape[0]}: "
                              f"{str(e).splitlines()[0][:160]}") from None
        if out.shape != ref.shape:
            raise ExportError(f"ONNX check: output shape {out.shape} != PyTorch {ref.shape} at batch {x.shape[0]}")
        worst = max(worst, float(abs(out - ref).max()))
    if not worst <= tolerance:
        raise ExportError(f"ONNX check failed: onnxruntime differs from PyTorch by {worst:.3g} (> {tolerance:g})")
    return worst


def _torchscript_bytes(model: "nn.Module", *, input_shape: Sequence[int], seed: int = CHECK_SEED,
                       tolerance: float = ONNX_TOLERANCE) -> tuple[bytes, float]:
    """Trace, serialize, load back, and compare with eager PyTorch at batch 1 and 2."""
    import torch

    try:
        with torch.no_grad(), _quiet():
            example = torch.zeros(tuple(int(s) for s in input_shape))
            traced = torch.jit.trace(model.eval(), example, check_trace=False)  # checked below, after a reload
            buf = io.BytesIO()
            torch.jit.save(traced, buf)
            data = buf.getvalue()
            loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")
            worst = 0.0
            for x in _check_inputs(input_shape, seed):
                worst = max(worst, float((loaded(x) - model(x)).abs().max()))
    except Exception as e:
        raise ExportError(f"TorchScript export failed: {str(e).splitlines()[0][:200]}") from e
    if not worst <= tolerance:
        raise ExportError(f"TorchScript check failed: reloaded module differs by {worst:.3g} (> {tolerance:g})")
    return data, worst


# ----------------------------------------------------------------------------------------- export
@dataclass
class ExportResult:
    """What :func:`export` wrote and measured.

    Attributes:
        name: file stem.
        files: format -> path written.
        provenance: the JSON file's provenance (also when JSON was not requested).
        onnx_max_abs_diff / torchscript_max_abs_diff: the checks' figures (None if the format was not written).
        measured_latency_ms: onnxruntime CPU, 1 thread, batch 1, on this machine (None if not measured).
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Light protocol for one whole network: a few hundred ms per model, not the table's long protocol.
def _default_measure_settings() -> "MeasureSettings":
    from nas.backends.base import MeasureSettings

    return MeasureSettings(warmup=5, min_repeats=15, max_repeats=200, min_time_s=0.5, rounds=3, retries=1)


def _measure(onnx_bytes: bytes, input_shape: Sequence[int], settings: "MeasureSettings | None") -> dict[str, Any]:
    from nas.backends import get_backend

    backend = get_backend("cpu", threads=1, batch=1)
    m = backend.measure(onnx_bytes, input_shape=tuple(input_shape[1:]), settings=settings or _default_measure_settings())
    ident = backend.identity()
    return {"latency_ms": round(m.median_ms, 5), "spread_pct": round(m.spread_pct, 2), "n": m.n,
            "flagged": m.flagged,
            "on": {k: ident.get(k) for k in ("device", "cpu_model", "arch", "runtime", "runtime_version", "provider",
                                             "threads", "batch")}}


def export(candidate: Candidate, *, out_dir: "str | Path", formats: Sequence[str] = FORMATS, num_classes: int = 1000,
           in_channels: int = 3, stem: Literal["imagenet", "cifar"] = "imagenet", weights: "str | Path | None" = None,
           opset: int = ONNX_OPSET, measure: bool = True, table: "str | Path | None" = None, seed: int = 0,
           measure_settings: "MeasureSettings | None" = None) -> ExportResult:
    """Write ``candidate`` in ``formats`` under ``out_dir`` and check each binary format.

    Args:
        candidate: from :func:`candidate_from_config` or :func:`candidates_from_study`.
        out_dir: folder (created); files are ``<name>.json``, ``.onnx``, ``.torchscript.pt``, ``.pt``.
        formats: any of :data:`FORMATS` (:func:`parse_formats` reads ``"json,onnx"``).
        num_classes / in_channels / stem: the network head, input channels and stem (taken from ``weights``
            when given).
        weights: a ``.pt`` checkpoint of the same config (``nas train``'s ``model.pt``) to export instead of the
            seeded initialisation.
        opset: ONNX opset (default :data:`ONNX_OPSET`).
        measure: time the ONNX model on this machine (ORT CPU, 1 thread, batch 1); needs ``"onnx"``.
        table: a latency table to predict the latency from when the candidate has no predicted latency.
        seed: seeds the weight initialisation.
        measure_settings: the timing protocol (default: a light one, ~0.5 s of timed runs).

    Returns:
        An :class:`ExportResult`.

    Raises:
        ExportError: unknown format, an unwritable ``out_dir``, an export or check failure.
        ConfigError: ``weights`` is missing, corrupt or for another config.
        TableError: ``table`` cannot be used for this config.
    """
    import torch

    import nas
    from nas.builder import build_model
    from nas.macs import count_macs

    fmts = parse_formats(list(formats))
    out = ensure_writable_dir(out_dir)
    cfg = candidate.config
    prov: dict[str, Any] = dict(candidate.provenance)
    if weights is not None:
        ck = _read_checkpoint(weights)
        ck_cfg = ArchConfig.from_json(ck["config"])
        if ck_cfg != cfg:
            raise ConfigError(f"--weights {weights}: trained for {ck_cfg.to_string()}, not {cfg.to_string()}")
        num_classes, in_channels, stem = ck["num_classes"], ck["in_channels"], ck["stem"]
        model = build_model(cfg, num_classes, in_channels=in_channels, stem=stem)
        model.load_state_dict(ck["state_dict"])
        prov["weights"] = str(weights)
        with contextlib.suppress(ValueError):
            prov["training"] = json.loads(ck.get("provenance") or "{}").get("training")
    else:
        with torch.random.fork_rng(devices=[]):  # seeded init; the caller's global RNG state is left alone
            torch.manual_seed(seed)
            model = build_model(cfg, num_classes, in_channels=in_channels, stem=stem)
        prov["weights"] = f"initialisation (seed {seed}); train with `nas train`"
    model.eval()
    mc = count_macs(cfg, num_classes=num_classes, in_channels=in_channels, stem=stem)
    # The trial's figures are for the searched head (recorded under search_*); these are the exported network's.
    for k in ("macs", "mflops", "params"):
        if k in prov:
            prov[f"search_{k}"] = prov.pop(k)
    prov.update(macs=mc.macs, mflops=round(mc.mflops, 3), params=mc.params, num_classes=num_classes,
                in_channels=in_channels, stem=stem, resolution=cfg.resolution, config_hash=cfg.hash(),
                config_string=cfg.to_string())
    if prov.get("latency_ms") is None and table is not None:
        from nas.latency.table import load_table, predict

        t = load_table(table)
        pr = predict(cfg, t)
        import hashlib

        prov.update(latency_ms=pr.latency_ms, latency_uncertainty_ms=pr.uncertainty_ms,
                    table={"path": str(table), "sha256": hashlib.sha256(Path(table).read_bytes()).hexdigest(),
                           "space_hash": t.space_hash, "identity": t.describe()})
    input_shape = (1, in_channels, cfg.resolution, cfg.resolution)
    result = ExportResult(name=candidate.name, config=cfg.to_dict(), files={}, provenance=prov,
                          predicted_latency_ms=prov.get("latency_ms"))
    if "onnx" in fmts:
        data = export_onnx_bytes(model, input_shape=input_shape, opset=opset)
        result.onnx_max_abs_diff = check_onnx(data, model, input_shape=input_shape)
        result.files["onnx"] = str(atomic_write_bytes(out / f"{candidate.name}{SUFFIX['onnx']}", data))
        check: dict[str, Any] = {"opset": opset, "dynamic_batch": True, "max_abs_diff": result.onnx_max_abs_diff,
                                 "tolerance": ONNX_TOLERANCE, "batches_checked": [1, 2]}
        if measure:
            meas = _measure(data, input_shape, measure_settings)
            result.measured_latency_ms = meas["latency_ms"]
            result.measured_spread_pct = meas["spread_pct"]
            check["measured"] = meas
            if result.predicted_latency_ms:
                check["measured_over_predicted"] = round(meas["latency_ms"] / float(result.predicted_latency_ms), 4)
        prov["onnx_check"] = check
    if "torchscript" in fmts:
        data, diff = _torchscript_bytes(model, input_shape=input_shape)
        result.torchscript_max_abs_diff = diff
        result.files["torchscript"] = str(atomic_write_bytes(out / f"{candidate.name}{SUFFIX['torchscript']}", data))
        prov["torchscript_check"] = {"max_abs_diff": diff, "batches_checked": [1, 2]}
    prov.update(nas_version=nas.__version__, exported_at=_now())
    if "pt" in fmts:
        buf = io.BytesIO()
        torch.save(checkpoint_dict(model, cfg, num_classes=num_classes, in_channels=in_channels, stem=stem,
                                   provenance=prov), buf)
        result.files["pt"] = str(atomic_write_bytes(out / f"{candidate.name}{SUFFIX['pt']}", buf.getvalue()))
    if "json" in fmts:
        doc = {"config": cfg.to_dict(), "provenance": prov}
        text = json.dumps(doc, indent=2, default=str) + "\n"
        result.files["json"] = str(atomic_write_bytes(out / f"{candidate.name}{SUFFIX['json']}", text.encode()))
    return result
