"""Solver metrics shared by the DEQ Lightning modules: what they log and the per-step history."""

from __future__ import annotations

import math

import torch

from .layer import DEQInfo


def forward_residual(info: DEQInfo) -> torch.Tensor:
    """Mean relative residual of the forward solve (or of the last unrolled step)."""
    if info.forward is not None:
        return info.forward.rel_residual.mean()
    return info.unroll_residual.mean()


def forward_metrics(info: DEQInfo, prefix: str) -> dict[str, float | torch.Tensor]:
    """`<prefix>fwd_iters`, `fwd_residual`, `unconverged_frac`, `diverged_frac`, `fwd_fallbacks`."""
    out: dict[str, float | torch.Tensor] = {f"{prefix}fwd_residual": forward_residual(info)}
    fwd = info.forward
    if fwd is None:  # pretraining or unrolled mode: no solver ran
        return out
    out[f"{prefix}fwd_iters"] = fwd.nstep.float().mean()
    out[f"{prefix}unconverged_frac"] = fwd.unconverged_frac
    out[f"{prefix}diverged_frac"] = float(fwd.diverged.float().mean())
    out[f"{prefix}fwd_fallbacks"] = float(fwd.fallbacks)
    return out


def backward_metrics(info: DEQInfo, prefix: str = "deq/") -> dict[str, float | torch.Tensor]:
    """`<prefix>bwd_iters`, `bwd_residual`, `bwd_unconverged_frac`, `bwd_fallbacks` (empty before backward)."""
    bwd = info.backward
    if bwd is None:
        return {}
    return {f"{prefix}bwd_iters": bwd.nstep.float().mean(), f"{prefix}bwd_residual": bwd.rel_residual.mean(),
            f"{prefix}bwd_unconverged_frac": bwd.unconverged_frac, f"{prefix}bwd_fallbacks": float(bwd.fallbacks)}


class SolverLogging:
    """Mixin for LightningModules holding a DEQ: logs solver metrics and keeps a per-step history.

    `training_step` stores its DEQInfo with `remember(info)`; the backward solve runs inside
    loss.backward(), after training_step returns, so its metrics are logged in on_train_batch_end.
    """

    def init_solver_history(self) -> None:
        self.history: dict[str, list[float]] = {"step": [], "fwd_iters": [], "bwd_iters": [], "fwd_residual": []}
        self._train_info: DEQInfo | None = None

    def remember(self, info: DEQInfo) -> None:
        self._train_info = info

    def log_forward(self, info: DEQInfo, prefix: str) -> None:
        for key, value in forward_metrics(info, prefix).items():
            self.log(key, value)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        info, self._train_info = self._train_info, None
        if info is None:
            return
        for key, value in backward_metrics(info).items():
            self.log(key, value)
        fwd, bwd = info.forward, info.backward
        self.history["step"].append(self.global_step)
        self.history["fwd_iters"].append(float(fwd.nstep.float().mean()) if fwd is not None else math.nan)
        self.history["fwd_residual"].append(float(forward_residual(info)))
        self.history["bwd_iters"].append(float(bwd.nstep.float().mean()) if bwd is not None else math.nan)
