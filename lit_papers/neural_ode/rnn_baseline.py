"""RNN baseline for the latent ODE on irregular spirals (Chen et al. 2018, Table 2).

The baseline keeps everything of the latent ODE except the continuous-time decoder: the same
backward GRU encoder reads the observed points and their time gaps into q(z0), and the same ELBO
(Gaussian likelihood of the observed points only, minus the KL) trains it. Instead of solving an
ODE from z0, a GRU is started at a linear map of z0 and stepped once per grid time, with the gap
Δt since the previous grid time as its only input; a linear readout gives the point. So the only
difference from ``LatentODE`` is ODE vs discrete recurrent dynamics between the grid times.

Select it with ``LatentODEModule(decoder="rnn")`` (``--model.decoder=rnn``); ``hidden=13`` sizes
the GRU decoder so the model has about as many parameters as the default latent ODE.
"""

from __future__ import annotations

import torch
from torch import nn

from .latent_encoder import BackwardGRUEncoder, LatentTrajectoryModel


class GRUDecoder(nn.Module):
    """z0 -> h0 = W z0 + b; for each grid time h = GRU(Δt, h), point = readout(h)."""

    def __init__(self, latent: int, hidden: int, obs_dim: int):
        super().__init__()
        self.init = nn.Linear(latent, hidden)
        self.cell = nn.GRUCell(1, hidden)
        self.readout = nn.Linear(hidden, obs_dim)

    def forward(self, z0: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """z0: (N, latent), times: (T,) -> points at every time (N, T, obs_dim)."""
        gaps = torch.diff(times, prepend=times[:1])  # 0 at the first time
        h = self.init(z0)
        states = []
        for gap in gaps:
            h = self.cell(gap.expand(len(z0), 1), h)
            states.append(h)
        return self.readout(torch.stack(states, dim=1))


class LatentRNN(LatentTrajectoryModel):
    """Backward GRU encoder -> z0 -> GRU decoder over ``times``; the interface of ``LatentODE``."""

    def __init__(self, obs_dim: int = 2, latent: int = 4, rnn_hidden: int = 25, hidden: int = 13):
        super().__init__()
        self.encoder = BackwardGRUEncoder(obs_dim, rnn_hidden, latent)
        self.decoder = GRUDecoder(latent, hidden, obs_dim)
        self.block = None  # no ODE solve, hence no solver counters

    def decode_trajectory(self, z0: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """z0: (N, latent) -> decoded points at every time: (N, T, obs_dim)."""
        return self.decoder(z0, times)
