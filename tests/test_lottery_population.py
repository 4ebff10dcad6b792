"""The lottery study as one population: member (control, seed) is LotteryTicketModule's run of
that control and seed, and the controls take their masks from their seed's ticket."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from conftest import StopAtEpoch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lit_papers.core import Optim
from lit_papers.data import VisionDataModule
from lit_papers.lottery import LotteryTicketModule
from lit_papers.lottery.population import LotteryPopulationModule
from lit_papers.lottery.pruning import prune_count
from lit_papers.lottery.snapshots import fresh_init

SHAPES = dict(num_classes=10, input_shape=(1, 28, 28), optim=Optim(name="adam", lr=2e-3))
LEVELS = dict(rounds=2, round_steps=20, prune_rate=0.3)
ROW_KEYS = ("percent_remaining", "es_iteration", "es_test_acc", "final_test_acc", "es_val_loss")


def _fit(model, dataset: str = "mnist5k", ckpt_path=None, **trainer_kw) -> L.Trainer:
    dm = VisionDataModule(dataset=dataset, batch_size=60, val_size=200, train_subset=480, eval_batch_size=200)
    trainer = L.Trainer(accelerator=trainer_kw.pop("accelerator", "cpu"), devices=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        **{"enable_checkpointing": False, **trainer_kw})
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return trainer


def _single(seed: int, control: str, **kw) -> tuple[LotteryTicketModule, L.Trainer]:
    torch.manual_seed(seed)
    model = LotteryTicketModule(control=control, control_seed=seed, **SHAPES, **LEVELS, **kw)
    return model, _fit(model, val_check_interval=10, check_val_every_n_epoch=None)


def _assert_rows_match(population_rows, single_rows):
    assert len(population_rows) == len(single_rows) == LEVELS["rounds"] + 1
    for mine, theirs in zip(population_rows, single_rows):
        assert mine["kept"] == theirs["kept"]
        for key in ROW_KEYS:
            assert mine[key] == pytest.approx(theirs[key], abs=1e-3 if "acc" in key else 1e-4), key


def test_members_equal_the_separate_ticket_and_control_runs(tmp_path):
    """Weights, masks and per-level rows of every member equal the corresponding single run: the
    ticket of seed s, reinit with the ticket's masks (mask_source), random pruning with its counts."""
    seed = 5
    pop = LotteryPopulationModule(seeds=[seed], eval_every=10, steps_per_call=3, **SHAPES, **LEVELS)
    _fit(pop)
    assert pop.member_controls == ["ticket", "reinit", "random_prune"]

    ticket, t_trainer = _single(seed, "ticket")
    t_trainer.save_checkpoint(tmp_path / "ticket.ckpt")  # the controls' mask_source
    reinit, _ = _single(seed, "reinit", mask_source=str(tmp_path / "ticket.ckpt"))
    random_prune, _ = _single(seed, "random_prune")  # layerwise counts = the ticket's counts

    masks = pop.masks()
    for k, single in enumerate((ticket, reinit, random_prune)):
        _assert_rows_match(pop.histories[k], single.history)
        member = pop.member_state_dict(k)
        for name, value in single.net.state_dict().items():
            torch.testing.assert_close(member[name], value, atol=2e-5, rtol=1e-4)
        for name, mask in single.masks.items():
            assert torch.equal(masks[name][k], mask), f"member {k} mask {name}"
    # the paper's controls: reinit shares the ticket's masks, random pruning only its counts
    for name in masks:
        assert torch.equal(masks[name][1], masks[name][0])
        assert int(masks[name][2].sum()) == int(masks[name][0].sum())
        assert not torch.equal(masks[name][2], masks[name][0])


def test_pruned_weights_stay_zero_and_reinit_members_get_fresh_weights():
    pop = LotteryPopulationModule(seeds=[0, 1], controls=["ticket", "reinit"], eval_every=10,
                                  steps_per_call=4, **SHAPES, **LEVELS)
    theta0 = {n: p.detach().clone() for n, p in pop.net.member_params().items()}
    _fit(pop)
    params, masks = pop.net.member_params(), pop.masks()
    for name, mask in masks.items():
        assert torch.all(params[name][~mask] == 0.0)
        assert pop.densities()[0] < 0.6  # two rounds at 30 %
    # level 0 is dense for every member: tickets and reinit controls of one seed train identically
    for row_ticket, row_reinit in ((pop.histories[0][0], pop.histories[2][0]),
                                   (pop.histories[1][0], pop.histories[3][0])):
        assert row_ticket == row_reinit
    # members differ by seed; after the first round the reinit member no longer starts from theta_0
    assert not torch.equal(theta0["layers.1.weight"][0], theta0["layers.1.weight"][1])
    assert pop.histories[0][1]["es_test_loss"] != pop.histories[2][1]["es_test_loss"]


def test_bad_study_settings():
    with pytest.raises(ValueError, match="controls must be distinct names"):
        LotteryPopulationModule(controls=["ticket", "reinit", "ticket"], **SHAPES)
    with pytest.raises(ValueError, match="controls must be distinct names"):
        LotteryPopulationModule(controls=["lucky"], **SHAPES)
    with pytest.raises(ValueError, match="seeds must be"):
        LotteryPopulationModule(seeds=[], **SHAPES)
    with pytest.raises(ValueError, match="eval_every=30 must divide"):
        LotteryPopulationModule(eval_every=30, round_steps=100, **SHAPES)
    with pytest.raises(ValueError, match="max_steps=100000 exceeds the levels"):
        _fit(LotteryPopulationModule(seeds=[0], eval_every=10, **SHAPES, **LEVELS), max_steps=100_000)
    with pytest.raises(ValueError, match="max_epochs=2 has no meaning for an IMP run"):
        _fit(LotteryPopulationModule(seeds=[0], eval_every=10, **SHAPES, **LEVELS), max_epochs=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_captured_study_equals_eager_study_on_the_gpu():
    runs = {}
    for mode in ("none", "cuda_graph"):
        model = LotteryPopulationModule(seeds=[0, 1], eval_every=10, steps_per_call=5, step_capture=mode,
                                        **{**SHAPES, "input_shape": (1, 8, 8)}, **LEVELS)
        _fit(model, dataset="digits", accelerator="gpu")  # scikit-learn's digits: no extra package needed
        runs[mode] = model
    eager, captured = runs["none"], runs["cuda_graph"]
    for k in range(eager.num_members):
        _assert_rows_match(captured.histories[k], eager.histories[k])
    for name, value in eager.net.member_params().items():
        torch.testing.assert_close(captured.net.member_params()[name], value, atol=1e-4, rtol=1e-3)


def test_mnist1d_study_config_smoke_writes_rows_the_report_reads(run_cli, tmp_path, capsys):
    """configs/lottery_mnist1d.yaml shortened to 2 seeds x 3 controls x 3 levels: every member's rows,
    the controls' masks taken from their seed's ticket, and the report's tables read the run folder."""
    import json

    from lit_papers.lottery import report

    folder = run_cli(["fit", "--config", "configs/lottery_mnist1d.yaml",
                      "--config", "tests/smoke/lottery_mnist1d.yaml"])
    record = json.loads((folder / "lottery_population.json").read_text())
    assert record["config"]["arch"] == "mnist1d_mlp" and record["config"]["prune_rate"] == 0.2
    members = {(m["control"], m["seed"]): m["levels"] for m in record["members"]}
    assert sorted(members) == [(c, s) for c in ("random_prune", "reinit", "ticket") for s in (0, 1)]
    for (_, seed), levels in members.items():
        ticket = members[("ticket", seed)]
        assert [r["level"] for r in levels] == [0, 1, 2]
        assert levels[0]["percent_remaining"] == 100.0 and levels[0]["es_test_acc"] == ticket[0]["es_test_acc"]
        # the MNIST-1D MLP: 40x100, 100x100 at 20 % per round, the 100x10 output layer at 10 %
        assert levels[2]["kept"] == {"block1.0.weight": 2560, "block2.0.weight": 6400, "head.weight": 810}
        assert [r["kept"] for r in levels] == [r["kept"] for r in ticket]  # the ticket's per-layer counts
        for row in levels:
            assert 0 < row["es_iteration"] <= 20 and 0.0 <= row["es_test_acc"] <= 1.0
    report.main(["--study", str(folder), "--out", str(tmp_path / "fig.png")])
    out = capsys.readouterr().out
    assert "| 100.0 | " in out and "reinit − dense (pp)" in out and "| 65.1 |" in out
    assert (tmp_path / "fig.png").stat().st_size > 10_000


# The same bit-exact checks as LotteryTicketModule's (tests/test_lottery_module.py), on the study.
# 480 examples / batch 60 = 8 minibatches per epoch, 4 per call: every level (20 steps) starts at
# the start of a call, so a callback sees each level's first state.
STUDY = dict(seeds=[3], eval_every=10, steps_per_call=4, **SHAPES, **LEVELS)


class LevelStarts(Callback):
    """Every member's state, the masks and the optimizer state at the first call of every level."""

    def __init__(self):
        self.at = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        for lvl in range(module.plan.levels):
            if trainer.global_step == module.plan.start(lvl) and lvl not in self.at:
                opt = trainer.optimizers[0]
                moments = [v for state in opt.state.values() for v in state.values() if torch.is_tensor(v)]
                self.at[lvl] = dict(state=module.member_nets.copy_members(), masks=module.masks(),
                                    fresh_optimizer=all(bool((v == 0).all()) for v in moments))


def test_study_levels_reset_survivors_to_theta0_bit_exact_and_controls_follow_their_ticket():
    rec = LevelStarts()
    pop = LotteryPopulationModule(**STUDY)
    _fit(pop, callbacks=[rec])
    ticket, reinit, random_prune = range(3)
    theta0 = pop.imp.theta0
    for lvl in (1, 2):
        start, before = rec.at[lvl], rec.at[lvl - 1]
        assert start["fresh_optimizer"]
        fresh = fresh_init(pop.build_member, 3 * 100_003 + 50_000 + lvl)  # reinit's theta_0' of this level
        for name, value in start["state"].items():
            m = start["masks"].get(name, torch.ones_like(value, dtype=torch.bool))
            for k in (ticket, random_prune):
                assert torch.equal(value[k][m[k]], theta0[name][k][m[k]]), (name, k)  # biases: all of it
                assert bool((value[k][~m[k]] == 0).all())
            assert torch.equal(value[reinit][m[reinit]], fresh[name][m[reinit]]), name
            assert bool((value[reinit][~m[reinit]] == 0).all())
        for name, m in start["masks"].items():
            kept = int(before["masks"][name][ticket].sum())
            assert int(m[ticket].sum()) == kept - prune_count(kept, pop.imp.rates[name])
            assert not (m & ~before["masks"][name]).any()  # nested, every member
            assert torch.equal(m[reinit], m[ticket])  # the ticket's masks
            assert int(m[random_prune].sum()) == int(m[ticket].sum())  # the ticket's counts ...
            assert not torch.equal(m[random_prune], m[ticket])  # ... at random positions
            assert not torch.equal(start["state"][name][reinit][m[reinit]], theta0[name][ticket][m[ticket]])


def test_study_resume_mid_round_equals_uninterrupted(tmp_path):
    full = LotteryPopulationModule(**STUDY)
    _fit(full)
    # epoch 3 ends at step 32, inside level 1 (steps 20..40); the checkpoint is taken there
    part = LotteryPopulationModule(**STUDY)
    cb = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=8)
    trainer = _fit(part, callbacks=[StopAtEpoch(3), cb], enable_checkpointing=True)
    assert trainer.global_step == 32 and part.imp.level == 1
    resumed = LotteryPopulationModule(**STUDY)
    trainer = _fit(resumed, ckpt_path=str(tmp_path / "last.ckpt"))
    assert trainer.global_step == 60 and resumed.imp.finished
    assert resumed.histories == full.histories
    for key in ("theta0", "pruned_at"):
        mine, theirs = getattr(resumed.imp, key), getattr(full.imp, key)
        assert all(torch.equal(mine[n].cpu(), theirs[n].cpu()) for n in theirs), key
    for name, value in full.net.state_dict().items():
        assert torch.equal(resumed.net.state_dict()[name], value), name


@pytest.mark.parametrize("optimizer", [dict(name="sgd", lr=0.05, momentum=0.9),
                                       dict(name="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
                                       dict(name="adam", lr=2e-3, weight_decay=1e-3),
                                       dict(name="adamw", lr=2e-3, weight_decay=1e-2)],
                         ids=["sgd_momentum", "sgd_nesterov_wd", "adam_l2", "adamw"])
def test_study_pruned_weights_exactly_zero_under_every_optimizer(optimizer):
    pop = LotteryPopulationModule(**{**STUDY, "controls": ["ticket", "random_prune"], "optim": Optim(**optimizer)})
    _fit(pop)
    params = pop.net.member_params()
    for name, mask in pop.masks().items():
        assert bool((params[name][~mask] == 0.0).all()) and (~mask).any(), name
    assert all(len(h) == LEVELS["rounds"] + 1 for h in pop.histories)
