"""Optimizers and learning-rate schedules by name, and `Optim`: the settings group naming both."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Optional

import torch

from lit_papers.registry import Registry

from .settings import Group

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


@dataclass(frozen=True)
class Optim(Group):
    """The optimizer and its learning-rate schedule: `model.optim` of every module.

    Args:
        name: `sgd`, `adam` or `adamw`; lr, momentum, weight_decay, nesterov: its settings
            (momentum and nesterov apply to sgd only).
        schedule: `constant`, `cosine`, `step` (drops by `gamma` at each of `milestones`, fractions
            of training) or `swa_linear`: the factor multiplying lr, stepped every optimizer step.
    """

    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    schedule: str = "constant"
    milestones: Sequence[float] = (0.5, 0.75)
    gamma: float = 0.1

    def __post_init__(self):
        OPTIMIZERS.get(self.name), SCHEDULES.get(self.schedule)  # fail fast, listing the valid names
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be positive, got {self.lr}")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ValueError(f"optim.momentum and optim.weight_decay must be >= 0, "
                             f"got {self.momentum}, {self.weight_decay}")
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))

    def build(self, params: Iterable, **overrides) -> torch.optim.Optimizer:
        """The optimizer over `params` (a list of parameters or of param groups); `overrides`
        replace fields (e.g. `weight_decay=0.0` where the loss carries the decay)."""
        s = {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
             "nesterov": self.nesterov, **overrides}
        return build_optimizer(self.name, params, **s)

    def factor(self) -> Callable[[int, int], float]:
        """The schedule as factor(step, total_steps) multiplying lr."""
        return SCHEDULES.get(self.schedule)(milestones=self.milestones, gamma=self.gamma)

    def scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int):
        """A per-step LambdaLR following the schedule over `total_steps` optimizer steps."""
        return build_scheduler(self.schedule, optimizer, total_steps, self.milestones, self.gamma)


def configure_from_hparams(module, total_steps: Optional[Callable[[], int]] = None) -> torch.optim.Optimizer | dict:
    """`configure_optimizers`'s return for a LightningModule whose hparams hold an `optim` group: the
    optimizer over all parameters and, unless the schedule is constant, its per-step schedule over the
    whole fit. `total_steps` gives the fit's optimizer steps (default: Lightning's
    `estimated_stepping_batches`, one step per `training_step`)."""
    optim = Optim.of(module.hparams.optim)
    opt = optim.build(module.parameters())
    if optim.schedule == "constant":
        return opt
    total = total_steps() if total_steps is not None else max(int(module.trainer.estimated_stepping_batches), 1)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": optim.scheduler(opt, total), "interval": "step"}}
