"""The paper's CIFAR-10 input pipeline as batched tensor ops: 28x28 crops and per-image whitening."""

from __future__ import annotations

import math

import torch


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central size x size patch of (N, C, H, W) images."""
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def random_crop(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """An independent random size x size patch of each image (N, C, H, W) -> (N, C, size, size)."""
    n, _, h, w = x.shape
    top = torch.randint(0, h - size + 1, (n,), generator=generator).to(x.device)
    left = torch.randint(0, w - size + 1, (n,), generator=generator).to(x.device)
    offsets = torch.arange(size, device=x.device)
    rows = (top[:, None] + offsets)[:, :, None]  # (N, size, 1)
    cols = (left[:, None] + offsets)[:, None, :]  # (N, 1, size)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (N, C, size, size)


def per_image_whitening(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / max(std, 1/sqrt(#values)) per image, as TF's per_image_standardization."""
    flat = x.flatten(1)  # (N, C*H*W)
    mean = flat.mean(dim=1, keepdim=True)
    std = flat.std(dim=1, unbiased=False, keepdim=True).clamp_min(1.0 / math.sqrt(flat.shape[1]))
    return ((flat - mean) / std).view_as(x)
