"""The one training loop: shared by :func:`~nas.training.proxy.proxy_train` and :func:`~nas.training.train.train`.

A run is built once (:func:`build_run`: seeded weights, the tiny-map fast path, channels-last, parameter groups,
the optimizer and its warm-up + cosine schedule) and then stepped in chunks (:func:`run_steps`: between two
evaluations for the proxy, one epoch for full training), with a divergence check on the loss; :func:`evaluate`
and :func:`recalibrate_bn` measure it. Callers wrap the whole run in :func:`session`, which fixes the threads
and seeds torch's global RNG without disturbing the caller's.

Choices, and why:

* **Optimizer.** SGD with Nesterov momentum 0.9 (ShuffleNetV2's own recipe, with no per-parameter state that
  would need its own warm-up in runs of a few hundred steps), or AdamW for the proxy. Weight decay applies to
  conv/linear weights only, not BN or biases.
* **Schedule.** A linear warm-up from lr/10 to lr, then cosine to 0, stepped per iteration by a ``LambdaLR``
  (its state is one step counter, which a checkpoint stores).
* **Determinism.** One seed drives weight init, batch order and flips (a private generator; the caller's
  global RNG state is restored). On CPU with a fixed thread count the same seed gives the same weights.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Mapping

from nas.arch import ArchConfig
from nas.errors import BackendUnavailableError, TrainingDivergedError, UsageError
from nas.training.fastpath import use_tiny_map_path
from nas.training.pipeline import Prepared, make_batch

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["Recipe", "Run", "torch_device", "session", "lr_factor", "build_run", "run_steps", "evaluate",
           "recalibrate_bn", "EVAL_BATCH"]

EVAL_BATCH = 500  # images per forward pass in evaluation: bounds memory; eval-mode BN makes it result-neutral
GPU_CHECK_EVERY = 10  # steps between loss checks on a GPU: a .item() per step would stall its queue
WARMUP_START = 0.1  # the warm-up ramps the learning rate linearly from lr/10 (ShuffleNetV2's recipe starts low)


def torch_device(device: str) -> "torch.device":
    """``device`` as a ``torch.device``, refused unless it is the CPU or an available CUDA device.

    Raises:
        UsageError: not a torch device, or neither cpu nor cuda (``field="device"``).
        BackendUnavailableError: CUDA asked for but not available here (``field="device"``).
    """
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"device {device!r} is not a torch device; use cpu or cuda", field="device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device {device}: CUDA is not available here; use cpu", field="device")
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"device {device!r}: only cpu and cuda are supported", field="device")
    return dev


@contextlib.contextmanager
def session(*, seed: int, threads: int | None) -> Iterator[int]:
    """Run the body with ``threads`` torch threads and torch's global RNG seeded with ``seed``; restore both.

    Yields:
        The thread count in effect (``threads``, or torch's current setting when None).
    """
    import torch

    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's global RNG state is left as it was
            torch.manual_seed(seed)
            yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)


@dataclass(frozen=True)
class Recipe:
    """What the loop needs from a proxy's or a full training's settings.

    Attributes:
        total_steps / warmup_steps: optimizer steps of the whole run and of its linear warm-up.
        batch / per_epoch: images per step and steps per pass over the training images.
        the rest: as in :class:`~nas.training.proxy.ProxySettings` and :class:`~nas.training.train.TrainSettings`.
    """

    stem: Literal["imagenet", "cifar"]
    optimizer: Literal["sgd", "adamw"]
    lr: float
    momentum: float
    weight_decay: float
    label_smoothing: float
    augment: bool
    channels_last: bool
    tiny_map_path: bool
    total_steps: int
    warmup_steps: int
    batch: int
    per_epoch: int


@dataclass(eq=False)
class Run:
    """A built run: the network, its optimizer and schedule, the data on its device and the batch stream."""

    config: ArchConfig
    recipe: Recipe
    seed: int
    device: "torch.device"
    data: Prepared
    model: Any
    optimizer: Any
    scheduler: Any
    loss_fn: Any
    gen: "torch.Generator"  # batch order and flips
    perm: "torch.Tensor | None" = None  # this pass's batch order (drawn at the first step of each pass)


def lr_factor(step: int, *, warmup: int, total: int) -> float:
    """The learning rate after ``step`` optimizer steps, as a fraction of the peak.

    A linear ramp from :data:`WARMUP_START` over ``warmup`` steps, then a cosine from 1 to 0 at ``total``.
    """
    if step < warmup:
        return WARMUP_START + (1 - WARMUP_START) * step / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def build_run(cfg: ArchConfig, data: Prepared, recipe: Recipe, *, seed: int, device: "torch.device",
              state: Mapping[str, Any] | None = None) -> Run:
    """Build the seeded network, its optimizer and schedule (call inside :func:`session`).

    Args:
        cfg: the architecture.
        data: the prepared data, already on ``device``.
        recipe: the optimizer, schedule and model options.
        seed: seeds the batch order and flips (weights come from the global RNG that :func:`session` seeded).
        device: where the model runs.
        state: a checkpoint to continue: ``model`` (plain ``build_model`` keys), ``optimizer``, ``scheduler``
            and ``generator`` states.

    Returns:
        A :class:`Run` ready for :func:`run_steps`.
    """
    import torch
    from torch import nn

    from nas.builder import build_model

    r = recipe
    model = build_model(cfg, data.num_classes, in_channels=data.channels, stem=r.stem)
    if state is not None:
        model.load_state_dict(state["model"])  # plain keys: loaded before the tiny-map wrappers go in
    if r.tiny_map_path and device.type == "cpu":
        use_tiny_map_path(model)  # same parameters, same order: the optimizer state still lines up
    model = model.to(device)
    if r.channels_last:
        model = model.to(memory_format=torch.channels_last)
    decay = [q for q in model.parameters() if q.ndim > 1]
    no_decay = [q for q in model.parameters() if q.ndim <= 1]
    groups = [{"params": decay, "weight_decay": r.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if r.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=r.lr, momentum=r.momentum, nesterov=True)
    else:
        opt = torch.optim.AdamW(groups, lr=r.lr, betas=(r.momentum, 0.999))

    def factor(step: int) -> float:  # a plain function: LambdaLR then stores no lambda state in checkpoints
        return lr_factor(step, warmup=r.warmup_steps, total=r.total_steps)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    gen = torch.Generator().manual_seed(seed)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
    return Run(config=cfg, recipe=r, seed=seed, device=device, data=data, model=model, optimizer=opt,
               scheduler=sched, loss_fn=nn.CrossEntropyLoss(label_smoothing=r.label_smoothing), gen=gen)


def run_steps(run: Run, first: int, last: int, *, on_step: Callable[[int], None] | None = None,
              hint: str = "") -> "tuple[torch.Tensor, float]":
    """Optimizer steps ``first..last`` (1-based, inclusive) of ``run``.

    The loss is checked every step on CPU (every :data:`GPU_CHECK_EVERY` on a GPU) and at ``last``.

    Args:
        run: from :func:`build_run`.
        first / last: the steps to do; a pass over the training images starts at every ``per_epoch``-th.
        on_step: called with the step number after each step (progress displays).
        hint: appended to the divergence message (what the caller does about it).

    Returns:
        The summed loss of these steps (a tensor on the device) and the last checked loss.

    Raises:
        TrainingDivergedError: the loss became NaN or infinite (``field="lr"``).
    """
    import torch

    r, p, model, opt = run.recipe, run.data, run.model, run.optimizer
    check_every = 1 if run.device.type == "cpu" else GPU_CHECK_EVERY
    loss_sum = torch.zeros((), device=run.device)
    loss_v = float("nan")
    model.train()
    for step in range(first, last + 1):
        pos = (step - 1) % r.per_epoch
        if pos == 0 or run.perm is None:
            run.perm = torch.randperm(len(p.train_y), generator=run.gen)
        idx = run.perm[pos * r.batch:(pos + 1) * r.batch].to(run.device)
        x = make_batch(p, p.train_x, idx, flip=r.augment, gen=run.gen, channels_last=r.channels_last)
        loss = run.loss_fn(model(x), p.train_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run.scheduler.step()
        loss_sum += loss.detach()
        if step % check_every == 0 or step == last:
            loss_v = float(loss.detach())
            if not math.isfinite(loss_v):
                raise TrainingDivergedError(
                    f"config {run.config.to_string()}: training loss became {loss_v} at step {step}/"
                    f"{r.total_steps} (lr {r.lr}, seed {run.seed}){hint}", field="lr")
        if on_step is not None:
            on_step(step)
    return loss_sum, loss_v


def recalibrate_bn(run: Run, *, batches: int, gen: "torch.Generator") -> None:
    """Re-estimate BN running statistics from ``batches`` training batches with the current weights.

    After a few hundred steps the exponential running averages still mix in statistics of much earlier
    weights, and eval-mode accuracy can sit at chance while the training loss is already low; an exact
    average over ``batches`` fresh batches (drawn from ``gen``) fixes that for about ``batches`` forward passes.
    """
    import torch
    from torch import nn

    p, model, tx = run.data, run.model, run.data.train_x
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: an exact mean over the batches below
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            idx = torch.randint(0, tx.shape[0], (run.recipe.batch,), generator=gen).to(tx.device)
            model(make_batch(p, tx, idx, flip=False, gen=None, channels_last=run.recipe.channels_last))
    for m, mom in zip(bns, saved):
        m.momentum = mom


def evaluate(model: Any, p: Prepared, x_u8: "torch.Tensor", y: "torch.Tensor", *, channels_last: bool) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` (eval mode) on cached images ``x_u8`` with labels ``y``."""
    import torch

    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(y), EVAL_BATCH):
            idx = torch.arange(i, min(i + EVAL_BATCH, len(y)), device=x_u8.device)
            logits = model(make_batch(p, x_u8, idx, flip=False, gen=None, channels_last=channels_last))
            correct += int((logits.argmax(1) == y[idx]).sum())
    model.train()
    return correct / len(y)
