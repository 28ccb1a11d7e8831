"""Optimiser and learning-rate schedule of a config (SGD, linear warmup, then step or cosine).

The schedule is computed per iteration, as MMAction2 0.x did for these configs: the "regular"
rate (step decay at epoch milestones, or cosine annealing over the whole run to 0) is multiplied,
during warmup, by a factor rising linearly from ``warmup_ratio`` to 1.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..configs import OptimConfig, ScheduleConfig


def build_optimizer(model: nn.Module, optim: OptimConfig, lr: float,
                    fused: bool = False) -> torch.optim.SGD:
    """SGD over the trainable parameters; ``optim.lr_mult`` prefixes get their own group at
    ``lr * factor`` (the scheduler scales every group by the same factor). The first group is
    the one at ``lr``, the rate the log reports. ``fused``: one fused kernel per step instead of
    the multi-tensor (foreach) implementation; the same update up to rounding."""
    groups: dict[float, list[nn.Parameter]] = {1.0: []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            factor = next((f for prefix, f in optim.lr_mult if name.startswith(prefix)), 1.0)
            groups.setdefault(factor, []).append(p)
    return torch.optim.SGD([{"params": ps, "lr": lr * f} for f, ps in groups.items() if ps], lr=lr,
                           momentum=optim.momentum, weight_decay=optim.weight_decay,
                           nesterov=optim.nesterov, **({"fused": True, "foreach": False} if fused else {}))


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict(state)``, keeping this optimiser's implementation (fused or
    not): a checkpoint written by a fused GPU run resumes on a CPU and the other way round."""
    keep = [{k: g.get(k) for k in ("fused", "foreach")} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, impl in zip(optimizer.param_groups, keep):
        group.update(impl)


def lr_factor(iteration: int, iters_per_epoch: int, schedule: ScheduleConfig) -> float:
    """Multiplier of the base learning rate at ``iteration`` (0-based, counted over the run)."""
    total = max(1, schedule.epochs * iters_per_epoch)
    if schedule.policy == "step":
        epoch = iteration // max(1, iters_per_epoch)
        regular = schedule.gamma ** sum(epoch >= m for m in schedule.milestones)
    elif schedule.policy == "cosine":
        regular = 0.5 * (1 + math.cos(math.pi * min(iteration, total) / total))
    else:
        raise ValueError(f"schedule.policy must be 'step' or 'cosine', got {schedule.policy!r}")
    warmup = schedule.warmup_iters or round(schedule.warmup_epochs * iters_per_epoch)
    if iteration < warmup:
        regular *= 1 - (1 - schedule.warmup_ratio) * (1 - iteration / warmup)
    return regular


def build_scheduler(optimizer: torch.optim.Optimizer, iters_per_epoch: int,
                    schedule: ScheduleConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_factor(it, iters_per_epoch, schedule))
