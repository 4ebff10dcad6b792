"""`ODEStepLogging`: what every LightningModule that integrates an ODE logs per training step."""

from __future__ import annotations

import time

import torch

from .odeblock import ODEBlock, translate_solver_error


class ODEStepLogging:
    """Mixin (listed before the LightningModule base) for modules built around an `ODEBlock`.

    Logs `node/step_time_ms` and `node/nfe_backward` (the adjoint solve's evaluations; 0 with
    direct backprop) after every step, and turns torchdiffeq's bare assertion raised inside the
    backward pass (an adjoint solve on a stiff field) into an `ODESolverError` naming the fixes.
    """

    _step_start = 0.0

    def solver_block(self) -> ODEBlock | None:
        """The block whose counters are logged (None for a model without one, e.g. the ResNet)."""
        raise NotImplementedError

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._step_start = time.perf_counter()

    def backward(self, loss: torch.Tensor, *args, **kwargs) -> None:
        try:
            super().backward(loss, *args, **kwargs)
        except AssertionError as err:
            raise translate_solver_error(err) from err

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the step time must include the queued kernels
            self.log("node/peak_mem_mb", torch.cuda.max_memory_allocated(self.device) / 2**20)
        self.log("node/step_time_ms", (time.perf_counter() - self._step_start) * 1e3)
        block = self.solver_block()
        if block is not None:
            # After backward, the counter holds the adjoint solve's evaluations only.
            self.log("node/nfe_backward", float(block.nfe_backward), prog_bar=True)
