"""CLI: ``nas build-latency-table`` (and ``--transfer-from``), ``nas predict``, ``nas validate-table``, and the
identity check on use that every command predicting with a table calls (:func:`check_table_use`)."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any, Iterator

from nas.errors import UsageError

__all__ = ["add_parsers", "check_table_use"]


def _add_transfer_flags(b: argparse.ArgumentParser) -> None:
    """``build-latency-table``'s transfer flags."""
    b.add_argument("--transfer-from", default=None, metavar="TABLE",
                   help="transfer TABLE (built on another machine) to this one in minutes instead of a full build: "
                        "time the reference probe, a few whole networks and blocks here, fit a correction, write a "
                        "new table")
    b.add_argument("--transfer-nets", dest="n_networks", type=int, default=None,
                   help="with --transfer-from: at most N networks timed (default 40, cut by --time-budget)")
    b.add_argument("--transfer-blocks", dest="n_blocks", type=int, default=None,
                   help="with --transfer-from: at most N blocks timed after the networks, to correct every entry by "
                        "block shape (default 96, cut by --time-budget; 0: none)")
    b.add_argument("--time-budget", dest="budget_s", type=float, default=None,
                   help="with --transfer-from: seconds the whole transfer may take (default 160)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("build-latency-table", help="measure every block of a space on a device (resumable)")
    b.add_argument("--device", choices=["cpu", "gpu", "arm"], default="cpu",
                   help="cpu: onnxruntime CPU EP; gpu: PyTorch CUDA (cuDNN benchmark); arm: onnxruntime on an "
                        "aarch64 host or --remote board agent")
    b.add_argument("--space", default=None, help="space .toml file (default: the shipped shufflenetv2)")
    b.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1, as the paper's ARM runs)")
    b.add_argument("--batch", type=int, default=None, help="batch size (default 8 on gpu, 1 otherwise)")
    b.add_argument("--resolution", type=int, default=None, help="input resolution (default: the space's)")
    b.add_argument("--out", default=None, help="table file (default: latency_tables/<space>_<device>_<arch>_"
                                                 "t<threads>_b<batch>_r<resolution>.json)")
    b.add_argument("--resume", action="store_true",
                   help="continue an existing --out, measuring only missing entries (also the default when the "
                        "file matches)")
    b.add_argument("--overwrite", action="store_true", help="discard an existing --out and start over")
    b.add_argument("--limit", type=int, default=None, help="measure at most N missing entries this run (tests)")
    b.add_argument("--calibration-nets", type=int, default=30,
                   help="whole networks timed to calibrate the block sum (default 30; 0 = none)")
    b.add_argument("--no-verify", action="store_true",
                   help="skip the verify pass (a second measurement of every basic unit and flagged entry, a third where "
                        "the two differ)")
    b.add_argument("--no-cold", action="store_true",
                   help="skip the cold-weights pass (blocks with > 512 KiB of weights timed as copies that evict each "
                        "other's weights, for networks too big for the last-level cache)")
    b.add_argument("--blocks-per-request", type=int, default=16,
                   help="blocks timed together with one reference probe per request (default 16; a board agent's "
                        "time limit shrinks the groups where needed)")
    b.add_argument("--rescale", choices=["paired", "window", "none"], default="paired",
                   help="how times are put on the build's reference speed: each measurement's own ratio to the "
                        "reference probe timed in the same rounds (paired, default), the probe's running median "
                        "(window), or raw times (none)")
    b.add_argument("--runtime", default=None, help="a registered backend name instead of the device's default "
                                                     "(e.g. onnxruntime-cuda)")
    b.add_argument("--remote", default=None, help="HOST:PORT of a board agent (`nas agent`) to measure on")
    b.add_argument("--token", default=None, help="the board agent's shared token")
    b.add_argument("--token-file", default=None,
                   help="file holding the board agent's token (default: $NAS_AGENT_TOKEN, else ~/.config/nas/agent_token)")
    _add_transfer_flags(b)
    b.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    b.set_defaults(func=cmd_build)

    p = sub.add_parser("predict", help="predict a config's latency from a latency table")
    p.add_argument("config", help="architecture config JSON file (or a preset name)")
    p.add_argument("--table", default=None, help="latency table (default: the shipped table of the default space)")
    p.add_argument("--measure-missing", action="store_true",
                   help="measure blocks the table lacks on this machine (the table's device, threads and batch) "
                        "and add them to the table (a lazy table)")
    p.add_argument("--strict", action="store_true",
                   help="refuse a table built on another machine (default: a one-line warning on stderr)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_predict)

    v = sub.add_parser("validate-table", help="time random networks end to end and compare with the table")
    v.add_argument("table", help="latency table file")
    v.add_argument("--samples", type=int, default=50, help="random networks to time (default 50)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--passes", type=int, default=1,
                   help="time every network N times, pass after pass: compares each network's median timing and "
                        "reports how repeatable this machine's timings are (the ceiling of 'within ±5 %%')")
    v.add_argument("--space", default=None, help="the table's space file (default: the copy stored in the table)")
    v.add_argument("--rescale", choices=["window", "paired", "none"], default=None,
                   help="switch the table's rescale mode (stored in the table) before validating")
    v.add_argument("--plot", default=None, help="write a scatter plot PNG (predicted and MACs vs measured)")
    v.add_argument("--no-save", action="store_true", help="do not store the figures in the table")
    v.add_argument("--remote", default=None, help="HOST:PORT of the board agent the table was built on")
    v.add_argument("--token", default=None, help="the board agent's shared token")
    v.add_argument("--token-file", default=None,
                   help="file holding the board agent's token (default: $NAS_AGENT_TOKEN, else ~/.config/nas/agent_token)")
    v.add_argument("--strict", action="store_true",
                   help="refuse a table built on another machine (default: warn, validate it here, do not save)")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v.set_defaults(func=cmd_validate)


@contextlib.contextmanager
def _progress(enabled: bool = True) -> Iterator[Any]:
    """The library's ``progress(phase, done, total, label)`` callback shown with :func:`nas.cli.progress.bars`."""
    from nas.cli.progress import bars

    with bars(enabled) as b:
        if b is None:
            yield None
            return

        def update(phase: str, done: int, total: int, label: str) -> None:
            b.update(phase, done=done, total=total, label=label)

        yield update


def _token(args: argparse.Namespace) -> str | None:
    """The board agent's token from --token / --token-file (see nas.backends.remote.read_token)."""
    if not args.remote:
        return args.token
    from nas.backends.remote import read_token

    return read_token(token=args.token, token_file=args.token_file)


def _side(ident: dict[str, Any]) -> str:
    """One machine of a mismatch warning: CPU (or GPU) model, arch, cores, runtime, threads."""
    hw = ident.get("gpu_model") or ident.get("cpu_model", "?")
    return (f"{hw} ({ident.get('arch', '?')}, {ident.get('cpu_count', '?')} cores, {ident.get('runtime', '?')} "
            f"{ident.get('runtime_version', '?')}, threads {ident.get('threads', '?')})")


def check_table_use(table: Any, *, strict: bool = False) -> list[str]:
    """The identity check on use of a latency table, for every command that predicts with one.

    Returns the mismatch list (put it in ``--json`` output as ``table_mismatch``); a mismatch is one warning
    line on stderr naming both machines and the fix. With ``strict`` it raises instead (TableMismatchError,
    field ``table``: exit 2).
    """
    import sys

    from nas.latency.identity_check import check_table_identity, here_identity, is_local_table

    if not is_local_table(table):
        return []
    here = here_identity(table)
    diff = check_table_identity(table, strict=strict, here=here)
    if diff:
        dev = table.device
        keys = ", ".join(d.split(" ", 1)[0] for d in diff)
        sys.stderr.write(f"nas: warning: latency table {table.path} was built on {_side(table.identity)}, this "
                         f"machine is {_side(here)} (differs in {keys}); its latencies may be far off here: build a "
                         f"table here (nas build-latency-table --device {dev}) or transfer this one (nas "
                         f"build-latency-table --device {dev} --transfer-from {table.path})\n")
        sys.stderr.flush()
    return diff


def cmd_build(args: argparse.Namespace) -> int:
    from nas.backends import get_backend
    from nas.space import load_space
    from nas.latency import build_table, default_table_name

    if args.transfer_from:
        return _cmd_transfer(args)
    if args.n_networks is not None or args.n_blocks is not None or args.budget_s is not None:
        raise UsageError("--transfer-nets, --transfer-blocks and --time-budget go with --transfer-from TABLE")
    space = load_space(args.space)
    batch = args.batch if args.batch is not None else (8 if args.device == "gpu" else 1)
    if args.limit is not None and args.limit < 0:
        raise UsageError(f"limit {args.limit}: must be >= 0", field="limit")
    if args.blocks_per_request < 1:
        raise UsageError(f"blocks_per_request {args.blocks_per_request}: must be >= 1", field="blocks_per_request")
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite contradict each other; pick one")
    resolution = args.resolution
    if resolution is None and len(space.resolution) == 1:
        resolution = space.resolution[0]
    if resolution is None:
        raise UsageError(f"resolution: the space has several {list(space.resolution)}; pick one", field="resolution")
    backend = get_backend(args.device, threads=args.threads, batch=batch, remote=args.remote, token=_token(args),
                          runtime=args.runtime)
    out = Path(args.out) if args.out else default_table_name(space_name=space.name, device=args.device,
                                                             threads=args.threads, batch=batch, resolution=resolution,
                                                             arch=backend.identity().get("arch"))
    if args.overwrite and out.exists():
        out.unlink()
    with _progress() as progress:
        table = build_table(space, backend, resolution=resolution, out=out, resume=True, progress=progress,
                            limit=args.limit, calibration_nets=args.calibration_nets, rescale=args.rescale,
                            verify=not args.no_verify, cold=not args.no_cold,
                            blocks_per_request=args.blocks_per_request)
    cal = table.calibration or {}
    summary = {"table": str(out), "device": table.describe(), "entries": len(table.entries),
               "expected_entries": table.expected_entries, "complete": table.complete,
               "flagged_entries": sum(e.flagged for e in table.entries.values()),
               "build_seconds": round(table.build_seconds, 1), "probe_ref_ms": table.probe.get("ref_ms"),
               "calibration_model": cal.get("model"), "calibration_scale": cal.get("scale"),
               "calibration_per_block_ms": cal.get("per_block_ms"),
               "calibration_cold_from_mb": cal.get("cold_from_mb"), "calibration_cold_full_mb": cal.get("cold_full_mb"),
               "cold_entries": sum(e.cold is not None for e in table.entries.values()),
               "calibration_loo_mape_pct": (cal.get("models") or {}).get(cal.get("model"), {}).get("loo_mape_pct")}
    if args.json:
        from nas.cli import print_json

        print_json(summary)
        return 0
    from nas.cli import console

    c = console()
    state = "complete" if table.complete else f"incomplete: {table.expected_entries - len(table.entries)} missing"
    c.print(f"[bold]{out}[/]  {len(table.entries)}/{table.expected_entries} entries ({state}), "
            f"{summary['flagged_entries']} flagged, {table.build_seconds:.0f} s measuring")
    c.print(f"  {table.describe()}")
    if cal.get("model"):
        c.print(f"  calibration: {cal['model']} (scale {cal['scale']:.4f}, {cal['per_block_ms']:+.4f} ms/block), "
                f"leave-one-out error {summary['calibration_loo_mape_pct']:.2f} % on {len(cal.get('nets', []))} nets")
        if cal.get("cold_from_mb") is not None:
            c.print(f"  cold-weights blend from {cal['cold_from_mb']:g} MB (full at {cal['cold_full_mb']:g} MB) of "
                    f"network weights; {summary['cold_entries']} entries timed cold")
    if not table.complete:
        c.print("  re-run the same command to measure the rest")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from nas.arch import load_config
    from nas.macs import count_macs
    from nas.latency import load_table, predict

    table = load_table(args.table)
    mismatch = check_table_use(table, strict=args.strict)
    config = load_config(args.config)
    if not Path(args.config).exists():  # a preset name: evaluate it at the table's resolution
        config = config.with_resolution(table.resolution)
    backend = None
    if args.measure_missing:
        from nas.backends import get_backend

        backend = get_backend(table.device, threads=table.threads, batch=table.batch,  # type: ignore[arg-type]
                              runtime=table.identity.get("backend"))
    p = predict(config, table, backend=backend)
    mc = count_macs(config, num_classes=table.num_classes)
    out = {"config": config.to_string(), "latency_ms": round(p.latency_ms, 4),
           "uncertainty_ms": round(p.uncertainty_ms, 4), "timed": p.timed, "model_ms": round(p.model_ms, 4),
           "mflops": round(mc.macs / 1e6, 2), "params": mc.params, "blocks": p.blocks,
           "flagged_blocks": p.flagged_blocks, "table": str(table.path), "device": table.describe(),
           "table_mismatch": mismatch}
    if args.json:
        from nas.cli import print_json

        print_json(out)
        return 0
    from nas.cli import console

    console().print(f"{out['config']}: [bold]{p.latency_ms:.2f} ± {p.uncertainty_ms:.2f} ms[/], "
                    f"{out['mflops']:.1f} MFLOPs (mult-adds), {mc.params / 1e6:.2f} M params  [dim]({table.describe()})")
    if p.timed:
        console().print(f"  [dim]the table timed this network whole; its blocks' model says {p.model_ms:.2f} ms[/]")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from nas.backends import get_backend
    from nas.latency import load_table, plot_validation, validate_table
    from nas.latency.validate import REPEATABLE_PCT

    table = load_table(args.table)
    space = None
    if args.space:
        from nas.space import load_space

        space = load_space(args.space)
    if args.samples < 2:
        raise UsageError(f"samples {args.samples}: need at least 2 networks to rank", field="samples")
    if args.passes < 1:
        raise UsageError(f"--passes {args.passes}: time every network at least once (1 or more)", field="passes")
    mismatch = check_table_use(table, strict=args.strict)
    if args.rescale:
        table.set_rescale(args.rescale)
    ident = table.identity
    runtime = ident.get("backend")
    if (runtime == "remote" or "measured_via" in ident) and not args.remote:
        via = ident.get("measured_via", "a board agent")  # e.g. "nas agent at 127.0.0.1:8765"
        raise UsageError(f"{args.table}: measured through {via}; validate it through that board's agent: add "
                         "--remote HOST:PORT (and --token-file if it is not the default)", field="remote")
    backend = get_backend(ident.get("device", "cpu"), threads=table.threads, batch=table.batch, remote=args.remote,
                          token=_token(args), runtime=None if args.remote else runtime)
    with _progress() as progress:
        fig = validate_table(table, backend, samples=args.samples, seed=args.seed, space=space, progress=progress,
                             save=not args.no_save, allow_mismatch=bool(mismatch), passes=args.passes)
    if args.plot:
        plot_validation(fig, Path(args.plot), title=table.describe())
    if args.json:
        from nas.cli import print_json

        print_json({"table": str(table.path), **fig})
        return 0
    from nas.cli import console

    c = console()
    c.print(f"[bold]{table.path}[/]  {fig['samples']} random networks (seed {fig['seed']}), {table.describe()}")
    c.print(f"  MAPE {fig['mape_pct']:.2f} %, within ±5 %: {fig['within_5_pct']:.0f} %, within ±10 %: "
            f"{fig['within_10_pct']:.0f} %, max {fig['max_abs_error_pct']:.1f} %, bias {fig['bias_pct']:+.2f} %")
    c.print(f"  Kendall τ predicted vs measured {fig['kendall_tau']:.3f}   (MACs vs measured {fig['kendall_tau_macs']:.3f})")
    c.print(f"  drift: machine {fig['drift_pct']:+.1f} % vs build (reference probe), {fig['build_drift_pct']:.1f} % "
            f"during the build; rescale mode {fig['rescale']}")
    if fig.get("repeat_within_5_pct") is not None:
        rep = fig["repeat_within_5_pct"]
        c.print(f"  repeatability ({fig['passes']} passes): a network timed again landed within ±5 % of its other "
                f"timings in {rep:.0f} % of cases (pass-to-pass std {fig['pass_to_pass_std_pct']:.1f} %)"
                + ("" if rep >= REPEATABLE_PCT else "; [yellow]this machine cannot judge a table to ±5 % now[/]"))
    for mode, m in fig["modes"].items():
        c.print(f"    rescale={mode:<7} MAPE {m['mape_pct']:.2f} %, ±5 %: {m['within_5_pct']:.0f} %, ±10 %: "
                f"{m['within_10_pct']:.0f} %, τ {m['kendall_tau']:.3f}, MACs τ {m['kendall_tau_macs']:.3f}")
    if args.plot:
        c.print(f"  plot: {args.plot}")
    return 0


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f} %"


def _cmd_transfer(args: argparse.Namespace) -> int:
    """``build-latency-table --transfer-from TABLE``: the source's entries corrected by networks timed here."""
    from nas.backends import get_backend
    from nas.latency import default_table_name, load_table
    from nas.latency.transfer import TRANSFER_BUDGET_S, TRANSFER_NETS, transfer_table
    from nas.latency.transfer_blocks import TRANSFER_BLOCKS

    if args.space or args.limit is not None or args.resume:
        raise UsageError("--transfer-from takes the space from the source table and writes a new table in one go; "
                         "drop --space, --limit and --resume")
    source = load_table(args.transfer_from)
    backend = get_backend(args.device, threads=source.threads, batch=source.batch, remote=args.remote,
                          token=_token(args), runtime=args.runtime)
    if args.out:
        out = Path(args.out)
    else:
        name = default_table_name(space_name=str(source.space.get("name", "space")), device=args.device,
                                  threads=source.threads, batch=source.batch, resolution=source.resolution,
                                  arch=backend.identity().get("arch"))
        out = name.with_name(f"{name.stem}_transfer.json")
    with _progress() as progress:
        table = transfer_table(source, backend, out=out, overwrite=args.overwrite, progress=progress,
                               n_networks=args.n_networks if args.n_networks is not None else TRANSFER_NETS,
                               n_blocks=args.n_blocks if args.n_blocks is not None else TRANSFER_BLOCKS,
                               budget_s=args.budget_s if args.budget_s is not None else TRANSFER_BUDGET_S)
    tr = table.transfer or {}
    summary = {"table": str(out), "device": table.describe(), "source": str(args.transfer_from),
               "source_device": source.describe(), "networks": tr.get("networks"), "seconds": tr.get("seconds"),
               "model": tr.get("model"), "loo_mape_pct": tr.get("loo_mape_pct"),
               "loo_within_5_pct": tr.get("loo_within_5_pct"),
               "blocks": {k: v for k, v in (tr.get("blocks") or {}).items() if k != "entries"},
               "models": {m: {"loo_mape_pct": f["loo_mape_pct"], "loo_within_5_pct": f["loo_within_5_pct"],
                              "free": f["free"]} for m, f in (tr.get("models") or {}).items()}}
    if args.json:
        from nas.cli import print_json

        print_json(summary)
        return 0
    from nas.cli import console

    c = console()
    c.print(f"[bold]{out}[/]  transferred from {args.transfer_from} in {tr.get('seconds', 0):.0f} s "
            f"({tr.get('networks')} networks and {summary['blocks'].get('timed', 0)} blocks timed here)")
    c.print(f"  {table.describe()}  (source: {source.describe()})")
    if tr.get("loo_mape_pct") is not None:
        c.print(f"  correction: {tr['model']}, leave-one-out error {tr['loo_mape_pct']:.2f} %, "
                f"{tr['loo_within_5_pct']:.0f} % of the timed networks within ±5 %")
        for m, f in summary["models"].items():
            c.print(f"    {m:<10} {f['free']} parameter(s): leave-one-out {f['loo_mape_pct']:.2f} %, "
                    f"±5 %: {f['loo_within_5_pct']:.0f} %")
    bl = summary["blocks"]
    if bl.get("cv_rms_pct") is not None:
        c.print(f"  blocks: {'used' if bl['used'] else 'not used'} (entries corrected by block shape: k-fold error "
                f"{bl['cv_rms_pct']:.1f} % per block against {bl['flat_rms_pct']:.1f} % with one factor; networks' "
                f"leave-one-out score {_pct(bl['network_score_pct'].get('blocks'))} with, "
                f"{_pct(bl['network_score_pct'].get('source'))} without)")
    c.print(f"  compare with a full build: nas validate-table {out}")
    return 0
