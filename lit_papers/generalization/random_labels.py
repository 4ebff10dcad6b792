"""`RandomLabelModule`: Zhang et al.'s (2017) randomization tests as a LightningModule.

The data corruption itself (random labels, shuffled/random/Gaussian pixels) is a data option
(`VisionDataModule(corruption=...)`); this module trains one of the paper's models on whatever it
is given and measures what the paper reports:

- `gen/train_acc`, `gen/train_loss`: the FULL training split (the corrupted labels), evaluated in
  eval mode (no dropout, no augmentation, BN running statistics) at the end of every epoch. This,
  not the running minibatch metric `train/acc`, decides "fitted".
- `gen/steps_to_fit`, `gen/epochs_to_fit`: the first optimizer step (checked at epoch ends) at
  which `gen/train_acc` >= `fit_threshold` (1.0 = every training label fitted); the paper's
  time-to-overfit (Fig. 1b).
- `gen/test_acc`, `gen/best_test_acc`: the test split after every epoch and its best value so far
  (the early-stopping potential of Table 2); `gen/gap` = train acc - test acc after `test`.
- `gen/rademacher`: (train acc - 1/K) / (1 - 1/K) when the labels are random_labels (Sec. 2.2).

Regularisers as switches: explicit -- `weight_decay`, `dropout`, `random_crop` (crop-based data
augmentation, Table 1's "random crop"; `VisionDataModule(augment=True)` adds pad-crop/flip);
implicit -- `early_stopping` (stop when val/acc stalls and test the best-val/acc checkpoint) and
`batch_norm` (Inception-small, MLP).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping

from lit_papers.core import ClassifierModule
from lit_papers.core.optim import Optim
from lit_papers.core.figures import save_figure
from lit_papers.models import build_model

from .preprocess import center_crop, per_image_whitening, random_crop
from .rademacher import rademacher_from_accuracy


class RandomLabelModule(ClassifierModule):
    """A classifier instrumented for the randomization tests of Zhang et al. (2017).

    Args (besides ClassifierModule's):
        dropout: dropout rate handed to the architecture (explicit regulariser; 0 = off).
        batch_norm: BatchNorm on/off for architectures that have the switch (None = model default).
        crop: train on `crop` x `crop` patches (the paper's 28x28 of CIFAR's 32x32); the centre
            patch at evaluation. random_crop: a random patch per training image (augmentation).
        whiten: per-image whitening (subtract each image's mean, divide by its std), as the paper.
        lr_decay: multiply the lr by this factor after every epoch (the paper's 0.95); needs
            optim.schedule=constant.
        early_stopping: stop when val/acc has not improved for `patience` epochs, and select the
            checkpoint by val/acc instead of by full-train accuracy.
        fit_threshold: full-train accuracy that counts as fitted (the paper's 100% = 1.0).
        stop_at_fit: end training at the epoch that reaches fit_threshold (saves CPU time).
        eval_batch_size: batch size of the per-epoch full-train and test evaluations.
        track_test: evaluate the test split after every epoch (gen/test_acc, gen/best_test_acc).
    """

    def __init__(self, arch: str = "mlp", arch_kwargs: Optional[dict] = None,
                 num_classes: Optional[int] = None, input_shape: Optional[Sequence[int]] = None,
                 optim: Optim = Optim(name="sgd", lr=0.01),
                 dropout: float = 0.0, batch_norm: Optional[bool] = None, crop: Optional[int] = None,
                 random_crop: bool = False, whiten: bool = False, lr_decay: Optional[float] = None,
                 early_stopping: bool = False, patience: int = 10, fit_threshold: float = 1.0,
                 stop_at_fit: bool = False, eval_batch_size: int = 1000, track_test: bool = True):
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        schedule = Optim.of(optim).schedule
        if lr_decay is not None and (not 0.0 < lr_decay <= 1.0 or schedule != "constant"):
            raise ValueError("lr_decay must be in (0, 1] and used with optim.schedule=constant "
                             f"(got lr_decay={lr_decay}, optim.schedule={schedule!r})")
        if random_crop and crop is None:
            raise ValueError("random_crop needs a crop size: set crop (e.g. 28 for 32x32 CIFAR images)")
        if not 0.0 < fit_threshold <= 1.0:
            raise ValueError(f"fit_threshold must be in (0, 1], got {fit_threshold}")
        super().__init__(arch, arch_kwargs, num_classes, input_shape, optim)
        # early stopping is model selection on held-out data; otherwise select the fitted net
        self.checkpoint_monitor = ("val/acc", "max") if early_stopping else ("gen/train_acc", "max")
        self.steps_to_fit: Optional[int] = None
        self.history: list[dict[str, float]] = []  # one row per epoch, for the fit figure
        self._measured_epoch = -1
        self._test_counts = torch.zeros(2)  # (correct, total) over the test split

    # -- construction ------------------------------------------------------------------------
    def build_network(self):
        hp = self.hparams
        kwargs = dict(hp.arch_kwargs or {})
        if hp.dropout > 0:
            kwargs["dropout"] = hp.dropout
        if hp.batch_norm is not None:
            kwargs["batch_norm"] = hp.batch_norm
        shape = tuple(hp.input_shape)
        if hp.crop is not None:
            if len(shape) != 3 or hp.crop > min(shape[1:]):
                raise ValueError(f"crop={hp.crop} does not fit inputs of shape {shape}")
            shape = (shape[0], hp.crop, hp.crop)
        return build_model(hp.arch, shape, hp.num_classes, **kwargs)

    def configure_callbacks(self):
        if not self.hparams.early_stopping:
            return []
        return [EarlyStopping(monitor="val/acc", mode="max", patience=self.hparams.patience)]

    def configure_optimizers(self):
        config = super().configure_optimizers()
        if self.hparams.lr_decay is None:
            return config
        sched = torch.optim.lr_scheduler.ExponentialLR(config, gamma=self.hparams.lr_decay)
        return {"optimizer": config, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    # -- inputs ------------------------------------------------------------------------------
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Crop (random while training if random_crop, else central) and whiten each image."""
        hp = self.hparams
        if hp.crop is not None:
            x = random_crop(x, hp.crop) if (hp.random_crop and self.training) else center_crop(x, hp.crop)
        return per_image_whitening(x) if hp.whiten else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(x))

    # -- measurements ------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """(accuracy, mean cross-entropy) of the current weights on all of (x, y), in eval mode."""
        was_training = self.training
        self.eval()
        correct, loss_sum = 0, 0.0
        for xb, yb in zip(x.split(self.hparams.eval_batch_size), y.split(self.hparams.eval_batch_size)):
            xb, yb = xb.to(self.device), yb.to(self.device)
            logits = self(xb)
            correct += int((logits.argmax(-1) == yb).sum())
            loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
        self.train(was_training)
        return correct / max(len(y), 1), loss_sum / max(len(y), 1)

    def _datamodule_split(self, name: str):
        dm = getattr(self.trainer, "datamodule", None)
        x, y = getattr(dm, f"{name}_x", None), getattr(dm, f"{name}_y", None)
        return (x, y) if x is not None and len(x) else None

    def _random_labels(self) -> bool:
        hp = getattr(getattr(self.trainer, "datamodule", None), "hparams", None) or {}
        kind, prob = hp.get("corruption"), hp.get("corruption_prob")
        return kind == "random_labels" or (kind == "partial_labels" and prob == 1.0)

    def _measure_epoch(self) -> None:
        """Full-train (and test) evaluation once per epoch; decides steps-to-fit."""
        if self._measured_epoch == self.current_epoch or self.trainer.sanity_checking:
            return
        self._measured_epoch = self.current_epoch
        train = self._datamodule_split("train")
        if train is None:  # no tensors to evaluate on: fall back to the running epoch metric
            acc, loss = float(self.train_acc.compute()), float("nan")
        else:
            acc, loss = self.evaluate(*train)
        row = {"step": self.global_step, "epoch": self.current_epoch, "train_acc": acc, "train_loss": loss}
        metrics = {"gen/train_acc": acc, "gen/train_loss": loss}
        if self.steps_to_fit is None and acc >= self.hparams.fit_threshold:
            self.steps_to_fit = self.global_step
            metrics |= {"gen/steps_to_fit": float(self.global_step),
                        "gen/epochs_to_fit": float(self.current_epoch + 1)}
        metrics["gen/fitted"] = float(self.steps_to_fit is not None)
        if self.hparams.stop_at_fit and self.steps_to_fit is not None:
            self.trainer.should_stop = True
        test = self._datamodule_split("test") if self.hparams.track_test else None
        if test is not None:
            row["test_acc"] = self.evaluate(*test)[0]
            best = max([r.get("test_acc", 0.0) for r in self.history] + [row["test_acc"]])
            metrics |= {"gen/test_acc": row["test_acc"], "gen/best_test_acc": best}
        if self._random_labels():
            metrics["gen/rademacher"] = rademacher_from_accuracy(acc, self.hparams.num_classes)
        self.history.append(row)
        self.log_dict(metrics)

    def on_validation_epoch_end(self) -> None:
        # before ModelCheckpoint/EarlyStopping look at the metrics (their on_validation_end)
        self._measure_epoch()

    def on_train_epoch_end(self) -> None:
        self._measure_epoch()  # no-op when validation already measured this epoch

    def on_test_epoch_start(self) -> None:
        self._test_counts = torch.zeros(2)

    def test_step(self, batch, batch_idx: int) -> None:
        loss, logits, y = self.model_step(batch)
        self.test_acc(logits, y)
        self._test_counts += torch.tensor([float((logits.argmax(-1) == y).sum()), float(len(y))])
        self.log("test/loss", loss, sync_dist=True)
        self.log("test/acc", self.test_acc)

    def on_test_epoch_end(self) -> None:
        train = self._datamodule_split("train")
        if train is None or self._test_counts[1] == 0:
            return
        train_acc = self.evaluate(*train)[0]  # the tested weights (e.g. the selected checkpoint)
        test_acc = float(self._test_counts[0] / self._test_counts[1])
        self.log_dict({"gen/gap": train_acc - test_acc, "gen/final_train_acc": train_acc})

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The per-epoch record travels with the weights, so a resumed fit keeps steps-to-fit and
        # the earlier epochs of the fit curve.
        checkpoint["random_labels"] = {"history": list(self.history), "steps_to_fit": self.steps_to_fit}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("random_labels")
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        if state is not None and fitting:  # testing a selected checkpoint keeps the full record
            self.history = list(state["history"])
            self.steps_to_fit = state["steps_to_fit"]

    def on_fit_end(self) -> None:
        if self.history:
            from .figures import fit_curve_figure

            save_figure(self.trainer, fit_curve_figure(self.history, self.steps_to_fit), "generalization_fit")
