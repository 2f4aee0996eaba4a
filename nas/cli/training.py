"""CLI: ``nas proxy-train`` (short training of one candidate) and ``nas zero-cost`` (score at init)."""

from __future__ import annotations

import argparse

from nas.errors import UsageError

__all__ = ["add_parsers"]


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="architecture config JSON file (or a preset name)")
    p.add_argument("--preset", help="a preset name, e.g. shufflenetv2-1.0x")
    p.add_argument("--data", default="bundled",
                   help="bundled (default) | fashion-mnist[:DIR] | cifar10:DIR | cifar100:DIR | folder:DIR")
    p.add_argument("--budget", dest="proxy_preset", default="quick",  # dest: the library's field name
                   help="proxy preset: quick (default), standard, reference")
    p.add_argument("--resolution", type=int, help="input size in pixels (default: the preset's, 64)")
    p.add_argument("--stem", choices=("imagenet", "cifar"), help="stem of the proxy network (default: imagenet)")
    p.add_argument("--seed", type=int, default=0, help="seeds init, batch order and augmentation")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's current setting)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("proxy-train", help="train one candidate briefly and print its validation accuracy")
    _add_common(p)
    p.add_argument("--epochs", type=float, help="passes over the train subset (default: the preset's)")
    p.add_argument("--steps", type=int, help="optimizer steps (overrides --epochs)")
    p.add_argument("--batch-size", type=int, help="images per step (default 128)")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--train-size", type=int, help="training images drawn from the train split (default 5000)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.set_defaults(func=cmd_proxy_train)

    z = sub.add_parser("zero-cost", help="training-free score of one candidate at initialisation")
    _add_common(z)
    z.add_argument("--method", default="naswot", choices=("naswot", "synflow"), help="score (default naswot)")
    z.set_defaults(func=cmd_zero_cost)


def _config(args: argparse.Namespace):
    from nas.arch import load_config, preset

    if args.config and args.preset:
        raise UsageError("give either CONFIG or --preset, not both")
    if args.preset:
        return preset(args.preset)
    if not args.config:
        raise UsageError("a CONFIG.json (or --preset NAME) is required")
    return load_config(args.config)


def _settings(args: argparse.Namespace):
    from nas.training.proxy import proxy_settings

    s = proxy_settings(args.proxy_preset)
    changes = {}
    for arg, fld in (("resolution", "resolution"), ("stem", "stem"), ("threads", "threads"), ("epochs", "epochs"),
                     ("steps", "steps"), ("batch_size", "batch_size"), ("lr", "lr"), ("train_size", "train_size")):
        v = getattr(args, arg, None)
        if v is not None:
            changes[fld] = v
    if "epochs" in changes and "steps" not in changes:
        changes["steps"] = None
    return s.replace(**changes) if changes else s


def cmd_proxy_train(args: argparse.Namespace) -> int:
    from nas.cli.progress import bars
    from nas.training.data import load_data
    from nas.training.proxy import proxy_train

    cfg = _config(args)
    settings = _settings(args)
    data = load_data(args.data, image_size=settings.resolution)  # errors surface before the progress bar
    with bars(not args.json) as b:
        on_step = on_report = None
        if b is not None:
            shown = {"total": None, "label": "val -"}

            def on_step(step: int, total: int) -> None:
                shown["total"] = total
                b.update("proxy-train", done=step, total=total, label=shown["label"])

            def on_report(step: int, acc: float) -> bool:
                shown["label"] = f"val {acc:.3f}"
                b.update("proxy-train", done=step, total=shown["total"], label=shown["label"])
                return False  # the CLI never prunes

        result = proxy_train(cfg, data=data, settings=settings, seed=args.seed, callback=on_report,
                             progress=on_step, device=args.device)
    out = {"config": cfg.to_string(), "config_hash": cfg.hash(), **result.to_dict()}
    if args.json:
        from nas.cli import print_json

        print_json(out)
        return 0
    from nas.cli import console

    c = console()
    c.print(f"{cfg.name or cfg.to_string()}: val accuracy [bold]{result.accuracy:.4f}[/bold] after "
            f"{result.steps} steps ({result.images_seen} images, {result.images_per_second:.0f} img/s, "
            f"{result.train_seconds:.1f} s training) on {result.data.get('name')} "
            f"({result.data.get('train_used')} train / {result.data.get('val')} val), seed {result.seed}")
    c.print("history: " + ", ".join(f"step {s}: {a:.3f}" for s, a in result.history))
    return 0


def cmd_zero_cost(args: argparse.Namespace) -> int:
    import time

    from nas.training.zero_cost import zero_cost_score

    cfg = _config(args)
    settings = _settings(args)
    t = time.perf_counter()
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    score = zero_cost_score(cfg, data=args.data, settings=settings, method=args.method, seed=args.seed)
    out = {"config": cfg.to_string(), "config_hash": cfg.hash(), "method": args.method, "score": score,
           "seconds": time.perf_counter() - t, "seed": args.seed, "resolution": settings.resolution,
           "stem": settings.stem, "data": args.data}
    if args.json:
        from nas.cli import print_json

        print_json(out)
        return 0
    from nas.cli import console

    console().print(f"{cfg.name or cfg.to_string()}: {args.method} score {score:.3f} ({out['seconds']:.1f} s)")
    return 0
