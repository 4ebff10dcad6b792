"""ClassifierModule's per-step train accuracy: the same values as torchmetrics' micro accuracy."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy

from lit_papers.core import ClassifierModule
from lit_papers.core.running_accuracy import RunningAccuracy
from lit_papers.data.device_loader import DeviceBatches


@pytest.mark.parametrize("shape", [(), (5,)], ids=["flat", "multidim"])
def test_running_accuracy_equals_micro_multiclass_accuracy(shape):
    torch.manual_seed(0)
    ours, ref = RunningAccuracy(), MulticlassAccuracy(7, average="micro")
    for n in (60, 60, 13):  # the short last batch too
        logits, y = torch.randn(n, 7, *shape), torch.randint(0, 7, (n, *shape))
        ours.update(logits, y)
        ref.update(logits, y)
    assert torch.equal(ours.compute(), ref.compute())
    labels, y = torch.randint(0, 7, (20,)), torch.randint(0, 7, (20,))  # predictions given as labels
    ours.update(labels, y)
    ref.update(labels, y)
    assert torch.equal(ours.compute(), ref.compute())
    # forward (as DEQModule calls it): the batch value, and the epoch state still accumulates
    logits, y = torch.randn(30, 7, *shape), torch.randint(0, 7, (30, *shape))
    assert torch.equal(ours(logits, y), MulticlassAccuracy(7, average="micro")(logits, y))
    ref.update(logits, y)
    assert torch.equal(ours.compute(), ref.compute())
    ours.reset()
    assert int(ours.count) == 0 and float(ours.compute()) == 0.0


class _Reference(ClassifierModule):
    """Also feeds the torchmetrics metric the previous version updated every step."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.reference = MulticlassAccuracy(10, average="micro")
        self.epoch_values: list[tuple[float, float]] = []

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        with torch.no_grad():
            self.reference.update(self(batch[0]), batch[1])  # weights not stepped yet: same logits
        return loss

    def on_train_epoch_end(self):
        ours = float(self.train_acc.compute())
        super().on_train_epoch_end()
        self.epoch_values.append((ours, float(self.reference.compute())))
        self.reference.reset()


def test_train_acc_per_epoch_matches_torchmetrics(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(250, 1, 8, 8), torch.randint(0, 10, (250,))
    model = _Reference(arch="mlp", arch_kwargs={"hidden": [16]}, num_classes=10, input_shape=(1, 8, 8))
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, train_dataloaders=DeviceBatches(x, y, 60, shuffle=True))
    assert len(model.epoch_values) == 3
    for ours, ref in model.epoch_values:
        assert ours == ref
    assert float(trainer.callback_metrics["train/acc"]) == model.epoch_values[-1][1]
    assert model.training is True and model._current_fx_name is None  # hook bookkeeping intact
    assert {n for n, _ in model.named_parameters()} == {"net.layers.1.weight", "net.layers.1.bias",
                                                        "net.layers.3.weight", "net.layers.3.bias"}
