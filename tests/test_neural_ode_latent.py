"""Latent ODE on irregular spirals: unobserved points are invisible, the ELBO's terms, learning."""

import math

import lightning as L
import pytest
import torch

from lit_papers.core import Optim
from lit_papers.data.spirals import SpiralsDataModule, make_spirals
from lit_papers.neural_ode import ODESolve
from lit_papers.neural_ode.latent_ode import LatentODE, LatentODEModule, elbo


def test_spirals_observe_exactly_n_obs_points_and_alternate_direction():
    x, mask, clean = make_spirals(6, n_times=50, n_obs=12, seed=1)
    assert (mask.sum(1) == 12).all()
    assert (x[~mask] == 0).all() and not torch.equal(x[mask], clean[mask])  # noise on observed
    angle = torch.atan2(clean[..., 1], clean[..., 0])
    turn = torch.remainder(angle[:, 1] - angle[:, 0] + math.pi, 2 * math.pi) - math.pi
    assert ((turn > 0) == torch.tensor([True, False] * 3)).all()
    with pytest.raises(ValueError, match="n_obs"):
        make_spirals(2, n_times=10, n_obs=11)


def test_unobserved_points_change_nothing():
    torch.manual_seed(0)
    model = LatentODE(method="rk4", step_size=0.05)
    x, mask, _ = make_spirals(5, n_times=40, n_obs=10)
    times = torch.linspace(0, 1, 40)
    x2 = x.clone()
    x2[~mask] = torch.randn_like(x2[~mask]) * 100  # garbage where nothing was observed
    m1, v1 = model.encoder(x, mask, times)
    m2, v2 = model.encoder(x2, mask, times)
    assert torch.equal(m1, m2) and torch.equal(v1, v2)
    recon = model.decode_trajectory(m1, times)
    assert torch.equal(elbo(x, mask, recon, m1, v1, 0.1), elbo(x2, mask, recon, m1, v1, 0.1))


def test_trajectory_starts_at_decoded_z0_and_elbo_terms():
    torch.manual_seed(0)
    model = LatentODE(method="dopri5")
    z0 = torch.randn(3, 4)
    recon = model.decode_trajectory(z0, torch.linspace(0, 1, 7))
    torch.testing.assert_close(recon[:, 0], model.decoder(z0))
    # A perfect reconstruction with q = N(0, I): KL = 0, log-likelihood = -n/2 log(2 pi sigma^2).
    x, mask, _ = make_spirals(3, n_times=7, n_obs=4)
    zeros = torch.zeros(3, 4)
    value = elbo(x, mask, x, zeros, zeros, noise_std=0.1)
    torch.testing.assert_close(value, torch.full((3,), -0.5 * 4 * 2 * math.log(2 * math.pi * 0.01)))


def _val_elbo(module, dm) -> float:
    x, mask, _ = dm.splits["val"].tensors
    with torch.no_grad():
        recon, mean, logvar = module.model(x, mask, dm.times, sample=False)
        return elbo(x, mask, recon, mean, logvar, module.hparams.noise_std).mean().item()


def _origin_elbo(dm) -> float:
    """The validation ELBO of a model that decodes the origin at every time with q(z0) = N(0, I)."""
    x, mask, _ = dm.splits["val"].tensors
    zeros = torch.zeros(len(x), 4)
    return elbo(x, mask, torch.zeros_like(x), zeros, zeros, 0.1).mean().item()


def test_latent_ode_module_raises_the_elbo(tmp_path):
    # Training first reaches the ELBO of decoding the origin (-516 here), then leaves it once the
    # latent dynamics fit. Over seeds 0-4, two threads and plain (non-SIMD) kernels, 120 steps
    # ended 33-70 above the origin's ELBO (10 asserted) and 36-156 above the initial one; after
    # 60 steps at lr 1e-2 some seeds were still on the origin's plateau, 0.8 % above their start.
    torch.manual_seed(0)
    dm = SpiralsDataModule(n_train=300, n_val=100, n_test=100, n_times=20, n_obs=10, batch_size=50)
    dm.setup()
    module = LatentODEModule(ode=ODESolve(method="rk4", step_size=0.05, atol=1e-4, adjoint=False), optim=Optim(lr=2e-2))
    trainer = L.Trainer(max_epochs=20, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")
    before, origin = _val_elbo(module, dm), _origin_elbo(dm)
    trainer.fit(module, datamodule=dm)
    assert trainer.logged_metrics["node/nfe_forward"].item() == 80  # 20 RK4 steps on [0, 1]
    assert trainer.logged_metrics["node/nfe_backward"].item() == 0  # backprop through the solver
    after = _val_elbo(module, dm)
    assert after > before and after > origin + 0.02 * abs(origin), (before, origin, after)
