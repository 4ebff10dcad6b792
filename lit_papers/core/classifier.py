"""`ClassifierModule`: the shared LightningModule for image classification."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Optional

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lit_papers.models import build_model

from .host_overhead import LeanHookNames, logging_step
from .optim import Optim, configure_from_hparams
from .settings import keep_groups
from .running_accuracy import RunningAccuracy


class ClassifierModule(LeanHookNames, L.LightningModule):
    """A network from `lit_papers.models` trained with cross-entropy.

    Args:
        arch: registered model name (`lenet300_100`, `mlp`, `convnet`, ...).
        arch_kwargs: keyword arguments of that model (e.g. `{hidden: [512, 512]}` for `mlp`).
        num_classes, input_shape: taken from the datamodule when not given.
        optim: the optimizer and its learning-rate schedule (`Optim`: name, lr, momentum,
            weight_decay, nesterov, schedule, milestones, gamma), stepped every optimizer step
            over the whole fit.
    """

    #: what the checkpoint callback monitors, and in which direction
    checkpoint_monitor: tuple[str, str] = ("val/acc", "max")
    #: run `test` on the best checkpoint right after `fit` (the CLI honours it)
    test_after_fit: bool = True

    def __init__(self, arch: str = "lenet300_100", arch_kwargs: Optional[dict] = None,
                 num_classes: Optional[int] = None, input_shape: Optional[Sequence[int]] = None,
                 optim: Optim = Optim(lr=1.2e-3)):
        super().__init__()
        self.save_hyperparameters()
        keep_groups(self, optim=Optim)
        from lit_papers.models import MODELS

        MODELS.get(arch)  # fail fast on the name
        self.net: Optional[nn.Module] = None
        if num_classes is not None and input_shape is not None:
            self.net = self.build_network()
        self.train_acc = RunningAccuracy()  # updated every training step: the cheap one
        self.val_acc = MulticlassAccuracy(num_classes or 2, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes or 2, average="micro")

    @cached_property
    def optim(self) -> Optim:
        """The `optim` group (hparams hold it as a dict), built once: schedules read it every step."""
        return Optim.of(self.hparams.optim)

    # -- construction ------------------------------------------------------------------------
    def build_network(self) -> nn.Module:
        """The network; override to build something else from `self.hparams`."""
        hp = self.hparams
        return build_model(hp.arch, tuple(hp.input_shape), hp.num_classes, **(hp.arch_kwargs or {}))

    def setup(self, stage: str) -> None:
        if self.net is not None:
            return
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "num_classes"):
            raise ValueError(f"{type(self).__name__} needs num_classes and input_shape: give them as "
                             "model arguments or use a datamodule that defines them (VisionDataModule)")
        self.hparams.num_classes = int(dm.num_classes)
        self.hparams.input_shape = tuple(dm.input_shape)
        self.net = self.build_network()
        for name in ("val_acc", "test_acc"):
            setattr(self, name, MulticlassAccuracy(dm.num_classes, average="micro").to(self.device))

    # -- steps -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def model_step(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x)
        return F.cross_entropy(logits, y), logits, y

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, logits, y = self.model_step(batch)
        # update() only: the metric's forward would also compute a per-batch value nobody reads,
        # and the epoch value is logged once in on_train_epoch_end (host time per step matters).
        self.train_acc.update(logits.detach(), y)
        if logging_step(self):  # step metrics only on the steps the loggers write
            self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/acc", self.train_acc, prog_bar=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, logits, y = self.model_step(batch)
        self.val_acc(logits, y)
        self.log("val/loss", loss, sync_dist=True, prog_bar=True)
        self.log("val/acc", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> None:
        loss, logits, y = self.model_step(batch)
        self.test_acc(logits, y)
        self.log("test/loss", loss, sync_dist=True)
        self.log("test/acc", self.test_acc)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).softmax(-1)

    # -- optimisation ------------------------------------------------------------------------
    def configure_optimizers(self):
        return configure_from_hparams(self)
