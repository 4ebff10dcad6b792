"""`ChunkedClassifierModule`: a classifier that takes S optimizer steps per `training_step`.

The member axis: every step computes `(K,)` per-member losses and correct counts, K = 1 here and
K = population size in `PopulationModule`, so one training/evaluation path serves both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Optional

import torch
import torch.nn.functional as F
from torch.func import vmap

from .classifier import ClassifierModule, parent_args
from .optim import build_optimizer, build_scheduler
from .step_capture import STEP_CAPTURE, GraphStep, StepChunks, make_capturable, resolve_capture

_CAPTURABLE = ("adam", "adamw")  # optimizers whose step takes a tensor lr inside a CUDA graph


def member_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """logits (K, B, C), y (B,) shared or (K, B) per member -> (K,) mean cross-entropy of each member."""
    return vmap(F.cross_entropy, in_dims=(0, 0 if y.dim() == 2 else None))(logits, y)


class ChunkedClassifierModule(ClassifierModule):
    """`ClassifierModule` with `steps_per_call` optimizer steps per Lightning `training_step`.

    Args (besides ClassifierModule's):
        step_capture: `none` (eager), `cuda_graph` (whole step captured and replayed) or
            `compile` (`torch.compile(mode="reduce-overhead")` loss); CPU runs fall back to `none`.
            Steps run on the raw optimizer in fp32 on one device; Lightning's per-step hooks
            (`on_before_backward`, `on_before_optimizer_step`, ...) do not run.
        steps_per_call: minibatches per `training_step`; the datamodule groups them (StepChunks).
            Lightning's step counters (`global_step`, `max_steps`) count optimizer steps;
            `limit_train_batches` counts groups.

    Logs `train/loss` once per call (mean of its steps) and `train/acc` per epoch.
    """

    #: the module to name when DDP is asked for (one network per run, Lightning's own steps)
    ddp_alternative = "ClassifierModule"

    def __init__(self, arch: str = "lenet300_100", arch_kwargs: Optional[dict] = None,
                 num_classes: Optional[int] = None, input_shape: Optional[Sequence[int]] = None,
                 optimizer: str = "adam", lr: float = 1.2e-3, momentum: float = 0.9,
                 weight_decay: float = 0.0, nesterov: bool = False, lr_schedule: str = "constant",
                 milestones: Sequence[float] = (0.5, 0.75), gamma: float = 0.1,
                 step_capture: str = "none", steps_per_call: int = 1):
        STEP_CAPTURE.get(step_capture)  # fail fast, listing the modes
        if steps_per_call < 1:
            raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
        super().__init__(**parent_args(ClassifierModule, locals()))
        self.automatic_optimization = False
        self.capture_mode = "none"  # resolved against the device in configure_optimizers
        self._graph: Optional[GraphStep] = None
        self._compiled = None
        self._sums: dict[str, list] = {}

    # -- members -----------------------------------------------------------------------------
    @property
    def num_members(self) -> int:
        return 1

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) -> (K, B, C) logits of every member."""
        return self.net(x)[None]

    def member_losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K,) mean losses (differentiable) and (K,) correct counts on one minibatch; y is (B,), or
        (B, K) when every member has its own labels (MemberLabelsDataModule)."""
        return self.member_stats(self.member_logits(x), y)

    def member_stats(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`member_losses` from logits (K, B, C) already computed."""
        if y.dim() == 2:
            y = y.T  # (K, B)
        # one member: plain cross-entropy (vmap costs host time the single-model loop does not pay)
        single = len(logits) == 1 and y.dim() == 1
        losses = F.cross_entropy(logits[0], y)[None] if single else member_cross_entropy(logits, y)
        return losses, (logits.argmax(-1) == y).sum(-1)

    # -- setup -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and dm is not None and hasattr(dm, "batch_grouping"):
            steps = self.hparams.steps_per_call
            dm.batch_grouping = partial(StepChunks, steps=steps) if steps > 1 else None

    def configure_optimizers(self):
        hp = self.hparams
        self.capture_mode = resolve_capture(hp.step_capture, self.device)
        self._check_trainer()
        opt = build_optimizer(hp.optimizer, self.parameters(), lr=hp.lr, momentum=hp.momentum,
                              weight_decay=hp.weight_decay, nesterov=hp.nesterov)
        self._graph = None  # a captured step belongs to one optimizer: a new fit captures anew
        sched = None
        if hp.lr_schedule != "constant":
            sched = build_scheduler(hp.lr_schedule, opt, self._total_optimizer_steps(), hp.milestones,
                                    hp.gamma)
        if self.capture_mode == "cuda_graph" and hp.optimizer in _CAPTURABLE:
            make_capturable(opt, self.device)
        if self.capture_mode == "compile" and self._compiled is None:
            self._compiled = torch.compile(self.member_losses, mode="reduce-overhead")
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def check_trainer(self, trainer) -> None:
        """One device, full precision; called before the run folder exists and when optimizers are made."""
        if trainer.world_size > 1:
            raise ValueError(f"{type(self).__name__} trains on one device (several backward passes per "
                             f"training_step); use {self.ddp_alternative} under DDP")
        if str(trainer.precision) not in ("32-true", "32"):
            raise ValueError(f"{type(self).__name__} steps the optimizer itself and needs "
                             f"trainer.precision=32-true, got {trainer.precision}")

    def _check_trainer(self) -> None:
        hp = self.hparams
        self.check_trainer(self.trainer)
        if self.capture_mode == "cuda_graph" and hp.optimizer not in _CAPTURABLE \
                and hp.lr_schedule != "constant":
            raise ValueError(f"step_capture=cuda_graph with optimizer={hp.optimizer!r} needs "
                             f"lr_schedule=constant (its lr is baked into the graph); use one of "
                             f"{_CAPTURABLE} or step_capture=compile")

    def _total_optimizer_steps(self) -> int:
        """Optimizer steps of the whole fit (the schedule's length), counting grouped minibatches."""
        trainer = self.trainer
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return int(trainer.max_steps)
        calls = trainer.estimated_stepping_batches  # loads the train loader: calls * epochs
        if not math.isfinite(calls):
            raise ValueError("a non-constant lr_schedule needs trainer.max_epochs or trainer.max_steps")
        loader = trainer.train_dataloader
        if isinstance(loader, StepChunks):
            return max(loader.minibatches(trainer.num_training_batches) * trainer.max_epochs, 1)
        return max(int(calls), 1)

    # -- training ----------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        if x.dim() == len(self.hparams.input_shape) + 1:  # one plain minibatch: a group of one
            x, y = x[None], y[None]
        opt, sched = self.optimizers(), self.lr_schedulers()
        call = self._zeroed("call")
        steps = 0
        for s in range(x.shape[0]):  # x: (S, B, ...)
            self._optimizer_step(opt, x[s], y[s], call)
            if sched is not None:
                sched.step()
            steps += 1
            if not self.after_step_host():
                break
        epoch = self._sums.setdefault("train", [torch.zeros_like(call[0]), torch.zeros_like(call[1]), 0, 0])
        epoch[0] += call[0]
        epoch[1] += call[1]
        epoch[2] += steps * x.shape[1]
        epoch[3] += steps
        self.log("train/loss", call[0].mean() / steps, on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=steps)

    def _zeroed(self, key: str) -> list:
        """Per-call accumulators (loss sum, correct count) as persistent device tensors."""
        sums = self._sums.get(key)
        if sums is None or sums[0].device != self.device:
            k = self.num_members
            sums = [torch.zeros(k, device=self.device), torch.zeros(k, device=self.device, dtype=torch.long)]
            self._sums[key] = sums
        for t in sums:
            t.zero_()
        return sums

    def _loss_into(self, fn, x, y, call) -> torch.Tensor:
        losses, correct = fn(x, y)
        with torch.no_grad():
            call[0].add_(losses.detach())
            call[1].add_(correct)
        return losses.sum()  # members are independent: d(sum)/d(theta_k) = d(loss_k)/d(theta_k)

    def _optimizer_step(self, opt, x: torch.Tensor, y: torch.Tensor, call: list) -> None:
        """One optimizer step on the raw optimizer: Lightning's per-step hooks (precision plugin,
        on_before_backward, on_before_optimizer_step) are what S steps per call leave out."""
        if self.capture_mode == "cuda_graph":
            self._graph_step(opt, x, y, call)
            return
        fn = self._compiled if self.capture_mode == "compile" else self.member_losses
        raw = opt.optimizer
        opt._on_before_step()  # Lightning's step counters, as LightningOptimizer.step would
        raw.zero_grad(set_to_none=True)
        self._loss_into(fn, x, y, call).backward()
        self.before_optimizer_step()
        raw.step()
        self.after_optimizer_step()
        opt._on_after_step()

    def after_step_host(self) -> bool:
        """Runs on the host after every optimizer step of a call (outside any captured graph), with
        `global_step` already counting it; return False to skip the call's remaining minibatches
        (e.g. the run's last step came before the end of the chunk)."""
        return True

    def before_optimizer_step(self) -> None:
        """Runs between backward and the optimizer step, inside a captured step too (tensor ops
        only, no host syncs); e.g. masking gradients."""

    def after_optimizer_step(self) -> None:
        """Runs right after the optimizer step, inside a captured step too; e.g. re-masking weights."""

    def _graph_step(self, opt, x: torch.Tensor, y: torch.Tensor, call: list) -> None:
        raw = opt.optimizer

        def step(xs, ys):
            self._loss_into(self.member_losses, xs, ys, call).backward()
            self.before_optimizer_step()
            raw.step()
            self.after_optimizer_step()

        if self._graph is None:
            if self.hparams.optimizer in _CAPTURABLE:
                make_capturable(raw, self.device)  # again: a resumed checkpoint restores old groups
            tensors = [*self.parameters(), *self.buffers(), *call]
            self._graph = GraphStep(step, raw, tensors, x, y)
        opt._on_before_step()  # Lightning's step counters, as LightningOptimizer.step would
        if self._graph.fits(x):
            self._graph(x, y)
        else:  # a differently shaped minibatch (the short last one): same math, eagerly
            raw.zero_grad(set_to_none=True)
            step(x, y)
        opt._on_after_step()

    def on_train_epoch_end(self) -> None:
        sums = self._sums.pop("train", None)
        if sums is not None and sums[2] > 0:
            # train/loss is already logged per call; members get their epoch means here
            self._log_members("train", {"loss": sums[0] / sums[3], "acc": sums[1] / sums[2]}, ("acc",))

    # -- evaluation --------------------------------------------------------------------------
    def _eval_step(self, stage: str, batch) -> torch.Tensor:
        """Accumulates the members' evaluation sums; returns their logits (K, B, C)."""
        x, y = batch
        logits = self.member_logits(x)
        losses, correct = self.member_stats(logits, y)
        sums = self._sums.setdefault(stage, [torch.zeros_like(losses), torch.zeros_like(losses), 0])
        sums[0] += losses * len(y)
        sums[1] += correct
        sums[2] += len(y)
        return logits

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_validation_epoch_end(self) -> None:
        self._finish_eval("val")

    def on_test_epoch_end(self) -> None:
        self._finish_eval("test")

    def _finish_eval(self, stage: str) -> None:
        sums = self._sums.pop(stage, None)
        if sums is None or sums[2] == 0:
            return
        self._log_members(stage, {"loss": sums[0] / sums[2], "acc": sums[1] / sums[2]}, ("loss", "acc"))

    def _log_members(self, stage: str, values: dict[str, torch.Tensor], means: Sequence[str]) -> None:
        """Logs `<stage>/<name>` as the member mean for names in `means`; with K > 1 also every
        member's value as `pop/<k>/<stage>/<name>`."""
        for name, per_member in values.items():
            if name in means:
                self.log(f"{stage}/{name}", per_member.mean(), prog_bar=stage == "val")
            if self.num_members > 1:
                for k in range(self.num_members):
                    self.log(f"pop/{k}/{stage}/{name}", per_member[k])
