"""Batched, device-side augmentation: random crop with zero padding and horizontal flips."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
    """x: (N, C, H, W). Each image is shifted by up to `pad` pixels (zero fill) and, if `flip`,
    mirrored left-right with probability 1/2. One gather for the whole batch, no Python loop."""
    n, _, h, w = x.shape
    dev = x.device
    xp = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(dev)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(dev)
    rows = torch.arange(h, device=dev)[None, :] + dy[:, None]  # (N, H)
    cols = torch.arange(w, device=dev)[None, :] + dx[:, None]  # (N, W)
    if flip:
        mirror = torch.rand(n, generator=generator).to(dev) < 0.5
        cols = torch.where(mirror[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=dev)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()
