"""Per-member losses, correct counts and their epoch sums: one metrics path for K = 1 and K members.

A module that trains K networks at once (K = 1 for one network) computes `(K,)` losses and correct
counts on every minibatch (`member_stats`); `MemberSums` adds them up over an epoch on the device,
and `log_members` logs the epoch values as `<stage>/<name>` (the member mean) and, for K > 1,
`pop/<k>/<stage>/<name>` (every member).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch.func import vmap


def member_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """logits (K, B, C), y (B,) shared or (K, B) per member -> (K,) mean cross-entropy of each member."""
    return vmap(F.cross_entropy, in_dims=(0, 0 if y.dim() == 2 else None))(logits, y)


def member_stats(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(K,) mean cross-entropy (differentiable) and (K,) correct counts from logits (K, B, C); y is
    (B,), or (B, K) when every member has its own labels (MemberLabelsDataModule)."""
    if y.dim() == 2:
        y = y.T  # (K, B)
    # one member: plain cross-entropy (vmap costs host time the single-model loop does not pay)
    single = len(logits) == 1 and y.dim() == 1
    losses = F.cross_entropy(logits[0], y)[None] if single else member_cross_entropy(logits, y)
    return losses, (logits.argmax(-1) == y).sum(-1)


def ensemble_stats(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed NLL and correct count of the members' averaged prediction, p = mean_k softmax(logits_k).

    logits (K, B, C), y (B,). log p is computed as logsumexp_k log_softmax - log K (no underflow);
    by Jensen's inequality its NLL never exceeds the members' mean NLL.
    """
    log_p = torch.logsumexp(logits.float().log_softmax(-1), dim=0) - math.log(logits.shape[0])  # (B, C)
    return -log_p.gather(1, y[:, None]).sum(), (log_p.argmax(-1) == y).sum()


class MemberSums:
    """Per-stage device sums of the members' losses and correct counts, read once per epoch.

    Training adds whole calls (`add_steps`: loss summed over the call's steps, one mean per step);
    evaluation adds minibatches (`add_batch`: loss weighted by the minibatch size; `add_ensemble`:
    the members' averaged prediction). `pop(stage)` returns `{"loss": (K,), "acc": (K,)}` and
    clears the stage.
    """

    def __init__(self) -> None:
        self._sums: dict[str, list] = {}

    def add_steps(self, stage: str, loss_sum: torch.Tensor, correct: torch.Tensor, samples: int,
                  steps: int) -> None:
        sums = self._sums.setdefault(stage, [torch.zeros_like(loss_sum), torch.zeros_like(correct), 0, 0])
        sums[0] += loss_sum
        sums[1] += correct
        sums[2] += samples
        sums[3] += steps

    def add_batch(self, stage: str, losses: torch.Tensor, correct: torch.Tensor, samples: int) -> None:
        sums = self._sums.setdefault(stage, [torch.zeros_like(losses), torch.zeros_like(losses), 0, 0])
        sums[0] += losses * samples
        sums[1] += correct
        sums[2] += samples
        sums[3] += samples  # the loss is a per-sample mean here

    def add_ensemble(self, stage: str, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Adds the members' averaged prediction on one minibatch (logits (K, B, C), y (B,))."""
        nll, correct = ensemble_stats(logits, y)
        sums = self._sums.setdefault(f"{stage}/ensemble", [torch.zeros_like(nll), torch.zeros_like(correct), 0])
        sums[0] += nll
        sums[1] += correct
        sums[2] += len(y)

    def pop_ensemble(self, stage: str) -> Optional[dict[str, torch.Tensor]]:
        """`{"ensemble_nll", "ensemble_acc"}` of the stage's averaged predictions, if any; clears them."""
        sums = self._sums.pop(f"{stage}/ensemble", None)
        if sums is None or sums[2] == 0:
            return None
        return {"ensemble_nll": sums[0] / sums[2], "ensemble_acc": sums[1].float() / sums[2]}

    def pop(self, stage: str) -> Optional[dict[str, torch.Tensor]]:
        """The stage's epoch values (None when nothing was added), and a fresh start for it."""
        sums = self._sums.pop(stage, None)
        if sums is None or sums[2] == 0:
            return None
        return {"loss": sums[0] / sums[3], "acc": sums[1] / sums[2]}


def log_members(module, stage: str, values: dict[str, torch.Tensor], means: Sequence[str]) -> None:
    """Logs `<stage>/<name>` as the member mean for names in `means`; with K > 1 also every
    member's value as `pop/<k>/<stage>/<name>`."""
    for name, per_member in values.items():
        if name in means:
            module.log(f"{stage}/{name}", per_member.mean(), prog_bar=stage == "val")
        if module.num_members > 1:
            for k in range(module.num_members):
                module.log(f"pop/{k}/{stage}/{name}", per_member[k])
