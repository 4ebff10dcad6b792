"""Data: embedded splits, the device-resident loader, augmentation, the torchvision path."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from lit_papers.errors import DatasetUnavailable
from lit_papers.data import DeviceBatches, VisionDataModule
from lit_papers.data.augment import random_crop_flip
from lit_papers.data.datasets import load_dataset


def _setup(**kw) -> VisionDataModule:
    dm = VisionDataModule(**kw)
    dm.setup("fit")
    return dm


def test_mnist5k_split_sizes_and_balance():
    dm = _setup(dataset="mnist5k", val_size=500)
    assert (len(dm.train_x), len(dm.val_x), len(dm.test_x)) == (3500, 500, 1000)
    assert dm.train_x.shape[1:] == (1, 28, 28) and dm.input_shape == (1, 28, 28)
    assert torch.bincount(dm.test_y).tolist() == [100] * 10  # stratified, fixed test split
    # standardised with the training set's statistics
    x_all = torch.cat([dm.train_x, dm.val_x])
    assert abs(x_all.mean().item()) < 1e-4 and abs(x_all.std().item() - 1) < 1e-3


def test_split_is_seeded_and_test_set_is_fixed():
    a, b, c = _setup(seed=0), _setup(seed=0), _setup(seed=1)
    assert torch.equal(a.val_y, b.val_y) and torch.equal(a.train_x, b.train_x)
    assert not torch.equal(a.val_x, c.val_x)
    assert torch.equal(a.test_x, c.test_x)  # the test set never depends on the run seed


def test_digits_dataset():
    dm = _setup(dataset="digits", val_size=100)
    assert dm.train_x.shape[1:] == (1, 8, 8)
    assert len(dm.train_x) + len(dm.val_x) + len(dm.test_x) == 1797


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="valid dataset names: .*mnist5k"):
        VisionDataModule(dataset="imagenet")


@pytest.mark.parametrize("world", [1, 2, 3])
def test_device_batches_partition_each_epoch(world):
    x = torch.arange(23).float()[:, None]
    y = torch.arange(23)
    epoch = {"e": 0}
    shards = [DeviceBatches(x, y, 4, shuffle=True, seed=7, rank=r, world_size=world,
                            epoch_fn=lambda: epoch["e"]) for r in range(world)]
    seen = [torch.cat([b[1] for b in s]) for s in shards]
    assert len({len(s) for s in shards}) == 1  # same number of steps on every rank
    assert len({len(s_) for s_ in seen}) == 1
    union = torch.cat(seen)
    assert set(union.tolist()) == set(range(23))  # every example served
    assert len(union) - 23 < world  # only the wrap-around padding repeats
    for xb, yb in shards[0]:
        assert torch.equal(xb[:, 0].long(), yb)  # x and y stay aligned
    first = seen[0].clone()
    epoch["e"] = 1
    assert not torch.equal(torch.cat([b[1] for b in shards[0]]), first)  # new order each epoch


def test_random_crop_identity_and_shift():
    x = torch.randn(5, 3, 6, 6)
    assert torch.equal(random_crop_flip(x, pad=0, flip=False), x)
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, pad=2, flip=True, generator=g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(5):  # each output is some shifted (and maybe mirrored) window of the padded image
        windows = [padded[i, :, dy:dy + 6, dx:dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)


def _write_idx(path, array: np.ndarray, magic: int) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_mnist_path_on_local_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 12)):
        _write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), 2051)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", np.arange(n) % 10, 2049)
    dm = _setup(dataset="mnist", root=str(tmp_path), download=False, val_size=10)
    assert (len(dm.train_x), len(dm.val_x), len(dm.test_x)) == (30, 10, 12)
    assert dm.test_y.tolist() == [i % 10 for i in range(12)]


def test_missing_dataset_names_files_and_embedded_alternatives(tmp_path):
    with pytest.raises(DatasetUnavailable) as info:
        load_dataset("cifar10", str(tmp_path / "nowhere"), False)
    msg = str(info.value)
    assert "cifar-10-batches-py" in msg and "mnist5k" in msg and "--data.root" in msg
