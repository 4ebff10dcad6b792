"""`FGEModule`: Fast Geometric Ensembling and its equal-budget baselines inside one `fit`.

Epochs [0, pretrain_epochs) train the network normally (`optim.lr`, `optim.schedule`), unless
`checkpoint` gives a trained `ClassifierModule` to start from. The remaining epochs are cycles of
`cycle_epochs` epochs following the cyclic schedule `schedule` (see `fge.CYCLES`), changed every
iteration; at each cycle's snapshot point the network becomes an ensemble member. After every new
member the ensemble (mean of member softmax probabilities) is evaluated on the test set and
`fge/ensemble_acc`, `fge/ensemble_nll`, `fge/member_acc`, `fge/best_member_acc` are logged,
and on the validation split as `fge/val_ensemble_acc`, ... (for choosing hyper-parameters).

Baselines at an equal budget of B epochs: `schedule: sse, pretrain_epochs: 0` (Snapshot
Ensembles) and `schedule: independent, pretrain_epochs: 0, cycle_epochs: B` (one independent
network; cycle_epochs B/M gives M independent networks of B/M epochs each). `single_baseline:
true` also trains, in the same run, a copy of the initial network with the ordinary recipe (`optim.lr`,
`optim.schedule`) over all B epochs, on the same batches: the paper's equal-budget single network,
logged every epoch as `fge/single_acc`, `fge/single_nll` (test) and `fge/val_single_*`. Both nets
are two parameter groups of one optimizer (disjoint parameters: the summed loss gives each its
own gradient), each with its own per-step LR. The run folder gets `fge.json` with every member's
metrics and the single network's.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from functools import cached_property
from typing import Optional

import torch
import torch.nn.functional as F

from lit_papers.core import ClassifierModule, run_dir, save_figure
from lit_papers.core.host_overhead import logging_step
from lit_papers.core.optim import Optim

from .batchnorm import has_batchnorm, recompute_bn
from .curve_module import load_endpoint
from .fge import CYCLES, ProbabilityEnsemble, ensemble_predict, predict_probs, probability_metrics
from .figures import ensemble_figure, lr_figure


class FGEModule(ClassifierModule):
    """Cyclic-LR ensembling of one network (all ClassifierModule arguments apply to pretraining).

    Args:
        schedule: `fge` (triangle, snapshot at the LR minimum), `sse` or `independent`.
        alpha1, alpha2: the cycle's largest and smallest LR (FGE: alpha1 at the cycle boundary,
            alpha2 in the middle).
        cycle_epochs: cycle length c in epochs (even for FGE); members = cycle epochs / c.
        pretrain_epochs: normal training before the first cycle (ignored with `checkpoint`).
        pretrain_horizon: `pretrain`: the recipe (`optim.schedule`) runs its whole course within the
            pretraining epochs; `budget`: pretraining is the first `pretrain_epochs` of the recipe
            laid over the whole fit, as the paper's FGE starts from epoch 160 of a 200-epoch run
            (with `single_baseline` and one LR both networks are then identical until the first cycle).
        checkpoint: a trained ClassifierModule checkpoint (or state dict) to start the cycles from.
        bn_update: recompute exact BatchNorm statistics for each member before it is evaluated.
        keep_members: keep member weights (CPU) for `ensemble_forward` and in checkpoints.
        single_baseline: also train a copy of the initial network with the ordinary recipe for the
            whole fit (see the module docstring); it doubles the cost of a step.
        single_lr: the single network's base LR (default `optim.lr`), so each method's LR can be chosen
            on the validation split.
    """

    test_after_fit = False  # the ensemble is evaluated on the test set after every member
    # No "best" checkpoint: the result is the ensemble at the end of fit (in last.ckpt), not the
    # single network of the epoch with the highest validation accuracy.
    checkpoint_monitor = None

    def __init__(self, arch: str = "mlp", arch_kwargs: Optional[dict] = None,
                 num_classes: Optional[int] = None, input_shape: Optional[Sequence[int]] = None,
                 optim: Optim = Optim(name="sgd", lr=0.05, weight_decay=5e-4, schedule="swa_linear"),
                 schedule: str = "fge", alpha1: float = 0.05, alpha2: float = 0.0005, cycle_epochs: int = 2,
                 pretrain_epochs: int = 10, pretrain_horizon: str = "pretrain",
                 checkpoint: Optional[str] = None, bn_update: bool = False,
                 keep_members: bool = True, single_baseline: bool = False, single_lr: Optional[float] = None):
        cycle = CYCLES.get(schedule)(alpha1, alpha2)  # fails fast on the name
        if cycle_epochs < 1:
            raise ValueError(f"cycle_epochs must be >= 1, got {cycle_epochs}")
        cycle.snapshot_epoch(cycle_epochs)  # FGE needs an even cycle
        if cycle.restart and (pretrain_epochs > 0 or checkpoint is not None):
            raise ValueError("the `independent` schedule trains every member from scratch: "
                             "set pretrain_epochs: 0 and no checkpoint")
        if pretrain_horizon not in ("pretrain", "budget"):
            raise ValueError(f"pretrain_horizon must be `pretrain` or `budget`, got {pretrain_horizon!r}")
        if single_lr is not None and single_lr <= 0:
            raise ValueError(f"single_lr must be positive, got {single_lr}")
        if alpha1 <= 0 or alpha2 < 0:
            raise ValueError(f"need alpha1 > 0 and alpha2 >= 0, got {alpha1}, {alpha2}")
        super().__init__(arch, arch_kwargs, num_classes, input_shape, optim)
        self.cycle = cycle
        self.ensemble = ProbabilityEnsemble()  # test set
        self.val_ensemble = ProbabilityEnsemble()  # validation split (empty without one)
        self.members: list[dict[str, torch.Tensor]] = []  # CPU state dicts when keep_members
        self.history: list[dict[str, float]] = []  # metrics after each member
        self.single_metrics: dict[str, float] = {}  # the single network's, after the latest epoch
        self.single: Optional[torch.nn.Module] = None
        if self.net is not None:
            self._attach_single()

    def build_network(self):
        net = super().build_network()
        if self.hparams.checkpoint is not None:
            state = load_endpoint(self.hparams.checkpoint)
            missing, _ = net.load_state_dict(state, strict=False)
            if missing:
                raise ValueError(f"checkpoint {self.hparams.checkpoint!r} lacks {missing[:5]}: it must be a "
                                 f"run of the same `arch` ({self.hparams.arch}) and `arch_kwargs`")
        return net

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self._attach_single()

    def _attach_single(self) -> None:
        # The single network starts from the FGE network's initial weights (same seed, same init).
        if self.hparams.single_baseline and self.single is None:
            self.single = copy.deepcopy(self.net)

    # -- epochs and LR -----------------------------------------------------------------------
    @property
    def pretrain(self) -> int:
        return 0 if self.hparams.checkpoint is not None else self.hparams.pretrain_epochs

    @property
    def num_members(self) -> int:
        return (self.trainer.max_epochs - self.pretrain) // self.hparams.cycle_epochs

    def check_trainer(self, trainer) -> None:
        """The epoch budget holds the pretraining and whole cycles; called before the run folder exists."""
        cycling, cycle = trainer.max_epochs - self.pretrain, self.hparams.cycle_epochs
        if cycling < cycle or cycling % cycle:
            fit = self.pretrain + cycle * max(cycling // cycle, 1)
            raise ValueError(f"trainer.max_epochs - pretrain_epochs = {trainer.max_epochs} - {self.pretrain} = "
                             f"{cycling} must be a positive multiple of cycle_epochs={cycle}: "
                             f"set --trainer.max_epochs={fit} or change --model.init_args.pretrain_epochs / "
                             f"cycle_epochs (a short check: --trainer.max_steps=N stops the run early)")

    def on_fit_start(self) -> None:
        self.check_trainer(self.trainer)

    def lr_at(self, step: int, per_epoch: int) -> float:
        """The learning rate of optimizer step `step` (`per_epoch` steps per epoch)."""
        hp, optim, recipe = self.hparams, self.optim, self._recipe
        pre = self.pretrain * per_epoch
        if step < pre:
            horizon = pre if hp.pretrain_horizon == "pretrain" else per_epoch * self.trainer.max_epochs
            return optim.lr * recipe(step, horizon)
        length = hp.cycle_epochs * per_epoch
        if self.cycle.lr is None:  # independent members: the normal recipe, restarted every cycle
            return optim.lr * recipe((step - pre) % length, length)
        return self.cycle.lr(self.cycle.position(step - pre, length))

    def single_lr_at(self, step: int, total: int) -> float:
        """The single network's LR at step `step`: the ordinary recipe over all `total` steps."""
        base = self.optim.lr if self.hparams.single_lr is None else self.hparams.single_lr
        return base * self._recipe(step, total)

    @cached_property
    def _recipe(self):
        """optim.schedule as factor(step, total), built once: the scheduler asks every step."""
        return self.optim.factor()

    def configure_optimizers(self):
        optim = self.optim
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        per_epoch = max(total // max(self.trainer.max_epochs, 1), 1)
        # LambdaLR multiplies the base LR (optim.lr); the cycle sets absolute values, hence the division.
        groups = [{"params": list(self.net.parameters())}]
        factors = [lambda step: self.lr_at(step, per_epoch) / optim.lr]
        if self.single is not None:
            groups.append({"params": list(self.single.parameters())})
            factors.append(lambda step: self.single_lr_at(step, total) / optim.lr)
        opt = optim.build(groups)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factors)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        if self.single is None:
            return loss
        x, y = batch
        single_loss = F.cross_entropy(self.single(x), y)
        if logging_step(self):
            self.log("fge/single_train_loss", single_loss)
        return loss + single_loss  # disjoint parameters: each network gets its own gradient

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
            for opt in self.trainer.optimizers:  # the single network (if any) keeps its momentum
                for param in self.net.parameters():
                    opt.state.pop(param, None)

    # -- members -----------------------------------------------------------------------------
    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        epoch = self.current_epoch
        if epoch >= self.pretrain:
            _, inside = self._cycle_position(epoch)
            if inside == self.cycle.snapshot_epoch(self.hparams.cycle_epochs):
                self.add_member()
        if self.single is not None:
            self.log_single()

    def _eval_splits(self) -> dict[str, list]:
        """Metric-key prefix -> evaluation batches: the test set (""), the validation split ("val_")."""
        dm = self.trainer.datamodule
        splits = {"": list(dm.test_dataloader())}
        val = dm.val_dataloader()
        if val:
            splits["val_"] = list(val)
        return splits

    @torch.no_grad()
    def add_member(self) -> dict[str, float]:
        """Snapshot the current network, add its test (and val) probabilities to the ensemble, log metrics."""
        dm = self.trainer.datamodule
        if self.hparams.bn_update and has_batchnorm(self.net):
            recompute_bn(self.net, self.net, dm.train_dataloader())
        if self.hparams.keep_members:
            self.members.append({k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()})
        metrics = {"fge/members": float(self.ensemble.members + 1)}
        for prefix, batches in self._eval_splits().items():
            ensemble = self.ensemble if not prefix else self.val_ensemble
            targets = torch.cat([y for _, y in batches]).cpu()
            probs = predict_probs(self.net, batches, device=self.device)
            ensemble.add(probs)
            member, ens = probability_metrics(probs.double().cpu(), targets), ensemble.metrics(targets)
            key = f"fge/{prefix}"
            best = max([h[f"{key}member_acc"] for h in self.history if f"{key}member_acc" in h] + [member["acc"]])
            metrics.update({f"{key}member_acc": member["acc"], f"{key}member_nll": member["nll"],
                            f"{key}best_member_acc": best, f"{key}ensemble_acc": ens["acc"],
                            f"{key}ensemble_nll": ens["nll"]})
        for key, value in metrics.items():
            self.log(key, value)
        # the optimizer steps taken so far: the last one (step - 1) ran at the cycle's lowest LR
        self.history.append({**metrics, "step": self.global_step})
        self.write_record()
        return metrics

    @torch.no_grad()
    def log_single(self) -> dict[str, float]:
        """Evaluate the single network (ordinary recipe, whole budget) on test and val; log fge/single_*."""
        metrics = {}
        for prefix, batches in self._eval_splits().items():
            targets = torch.cat([y for _, y in batches]).cpu()
            probs = predict_probs(self.single, batches, device=self.device)
            for name, value in probability_metrics(probs.double().cpu(), targets).items():
                metrics[f"fge/{prefix}single_{name}"] = value
        self.single_metrics = metrics
        for key, value in metrics.items():
            self.log(key, value)
        return metrics

    def write_record(self) -> None:
        """`fge.json` in the run folder: the schedule, every member's metrics, the single network's."""
        folder = run_dir(self.trainer)
        if folder is None or not self.trainer.is_global_zero:
            return
        hp = self.hparams
        optim = hp.optim
        config = {k: hp[k] for k in ("arch", "schedule", "alpha1", "alpha2", "cycle_epochs", "single_baseline",
                                     "single_lr", "pretrain_horizon")}
        config.update(lr=optim["lr"], lr_schedule=optim["schedule"], momentum=optim["momentum"],
                      weight_decay=optim["weight_decay"])
        config.update(pretrain_epochs=self.pretrain, max_epochs=self.trainer.max_epochs,
                      seed=torch.initial_seed())
        record = {"config": config, "members": self.history, "single": self.single_metrics}
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "fge.json").write_text(json.dumps(record, indent=2))

    def lr_curves(self) -> dict[str, list[float]]:
        """The LR of every optimizer step taken: `fge` (the cycled network) and, with the single
        baseline, `single`; the same functions the LR scheduler applies."""
        steps, per_epoch = self.global_step, self.trainer.num_training_batches
        curves = {"fge": [self.lr_at(i, per_epoch) for i in range(steps)]}
        if self.single is not None:
            total = per_epoch * self.trainer.max_epochs
            curves["single"] = [self.single_lr_at(i, total) for i in range(steps)]
        return curves

    def on_train_end(self) -> None:
        self.write_record()
        if self.history:
            fig = ensemble_figure(self.history, self.hparams.schedule, single=self.single_metrics or None)
            save_figure(self.trainer, fig, "fge_ensemble")
        if self.global_step:
            snapshots = [int(h["step"]) for h in self.history if "step" in h]
            save_figure(self.trainer, lr_figure(self.lr_curves(), snapshots, self.trainer.num_training_batches,
                                                self.pretrain, self.hparams.schedule), "fge_lr")

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
        checkpoint["fge"] = {"ensemble": self.ensemble.state_dict(), "val_ensemble": self.val_ensemble.state_dict(),
                             "history": list(self.history), "single": dict(self.single_metrics),
                             "members": self.members if self.hparams.keep_members else []}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("fge")
        if state:
            self.ensemble.load_state_dict(state["ensemble"])
            if "val_ensemble" in state:
                self.val_ensemble.load_state_dict(state["val_ensemble"])
            self.history = list(state["history"])
            self.single_metrics = dict(state.get("single", {}))
            self.members = list(state["members"])
