"""Table 1 of Chen et al. 2018: the 1D and 2D classifiers share one definition, ODE-Net has ~1/3 of ResNet's
parameters, and the study (runner + report) turns run folders into the table."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO
from torch import nn

from lit_papers.core import study
from lit_papers.neural_ode import build_classifier, count_parameters
from lit_papers.neural_ode import table1

SOLVER = dict(method="rk4", step_size=0.5)


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 40)], ids=["image", "signal"])
@pytest.mark.parametrize("channels", [16, 32, 64])
def test_odenet_has_about_a_third_of_resnets_parameters(shape, channels):
    params = {v: count_parameters(build_classifier(v, shape, 10, channels=channels, depth=6, **SOLVER))
              for v in ("resnet", "rknet", "odenet")}
    assert params["rknet"] == params["odenet"]
    # Paper: 0.22M / 0.60M = 0.37. One vector field (plus a time channel) against 6 blocks, around the
    # same stem and head, whose share shrinks as the channels grow.
    assert 0.28 < params["odenet"] / params["resnet"] < 0.40


def test_signal_variants_are_the_image_variants_with_conv1d():
    torch.manual_seed(0)
    for variant in ("resnet", "rknet", "odenet"):
        image = build_classifier(variant, (1, 28, 28), 10, channels=8, **SOLVER)
        signal = build_classifier(variant, (1, 40), 10, channels=8, **SOLVER)
        # The same layers in the same order; Conv2d/AdaptiveAvgPool2d become their 1d versions.
        layers = lambda net, dims: [type(m).__name__.replace(dims, "") for m in net.modules()]
        assert layers(image, "2d") == layers(signal, "1d")
        assert not any(isinstance(m, (nn.Conv2d, nn.AdaptiveAvgPool2d)) for m in signal.modules())
        assert signal(torch.randn(5, 1, 40)).shape == (5, 10)
    with pytest.raises(ValueError, match=r"valid: \[1, 2\]"):
        build_classifier("odenet", (1, 4, 4, 4), 10)


def test_study_runs_arms_and_seeds_and_the_report_reads_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    root = tmp_path / "table1"
    tiny = ("--config configs/neural_ode_table1_mnist1d.yaml --model.channels=8 --trainer.max_epochs=1 "
            "--trainer.limit_train_batches=2 --trainer.limit_val_batches=1 --trainer.limit_test_batches=1 "
            "--trainer.enable_progress_bar=false --trainer.enable_model_summary=false")
    argv = ["--run_root", str(root), "--seeds", "0", "1",
            "--arm", "resnet", f"{tiny} --model.variant=resnet", "--arm", "odenet", f"{tiny} --model.variant=odenet"]
    records = study.main(argv)
    assert [(r["arm"], r["seed"], r["status"]) for r in records] == [
        ("resnet", 0, "finished"), ("resnet", 1, "finished"), ("odenet", 0, "finished"), ("odenet", 1, "finished")]
    # A second invocation finds every run finished and trains nothing.
    assert {r["status"] for r in study.main(argv)} == {"skipped"}

    capsys.readouterr()
    text = table1.main([str(p) for p in sorted(root.glob("*/v0"))] + ["--out", str(tmp_path / "t1.png")])
    assert (tmp_path / "t1.png").stat().st_size > 0
    table = table1.rows(table1.group_runs(sorted(root.glob("*/v0"))), batch=16)
    by = {r["variant"]: r for r in table}
    assert list(by) == ["resnet", "odenet"] and {r["dataset"] for r in table} == {"mnist1d"}
    assert by["odenet"]["seeds"] == [0, 1] and len(by["resnet"]["error"]) == 2
    assert by["odenet"]["nfe"] == "8 / 8" and by["resnet"]["nfe"] == "–"  # RK4, 2 steps of 4; adjoint
    assert 0.28 < table1.parameter_ratio(table, "mnist1d") < 0.40
    # The adjoint keeps the stem's activations and one solver step; the ResNet all 6 blocks'.
    assert by["odenet"]["activation_mb"] < by["resnet"]["activation_mb"]
    assert "ODE-Net (adjoint)" in text and "O(1)" in text and " ± " in text


def test_report_refuses_a_folder_that_is_not_a_finished_run(tmp_path):
    with pytest.raises(ValueError, match="no summary.json"):
        study.read_run(tmp_path)
    with pytest.raises(ValueError, match="unique"):
        study.plan([("a", ""), ("a", "")], [0], tmp_path)
