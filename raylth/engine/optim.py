"""Optimizers and learning-rate schedules from a TrainSpec (stepped every iteration)."""

from __future__ import annotations

import math

import torch

from raylth.specs import TrainSpec


def make_optimizer(params, spec: TrainSpec, options: dict | None = None) -> torch.optim.Optimizer:
    """``options``: the kernel choice, e.g. {"fused": True} (FastPath.optimizer_options)."""
    fast = options if options is not None else {"foreach": True}
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov,
                               weight_decay=spec.weight_decay, **fast)
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay, **fast)


def lr_factor(spec: TrainSpec, steps_per_epoch: int):
    """step -> multiplier of spec.lr: linear warmup, then the schedule."""
    total = spec.duration.iterations(steps_per_epoch)
    warmup = spec.warmup.iterations(steps_per_epoch)
    milestones = sorted(m.iterations(steps_per_epoch) for m in spec.milestones)
    step_size = spec.step_size.iterations(steps_per_epoch) if spec.step_size else None

    def factor(step: int) -> float:
        scale = min(1.0, (step + 1) / warmup) if warmup else 1.0
        if spec.schedule == "cosine":
            span = max(1, total - warmup)
            progress = min(1.0, max(0, step - warmup) / span)
            return scale * 0.5 * (1 + math.cos(math.pi * progress))
        if spec.schedule == "multistep":
            return scale * spec.gamma ** sum(step >= m for m in milestones)
        if spec.schedule == "step":
            return scale * spec.gamma ** (step // step_size)
        return scale

    return factor


def make_scheduler(optimizer, spec: TrainSpec, steps_per_epoch: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(spec, steps_per_epoch))
