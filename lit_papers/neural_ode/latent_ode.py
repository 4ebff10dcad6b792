"""Latent ODE for irregularly sampled time series (Chen et al. 2018, section 5).

A GRU reads the observed points backwards in time and outputs q(z0 | x). A latent trajectory
z(t) = ODESolve(z0, f, t0, t) is decoded to the data space at every grid time. Training
maximises the ELBO: the Gaussian log-likelihood of the observed points only, minus
KL(q(z0) || N(0, I)). Unobserved points never enter the encoder or the likelihood.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import nn

from lit_papers.core import save_figure
from lit_papers.core.optim import Optim, configure_from_hparams
from lit_papers.core.settings import keep_groups

from .latent_encoder import BackwardGRUEncoder, LatentTrajectoryModel
from .odeblock import ODEBlock
from .rnn_baseline import LatentRNN
from .settings import ODESolve
from .step_logging import ODEStepLogging


class LatentDynamics(nn.Module):
    """Autonomous latent field f(z): latent -> hidden -> latent (ELU)."""

    def __init__(self, latent: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(),
                                 nn.Linear(hidden, latent))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class LatentODE(LatentTrajectoryModel):
    """Encoder -> z0 -> ODE solve over ``times`` -> decoder. Solver arguments go to ``ODEBlock``."""

    def __init__(self, obs_dim: int = 2, latent: int = 4, rnn_hidden: int = 25, hidden: int = 20,
                 **solver):
        super().__init__()
        self.encoder = BackwardGRUEncoder(obs_dim, rnn_hidden, latent)
        self.block = ODEBlock(LatentDynamics(latent, hidden), **solver)
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ELU(), nn.Linear(hidden, obs_dim))

    def decode_trajectory(self, z0: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """z0: (N, latent) -> decoded points at every time: (N, T, obs_dim)."""
        z = self.block.integrate(z0, times)  # (T, N, latent)
        return self.decoder(z).transpose(0, 1)


def elbo(x, mask, recon, mean, logvar, noise_std: float) -> torch.Tensor:
    """Per-trajectory ELBO (N,): Gaussian log-likelihood over observed points minus KL(q || N(0, I))."""
    var = noise_std**2
    log_lik = -0.5 * ((x - recon) ** 2 / var + math.log(2 * math.pi * var))  # (N, T, D)
    log_lik = (log_lik * mask[..., None]).sum(dim=(1, 2))
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(dim=1)
    return log_lik - kl


class LatentODEModule(ODEStepLogging, L.LightningModule):
    """Latent ODE trained on the ELBO; reports RMSE of the decoded mean trajectory.

    Args:
        latent, rnn_hidden, hidden: latent size, encoder GRU width, dynamics/decoder width.
        decoder: ``"ode"`` (the latent ODE) or ``"rnn"``, the baseline of ``rnn_baseline.py``: the
            same encoder and ELBO with a GRU stepped over the grid times instead of the ODE solve
            (``hidden`` is then the GRU width; 13 matches the latent ODE's parameter count).
        noise_std: observation noise of the Gaussian likelihood.
        ode: the latent ODE solve (``ODESolve``).
        optim: the optimizer and its schedule (``Optim``), as in ``ClassifierModule``.

    Logged: ``train/elbo`` (per trajectory), ``val/rmse``, ``test/rmse`` (all grid times, against
    the noiseless spiral), ``test/rmse_observed``, ``node/step_time_ms``, and with
    ``decoder="ode"`` ``node/nfe_forward``, ``node/nfe_backward``.
    """

    checkpoint_monitor: tuple[str, str] = ("val/rmse", "min")
    test_after_fit: bool = True

    def __init__(self, latent: int = 4, rnn_hidden: int = 25, hidden: int = 20, noise_std: float = 0.1,
                 ode: ODESolve = ODESolve(atol=1e-4, adjoint=False), optim: Optim = Optim(lr=1e-2, momentum=0.0),
                 decoder: str = "ode"):
        super().__init__()
        self.save_hyperparameters()
        keep_groups(self, optim=Optim, ode=ODESolve)
        if decoder == "ode":
            self.model = LatentODE(2, latent, rnn_hidden, hidden, **ODESolve.of(self.hparams.ode).kwargs())
        elif decoder == "rnn":
            self.model = LatentRNN(2, latent, rnn_hidden, hidden)
        else:
            raise ValueError(f"decoder must be 'ode' (latent ODE) or 'rnn' (GRU baseline), got {decoder!r}")

    def _times(self) -> torch.Tensor:
        return self.trainer.datamodule.times.to(self.device)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, mask, _ = batch
        recon, mean, logvar = self.model(x, mask, self._times())
        loss = -elbo(x, mask, recon, mean, logvar, self.hparams.noise_std).mean()
        self.log("train/elbo", -loss, prog_bar=True)
        if self.model.block is not None:
            self.log("node/nfe_forward", float(self.model.block.nfe_forward))
        return loss

    def solver_block(self):
        return self.model.block

    def _eval(self, batch, split: str) -> None:
        x, mask, clean = batch
        recon, _, _ = self.model(x, mask, self._times(), sample=False)
        sq = (recon - clean).pow(2).sum(-1)  # (N, T)
        self.log(f"{split}/rmse", sq.mean().sqrt(), prog_bar=split == "val")
        self.log(f"{split}/rmse_observed", (sq * mask).sum().div(mask.sum()).sqrt())

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval(batch, "test")

    def configure_optimizers(self):
        return configure_from_hparams(self)

    @torch.no_grad()
    def on_fit_end(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None:
            return
        x, mask, clean = (t[:6].to(self.device) for t in next(iter(dm.val_dataloader())))
        was_training = self.training
        self.eval()
        recon, _, _ = self.model(x, mask, self._times(), sample=False)
        self.train(was_training)
        label = "latent ODE" if self.hparams.decoder == "ode" else "GRU decoder"
        save_figure(self.trainer, trajectories_figure(x.cpu(), mask.cpu(), clean.cpu(), recon.cpu(), label),
                    "latent_ode_spirals")


def trajectories_figure(x, mask, clean, recon, label: str = "latent ODE"):
    """Observed points, true spiral and the model's mean trajectory for a few series."""
    import matplotlib.pyplot as plt

    n = len(x)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.8))
    for i, ax in enumerate(axes if n > 1 else [axes]):
        ax.plot(clean[i, :, 0], clean[i, :, 1], color="0.7", lw=1, label="truth")
        ax.plot(recon[i, :, 0], recon[i, :, 1], color="C1", lw=1.2, label=label)
        obs = x[i][mask[i]]
        ax.scatter(obs[:, 0], obs[:, 1], s=6, color="C0", label="observed", zorder=3)
        ax.set(xticks=[], yticks=[], aspect="equal")
    axes[0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    return fig
