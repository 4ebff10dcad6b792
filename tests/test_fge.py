"""FGE identities: the per-iteration triangle LR, member count, snapshot point, ensemble = mean softmax,
and the equal-budget single network trained in the same run."""

import json

import lightning as L
import pytest
import torch
from lightning.pytorch import Callback

from lit_papers.core import Optim
from lit_papers.core import ClassifierModule
from lit_papers.data import VisionDataModule
from lit_papers.mode_connectivity import FGEModule
from lit_papers.mode_connectivity.fge import CYCLES, ProbabilityEnsemble, ensemble_predict, triangle_lr
from lit_papers.models import build_model

A1, A2 = 0.08, 0.002


def paper_fge_lr(i: int, n: int, alpha1: float, alpha2: float) -> float:
    """Garipov et al. (Sec. 4): iteration i >= 1 of n-iteration cycles, t(i) = (mod(i - 1, n) + 1) / n."""
    t = ((i - 1) % n + 1) / n
    return (1 - 2 * t) * alpha1 + 2 * t * alpha2 if t <= 0.5 else (2 - 2 * t) * alpha2 + (2 * t - 1) * alpha1


def swa_linear(step: int, total: int) -> float:
    t = step / total
    return 1.0 if t <= 0.5 else (1.0 - (t - 0.5) / 0.4 * 0.99 if t <= 0.9 else 0.01)


def test_triangle_lr_at_cycle_start_quarter_middle():
    assert triangle_lr(0.0, A1, A2) == A1
    assert triangle_lr(0.25, A1, A2) == pytest.approx((A1 + A2) / 2)
    assert triangle_lr(0.5, A1, A2) == pytest.approx(A2)
    assert triangle_lr(0.75, A1, A2) == pytest.approx((A1 + A2) / 2)
    assert triangle_lr(1.0, A1, A2) == A1  # periodic


def test_snapshot_ensemble_cosine_restarts():
    # Huang et al.: alpha1/2 (cos(pi p) + 1) inside each cycle, annealed to 0, restarted at alpha1
    lr = CYCLES.get("sse")(A1).lr
    assert lr(0.0) == A1 and lr(1.0) == A1
    assert lr(0.5) == pytest.approx(A1 / 2)
    assert lr(0.999) == pytest.approx(0.0, abs=1e-5 * A1)
    assert CYCLES.get("independent")().lr is None and CYCLES.get("independent")().restart


def test_snapshot_epochs_and_even_cycles():
    assert CYCLES.get("fge")(A1, A2).snapshot_epoch(2) == 0
    assert CYCLES.get("fge")(A1, A2).snapshot_epoch(4) == 1
    assert CYCLES.get("sse")(A1).snapshot_epoch(3) == 2
    with pytest.raises(ValueError, match="even"):
        CYCLES.get("fge")(A1, A2).snapshot_epoch(3)
    with pytest.raises(ValueError, match="fge, independent, sse"):
        FGEModule(schedule="swa")


def test_probability_ensemble_is_the_mean_of_member_softmaxes():
    torch.manual_seed(0)
    members = [torch.nn.Linear(5, 3) for _ in range(4)]
    x = torch.randn(11, 5)
    probs = [torch.softmax(m(x), -1) for m in members]
    ens = ProbabilityEnsemble()
    for p in probs:
        ens.add(p)
    expected = torch.stack(probs).mean(0)
    torch.testing.assert_close(ens.probs.float(), expected)
    torch.testing.assert_close(ensemble_predict(members, x), expected)
    logit_mean = torch.softmax(torch.stack([m(x) for m in members]).mean(0), -1)
    assert not torch.allclose(logit_mean, expected)  # averaging logits would be a different ensemble


class _RecordLR(Callback):
    def __init__(self):
        self.lrs, self.single_lrs, self.states, self.starts, self.opt_state = {}, {}, {}, {}, {}
        self.single_states = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        groups = trainer.optimizers[0].param_groups
        self.lrs[trainer.global_step] = groups[0]["lr"]  # the LR this step's optimizer update uses
        if len(groups) > 1:
            self.single_lrs[trainer.global_step] = groups[1]["lr"]
        if batch_idx == 0:  # after the module's on_train_epoch_start: the weights the epoch starts from
            self.starts[trainer.current_epoch] = {k: v.clone() for k, v in pl_module.net.state_dict().items()}
            self.opt_state[trainer.current_epoch] = len(trainer.optimizers[0].state)

    def on_train_epoch_end(self, trainer, pl_module):
        self.states[trainer.current_epoch] = {k: v.clone() for k, v in pl_module.net.state_dict().items()}
        if getattr(pl_module, "single", None) is not None:
            self.single_states[trainer.current_epoch] = {k: v.clone() for k, v in pl_module.single.state_dict().items()}


def _trainer(max_epochs, batches, callbacks=()):
    return L.Trainer(max_epochs=max_epochs, limit_train_batches=batches,
                     limit_val_batches=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks),
                     accelerator="cpu")


def _fit(schedule="fge", pretrain=1, cycle=2, cycles=3, batches=4, single=False, horizon="pretrain",
         single_lr=None):
    dm = VisionDataModule(dataset="digits", batch_size=32, val_size=100, eval_batch_size=500)
    model = FGEModule(arch="mlp", arch_kwargs={"hidden": [32], "batch_norm": True},
                      schedule=schedule, alpha1=A1, alpha2=A2, cycle_epochs=cycle, pretrain_epochs=pretrain,
                      single_baseline=single, pretrain_horizon=horizon, single_lr=single_lr)
    record = _RecordLR()
    trainer = _trainer(pretrain + cycles * cycle, batches, [record])
    trainer.fit(model, datamodule=dm)
    return model, record, dm, trainer


def test_fge_fit_applies_the_papers_lr_at_every_step():
    model, record, _, _ = _fit()
    cycle_steps, start = 8, 4  # one pretraining epoch of 4 steps, then cycles of 2 epochs x 4 steps
    assert sorted(record.lrs) == list(range(start + 3 * cycle_steps))
    for step in range(start):  # pretraining: the ordinary recipe (swa_linear) over its own epochs
        assert record.lrs[step] == pytest.approx(0.05 * swa_linear(step, start), rel=1e-12)
    for step in range(start, start + 3 * cycle_steps):
        i = step - start + 1  # the paper's iteration count inside the cycling phase
        assert record.lrs[step] == pytest.approx(paper_fge_lr(i, cycle_steps, A1, A2), rel=1e-12), step
    for k in range(3):
        s = start + k * cycle_steps
        # The cycle's first step is one step down the triangle; its last step is back at alpha1.
        assert record.lrs[s] == pytest.approx(A1 - 2 * (A1 - A2) / cycle_steps)
        assert record.lrs[s + cycle_steps - 1] == pytest.approx(A1)
        # The step just before the snapshot (last step of the cycle's first epoch) takes exactly alpha2.
        assert record.lrs[s + cycle_steps // 2 - 1] == pytest.approx(A2)
        assert record.lrs[s + cycle_steps // 4 - 1] == pytest.approx((A1 + A2) / 2)
    assert min(record.lrs.values()) == pytest.approx(A2)


def test_fge_fit_lr_members_and_ensemble():
    model, record, dm, trainer = _fit()
    assert model.ensemble.members == 3 == len(model.members) == model.num_members  # epochs / c
    # Members are the weights at the end of the first epoch of each cycle, where the LR reaches alpha2.
    for k, state in enumerate(model.members):
        epoch = 1 + 2 * k
        for name, value in state.items():
            assert torch.equal(value, record.states[epoch][name]), (k, name)
    x = dm.test_x
    nets = model.member_networks()
    manual = torch.stack([torch.softmax(net(x), -1) for net in nets]).mean(0)
    torch.testing.assert_close(model.ensemble.probs.float(), manual, atol=1e-6, rtol=0)
    torch.testing.assert_close(model.ensemble_forward(x), manual)
    logged = trainer.callback_metrics
    acc = (manual.argmax(1) == dm.test_y).float().mean().item()
    assert logged["fge/ensemble_acc"].item() == pytest.approx(acc, abs=1e-6)
    nll = -manual.gather(1, dm.test_y[:, None]).log().mean().item()
    assert logged["fge/ensemble_nll"].item() == pytest.approx(nll, rel=1e-4)
    assert logged["fge/members"].item() == 3
    # The run records where each member was taken: after epochs 1, 3, 5 (4 steps each), whose last step ran at alpha2;
    # the LR curve of the run folder's figure is the applied LR of every step.
    assert [h["step"] for h in model.history] == [8, 16, 24]
    assert all(record.lrs[h["step"] - 1] == pytest.approx(A2) for h in model.history)
    curve = model.lr_curves()["fge"]
    assert len(curve) == len(record.lrs) and all(curve[i] == pytest.approx(record.lrs[i], rel=1e-12)
                                                 for i in range(len(curve)))


def test_independent_members_restart_from_fresh_weights():
    # The run seed: member k > 0 is initialised from seed (run seed + 10,000 k) mod 2**63; a 64-bit
    # run seed near the top of the range must not overflow.
    seed = 2**64 - 3
    torch.manual_seed(seed)
    model, record, dm, _ = _fit(schedule="independent", pretrain=0, cycle=1, cycles=2, batches=4)
    assert model.ensemble.members == 2
    # Each member follows the module's own recipe (lr 0.05, swa_linear), restarted every cycle.
    assert record.lrs[0] == pytest.approx(0.05) and record.lrs[4] == pytest.approx(0.05)
    assert record.lrs[3] == record.lrs[7] == pytest.approx(0.05 * (1 - 0.25 / 0.4 * 0.99))
    # Member 1 starts from a fresh network (weights and BatchNorm statistics), not from member 0,
    # and with fresh optimizer state (no momentum carried over).
    torch.manual_seed((seed + 10_000) % 2**63)
    fresh = build_model("mlp", dm.input_shape, dm.num_classes, hidden=[32], batch_norm=True).state_dict()
    for name, value in fresh.items():
        assert torch.equal(record.starts[1][name], value), name
    assert not torch.equal(record.starts[1]["layers.1.weight"], record.states[0]["layers.1.weight"])
    assert record.opt_state[1] == 0 and record.opt_state[0] == 0
    with pytest.raises(ValueError, match="pretrain_epochs: 0"):
        FGEModule(schedule="independent", pretrain_epochs=5)


def test_single_baseline_is_the_ordinary_recipe_trained_in_the_same_run():
    torch.manual_seed(3)
    model, record, dm, trainer = _fit(single=True)
    total = 4 + 3 * 8
    for step in range(total):  # the ordinary schedule over the whole budget, on the second group
        assert record.single_lrs[step] == pytest.approx(0.05 * swa_linear(step, total), rel=1e-12)
    # The same seed's network with that schedule, trained alone, ends at the same weights.
    torch.manual_seed(3)
    alone = ClassifierModule(arch="mlp", arch_kwargs={"hidden": [32], "batch_norm": True},
                             optim=Optim(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="swa_linear"))
    _trainer(total // 4, 4).fit(alone, datamodule=VisionDataModule(dataset="digits", batch_size=32, val_size=100,
                                                                   eval_batch_size=500))
    for name, value in alone.net.state_dict().items():
        torch.testing.assert_close(model.single.state_dict()[name], value, rtol=1e-5, atol=1e-6, msg=name)
    # Logged: the single network's test accuracy and NLL after the last epoch.
    probs = torch.softmax(alone.net.eval()(dm.test_x), -1)
    logged = trainer.callback_metrics
    assert logged["fge/single_acc"].item() == pytest.approx((probs.argmax(1) == dm.test_y).float().mean().item())
    nll = -probs.gather(1, dm.test_y[:, None]).log().mean().item()
    assert logged["fge/single_nll"].item() == pytest.approx(nll, rel=1e-4)
    assert {"fge/val_single_acc", "fge/val_ensemble_acc", "fge/val_best_member_acc"} <= set(logged)
    # The twin does not perturb FGE: the members are those of the same run without it.
    torch.manual_seed(3)
    without, _, _, _ = _fit(single=False)
    for got, expected in zip(model.members, without.members):
        for name, value in expected.items():
            torch.testing.assert_close(got[name], value, rtol=0, atol=0, msg=name)


def test_budget_horizon_pretrains_with_the_single_networks_schedule_prefix():
    # The paper's FGE starts from epoch 160 of a 200-epoch run: pretraining is the recipe's prefix.
    model, record, _, _ = _fit(pretrain=2, cycle=2, cycles=2, single=True, horizon="budget")
    total, pre = 4 * 6, 4 * 2
    for step in range(pre):
        assert record.lrs[step] == record.single_lrs[step] == pytest.approx(0.05 * swa_linear(step, total))
    for step in range(pre, total):
        assert record.lrs[step] == pytest.approx(paper_fge_lr(step - pre + 1, 8, A1, A2))
    # Same initial weights, batches and LRs: the two networks are identical until the first cycle.
    for name, value in record.states[1].items():
        assert torch.equal(record.single_states[1][name], value), name
    assert not torch.equal(record.single_states[5]["layers.1.weight"], record.states[5]["layers.1.weight"])
    with pytest.raises(ValueError, match="pretrain_horizon"):
        FGEModule(pretrain_horizon="epochs")


def test_single_lr_sets_only_the_single_networks_schedule():
    _, record, _, _ = _fit(pretrain=1, cycle=2, cycles=1, single=True, single_lr=0.02)
    for step in range(12):
        assert record.single_lrs[step] == pytest.approx(0.02 * swa_linear(step, 12), rel=1e-12)
    assert record.lrs[0] == pytest.approx(0.05) and record.lrs[4] == pytest.approx(paper_fge_lr(1, 8, A1, A2))
    with pytest.raises(ValueError, match="single_lr"):
        FGEModule(single_lr=0.0)


def test_fge_mnist1d_config_smoke_records_the_equal_budget_comparison(run_cli, tmp_path):
    from lit_papers.mode_connectivity import fge_report

    folder = run_cli(["fit", "--config", "configs/fge_mnist1d.yaml", "--config", "configs/overlays/debug.yaml",
                      "--trainer.max_epochs=5", "--model.init_args.pretrain_epochs=1",
                      "--model.init_args.cycle_epochs=2"])
    final = json.loads((folder / "summary.json").read_text())["final"]
    record = fge_report.read_run(folder)
    assert [m["fge/members"] for m in record["members"]] == [1.0, 2.0]
    assert final["fge/ensemble_acc"] == pytest.approx(record["members"][-1]["fge/ensemble_acc"])
    assert final["fge/best_member_acc"] == pytest.approx(max(m["fge/member_acc"] for m in record["members"]))
    assert final["fge/single_acc"] == pytest.approx(record["single"]["fge/single_acc"])
    assert 0.0 <= final["fge/single_acc"] <= 1.0 and record["config"]["single_baseline"]
    assert (folder / "figures" / "fge_lr.png").stat().st_size > 0  # LR per step with the snapshot points
    out = tmp_path / "fig.png"
    table = fge_report.main(["--group", "fge", str(folder), "--out", str(out)])
    assert "fge ensemble" in table and "single network" in table and out.stat().st_size > 0


def test_report_table_is_mean_and_sample_sd_over_seeds(tmp_path):
    from lit_papers.mode_connectivity import fge_report

    def run(seed, accs, ens, single):
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        members = [{"fge/members": k + 1.0, "fge/member_acc": a, "fge/member_nll": 1.0 - a,
                    "fge/ensemble_acc": e, "fge/ensemble_nll": 0.5} for k, (a, e) in enumerate(zip(accs, ens))]
        (folder / "fge.json").write_text(json.dumps({"config": {"max_epochs": 40}, "members": members,
                                                     "single": {"fge/single_acc": single, "fge/single_nll": 0.9}}))
        return folder

    folders = [run(0, [0.60, 0.70], [0.60, 0.66], 0.64), run(1, [0.65, 0.62], [0.65, 0.70], 0.62)]
    table = fge_report.rows({"fge": [fge_report.read_run(f) for f in folders]})
    ens, best, single = table
    assert ens["acc"] == [0.66, 0.70] and best["acc"] == [0.70, 0.65] and single["acc"] == [0.64, 0.62]
    assert best["nll"] == pytest.approx([0.30, 0.35])  # the NLL of the most accurate member
    text = fge_report.markdown_table(table)
    assert "| fge ensemble | 2 | 40 | 68.00 ± 2.83 % (66.0, 70.0) | 0.500 ± 0.000 (0.500, 0.500) | 2 |" in text
