"""Optimizers and learning-rate schedules by name."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Optional

import torch

from lit_papers.registry import Registry

OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("lr_schedule")


@OPTIMIZERS.register("sgd")
def _sgd(params, lr, momentum=0.0, weight_decay=0.0, nesterov=False, **_):
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                           nesterov=nesterov and momentum > 0)


@OPTIMIZERS.register("adam")
def _adam(params, lr, weight_decay=0.0, **_):
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("adamw")
def _adamw(params, lr, weight_decay=0.0, **_):
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def build_optimizer(name: str, params: Iterable, lr: float, momentum: float = 0.0,
                    weight_decay: float = 0.0, nesterov: bool = False) -> torch.optim.Optimizer:
    """`name` in OPTIMIZERS (sgd, adam, adamw). Momentum/nesterov only apply to sgd."""
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr}")
    return OPTIMIZERS.get(name)(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                                nesterov=nesterov)


# Schedules are pure functions of progress: factor(step, total_steps) multiplies the base LR.
@SCHEDULES.register("constant")
def _constant(**_):
    return lambda step, total: 1.0


@SCHEDULES.register("cosine")
def _cosine(**_):
    return lambda step, total: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


@SCHEDULES.register("step")
def _step(milestones: Sequence[float] = (0.5, 0.75), gamma: float = 0.1, **_):
    # milestones are fractions of training (0.5 = halfway), so one schedule fits any budget.
    def factor(step, total):
        passed = sum(step >= m * total for m in milestones)
        return gamma**passed

    return factor


@SCHEDULES.register("swa_linear")
def _swa_linear(**_):
    # Garipov et al.'s schedule: 1.0 for the first half, linear down to 0.01 at 90%, then flat.
    def factor(step, total):
        t = step / max(total, 1)
        if t <= 0.5:
            return 1.0
        if t <= 0.9:
            return 1.0 - (t - 0.5) / 0.4 * 0.99
        return 0.01

    return factor


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, total_steps: int,
                    milestones: Sequence[float] = (0.5, 0.75), gamma: float = 0.1):
    """A per-step LambdaLR following schedule `name` over `total_steps` optimizer steps."""
    factor = SCHEDULES.get(name)(milestones=milestones, gamma=gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factor(step, total_steps))


def configure_from_hparams(module, total_steps: Optional[Callable[[], int]] = None) -> torch.optim.Optimizer | dict:
    """`configure_optimizers`'s return for a LightningModule whose hparams name `optimizer`, `lr`
    and optionally momentum, weight_decay, nesterov, `lr_schedule` (stepped every optimizer step
    over the whole fit), milestones and gamma. `total_steps` gives the fit's optimizer steps
    (default: Lightning's `estimated_stepping_batches`, one step per `training_step`)."""
    hp = module.hparams
    opt = build_optimizer(hp.optimizer, module.parameters(), lr=hp.lr, momentum=hp.get("momentum", 0.0),
                          weight_decay=hp.get("weight_decay", 0.0), nesterov=hp.get("nesterov", False))
    if hp.get("lr_schedule", "constant") == "constant":
        return opt
    total = total_steps() if total_steps is not None else max(int(module.trainer.estimated_stepping_batches), 1)
    sched = build_scheduler(hp.lr_schedule, opt, total, hp.get("milestones", (0.5, 0.75)), hp.get("gamma", 0.1))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
