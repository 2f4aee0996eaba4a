"""CLI: ``nas space show``, ``nas flops``, ``nas sample``."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from nas.errors import ConfigError, UsageError

__all__ = ["add_parsers"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("space", help="inspect a search space")
    ssub = p.add_subparsers(dest="space_command", metavar="SUBCOMMAND")
    show = ssub.add_parser("show", help="knobs, choices, number of architectures, MAC range")
    show.add_argument("file", nargs="?", default=None, help="space .toml file (default: the shipped shufflenetv2)")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(func=cmd_space_show)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    f = sub.add_parser("flops", help="MACs (the paper's FLOPs, mult-adds) and params of a config or preset")
    f.add_argument("config", nargs="?", help="architecture config JSON file")
    f.add_argument("--preset", help="a preset name, e.g. shufflenetv2-1.0x")
    f.add_argument("--resolution", type=int, help="input resolution in pixels (default: the config's)")
    f.add_argument("--num-classes", type=int, default=1000)
    f.add_argument("--json", action="store_true", help="print one JSON object")
    f.set_defaults(func=cmd_flops)

    s = sub.add_parser("sample", help="write N random valid configs of a space as JSON files")
    s.add_argument("--space", default=None, help="space .toml file (default: the shipped shufflenetv2)")
    s.add_argument("--n", type=int, default=10, help="number of configs")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--json", action="store_true", help="print the written files as JSON")
    s.set_defaults(func=cmd_sample)


def _fmt_m(x: float) -> str:
    return f"{x / 1e6:,.1f}M"


def cmd_space_show(args: argparse.Namespace) -> int:
    from nas.macs import count_macs
    from nas.space import load_space

    space = load_space(args.file)
    lo, hi = count_macs(space.smallest()), count_macs(space.largest())
    info = {
        "name": space.name,
        "source": space.source,
        "hash": space.hash,
        "architectures": space.size,
        "distinct_blocks_per_resolution": len(space.enumerate_blocks(resolution=space.resolution[0])),
        "knobs": {k: list(v) for k, v in space.knobs().items()},
        "mflops_min": lo.mflops,
        "mflops_max": hi.mflops,
        "params_min": lo.params,
        "params_max": hi.params,
    }
    if args.json:
        from nas.cli import print_json

        print_json(info)
        return 0
    from rich.table import Table

    from nas.cli import console

    t = Table(title=f"space {space.name}  ({space.source})", show_lines=False)
    t.add_column("knob")
    t.add_column("choices")
    for k, v in space.knobs().items():
        t.add_row(k, ", ".join(f"{x:g}" if isinstance(x, float) else str(x).lower() if isinstance(x, bool) else str(x) for x in v))
    c = console()
    c.print(t)
    c.print(f"architectures: {space.size:,}   distinct blocks per resolution: "
            f"{info['distinct_blocks_per_resolution']:,}")
    c.print(f"MFLOPs (mult-adds): {lo.mflops:,.1f} .. {hi.mflops:,.1f}   params: {_fmt_m(lo.params)} .. {_fmt_m(hi.params)}")
    c.print(f"hash: {space.hash[:16]}")
    return 0


def cmd_flops(args: argparse.Namespace) -> int:
    from nas.arch import load_config, preset
    from nas.macs import count_macs

    if bool(args.config) == bool(args.preset):
        raise UsageError("give exactly one of CONFIG.json or --preset NAME")
    cfg = preset(args.preset) if args.preset else load_config(Path(args.config))
    if args.resolution is not None:
        if args.resolution < 8:
            raise UsageError(f"--resolution {args.resolution}: must be at least 8")
        cfg = cfg.with_resolution(args.resolution)
    if args.num_classes < 1:
        raise UsageError(f"--num-classes {args.num_classes}: must be positive")
    m = count_macs(cfg, num_classes=args.num_classes)
    out = {
        "name": cfg.name or args.config,
        "resolution": cfg.resolution,
        "mflops": round(m.mflops, 3),
        "macs": m.macs,
        "params": m.params,
        "config": cfg.to_dict(),
    }
    if args.json:
        from nas.cli import print_json

        print_json(out)
    else:
        from nas.cli import console

        console().print(f"{out['name']}  {cfg.resolution}²: [bold]{m.mflops:,.1f} MFLOPs[/] (mult-adds), "
                        f"{m.params:,} params")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from nas._io import atomic_write_text, ensure_writable_dir
    from nas.space import load_space

    if args.n < 1:
        raise UsageError(f"--n {args.n}: must be at least 1")
    space = load_space(args.space)
    out = ensure_writable_dir(args.out, field="out")
    rng = random.Random(args.seed)
    written = []
    for i in range(args.n):
        cfg = space.sample(rng)
        path = out / f"sample_{i:04d}_{cfg.hash()[:8]}.json"
        atomic_write_text(path, cfg.to_json() + "\n")
        written.append(str(path))
    if args.json:
        from nas.cli import print_json

        print_json({"space": space.name, "seed": args.seed, "files": written})
    else:
        from nas.cli import console

        console().print(f"wrote {len(written)} configs of space {space.name} (seed {args.seed}) to {out}")
    return 0
