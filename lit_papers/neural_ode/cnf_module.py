"""`CNFModule`: maximum-likelihood training of a continuous normalizing flow on 2D densities."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import lightning as L
import torch

from lit_papers.core import save_figure
from lit_papers.core.optim import Optim, configure_from_hparams
from lit_papers.core.settings import keep_groups

from .cnf import CNF, NOISES, TRACES, TimeConcatMLP
from .cnf_figures import density_figure
from .planar import PlanarField
from .settings import ODESolve
from .step_logging import ODEStepLogging

# Methods as data: vector fields by name, each built from (dim, hidden, width).
FIELDS = {
    "mlp": lambda dim, hidden, width: TimeConcatMLP(dim, tuple(hidden)),
    "planar": lambda dim, hidden, width: PlanarField(dim, width, hyper_hidden=hidden[0] if hidden else 32),
}


class CNFModule(ODEStepLogging, L.LightningModule):
    """A CNF fit by maximum likelihood, log p(x) by the instantaneous change of variables.

    Args:
        dim: data dimension (2 for the toy densities; read from the datamodule when None).
        field: ``mlp`` (softplus MLP on [t, z]) or ``planar`` (the paper's M gated planar units
            from a hypernetwork of t; pair it with ``trace: analytic``).
        hidden: hidden widths of the MLP (planar: the first is the hypernetwork width).
        width: number of planar units M.
        T: flow time from data (t = 0) to the standard normal base (t = T).
        trace: ``exact``, ``hutchinson`` or ``analytic`` (planar) for training; eval_trace: the same for val/test
            (exact by default, so reported log-likelihoods are exact up to solver tolerance).
        hutchinson_noise: ``gaussian`` or ``rademacher`` (drawn once per solve).
        ode: the ODE solve (``ODESolve``).
        optim: the optimizer and its schedule (``Optim``), as in ``ClassifierModule``.
        grid_size, n_samples: resolution of the density figure and number of drawn samples.

    Logged: ``train/nll``, ``val/nll``, ``test/nll`` (negative log-likelihood in nats per point),
    ``node/nfe_forward``, ``node/nfe_backward``, ``node/step_time_ms``.
    """

    checkpoint_monitor: tuple[str, str] = ("val/nll", "min")
    test_after_fit: bool = True

    def __init__(self, dim: Optional[int] = None, field: str = "mlp", hidden: Sequence[int] = (64, 64, 64),
                 width: int = 64, T: float = 1.0,
                 trace: str = "exact", eval_trace: str = "exact", hutchinson_noise: str = "rademacher",
                 ode: ODESolve = ODESolve(rtol=1e-5, atol=1e-5, adjoint=True),
                 optim: Optim = Optim(lr=1e-3, momentum=0.0), grid_size: int = 100, n_samples: int = 2000):
        super().__init__()
        self.save_hyperparameters()
        keep_groups(self, optim=Optim, ode=ODESolve)
        checks = ((FIELDS, field, "vector field"), (TRACES, trace, "trace estimator"),
                  (TRACES, eval_trace, "trace estimator"), (NOISES, hutchinson_noise, "Hutchinson noise"))
        for table, name, what in checks:
            if name not in table:
                raise ValueError(f"unknown {what} {name!r}; valid: {sorted(table)}")
        self.flow: Optional[CNF] = None
        if dim is not None:
            self.flow = self.build_flow()

    def build_flow(self) -> CNF:
        hp = self.hparams
        field = FIELDS[hp.field](hp.dim, tuple(hp.hidden), hp.width)
        return CNF(field, T=hp.T, trace=hp.trace, noise=hp.hutchinson_noise, eval_trace=hp.eval_trace,
                   **ODESolve.of(hp.ode).kwargs())

    def setup(self, stage: str) -> None:
        if self.flow is not None:
            return
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "dim"):
            raise ValueError("CNFModule needs the data dimension: give model.dim or use a datamodule "
                             "with a `dim` attribute (Toy2DDataModule)")
        self.hparams.dim = int(dm.dim)
        self.flow = self.build_flow()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) per point: (N, D) -> (N,)."""
        return self.flow.log_prob(x)

    # -- steps -------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        nll = -self(batch[0]).mean()
        self.log("train/nll", nll, prog_bar=True)
        self.log("node/nfe_forward", float(self.flow.block.nfe_forward), prog_bar=True)
        return nll

    def solver_block(self):
        return self.flow.block

    def log_prob_outside_inference_mode(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) where Lightning evaluates under inference mode: the trace needs autograd."""
        with torch.inference_mode(False), torch.no_grad():
            return self(x.clone())  # clone: inference tensors cannot enter autograd

    def _eval_step(self, batch, split: str) -> None:
        nll = -self.log_prob_outside_inference_mode(batch[0]).mean()
        self.log(f"{split}/nll", nll, prog_bar=split == "val", batch_size=len(batch[0]))

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.log_prob_outside_inference_mode(batch[0])

    def configure_optimizers(self):
        return configure_from_hparams(self)

    # -- figure ------------------------------------------------------------------------------
    @torch.no_grad()
    def on_fit_end(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None or self.hparams.dim != 2:
            return
        was_training = self.training
        self.eval()
        data = dm.train_x[: self.hparams.n_samples]
        lim = float(data.abs().max()) * 1.15
        side = torch.linspace(-lim, lim, self.hparams.grid_size, device=self.device)
        grid = torch.stack(torch.meshgrid(side, side, indexing="xy"), -1).reshape(-1, 2)
        density = torch.cat([self(chunk).exp() for chunk in grid.split(5000)])
        samples = self.flow.sample(self.hparams.n_samples, 2, torch.Generator().manual_seed(0))
        self.train(was_training)
        fig = density_figure(data.cpu(), side.cpu(), density.view(len(side), len(side)).cpu(), samples.cpu())
        save_figure(self.trainer, fig, "cnf_density")
