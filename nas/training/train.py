"""Full training of an exported architecture, checkpointed every epoch and resumable.

``train(config, data="bundled", settings=TrainSettings(epochs=30), out_dir="runs/found")`` takes a network found
by a search to completion. It runs the same pipeline (:mod:`nas.training.pipeline`) and loop
(:mod:`nas.training.loop`) as the proxy, so full training and the proxy see the same data the same way; only
the budget and the bookkeeping differ:

* **Split.** Validation images are carved (stratified, ``split_seed``) out of the *train* split, as in the
  search; the data set's own test split is used once, at the end (an ImageFolder has none).
* **Recipe.** SGD with Nesterov momentum 0.9, weight decay on conv/linear weights only (4e-5, the paper's),
  linear warm-up then cosine to 0, stepped per iteration.
* **Checkpoints.** After every epoch the run folder's checkpoint is rewritten atomically
  (:mod:`nas.training.resume`); calling again with the same ``out_dir`` continues from it (the run's config,
  data and settings must match, else it is refused). With a fixed thread count on CPU a resumed run ends
  bit-identical to an uninterrupted one.
* **Result.** ``model.pt`` (the :mod:`nas.checkpoint` format, which export reads with ``weights=``) and
  ``result.json`` (final validation and test accuracy, history).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

from nas.arch import ArchConfig, load_config
from nas.errors import DataError, UsageError
from nas.training.resume import (CHECKPOINT_NAME, MODEL_NAME, RESULT_NAME, TRAIN_CHECKPOINT_FORMAT, RunFiles,
                                 load_resumable, open_run_dir, read_checkpoint_epoch, run_identity, save_torch,
                                 write_file)

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from nas.training.data import Dataset, DataSpec
    from nas.training.loop import Recipe, Run
    from nas.training.pipeline import Prepared

__all__ = ["TrainSettings", "TrainResult", "TrainEvent", "train", "CHECKPOINT_NAME", "RESULT_NAME", "MODEL_NAME",
           "read_checkpoint_epoch"]

CHECKPOINT_FORMAT = TRAIN_CHECKPOINT_FORMAT  # the old name, kept for imports from here

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
        tiny_map_path: on CPU, :mod:`nas.training.fastpath`'s exact path for depthwise and 1x1 convs on maps of <= 2x2
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
        def bad(name: str, why: str) -> None:  # the field is the setting's name
            raise UsageError(f"{name} {getattr(self, name)!r}: {why}", field=name)

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


def train(config: "ArchConfig | Mapping[str, Any] | str | Path", *, data: "Dataset | DataSpec | str" = "bundled",
          settings: TrainSettings = TrainSettings(), out_dir: "str | Path", seed: int = 0, device: str = "cpu",
          restart: bool = False, callback: TrainEvent | None = None) -> TrainResult:
    """Train ``config`` to completion, checkpointing every epoch into ``out_dir``; resume if a checkpoint is there.

    Args:
        config: an :class:`ArchConfig`, its dict, a JSON file (plain or exported) or a preset name.
        data: a data spec (``bundled``, ``fashion-mnist[:DIR]``, ``cifar10:DIR``, ``cifar100:DIR``,
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
            difference), or is not writable (``field="out"``); ``device`` is unusable (``field="device"``).
        DataError: the data cannot be loaded or is too small.
        TrainingDivergedError: the loss became NaN or infinite (``field="lr"``).
        ConfigError: the config is invalid.
    """
    import torch

    from nas.training.data import Dataset, load_data, parse_data_spec
    from nas.training.loop import build_run, evaluate, session, torch_device

    cfg = load_config(config)
    s = settings
    res = s.resolution or cfg.resolution
    dev = torch_device(device)
    files = open_run_dir(out_dir)
    dataset = data if isinstance(data, Dataset) else load_data(parse_data_spec(data), image_size=res)
    ident = run_identity(cfg, s.to_dict(), seed, f"{dataset.name}:{dataset.source}")
    ck = load_resumable(files, ident, restart=restart)
    if ck is not None and int(ck["epoch"]) >= s.epochs and files.result.is_file():
        done = json.loads(files.result.read_text())
        done.update(started_epoch=s.epochs + 1, resumed=True)
        return TrainResult(**{k: done[k] for k in TrainResult.__dataclass_fields__})

    p, recipe = _data_and_recipe(dataset, s, res, dev)
    test = _test_tensors(dataset, res, dev)
    emit = callback or (lambda _e: None)
    t_start = time.perf_counter()
    with session(seed=seed, threads=s.threads):
        run = build_run(cfg, p, recipe, seed=seed, device=dev, state=None if ck is None else {
            "model": ck["model"], "optimizer": ck["optimizer"], "scheduler": ck["scheduler"],
            "generator": ck["rng"]["generator"]})
        if ck is not None:
            torch.set_rng_state(ck["rng"]["torch"])
        history: list[dict[str, Any]] = [] if ck is None else json.loads(ck["history"])
        first = 1 if ck is None else int(ck["epoch"]) + 1
        emit({"event": "start", "epochs": s.epochs, "first_epoch": first, "steps_per_epoch": recipe.per_epoch,
              "resumed": ck is not None, "train": len(p.train_y), "val": len(p.val_y)})
        for epoch in range(first, s.epochs + 1):
            history.append(_epoch(run, epoch, emit))
            _save_checkpoint(run, files, ident, epoch, history)
            emit({"event": "epoch", **history[-1], "epochs": s.epochs})
        test_acc = None if test is None else evaluate(run.model, p, *test, channels_last=s.channels_last)
    val_acc = history[-1]["val_accuracy"] if history else 0.0
    seconds = round(time.perf_counter() - t_start, 3)
    model = run.model.to("cpu").to(memory_format=torch.contiguous_format)
    result = TrainResult(config=cfg.to_dict(), epochs=s.epochs, started_epoch=first, resumed=ck is not None,
                         val_accuracy=val_acc, test_accuracy=test_acc, history=history, seconds=seconds,
                         params=sum(q.numel() for q in model.parameters()), seed=seed, settings=s.to_dict(),
                         data=dict(p.data), files=files.as_dict())
    _write_outputs(model, run, files, result, resolution=res)
    emit({"event": "done", "val_accuracy": val_acc, "test_accuracy": test_acc})
    return result


def _data_and_recipe(dataset: "Dataset", s: TrainSettings, res: int, dev: "torch.device") -> "tuple[Prepared, Recipe]":
    """The prepared split on ``dev`` and the loop's recipe (whole epochs of ``n_train // batch`` steps).

    Raises:
        DataError: fewer training images than one batch (``field="batch_size"``).
    """
    from nas.training.loop import Recipe
    from nas.training.pipeline import on_device, prepare

    p = prepare(dataset, res, s.val_size, s.train_size, s.split_seed)
    n_train = len(p.train_y)
    batch = min(s.batch_size, n_train)
    per_epoch = n_train // batch
    if per_epoch < 1 or batch < 2:
        raise DataError(f"{dataset.source}: {n_train} training images, too few for batch size {s.batch_size}",
                        field="batch_size")
    recipe = Recipe(stem=s.stem, optimizer="sgd", lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay,
                    label_smoothing=s.label_smoothing, augment=s.augment, channels_last=s.channels_last,
                    tiny_map_path=s.tiny_map_path, total_steps=per_epoch * s.epochs,
                    warmup_steps=round(s.warmup_epochs * per_epoch), batch=batch, per_epoch=per_epoch)
    return on_device(p, dev), recipe


def _test_tensors(dataset: "Dataset", res: int, dev: "torch.device") -> "tuple[torch.Tensor, torch.Tensor] | None":
    """The data set's test split as cached uint8 images and labels on ``dev`` (None without one)."""
    import torch

    from nas.training.pipeline import resize_u8

    if dataset.test_images is None or dataset.test_labels is None or not len(dataset.test_labels):
        return None
    return resize_u8(dataset.test_images, res).to(dev), torch.from_numpy(dataset.test_labels).to(dev)


def _epoch(run: "Run", epoch: int, emit: TrainEvent) -> dict[str, Any]:
    """One pass over the training images, then a validation; returns the history record."""
    from nas.training.loop import evaluate, run_steps

    t0 = time.perf_counter()
    per = run.recipe.per_epoch
    base = (epoch - 1) * per

    def on_step(step: int) -> None:
        emit({"event": "step", "epoch": epoch, "step": step - base, "steps_per_epoch": per})

    loss_sum, _ = run_steps(run, base + 1, base + per, on_step=on_step, hint="; lower lr")
    mean_loss = float(loss_sum) / per
    val_acc = evaluate(run.model, run.data, run.data.val_x, run.data.val_y, channels_last=run.recipe.channels_last)
    return {"epoch": epoch, "loss": round(mean_loss, 6), "lr": run.optimizer.param_groups[0]["lr"],
            "val_accuracy": val_acc, "seconds": round(time.perf_counter() - t0, 3)}


def _save_checkpoint(run: "Run", files: RunFiles, ident: dict[str, Any], epoch: int,
                     history: list[dict[str, Any]]) -> None:
    """Rewrite the run's checkpoint after ``epoch`` (call inside the run's session: it stores torch's RNG)."""
    import torch

    from nas.training.fastpath import plain_convs

    with plain_convs(run.model):
        state = run.model.state_dict()
    write_file(files.checkpoint, save_torch({
        "format": TRAIN_CHECKPOINT_FORMAT, "identity": json.dumps(ident), "epoch": epoch,
        "model": state, "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "rng": {"generator": run.gen.get_state(), "torch": torch.get_rng_state()},
        "history": json.dumps(history),
    }))


def _write_outputs(model: Any, run: "Run", files: RunFiles, result: TrainResult, *, resolution: int) -> None:
    """Write ``model.pt`` (``model``: the run's network on the CPU, saved with plain keys) and ``result.json``."""
    from nas.checkpoint import checkpoint_dict
    from nas.training.fastpath import plain_convs

    training = {"epochs": result.epochs, "val_accuracy": result.val_accuracy, "test_accuracy": result.test_accuracy,
                "data": result.data, "settings": result.settings, "seed": result.seed, "resolution": resolution}
    with plain_convs(model):  # build_model's keys, so load_checkpoint and export's ``weights=`` read it
        ck_model = checkpoint_dict(model, run.config, num_classes=run.data.num_classes,
                                   in_channels=run.data.channels, stem=run.recipe.stem,
                                   provenance={"training": training})
    write_file(files.model, save_torch(ck_model))
    write_file(files.result, (json.dumps(result.to_dict(), indent=2, default=str) + "\n").encode())
