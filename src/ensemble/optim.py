"""Optimizers and learning-rate schedules, built from a member's `TrainConfig`."""

from __future__ import annotations

import math

import torch

from .config import TrainConfig

__all__ = ["make_optimizer", "make_scheduler"]


def make_optimizer(model, t: TrainConfig) -> torch.optim.Optimizer:
    """The recipe's optimizer; biases and LayerNorm weights are exempt from weight decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # One fused kernel per step instead of a loop over parameters (CPU and CUDA, torch >= 2.4).
    fused = {"fused": True} if _fused_supported(decay + no_decay) else {}
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=t.lr, betas=t.betas, eps=t.eps, **fused)
    if t.optimizer == "adam":
        return torch.optim.Adam(groups, lr=t.lr, betas=t.betas, eps=t.eps, **fused)
    if t.optimizer == "adamax":
        return torch.optim.Adamax(groups, lr=t.lr, betas=t.betas, eps=t.eps)
    if t.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=t.lr, eps=t.eps, momentum=t.momentum)
    return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum)


def _fused_supported(params: list) -> bool:
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # pragma: no cover - older torch
        return False
    devices = {p.device.type for p in params}
    return bool(params) and devices <= set(_get_fused_kernels_supported_devices()) and all(
        p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in params)


def make_scheduler(optimizer, t: TrainConfig, steps_per_epoch: int, ticks_per_step: int = 1) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning-rate multiplier per optimizer step: linear warmup, then the recipe's shape.

    `step` and `exponential` change the rate once per epoch (every `step_size` epochs for step).
    `ticks_per_step`: how often the scheduler is stepped per optimizer step (Accelerate steps a
    prepared one once per process), so that any number of processes follows one schedule.

    Example:
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> sched = make_scheduler(opt, TrainConfig(scheduler="step", gamma=0.5, epochs=2), 10)
        >>> [round(sched.lr_lambdas[0](s), 3) for s in (0, 9, 10, 19)]
        [1.0, 1.0, 0.5, 0.5]
    """
    total = max(1, steps_per_epoch * t.epochs)
    warmup = int(round(t.warmup_ratio * total))

    def factor(tick: int) -> float:
        step = tick // ticks_per_step
        if step < warmup:
            return (step + 1) / warmup
        epoch = step // steps_per_epoch
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if t.scheduler == "linear":
            return max(0.0, 1.0 - progress)
        if t.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if t.scheduler == "step":
            return t.gamma ** (epoch // t.step_size)
        if t.scheduler == "exponential":
            return t.gamma ** epoch
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
