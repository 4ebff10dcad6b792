"""`LotteryTicketModule`: iterative magnitude pruning (IMP) as levels inside one Lightning ``fit``.

Level 0 trains the dense net from theta_0. At the end of every level (at a validation step) the
module records the early-stopping iteration (argmin of validation loss) and the test accuracy
there, prunes p % of the surviving weights, resets the survivors to theta_0 (or rewinds them
to theta_k), and starts a fresh optimizer and learning-rate schedule. The test set is only
*evaluated* (at the validation-selected iteration and at the end of a level), never used to select.

Controls (``control``): ``ticket`` (the experiment), ``reinit`` (same masks, fresh random
theta_0' each level) and ``random_prune`` (random masks with the same per-layer counts).
With ``mask_source`` pointing to a finished ticket run, the controls use exactly that run's
per-level masks (``reinit``) or per-layer counts (``random_prune``), as in the paper.

What IMP decides (masks, resets, controls, seeds, early stopping) is `IMP` in imp.py, which sees
this one network as a population of one; this module wires it into Lightning's hooks: exact
masking around every optimizer step, validation, level ends, checkpoints.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn

from lit_papers.core.classifier import ClassifierModule
from lit_papers.core.figures import run_dir, save_figure
from lit_papers.core.optim import Optim

from .imp import IMP, load_mask_history
from .initializers import INITIALIZERS
from .masks import MaskSet, check_rates, layer_rates, prunable_weights
from .members import OneNetwork
from .pruning import PRUNING
from .schedule import LevelPlan, check_budget, train_the_levels


class LotteryTicketModule(ClassifierModule):
    """IMP with exact masks, per-level early stopping and the paper's controls.

    Args (besides ClassifierModule's network and optimizer arguments, which every level reuses):
        rounds: pruning rounds; ``rounds + 1`` levels are trained (level 0 is dense).
        round_steps: training iterations of one level (the paper: 50K for LeNet).
        strategy: pruning strategy name (``layerwise``, ``global``, ``random``).
        prune_rate: fraction of surviving fc weights pruned per round (global: of all pooled).
        conv_prune_rate: conv layers' rate (default ``prune_rate``).
        output_prune_rate: output layer's rate (default ``prune_rate / 2``; 0 leaves it dense).
        schedule: ``iterative`` (prune the last level's trained weights) or ``oneshot``
            (every level prunes the dense net's trained weights down to its density).
        rewind_iteration: 0 resets survivors to theta_0; k > 0 rewinds them to theta_k, and
            levels >= 1 then train iterations k..round_steps with the schedule resumed at k.
        control: ``ticket``, ``reinit`` or ``random_prune``.
        mask_source: a ticket run folder or checkpoint whose masks/counts the controls reuse.
        control_seed: seeds theta_0' (reinit) and random masks; independent of the data order.
        weight_init: ``glorot_normal`` (the paper), ``kaiming_normal`` or ``default``.
        warmup_steps: linear learning-rate warmup at the start of every level (deep nets).
    """

    checkpoint_monitor = ("val/loss", "min")  # resume from last.ckpt; "best" is only a lowest-loss copy
    test_after_fit = False  # test accuracy is measured per level, at the early-stopping iteration

    @staticmethod
    def sweep_figure(trials: list[dict]):
        """Aggregate figure of an offline sweep (`python -m lit_papers sweep sweeps/lottery.yaml`)."""
        from .report import sweep_figure

        return sweep_figure(trials)

    def __init__(self, arch: str = "lenet300_100", arch_kwargs: Optional[dict] = None,
                 num_classes: Optional[int] = None, input_shape: Optional[Sequence[int]] = None,
                 optim: Optim = Optim(lr=1.2e-3),
                 rounds: int = 5, round_steps: int = 1000, strategy: str = "layerwise",
                 prune_rate: float = 0.2, conv_prune_rate: Optional[float] = None,
                 output_prune_rate: Optional[float] = None, schedule: str = "iterative",
                 rewind_iteration: int = 0, control: str = "ticket",
                 mask_source: Optional[str] = None, control_seed: int = 0,
                 weight_init: str = "glorot_normal", warmup_steps: int = 0):
        PRUNING.get(strategy), INITIALIZERS.get(weight_init)  # fail fast, listing valid names
        check_rates(strategy, prune_rate, conv_prune_rate, output_prune_rate)
        # before the parent builds the network (when the shapes are given), which sets imp.rates;
        # the plan validates the numbers, IMP the control and schedule names
        self.imp = IMP(LevelPlan(rounds, round_steps, rewind_iteration), strategy, [control],
                       [control_seed], schedule)
        super().__init__(arch, arch_kwargs, num_classes, input_shape, optim)

    @property
    def plan(self) -> LevelPlan:
        return self.imp.plan

    @property
    def level(self) -> int:
        return self.imp.level

    @property
    def history(self) -> list[dict]:
        """The per-level rows (`lottery.json`)."""
        return self.imp.histories[0]

    @property
    def rates(self) -> dict[str, float]:
        """Per-layer pruning fractions (of surviving weights, per round)."""
        return self.imp.rates

    # -- network + masks ---------------------------------------------------------------------
    def build_member(self) -> nn.Module:
        """A fresh network, initialised by `weight_init` from the global RNG."""
        net = super().build_network()
        INITIALIZERS.get(self.hparams.weight_init)(net)
        return net

    def build_network(self) -> nn.Module:
        net = self.build_member()
        self._weights = prunable_weights(net)
        self.masks = MaskSet(self._weights)
        self.member_nets = OneNetwork(net, self.masks, self._weights, self.build_member)  # what IMP works on
        self.imp.rates = layer_rates(net, self.hparams.prune_rate, self.hparams.conv_prune_rate,
                                     self.hparams.output_prune_rate)
        return net

    def density(self) -> float:
        """Fraction of prunable weights currently kept."""
        return self.masks.density()

    # -- fit wiring --------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != TrainerFn.FITTING.value:
            return
        self.check_trainer(self.trainer)
        train_the_levels(self.trainer, self.plan)
        self.imp.start(self.member_nets)
        if self.hparams.mask_source and self.hparams.control != "ticket":
            self.imp.source_pruned_at = load_mask_history(self.hparams.mask_source, self.plan.rounds)

    def check_trainer(self, trainer) -> None:
        """The trainer settings IMP needs; called before the run folder exists and in `setup`."""
        check_budget(trainer, self.plan)
        every = trainer.val_check_interval
        if trainer.check_val_every_n_epoch is not None or not isinstance(every, int):
            raise ValueError("LotteryTicketModule validates every k iterations: set "
                             "trainer.val_check_interval: <k> (an int) and "
                             "trainer.check_val_every_n_epoch: null")
        self.plan.check_interval(every, "trainer.val_check_interval")
        if trainer.accumulate_grad_batches != 1 or trainer.limit_val_batches == 0:
            raise ValueError("LotteryTicketModule needs accumulate_grad_batches: 1 and validation "
                             "batches (limit_val_batches > 0, data.val_size > 0)")

    def configure_optimizers(self):
        """A fresh optimizer and per-step schedule over this level (resumed at its offset)."""
        optim = self.optim
        opt, factor = optim.build(self.parameters()), optim.factor()
        total, offset, warmup = self.plan.round_steps, self.plan.offset(self.level), self.hparams.warmup_steps

        def lr_factor(step: int) -> float:
            it = step + offset  # training iteration of this level
            return min(1.0, (it + 1) / warmup if warmup else 1.0) * factor(it, total)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- exact masking around every optimizer step --------------------------------------------
    def on_before_optimizer_step(self, optimizer) -> None:
        self.masks.apply_to_grads_(self._weights)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.masks.apply_to_weights_(self._weights)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if self.imp.level_ends_at(self.global_step):
            # resumed from a checkpoint taken after a level's last step but before its validation
            self._validate_and_end_level()
        self.imp.after_step(self.global_step, self.member_nets)  # theta_k: the state after k steps

    # -- validation: early stopping bookkeeping, level ends -----------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_stats = torch.zeros(3, device=self.device)  # (sum loss, correct, count)

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, logits, y = self.model_step(batch)
        self.val_acc(logits, y)
        self.log("val/loss", loss, sync_dist=True, prog_bar=True)
        self.log("val/acc", self.val_acc, prog_bar=True)
        n = torch.tensor(float(len(y)), device=self.device)
        self._val_stats += torch.stack([loss.detach().float() * n, (logits.argmax(-1) == y).sum().float(), n])

    def on_validation_epoch_end(self) -> None:
        trainer = self.trainer
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        stats = trainer.strategy.reduce(self._val_stats, reduce_op="sum")
        # progress per evaluation rather than per step: per-step logging costs more than a LeNet step
        self.log_dict({"lottery/round": float(self.level), "lottery/density": self.density()})
        with torch.inference_mode(False), torch.no_grad():  # new state must be ordinary tensors
            loss, acc = stats[0:1] / stats[2], stats[1:2] / stats[2]  # (1,): one member
            self.imp.record_validation(loss, acc, self.global_step, self.member_nets)
            if self.imp.level_ends_at(self.global_step):
                self._end_level()

    def on_train_end(self) -> None:
        if not self.imp.finished and self.global_step == self.plan.total_steps:
            self._validate_and_end_level(log=False)  # same catch-up for the last level

    @torch.no_grad()
    def _validate_and_end_level(self, log: bool = True) -> None:
        val_loss, val_acc = self._evaluate(self.trainer.datamodule.val_dataloader())
        self.imp.record_validation(val_loss, val_acc, self.global_step, self.member_nets)
        self._end_level(log)

    def _end_level(self, log: bool = True) -> None:
        """Records this level, then (unless last) prunes, resets and restarts the optimizer."""
        row = self.imp.end_level(self.member_nets, self.evaluate_test)[0]
        if log:
            self.log_dict({f"lottery/{k}": float(v) for k, v in row.items() if k != "kept"})
        self._write_history()
        if not self.imp.finished:
            self.trainer.strategy.setup_optimizers(self.trainer)  # fresh optimizer and schedule

    def evaluate_test(self) -> tuple[Tensor, Tensor]:
        """(loss, accuracy), each (1,), of the current net on the datamodule's full test set
        (reported, never used to select)."""
        return self._evaluate(self.trainer.datamodule.test_dataloader())

    @torch.no_grad()
    def _evaluate(self, loader) -> tuple[Tensor, Tensor]:
        # sums reduced over ranks: under DDP each rank may hold a shard of the loader
        was_training = self.net.training
        self.net.eval()
        total = torch.zeros(3, device=self.device)  # (sum loss, correct, count)
        for x, y in loader:
            x, y = x.to(self.device), y.to(self.device)
            logits = self.net(x)
            total += torch.stack([F.cross_entropy(logits, y, reduction="sum"),
                                  (logits.argmax(-1) == y).sum().float(),
                                  torch.tensor(float(len(y)), device=self.device)])
        self.net.train(was_training)
        total = self.trainer.strategy.reduce(total, reduce_op="sum")
        return total[0:1] / total[2], total[1:2] / total[2]

    # -- outputs -----------------------------------------------------------------------------
    def _write_history(self) -> None:
        folder = run_dir(self.trainer)
        if folder is None or not self.trainer.is_global_zero:
            return
        hp = self.hparams
        meta = {k: hp[k] for k in ("arch", "control", "strategy", "schedule", "prune_rate",
                                   "rewind_iteration", "round_steps", "rounds", "control_seed")}
        meta["mask_source"] = hp.mask_source
        (folder / "lottery.json").write_text(json.dumps({"config": meta, "levels": self.history}, indent=2))

    def on_fit_end(self) -> None:
        from .report import rounds_figure  # lazy: keeps `python -m lit_papers.lottery.report` clean

        if self.history:
            save_figure(self.trainer, rounds_figure({self.hparams.control: [self.history]}), "lottery_rounds")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lottery"] = self.imp.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("lottery")
        if state is None or "histories" not in state:
            raise ValueError("checkpoint has no lottery state of this version: resume LotteryTicketModule "
                             "runs from their own checkpoints")
        self.imp.load_state_dict(state)
