"""Populations: member k of a vmap-trained population is the separate run with seed k."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from conftest import REPO

from lit_papers.core import Optim
from lit_papers.core import ClassifierModule
from lit_papers.core.population import PopulationModule, StackedMembers
from lit_papers.data import VisionDataModule
from lit_papers.models import build_model

SHAPES = dict(num_classes=10, input_shape=(1, 28, 28))


def _fit(model, epochs: int = 2) -> L.Trainer:
    dm = VisionDataModule(dataset="mnist5k", batch_size=60, val_size=200, train_subset=480,
                          eval_batch_size=200)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    return trainer


def test_member_equals_separate_run_with_its_seed():
    """Same init (seeded build), same batches, same Adam math: weights and metrics agree."""
    kw = dict(SHAPES, optim=Optim(name="adam", lr=2e-3, weight_decay=1e-4, schedule="cosine"))
    pop = PopulationModule(population=3, member_seeds=[11, 12, 13], steps_per_call=2, **kw)
    t_pop = _fit(pop)
    for k, seed in ((0, 11), (2, 13)):
        torch.manual_seed(seed)
        single = ClassifierModule(**kw)
        t_single = _fit(single)
        member = pop.member_state_dict(k)
        for name, value in single.net.state_dict().items():
            torch.testing.assert_close(member[name], value, atol=2e-5, rtol=1e-4)
        assert float(t_pop.callback_metrics[f"pop/{k}/val/acc"]) == pytest.approx(
            float(t_single.callback_metrics["val/acc"]), abs=1 / 200 + 1e-6)  # at most one digit flips
        assert float(t_pop.callback_metrics[f"pop/{k}/val/loss"]) == pytest.approx(
            float(t_single.callback_metrics["val/loss"]), abs=1e-4)
    # members are independent: different seeds give different networks
    assert not torch.allclose(pop.member_state_dict(0)["layers.1.weight"],
                              pop.member_state_dict(1)["layers.1.weight"])


@pytest.mark.parametrize("arch,kwargs", [("lenet300_100", {}), ("mlp", {"hidden": [32], "batch_norm": True})])
def test_stacked_forward_is_each_members_forward(arch, kwargs):
    def build():
        return build_model(arch, (1, 28, 28), 10, **kwargs)

    stacked = StackedMembers(build, seeds=[0, 1, 2])
    x = torch.randn(16, 1, 28, 28)
    logits = stacked(x)  # (K, B, C); in train mode BatchNorm updates every member's own statistics
    for k, seed in enumerate([0, 1, 2]):
        torch.manual_seed(seed)
        net = build()
        torch.testing.assert_close(logits[k], net(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(stacked.member_state_dict(k), net.state_dict(), atol=1e-6, rtol=1e-6)
    per_member = stacked(torch.randn(3, 16, 1, 28, 28), per_member=True)
    assert per_member.shape == (3, 16, 10)


def test_bad_population_settings():
    with pytest.raises(ValueError, match="population"):
        PopulationModule(population=0, **SHAPES)
    with pytest.raises(ValueError, match="one seed per member"):
        PopulationModule(population=3, member_seeds=[1, 2], **SHAPES)
    with pytest.raises(ValueError, match="member index"):
        PopulationModule(population=2, **SHAPES).member_state_dict(2)


def test_cli_population_writes_members_and_matches_the_single_run(run_cli, tmp_path):
    """Through the CLI: members.json has K members with seeds run seed + k, and member 0's
    checkpointed weights equal the classifier config trained alone with the same seed."""
    limits = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=1",
              "--trainer.limit_test_batches=1", "--trainer.accelerator=cpu", "--seed_everything=5",
              "--data.init_args.on_device=false"]
    pop_dir = run_cli(["fit", "--config", str(REPO / "configs/population.yaml"), *limits,
                       "--model.init_args.population=2", "--model.init_args.steps_per_call=1",
                       "--model.init_args.step_capture=none"], root=tmp_path / "a")
    single_dir = run_cli(["fit", "--config", str(REPO / "configs/classifier.yaml"), *limits],
                         root=tmp_path / "b")
    members = json.loads((pop_dir / "members.json").read_text())
    assert [m["seed"] for m in members["members"]] == [5, 6]
    assert all("test/acc" in m["final"] and "val/acc" in m["best"] for m in members["members"])
    pop_state = torch.load(pop_dir / "checkpoints/last.ckpt", weights_only=False)["state_dict"]
    single_state = torch.load(single_dir / "checkpoints/last.ckpt", weights_only=False)["state_dict"]
    for name, value in single_state.items():
        if name.startswith("net."):
            stacked = pop_state["net.stacked." + name.removeprefix("net.").replace(".", "-")]
            torch.testing.assert_close(stacked[0], value, atol=2e-5, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_captured_population_equals_eager_population():
    """Members with masks, captured whole steps == eager steps (GPU)."""
    kw = dict(num_classes=10, input_shape=(1, 8, 8), optim=Optim(name="adam", lr=2e-3, schedule="cosine"),
              population=3, member_seeds=[0, 1, 2], steps_per_call=4)
    runs = {}
    for mode in ("none", "cuda_graph"):
        module = PopulationModule(step_capture=mode, **kw)
        gen = torch.Generator().manual_seed(0)  # the same masks in both runs, applied inside the graph
        module.set_member_masks({n: torch.rand(p.shape, generator=gen) < 0.7
                                 for n, p in module.net.member_params().items() if n.endswith("weight")})
        dm = VisionDataModule(dataset="digits", batch_size=60, val_size=100, train_subset=500, on_device=True)
        L.Trainer(max_epochs=2, accelerator="gpu", devices=1, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False).fit(module, datamodule=dm)
        runs[mode] = module
    assert runs["cuda_graph"].capture_mode == "cuda_graph"
    for k in range(3):
        torch.testing.assert_close(runs["cuda_graph"].member_state_dict(k), runs["none"].member_state_dict(k),
                                   atol=1e-4, rtol=1e-3)


def test_member_labels_are_corrupted_per_member_and_train_independently():
    """Member k learns from label column k: the clean member (p=0) is the clean single run, and
    the corruption levels redraw the expected fractions of labels."""
    from lit_papers.data.member_labels import MemberLabelsDataModule

    dm = MemberLabelsDataModule(member_probs=[0.0, 0.5, 1.0], member_seed=3, dataset="mnist5k",
                                batch_size=60, val_size=200, train_subset=480, eval_batch_size=200)
    dm.setup("fit")
    agreement = dm.label_agreement()  # a redrawn label keeps its class with probability 1/10
    assert agreement[0] == 1.0
    assert agreement[1] == pytest.approx(1 - 0.5 * 0.9, abs=0.07)
    assert agreement[2] == pytest.approx(0.1, abs=0.05)
    assert dm.train_y.shape == (480, 3) and dm.val_y.shape == (200,)  # validation labels stay clean

    kw = dict(SHAPES, optim=Optim(name="adam", lr=2e-3))
    pop = PopulationModule(population=3, member_seeds=[7, 7, 7], steps_per_call=3, **kw)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(pop, datamodule=MemberLabelsDataModule(
        member_probs=[0.0, 0.5, 1.0], member_seed=3, dataset="mnist5k", batch_size=60, val_size=200,
        train_subset=480, eval_batch_size=200))
    torch.manual_seed(7)
    single = ClassifierModule(**kw)
    _fit(single, epochs=1)
    for name, value in single.net.state_dict().items():
        torch.testing.assert_close(pop.member_state_dict(0)[name], value, atol=2e-5, rtol=1e-4)
    w = [pop.member_state_dict(k)["layers.1.weight"] for k in range(3)]
    assert not torch.allclose(w[0], w[1]) and not torch.allclose(w[1], w[2])  # same init, other labels
    assert pop.members()[2]["labels"] == {"corruption": "partial_labels", "prob": 1.0}
    with pytest.raises(ValueError, match="member_corruption"):
        MemberLabelsDataModule(member_corruption="shuffled_pixels")


@pytest.mark.slow
def test_resumed_population_equals_uninterrupted(run_cli, tmp_path):
    """Fit 2 epochs at once, or 1 epoch and resume from last.ckpt: same members, same records."""
    base = ["fit", "--config", str(REPO / "configs/population.yaml"), "--trainer.limit_train_batches=3",
            "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1", "--trainer.accelerator=cpu",
            "--model.init_args.population=2", "--model.init_args.steps_per_call=2",
            "--data.init_args.on_device=false", "--test_after_fit=false"]
    whole = run_cli([*base, "--trainer.max_epochs=2"], root=tmp_path / "whole")
    first = run_cli([*base, "--trainer.max_epochs=1"], root=tmp_path / "split")
    resumed = run_cli([*base, "--trainer.max_epochs=2", f"--ckpt_path={first / 'checkpoints/last.ckpt'}"],
                      root=tmp_path / "split")
    states = [torch.load(d / "checkpoints/last.ckpt", weights_only=False) for d in (whole, resumed)]
    assert states[0]["global_step"] == states[1]["global_step"] == 12  # 2 epochs x 3 groups x 2 steps
    torch.testing.assert_close(states[1]["state_dict"], states[0]["state_dict"], atol=1e-6, rtol=1e-6)
    members = [json.loads((d / "members.json").read_text())["members"] for d in (whole, resumed)]
    for whole_member, resumed_member in zip(*members):
        assert list(resumed_member["val_acc_by_epoch"]) == ["0", "1"]  # the first epoch's record survived
        assert resumed_member["val_acc_by_epoch"] == pytest.approx(whole_member["val_acc_by_epoch"])
        assert resumed_member["best"]["epoch"] == whole_member["best"]["epoch"]
        assert resumed_member["best"]["val/acc"] == pytest.approx(whole_member["best"]["val/acc"])


def test_masked_members_keep_pruned_weights_at_zero_and_follow_the_masked_loop():
    """Member 0 pruned (random half of each weight matrix), member 1 dense: member 0 equals a plain
    masked Adam loop on the same batches, member 1 the unmasked member, pruned entries stay 0.0."""
    kw = dict(SHAPES, optim=Optim(name="adam", lr=2e-3))
    dm = VisionDataModule(dataset="mnist5k", batch_size=60, val_size=200, train_subset=480,
                          eval_batch_size=200)
    dm.setup("fit")
    batches = list(dm.train_dataloader())  # epoch 0's order, as the trainer will draw it
    masked = PopulationModule(population=2, member_seeds=[4, 4], steps_per_call=4, **kw)
    gen = torch.Generator().manual_seed(0)
    masks = {n: torch.stack([torch.rand(p.shape[1:], generator=gen) < 0.5, torch.ones(p.shape[1:], dtype=bool)])
             for n, p in masked.net.member_params().items() if n.endswith("weight")}
    masked.set_member_masks(masks)
    dense = PopulationModule(population=2, member_seeds=[4, 4], steps_per_call=4, **kw)
    _fit(masked, epochs=1)
    _fit(dense, epochs=1)

    torch.manual_seed(4)
    net = build_model("lenet300_100", (1, 28, 28), 10)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    keep = {n: m[0] for n, m in masks.items()}
    weights = {n: p for n, p in net.named_parameters() if n in keep}

    def mask_weights():
        with torch.no_grad():
            for n, p in weights.items():
                p.masked_fill_(~keep[n], 0.0)

    mask_weights()
    for x, y in batches:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        for n, p in weights.items():
            p.grad.masked_fill_(~keep[n], 0.0)
        opt.step()
        mask_weights()

    member0, member1 = masked.member_state_dict(0), masked.member_state_dict(1)
    for name, mask in keep.items():
        assert (member0[name][~mask] == 0.0).all() and (member0[name][mask] != 0.0).all()
    torch.testing.assert_close(member0, net.state_dict(), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(member1, dense.member_state_dict(1), atol=2e-5, rtol=1e-4)
    # masks travel with checkpoints into a fresh module
    state = masked.state_dict()
    fresh = PopulationModule(population=2, member_seeds=[4, 4], **kw)
    fresh.on_load_checkpoint({"state_dict": state})
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.member_state_dict(0), member0)
    with pytest.raises(ValueError, match="expected a"):
        fresh.set_member_masks({"layers.1.weight": torch.ones(300, 784, dtype=bool)})


def test_ensemble_metrics_average_the_members_softmax():
    """test/ensemble_{nll,acc} equal the averaged softmax of the members run one by one, and the
    ensemble NLL is at most the members' mean NLL (Jensen)."""
    pop = PopulationModule(population=3, member_seeds=[4, 5, 6], steps_per_call=2, **SHAPES)
    trainer = _fit(pop, epochs=1)
    trainer.test(pop, datamodule=trainer.datamodule, verbose=False)
    x, y = (torch.cat(t) for t in zip(*trainer.datamodule.test_dataloader()))
    probs = []
    for k in range(3):
        net = build_model("lenet300_100", (1, 28, 28), 10)
        net.load_state_dict(pop.member_state_dict(k))
        with torch.no_grad():
            probs.append(net(x).softmax(-1))
    p = torch.stack(probs).mean(0)
    nll = -p.gather(1, y[:, None]).log().mean()
    metrics = trainer.callback_metrics
    assert float(metrics["test/ensemble_nll"]) == pytest.approx(float(nll), rel=1e-4)
    assert float(metrics["test/ensemble_acc"]) == pytest.approx(float((p.argmax(-1) == y).float().mean()), abs=1e-6)
    member_nll = [float(metrics[f"pop/{k}/test/loss"]) for k in range(3)]
    assert float(metrics["test/ensemble_nll"]) <= sum(member_nll) / 3 + 1e-6
