"""Identities of density matching (Chen et al. 2018, Fig. 4): the planar NF's log-det, invertibility and
normalisation; the CNF's reverse-direction log q; the KL objective; and that training lowers it."""

import math

import pytest
import torch

from lit_papers.core import Optim
from lit_papers.neural_ode import CNF, TARGETS, PlanarField, PlanarFlow, PlanarLayer, standard_normal_logprob
from lit_papers.neural_ode.densities import get_target, grid, log_normalizer
from lit_papers.neural_ode.base_samples import rows_of_step
from lit_papers.neural_ode.density_matching import DensityMatchingModule, PlanarCNF


def _layer(seed: int) -> PlanarLayer:
    torch.manual_seed(seed)
    layer = PlanarLayer(2).double()
    with torch.no_grad():  # a strongly non-identity layer: large u, shifted bias
        layer.u.copy_(torch.randn(2, dtype=torch.float64) * 3)
        layer.b.fill_(0.7)
    return layer


def _random_flow(depth: int, seed: int) -> PlanarFlow:
    """Layers far from their near-identity init: random u (so w^T u_hat != 0, volume changes) and b."""
    torch.manual_seed(seed)
    flow = PlanarFlow(2, depth=depth).double()
    with torch.no_grad():
        for layer in flow.layers:
            layer.u.copy_(torch.randn(2, dtype=torch.float64))
            layer.b.copy_(torch.randn((), dtype=torch.float64))
    return flow


@pytest.mark.parametrize("seed", range(5))
def test_planar_log_det_equals_log_abs_det_of_autograd_jacobian(seed):
    layer = _layer(seed)
    z = torch.randn(7, 2, dtype=torch.float64)
    _, log_det = layer(z)
    for i in range(len(z)):
        jac = torch.autograd.functional.jacobian(lambda p: layer(p[None])[0][0], z[i])
        expected = torch.linalg.slogdet(jac).logabsdet
        torch.testing.assert_close(log_det[i], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_u_hat_keeps_w_dot_u_above_minus_one_so_every_layer_is_invertible(seed):
    layer = _layer(seed)
    with torch.no_grad():  # u pointing against w: without u_hat the layer would fold the plane
        layer.u.copy_(-10.0 * (seed + 1) * layer.w)
        assert float(layer.w @ layer.u) < -1
        # w^T u_hat = -1 + softplus(w^T u): above -1, up to rounding when softplus underflows.
        assert float(layer.w @ layer.u_hat()) >= -1 - 1e-12
    y = torch.randn(50, 2, dtype=torch.float64) * 3
    torch.testing.assert_close(layer(layer.inverse(y))[0], y, rtol=1e-10, atol=1e-10)


def test_planar_flow_inverse_recovers_the_base_sample_and_log_prob_matches_push_forward():
    flow = _random_flow(8, 0)
    z0 = torch.randn(100, 2, dtype=torch.float64)
    x, log_q = flow.push_forward(z0)
    assert (log_q - standard_normal_logprob(z0)).abs().mean() > 0.2  # the volume changes
    torch.testing.assert_close(flow.log_prob(x), log_q, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_planar_flow_density_integrates_to_one_on_a_grid(depth):
    flow = _random_flow(depth, depth)
    side, points = grid(9.0, 301)
    mass = flow.log_prob(points).exp().sum() * float(side[1] - side[0]) ** 2
    assert abs(float(mass) - 1) < 1e-6


def test_identity_init_flows_match_the_base_density_with_zero_kl():
    # Target = the base N(0, I): an identity NF (init_scale 0) and a CNF whose field is 0 have KL exactly 0.
    nf = DensityMatchingModule(flow="planar_nf", width=4, target="normal")
    nf.flow = PlanarFlow(2, depth=4, init_scale=0.0)
    cnf = DensityMatchingModule(flow="planar_cnf", width=4, target="normal")
    with torch.no_grad():
        cnf.flow.cnf.dynamics.field.hyper[-1].weight.zero_()
        cnf.flow.cnf.dynamics.field.hyper[-1].bias.zero_()
    assert cnf.log_z == pytest.approx(math.log(2 * math.pi), abs=1e-9)
    for module in (nf, cnf):
        kl, se = module.evaluate_kl(2000)
        assert abs(kl) < 1e-5 and se < 1e-6
    # A flow that is not the identity pays a positive KL against the same target.
    nf.flow = PlanarFlow(2, depth=4, init_scale=1.0)
    kl, se = nf.evaluate_kl(2000)
    assert kl > 5 * se > 0


def test_cnf_push_forward_log_q_equals_cnf_log_prob_of_its_samples():
    # Reverse solve (z0 at T -> x at 0, trace in the same solve) against CNF.log_prob's forward solve from x.
    torch.manual_seed(0)
    flow = PlanarCNF(width=8, method="dopri5", rtol=1e-10, atol=1e-10).double()
    with torch.no_grad():
        flow.cnf.dynamics.field.hyper[-1].weight.mul_(3)  # a field that moves points and changes volume
    z0 = torch.randn(64, 2, dtype=torch.float64)
    x, log_q = flow.push_forward(z0)
    assert (x - z0).norm(dim=1).mean() > 0.3
    assert (log_q - standard_normal_logprob(z0)).abs().mean() > 0.5
    reference = CNF(flow.cnf.dynamics.field, trace="exact", method="dopri5", rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(reference.log_prob(x), log_q, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(reference(x)[0], z0, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(flow.log_prob(x), log_q, rtol=1e-7, atol=1e-7)  # the analytic trace too


def test_log_normalizer_of_the_standard_normal_is_log_two_pi():
    assert log_normalizer("normal") == pytest.approx(math.log(2 * math.pi), abs=1e-9)


def test_unknown_target_and_flow_names_list_the_valid_ones():
    assert {"u1", "u2", "u3", "u4", "normal"} <= set(TARGETS)
    with pytest.raises(ValueError, match="valid target density names: normal, u1"):
        get_target("banana")
    with pytest.raises(ValueError, match="planar_cnf, planar_nf"):
        DensityMatchingModule(flow="radial_nf")
    with pytest.raises(ValueError, match="width"):
        DensityMatchingModule(flow="planar_nf", width=0)


def _train(module, steps: int) -> None:
    opt = torch.optim.Adam(module.parameters(), lr=module.hparams.optim["lr"])
    for step in range(steps):
        loss = module.kl_terms(module.base_samples(128, step))[0].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("flow", ["planar_nf", "planar_cnf"])
def test_short_training_lowers_the_kl(flow):
    torch.manual_seed(0)
    module = DensityMatchingModule(flow=flow, width=4, target="u1", optim=Optim(lr=0.02))
    before, se = module.evaluate_kl(2000)
    _train(module, 40)
    after, se_after = module.evaluate_kl(2000)
    assert after < before - 1.0 and after > -3 * se_after, (before, after)


def test_cnf_field_is_the_paper_planar_field():
    module = DensityMatchingModule(flow="planar_cnf", width=5, hyper_hidden=8)
    field = module.flow.cnf.dynamics.field
    assert isinstance(field, PlanarField) and field.width == 5
    assert module.flow.cnf.dynamics.trace_name == "analytic"


def test_ddp_ranks_share_exactly_the_single_process_draw():
    # DistributedSampler without shuffling: rank r takes epoch indices r, r + W, ... in batches of B / W.
    batch_size, world, step = 8, 2, 3
    single = torch.arange(step * batch_size, (step + 1) * batch_size)
    n, rows = rows_of_step(single, 1)
    assert n == batch_size and torch.equal(rows, torch.arange(batch_size))
    shares = [single[r::world] for r in range(world)]
    gathered = torch.cat([rows_of_step(share, world)[1] for share in shares])
    assert all(rows_of_step(share, world)[0] == batch_size for share in shares)
    assert sorted(gathered.tolist()) == list(range(batch_size))


def test_the_module_asks_for_the_datamodule_it_needs(tmp_path, capsys):
    from lit_papers.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model=DensityMatchingModule", "--model.flow=planar_nf", "--trainer.max_epochs=1",
              f"--run_root={tmp_path}", "--trainer.enable_progress_bar=false"])
    assert exit_info.value.code == 2
    assert "--data=BaseSamplesDataModule" in capsys.readouterr().err
