"""CNFModule and the 2D toy densities: the flow learns two moons; the densities have their shapes."""

import lightning as L
import pytest
import torch

from lit_papers.core import Optim
from lit_papers.data.toy2d import DENSITIES, Toy2DDataModule, sample_toy2d
from lit_papers.neural_ode import CNFModule, ODESolve


def test_cnf_module_learns_two_moons(tmp_path):
    torch.manual_seed(0)
    dm = Toy2DDataModule("moons", n_train=512, n_val=256, n_test=256, batch_size=128)
    module = CNFModule(hidden=(32, 32), ode=ODESolve(rtol=1e-3, atol=1e-3, eval_rtol=1e-3, eval_atol=1e-3),
                       optim=Optim(lr=1e-2), trace="hutchinson", grid_size=10, n_samples=50)
    trainer = L.Trainer(max_epochs=8, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")
    before = trainer.validate(module, datamodule=dm, verbose=False)[0]["val/nll"]
    trainer.fit(module, datamodule=dm)
    assert trainer.logged_metrics["node/nfe_backward"].item() > 0  # adjoint by default
    after = trainer.validate(module, datamodule=dm, verbose=False)[0]["val/nll"]
    assert after < before - 0.3, (before, after)
    samples = module.flow.sample(100, 2)
    assert samples.shape == (100, 2) and torch.isfinite(samples).all()


@pytest.mark.parametrize("name", sorted(DENSITIES))
def test_densities_are_seeded_and_bounded(name):
    x = sample_toy2d(name, 1000, seed=3)
    assert x.shape == (1000, 2) and x.dtype == torch.float32
    assert torch.equal(x, sample_toy2d(name, 1000, seed=3))
    assert not torch.equal(x, sample_toy2d(name, 1000, seed=4))
    assert x.abs().max() < 6


def test_density_shapes():
    radius = sample_toy2d("circles", 4000, noise=0.0).norm(dim=1)
    assert torch.allclose(radius[radius > 2.25], torch.tensor(3.0)) and (radius < 2.25).float().mean() > 0.4
    board = sample_toy2d("checkerboard", 4000)
    cells = (board / 2).floor().long()
    assert ((cells[:, 0] + cells[:, 1]) % 2).unique().numel() == 1  # only one colour of square
    modes = sample_toy2d("8gaussians", 4000, noise=0.0)
    assert torch.atan2(modes[:, 1], modes[:, 0]).mul(4 / torch.pi).round().unique().numel() == 8


def test_unknown_density_lists_valid_names():
    with pytest.raises(ValueError, match="valid densities.*moons"):
        Toy2DDataModule("spiral")


def test_planar_field_module_matches_exact_trace_and_rejects_bad_names():
    torch.manual_seed(0)
    module = CNFModule(dim=2, field="planar", width=8, hidden=(16,), trace="analytic",
                       eval_trace="analytic", ode=ODESolve(rtol=1e-6, atol=1e-6)).eval()
    x = torch.randn(5, 2)
    exact = CNFModule(dim=2, field="planar", width=8, hidden=(16,), ode=ODESolve(rtol=1e-6, atol=1e-6)).eval()
    exact.load_state_dict(module.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(module(x), exact(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="valid.*planar"):
        CNFModule(field="radial")
