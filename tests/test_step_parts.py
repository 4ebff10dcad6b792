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


def _curve() -> nn.Module:
    """A Bezier curve with one bend between two fresh networks (endpoints frozen, as in the paper)."""
    from lit_papers.mode_connectivity.curves import CurveNet

    ends = [_net(), _net()]
    curve = CurveNet(_net(), curve="bezier", num_bends=1)
    for k, end in zip((0, -1), ends):
        curve.set_point(k, dict(end.named_parameters()))
    curve.init_linear()
    return curve


class CurveMembers(TanhMembers):
    """The same wiring with a paper's own network: K curves, one t per minibatch for all of them."""

    def __init__(self, seeds: list[int], steps_per_call: int, lr: float = 0.05):
        super().__init__(seeds, steps_per_call, lr)
        self.net = StackedMembers(_curve, seeds)
        self.t = torch.Generator().manual_seed(0)

    def member_losses(self, x, y):
        t = float(torch.rand((), generator=self.t))
        return member_stats(self.net(x, t), y)

    def configure_optimizers(self):
        trained = [p for p in self.parameters() if p.requires_grad]  # the bends
        return self.stepper.configure_optimizers(self, torch.optim.SGD(trained, lr=self.hparams.lr, momentum=0.9))


def test_parts_train_a_population_of_curves():
    """Stacked CurveNets (a forward with an extra argument t, frozen endpoints) trained by the
    parts: every member's bend follows its own curve's plain loop, the endpoints stay as built."""
    dm = VisionDataModule(dataset="mnist5k", batch_size=60, val_size=0, train_subset=240)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    model = CurveMembers(seeds=[1, 2], steps_per_call=2)
    start = {k: model.net.member_state_dict(k) for k in range(2)}
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == len(batches) == 4
    for k, seed in enumerate([1, 2]):
        torch.manual_seed(seed)
        curve = _curve()
        torch.testing.assert_close(start[k], curve.state_dict())  # member k is built as a separate run
        opt = torch.optim.SGD([p for p in curve.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
        t = torch.Generator().manual_seed(0)
        for x, y in batches:
            opt.zero_grad()
            F.cross_entropy(curve(x, float(torch.rand((), generator=t))), y).backward()
            opt.step()
        member = model.net.member_state_dict(k)
        torch.testing.assert_close(member, curve.state_dict(), atol=2e-5, rtol=1e-4)
        for name, value in member.items():
            if name.startswith(("points.0.", "points.2.")):  # the endpoints
                assert torch.equal(value, start[k][name]), name
        assert not torch.equal(member["points.1.1__weight"], start[k]["points.1.1__weight"])  # the bend moved
