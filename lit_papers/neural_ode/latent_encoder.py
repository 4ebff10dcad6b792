"""What the latent ODE and its RNN baseline share: the backward GRU encoder and the forward pass.

Both models read the observed points into q(z0) with the same encoder, sample z0 (or take its
mean) and decode a trajectory over the grid times; they differ only in `decode_trajectory`
(an ODE solve in `latent_ode.py`, a GRU stepped over the times in `rnn_baseline.py`).
"""

from __future__ import annotations

import torch
from torch import nn


class BackwardGRUEncoder(nn.Module):
    """GRU run from the last time to the first, updating only at observed points -> q(z0)."""

    def __init__(self, obs_dim: int, hidden: int, latent: int):
        super().__init__()
        self.cell = nn.GRUCell(obs_dim + 1, hidden)  # input: point and the gap to the next update
        self.out = nn.Linear(hidden, 2 * latent)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, times: torch.Tensor):
        """x: (N, T, D), mask: (N, T), times: (T,) -> (mean, logvar) each (N, latent)."""
        n, steps, _ = x.shape
        h = x.new_zeros(n, self.cell.hidden_size)
        last_t = times[-1].expand(n).clone()
        for k in range(steps - 1, -1, -1):
            m = mask[:, k : k + 1].to(x.dtype)
            gap = (last_t - times[k])[:, None]
            h = m * self.cell(torch.cat([x[:, k], gap], dim=1), h) + (1 - m) * h
            last_t = torch.where(mask[:, k], times[k], last_t)
        mean, logvar = self.out(h).chunk(2, dim=1)
        return mean, logvar


class LatentTrajectoryModel(nn.Module):
    """Encoder -> z0 ~ q(z0 | x) -> `decode_trajectory(z0, times)`; subclasses set `encoder` and decode."""

    encoder: BackwardGRUEncoder

    def decode_trajectory(self, z0: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x, mask, times, sample: bool = True):
        """-> (reconstruction (N, T, D), mean, logvar)."""
        mean, logvar = self.encoder(x, mask, times)
        z0 = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if sample else mean
        return self.decode_trajectory(z0, times), mean, logvar
