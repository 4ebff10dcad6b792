"""`ChunkedClassifierModule`: a classifier that takes S optimizer steps per `training_step`.

It is `ClassifierModule` holding a `ChunkedSteps` part (chunked_steps.py), which takes the steps,
and a `MemberSums` (member_metrics.py), which sums its metrics on the device; the module itself
only defines its loss as `member_losses` (one member, K = 1) and hands Lightning's hooks over.
"""

from __future__ import annotations

import torch

from .chunked_steps import ChunkedSteps, PartSteps
from .classifier import ClassifierModule
from .member_metrics import MemberSums, log_members, member_stats


class ChunkedClassifierModule(PartSteps, ClassifierModule):
    """`ClassifierModule` with `steps_per_call` optimizer steps per Lightning `training_step`.

    Args (the others are ClassifierModule's): `step_capture` and `steps_per_call`, as in `ChunkedSteps`.
    Steps run on the raw optimizer in fp32 on one device; of Lightning's per-step hooks only the
    module's own `on_before_optimizer_step` and `optimizer_step` run.

    Logs `train/loss` once per call (mean of its steps) and `train/acc` per epoch.
    """

    #: the module to name when DDP is asked for (one network per run, Lightning's own steps)
    ddp_alternative = "ClassifierModule"

    def __init__(self, step_capture: str = "none", steps_per_call: int = 1, **kwargs):
        stepper = ChunkedSteps(step_capture, steps_per_call)  # validates both before anything is built
        super().__init__(**kwargs)
        self.automatic_optimization = False
        self.stepper = stepper
        self.sums = MemberSums()  # validation and test

    # -- the loss the part steps -----------------------------------------------------------------
    num_members = 1

    def member_losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1,) mean loss (differentiable) and (1,) correct count on one minibatch."""
        return member_stats(self.net(x)[None], y)

    @property
    def capture_mode(self) -> str:
        """The step capture actually running (`none` on a CPU whatever was asked)."""
        return self.stepper.mode

    # -- wiring: setup, check_trainer, configure_optimizers, training_step are PartSteps' ------
    def on_train_epoch_end(self) -> None:
        values = self.stepper.epoch_values()
        if values is not None:  # train/loss is already logged per call
            log_members(self, "train", values, ("acc",))

    # -- evaluation --------------------------------------------------------------------------
    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self.sums.add_batch("val", *member_stats(self.net(x)[None], y), len(y))

    def test_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self.sums.add_batch("test", *member_stats(self.net(x)[None], y), len(y))

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def _log_epoch(self, stage: str) -> None:
        values = self.sums.pop(stage)
        if values is not None:
            log_members(self, stage, values, ("loss", "acc"))
