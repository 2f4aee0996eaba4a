"""CLI: ``nas export`` (found architectures to JSON/ONNX/TorchScript/pt) and ``nas train`` (full training)."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any, Iterator

from nas.errors import UsageError

__all__ = ["add_parsers"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "export", help="write a found architecture (trial, config file or preset) as JSON/ONNX/TorchScript/pt",
        description="Export from a study (--study with --trial N, --pareto or --best-under BUDGET), a config JSON "
                    "file, or --preset. ONNX is checked against PyTorch right after export and timed on this "
                    "machine (onnxruntime CPU, batch 1) in rounds interleaved with the latency table's reference "
                    "probe, put on the table's reference speed, and compared with the predicted latency "
                    "(meas/pred).")
    e.add_argument("config", nargs="?", help="architecture config JSON file (plain or exported)")
    e.add_argument("--preset", help="a preset name, e.g. shufflenetv2-1.0x")
    e.add_argument("--study", help="Optuna study name written by `nas search`")
    e.add_argument("--storage", help="Optuna storage URL or SQLite file the search used (default: "
                                     "runs/<study>/study.db, as `nas search`)")
    pick = e.add_mutually_exclusive_group()
    pick.add_argument("--trial", type=int, help="trial number to export")
    pick.add_argument("--pareto", action="store_true", help="every trial of the Pareto front (feasible only)")
    pick.add_argument("--best-under", metavar="BUDGET", help="most accurate feasible trial within e.g. 5ms, 150MFLOPs")
    e.add_argument("--format", default="json,onnx,torchscript,pt",
                   help="comma-separated: json, onnx, torchscript, pt, or all (default: all)")
    e.add_argument("--out", default=None, help="output folder (default: runs/<study>/export with --study, else "
                                                 "./exported)")
    e.add_argument("--num-classes", type=int, default=None,
                   help="classifier outputs (default: the study's latency-table head, else 1000)")
    e.add_argument("--in-channels", type=int, default=3, help="input image channels (default 3)")
    e.add_argument("--stem", choices=["imagenet", "cifar"], default="imagenet", help="stem kind (default imagenet)")
    e.add_argument("--weights", help="a .pt checkpoint of the same config (e.g. `nas train`'s model.pt) to export")
    e.add_argument("--table", help="latency table to predict from when the source has no predicted latency")
    e.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17, the latency tables')")
    e.add_argument("--no-measure", action="store_true", help="skip timing the ONNX model on this machine")
    e.add_argument("--dynamic-batch", action="store_true",
                   help="ONNX with a symbolic batch axis, for batched deployments (default: the static batch-1 graph "
                        "the latency tables time, byte for byte; the axis costs +1 to +4 %% at batch 1)")
    e.add_argument("--seed", type=int, default=0, help="seeds the weight initialisation (default 0)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_export)

    t = sub.add_parser(
        "train", help="train an exported architecture to completion (checkpoint each epoch, resumable)",
        description="Full training. Re-running with the same --out continues from its last checkpoint "
                    "(resume is implied; --restart discards it).")
    t.add_argument("config", help="architecture config JSON file (plain or exported) or a preset name")
    t.add_argument("--data", default="bundled",
                   help="bundled (default), fashion-mnist[:DIR], cifar10:DIR, cifar100:DIR or folder:DIR")
    t.add_argument("--epochs", type=int, required=True, help="passes over the training images")
    t.add_argument("--out", default=None, help="run folder (default: runs/train-<config name>)")
    t.add_argument("--resolution", type=int, default=None, help="input size in pixels (default: the config's)")
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=0.1, help="peak learning rate (SGD Nesterov, cosine; default 0.1)")
    t.add_argument("--weight-decay", type=float, default=4e-5)
    t.add_argument("--warmup-epochs", type=float, default=1.0)
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("--stem", choices=["imagenet", "cifar"], default="imagenet")
    t.add_argument("--val-size", type=float, default=0.1,
                   help="validation images from the train split: a count (>= 1) or a fraction (default 0.1)")
    t.add_argument("--train-size", type=int, default=None, help="use only N training images (stratified)")
    t.add_argument("--no-augment", action="store_true", help="no random horizontal flips")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    t.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    t.add_argument("--restart", action="store_true", help="discard a checkpoint in --out and start over")
    t.add_argument("--json", action="store_true", help="print one JSON object")
    t.set_defaults(func=cmd_train)


# ----------------------------------------------------------------------------------------- export
def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _check_args(args: argparse.Namespace) -> None:
    sources = [args.config is not None, args.preset is not None, args.study is not None]
    if sum(sources) != 1:
        raise UsageError("give exactly one source: CONFIG.json, --preset NAME or --study NAME")
    picked = args.trial is not None or args.pareto or args.best_under is not None
    if args.study is None and picked:
        raise UsageError("--trial/--pareto/--best-under select trials of a --study")
    if args.study is not None and not picked:
        raise UsageError("--study needs one of --trial N, --pareto, --best-under BUDGET")
    if (args.num_classes is not None and args.num_classes < 1) or args.in_channels < 1:
        raise UsageError("--num-classes and --in-channels must be positive")


def cmd_export(args: argparse.Namespace) -> int:
    from nas.cli.progress import bars
    from nas.export.formats import (ONNX_OPSET, candidate_from_config, candidates_from_study, ensure_writable_dir,
                                    export_candidate, parse_formats)

    _check_args(args)
    formats = parse_formats(args.format)  # bad formats and an unwritable --out fail before any slow work
    out = Path(args.out) if args.out else (Path("runs") / args.study / "export" if args.study else Path("exported"))
    ensure_writable_dir(out)
    if args.study is not None:
        from nas.search.storage import open_study

        st = open_study(study=args.study, storage=args.storage)
        candidates = candidates_from_study(st, trial=args.trial, pareto=args.pareto, best_under=args.best_under)
    else:
        candidates = [candidate_from_config(args.config if args.config is not None else args.preset)]

    results = []
    with bars(not args.json) as b:
        for i, cand in enumerate(candidates):
            if b is not None:
                b.update("export", done=i, total=len(candidates), description="exporting",
                         label=f"{cand.name}: {', '.join(formats)}")
            results.append(export_candidate(cand, out_dir=out, formats=formats, num_classes=args.num_classes,
                                            in_channels=args.in_channels, stem=args.stem, weights=args.weights,
                                            opset=args.opset or ONNX_OPSET, measure=not args.no_measure,
                                            table=args.table, seed=args.seed, dynamic_batch=args.dynamic_batch))
        if b is not None:
            b.update("export", done=len(candidates), total=len(candidates), description="exporting", label="done")
    if args.json:
        from nas.cli import print_json

        print_json({"out": str(out), "exports": [r.to_dict() for r in results]})
        return 0
    _print_exports(results, out, formats)
    return 0


def _print_exports(results: list[Any], out: Path, formats: tuple[str, ...]) -> None:
    from rich.table import Table

    from nas.cli import console

    t = Table(title=f"exported to {out}/ ({', '.join(formats)})")
    for col in ("name", "MFLOPs", "params", "acc", "pred ms", "meas ms", "meas/pred", "ONNX diff"):
        t.add_column(col, justify="left" if col == "name" else "right")
    for r in results:
        pv = r.provenance
        t.add_row(r.name, _fmt(pv.get("mflops"), ".3g"), _fmt(pv.get("params"), ","), _fmt(pv.get("accuracy"), ".3f"),
                  _fmt(r.predicted_latency_ms, ".3g"), _fmt(r.measured_latency_ms, ".3g"),
                  _fmt(r.measured_over_predicted, ".3f"), _fmt(r.onnx_max_abs_diff, ".0e"))
    console().print(t)
    _print_ratio_note(results)


def _print_ratio_note(results: list[Any]) -> None:
    """What meas/pred compares, and why it is missing or not comparable where it is."""
    from nas.cli import console

    c = console()
    timed = [r.provenance.get("onnx_check", {}).get("measured") for r in results]
    timed = [m for m in timed if m]
    if not timed:
        return
    m = timed[0]
    if m.get("at_table_speed_ms") is None:
        c.print(f"meas/pred: -, {m.get('why_not')} (give --table)")
        return
    c.print(f"meas ms: this machine now; meas/pred: timed paired with the reference probe, on the table's speed "
            f"(probe {m['probe_ms']:.3g} ms here vs {m['table_probe_ms']:.3g} ms in the table)")
    if m.get("table_mismatch"):
        c.print(f"warning: the table was built on another machine ({'; '.join(m['table_mismatch'])}); meas/pred "
                "compares this machine with that one")


# ----------------------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from nas.arch import load_config
    from nas.training.train import TrainSettings, train

    cfg = load_config(args.config)
    if args.val_size <= 0:
        raise UsageError(f"--val-size {args.val_size:g}: must be positive (a count, or a fraction below 1)")
    val_size: int | float = args.val_size if args.val_size < 1 else int(args.val_size)
    settings = TrainSettings(
        epochs=args.epochs, resolution=args.resolution, stem=args.stem, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing,
        val_size=val_size, train_size=args.train_size, augment=not args.no_augment, threads=args.threads)
    name = cfg.name or (Path(args.config).name.removesuffix(".json") if Path(args.config).suffix == ".json"
                        else f"config-{cfg.hash()[:8]}")
    out = Path(args.out) if args.out else Path("runs") / f"train-{name}"
    with _train_progress(not args.json) as callback:
        result = train(cfg, data=args.data, settings=settings, out_dir=out, seed=args.seed, device=args.device,
                       restart=args.restart, callback=callback)
    if args.json:
        from nas.cli import print_json

        print_json(result.to_dict())
        return 0
    from nas.cli import console

    c = console()
    if result.resumed:
        c.print(f"resumed {out} from its checkpoint: started at epoch {result.started_epoch} of {result.epochs}")
    test = "n/a (no test split)" if result.test_accuracy is None else f"{result.test_accuracy:.4f}"
    c.print(f"trained {name}: val accuracy {result.val_accuracy:.4f}, test accuracy {test}, "
            f"{result.params:,} params, {result.seconds:.1f} s")
    c.print(f"model: {result.files['model']}   (export it: nas export CONFIG.json --weights {result.files['model']})")
    return 0


@contextlib.contextmanager
def _train_progress(enabled: bool) -> Iterator[Any]:
    """Progress on stderr: one bar over all steps (ETA) labelled with the epoch, a line per validated epoch."""
    from nas.cli.progress import bars

    with bars(enabled) as b:
        if b is None:
            yield None
            return
        state: dict[str, Any] = {}

        def on_event(ev: dict[str, Any]) -> None:
            if ev["event"] == "start":
                state.update(done=(ev["first_epoch"] - 1) * ev["steps_per_epoch"],
                             total=ev["epochs"] * ev["steps_per_epoch"],
                             how=f"resumed at epoch {ev['first_epoch']}" if ev["resumed"] else "training")
                b.update("train", done=state["done"], total=state["total"], description=state["how"])
            elif ev["event"] == "step" and state:
                state["done"] += 1
                b.update("train", done=state["done"], total=state["total"], description=f"epoch {ev['epoch']}")
            elif ev["event"] == "epoch" and state:
                b.print(f"epoch {ev['epoch']}/{ev['epochs']}: loss {ev['loss']:.4f}, "
                        f"val accuracy {ev['val_accuracy']:.4f}, {ev['seconds']:.1f} s")

        yield on_event
