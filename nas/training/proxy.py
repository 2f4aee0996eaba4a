"""Short proxy training: a cheap accuracy signal that ranks candidates.

:func:`proxy_train` trains a config for a fixed budget (:class:`ProxySettings`, named in :data:`PROXY_PRESETS`)
on a stratified train subset carved out of a data set's train split (:func:`nas.training.data.split_train_val`)
and returns top-1 accuracy on the held-out validation part. The input pipeline is :mod:`nas.training.pipeline`,
the loop :mod:`nas.training.loop` (shared with full training); the zero-cost scores are in
:mod:`nas.training.zero_cost`.

Choices, and why (figures from ``benchmarks/bench_train_throughput.py`` and ``bench_proxy_fidelity.py``):

* **Stem and resolution.** Inputs are resized once to ``resolution`` (bilinear) and the network keeps the
  paper's ImageNet stem (conv s2 + max-pool) by default, so the trained network is the searched network. At
  32² that stem leaves 8², then stages at 4², 2², 1²; the CIFAR stem (conv s1, no pool) keeps 32² and
  costs ~6x more per image. See :data:`PROXY_PRESETS` for the measured trade-off behind the default.
* **Hardware.** Channels-last tensors (oneDNN's fast path on CPU), ``torch.set_num_threads``, the exact
  tiny-map fast path (:mod:`nas.training.fastpath`) and a data path that stays in memory.
* **Evaluation.** Each of ``reports`` evaluations re-estimates BN statistics from a few training batches
  first (:func:`nas.training.loop.recalibrate_bn`); the callback sees each accuracy and may stop the run.
  The result carries the number of validation images and the accuracy's binomial standard error
  (``ProxyResult.eval_images``, ``ProxyResult.accuracy_se``) so a search can say when a gap is noise.
* **Fidelities.** :data:`PROXY_RUNGS` is the multi-fidelity ladder (rung 0 = ``quick``); its figures are in
  ``benchmarks/bench_proxy_fidelity.py`` (Kendall tau against ``benchmarks/ground_truth.py``).
* **Determinism.** One ``seed`` drives weight init, batch order and flips (a private generator; the caller's
  global RNG state is restored). On CPU with a fixed thread count the same seed gives the same accuracy.
* **Grayscale** inputs (Fashion-MNIST) are fed as one channel (``in_channels=1``): only the stem's first conv
  differs from the RGB network, and three identical channels would cost the same for no information.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Literal, Mapping

from nas.arch import ArchConfig, load_config
from nas.errors import UsageError
from nas.training.data import Dataset, DataSpec
from nas.training.loop import Recipe, Run, build_run, evaluate, recalibrate_bn, run_steps, session, torch_device
from nas.training.pipeline import on_device, prepare, resolve_data

__all__ = [
    "ProxySettings",
    "ProxyResult",
    "PROXY_PRESETS",
    "PROXY_RUNGS",
    "binomial_se",
    "proxy_settings",
    "proxy_train",
    "Callback",
]

Callback = Callable[[int, float], bool]
"""``callback(step, val_accuracy) -> stop``: called at each report point; return True to stop (prune)."""

BN_RECAL_SEED_OFFSET = 0x5EED  # arbitrary fixed offset: BN re-estimation draws a stream of its own, not the run's

@dataclass(frozen=True)
class ProxySettings:
    """Everything that fixes a proxy run except the config, the data and the seed.

    Attributes:
        epochs: passes over the train subset; ignored when ``steps`` is set.
        steps: optimizer steps (overrides ``epochs``).
        resolution: square input size in pixels the images are resized to.
        stem: ``"imagenet"`` (conv s2 + max-pool, the searched network) or ``"cifar"`` (conv s1, no pool).
        batch_size: images per step (the last partial batch of an epoch is dropped: BN needs >1 image).
        lr: peak learning rate, reached after the warm-up, then cosine to 0.
        optimizer: ``"sgd"`` (Nesterov) or ``"adamw"``.
        momentum: SGD momentum, or AdamW's beta1.
        weight_decay: L2 on conv/linear weights (not BN, not biases).
        warmup_fraction: share of the steps with a linear ramp from lr/10 to lr.
        train_size: training images drawn (stratified) from the train split after validation; None = all.
        val_size: validation images carved (stratified) from the train split.
        split_seed: seeds the train/val split; fixed across a search so every candidate sees the same split.
        augment: random horizontal flips.
        reports: evaluations spread over the run, each passed to the callback (the last one is the result).
        bn_recalibration: training batches that re-estimate BN statistics before each evaluation (0 = off).
        threads: ``torch.set_num_threads`` during the run (restored afterwards); None keeps the current value.
        channels_last: channels-last memory format (False only to measure what it buys).
        tiny_map_path: on CPU, compute depthwise and 1x1 convs on maps of <= 2x2 pixels as exact matrix
            products instead of oneDNN convs (same function and weights; False only to measure what it buys).
    """

    epochs: float = 0.5
    steps: int | None = None
    resolution: int = 64  # ImageNet stem: stage maps 8/4/2 (at 32²: 4/2/1, where kernel size is invisible)
    stem: Literal["imagenet", "cifar"] = "imagenet"
    batch_size: int = 64  # 78 steps per pass over 5,000 images: more updates per second than 128 at this size
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.02  # best of 0.02/0.05/0.1 at this budget on three sampled candidates (higher: unstable)
    momentum: float = 0.9
    weight_decay: float = 5e-5  # ShuffleNetV2 used 4e-5 over 300k steps; matters little in a few hundred
    warmup_fraction: float = 0.05
    train_size: int | None = 5000
    val_size: int = 1000  # 1,000 images: the accuracy's standard error is ~1.1 points at 85 %
    split_seed: int = 0
    augment: bool = True
    reports: int = 2  # one pruning point half-way; each evaluation costs ~15 % of quick's training
    bn_recalibration: int = 4  # training batches that re-estimate BN statistics before each evaluation
    threads: int | None = None
    channels_last: bool = True
    tiny_map_path: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`UsageError` naming the first bad field (``e.field`` is the field's name)."""
        def bad(name: str, why: str) -> None:
            raise UsageError(f"proxy setting {name}={getattr(self, name)!r}: {why}", field=name)

        if self.steps is None:
            if not (isinstance(self.epochs, (int, float)) and math.isfinite(self.epochs) and self.epochs > 0):
                bad("epochs", "must be a positive number")
        elif not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            bad("steps", "must be a positive integer")
        if not isinstance(self.resolution, int) or self.resolution < 8:
            bad("resolution", "must be an integer of at least 8 pixels")
        if self.stem not in ("imagenet", "cifar"):
            bad("stem", "must be 'imagenet' or 'cifar'")
        if self.optimizer not in ("sgd", "adamw"):
            bad("optimizer", "must be 'sgd' or 'adamw'")
        if not isinstance(self.batch_size, int) or self.batch_size < 2:
            bad("batch_size", "must be an integer of at least 2 (batch norm)")
        for name in ("lr", "momentum", "weight_decay", "warmup_fraction"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                bad(name, "must be a finite number >= 0")
        if self.lr <= 0:
            bad("lr", "must be positive")
        if self.momentum >= 1 or self.warmup_fraction >= 1:
            bad("momentum" if self.momentum >= 1 else "warmup_fraction", "must be below 1")
        if self.train_size is not None and (not isinstance(self.train_size, int) or self.train_size < 2):
            bad("train_size", "must be an integer of at least 2, or None for all")
        if not isinstance(self.val_size, int) or self.val_size < 1:
            bad("val_size", "must be a positive integer")
        if not isinstance(self.bn_recalibration, int) or self.bn_recalibration < 0:
            bad("bn_recalibration", "must be an integer >= 0 (0 = keep the running averages)")
        if not isinstance(self.reports, int) or self.reports < 1:
            bad("reports", "must be a positive integer")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            bad("threads", "must be a positive integer or None")

    def replace(self, **changes: Any) -> "ProxySettings":
        """A copy with some fields changed (validated)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def planned_steps(self, n_train: int | None = None) -> int:
        """Optimizer steps a full (unpruned) run takes, as :func:`proxy_train` counts them.

        Args:
            n_train: training images available; default ``train_size``.

        Returns:
            ``steps`` if set, else ``ceil(epochs * (n_train // batch))`` (at least 1).

        Raises:
            UsageError: ``steps`` and ``train_size`` are both None and no ``n_train`` is given
                (``field="n_train"``).
        """
        n = self.train_size if n_train is None else n_train
        if self.steps is None and n is None:
            raise UsageError("n_train is needed when neither steps nor train_size is set", field="n_train")
        return _recipe(self, n if n is not None else self.batch_size).total_steps


# Named budgets. Costs are wall seconds per candidate for ShuffleNetV2 1x on this project's 2-core CI VM;
# smaller candidates are faster. The fidelity benchmark uses "quick" and "reference" (10x its steps).
PROXY_PRESETS: dict[str, ProxySettings] = {
    # ~5-15 s: half a pass over 5,000 images at 64² (39 steps of 64), prunable half-way.
    "quick": ProxySettings(),
    # 4x quick: for a final re-ranking of a short list.
    "standard": ProxySettings(epochs=2.0),
    # 10x quick's steps, same split and recipe: the fidelity benchmark's ground truth.
    "reference": ProxySettings(epochs=5.0),
}


# The multi-fidelity ladder (successive halving): rung k trains 4^k x quick's steps. Every rung fits the bundled
# subset (6,000 train images). Above rung 0 the validation split doubles to 2,000 images (train 4,000): measured in
# benchmarks/bench_proxy_fidelity.py, 4x quick's steps shrinks the across-architecture std of the accuracy from
# 4.1 points (21 architectures) to 1.0 (8), below the binomial SE on 1,000 images (1.25 points), so a 1,000-image
# validation set would rank promoted candidates mostly by noise; 2,000 cuts the SE by sqrt(2) (0.88 points) for
# ~5 % of the rung's time. (On the full fashion-mnist data a 10,000-image split would cut it to ~0.4.)
RUNG_VAL_SIZE = 2000
RUNG_TRAIN_SIZE = 4000
PROXY_RUNGS: dict[str, ProxySettings] = {
    "rung0": PROXY_PRESETS["quick"],  # 39 steps of 64 images
    "rung1": ProxySettings(steps=156, train_size=RUNG_TRAIN_SIZE, val_size=RUNG_VAL_SIZE),  # 4x quick's steps
    "rung2": ProxySettings(steps=624, train_size=RUNG_TRAIN_SIZE, val_size=RUNG_VAL_SIZE),  # 16x
}


def proxy_settings(name: str) -> ProxySettings:
    """A preset from :data:`PROXY_PRESETS` by name.

    Args:
        name: a key of :data:`PROXY_PRESETS`.

    Returns:
        The preset's :class:`ProxySettings`.

    Raises:
        UsageError: unknown name (``field="proxy_preset"``).
    """
    try:
        return PROXY_PRESETS[name]
    except KeyError:
        raise UsageError(f"proxy_preset {name!r} is unknown; use one of {sorted(PROXY_PRESETS)}",
                         field="proxy_preset") from None


def binomial_se(accuracy: float, n: int) -> float:
    """Binomial standard error ``sqrt(p (1 - p) / n)`` of an accuracy ``p`` measured on ``n`` images.

    Args:
        accuracy: the measured accuracy in [0, 1].
        n: images it was measured on.

    Returns:
        The standard error in the accuracy's units (0.0137 = 1.37 points at p = 0.75, n = 1,000).

    Raises:
        UsageError: ``n`` is not a positive integer or ``accuracy`` is outside [0, 1] (``field`` names it).
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UsageError(f"n={n!r}: must be a positive integer", field="n")
    if not 0.0 <= accuracy <= 1.0:
        raise UsageError(f"accuracy={accuracy!r}: must be in [0, 1]", field="accuracy")
    return math.sqrt(accuracy * (1.0 - accuracy) / n)


@dataclass(frozen=True)
class ProxyResult:
    """Outcome of one proxy run.

    Attributes:
        accuracy: top-1 validation accuracy in [0, 1] at the last evaluation (the one that stopped the run if
            it was pruned).
        accuracy_se: binomial standard error of ``accuracy``, ``sqrt(p (1 - p) / eval_images)``: the
            uncertainty from evaluating on a finite validation set only (not the seed-to-seed spread of the
            training itself; :func:`binomial_se`).
        eval_images: validation images ``accuracy`` was measured on.
        pruned: the callback stopped the run before its budget.
        steps: optimizer steps done; ``total_steps`` the budget.
        images_seen: training images processed.
        train_seconds: wall time of the training steps (excluding evaluation and data preparation).
        train_cpu_seconds: CPU time of this process over the same steps (all threads; robust to other load).
        images_per_second: ``images_seen / train_seconds``.
        eval_seconds / prepare_seconds: time spent evaluating / decoding, resizing and caching the data.
        history: ``(step, accuracy)`` at each report point.
        final_loss: training loss of the last step.
        params: trainable parameters of the proxy network (with its stem and class count).
    """

    accuracy: float
    accuracy_se: float
    eval_images: int
    pruned: bool
    steps: int
    total_steps: int
    images_seen: int
    train_seconds: float
    train_cpu_seconds: float
    images_per_second: float
    eval_seconds: float
    prepare_seconds: float
    history: tuple[tuple[int, float], ...]
    final_loss: float
    params: int
    seed: int
    device: str
    threads: int
    config_hash: str
    data: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["history"] = [list(h) for h in self.history]
        return d


# ----------------------------------------------------------------------------------------- training
def proxy_train(
    config: "ArchConfig | Mapping[str, Any] | str",
    *,
    data: "Dataset | DataSpec | str" = "bundled",
    settings: ProxySettings = PROXY_PRESETS["quick"],
    seed: int = 0,
    callback: Callback | None = None,
    progress: Callable[[int, int], None] | None = None,
    device: str = "cpu",
) -> ProxyResult:
    """Train ``config`` briefly and return its validation accuracy.

    Args:
        config: an :class:`ArchConfig`, its dict form, a JSON path or a preset name.
        data: a loaded :class:`~nas.training.data.Dataset` (reused across calls: pass one per search) or a
            data spec string (``bundled``, ``cifar10:DIR``, ...).
        settings: the budget and recipe (:data:`PROXY_PRESETS` has named ones).
        seed: seeds weight init, batch order and augmentation.
        callback: ``callback(step, accuracy) -> stop`` at each of ``settings.reports`` evaluations; return
            True to stop early (the result is then ``pruned``). Exceptions it raises (e.g. Optuna's
            ``TrialPruned``) propagate.
        progress: ``progress(step, total_steps)`` after every step (for a progress bar).
        device: ``"cpu"`` or ``"cuda[:N]"``.

    Returns:
        A :class:`ProxyResult`.

    Raises:
        TrainingDivergedError: the loss became NaN or infinite (record the candidate as failed).
        DataError: the data cannot be loaded or is too small for the settings.
        ConfigError: the config is invalid.
        UsageError / BackendUnavailableError: ``device`` is not usable here (``field="device"``).
    """
    cfg = load_config(config)
    dev = torch_device(device)
    s = settings
    t_prep = time.perf_counter()
    p = prepare(resolve_data(data, s.resolution), s.resolution, s.val_size, s.train_size, s.split_seed)
    recipe = _recipe(s, len(p.train_y))
    p = on_device(p, dev)
    prepare_seconds = time.perf_counter() - t_prep
    with session(seed=seed, threads=s.threads) as threads:
        run = build_run(cfg, p, recipe, seed=seed, device=dev)
        out = _train_with_reports(run, s, callback=callback, progress=progress)
    step, batch = out["steps"], recipe.batch
    n_eval = len(p.val_y)
    return ProxyResult(
        **out, accuracy_se=binomial_se(out["accuracy"], n_eval), eval_images=n_eval,
        total_steps=recipe.total_steps, images_seen=step * batch,
        images_per_second=step * batch / max(out["train_seconds"], 1e-9), prepare_seconds=prepare_seconds,
        params=sum(q.numel() for q in run.model.parameters()), seed=seed, device=str(dev), threads=threads,
        config_hash=cfg.hash(), data=dict(p.data), settings=s.to_dict(),
    )


def _recipe(s: ProxySettings, n_train: int) -> Recipe:
    """The loop's recipe for ``s`` over ``n_train`` training images (one pass = ``n_train // batch`` steps)."""
    batch = min(s.batch_size, n_train)
    per_epoch = max(1, n_train // batch)
    total = s.steps if s.steps is not None else max(1, math.ceil(s.epochs * per_epoch))
    warmup = max(1, round(s.warmup_fraction * total)) if s.warmup_fraction > 0 else 0
    return Recipe(stem=s.stem, optimizer=s.optimizer, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay,
                  label_smoothing=0.0, augment=s.augment, channels_last=s.channels_last,
                  tiny_map_path=s.tiny_map_path, total_steps=total, warmup_steps=warmup, batch=batch,
                  per_epoch=per_epoch)


def _train_with_reports(run: Run, s: ProxySettings, *, callback: Callback | None,
                        progress: Callable[[int, int], None] | None) -> dict[str, Any]:
    """Train in chunks between ``s.reports`` evaluations; stop early when the callback says so.

    Returns:
        The timing, history and outcome fields of :class:`ProxyResult`.
    """
    import torch

    total = run.recipe.total_steps
    report_at = sorted({max(1, round(total * (k + 1) / s.reports)) for k in range(s.reports)})
    on_step = None if progress is None else (lambda step: progress(step, total))
    history: list[tuple[int, float]] = []
    train_seconds = eval_seconds = train_cpu_seconds = 0.0
    accuracy, pruned, loss_v, done = 0.0, False, float("nan"), 0
    for step in report_at:
        t0, c0 = time.perf_counter(), time.process_time()
        _, loss_v = run_steps(run, done + 1, step, on_step=on_step, hint="; the candidate is recorded as failed")
        done = step
        if run.device.type == "cuda":
            torch.cuda.synchronize(run.device)
        t1 = time.perf_counter()
        train_seconds += t1 - t0
        train_cpu_seconds += time.process_time() - c0
        if s.bn_recalibration:
            # A fresh stream each time: the result does not depend on how many reports came before, and the
            # training batches (``run.gen``) are untouched.
            recalibrate_bn(run, batches=s.bn_recalibration,
                           gen=torch.Generator().manual_seed(run.seed + BN_RECAL_SEED_OFFSET))
        accuracy = evaluate(run.model, run.data, run.data.val_x, run.data.val_y, channels_last=s.channels_last)
        history.append((step, accuracy))
        eval_seconds += time.perf_counter() - t1
        if callback is not None and callback(step, accuracy) and step < total:
            pruned = True
            break
    return {"accuracy": accuracy, "pruned": pruned, "steps": done, "train_seconds": train_seconds,
            "train_cpu_seconds": train_cpu_seconds, "eval_seconds": eval_seconds, "history": tuple(history),
            "final_loss": loss_v}


def __getattr__(name: str) -> Any:
    # The zero-cost scores moved to nas.training.zero_cost; old imports from here keep working.
    if name in ("zero_cost_score", "ZERO_COST_METHODS"):
        from nas.training import zero_cost

        return getattr(zero_cost, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
