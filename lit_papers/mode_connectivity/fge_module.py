"""`FGEModule`: Fast Geometric Ensembling and its equal-budget baselines inside one `fit`.

Epochs [0, pretrain_epochs) train the network normally (`lr`, `lr_schedule`), unless
`checkpoint` gives a trained `ClassifierModule` to start from. The remaining epochs are cycles of
`cycle_epochs` epochs following the cyclic schedule `schedule` (see `fge.CYCLES`), changed every
iteration; at each cycle's snapshot point the network becomes an ensemble member. After every new
member the ensemble (mean of member softmax probabilities) is evaluated on the test set and
`fge/ensemble_acc`, `fge/ensemble_nll`, `fge/member_acc`, `fge/best_member_acc` are logged.

Baselines at an equal budget of B epochs: `schedule: sse, pretrain_epochs: 0` (Snapshot
Ensembles) and `schedule: independent, pretrain_epochs: 0, cycle_epochs: B` (one independent
network; cycle_epochs B/M gives M independent networks of B/M epochs each).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Optional

import torch

from lit_papers.core import ClassifierModule, save_figure
from lit_papers.core.classifier import parent_args
from lit_papers.core.optim import SCHEDULES, build_optimizer

from .batchnorm import has_batchnorm, recompute_bn
from .curve_module import load_endpoint
from .fge import CYCLES, ProbabilityEnsemble, ensemble_predict, predict_probs, probability_metrics
from .figures import ensemble_figure


class FGEModule(ClassifierModule):
    """Cyclic-LR ensembling of one network (all ClassifierModule arguments apply to pretraining).

    Args:
        schedule: `fge` (triangle, snapshot at the LR minimum), `sse` or `independent`.
        alpha1, alpha2: the cycle's largest and smallest LR (FGE: alpha1 at the cycle boundary,
            alpha2 in the middle).
        cycle_epochs: cycle length c in epochs (even for FGE); members = cycle epochs / c.
        pretrain_epochs: normal training before the first cycle (ignored with `checkpoint`).
        checkpoint: a trained ClassifierModule checkpoint (or state dict) to start the cycles from.
        bn_update: recompute exact BatchNorm statistics for each member before it is evaluated.
        keep_members: keep member weights (CPU) for `ensemble_forward` and in checkpoints.
    """

    test_after_fit = False  # the ensemble is evaluated on the test set after every member
    # No "best" checkpoint: the result is the ensemble at the end of fit (in last.ckpt), not the
    # single network of the epoch with the highest validation accuracy.
    checkpoint_monitor = None

    def __init__(self, arch: str = "mlp", arch_kwargs: Optional[dict] = None,
                 num_classes: Optional[int] = None, input_shape: Optional[Sequence[int]] = None,
                 optimizer: str = "sgd", lr: float = 0.05, momentum: float = 0.9,
                 weight_decay: float = 5e-4, nesterov: bool = False, lr_schedule: str = "swa_linear",
                 milestones: Sequence[float] = (0.5, 0.75), gamma: float = 0.1,
                 schedule: str = "fge", alpha1: float = 0.05, alpha2: float = 0.0005, cycle_epochs: int = 2,
                 pretrain_epochs: int = 10, checkpoint: Optional[str] = None, bn_update: bool = False,
                 keep_members: bool = True):
        cycle = CYCLES.get(schedule)(alpha1, alpha2)  # fails fast on the name
        if cycle_epochs < 1:
            raise ValueError(f"cycle_epochs must be >= 1, got {cycle_epochs}")
        cycle.snapshot_epoch(cycle_epochs)  # FGE needs an even cycle
        if cycle.restart and (pretrain_epochs > 0 or checkpoint is not None):
            raise ValueError("the `independent` schedule trains every member from scratch: "
                             "set pretrain_epochs: 0 and no checkpoint")
        if alpha1 <= 0 or alpha2 < 0:
            raise ValueError(f"need alpha1 > 0 and alpha2 >= 0, got {alpha1}, {alpha2}")
        super().__init__(**parent_args(ClassifierModule, locals()))
        self.cycle = cycle
        self.ensemble = ProbabilityEnsemble()
        self.members: list[dict[str, torch.Tensor]] = []  # CPU state dicts when keep_members
        self.history: list[dict[str, float]] = []  # metrics after each member

    def build_network(self):
        net = super().build_network()
        if self.hparams.checkpoint is not None:
            state = load_endpoint(self.hparams.checkpoint)
            missing, _ = net.load_state_dict(state, strict=False)
            if missing:
                raise ValueError(f"checkpoint {self.hparams.checkpoint!r} lacks {missing[:5]}: it must be a "
                                 f"run of the same `arch` ({self.hparams.arch}) and `arch_kwargs`")
        return net

    # -- epochs and LR -----------------------------------------------------------------------
    @property
    def pretrain(self) -> int:
        return 0 if self.hparams.checkpoint is not None else self.hparams.pretrain_epochs

    @property
    def num_members(self) -> int:
        return (self.trainer.max_epochs - self.pretrain) // self.hparams.cycle_epochs

    def on_fit_start(self) -> None:
        cycling = self.trainer.max_epochs - self.pretrain
        if cycling < self.hparams.cycle_epochs or cycling % self.hparams.cycle_epochs:
            raise ValueError(f"trainer.max_epochs - pretrain_epochs = {cycling} must be a positive multiple "
                             f"of cycle_epochs={self.hparams.cycle_epochs}")

    def lr_at(self, step: int, per_epoch: int) -> float:
        """The learning rate of optimizer step `step` (`per_epoch` steps per epoch)."""
        hp = self.hparams
        recipe = SCHEDULES.get(hp.lr_schedule)(milestones=hp.milestones, gamma=hp.gamma)
        pre = self.pretrain * per_epoch
        if step < pre:
            return hp.lr * recipe(step, pre)
        length = hp.cycle_epochs * per_epoch
        if self.cycle.lr is None:  # independent members: the normal recipe, restarted every cycle
            return hp.lr * recipe((step - pre) % length, length)
        return self.cycle.lr(((step - pre) % length) / length)

    def configure_optimizers(self):
        hp = self.hparams
        opt = build_optimizer(hp.optimizer, self.parameters(), lr=hp.lr, momentum=hp.momentum,
                              weight_decay=hp.weight_decay, nesterov=hp.nesterov)
        per_epoch = max(int(self.trainer.estimated_stepping_batches) // max(self.trainer.max_epochs, 1), 1)
        # LambdaLR multiplies the base LR (hp.lr); the cycle sets absolute values, hence the division.
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: self.lr_at(step, per_epoch) / hp.lr)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _cycle_position(self, epoch: int) -> tuple[int, int]:
        """(cycle index, epoch inside the cycle) of a cycling epoch."""
        return divmod(epoch - self.pretrain, self.hparams.cycle_epochs)

    def on_train_epoch_start(self) -> None:
        epoch = self.current_epoch
        if not self.cycle.restart or epoch < self.pretrain:
            return
        cycle, inside = self._cycle_position(epoch)
        if inside == 0 and cycle > 0:
            # A new independent member: fresh weights, fresh optimizer state.
            with torch.random.fork_rng(devices=[]):
                # Derived from the run's seed, so different seeds give different ensembles.
                # (modulo 2**63: a 64-bit initial seed plus the offset would overflow manual_seed)
                torch.manual_seed((torch.initial_seed() + 10_000 * cycle) % 2**63)
                fresh = super().build_network()
            self.net.load_state_dict(fresh.state_dict())
            for opt in self.trainer.optimizers:
                opt.state.clear()

    # -- members -----------------------------------------------------------------------------
    def on_train_epoch_end(self) -> None:
        epoch = self.current_epoch
        if epoch < self.pretrain:
            return
        _, inside = self._cycle_position(epoch)
        if inside == self.cycle.snapshot_epoch(self.hparams.cycle_epochs):
            self.add_member()

    @torch.no_grad()
    def add_member(self) -> dict[str, float]:
        """Snapshot the current network, add its test probabilities to the ensemble, log metrics."""
        dm = self.trainer.datamodule
        if self.hparams.bn_update and has_batchnorm(self.net):
            recompute_bn(self.net, self.net, dm.train_dataloader())
        test = list(dm.test_dataloader())
        targets = torch.cat([y for _, y in test]).cpu()
        probs = predict_probs(self.net, test, device=self.device)
        self.ensemble.add(probs)
        if self.hparams.keep_members:
            self.members.append({k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()})
        member = probability_metrics(probs.double().cpu(), targets)
        ens = self.ensemble.metrics(targets)
        best = max([h["fge/member_acc"] for h in self.history] + [member["acc"]])
        metrics = {"fge/members": float(self.ensemble.members), "fge/member_acc": member["acc"],
                   "fge/member_nll": member["nll"], "fge/best_member_acc": best,
                   "fge/ensemble_acc": ens["acc"], "fge/ensemble_nll": ens["nll"]}
        self.history.append(metrics)
        for key, value in metrics.items():
            self.log(key, value)
        return metrics

    def on_train_end(self) -> None:
        if self.history:
            save_figure(self.trainer, ensemble_figure(self.history, self.hparams.schedule), "fge_ensemble")

    def member_networks(self) -> list[torch.nn.Module]:
        """The kept members as networks (eval mode)."""
        nets = []
        for state in self.members:
            net = copy.deepcopy(self.net)
            net.load_state_dict(state)
            nets.append(net.eval())
        return nets

    def ensemble_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Ensemble prediction: the mean of the members' softmax probabilities (N, classes)."""
        if not self.members:
            raise ValueError("the ensemble has no kept members (keep_members=False or no cycle finished)")
        return ensemble_predict(self.member_networks(), x)

    # -- checkpoints -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["fge"] = {"ensemble": self.ensemble.state_dict(), "history": list(self.history),
                             "members": self.members if self.hparams.keep_members else []}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("fge")
        if state:
            self.ensemble.load_state_dict(state["ensemble"])
            self.history = list(state["history"])
            self.members = list(state["members"])
