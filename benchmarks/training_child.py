"""The training step that the memory benchmarks time in a fresh child process.

Both `deq_memory.py` and `node_memory.py` train a net on one fixed synthetic MNIST-shaped batch
and time repeated steps; this module holds that set-up once.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F


def synthetic_step(net: torch.nn.Module, args, optimizer: str):
    """(step, x): one optimizer step of `net` (moved to args.device) on a seeded (batch, 1, 28, 28) batch."""
    # The caller seeds before building `net`; the batch is drawn right after, as before.
    device = torch.device(args.device)
    net.to(device)
    opt_cls = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[optimizer]
    opt = opt_cls(net.parameters(), lr=1e-3)
    x = torch.randn(args.batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    return step, x


def timed(step, n: int, device: torch.device) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of `n` calls of `step` (CUDA synchronised, so queued kernels count)."""
    times, cpu_times = [], []
    for _ in range(n):
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return times, cpu_times
