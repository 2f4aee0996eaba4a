"""Full training of an exported architecture, checkpointed every epoch and resumable.

``nas train found.json --data bundled --epochs 30 --out runs/found`` takes a network found by a search to
completion. The input pipeline is :mod:`nas.training.proxy`'s (images decoded, resized and cached once as ``uint8``;
normalisation from the training images only; flips on whole tensors; channels-last), so full training and the
proxy see the same data the same way; only the budget and the bookkeeping differ:

* **Split.** Validation images are carved (stratified, ``split_seed``) out of the *train* split, as in the
  search; the data set's own test split is used once, at the end (an ImageFolder has none).
* **Recipe.** SGD with Nesterov momentum 0.9, weight decay on conv/linear weights only (4e-5, the paper's),
  linear warm-up then cosine to 0, stepped per iteration (a ``LambdaLR``, so its state is one step counter).
* **Checkpoints.** After every epoch ``checkpoint.pt`` holds the model, optimizer, scheduler, epoch, history,
  and every RNG state that drives the run (the batch-order/flip generator and torch's global state); written
  atomically, so a kill at any moment leaves the previous epoch's checkpoint. Running again with the same
  ``out_dir`` continues from it (resume is implied; the run's config, data and settings must match, else it
  is refused). With a fixed thread count on CPU a resumed run ends bit-identical to an uninterrupted one.
* **Result.** ``model.pt`` (the :mod:`nas.export.formats` checkpoint format: ``nas export CONFIG --weights model.pt``
  exports the trained network) and ``result.json`` (final validation and test accuracy, history).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

from nas.arch import ArchConfig, load_config
from nas.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from nas.training.data import Dataset, DataSpec

__all__ = ["TrainSettings", "TrainResult", "TrainEvent", "train", "CHECKPOINT_NAME", "RESULT_NAME", "MODEL_NAME",
           "read_checkpoint_epoch"]

CHECKPOINT_NAME = "checkpoint.pt"
RESULT_NAME = "result.json"
MODEL_NAME = "model.pt"
CHECKPOINT_FORMAT = "nas-train-checkpoint/1"

TrainEvent = Callable[[dict[str, Any]], None]
"""``callback(event)``: ``{"event": "start"|"step"|"epoch"|"done", ...}`` for progress displays."""


@dataclass(frozen=True)
class TrainSettings:
    """Everything that defines a training run except the config, the data and the seed.

    Attributes:
        epochs: passes over the training images.
        resolution: square input size in pixels; None = the config's resolution (what was searched).
        stem: ``"imagenet"`` (the searched network) or ``"cifar"`` (stride-1 stem, no pool, for small inputs).
        batch_size: images per step (the last partial batch of an epoch is dropped: BN needs > 1 image).
        lr: peak learning rate (SGD, Nesterov), reached after ``warmup_epochs``, then cosine to 0.
        momentum: SGD momentum.
        weight_decay: L2 on conv/linear weights (not BN, not biases).
        warmup_epochs: linear warm-up from lr/10, in epochs (fractions allowed).
        label_smoothing: cross-entropy label smoothing.
        val_size: validation images carved from the train split (a count, or a fraction in (0, 1)).
        train_size: training images kept after validation (stratified); None = all.
        split_seed: seeds the train/validation split.
        augment: random horizontal flips.
        threads: ``torch.set_num_threads`` during the run (restored after); None keeps the current value.
        channels_last: channels-last memory format (oneDNN's fast path on CPU).
        tiny_map_path: on CPU, :mod:`nas.training.proxy`'s exact fast path for depthwise and 1x1 convs on maps of <= 2x2
            pixels (the last stages at 32² with the ImageNet stem; ~1.7x images/s there, no effect on larger maps).
            Checkpoints and ``model.pt`` always hold the plain network's keys.
    """

    epochs: int = 30
    resolution: int | None = None
    stem: Literal["imagenet", "cifar"] = "imagenet"
    batch_size: int = 128
    lr: float = 0.1  # ShuffleNetV2 used 0.5 at batch 1024 over 300k steps; 0.1 at 128 for short CPU runs
    momentum: float = 0.9
    weight_decay: float = 4e-5  # the paper's
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    val_size: int | float = 0.1
    train_size: int | None = None
    split_seed: int = 0
    augment: bool = True
    threads: int | None = None
    channels_last: bool = True
    tiny_map_path: bool = True

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: {why}")

        if not isinstance(self.epochs, int) or isinstance(self.epochs, bool) or self.epochs < 1:
            bad("epochs", "must be a positive integer")
        if self.resolution is not None and (not isinstance(self.resolution, int) or self.resolution < 8):
            bad("resolution", "must be an integer of at least 8 pixels")
        if self.stem not in ("imagenet", "cifar"):
            bad("stem", "must be imagenet or cifar")
        if not isinstance(self.batch_size, int) or self.batch_size < 2:
            bad("batch_size", "must be an integer of at least 2 (batch norm)")
        for name in ("lr", "momentum", "weight_decay", "warmup_epochs", "label_smoothing"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                bad(name, "must be a finite number >= 0")
        if self.lr <= 0:
            bad("lr", "must be positive")
        if self.momentum >= 1 or self.label_smoothing >= 1:
            bad("momentum" if self.momentum >= 1 else "label_smoothing", "must be below 1")
        if self.train_size is not None and (not isinstance(self.train_size, int) or self.train_size < 2):
            bad("train_size", "must be an integer of at least 2")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            bad("threads", "must be a positive integer")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """A finished (or already finished) training run.

    Attributes:
        val_accuracy / test_accuracy: top-1 in [0, 1] after the last epoch (test is None without a test split).
        started_epoch: the first epoch this call ran (1 for a fresh run, k+1 when resumed after epoch k; epochs+1
            when the run had already finished and nothing was trained).
        resumed: a checkpoint in ``out_dir`` was continued.
        history: one dict per epoch: ``epoch, loss, lr, val_accuracy, seconds``.
        files: ``checkpoint``, ``model``, ``result`` paths.
    """

    config: dict[str, Any]
    epochs: int
    started_epoch: int
    resumed: bool
    val_accuracy: float
    test_accuracy: float | None
    history: list[dict[str, Any]]
    seconds: float
    params: int
    seed: int
    settings: dict[str, Any]
    data: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _atomic_write(path: Path, data: bytes) -> None:
    from nas.export.formats import atomic_write_bytes

    atomic_write_bytes(path, data)


def _save(obj: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@contextlib.contextmanager
def _plain(model: Any) -> Any:
    """Temporarily undo :mod:`nas.training.proxy`'s tiny-map wrappers, so ``state_dict`` has ``build_model``'s keys."""
    swapped = []

    def unwrap(module: Any) -> None:
        for name, child in list(module.named_children()):
            if type(child).__name__ == "TinyMapConv" and hasattr(child, "conv"):
                setattr(module, name, child.conv)
                swapped.append((module, name, child))
            else:
                unwrap(child)

    unwrap(model)
    try:
        yield model
    finally:
        for module, name, wrapper in swapped:
            setattr(module, name, wrapper)


def read_checkpoint_epoch(out_dir: "str | Path") -> int:
    """The last completed epoch recorded in ``out_dir``'s checkpoint (0 if there is none)."""
    import torch

    p = Path(out_dir) / CHECKPOINT_NAME
    if not p.is_file():
        return 0
    return int(torch.load(p, map_location="cpu", weights_only=True)["epoch"])


def _identity(cfg: ArchConfig, settings: TrainSettings, seed: int, data: str) -> dict[str, Any]:
    """What a checkpoint must match to be continued (``threads`` and the tiny-map path change speed, not the run)."""
    s = settings.to_dict()
    s.pop("threads", None)
    s.pop("tiny_map_path", None)
    return {"config_hash": cfg.hash(), "settings": s, "seed": seed, "data": data}


def train(config: "ArchConfig | Mapping[str, Any] | str | Path", *, data: "Dataset | DataSpec | str" = "bundled",
          settings: TrainSettings = TrainSettings(), out_dir: "str | Path", seed: int = 0, device: str = "cpu",
          restart: bool = False, callback: TrainEvent | None = None) -> TrainResult:
    """Train ``config`` to completion, checkpointing every epoch into ``out_dir``; resume if a checkpoint is there.

    Args:
        config: an :class:`ArchConfig`, its dict, a JSON file (plain or exported) or a preset name.
        data: a ``--data`` spec (``bundled``, ``fashion-mnist[:DIR]``, ``cifar10:DIR``, ``cifar100:DIR``,
            ``folder:DIR``) or a loaded :class:`~nas.training.data.Dataset`.
        settings: the recipe and budget.
        out_dir: run folder: ``checkpoint.pt`` (each epoch), ``model.pt`` and ``result.json`` (at the end).
        seed: seeds weight init, batch order and flips.
        device: ``"cpu"`` or ``"cuda[:N]"``.
        restart: discard a checkpoint in ``out_dir`` instead of continuing it.
        callback: receives progress events (see :data:`TrainEvent`); the library prints nothing.

    Returns:
        A :class:`TrainResult`.

    Raises:
        UsageError: ``out_dir`` holds a run of another config, data, seed or settings (the message names the
            difference), or is not writable.
        DataError: the data cannot be loaded or is too small.
        TrainingDivergedError: the loss became NaN or infinite.
        ConfigError: the config is invalid.
    """
    import torch
    from torch import nn

    from nas.builder import build_model
    from nas.training.data import Dataset, load_data, parse_data_spec
    from nas.errors import ExportError, TrainingDivergedError
    from nas.export.formats import checkpoint_dict, ensure_writable_dir
    from nas.training.proxy import _batch, _device, _evaluate, _prepare, _resize_u8, _use_tiny_map_path

    cfg = load_config(config)
    s = settings
    res = s.resolution or cfg.resolution
    dev = _device(device)
    try:
        out = ensure_writable_dir(out_dir)
    except ExportError as e:
        raise UsageError(str(e)) from None
    ck_path, model_path, result_path = out / CHECKPOINT_NAME, out / MODEL_NAME, out / RESULT_NAME
    for stale in out.glob(f".{CHECKPOINT_NAME}.*.tmp"):  # a kill during a write leaves its temp file
        with contextlib.suppress(OSError):
            stale.unlink()

    dataset = data if isinstance(data, Dataset) else load_data(parse_data_spec(data), image_size=res)
    data_id = f"{dataset.name}:{dataset.source}"
    ident = _identity(cfg, s, seed, data_id)

    ck = None
    if ck_path.is_file() and not restart:
        try:
            ck = torch.load(ck_path, map_location="cpu", weights_only=True)
        except Exception as e:  # a foreign or corrupt file; atomic writes never leave a partial checkpoint
            raise UsageError(f"{ck_path}: unreadable checkpoint ({str(e).splitlines()[0][:100]}); "
                             "use another --out or --restart") from None
        stored = json.loads(ck.get("identity", "{}"))
        diff = [k for k in ident if stored.get(k) != ident[k]]
        if "settings" in diff:
            diff.remove("settings")
            diff += [f"settings.{k}" for k in ident["settings"] if stored.get("settings", {}).get(k) != ident["settings"][k]]
        if diff:
            raise UsageError(f"{ck_path}: holds a run with a different {', '.join(diff)}; use another --out, "
                             "or --restart to discard it")
    if restart:
        for p in (ck_path, model_path, result_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    if ck is not None and int(ck["epoch"]) >= s.epochs and result_path.is_file():
        done = json.loads(result_path.read_text())
        done.update(started_epoch=s.epochs + 1, resumed=True)
        return TrainResult(**{k: done[k] for k in TrainResult.__dataclass_fields__})

    split_val = s.val_size
    p = _prepare(dataset, res, split_val, s.train_size, s.split_seed)
    n_train = len(p.train_y)
    batch = min(s.batch_size, n_train)
    per_epoch = n_train // batch
    if per_epoch < 1 or batch < 2:
        from nas.errors import DataError

        raise DataError(f"{dataset.source}: {n_train} training images, too few for batch size {s.batch_size}")
    total = per_epoch * s.epochs
    warmup = round(s.warmup_epochs * per_epoch)
    tx, ty, vx, vy = p.train_x, p.train_y, p.val_x, p.val_y
    test_x = test_y = None
    if dataset.test_images is not None and dataset.test_labels is not None and len(dataset.test_labels):
        test_x, test_y = _resize_u8(dataset.test_images, res), torch.from_numpy(dataset.test_labels)
    if dev.type != "cpu":
        from dataclasses import replace

        tx, ty, vx, vy = (t.to(dev) for t in (tx, ty, vx, vy))
        if test_x is not None:
            test_x, test_y = test_x.to(dev), test_y.to(dev)
        p = replace(p, mean=p.mean.to(dev), std=p.std.to(dev))

    def lr_factor(step: int) -> float:  # step = optimizer steps done; warm-up from lr/10, then cosine to 0
        if step < warmup:
            return 0.1 + 0.9 * step / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    emit = callback or (lambda _e: None)
    old_threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)
    t_start = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's global RNG state is left as it was
            torch.manual_seed(seed)
            model = build_model(cfg, p.num_classes, in_channels=p.channels, stem=s.stem)
            if ck is not None:
                model.load_state_dict(ck["model"])  # plain keys: loaded before the tiny-map wrappers go in
            if s.tiny_map_path and dev.type == "cpu":
                _use_tiny_map_path(model)  # same parameters, same order: the optimizer state still lines up
            model = model.to(dev)
            if s.channels_last:
                model = model.to(memory_format=torch.channels_last)
            decay = [q for q in model.parameters() if q.ndim > 1]
            no_decay = [q for q in model.parameters() if q.ndim <= 1]
            opt = torch.optim.SGD([{"params": decay, "weight_decay": s.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=s.lr, momentum=s.momentum, nesterov=True)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
            gen = torch.Generator().manual_seed(seed)  # batch order and flips
            history: list[dict[str, Any]] = []
            first = 1
            if ck is not None:
                opt.load_state_dict(ck["optimizer"])
                sched.load_state_dict(ck["scheduler"])
                gen.set_state(ck["rng"]["generator"])
                torch.set_rng_state(ck["rng"]["torch"])
                history = json.loads(ck["history"])
                first = int(ck["epoch"]) + 1
            loss_fn = nn.CrossEntropyLoss(label_smoothing=s.label_smoothing)
            emit({"event": "start", "epochs": s.epochs, "first_epoch": first, "steps_per_epoch": per_epoch,
                  "resumed": ck is not None, "train": n_train, "val": len(vy)})
            for epoch in range(first, s.epochs + 1):
                t0 = time.perf_counter()
                model.train()
                perm = torch.randperm(n_train, generator=gen)
                loss_sum = torch.zeros((), device=dev)
                for i in range(per_epoch):
                    idx = perm[i * batch:(i + 1) * batch].to(dev)
                    x = _batch(p, tx, idx, flip=s.augment, gen=gen, channels_last=s.channels_last)
                    loss = loss_fn(model(x), ty[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    loss_sum += loss.detach()
                    emit({"event": "step", "epoch": epoch, "step": i + 1, "steps_per_epoch": per_epoch})
                mean_loss = float(loss_sum) / per_epoch
                if not math.isfinite(mean_loss):
                    raise TrainingDivergedError(f"config {cfg.to_string()}: training loss became {mean_loss} in "
                                                f"epoch {epoch} (lr {s.lr}, seed {seed}); lower --lr")
                val_acc = _evaluate(model, p, vx, vy, channels_last=s.channels_last)
                rec = {"epoch": epoch, "loss": round(mean_loss, 6), "lr": opt.param_groups[0]["lr"],
                       "val_accuracy": val_acc, "seconds": round(time.perf_counter() - t0, 3)}
                history.append(rec)
                with _plain(model):
                    state = model.state_dict()
                _atomic_write(ck_path, _save({
                    "format": CHECKPOINT_FORMAT, "identity": json.dumps(ident), "epoch": epoch,
                    "model": state, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "rng": {"generator": gen.get_state(), "torch": torch.get_rng_state()},
                    "history": json.dumps(history),
                }))
                emit({"event": "epoch", **rec, "epochs": s.epochs})
        test_acc = None
        if test_x is not None:
            test_acc = _evaluate(model, p, test_x, test_y, channels_last=s.channels_last)
        val_acc = history[-1]["val_accuracy"] if history else 0.0
    finally:
        torch.set_num_threads(old_threads)

    seconds = time.perf_counter() - t_start
    model = model.to("cpu").to(memory_format=torch.contiguous_format)
    params = sum(q.numel() for q in model.parameters())
    data_info = dict(p.data)
    result = TrainResult(config=cfg.to_dict(), epochs=s.epochs, started_epoch=first, resumed=ck is not None,
                         val_accuracy=val_acc, test_accuracy=test_acc, history=history, seconds=round(seconds, 3),
                         params=params, seed=seed, settings=s.to_dict(), data=data_info,
                         files={"checkpoint": str(ck_path), "model": str(model_path), "result": str(result_path)})
    training = {"epochs": s.epochs, "val_accuracy": val_acc, "test_accuracy": test_acc, "data": data_info,
                "settings": s.to_dict(), "seed": seed, "resolution": res}
    with _plain(model):  # build_model's keys, so load_checkpoint and `nas export --weights` read it
        ck_model = checkpoint_dict(model, cfg, num_classes=p.num_classes, in_channels=p.channels, stem=s.stem,
                                   provenance={"training": training})
    _atomic_write(model_path, _save(ck_model))
    _atomic_write(result_path, (json.dumps(result.to_dict(), indent=2, default=str) + "\n").encode())
    emit({"event": "done", "val_accuracy": val_acc, "test_accuracy": test_acc})
    return result
