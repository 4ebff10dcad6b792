"""Fast Geometric Ensembling (Garipov et al. 2018, Sec. 4) and its equal-budget baselines.

A cyclic schedule is data: the LR as a function of the position p in [0, 1] inside a cycle,
where in the cycle its iterations sit, the position at which a member is snapshotted, and
whether every cycle restarts from fresh weights. `CYCLES.get(name)(alpha1, alpha2)` returns a
`CycleSchedule`:

- `fge`: triangle alpha1 -> alpha2 (p = 1/2) -> alpha1, snapshot at the LR minimum, p = 1/2.
  Iteration i (counted from 1) of a cycle of n iterations sits at the paper's
  t(i) = (mod(i - 1, n) + 1) / n: the cycle's first step is already below alpha1, the step that
  ends the cycle's first half takes exactly alpha2 (the snapshot follows it), the last takes alpha1.
- `sse`: Snapshot Ensembles (Huang et al. 2017): cosine alpha1 -> 0 restarted every cycle, with
  Huang et al.'s mod(i - 1, n) / n (the first step takes alpha1), snapshot at the end of each cycle.
- `independent`: every cycle re-initialises the network and trains it with the module's own
  recipe (`optim.lr`, `optim.schedule`) restarted over the cycle, snapshot at the end: an ensemble of
  independently trained networks (alpha1/alpha2 unused).

The ensemble predicts the mean of its members' softmax probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_papers.registry import Registry

CYCLES = Registry("ensemble schedule")


def triangle_lr(position: float, alpha1: float, alpha2: float) -> float:
    """FGE's per-iteration LR: alpha1 at p = 0, linear to alpha2 at p = 1/2, back to alpha1 at p = 1."""
    p = position % 1.0
    if p <= 0.5:
        return (1 - 2 * p) * alpha1 + 2 * p * alpha2
    return (2 - 2 * p) * alpha2 + (2 * p - 1) * alpha1


@dataclass(frozen=True)
class CycleSchedule:
    lr: Optional[Callable[[float], float]]  # position in the cycle, [0, 1] -> LR; None: normal recipe
    snapshot_at: float  # position of the snapshot (0.5 = middle, 1.0 = end of the cycle)
    restart: bool = False  # re-initialise the network at the start of every cycle
    step_offset: int = 0  # 1: the k-th step (from 0) of a cycle sits at (k + 1) / n, as in FGE's t(i)

    def position(self, step: int, length: int) -> float:
        """Position in the cycle of step `step` (0-based, counted from the first cycle) of `length`-step cycles."""
        return (step % length + self.step_offset) / length

    def snapshot_epoch(self, cycle_epochs: int) -> int:
        """0-based epoch inside a cycle at whose end the member is taken."""
        e = self.snapshot_at * cycle_epochs
        if e != int(e) or e < 1:
            raise ValueError(f"a snapshot at {self.snapshot_at:g} of a {cycle_epochs}-epoch cycle does not "
                             "fall on an epoch boundary; FGE needs an even cycle length, e.g. cycle_epochs=2")
        return int(e) - 1


@CYCLES.register("fge")
def fge_cycle(alpha1: float, alpha2: float) -> CycleSchedule:
    return CycleSchedule(lr=lambda p: triangle_lr(p, alpha1, alpha2), snapshot_at=0.5, step_offset=1)


@CYCLES.register("sse")
def snapshot_cycle(alpha1: float, alpha2: float = 0.0) -> CycleSchedule:
    # Huang et al.'s shifted cosine anneals to 0 before every restart; alpha2 is not used.
    return CycleSchedule(lr=lambda p: 0.5 * alpha1 * (1 + math.cos(math.pi * (p % 1.0))), snapshot_at=1.0)


@CYCLES.register("independent")
def independent_cycle(alpha1: float = 0.0, alpha2: float = 0.0) -> CycleSchedule:
    return CycleSchedule(lr=None, snapshot_at=1.0, restart=True)


class ProbabilityEnsemble:
    """Running mean of member softmax probabilities over a fixed evaluation set."""

    def __init__(self):
        self.total: Tensor | None = None  # (N, C) float64 sum of member probabilities
        self.members = 0

    def add(self, probs: Tensor) -> None:
        probs = probs.detach().double().cpu()
        self.total = probs.clone() if self.total is None else self.total + probs
        self.members += 1

    @property
    def probs(self) -> Tensor:
        if self.total is None:
            raise ValueError("the ensemble has no members yet")
        return self.total / self.members

    def metrics(self, targets: Tensor) -> dict[str, float]:
        """Accuracy and NLL of the ensemble prediction."""
        return probability_metrics(self.probs, targets)

    def state_dict(self) -> dict:
        return {"total": self.total, "members": self.members}

    def load_state_dict(self, state: dict) -> None:
        self.total, self.members = state["total"], state["members"]


def probability_metrics(probs: Tensor, targets: Tensor) -> dict[str, float]:
    """acc and NLL (-mean log p(y|x)) of class probabilities (N, C)."""
    targets = targets.cpu()
    p_true = probs.gather(1, targets.view(-1, 1)).squeeze(1).clamp_min(1e-12)
    return {"acc": (probs.argmax(1) == targets).double().mean().item(), "nll": -p_true.log().mean().item()}


@torch.no_grad()
def predict_probs(net: nn.Module, batches: Sequence[tuple[Tensor, Tensor]], device=None) -> Tensor:
    """Softmax probabilities (N, C) of `net` in eval mode over `batches`."""
    was_training = net.training
    net.eval()
    out = [F.softmax(net(x.to(device) if device is not None else x).float(), dim=-1) for x, _ in batches]
    net.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def ensemble_predict(members: Sequence[nn.Module], x: Tensor) -> Tensor:
    """The ensemble's prediction for `x`: the mean of the members' softmax probabilities."""
    probs = []
    for m in members:
        was_training = m.training
        m.eval()
        probs.append(F.softmax(m(x).float(), dim=-1))
        m.train(was_training)
    return torch.stack(probs).mean(0)
