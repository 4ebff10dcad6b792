"""`PopulationModule`: K independent classifiers of one architecture trained at once in one process.

A `ClassifierModule` whose network is a `StackedMembers` (stacked_members.py: K networks run by one
`vmap`), whose steps are taken by a `ChunkedSteps` part (chunked_steps.py) and whose metrics are
summed per member (member_metrics.py) and remembered per member (population_records.py). The
module only says how members are built and what their loss is (`member_losses`), and hands
Lightning's hooks over to those parts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Optional

import torch
from torch import nn

from .chunked_steps import ChunkedSteps, PartSteps
from .classifier import ClassifierModule
from .figures import run_dir, save_figure
from .member_metrics import MemberSums, log_members, member_stats
from .population_records import MemberRecords, members_figure, write_json
from .stacked_members import StackedMembers

__all__ = ["PopulationModule", "StackedMembers"]


class PopulationModule(PartSteps, ClassifierModule):
    """`population` independent classifiers of one architecture trained in one process.

    Every member sees the same batches and differs by its initialisation seed; it is the run that
    `ClassifierModule` with `seed_everything: <its seed>` would train alone (a test checks it).
    Per-member metrics are logged as `pop/<k>/{train,val,test}/{loss,acc}`, the plain keys
    (`val/acc`, ...) hold member means, `{val,test}/ensemble_{nll,acc}` score the members' averaged
    softmax (an ensemble of independently trained networks, FGE's baseline), and `members.json` in
    the run folder holds each member's seed, final and best metrics and the ensemble's.
    `member_state_dict(k)` extracts one member as a normal network.

    Args (the others are ClassifierModule's):
        step_capture, steps_per_call: as in `ChunkedSteps`.
        population: number of members K.
        member_seeds: one seed per member; default run seed + k (member 0 = the single run).
    """

    #: log the members' averaged prediction as `{val,test}/ensemble_{nll,acc}`
    ensemble_metrics = True
    #: the module to name when DDP is asked for (one network per run, Lightning's own steps)
    ddp_alternative = "ClassifierModule"

    def __init__(self, step_capture: str = "none", steps_per_call: int = 1, population: int = 4,
                 member_seeds: Optional[list[int]] = None, **kwargs):
        if population < 1:
            raise ValueError(f"population must be >= 1, got {population}")
        if member_seeds is not None and len(member_seeds) != population:
            raise ValueError(f"member_seeds has {len(member_seeds)} seeds for population={population}; "
                             "give one seed per member or leave it unset (run seed + k)")
        stepper = ChunkedSteps(step_capture, steps_per_call)  # validates both before anything is built
        super().__init__(**kwargs)
        self.automatic_optimization = False
        self.stepper = stepper
        self.sums = MemberSums()  # validation and test, per member and as an ensemble
        self._ensemble: dict[str, dict[str, float]] = {}  # stage -> ensemble_nll / ensemble_acc
        self.records = MemberRecords()

    # -- members -----------------------------------------------------------------------------
    @property
    def num_members(self) -> int:
        return int(self.hparams.population)

    @property
    def capture_mode(self) -> str:
        """The step capture actually running (`none` on a CPU whatever was asked)."""
        return self.stepper.mode

    def resolved_seeds(self) -> list[int]:
        hp = self.hparams
        if hp.get("member_seeds") is not None:
            return [int(s) for s in hp.member_seeds]
        base = int(os.environ.get("PL_GLOBAL_SEED", 0))
        return [base + k for k in range(hp.population)]

    def build_member(self) -> nn.Module:
        """One member network, built from the global RNG (seeded per member by `StackedMembers`);
        override to change how members are made (e.g. their initialisation)."""
        return super().build_network()

    def build_network(self) -> StackedMembers:
        hp = self.hparams
        seeds = self.resolved_seeds()
        hp.member_seeds = seeds  # stored with checkpoints, so a reload rebuilds the same members
        return StackedMembers(self.build_member, seeds)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) -> (K, B, C) logits of every member."""
        return self.net(x)

    def member_losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K,) mean losses (differentiable) and (K,) correct counts on one minibatch; y is (B,), or
        (B, K) when every member has its own labels (MemberLabelsDataModule)."""
        return member_stats(self.net(x), y)

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's weights, loadable into the plain architecture (`build_model(arch, ...)`)."""
        return self.net.member_state_dict(k)

    def set_member_masks(self, masks: dict[str, torch.Tensor]) -> None:
        """Prunes members: name -> (K, *shape) bool masks (True = kept), kept at exactly zero through
        training (gradients masked before, weights after every optimizer step, captured or not)."""
        self.net.set_masks(masks)

    # -- wiring: the steps are the part's, the masks are applied by Lightning's step hooks -----
    def setup(self, stage: str) -> None:
        super().setup(stage)  # PartSteps readies the part
        dm = getattr(self.trainer, "datamodule", None)
        wanted = getattr(dm, "num_members", None)
        if wanted is not None and wanted != self.num_members:
            raise ValueError(f"the datamodule holds labels for {wanted} members but model.population is "
                             f"{self.num_members}; make them equal")

    def on_before_optimizer_step(self, optimizer) -> None:
        self.net.mask_grads_()

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.net.mask_weights_()

    def on_train_epoch_end(self) -> None:
        values = self.stepper.epoch_values()
        if values is not None:  # train/loss is already logged per call
            self._log_members("train", values, ("acc",))

    # -- evaluation: every member, and the members as an ensemble ------------------------------
    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_validation_epoch_end(self) -> None:
        self._finish_eval("val")

    def on_test_epoch_end(self) -> None:
        self._finish_eval("test")

    def _eval_step(self, stage: str, batch) -> None:
        x, y = batch
        logits = self.member_logits(x)
        self.sums.add_batch(stage, *member_stats(logits, y), len(y))
        if self.ensemble_metrics and y.dim() == 1:  # shared labels: score the averaged prediction too
            self.sums.add_ensemble(stage, logits, y)

    def _finish_eval(self, stage: str) -> None:
        values = self.sums.pop(stage)
        if values is not None:
            self._log_members(stage, values, ("loss", "acc"))
        ensemble = self.sums.pop_ensemble(stage)
        if ensemble is None:
            return
        self.log_dict({f"{stage}/{name}": v for name, v in ensemble.items()})
        self._ensemble[stage] = {name: float(v) for name, v in ensemble.items()}

    def _log_members(self, stage: str, values: dict[str, torch.Tensor], means: Sequence[str]) -> None:
        log_members(self, stage, values, means)
        self.records.update(stage, values, self.current_epoch, self.global_step,
                            validating=not self.trainer.sanity_checking)

    # -- per-member records ----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # per-member records live outside the weights: keep them so a resumed fit reports the
        # same best epochs and curves as an uninterrupted one
        checkpoint["population_records"] = self.records.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.net is not None:
            self.net.ensure_mask_buffers(checkpoint.get("state_dict", {}), prefix="net.")
        self.records.load_state_dict(checkpoint.get("population_records", {}))

    def on_fit_end(self) -> None:
        self.write_members()
        if self.records.history:
            save_figure(self.trainer, members_figure(self.records.history, self.member_labels()),
                        "members_val_acc")

    def on_test_end(self) -> None:
        self.write_members()

    def _member_probs(self) -> Optional[Sequence[float]]:
        """Per-member label corruption of the datamodule, if members differ by their labels."""
        try:
            dm = getattr(self.trainer, "datamodule", None)
        except RuntimeError:  # not attached to a Trainer: no datamodule to ask
            return None
        return getattr(dm, "member_probs", None)

    def member_labels(self) -> list[str]:
        """Legend names: the label-corruption level when members differ by it, else the seed."""
        probs = self._member_probs()
        if probs is not None:
            return [f"labels p={p:g}, seed {s}" for p, s in zip(probs, self.resolved_seeds())]
        return [f"seed {s}" for s in self.resolved_seeds()]

    def members(self) -> list[dict]:
        """One record per member: seed, last logged metrics per stage, best validation epoch."""
        probs = self._member_probs()
        labels = (self.trainer.datamodule.member_corruption, probs) if probs is not None else None
        return self.records.members(self.resolved_seeds(), labels)

    def write_members(self) -> Optional[str]:
        """Writes `members.json` into the run folder (none without one, e.g. in tests)."""
        folder = run_dir(self.trainer)
        if folder is None or not self.trainer.is_global_zero:
            return None
        hp = self.hparams
        return write_json(folder, "members.json", {
            "population": hp.population, "arch": hp.arch, "optimizer": hp.optim["name"], "lr": hp.optim["lr"],
            "ensemble": self._ensemble, "members": self.members()})
