"""Captured optimizer steps: the whole step (forward, backward, optimizer) as one CUDA graph.

Small models are launch-bound: one LeNet-300-100 step is ~0.1-0.2 ms of GPU work when the whole
step is one CUDA graph, while a Lightning `training_step` costs ~0.9 ms of host time, so the
`ChunkedSteps` part (chunked_steps.py) runs several steps per `training_step` and `step_capture`
picks how each of them runs:

- `none`: eager steps.
- `cuda_graph`: the whole step captured once into a `torch.cuda.CUDAGraph` (`GraphStep`) and
  replayed; Adam and AdamW run `capturable` with a tensor learning rate so schedules still apply.
- `compile`: the loss computation compiled with `torch.compile(mode="reduce-overhead")`; backward
  and optimizer step stay eager.

On a CPU the two accelerated modes fall back to `none` with a one-line notice.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import torch

from lit_papers.registry import Registry

#: how each optimizer step runs; values say whether the mode needs a CUDA device
STEP_CAPTURE = Registry("step_capture")
STEP_CAPTURE.register("none")(False)
STEP_CAPTURE.register("cuda_graph")(True)
STEP_CAPTURE.register("compile")(True)


def resolve_capture(mode: str, device: torch.device) -> str:
    """The mode that will actually run on `device`: accelerated modes need CUDA, else `none`."""
    needs_cuda = STEP_CAPTURE.get(mode)
    if needs_cuda and device.type != "cuda":
        warnings.warn(f"step_capture={mode!r} needs a CUDA device; running eager steps on {device.type}",
                      stacklevel=2)
        return "none"
    return mode


def make_capturable(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Adam/AdamW settings a CUDA graph needs: `capturable`, a tensor lr (schedules fill it in
    place) and step counters on the device. Idempotent; also repairs state loaded from a
    checkpoint written by an uncaptured run (whose param groups say capturable=False)."""
    for group in optimizer.param_groups:
        group["capturable"] = True
        if not isinstance(group["lr"], torch.Tensor):
            group["lr"] = torch.tensor(float(group["lr"]), device=device)
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if isinstance(step, torch.Tensor) and step.device != p.device:
                optimizer.state[p]["step"] = step.to(p.device, torch.float32)


class GraphStep:
    """One whole optimizer step captured in a CUDA graph: replay = copy the batch in, run the graph.

    `step_fn(x, y)` runs forward, `loss.backward()` and `optimizer.step()` on static tensors.
    Gradients are set to None before capture so the captured backward writes (not accumulates)
    them, as in PyTorch's whole-network capture recipe. The warm-up steps that capture needs are
    undone afterwards (weights, buffers and optimizer state restored; state created by warm-up
    zeroed, which equals fresh Adam moments and a fresh SGD momentum buffer), so replay 1 is
    exactly the first real optimizer step.
    """

    def __init__(self, step_fn, optimizer: torch.optim.Optimizer, tensors: Sequence[torch.Tensor],
                 x: torch.Tensor, y: torch.Tensor, warmup: int = 3):
        self.static_x, self.static_y = x.clone(), y.clone()
        self.graph = torch.cuda.CUDAGraph()

        def capture():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    optimizer.zero_grad(set_to_none=True)
                    step_fn(self.static_x, self.static_y)
            torch.cuda.current_stream().wait_stream(side)
            optimizer.zero_grad(set_to_none=True)
            with torch.cuda.graph(self.graph):
                step_fn(self.static_x, self.static_y)

        run_undone(capture, optimizer, tensors)

    def fits(self, x: torch.Tensor) -> bool:
        return x.shape == self.static_x.shape

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        self.graph.replay()


def run_undone(fn, optimizer: torch.optim.Optimizer, tensors: Sequence[torch.Tensor]) -> None:
    """Runs `fn` (warm-up steps, a capture), then puts `tensors` and the optimizer state back.

    Restores happen in place (a graph holds these tensors' addresses). State that `fn` created is
    zeroed: zero Adam moments and step count are Adam's fresh state, and a zero SGD momentum
    buffer gives the same first update as a fresh one (buffer = grad, dampening 0).
    """
    saved = [t.detach().clone() for t in tensors]
    old_state = _snapshot_state(optimizer)
    fn()
    with torch.no_grad():
        for t, old in zip(tensors, saved):
            t.copy_(old)
        _restore_state(optimizer, old_state)


def _state_items(optimizer: torch.optim.Optimizer) -> Iterator[tuple[tuple[int, str], torch.Tensor]]:
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor):
                    yield (id(p), key), value


def _snapshot_state(optimizer: torch.optim.Optimizer) -> dict[tuple[int, str], torch.Tensor]:
    return {key: value.detach().clone() for key, value in _state_items(optimizer)}


def _restore_state(optimizer: torch.optim.Optimizer, old: dict[tuple[int, str], torch.Tensor]) -> None:
    # In place: the graph holds these tensors' addresses.
    for key, value in _state_items(optimizer):
        if key in old:
            value.copy_(old[key])
        else:
            value.zero_()
