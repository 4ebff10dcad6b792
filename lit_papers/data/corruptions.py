"""Randomization tests of Zhang et al. (2017), Sec. 2.1, as a data option for any image dataset.

Each corruption is fitted once on the training split (a pixel permutation, dataset statistics)
and then applied to the training split and, only if asked, to the test split. Everything is
drawn from a local `torch.Generator` seeded by `seed`, never from the global RNG, so the
corrupted data is the same in every process, worker and epoch, and after a resume.

Kinds (the registry `CORRUPTIONS`):
  none             the data unchanged
  partial_labels   each label, with probability `prob`, replaced by a uniformly drawn class
                   (it may redraw its own class, so a fraction prob*(1 - 1/K) changes)
  random_labels    partial_labels with prob = 1
  shuffled_pixels  ONE permutation of the pixel positions, shared by every train and test image
                   (all channels of a pixel move together)
  random_pixels    a different permutation per image (each image keeps its own values)
  gaussian_pixels  every pixel drawn from N(mean_c, std_c^2), the per-channel training statistics
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lit_papers.registry import Registry

# A corruption: (train_x, train_y, prob, num_classes, generator) -> transform(x, y, generator) -> (x, y)
Transform = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
CORRUPTIONS = Registry("corruption")


@CORRUPTIONS.register("none")
def _identity(train_x, train_y, prob, num_classes, generator) -> Transform:
    return lambda x, y, gen: (x, y)


def _redraw_labels(y: torch.Tensor, prob: float, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """Replace each label with probability `prob` by a class drawn uniformly from all K classes."""
    corrupt = torch.rand(y.shape, generator=gen) < prob  # (N,) bool
    drawn = torch.randint(0, num_classes, y.shape, generator=gen)  # (N,)
    return torch.where(corrupt, drawn, y.cpu()).to(y)


@CORRUPTIONS.register("partial_labels")
def _partial_labels(train_x, train_y, prob, num_classes, generator) -> Transform:
    return lambda x, y, gen: (x, _redraw_labels(y, prob, num_classes, gen))


@CORRUPTIONS.register("random_labels")
def _random_labels(train_x, train_y, prob, num_classes, generator) -> Transform:
    return lambda x, y, gen: (x, _redraw_labels(y, 1.0, num_classes, gen))


def permute_pixels(x: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """Move pixel positions of (N, C, H, W) images by `perms` ((H*W,) shared or (N, H*W) per image).

    out[n, c, p] = x[n, c, perm[p]]: the same permutation for all channels of an image.
    """
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    if perms.ndim == 1:
        return flat[:, :, perms.to(x.device)].reshape(n, c, h, w)
    index = perms.to(x.device)[:, None, :].expand(n, c, h * w)  # (N, C, H*W)
    return flat.gather(2, index).reshape(n, c, h, w)


@CORRUPTIONS.register("shuffled_pixels")
def _shuffled_pixels(train_x, train_y, prob, num_classes, generator) -> Transform:
    h, w = train_x.shape[-2:]
    perm = torch.randperm(h * w, generator=generator)  # fixed once, shared by train and test
    return lambda x, y, gen: (permute_pixels(x, perm), y)


@CORRUPTIONS.register("random_pixels")
def _random_pixels(train_x, train_y, prob, num_classes, generator) -> Transform:
    def transform(x, y, gen):
        n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        perms = torch.argsort(torch.rand(n, h * w, generator=gen), dim=1)  # (N, H*W), one per image
        return permute_pixels(x, perms), y

    return transform


@CORRUPTIONS.register("gaussian_pixels")
def _gaussian_pixels(train_x, train_y, prob, num_classes, generator) -> Transform:
    # per-channel statistics of the (normalised) training images, shapes (1, C, 1, 1)
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True).cpu()
    std = train_x.std(dim=(0, 2, 3), keepdim=True).cpu()

    def transform(x, y, gen):
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        return (mean.to(x.dtype) + std.to(x.dtype) * noise).to(x.device), y

    return transform


def _check_inputs(kind, train_x, train_y, test_x, test_y, prob, num_classes) -> None:
    CORRUPTIONS.get(kind)  # raises a ValueError listing the valid kinds
    if not 0.0 <= float(prob) <= 1.0:
        raise ValueError(f"corruption prob must be in [0, 1], got {prob}")
    for name, x in (("train_x", train_x), ("test_x", test_x)):
        if x.ndim != 4 or not x.is_floating_point():
            raise TypeError(f"{name} must be a float tensor of shape (N, C, H, W), "
                            f"got {x.dtype} {tuple(x.shape)}")
    for name, y in (("train_y", train_y), ("test_y", test_y)):
        if y.dtype != torch.long:
            raise TypeError(f"{name} must hold int64 class labels, got {y.dtype}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")


def apply_corruption(kind: str, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                     test_y: torch.Tensor, *, prob: float = 1.0, seed: int = 0, num_classes: int,
                     corrupt_test: bool = False):
    """Apply the randomization test `kind` and return (train_x, train_y, test_x, test_y).

    Inputs are float images (N, C, H, W) and int64 labels (N,). `prob` is the corruption level of
    `partial_labels` (ignored by the other kinds). The test split is returned unchanged unless
    `corrupt_test`, in which case it goes through the same fitted corruption (e.g. the same
    shuffled-pixel permutation, the training statistics for Gaussian pixels).
    """
    _check_inputs(kind, train_x, train_y, test_x, test_y, prob, num_classes)
    generator = torch.Generator().manual_seed(int(seed))
    transform = CORRUPTIONS.get(kind)(train_x, train_y, float(prob), int(num_classes), generator)
    train_x, train_y = transform(train_x, train_y, generator)
    if corrupt_test:
        test_x, test_y = transform(test_x, test_y, generator)
    return train_x, train_y, test_x, test_y
