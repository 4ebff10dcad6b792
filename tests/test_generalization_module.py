"""RandomLabelModule: memorising random labels, honest steps-to-fit, the regulariser switches."""

import math

import lightning as L
import pytest
import torch

from lit_papers.core import Optim
from lit_papers.data import VisionDataModule
from lit_papers.generalization import RandomLabelModule, estimate_rademacher, rademacher_from_accuracy
from lit_papers.generalization.preprocess import center_crop, per_image_whitening, random_crop


def _trainer(max_epochs, **kw):
    return L.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kw)


def test_small_mlp_memorises_512_random_labels_and_generalises_at_chance():
    L.seed_everything(0, verbose=False)
    dm = VisionDataModule("mnist5k", batch_size=64, val_size=200, train_subset=512,
                          corruption="random_labels", corruption_seed=1)
    model = RandomLabelModule(arch="mlp", arch_kwargs={"hidden": [512]}, optim=Optim(name="adam", lr=2e-3))
    trainer = _trainer(60, callbacks=[_StopWhenFitted()])
    trainer.fit(model, datamodule=dm)
    # fitted: every one of the 512 random labels, on the full split in eval mode
    assert model.steps_to_fit is not None
    assert model.evaluate(dm.train_x, dm.train_y)[0] == 1.0
    # steps-to-fit is the FIRST epoch end whose full-train accuracy reached 100%
    accs = [(r["step"], r["train_acc"]) for r in model.history]
    first = next(step for step, acc in accs if acc >= 1.0)
    assert model.steps_to_fit == first and all(acc < 1.0 for step, acc in accs if step < first)
    assert trainer.callback_metrics["gen/steps_to_fit"].item() == first
    assert trainer.callback_metrics["gen/rademacher"].item() == pytest.approx(1.0)
    # the labels carry no information about the (clean) test labels: chance level
    result = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert 0.04 < result["test/acc"] < 0.17
    assert result["gen/gap"] == pytest.approx(1.0 - result["test/acc"], abs=1e-6)


class _StopWhenFitted(L.Callback):
    def on_train_epoch_end(self, trainer, module):
        trainer.should_stop = trainer.should_stop or module.steps_to_fit is not None


def test_corrupted_labels_fixed_across_epochs_and_val_split_corrupted():
    dm = VisionDataModule("mnist5k", batch_size=500, val_size=500, corruption="random_labels")
    clean = VisionDataModule("mnist5k", batch_size=500, val_size=500)
    dm.setup("fit"), clean.setup("fit")
    assert torch.equal(dm.train_x, clean.train_x)
    assert (dm.val_y != clean.val_y).float().mean() > 0.8  # val is carved from the corrupted train set
    assert torch.equal(dm.test_y, clean.test_y)  # test stays clean by default

    def epoch_pairs():
        xs, ys = zip(*dm.train_dataloader())
        x, y = torch.cat(xs), torch.cat(ys)
        key = x.flatten(1) @ torch.linspace(-1, 1, x[0].numel())  # an image fingerprint
        return x[key.argsort()], y[key.argsort()]

    (x1, y1), (x2, y2) = epoch_pairs(), epoch_pairs()
    assert torch.equal(x1, x2) and torch.equal(y1, y2)  # same image -> same label every epoch
    again = VisionDataModule("mnist5k", val_size=500, corruption="random_labels")
    again.setup("fit")
    assert torch.equal(again.train_y, dm.train_y)


def test_rademacher_estimate_is_one_when_overparameterised_and_small_when_d_much_less_than_n():
    assert rademacher_from_accuracy(0.75, 2) == pytest.approx(1 - 2 * 0.25)
    g = torch.Generator().manual_seed(0)
    wide = estimate_rademacher(torch.randn(64, 1, 1, 100, generator=g), num_classes=2,
                               arch_kwargs={"hidden": [256]}, seeds=(0, 1), max_epochs=60, lr=1e-2)
    assert wide["estimate"] > 0.95
    narrow = estimate_rademacher(torch.randn(1000, 1, 1, 2, generator=g), num_classes=2,
                                 arch_kwargs={"hidden": []}, seeds=(0, 1), max_epochs=5, lr=1e-2)
    assert narrow["estimate"] < 0.2


def test_regulariser_switches_reach_the_network():
    model = RandomLabelModule(arch="inception_small", num_classes=10, input_shape=(3, 32, 32), crop=28,
                              random_crop=True, batch_norm=False, dropout=0.3,
                              optim=Optim(name="sgd", lr=0.01, weight_decay=5e-4))
    net = model.net
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.3 for m in net.modules())
    assert sum(p.numel() for p in net.parameters()) == 1_649_402
    alex = RandomLabelModule(arch="alexnet_small", num_classes=10, input_shape=(3, 32, 32), crop=28)
    assert sum(p.numel() for p in alex.net.parameters()) == 1_387_786  # the paper's 28x28 crop
    assert model.checkpoint_monitor == ("gen/train_acc", "max")
    assert model.configure_callbacks() == []
    stopping = RandomLabelModule(early_stopping=True, patience=3, num_classes=10, input_shape=(1, 28, 28))
    assert stopping.checkpoint_monitor == ("val/acc", "max")
    (callback,) = stopping.configure_callbacks()
    assert callback.monitor == "val/acc" and callback.patience == 3


def test_lr_decays_by_the_paper_factor_every_epoch():
    L.seed_everything(0, verbose=False)
    dm = VisionDataModule("digits", batch_size=256, val_size=100, train_subset=256)
    model = RandomLabelModule(arch="mlp", arch_kwargs={"hidden": [16]}, optim=Optim(name="sgd", lr=0.01),
                              lr_decay=0.95,
                              track_test=False)
    trainer = _trainer(3)
    trainer.fit(model, datamodule=dm)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01 * 0.95**3)


def test_bad_settings_name_the_fix():
    with pytest.raises(ValueError, match="optim.schedule=constant"):
        RandomLabelModule(lr_decay=0.95, optim=Optim(name="sgd", lr=0.01, schedule="cosine"))
    with pytest.raises(ValueError, match="crop"):
        RandomLabelModule(random_crop=True)
    with pytest.raises(ValueError, match="valid model names"):
        RandomLabelModule(arch="alexnet")


def test_crops_and_whitening():
    x = torch.randn(5, 3, 32, 32) * 4 + 2
    w = per_image_whitening(x)
    assert torch.allclose(w.flatten(1).mean(1), torch.zeros(5), atol=1e-5)
    assert torch.allclose(w.flatten(1).std(1, unbiased=False), torch.ones(5), atol=1e-4)
    assert torch.equal(center_crop(x, 28), x[..., 2:30, 2:30])
    crops = random_crop(x, 28, torch.Generator().manual_seed(0))
    for img, crop in zip(x, crops):  # every random crop is some 28x28 window of its own image
        windows = img.unfold(1, 28, 1).unfold(2, 28, 1)  # (C, 5, 5, 28, 28)
        assert any(torch.equal(windows[:, i, j], crop) for i in range(5) for j in range(5))
    assert not math.isnan(float(w.sum()))


def test_paper_input_pipeline_random_crops_while_training_centre_crop_when_evaluating():
    torch.manual_seed(0)
    model = RandomLabelModule(arch="inception_small", num_classes=10, input_shape=(1, 8, 8), crop=6,
                              random_crop=True, whiten=True)
    x = torch.randn(4, 1, 8, 8)
    model.train()
    assert not torch.equal(model(x), model(x))  # a new random 6x6 window per call
    model.eval()
    expected = model.net(per_image_whitening(center_crop(x, 6)))
    assert torch.equal(model(x), expected) and torch.equal(model(x), model(x))
