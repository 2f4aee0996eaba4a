"""CLI: ``nas guidelines`` (the paper's G1-G4 experiments) and ``nas compare`` (its Table 8) on a device."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

from nas.cli.progress import Bars, bars
from nas.errors import UsageError

__all__ = ["add_parsers"]

QUICK_RESOLUTION = 8  # --quick: tiny inputs so a smoke test of the whole command takes seconds
QUICK_REPEATS = 2


def _add_device_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu, gpu or arm (default: cpu)")
    p.add_argument("--remote", metavar="HOST:PORT", help="measure on a board agent (`nas agent` on the board)")
    p.add_argument("--token", help="the board agent's shared secret")
    p.add_argument("--token-file", help="file holding the board agent's token (default: $NAS_AGENT_TOKEN, else "
                                        "~/.config/nas/agent_token)")
    p.add_argument("--runtime", help="a backend name overriding the device's default (e.g. onnxruntime-cuda)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1, as the latency tables)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: 8 on gpu, as the paper; else 1)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: a few timed runs only (guidelines also use 8x8 inputs, 2 blocks); "
                        "figures are meaningless")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--plot", metavar="FILE", help="write a PNG plot")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("guidelines", help="rerun the paper's guideline experiments (G1-G4) on a device")
    _add_device_args(g)
    g.add_argument("--scale", type=int, default=1, choices=(1, 2, 4),
                   help="channel multiplier: the paper's x1, x2, x4 columns (default 1)")
    g.add_argument("--only", help="comma-separated experiments, e.g. G1,G3 (default: all)")
    g.set_defaults(func=cmd_guidelines)

    c = sub.add_parser("compare", help="Table 8: reference networks and search results measured end to end")
    c.add_argument("configs", nargs="*", metavar="CONFIG.json", help="exported search results to add as rows")
    _add_device_args(c)
    c.add_argument("--table", metavar="FILE",
                   help="a latency table: measure with its device, threads, batch and settings, and add its "
                        "prediction for the configs")
    c.add_argument("--budget", help="only reference nets near this complexity, e.g. 150MFLOPs (within 30 %%)")
    c.add_argument("--only", help="comma-separated reference net names (see --list)")
    c.add_argument("--list", action="store_true", help="list the reference nets and exit")
    c.set_defaults(func=cmd_compare)


# ------------------------------------------------------------------ shared
def _settings(args: argparse.Namespace, base: Any = None) -> Any:
    """--quick's tiny protocol, else ``base`` (a table's), else the tables' network protocol."""
    from nas.backends import MeasureSettings
    from nas.paper.settings import default_settings

    if args.quick:
        # rounds=3 keeps paired per-round ratios for the verdicts; no retries so it stays fast.
        return MeasureSettings(warmup=1, min_repeats=3, max_repeats=3, min_time_s=0.0, rounds=3, rewarm=0,
                               retries=0)
    return default_settings(base)


def _token(args: argparse.Namespace) -> str | None:
    """The board agent's token from --token / --token-file (see nas.backends.remote.read_token)."""
    if not args.remote:
        return args.token
    from nas.backends.remote import read_token

    return read_token(token=args.token, token_file=args.token_file)


def _backend(args: argparse.Namespace, *, device: str | None = None, threads: int | None = None,
             batch: int | None = None) -> tuple[Any, dict[str, Any]]:
    """The backend and its identity; asking for the identity reaches a remote agent once, so an
    unreachable one fails here, before anything is built."""
    from nas.backends import get_backend

    device = device or args.device
    threads = threads if threads is not None else args.threads
    batch = batch if batch is not None else args.batch
    if batch is None:
        batch = 8 if device == "gpu" else 1  # paper: GPU speed in batches/s of 8 images; ARM single images
    backend = get_backend(device, threads=threads, batch=batch, remote=args.remote, token=_token(args),
                          runtime=args.runtime)
    return backend, backend.identity()


def _stepper(progress: Bars | None, total: int) -> Callable[[str], None]:
    """An ``on_step`` callback for the library: each call starts the next of ``total`` steps under its label."""
    started = [0]

    def step(label: str) -> None:
        if progress is not None:
            progress.update("measure", done=started[0], total=total, description=label)
        started[0] += 1

    return step


def _measured(backend: Any, total: int, show: bool, run: Callable[[Callable[[str], None]], Any]) -> Any:
    """``run(on_step)`` under a progress bar of ``total`` steps ("measuring <what>"), closing ``backend`` after."""
    try:
        with bars(show) as progress:
            step = _stepper(progress, total)
            out = run(lambda what: step(f"measuring {what}"))
            if progress is not None:
                progress.update("measure", done=total, total=total, description="measured")
    finally:
        backend.close()
    return out


def _plot_guidelines(results: list[Any], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2), squeeze=False)
    for ax, g in zip(axes[0], results):
        labels = [v.label.replace(", ", "\n") for v in g.variants]
        rel = [v.relative_speed for v in g.variants]
        # The variant the guideline favours is green; speeds are relative to the paper's first row.
        colors = ["#55a868" if v.label == g.reference else "#4c72b0" for v in g.variants]
        ax.bar(range(len(rel)), rel, color=colors)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xticks(range(len(rel)), labels, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel("speed relative to first variant")
        ax.set_title(f"{g.id}: {g.verdict}", fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def _plot_compare(rows: list[Any], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    families: dict[str, list[Any]] = {}
    for r in rows:
        fam = r.name.split("-")[0] if r.source == "reference" else "search result"
        families.setdefault(fam, []).append(r)
    for fam, rs in families.items():
        ax.scatter([r.macs / 1e6 for r in rs], [r.images_per_s for r in rs], label=fam,
                   marker="*" if fam == "search result" else "o", s=90 if fam == "search result" else 40)
        for r in rs:
            ax.annotate(r.name, (r.macs / 1e6, r.images_per_s), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("MFLOPs (mult-adds)")
    ax.set_ylabel("images / s")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def _save(fig: Any, path: str) -> None:
    import matplotlib.pyplot as plt

    p = Path(path)
    if p.parent and not p.parent.exists():
        raise UsageError(f"--plot {path}: directory {p.parent} does not exist")
    try:
        fig.savefig(p, dpi=120)
    except OSError as e:
        raise UsageError(f"--plot {path}: cannot write ({e.strerror})") from None
    finally:
        plt.close(fig)


def _where(ident: dict[str, Any]) -> str:
    model = ident.get("gpu_model") or ident.get("cpu_model") or "?"
    return (f"{ident.get('device', '?')} ({model}), {ident.get('runtime', ident.get('backend', '?'))}, "
            f"threads={ident.get('threads', '?')}, batch={ident.get('batch', '?')}")


# ------------------------------------------------------------------ nas guidelines
def cmd_guidelines(args: argparse.Namespace) -> int:
    from nas.paper import guidelines

    only = [x.strip().upper() for x in args.only.split(",") if x.strip()] if args.only else None
    resolution = QUICK_RESOLUTION if args.quick else guidelines.GUIDELINE_RESOLUTION
    repeats = QUICK_REPEATS if args.quick else guidelines.REPEATS
    backend, ident = _backend(args)
    settings = _settings(args)
    n_exp = len(only) if only else 4
    t0 = time.perf_counter()
    results = _measured(backend, n_exp, not args.json, lambda step: guidelines.run_guidelines(
        backend, scale=args.scale, resolution=resolution, repeats=repeats, settings=settings, only=only,
        on_step=step))
    elapsed = time.perf_counter() - t0
    title = f"ShuffleNetV2 guidelines on {_where(ident)}"
    if args.plot:
        _plot_guidelines(results, args.plot, title)
    if args.json:
        from nas.cli import print_json

        print_json({
            "command": "guidelines",
            "backend": ident,
            "settings": settings.to_dict(),
            "scale": args.scale,
            "resolution": resolution,
            "repeats": repeats,
            "quick": bool(args.quick),
            "elapsed_s": round(elapsed, 2),
            "plot": args.plot,
            "guidelines": [g.to_dict() for g in results],
        })
        return 0
    _print_guidelines(results, title, elapsed, args.plot)
    return 0


def _print_guidelines(results: list[Any], title: str, elapsed: float, plot: str | None) -> None:
    from rich.table import Table

    from nas.cli import console

    con = console()
    con.print(f"[bold]{title}[/bold]")
    style = {"holds": "green", "does not hold": "red", "inconclusive": "yellow"}
    for g in results:
        t = Table(title=f"{g.id}: {g.title}", title_justify="left")
        t.add_column("variant", no_wrap=True)
        t.add_column("channels", justify="right")
        t.add_column("MFLOPs", justify="right")
        t.add_column("latency ms", justify="right")
        t.add_column("± IQR %", justify="right")
        t.add_column("images/s", justify="right")
        t.add_column("relative", justify="right")
        for v in g.variants:
            t.add_row(v.label, ",".join(map(str, v.channels)), f"{v.macs / 1e6:.1f}", f"{v.latency_ms:.3f}",
                      f"{v.spread_pct:.1f}" + (" !" if v.flagged else ""), f"{v.images_per_s:,.1f}",
                      f"{v.relative_speed:.2f}")
        con.print(t)
        con.print(f"  [{style[g.verdict]}]{g.id} {g.verdict}[/]: {g.reason}")
        con.print(f"  criterion: {g.criterion}   (MACs spread {g.macs_spread_pct:.1f} %)")
    con.print(f"done in {elapsed:.0f} s" + (f"; plot written to {plot}" if plot else ""))


# ------------------------------------------------------------------ nas compare
def cmd_compare(args: argparse.Namespace) -> int:
    from nas import paper

    if args.list:
        return _list_refs(args)
    budget_macs = None
    if args.budget:
        from nas.units import parse_budget

        b = parse_budget(args.budget)
        if b.metric != "macs":
            raise UsageError(f"--budget {args.budget!r}: nas compare groups by complexity; give MFLOPs, e.g. 150MFLOPs")
        budget_macs = b.limit
    names = [x.strip() for x in args.only.split(",") if x.strip()] if args.only else None
    nets = paper.reference_nets(budget_macs=budget_macs, names=names)
    for c in args.configs:  # fail on a bad file before any measuring
        import nas

        nas.load_config(c)
    table = None
    if args.table:
        table = _open_table(args.table)
        if args.device not in ("cpu", table.device) or args.batch not in (None, table.batch):
            raise UsageError(f"--table {args.table}: measured on {table.device} with batch {table.batch}; "
                             "drop --device/--batch, or drop --table")
        if args.runtime is None and not args.remote:
            args.runtime = table.identity.get("backend")
        backend, ident = _backend(args, device=table.device, threads=table.threads, batch=table.batch)
        try:
            paper.check_table_identity(table, ident, path=args.table)
        except Exception:
            backend.close()
            raise
    else:
        backend, ident = _backend(args)
    settings = _settings(args, table.network_settings if table is not None else None)
    n_groups = len({paper.complexity_group(n.paper_mflops * 1e6) for n in nets}) + len(args.configs)
    t0 = time.perf_counter()
    rows = _measured(backend, max(1, n_groups), not args.json, lambda step: paper.run_compare(
        backend, nets=nets, configs=args.configs, settings=settings, table=table, on_step=step))
    elapsed = time.perf_counter() - t0
    title = f"Table 8 on {_where(ident)}"
    if args.plot:
        _plot_compare(rows, args.plot, title)
    if args.json:
        from nas.cli import print_json

        print_json({
            "command": "compare",
            "backend": ident,
            "settings": settings.to_dict(),
            "table": {"path": args.table, "identity": table.identity, "resolution": table.resolution}
            if table is not None else None,
            "budget": args.budget,
            "quick": bool(args.quick),
            "elapsed_s": round(elapsed, 2),
            "plot": args.plot,
            "rows": [r.to_dict() for r in rows],
        })
        return 0
    _print_compare(rows, title, elapsed, args.plot, batch=backend.batch, device=backend.device)
    return 0


def _open_table(path: str) -> Any:
    """The latency table at ``path`` (its identity gives the device, runtime, threads and batch)."""
    from nas.latency.table import load_table

    return load_table(path)


def _list_refs(args: argparse.Namespace) -> int:
    from nas.paper.zoo import REFERENCES

    refs = list(REFERENCES.values())
    if args.json:
        from nas.cli import print_json

        print_json({"references": [{k: v for k, v in r.__dict__.items() if k != "build"} for r in refs]})
        return 0
    from rich.table import Table

    from nas.cli import console

    t = Table(title="Table 8 reference networks")
    for col in ("name", "paper row", "input", "paper MFLOPs"):
        t.add_column(col)
    for r in refs:
        t.add_row(r.name, r.label, f"{r.resolution}", f"{r.paper_mflops:g}")
    console().print(t)
    return 0


def _print_compare(rows: list[Any], title: str, elapsed: float, plot: str | None, *, batch: int,
                   device: str) -> None:
    from rich import box
    from rich.table import Table

    from nas.cli import console

    # Fits 80 columns: the paper's error column and the other device's speed are in --json only.
    gpu = device == "gpu"
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    t.add_column("model", no_wrap=True)
    for col in ("MFLOPs", "paper", "params", "ms", "±%", "img/s", "paper GPU b/s" if gpu else "paper ARM img/s"):
        t.add_column(col, justify="right")
    show_pred = any(r.predicted_latency_ms is not None for r in rows)
    if show_pred:
        t.add_column("table ms", justify="right")
    ordered = sorted(range(len(rows)), key=lambda i: (rows[i].group_mflops, rows[i].source != "reference", i))
    for k, i in enumerate(ordered):
        r = rows[i]
        last = k + 1 == len(ordered) or rows[ordered[k + 1]].group_mflops != r.group_mflops
        name = r.name + (f"@{r.resolution}" if r.resolution != 224 else "")
        if r.source != "reference":
            name = f"[bold]{name}[/bold]"
        cells = [name, f"{r.macs / 1e6:.0f}", _opt(r.paper_mflops, "{:g}"), f"{r.params / 1e6:.2f}M",
                 f"{r.latency_ms:.2f}", f"{r.spread_pct:.0f}" + ("!" if r.flagged else ""), f"{r.images_per_s:,.0f}",
                 _opt(r.paper_gpu_batches_s if gpu else r.paper_arm_images_s, "{:g}")]
        if show_pred:
            cells.append(_opt(r.predicted_latency_ms, "{:.2f}"))
        t.add_row(*cells, end_section=last)
    con = console()
    con.print(t)
    con.print(f"ms per batch of {batch}; MFLOPs = mult-adds (conv + FC); paper = Table 8's; ±% = IQR, ! = noisy; "
              f"{elapsed:.0f} s" + (f"; plot: {plot}" if plot else ""))
    for r in rows:
        if r.source != "reference":
            con.print(f"  {r.name}: {r.source}")


def _opt(x: float | None, fmt: str) -> str:
    return "-" if x is None else fmt.format(x)
