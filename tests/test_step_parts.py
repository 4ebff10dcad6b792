"""The step parts compose with any LightningModule that defines its loss, without a base class:
a plain LightningModule holding `StackedMembers` (its network) and `ChunkedSteps` (its steps)
trains K members with S steps per call, each member exactly its own plain training loop, and the
part runs the module's own Lightning step hooks around every optimizer step."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from lit_papers.core.chunked_steps import ChunkedSteps
from lit_papers.core.member_metrics import member_stats
from lit_papers.core.stacked_members import StackedMembers
from lit_papers.data import VisionDataModule


def _net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.Tanh(), nn.Linear(32, 10))


class TanhMembers(L.LightningModule):
    """Not a ClassifierModule: its own network, loss and optimizer; the parts do the rest."""

    def __init__(self, seeds: list[int], steps_per_call: int, lr: float = 0.05,
                 input_shape: tuple = (1, 28, 28)):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.num_members = len(seeds)
        self.net = StackedMembers(_net, seeds)
        self.stepper = ChunkedSteps(steps_per_call=steps_per_call)
        self.hook_calls = {"on_before_optimizer_step": 0, "optimizer_step": 0}

    def member_losses(self, x, y):
        return member_stats(self.net(x), y)

    def setup(self, stage: str) -> None:
        self.stepper.setup(self.trainer, stage)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        return self.stepper.configure_optimizers(self, opt)

    def training_step(self, batch, batch_idx: int) -> None:
        self.stepper.training_step(self, batch, batch_idx)

    def on_before_optimizer_step(self, optimizer) -> None:
        self.hook_calls["on_before_optimizer_step"] += 1

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.hook_calls["optimizer_step"] += 1


def test_parts_train_a_population_of_a_module_without_a_base_class():
    dm = VisionDataModule(dataset="mnist5k", batch_size=60, val_size=0, train_subset=480)
    dm.setup("fit")
    batches = list(dm.train_dataloader())  # epoch 0's order, as the trainer will draw it
    model = TanhMembers(seeds=[3, 4], steps_per_call=3)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == len(batches) == 8 and trainer.num_training_batches == 3  # 3 + 3 + 2
    assert model.hook_calls == {"on_before_optimizer_step": 8, "optimizer_step": 8}
    for k, seed in enumerate([3, 4]):
        torch.manual_seed(seed)
        net = _net()
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        for x, y in batches:
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
        torch.testing.assert_close(model.net.member_state_dict(k), net.state_dict(), atol=2e-5, rtol=1e-4)
