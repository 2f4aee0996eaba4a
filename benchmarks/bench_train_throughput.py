"""Training throughput of the proxy trainer vs a plain NCHW PyTorch loop, same network, stem, input, batch.

    python benchmarks/bench_train_throughput.py [--preset 1x] [--threads 2] [--steps 20] [--rounds 3] [--json]

Both sides train ShuffleNetV2 (default 1x) from the same init on the bundled Fashion-MNIST subset, resized to
``--resolution`` (default 32², the issue's setting; the quick proxy trains at 64²), with the proxy's stem,
batch 128, SGD-Nesterov, one grey channel. The plain loop is what one writes first: an NCHW model, a
``DataLoader`` over a ``TensorDataset`` of normalised float images, ``zero_grad / forward / backward / step``. The trainer is :func:`nas.training.proxy.proxy_train` (also
run with its channels-last and tiny-map options switched off, to show what each buys). Rounds are
interleaved (A B C D, A B C D, ...) so that machine noise hits every side alike; each side's figure is the
median over rounds of images/s over the timed training steps (evaluation excluded). Wall-clock images/s is
the headline (goal: trainer >= 1.5x the plain loop); images per CPU-second of this process is printed too,
because on a shared machine it is much less disturbed by other processes.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def plain_loop(name: str, *, images, labels, steps: int, batch: int, stem: str, lr: float, threads: int,
               seed: int) -> tuple[float, float]:
    """The baseline. Returns (images per wall second, images per process CPU second)."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from nas.builder import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = build_model(name, 10, in_channels=images.shape[1], stem=stem)
    loader = DataLoader(TensorDataset(images, labels), batch_size=batch, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-5)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    done = 0
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    while done < steps:  # bounded: each pass over the loader adds len(loader) >= 1 steps
        for x, y in loader:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    wall, cpu = time.perf_counter() - t_wall, time.process_time() - t_cpu
    return steps * batch / wall, steps * batch / cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="1x")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per side per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--resolution", type=int, default=32, help="input size (default 32, as in the issue; the quick "
                    "proxy trains at 64)")
    ap.add_argument("--stem", choices=("imagenet", "cifar"), help="default: the quick proxy's")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from nas.training.data import load_data
    from nas.training.pipeline import prepare as _prepare
    from nas.training.proxy import PROXY_PRESETS, proxy_train

    q = PROXY_PRESETS["quick"]
    settings = q.replace(steps=args.steps, reports=1, bn_recalibration=0, threads=args.threads,
                         batch_size=args.batch_size, resolution=args.resolution,
                         stem=args.stem or q.stem, augment=False)
    ds = load_data("bundled")
    p = _prepare(ds, settings.resolution, settings.val_size, settings.train_size, settings.split_seed)
    images = ((p.train_x.float() - p.mean) / p.std).contiguous()  # the baseline gets the same normalised data
    sides = {
        "plain NCHW loop": None,
        "trainer": settings,
        "trainer, no tiny-map path": settings.replace(tiny_map_path=False),
        "trainer, NCHW, no tiny-map path": settings.replace(tiny_map_path=False, channels_last=False),
    }
    wall: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    for r in range(args.rounds):
        for name, s in sides.items():
            if s is None:
                w, c = plain_loop(args.preset, images=images, labels=p.train_y, steps=args.steps,
                                  batch=args.batch_size, stem=settings.stem, lr=settings.lr, threads=args.threads,
                                  seed=r)
            else:
                res = proxy_train(args.preset, data=ds, settings=s, seed=r)
                w, c = res.images_per_second, res.images_seen / res.train_cpu_seconds
            wall[name].append(w)
            cpu[name].append(c)
            print(f"round {r + 1}/{args.rounds}  {name:32s} {w:7.0f} img/s wall  {c:7.0f} img/CPU-s",
                  file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    base = med["plain NCHW loop"]
    out = {
        "network": args.preset, "resolution": settings.resolution, "stem": settings.stem,
        "batch": args.batch_size, "threads": args.threads, "steps_per_round": args.steps, "rounds": args.rounds,
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        "images_per_s": med, "images_per_cpu_s": med_cpu,
        "ratio_vs_plain": {k: v / base for k, v in med.items()},
        "ratio_vs_plain_cpu": {k: v / med_cpu["plain NCHW loop"] for k, v in med_cpu.items()},
        "per_round_wall": wall,
        "goal": "trainer >= 1.5x plain NCHW loop (wall)",
    }
    out["goal_met"] = out["ratio_vs_plain"]["trainer"] >= 1.5
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"ShuffleNetV2 {args.preset}, {settings.resolution}² {settings.stem} stem, batch {args.batch_size}, "
              f"{args.threads} threads, median of {args.rounds} rounds x {args.steps} steps")
        for k in sides:
            print(f"  {k:32s} {med[k]:7.0f} img/s  ({out['ratio_vs_plain'][k]:.2f}x)   "
                  f"{med_cpu[k]:7.0f} img/CPU-s  ({out['ratio_vs_plain_cpu'][k]:.2f}x)")
        print(f"goal trainer >= 1.5x plain (wall): {'met' if out['goal_met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
