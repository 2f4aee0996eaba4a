"""Ground-truth accuracy for benchmarks: one fixed, longer training recipe on the full Fashion-MNIST, cached.

The search's proxy trains ~40 steps on 2,500 images; its accuracies are a ranking signal, not a result. This
module gives the figure a benchmark judges by: :data:`RECIPE` (3 epochs over 20,000 training images at 64², the
resolution the proxy uses, i.e. 24x the quick proxy's images) evaluated once on the official 10,000-image test
split. Its binomial standard error is sqrt(p(1-p)/10,000), about 0.3 points at 90 %; the seed-to-seed spread
of the recipe itself is measured by ``python benchmarks/ground_truth.py spread`` and must be reported beside
every ground-truth figure (``spread`` in the cache file).

Requires Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``); tests never use it.

Every result is appended to ``benchmarks/results/ground_truth.jsonl`` keyed by (config hash, recipe hash,
seed), so no benchmark trains the same network twice; a training run checkpoints every epoch under
``runs/ground_truth/<key>/`` and a killed run resumes there.

``--device cuda`` trains the same recipe on a GPU (session 9: the benchmark's picks on a borrowed H200). Its
records carry ``device`` and a key ending in ``-cuda``; a lookup takes a result from either device (the recipe
is the figure; the device only changes floating-point order), ``--exact-device`` only the asked one (to compare
the two devices' seed spreads on one network). ``NAS_GT_DATA=DIR`` reads Fashion-MNIST from DIR (a machine
without the Debian package); the recipe hash names the data set, not its folder.

    python benchmarks/ground_truth.py spread --preset shufflenetv2-1.0x --seeds 3
    python benchmarks/ground_truth.py spread --config benchmarks/results/found_150mflops.json --seeds 3
    python benchmarks/ground_truth.py fidelity --n 24 --min-mflops 60 --max-mflops 150
    python benchmarks/ground_truth.py spread --device cuda --exact-device --seeds 3   # the GPU's spread on 1x
    python benchmarks/ground_truth.py show
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "benchmarks" / "results" / "ground_truth.jsonl"
WORK = REPO / "runs" / "ground_truth"
DATA = "fashion-mnist"
TEST_IMAGES = 10_000  # the official Fashion-MNIST test split


def recipe() -> Any:
    """The fixed ground-truth recipe (a :class:`nas.training.train.TrainSettings`)."""
    from nas.training.train import TrainSettings

    # 3 epochs x 20,000 images = 60,000 images seen (24x the quick proxy's 2,500); 64² as the proxy; a 2,000-image
    # validation split is carved out of the train split only because training needs one; the figure is test.
    return TrainSettings(epochs=3, resolution=64, batch_size=128, lr=0.1, warmup_epochs=0.3, val_size=2000,
                         train_size=20_000, split_seed=0, augment=True, threads=1)


def recipe_hash() -> str:
    return hashlib.sha256(json.dumps(asdict(recipe()) | {"data": DATA}, sort_keys=True).encode()).hexdigest()[:12]


def _device_suffix(device: str) -> str:
    return "" if device == "cpu" else f"-{device.split(':')[0]}"


def _key(cfg: Any, seed: int, device: str = "cpu") -> str:
    return f"{cfg.hash()[:16]}-{recipe_hash()}-s{seed}{_device_suffix(device)}"


def _data() -> str:
    """The data spec: Debian's folder, or ``NAS_GT_DATA`` (same files elsewhere; not part of the recipe hash)."""
    folder = os.environ.get("NAS_GT_DATA")
    return f"{DATA}:{Path(folder).resolve()}" if folder else DATA


def _lookup(cfg: Any, seed: int, device: str, exact_device: bool) -> dict[str, Any] | None:
    cache = read_cache()
    keys = [_key(cfg, seed, device)] + ([] if exact_device else [_key(cfg, seed, d) for d in ("cpu", "cuda")])
    return next((cache[k] for k in keys if k in cache), None)


def read_cache(path: Path = CACHE) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                out[rec["key"]] = rec
    return out


def _append(rec: dict[str, Any], path: Path = CACHE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:  # one line per result, flushed: a kill loses at most the run in flight
        f.write(json.dumps(rec, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _claim(key: str) -> bool:
    """Take ``key`` for this process (a lock file naming our pid); False if a live process holds it."""
    lock = WORK / f"{key}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(lock.read_text() or 0), 0)
                return False  # another benchmark process is training it
            except (ProcessLookupError, ValueError):
                lock.unlink(missing_ok=True)  # its holder died: the run resumes from its checkpoint
                continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def ground_truth(cfg: Any, *, seed: int = 0, threads: int = 1, label: str = "", device: str = "cpu",
                 exact_device: bool = False) -> dict[str, Any] | None:
    """The cached ground-truth record of ``cfg`` (trained now on ``device`` if absent): test accuracy, its
    binomial SE. A cached result from either device counts unless ``exact_device``.

    Returns None when another process is training it right now (several benchmark processes can share the
    list: each takes what is neither cached nor claimed).
    """
    from dataclasses import replace

    from nas.macs import count_macs
    from nas.training.train import train

    key = _key(cfg, seed, device)
    hit = _lookup(cfg, seed, device, exact_device)
    if hit is not None:
        return hit
    if not _claim(key):
        return None
    try:
        hit = _lookup(cfg, seed, device, exact_device)  # finished between our first look and the claim
        if hit is not None:
            return hit
        t0 = time.time()
        res = train(cfg, data=_data(), settings=replace(recipe(), threads=threads), out_dir=WORK / key, seed=seed,
                    device=device)
    finally:
        (WORK / f"{key}.lock").unlink(missing_ok=True)
    acc = float(res.test_accuracy)
    mc = count_macs(cfg)
    macs, params = mc.macs, mc.params
    rec = {"key": key, "config_hash": cfg.hash(), "recipe": recipe_hash(), "seed": seed, "label": label,
           "test_accuracy": acc, "se_binomial": math.sqrt(acc * (1 - acc) / TEST_IMAGES),
           "val_accuracy": float(res.val_accuracy), "macs": macs, "params": params,
           "train_seconds": round(time.time() - t0, 1), "threads": threads, "device": device, "config": cfg.to_dict(),
           "load": os.getloadavg()[0]}
    _append(rec)
    return rec


def spread(records: list[dict[str, Any]]) -> dict[str, float]:
    accs = [r["test_accuracy"] for r in records]
    mean = sum(accs) / len(accs)
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) if len(accs) > 1 else float("nan")
    return {"n": len(accs), "mean": mean, "std": std, "min": min(accs), "max": max(accs)}


def fidelity_configs(n: int, lo_mflops: float, hi_mflops: float, *, seed: int = 0) -> list[Any]:
    """``n`` configs of the default space, stratified by MACs over [lo, hi] MFLOPs (one per equal-width bin)."""
    from nas.macs import count_macs
    from nas.space import load_space

    space = load_space(None)
    rng = random.Random(seed)
    edges = [lo_mflops + (hi_mflops - lo_mflops) * i / n for i in range(n + 1)]
    out: list[Any] = []
    for i in range(n):
        for _ in range(20_000):  # rejection sampling, bounded: a bin that stays empty is reported
            cfg = space.sample(rng)
            m = count_macs(cfg).macs / 1e6
            if edges[i] <= m < edges[i + 1]:
                out.append(cfg)
                break
        else:
            raise SystemExit(f"no config found in [{edges[i]:.0f}, {edges[i + 1]:.0f}) MFLOPs")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("spread", help="seed-to-seed spread of the recipe on one network")
    s.add_argument("--preset", default="shufflenetv2-1.0x")
    s.add_argument("--config", help="a config JSON file instead of --preset (e.g. a found network)")
    s.add_argument("--label", help="the cache label (default: the preset name or the file's stem)")
    s.add_argument("--seeds", type=int, default=3)
    f = sub.add_parser("fidelity", help="ground truth of n MAC-stratified architectures (seed 0)")
    f.add_argument("--n", type=int, default=24)
    f.add_argument("--min-mflops", type=float, default=60)
    f.add_argument("--max-mflops", type=float, default=150)
    f.add_argument("--sample-seed", type=int, default=0)
    f.add_argument("--reverse", action="store_true", help="walk the list from the end (a second process)")
    sub.add_parser("show", help="print the cache")
    for p in (s, f):
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--device", default="cpu", help="cpu or cuda: where it trains (recorded)")
        p.add_argument("--exact-device", action="store_true",
                       help="a cached result counts only from --device (compare the devices' spreads)")
    args = ap.parse_args(argv)
    if args.cmd == "show":
        for r in read_cache().values():
            print(f"{r['label'] or r['config_hash'][:10]:<24} seed {r['seed']} {r['test_accuracy'] * 100:6.2f} % "
                  f"± {r['se_binomial'] * 100:.2f}  {r['macs'] / 1e6:6.1f} MFLOPs  {r['train_seconds']:6.0f} s "
                  f"{r.get('device', 'cpu')} (load {r['load']:.1f})")
        return 0
    from nas.arch import load_config, preset

    if args.cmd == "spread":
        cfg = load_config(args.config) if args.config else preset(args.preset)
        label = args.label or (Path(args.config).stem if args.config else args.preset)
        recs = [r for k in range(args.seeds)
                if (r := ground_truth(cfg, seed=k, threads=args.threads, label=label, device=args.device,
                                      exact_device=args.exact_device)) is not None]
        print(json.dumps({"network": label, "config": cfg.to_string(), "recipe": recipe_hash(),
                          "devices": sorted({r.get("device", "cpu") for r in recs}), **spread(recs)}))
        return 0
    cfgs = list(enumerate(fidelity_configs(args.n, args.min_mflops, args.max_mflops, seed=args.sample_seed)))
    for i, cfg in (cfgs[::-1] if args.reverse else cfgs):
        rec = ground_truth(cfg, seed=0, threads=args.threads, label=f"fidelity-{args.sample_seed}-{i:02d}",
                           device=args.device)
        if rec is None:
            print(f"{i + 1}/{len(cfgs)}: another process is training it", flush=True)
            continue
        print(f"{i + 1}/{len(cfgs)} {rec['macs'] / 1e6:.0f} MFLOPs: {rec['test_accuracy'] * 100:.2f} %", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
