"""Plain-PyTorch reference loops: no framework, no project code, the figures to match.

Each function trains for `epochs` epochs and returns the fastest epoch's wall time (the first
epoch includes warm-up and capture), so it is directly comparable with the project's epochs.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def lenet(device) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                         nn.Linear(100, 10)).to(device)


def _fastest_epoch(run_epoch, epochs: int, device) -> float:
    times = []
    for _ in range(epochs):
        sync(device)
        t = time.perf_counter()
        run_epoch()
        sync(device)
        times.append(time.perf_counter() - t)
    return min(times[1:]) if len(times) > 1 else times[0]


def eager_epoch_s(x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int, lr: float = 1.2e-3) -> float:
    """Eager Adam loop over device-resident data, one randperm per epoch."""
    model = lenet(x.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(x)

    def epoch():
        perm = torch.randperm(n, device=x.device)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return _fastest_epoch(epoch, epochs, x.device)


def _capture(step, opt, warmup: int = 3) -> torch.cuda.CUDAGraph:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            opt.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        step()
    return graph


def graph_epoch_s(x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int, lr: float = 1.2e-3) -> float:
    """The whole Adam step (capturable) in one CUDA graph, replayed per full minibatch (GPU only)."""
    model = lenet(x.device)
    opt = torch.optim.Adam(model.parameters(), lr=torch.tensor(lr, device=x.device), capturable=True)
    sx, sy = x[:batch].clone(), y[:batch].clone()

    def step():
        F.cross_entropy(model(sx), sy).backward()
        opt.step()

    graph = _capture(step, opt)
    n = len(x) - len(x) % batch

    def epoch():
        perm = torch.randperm(len(x), device=x.device)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            torch.index_select(x, 0, idx, out=sx)
            torch.index_select(y, 0, idx, out=sy)
            graph.replay()

    return _fastest_epoch(epoch, epochs, x.device)


def population_epoch_s(x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int, members: int,
                       capture: bool, lr: float = 1.2e-3) -> float:
    """K LeNets with stacked parameters (torch.func vmap), one shared batch per step, Adam."""
    dev = x.device
    params, buffers = stack_module_state([lenet(dev) for _ in range(members)])
    params = {k: nn.Parameter(v.detach()) for k, v in params.items()}
    base = lenet("meta")
    lr_arg = torch.tensor(lr, device=dev) if capture else lr
    opt = torch.optim.Adam(params.values(), lr=lr_arg, capturable=capture)

    def logits(xb):
        return vmap(lambda p, b, xx: functional_call(base, (p, b), (xx,)), in_dims=(0, 0, None))(
            params, buffers, xb)

    def loss_of(xb, yb):
        out = logits(xb)  # (K, B, C)
        return vmap(F.cross_entropy, in_dims=(0, None))(out, yb).sum()

    n = len(x) - len(x) % batch
    if capture:
        sx, sy = x[:batch].clone(), y[:batch].clone()

        def step():
            loss_of(sx, sy).backward()
            opt.step()

        graph = _capture(step, opt)

    def epoch():
        perm = torch.randperm(len(x), device=dev)
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            if capture:
                torch.index_select(x, 0, idx, out=sx)
                torch.index_select(y, 0, idx, out=sy)
                graph.replay()
            else:
                opt.zero_grad(set_to_none=True)
                loss_of(x[idx], y[idx]).backward()
                opt.step()

    return _fastest_epoch(epoch, epochs, dev)
