"""`NeuralODEModule`: the MNIST classifiers of Chen et al. 2018, Table 1, trained by Lightning."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Optional

import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from lit_papers.core import ClassifierModule, save_figure
from lit_papers.core.optim import Optim
from lit_papers.core.settings import keep_groups

from .classifiers import VARIANTS, build_classifier, count_parameters
from .figures import nfe_tolerance_figure, nfe_training_figure
from .odeblock import get_solver, solver_settings
from .settings import ODESolve
from .step_logging import ODEStepLogging


class NeuralODEModule(ODEStepLogging, ClassifierModule):
    """ODE-Net, RK-Net, ResNet or MLP on images, with the ODE solver's NFE logged every step.

    Args:
        variant: ``odenet`` (adjoint gradients), ``rknet`` (backprop through the solver),
            ``resnet`` (``depth`` residual blocks) or ``mlp`` (one hidden layer of ``hidden`` units).
        channels: feature channels after the downsampling stem.
        T: integration time of the ODE block.
        ode: the ODE solve (``ODESolve``); ``ode.adjoint`` is not read here: the variant decides it
            (odenet: adjoint, rknet: backprop through the solver).
        nfe_tolerances: after fit, the validation set is solved with ``sweep_method`` at each of
            these tolerances to plot NFE and error against tolerance (empty: no sweep), on at most
            ``sweep_samples`` validation images.
        optim: the optimizer and its schedule (``Optim``), as in ``ClassifierModule``.

    Logged: ``node/nfe_forward``, ``node/nfe_backward`` (0 unless adjoint), ``node/step_time_ms``,
    ``node/params``, and ``node/peak_mem_mb`` on CUDA.
    """

    def __init__(self, variant: str = "odenet", channels: int = 64, depth: int = 6, hidden: int = 300,
                 T: float = 1.0, ode: ODESolve = ODESolve(),
                 nfe_tolerances: Sequence[float] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5),
                 sweep_method: str = "dopri5", sweep_samples: int = 1000,
                 num_classes: Optional[int] = None, input_shape: Optional[Sequence[int]] = None,
                 optim: Optim = Optim(lr=1e-3)):
        if variant not in VARIANTS:
            raise ValueError(f"unknown Neural ODE variant {variant!r}; valid variants: {sorted(VARIANTS)}")
        ODESolve.of(ode), get_solver(sweep_method)  # fail fast on names and values
        super().__init__(arch=f"node_{variant}", arch_kwargs=None, num_classes=num_classes,
                         input_shape=input_shape, optim=optim)
        keep_groups(self, ode=ODESolve)
        self.nfe_history: dict[str, list[float]] = {"step": [], "nfe_forward": [], "nfe_backward": []}

    def build_network(self) -> nn.Module:
        hp = self.hparams
        net = build_classifier(
            hp.variant, tuple(hp.input_shape), hp.num_classes, channels=hp.channels, depth=hp.depth,
            hidden=hp.hidden, T=hp.T, **ODESolve.of(hp.ode).kwargs(adjoint=False),
        )
        rank_zero_only(print)(f"{hp.variant}: {count_parameters(net):,} parameters")
        return net

    @property
    def ode_block(self):
        """The network's ODE block, or None for ResNet / MLP."""
        return getattr(self.net, "ode_block", None)

    # -- per-step measurements ---------------------------------------------------------------
    def on_fit_start(self) -> None:
        # self.log is not available in on_fit_start: write the constant straight to the loggers.
        for logger in self.loggers:
            logger.log_metrics({"node/params": float(count_parameters(self.net))}, step=0)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        if self.ode_block is not None:
            self.log("node/nfe_forward", float(self.ode_block.nfe_forward), prog_bar=True)
        return loss

    def solver_block(self):
        return self.ode_block

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        block = self.ode_block
        if block is not None:
            self.nfe_history["step"].append(self.global_step)
            self.nfe_history["nfe_forward"].append(block.nfe_forward)
            self.nfe_history["nfe_backward"].append(block.nfe_backward)

    def validation_step(self, batch, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        if self.ode_block is not None:
            self.log("node/val_nfe_forward", float(self.ode_block.nfe_forward))

    # -- figures -----------------------------------------------------------------------------
    def on_fit_end(self) -> None:
        if self.ode_block is None:
            return
        h = self.nfe_history
        if h["step"]:
            fig = nfe_training_figure(h["step"], h["nfe_forward"], h["nfe_backward"])
            save_figure(self.trainer, fig, "neural_ode_nfe_training")
        dm = getattr(self.trainer, "datamodule", None)
        if self.hparams.nfe_tolerances and dm is not None:
            rows = self.tolerance_sweep(dm.val_dataloader())
            for r in rows:
                self.print(f"tol {r['tol']:.0e}: NFE {r['nfe']}, val error {100 * r['error']:.2f}%, "
                           f"{r['time_s']:.2f} s")
            save_figure(self.trainer, nfe_tolerance_figure(rows), "neural_ode_nfe_tolerance")

    @torch.no_grad()
    def tolerance_sweep(self, loader) -> list[dict]:
        """Solve the first ``sweep_samples`` images of ``loader`` at every tolerance in ``nfe_tolerances``.

        Returns one row per tolerance: {tol, nfe (max over batches), error, time_s}.
        """
        was_training = self.training
        self.eval()
        batches, seen = [], 0
        for x, y in loader:
            if seen >= self.hparams.sweep_samples:
                break
            keep = self.hparams.sweep_samples - seen
            batches.append((x[:keep], y[:keep]))
            seen += len(batches[-1][1])
        rows = []
        for tol in self.hparams.nfe_tolerances:
            with solver_settings(self.ode_block, self.hparams.sweep_method, tol, tol):
                wrong, total, nfe, start = 0, 0, 0, time.perf_counter()
                for x, y in batches:
                    x, y = x.to(self.device), y.to(self.device)
                    wrong += (self(x).argmax(-1) != y).sum().item()
                    total += len(y)
                    nfe = max(nfe, self.ode_block.nfe_forward)
                rows.append({"tol": tol, "nfe": nfe, "error": wrong / max(total, 1),
                             "time_s": time.perf_counter() - start})
        self.train(was_training)
        return rows
