"""The DEQ against explicit nets of its cell: equal parameters (weight-tied), the same map (unrolled), memory
flat in L for the DEQ and linear for the explicit nets, and the study's report reading its run folders."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO

from lit_papers.core import study
from lit_papers.deq import DEQNet
from lit_papers.deq import explicit_report as report
from lit_papers.deq.weight_tied import WeightTiedNet

# (input shape, cell and width, cell kwargs)
CELLS = {"mlp": ((1, 40), dict(cell="mlp", width=16), dict(groups=4, hidden=24)),
         "conv": ((1, 8, 8), dict(cell="conv", width=8), dict(groups=4))}


def params(net) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("cell", list(CELLS))
def test_weight_tied_net_has_the_deqs_parameters_and_untied_adds_cells(cell):
    shape, net_kw, cell_kw = CELLS[cell]
    deq = DEQNet(shape, 10, **net_kw, cell_kwargs=cell_kw)
    kw = {**net_kw, **cell_kw}
    cell_params = params(deq.deq.cell)
    for depth in (1, 4, 16):
        tied = WeightTiedNet(shape, 10, depth=depth, **kw)
        untied = WeightTiedNet(shape, 10, depth=depth, tied=False, **kw)
        assert params(tied) == params(deq)
        assert params(untied) == params(deq) + (depth - 1) * cell_params


def test_weight_tied_net_is_the_deq_cell_unrolled():
    # With the DEQ's weights, the weight-tied net of depth L is the DEQ layer iterated L times from z0.
    torch.manual_seed(0)
    shape, net_kw, cell_kw = CELLS["mlp"]
    kw = {**net_kw, **cell_kw}
    deq = DEQNet(shape, 10, **net_kw, cell_kwargs=cell_kw, backward="unroll", unroll_steps=5)
    tied = WeightTiedNet(shape, 10, depth=5, **kw)
    tied.load_state_dict({k.replace("deq.cell.", "cell."): v for k, v in deq.state_dict().items()})
    x = torch.randn(6, *shape)
    torch.testing.assert_close(tied(x), deq(x), rtol=0, atol=0)
    untied = WeightTiedNet(shape, 10, depth=5, tied=False, **kw)
    assert not torch.allclose(untied(x), tied(x))
    with pytest.raises(ValueError, match="depth >= 1"):
        WeightTiedNet(shape, 10, depth=0, **kw)


def test_deq_memory_is_flat_in_depth_and_explicit_memory_linear():
    torch.manual_seed(0)
    shape, net_kw, cell_kw = CELLS["mlp"]
    kw = {**net_kw, **cell_kw}
    mem = {}
    for depth in (4, 8, 16):
        deq = DEQNet(shape, 10, **net_kw, cell_kwargs=cell_kw, max_iter=depth, tol=0.0,
                     backward_max_iter=depth, backward_tol=0.0)
        mem[("deq", depth)] = report.step_bytes(deq, shape, 10, batch=32)
        for tied in (True, False):
            net = WeightTiedNet(shape, 10, depth=depth, tied=tied, **kw)
            mem[(tied, depth)] = report.step_bytes(net, shape, 10, batch=32)
    assert mem[("deq", 4)] == mem[("deq", 8)] == mem[("deq", 16)]
    for tied in (True, False):
        per_layer = mem[(tied, 8)] - mem[(tied, 4)]
        assert per_layer > 0 and mem[(tied, 16)] - mem[(tied, 8)] == 2 * per_layer
    assert mem[("deq", 16)] < mem[(True, 4)]


def test_study_and_report_read_the_deq_and_explicit_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    root = tmp_path / "deq_vs_explicit"
    tiny = ("--config configs/deq_mnist1d.yaml --trainer.max_epochs=1 --trainer.limit_train_batches=2 "
            "--trainer.limit_val_batches=1 --trainer.limit_test_batches=1 --trainer.enable_progress_bar=false "
            "--trainer.enable_model_summary=false --model.figure_max_iter=4")
    tied = ("--model=lit_papers.core.ClassifierModule --model.arch=weight_tied "
            "--model.arch_kwargs='{cell: mlp, width: 64, hidden: 128, groups: 8, depth: 3, tied: true}'")
    study.main(["--run_root", str(root), "--seeds", "0", "1",
                "--arm", "deq", tiny, "--arm", "tied_L3", f"{tiny} {tied}"])
    folders = sorted(root.glob("*/v0"))
    assert len(folders) == 4
    capsys.readouterr()
    text = report.main([*map(str, folders), "--depths", "2", "6", "--batch", "16", "--out", str(tmp_path / "b.png")])
    assert (tmp_path / "b.png").stat().st_size > 0
    table = {r["kind"]: r for r in report.rows(report.group_runs(folders))}
    assert set(table) == {"deq", "tied"} and table["tied"]["depth"] == 3
    assert table["deq"]["seeds"] == [0, 1] and len(table["tied"]["acc"]) == 2
    assert table["deq"]["params"] == table["tied"]["params"]  # the config's cell, tied: the same network
    assert 0 < table["deq"]["fwd_iters"] <= 20
    assert "DEQ (implicit, IFT gradients)" in text and " ± " in text
