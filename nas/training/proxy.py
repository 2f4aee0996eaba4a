"""Short proxy training and a zero-cost score: cheap accuracy signals that rank candidates.

:func:`proxy_train` trains a config for a fixed budget on a stratified train subset carved out of a data set's
train split (:func:`nas.training.data.split_train_val`) and returns top-1 accuracy on the held-out validation part.
:func:`zero_cost_score` scores an untrained network from one batch (NASWOT or synflow), for a first pass over
huge spaces.

Choices, and why (figures from ``benchmarks/bench_train_throughput.py`` and ``bench_proxy_fidelity.py``):

* **Stem and resolution.** Inputs are resized once to ``resolution`` (bilinear) and the network keeps the
  paper's ImageNet stem (conv s2 + max-pool) by default, so the trained network is the searched network. At
  32² that stem leaves 8², then stages at 4², 2², 1²; the CIFAR stem (conv s1, no pool) keeps 32² and
  costs ~6x more per image. See :data:`PROXY_PRESETS` for the measured trade-off behind the default.
* **Optimizer.** SGD with Nesterov momentum 0.9 under a cosine schedule with a short linear warm-up:
  ShuffleNetV2's own recipe, with no per-parameter state that would need its own warm-up in runs of a few
  hundred steps. Weight decay applies to conv/linear weights only, not BN or biases.
* **Hardware.** Channels-last tensors (oneDNN's fast path on CPU), ``torch.set_num_threads``, and a data
  path that stays in memory: images are decoded and resized once per (data set, resolution, split) and
  cached as ``uint8``; each batch is an index, a cast, a normalisation and a flip on whole tensors, which is a
  few per cent of a step, so no loader workers compete with the compute threads for cores. On CUDA the
  cached tensors move to the GPU once and the same code runs there.
* **Determinism.** One ``seed`` drives weight init, batch order and flips (a private generator; the caller's
  global RNG state is restored). On CPU with a fixed thread count the same seed gives the same accuracy.
* **Grayscale** inputs (Fashion-MNIST) are fed as one channel (``in_channels=1``): only the stem's first conv
  differs from the RGB network, and three identical channels would cost the same for no information.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

from nas.arch import ArchConfig, load_config
from nas.training.data import Dataset, DataSpec, Split, load_data, parse_data_spec, split_train_val
from nas.errors import BackendUnavailableError, DataError, TrainingDivergedError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "ProxySettings",
    "ProxyResult",
    "PROXY_PRESETS",
    "proxy_settings",
    "proxy_train",
    "zero_cost_score",
    "ZERO_COST_METHODS",
    "Callback",
]

Callback = Callable[[int, float], bool]
"""``callback(step, val_accuracy) -> stop``: called at each report point; return True to stop (prune)."""

ZERO_COST_METHODS = ("naswot", "synflow")


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
        """Raise :class:`UsageError` naming the first bad field."""
        def bad(name: str, why: str) -> None:
            raise UsageError(f"proxy setting {name}={getattr(self, name)!r}: {why}")

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


def proxy_settings(name: str) -> ProxySettings:
    """A preset from :data:`PROXY_PRESETS` by name.

    Raises:
        UsageError: unknown name.
    """
    try:
        return PROXY_PRESETS[name]
    except KeyError:
        raise UsageError(f"--budget {name!r}: unknown proxy preset; choose one of {sorted(PROXY_PRESETS)}") from None


@dataclass(frozen=True)
class ProxyResult:
    """Outcome of one proxy run.

    Attributes:
        accuracy: top-1 validation accuracy in [0, 1] at the last evaluation (the one that stopped the run if
            it was pruned).
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


# ----------------------------------------------------------------------------------------- data preparation
@dataclass(frozen=True, eq=False)
class _Prepared:
    train_x: "torch.Tensor"  # uint8 (N, C, R, R)
    train_y: "torch.Tensor"  # int64 (N,)
    val_x: "torch.Tensor"
    val_y: "torch.Tensor"
    mean: "torch.Tensor"  # float32 (1, C, 1, 1), in uint8 units
    std: "torch.Tensor"
    num_classes: int
    channels: int
    data: dict[str, Any]


def _resize_u8(images, resolution: int):
    """uint8 NHWC numpy -> uint8 NCHW tensor at ``resolution``² (bilinear; antialiased when shrinking)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    if tuple(x.shape[2:]) == (resolution, resolution):
        return x.contiguous()
    out = torch.empty((x.shape[0], x.shape[1], resolution, resolution), dtype=torch.uint8)
    shrink = resolution < max(x.shape[2], x.shape[3])
    for i in range(0, x.shape[0], 4096):  # chunks bound the float32 working memory to ~4096 images
        y = F.interpolate(x[i:i + 4096].float(), size=(resolution, resolution), mode="bilinear",
                          align_corners=False, antialias=shrink)
        out[i:i + 4096] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


@functools.lru_cache(maxsize=2)  # a search reuses one (data, resolution, split); 2 covers proxy + reference
def _prepare(dataset: Dataset, resolution: int, val_size: int, train_size: int | None, split_seed: int) -> _Prepared:
    import torch

    split: Split = split_train_val(dataset, val_size=val_size, train_size=train_size, seed=split_seed)
    tx = _resize_u8(split.train_images, resolution)
    vx = _resize_u8(split.val_images, resolution)
    # Per-channel statistics of the training images only (the validation split must not leak into them).
    mean = tx.float().mean(dim=(0, 2, 3), keepdim=True)
    std = tx.float().std(dim=(0, 2, 3), keepdim=True).clamp_min(1.0)
    info = dataset.describe() | {"train_used": int(len(split.train_labels)), "val": int(len(split.val_labels)),
                                 "split_seed": split_seed}
    return _Prepared(tx, torch.from_numpy(split.train_labels), vx, torch.from_numpy(split.val_labels),
                     mean, std, dataset.num_classes, dataset.channels, info)


@functools.lru_cache(maxsize=2)
def _load_cached(spec: str, image_size: int) -> Dataset:
    return load_data(spec, image_size=image_size)


def _resolve_data(data: "Dataset | DataSpec | str", resolution: int) -> Dataset:
    if isinstance(data, Dataset):
        return data
    return _load_cached(str(parse_data_spec(data)), resolution)


def _device(device: str) -> "torch.device":
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"--device {device!r}: not a torch device (use cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(f"--device {device}: CUDA is not available here; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {device!r}: only cpu and cuda are supported")
    return dev


def _batch(p: _Prepared, x_u8, idx, *, flip, gen, channels_last: bool):
    """One normalised float batch from cached uint8 images (whole-tensor ops: a few per cent of a step)."""
    import torch

    x = (x_u8[idx].float() - p.mean) / p.std
    if flip:
        mask = torch.rand(len(idx), generator=gen, device="cpu") < 0.5
        mask = mask.to(x.device).view(-1, 1, 1, 1)
        x = torch.where(mask, x.flip(3), x)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _recalibrate_bn(model, p: _Prepared, tx, *, batches: int, batch: int, gen, channels_last: bool) -> None:
    """Re-estimate BN running statistics from a few training batches with the current weights.

    After a few hundred steps the exponential running averages still mix in statistics of much earlier
    weights, and eval-mode accuracy can sit at chance while the training loss is already low; an exact
    average over ``batches`` fresh batches fixes that for about ``batches`` forward passes.
    """
    import torch
    from torch import nn

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: an exact mean over the batches below
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            idx = torch.randint(0, tx.shape[0], (batch,), generator=gen).to(tx.device)
            model(_batch(p, tx, idx, flip=False, gen=None, channels_last=channels_last))
    for m, mom in zip(bns, saved):
        m.momentum = mom


def _evaluate(model, p: _Prepared, vx, vy, *, channels_last: bool, batch: int = 500) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(vy), batch):
            idx = torch.arange(i, min(i + batch, len(vy)), device=vx.device)
            logits = model(_batch(p, vx, idx, flip=False, gen=None, channels_last=channels_last))
            correct += int((logits.argmax(1) == vy[idx]).sum())
    model.train()
    return correct / len(vy)


# ----------------------------------------------------------------------------------------- tiny-map fast path
_TINY_MAP_PIXELS = 4  # maps of at most 2x2 pixels; from 4x4 up, oneDNN's own kernels are faster (measured)


def _tiny_map_conv_class():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class TinyMapConv(nn.Module):
        """The same convolution, computed another way on maps of <= 2x2 pixels (same weights, same function).

        With the ImageNet stem a 32² input leaves 2x2 and 1x1 maps in the last two stages. There oneDNN's
        depthwise backward costs 10-15 ms per call for 128 images (thread CPU time, 1 thread: ~40x its
        arithmetic), and a 1x1 conv 2-3x a plain GEMM. On such maps a depthwise conv is a per-channel
        (H·W x Ho·Wo) matrix (built by convolving the identity basis: exact taps, padding and stride) and a 1x1
        conv is ``F.linear``; autograd differentiates both cheaply. Measured on ShuffleNetV2 1x, batch 128:
        ~1.7x the images/s of the plain network (``benchmarks/bench_train_throughput.py``).
        """

        def __init__(self, conv: nn.Conv2d) -> None:
            super().__init__()
            self.conv = conv
            self.depthwise = conv.groups == conv.in_channels == conv.out_channels > 1
            self.pointwise = conv.groups == 1 and conv.kernel_size == (1, 1) and conv.stride == (1, 1) \
                and conv.padding == (0, 0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            c = self.conv
            b, ch, h, w = x.shape
            if h * w > _TINY_MAP_PIXELS or c.padding_mode != "zeros":
                return c(x)
            if self.pointwise:
                y = F.linear(x.permute(0, 2, 3, 1).reshape(-1, ch), c.weight.flatten(1), c.bias)
                return y.view(b, h, w, -1).permute(0, 3, 1, 2)
            kh, kw = c.kernel_size
            if h == w == 1 and c.padding == (kh // 2, kw // 2) and c.dilation == (1, 1):
                y = x * c.weight[:, 0, kh // 2, kw // 2].view(1, -1, 1, 1)  # only the centre tap sees the pixel
            else:
                eye = torch.eye(h * w, dtype=x.dtype, device=x.device).view(h * w, 1, h, w).expand(h * w, ch, h, w)
                basis = F.conv2d(eye, c.weight, None, c.stride, c.padding, c.dilation, ch)  # (HW, C, Ho, Wo)
                ho, wo = basis.shape[2:]
                m = basis.flatten(2)  # m[i, c, o]: output pixel o's weight on input pixel i, per channel
                xf = x.reshape(b, ch, h * w)
                y = xf[:, :, 0:1] * m[0]
                for i in range(1, h * w):  # at most 4 multiply-adds on (B, C, Ho·Wo): cheaper than a bmm here
                    y = y + xf[:, :, i:i + 1] * m[i]
                y = y.view(b, ch, ho, wo)
            if c.bias is not None:
                y = y + c.bias.view(1, -1, 1, 1)
            return y

    return TinyMapConv


def _use_tiny_map_path(module) -> None:
    """Wrap every depthwise and 1x1 conv of ``module`` in place (see ``TinyMapConv``); parameters are shared."""
    from torch import nn

    cls = _tiny_map_conv_class()
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d) and (child.groups == child.in_channels == child.out_channels > 1
                                             or (child.groups == 1 and child.kernel_size == (1, 1))):
            setattr(module, name, cls(child))
        else:
            _use_tiny_map_path(child)


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
            ``--data`` spec string.
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
        BackendUnavailableError: CUDA asked for but not available.
    """
    import torch
    from torch import nn

    from nas.builder import build_model

    cfg = load_config(config)
    dev = _device(device)
    s = settings
    t_prep = time.perf_counter()
    p = _prepare(_resolve_data(data, s.resolution), s.resolution, s.val_size, s.train_size, s.split_seed)
    n_train = len(p.train_y)
    batch = min(s.batch_size, n_train)
    per_epoch = max(1, n_train // batch)
    total = s.steps if s.steps is not None else max(1, math.ceil(s.epochs * per_epoch))
    tx, ty, vx, vy = p.train_x, p.train_y, p.val_x, p.val_y
    if dev.type != "cpu":
        tx, ty, vx, vy = (t.to(dev) for t in (tx, ty, vx, vy))
        p = replace(p, mean=p.mean.to(dev), std=p.std.to(dev))
    prepare_seconds = time.perf_counter() - t_prep

    old_threads = torch.get_num_threads()
    threads = s.threads or old_threads
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's global RNG state is left as it was
            torch.manual_seed(seed)
            model = build_model(cfg, p.num_classes, in_channels=p.channels, stem=s.stem)
        gen = torch.Generator().manual_seed(seed)
        if s.tiny_map_path and dev.type == "cpu":
            _use_tiny_map_path(model)
        model = model.to(dev)
        if s.channels_last:
            model = model.to(memory_format=torch.channels_last)
        decay = [q for q in model.parameters() if q.ndim > 1]
        no_decay = [q for q in model.parameters() if q.ndim <= 1]
        groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if s.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, nesterov=True)
        else:
            opt = torch.optim.AdamW(groups, lr=s.lr, betas=(s.momentum, 0.999))
        loss_fn = nn.CrossEntropyLoss()
        warmup = max(1, round(s.warmup_fraction * total)) if s.warmup_fraction > 0 else 0

        def lr_at(step: int) -> float:  # step is 0-based; linear warm-up from lr/10, then cosine to 0
            if step < warmup:
                return s.lr * (0.1 + 0.9 * step / warmup)
            return 0.5 * s.lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

        report_at = sorted({max(1, round(total * (k + 1) / s.reports)) for k in range(s.reports)})
        history: list[tuple[int, float]] = []
        train_seconds = eval_seconds = train_cpu_seconds = 0.0
        accuracy, pruned, loss_v, step = 0.0, False, float("nan"), 0
        check_every = 1 if dev.type == "cpu" else 10  # a .item() per step would stall the GPU queue
        perm = torch.empty(0, dtype=torch.long)
        model.train()
        t0, c0 = time.perf_counter(), time.process_time()
        for step in range(1, total + 1):
            pos = (step - 1) % per_epoch
            if pos == 0:
                perm = torch.randperm(n_train, generator=gen)
            idx = perm[pos * batch:(pos + 1) * batch].to(dev)
            x = _batch(p, tx, idx, flip=s.augment, gen=gen, channels_last=s.channels_last)
            for group in opt.param_groups:
                group["lr"] = lr_at(step - 1)
            loss = loss_fn(model(x), ty[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % check_every == 0 or step == total or step in report_at:
                loss_v = float(loss.detach())
                if not math.isfinite(loss_v):
                    raise TrainingDivergedError(
                        f"config {cfg.to_string()}: training loss became {loss_v} at step {step}/{total} "
                        f"(lr {s.lr}, seed {seed}); the candidate is recorded as failed")
            if progress is not None:
                progress(step, total)
            if step in report_at:
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                t1 = time.perf_counter()
                train_seconds += t1 - t0
                train_cpu_seconds += time.process_time() - c0
                if s.bn_recalibration:
                    # A fresh stream each time: the result does not depend on how many reports came before,
                    # and the training batches (``gen``) are untouched.
                    bn_gen = torch.Generator().manual_seed(seed + 0x5EED)
                    _recalibrate_bn(model, p, tx, batches=s.bn_recalibration, batch=batch, gen=bn_gen,
                                    channels_last=s.channels_last)
                accuracy = _evaluate(model, p, vx, vy, channels_last=s.channels_last)
                history.append((step, accuracy))
                t0, c0 = time.perf_counter(), time.process_time()
                eval_seconds += t0 - t1
                if callback is not None and callback(step, accuracy) and step < total:
                    pruned = True
                    break
    finally:
        torch.set_num_threads(old_threads)
    params = sum(q.numel() for q in model.parameters())
    return ProxyResult(
        accuracy=accuracy, pruned=pruned, steps=step, total_steps=total, images_seen=step * batch,
        train_seconds=train_seconds, train_cpu_seconds=train_cpu_seconds, images_per_second=step * batch / max(train_seconds, 1e-9),
        eval_seconds=eval_seconds, prepare_seconds=prepare_seconds, history=tuple(history), final_loss=loss_v,
        params=params, seed=seed, device=str(dev), threads=threads, config_hash=cfg.hash(), data=dict(p.data),
        settings=s.to_dict(),
    )


# ----------------------------------------------------------------------------------------- zero-cost proxies
def zero_cost_score(
    config: "ArchConfig | Mapping[str, Any] | str",
    *,
    data: "Dataset | DataSpec | str" = "bundled",
    settings: ProxySettings = PROXY_PRESETS["quick"],
    method: Literal["naswot", "synflow"] = "naswot",
    batch_size: int = 64,
    seed: int = 0,
) -> float:
    """A training-free score of ``config`` at initialisation (higher = predicted more accurate).

    ``naswot`` (Mellor et al., 2021): log-determinant of the kernel of binary ReLU activation codes over one
    batch of training images; networks whose ReLUs separate the images better score higher. ``synflow``
    (Tanaka et al., 2020): log of the summed |θ·∂R/∂θ| for R = sum of the output of the network with all
    weights made positive, on an all-ones input (data-independent; float64 to avoid overflow).

    Args:
        config: an :class:`ArchConfig`, its dict form, a JSON path or a preset name.
        data: as for :func:`proxy_train` (``settings`` gives the resolution, stem and split).
        settings: the resolution, stem and split to score under.
        method: ``"naswot"`` or ``"synflow"``.
        batch_size: images in the batch (NASWOT's kernel is batch_size²).
        seed: seeds weight init and the batch drawn.

    Returns:
        The score (``-inf`` if NASWOT's kernel is singular).

    Raises:
        UsageError: unknown method or bad batch size.
        DataError / ConfigError: as for :func:`proxy_train`.
    """
    import torch
    from torch import nn

    from nas.builder import build_model

    if method not in ZERO_COST_METHODS:
        raise UsageError(f"--zero-cost {method!r}: unknown; choose one of {list(ZERO_COST_METHODS)}")
    if not isinstance(batch_size, int) or batch_size < 2:
        raise UsageError(f"batch_size={batch_size!r}: must be an integer of at least 2")
    cfg = load_config(config)
    s = settings
    p = _prepare(_resolve_data(data, s.resolution), s.resolution, s.val_size, s.train_size, s.split_seed)
    if len(p.train_y) < batch_size:
        raise DataError(f"{p.data['source']}: {len(p.train_y)} training images, fewer than batch_size={batch_size}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg, p.num_classes, in_channels=p.channels, stem=s.stem)
    gen = torch.Generator().manual_seed(seed)
    if method == "synflow":
        return _synflow(model, p.channels, s.resolution)
    idx = torch.randperm(len(p.train_y), generator=gen)[:batch_size]
    x = _batch(p, p.train_x, idx, flip=False, gen=None, channels_last=False)
    kernel = torch.zeros(batch_size, batch_size, dtype=torch.float64)

    def hook(_m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        codes = (out.detach().flatten(1) > 0).double()
        kernel.add_(codes @ codes.t()).add_((1 - codes) @ (1 - codes).t())  # Hamming agreement

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        model.train()  # batch statistics: at init the running stats are 0/1 and carry no information
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if float(sign) > 0 else float("-inf")


def _synflow(model, channels: int, resolution: int) -> float:
    import torch

    model = model.double().eval()  # eval: BN at init is the identity (mean 0, var 1), as the method assumes
    with torch.no_grad():
        for q in model.state_dict().values():
            if q.is_floating_point():
                q.abs_()
    model.zero_grad()
    out = model(torch.ones(1, channels, resolution, resolution, dtype=torch.float64))
    out.sum().backward()
    total = sum(float((q.detach() * q.grad).abs().sum()) for q in model.parameters() if q.grad is not None)
    return math.log(total) if total > 0 else float("-inf")
