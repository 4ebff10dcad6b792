"""Vector fields f(t, h) for image and 1D-signal features, and the residual stack they share with ResNets.

`dims` picks the convolution: 2 for images (N, C, H, W), 1 for signals (N, C, L) such as MNIST-1D.
"""

from __future__ import annotations

import torch
from torch import nn

#: convolution class by number of spatial dimensions
CONVS: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d}


def conv_class(dims: int) -> type[nn.Module]:
    """nn.Conv1d or nn.Conv2d; other dimensions are refused with the valid ones."""
    if dims not in CONVS:
        raise ValueError(f"convolutions over {dims} spatial dimensions are not supported; valid: {sorted(CONVS)} "
                         f"(inputs of shape (C, L) or (C, H, W))")
    return CONVS[dims]


class ConcatConv(nn.Module):
    """Convolution (kernel 3, same padding) that sees time as an extra constant input channel.

    Without a time channel the field is autonomous (ResNet blocks do not know their depth).
    """

    def __init__(self, in_ch: int, out_ch: int, time_dependent: bool = True, dims: int = 2):
        super().__init__()
        self.time_dependent = time_dependent
        self.conv = conv_class(dims)(in_ch + int(time_dependent), out_ch, 3, padding=1)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.time_dependent:
            # x: (N, C, *spatial) -> (N, C+1, *spatial) with channel 0 filled with t
            tt = torch.ones_like(x[:, :1]) * t
            x = torch.cat([tt, x], dim=1)
        return self.conv(x)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels), channels)


class ConvDynamics(nn.Module):
    """f(t, h) = Conv(t, ReLU(GN(Conv(t, ReLU(GN(h)))))): the ODE-Net vector field.

    The same module is the residual branch of a ResNet block, so ResNets and
    ODE-Nets here differ only in how the branch is applied. ``dims`` = 2 convolves
    images, 1 convolves signals.
    """

    def __init__(self, channels: int, time_dependent: bool = True, dims: int = 2):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = _norm(channels), _norm(channels), _norm(channels)
        self.conv1 = ConcatConv(channels, channels, time_dependent, dims)
        self.conv2 = ConcatConv(channels, channels, time_dependent, dims)
        self.act = nn.ReLU()

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        out = self.conv1(t, self.act(self.norm1(h)))
        out = self.conv2(t, self.act(self.norm2(out)))
        return self.norm3(out)


class ResidualStack(nn.Module):
    """h_{k+1} = h_k + dt * f_k(t_k, h_k) for k = 0..L-1, with t_k = k * dt.

    ``funcs`` holds one vector field per block (an ordinary ResNet) or a single
    shared field (weight-tied). With one shared field and dt = 1 this is exactly
    Euler's method on dh/dt = f(t, h) over [0, L] (paper eq. 1).
    """

    def __init__(self, funcs: list[nn.Module] | nn.Module, depth: int, dt: float = 1.0):
        super().__init__()
        self.tied = isinstance(funcs, nn.Module)
        self.funcs = nn.ModuleList([funcs] if self.tied else funcs)
        if not self.tied and len(self.funcs) != depth:
            raise ValueError(f"got {len(self.funcs)} blocks for depth {depth}")
        self.depth, self.dt = depth, dt

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for k in range(self.depth):
            f = self.funcs[0 if self.tied else k]
            t = torch.tensor(k * self.dt, dtype=h.dtype, device=h.device)
            h = h + self.dt * f(t, h)
        return h
