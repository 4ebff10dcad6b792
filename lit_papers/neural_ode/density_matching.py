"""`DensityMatchingModule`: fit a flow q to an unnormalised 2-D density by reverse KL (Chen et al. 2018, Fig. 4).

No data (``BaseSamplesDataModule`` hands out sample slots): each step draws z0 ~ N(0, I), pushes it
forward to x with log q(x), and minimises

    KL(q || p) = E_q[log q(x) - log p~(x)] + log Z,

with log Z of the target integrated once on a fine grid, so the logged KL is absolute (>= 0).
The flow is the discrete planar NF with K layers (``planar_nf``) or the planar CNF with M units and
its analytic trace (``planar_cnf``); ``width`` is K or M.
"""

from __future__ import annotations


import lightning as L
import torch
from torch import nn

from lit_papers.core import save_figure
from lit_papers.core.optim import Optim, configure_from_hparams
from lit_papers.core.settings import keep_groups
from lit_papers.registry import Registry

from .base_samples import rows_of_step
from .cnf import CNF, standard_normal_logprob
from .densities import get_target, log_normalizer
from .density_figures import grid_densities, matching_figure
from .planar import PlanarField
from .planar_flow import PlanarFlow
from .settings import ODESolve
from .step_logging import ODEStepLogging


class PlanarCNF(nn.Module):
    """The planar CNF (M gated units, analytic trace) seen from the base: z0 at t = T flows back to x at t = 0."""

    def __init__(self, width: int, hyper_hidden: int = 32, **cnf):
        super().__init__()
        self.cnf = CNF(PlanarField(2, width, hyper_hidden), trace="analytic", eval_trace="analytic", **cnf)

    def push_forward(self, z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z0: (N, 2) -> x: (N, 2), log q(x): (N,), the trace integrated in the same solve as x.

        The state (z, s) with ds/dt = tr(df/dz) goes from (z0, 0) at T to (x, s0) at 0, so
        s0 = -integral_0^T tr dt and log q(x) = log N(z0) + integral_0^T tr dt = log N(z0) - s0."""
        block = self.cnf.block
        t = torch.tensor([block.T, 0.0], dtype=z0.dtype, device=z0.device)
        self.cnf.dynamics.resample_noise(z0)
        x, s = block.integrate((z0, torch.zeros_like(z0[:, 0])), t)
        return x[-1], standard_normal_logprob(z0) - s[-1]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnf.log_prob(x)


# Methods as data: the flows by name, each built from the module's hyperparameters.
FLOWS = Registry("flow")
FLOWS.register("planar_nf")(lambda hp: PlanarFlow(2, hp.width))
FLOWS.register("planar_cnf")(lambda hp: PlanarCNF(
    hp.width, hp.hyper_hidden, T=hp.T, **ODESolve.of(hp.ode).kwargs()))


class DensityMatchingModule(ODEStepLogging, L.LightningModule):
    """Reverse-KL density matching of a 2-D target with a planar NF or a planar CNF.

    Args:
        flow: ``planar_nf`` (K planar layers) or ``planar_cnf`` (one field of M planar units).
        width: K for the NF, M for the CNF.
        target: a name in ``densities.TARGETS`` (u1, u2, u3, u4).
        seed: the base samples of step s are drawn from a generator seeded by (seed, s), so a resumed
            run draws exactly the samples an uninterrupted one would; validation always draws the same
            samples (a fixed seed), so epochs compare. How many samples: the datamodule's batch sizes.
        hyper_hidden, T, ode: the CNF's hypernetwork width, flow time and ODE solve (``ODESolve``; unused
            by the NF).
        optim: the optimizer and its schedule (``Optim``), as in ``ClassifierModule``.
        grid_size, n_samples: resolution of the density figure and number of drawn samples.

    Logged: ``train/kl`` (nats, the batch estimate), ``val/kl`` and ``val/kl_se`` (its standard error),
    ``node/nfe_forward``, ``node/nfe_backward`` (CNF), ``node/step_time_ms``.
    """

    checkpoint_monitor: tuple[str, str] = ("val/kl", "min")
    test_after_fit: bool = False

    def __init__(self, flow: str = "planar_cnf", width: int = 32, target: str = "u1",
                 seed: int = 0,
                 hyper_hidden: int = 32, T: float = 1.0,
                 ode: ODESolve = ODESolve(eval_rtol=1e-5, eval_atol=1e-5, adjoint=False),
                 optim: Optim = Optim(lr=1e-2, momentum=0.0), grid_size: int = 100, n_samples: int = 2000):
        super().__init__()
        self.save_hyperparameters()
        keep_groups(self, optim=Optim, ode=ODESolve)
        if width < 1:
            raise ValueError(f"width (K layers or M units) must be >= 1, got {width}")
        self.target = get_target(target)
        self.log_z = log_normalizer(target)
        self.flow = FLOWS.get(flow)(self.hparams)

    def setup(self, stage: str) -> None:
        if getattr(self.trainer, "datamodule", None) is None:
            raise ValueError("DensityMatchingModule draws its own samples but takes their number per step from a "
                             "datamodule: add --data=BaseSamplesDataModule (batch_size, steps_per_epoch, n_eval)")

    # -- the objective -------------------------------------------------------------------------
    def base_samples(self, n: int, seed: int) -> torch.Tensor:
        """n draws of N(0, I) in 2-D from a generator seeded by ``seed``. -> (n, 2) on the module's device."""
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, 2, generator=g).to(self.device)

    def batch_samples(self, batch: torch.Tensor, seed: int) -> torch.Tensor:
        """This rank's rows of the step's draw: the whole draw in one process, a share of it under DDP."""
        n, rows = rows_of_step(batch, self.trainer.world_size)
        return self.base_samples(n, seed)[rows.to(self.device)]

    @property
    def eval_seed(self) -> int:
        return 2**40 + self.hparams.seed  # apart from every training step's seed

    def kl_terms(self, z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample log q(x) - log p(x) (absolute: log Z added), and the samples x. (N,), (N, 2)."""
        x, log_q = self.flow.push_forward(z0)
        return log_q - self.target.log_density(x) + self.log_z, x

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        # A large odd stride keeps (seed, step) pairs of nearby seeds apart.
        z0 = self.batch_samples(batch, self.hparams.seed * 1_000_003 + self.global_step)
        kl = self.kl_terms(z0)[0].mean()
        self.log("train/kl", kl, prog_bar=True)
        if self.solver_block() is not None:
            self.log("node/nfe_forward", float(self.solver_block().nfe_forward), prog_bar=True)
        return kl

    def solver_block(self):
        return self.flow.cnf.block if isinstance(self.flow, PlanarCNF) else None

    @torch.no_grad()
    def kl_samples(self, z0: torch.Tensor, chunk: int = 5000) -> torch.Tensor:
        """Per-sample KL terms of z0 (N, 2) -> (N,) float64, in chunks (a CNF solves per chunk)."""
        return torch.cat([self.kl_terms(c)[0] for c in z0.split(chunk)]).double()

    @staticmethod
    def mean_and_se(terms: torch.Tensor) -> tuple[float, float]:
        return float(terms.mean()), float(terms.std() / terms.numel() ** 0.5)

    def evaluate_kl(self, n: int) -> tuple[float, float]:
        """KL(q || p) from the n validation samples, and its standard error (eval-mode solver tolerances)."""
        return self.mean_and_se(self.kl_samples(self.base_samples(n, self.eval_seed)))

    def validation_step(self, batch, batch_idx: int) -> None:
        # Lightning validates under inference mode; the ODE solve needs plain tensors.
        with torch.inference_mode(False):
            terms = self.kl_samples(self.batch_samples(batch.clone(), self.eval_seed))
        # Every rank holds a share of the same draw: gathered, the estimate is the single-process one.
        kl, se = self.mean_and_se(self.all_gather(terms).reshape(-1))
        self.log("val/kl", kl, prog_bar=True, batch_size=len(batch))
        self.log("val/kl_se", se, batch_size=len(batch))

    def configure_optimizers(self):
        return configure_from_hparams(self)

    # -- figure --------------------------------------------------------------------------------
    @torch.no_grad()
    def on_fit_end(self) -> None:
        was_training = self.training
        self.eval()
        side, p, q = grid_densities(self.hparams.target, lambda x: self.flow.log_prob(x.to(self.device)),
                                    self.hparams.grid_size)
        samples = self.flow.push_forward(self.base_samples(self.hparams.n_samples, 1))[0]
        self.train(was_training)
        title = f"{self.hparams.flow}, width {self.hparams.width}"
        save_figure(self.trainer, matching_figure(side, p, q.cpu(), samples.cpu(), title), "density_matching")
