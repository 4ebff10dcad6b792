"""LotteryTicketModule: IMP levels inside one fit, resets, controls, resume, determinism."""

import json

import lightning as L
import pytest
import torch
from conftest import StopAtEpoch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lit_papers.core import Optim
from lit_papers.data import VisionDataModule
from lit_papers.lottery import LotteryTicketModule, prune
from lit_papers.lottery.imp import NEVER
from lit_papers.lottery.pruning import prune_count, prune_lowest
from lit_papers.lottery.snapshots import fresh_init, snapshot


def member0(model, key: str) -> dict:
    """The single run's entry `key` of its IMP state (K = 1), without the member axis."""
    return {name: value[0] for name, value in getattr(model.imp, key).items()}


class LevelStarts(Callback):
    """Records net state, masks and the optimizer at the first batch of every level."""

    def __init__(self):
        self.at = {}
        self.by_step = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        step = trainer.global_step
        self.by_step[step] = snapshot(module.net)
        for lvl in range(module.plan.levels):
            if step == module.plan.start(lvl) and lvl not in self.at:
                opt = trainer.optimizers[0]
                self.at[lvl] = dict(state=snapshot(module.net), masks=module.masks.as_dict(),
                                    opt=opt, opt_state=len(opt.state), lr=opt.param_groups[0]["lr"])


class StopAtStep(Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            trainer.should_stop = True


def fit(callbacks=(), ckpt_path=None, seed=0, trainer_kw=None, on_device=True, **kw):
    L.seed_everything(seed, verbose=False)
    dm = VisionDataModule("mnist5k", batch_size=20, val_size=100, train_subset=100, on_device=on_device)
    model = LotteryTicketModule(**{"rounds": 2, "round_steps": 20, **kw})
    trainer = L.Trainer(accelerator="cpu", devices=1, val_check_interval=10, check_val_every_n_epoch=None,
                        num_sanity_val_steps=0, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=list(callbacks),
                        **{"enable_checkpointing": False, **(trainer_kw or {})})
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model, trainer


@pytest.fixture(scope="module")
def ticket_run(tmp_path_factory):
    rec = LevelStarts()
    ckpt_dir = tmp_path_factory.mktemp("ticket")
    model, trainer = fit([rec, ModelCheckpoint(dirpath=ckpt_dir, save_last=True)],
                         trainer_kw={"enable_checkpointing": True})
    return model, trainer, rec, ckpt_dir / "last.ckpt"


def test_levels_prune_reset_survivors_to_theta0_bit_exact(ticket_run):
    model, trainer, rec, _ = ticket_run
    assert trainer.global_step == model.plan.total_steps == 60
    assert [row["level"] for row in model.history] == [0, 1, 2]
    kept = {n: m.numel() for n, m in rec.at[0]["masks"].items()}
    for lvl in (1, 2):
        start = rec.at[lvl]
        for name, value in start["state"].items():
            theta0 = member0(model, "theta0")[name]
            if name in start["masks"]:
                m = start["masks"][name]
                assert torch.equal(value[m], theta0[m]) and bool((value[~m] == 0).all())
            else:  # biases included: exactly theta0
                assert torch.equal(value, theta0), name
        for name, m in start["masks"].items():
            kept[name] -= prune_count(kept[name], model.rates[name])
            assert int(m.sum()) == kept[name]
            assert not (m & ~rec.at[lvl - 1]["masks"][name]).any()  # nested
        # a fresh optimizer (no state) every level
        assert start["opt"] is not rec.at[lvl - 1]["opt"] and start["opt_state"] == 0
    out = model.rates["layers.5.weight"]
    assert out == pytest.approx(model.rates["layers.1.weight"] / 2)


def test_pruned_weights_exactly_zero_after_training(ticket_run):
    model, *_ = ticket_run
    params = dict(model.net.named_parameters())
    for name, m in model.masks.items():
        assert bool((params[name][~m] == 0.0).all()) and (~m).any()


def test_history_reports_validation_selected_iteration(ticket_run):
    model, *_ = ticket_run
    for row in model.history:
        assert row["es_iteration"] in (10, 20)
        assert row["es_val_loss"] <= row["final_val_loss"]
        assert 0.0 < row["es_test_acc"] <= 1.0
    densities = [row["percent_remaining"] for row in model.history]
    assert densities[0] == 100.0 and densities[0] > densities[1] > densities[2]


def test_resume_mid_round_equals_uninterrupted(ticket_run, tmp_path):
    full, *_ = ticket_run
    # 100 examples / batch 20 = 5 steps per epoch: epoch 6 ends at step 35, inside level 1 (20..40).
    # The checkpoint is taken at an epoch boundary: the batch order is a function of the epoch.
    cb = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=5)
    part, trainer = fit([StopAtEpoch(6), cb], trainer_kw={"enable_checkpointing": True})
    assert trainer.global_step == 35 and part.level == 1
    resumed, trainer = fit([], ckpt_path=str(tmp_path / "last.ckpt"))
    assert trainer.global_step == 60 and resumed.level == 2
    assert all(torch.equal(member0(resumed, "theta0")[k], member0(full, "theta0")[k]) for k in member0(full, "theta0"))
    for name, m in full.masks.items():
        assert torch.equal(resumed.masks[name], m)
        assert torch.equal(member0(resumed, "pruned_at")[name], member0(full, "pruned_at")[name])
    for k, v in full.net.state_dict().items():
        assert torch.equal(resumed.net.state_dict()[k], v), k
    assert resumed.history == full.history


def test_same_seed_same_masks_other_seed_other_masks(ticket_run):
    full, *_ = ticket_run
    again, _ = fit()
    other, _ = fit(seed=1)
    full_pruned_at = member0(full, "pruned_at")
    assert all(torch.equal(member0(again, "pruned_at")[n], full_pruned_at[n]) for n in full_pruned_at)
    assert not torch.equal(member0(other, "pruned_at")["layers.1.weight"], full_pruned_at["layers.1.weight"])


def test_reinit_keeps_ticket_masks_with_fresh_init(ticket_run):
    ticket, _, _, ckpt = ticket_run
    rec = LevelStarts()
    model, _ = fit([rec], control="reinit", mask_source=str(ckpt), control_seed=3)
    for name, pruned_at in member0(ticket, "pruned_at").items():
        assert torch.equal(member0(model, "pruned_at")[name], pruned_at)
    for lvl in (1, 2):
        fresh = fresh_init(model.build_member, 3 * 100_003 + 50_000 + lvl)
        start = rec.at[lvl]
        for name, m in start["masks"].items():
            assert torch.equal(m, member0(ticket, "pruned_at")[name] > lvl)
            assert torch.equal(start["state"][name][m], fresh[name][m])
            assert not torch.equal(start["state"][name][m], member0(ticket, "theta0")[name][m])


def test_random_prune_keeps_counts_not_positions(ticket_run):
    ticket, _, _, ckpt = ticket_run
    own, _ = fit(control="random_prune")  # counts from the layer-wise recursion
    sourced, _ = fit(control="random_prune", mask_source=str(ckpt), control_seed=1)
    for name, pruned_at in member0(ticket, "pruned_at").items():
        for lvl in (1, 2):
            t, o, s = (p > lvl for p in (pruned_at, member0(own, "pruned_at")[name],
                                         member0(sourced, "pruned_at")[name]))
            assert int(t.sum()) == int(o.sum()) == int(s.sum())
            assert not torch.equal(t, o) and not torch.equal(t, s) and not torch.equal(o, s)
        assert int((member0(own, "pruned_at")[name] == NEVER).sum()) == int(own.masks[name].sum())


def test_rewind_to_theta_k_and_schedule_offset():
    rec = LevelStarts()
    model, trainer = fit([rec], rewind_iteration=10,
                         optim=Optim(lr=1.2e-3, schedule="step", milestones=[0.25], gamma=0.5))
    assert trainer.global_step == model.plan.total_steps == 20 + 2 * 10
    theta_k = rec.by_step[10]  # the state after 10 steps of level 0
    assert all(torch.equal(member0(model, "theta_rewind")[k], theta_k[k]) for k in theta_k)
    for lvl in (1, 2):
        start = rec.at[lvl]
        for name, value in start["state"].items():
            m = start["masks"].get(name, torch.ones_like(value, dtype=torch.bool))
            assert torch.equal(value[m], theta_k[name][m]), name
        # the schedule resumes at iteration 10 (past the 25 % milestone): lr already decayed
        assert start["lr"] == pytest.approx(model.hparams.optim["lr"] * 0.5)
    assert rec.at[0]["lr"] == pytest.approx(model.hparams.optim["lr"])
    assert all(row["es_iteration"] in (20,) for row in model.history[1:])


def test_oneshot_prunes_the_dense_net_to_each_density():
    rec = LevelStarts()
    model, _ = fit([rec], schedule="oneshot")
    dense = member0(model, "theta_dense")
    for lvl in (1, 2):
        for name, m in rec.at[lvl]["masks"].items():
            kept = int(m.sum())
            direct = prune_lowest(dense[name].abs(), torch.ones_like(m), m.numel() - kept)
            assert torch.equal(m, direct)
    iterative = prune("layerwise", {"w": dense["layers.1.weight"]},
                      {"w": torch.ones_like(rec.at[1]["masks"]["layers.1.weight"])},
                      {"w": 0.2})["w"]
    assert torch.equal(iterative, rec.at[1]["masks"]["layers.1.weight"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(control="lottery"), "valid control names"),
    (dict(strategy="l1"), "global, layerwise, random"),
    (dict(rewind_iteration=25, round_steps=20), "rewind_iteration"),
])
def test_bad_arguments_name_the_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LotteryTicketModule(**kwargs)


def test_val_interval_must_divide_levels():
    with pytest.raises(ValueError, match="must divide"):
        fit(round_steps=25)


def test_resume_between_last_step_and_its_validation(ticket_run, tmp_path):
    # a step-based checkpoint at step 20 is written before level 0's final validation ran
    full, *_ = ticket_run
    cb = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=20)
    fit([StopAtEpoch(3), cb], trainer_kw={"enable_checkpointing": True})
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["lottery"]["level"] == 0
    resumed, _ = fit([], ckpt_path=str(tmp_path / "last.ckpt"))
    assert resumed.level == 2 and len(resumed.history) == 3
    for name in member0(full, "pruned_at"):
        assert torch.equal(member0(resumed, "pruned_at")[name], member0(full, "pruned_at")[name])
    for k, v in full.net.state_dict().items():
        assert torch.equal(resumed.net.state_dict()[k], v), k
    for a, b in zip(resumed.history, full.history):
        assert a["es_iteration"] == b["es_iteration"]
        assert a["es_test_acc"] == pytest.approx(b["es_test_acc"])


def test_resume_mid_epoch_mid_round_with_resumable_loader(ticket_run, tmp_path):
    # the DataLoader path (on_device: false) resumes inside an epoch: step 33 is batch 3 of epoch 6
    full, *_ = ticket_run
    cb = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1)
    fit([StopAtStep(33), cb], trainer_kw={"enable_checkpointing": True}, on_device=False)
    resumed, _ = fit([], ckpt_path=str(tmp_path / "last.ckpt"), on_device=False)
    for k, v in full.net.state_dict().items():
        assert torch.equal(resumed.net.state_dict()[k], v), k
    full_pruned_at = member0(full, "pruned_at")
    assert all(torch.equal(member0(resumed, "pruned_at")[n], full_pruned_at[n]) for n in full_pruned_at)


def test_bf16_autocast_keeps_pruned_weights_exactly_zero():
    model, _ = fit(trainer_kw={"precision": "bf16-mixed"},
                   optim=Optim(name="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3))
    params = dict(model.net.named_parameters())
    assert len(model.history) == 3
    for name, m in model.masks.items():
        assert bool((params[name][~m] == 0.0).all()) and int(m.sum()) < m.numel()


def test_cli_run_writes_history_and_resumes_from_last(run_cli):
    args = ["fit", "--config", "configs/lottery.yaml", "--config", "tests/smoke/lottery.yaml"]
    folder = run_cli(args)
    history = json.loads((folder / "lottery.json").read_text())["levels"]
    assert [round(h["percent_remaining"], 1) for h in history] == [100.0, 80.0, 64.1]
    assert (folder / "figures" / "lottery_rounds.png").is_file()
    ckpt = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["lottery"]["level"] == 2 and ckpt["global_step"] == 60
    again = run_cli([*args, "--ckpt_path", str(folder / "checkpoints" / "last.ckpt")])
    assert again == folder
    assert json.loads((folder / "lottery.json").read_text())["levels"] == history


class RanksAgree(Callback):
    """At fit end every rank must hold the same masks and weights, with exact zeros."""

    def on_fit_end(self, trainer, module):
        flat = torch.cat([m.flatten().float() for _, m in module.masks.items()])
        params = torch.cat([p.detach().flatten() for p in module.net.parameters()])
        mine = torch.stack([flat.sum(), (flat * torch.arange(len(flat))).sum(), params.sum()])
        everyone = trainer.strategy.all_gather(mine)  # (world_size, 3)
        assert torch.equal(everyone[0], everyone[1]), everyone
        weights = dict(module.net.named_parameters())
        assert all(bool((weights[n][~m] == 0).all()) for n, m in module.masks.items())
        assert len(module.history) == 3 and flat.sum() < len(flat)


@pytest.mark.slow  # two spawned processes: ~40 s on a loaded 2-core machine
def test_ddp_ranks_agree_on_masks_and_weights():
    L.seed_everything(0, verbose=False)
    dm = VisionDataModule("mnist5k", batch_size=20, val_size=100, train_subset=100)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", val_check_interval=10,
                        check_val_every_n_epoch=None, num_sanity_val_steps=0, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        callbacks=[RanksAgree()])
    trainer.fit(LotteryTicketModule(rounds=2, round_steps=20), datamodule=dm)
