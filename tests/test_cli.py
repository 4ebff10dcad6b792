"""CLI contract: run folders, rerun safety, resume, usage errors with exit code 2, W&B mode."""

from __future__ import annotations

import csv
import json

import pytest

from lit_papers.cli import main
from lit_papers.core import run_folder

QUICK = ["fit", "--config", "configs/classifier.yaml", "--trainer.max_epochs=1",
         "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
         "--trainer.accelerator=cpu"]


def _usage_error(args, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("override, expected", [
    ("--model.arch=resnet9000", "valid model names"),
    ("--data.dataset=imagenet", "valid dataset names"),
    ("--model.optim.name=lion", "valid optimizer names"),
    ("--data.batch_size=-3", "batch_size must be a positive integer"),
    ("--trainer.max_epochs=abc", "max_epochs"),
    ("--model=NoSuchModule", "NoSuchModule"),
])
def test_bad_input_exits_2_with_message(override, expected, capsys, tmp_path, monkeypatch):
    from conftest import REPO

    monkeypatch.chdir(REPO)
    err = _usage_error([*QUICK, override, f"--run_root={tmp_path}"], capsys)
    assert expected in err
    assert "Traceback" not in err


def test_rerun_gets_a_new_version_and_keeps_the_old(run_cli, tmp_path):
    first = run_cli(QUICK)
    before = (first / "summary.json").read_bytes()
    second = run_cli(QUICK)
    assert (first.name, second.name) == ("version_0", "version_1")
    assert (first / "summary.json").read_bytes() == before
    assert json.loads((second / "summary.json").read_text())["status"] == "finished"


def test_explicit_existing_version_is_refused(run_cli, tmp_path, capsys):
    first = run_cli(QUICK)
    snapshot = {p: p.read_bytes() for p in first.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit) as info:
        run_cli([*QUICK, f"--run_version={first.name}"])
    assert info.value.code == 2
    assert "already holds a run" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in first.rglob("*") if p.is_file()} == snapshot


def test_last_checkpoint_is_the_final_state(run_cli):
    import torch

    folder = run_cli([*QUICK, "--trainer.max_epochs=3"])
    steps = json.loads((folder / "summary.json").read_text())["global_step"]
    last = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == steps == 12 and last["epoch"] == 2


def test_resume_last_continues_the_same_run(run_cli):
    first = run_cli(QUICK)
    steps = json.loads((first / "summary.json").read_text())["global_step"]
    resumed = run_cli([*QUICK, "--trainer.max_epochs=2", "--ckpt_path=last"])
    assert resumed == first
    summary = json.loads((first / "summary.json").read_text())
    assert summary["global_step"] == 2 * steps and summary["epochs"] == 2
    with (first / "metrics.csv").open() as f:
        epochs = {row["epoch"] for row in csv.DictReader(f)}
    assert {"0", "1"} <= epochs  # the first epoch's rows were kept, the second's appended


def test_resume_without_a_run_is_a_usage_error(run_cli, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli([*QUICK, "--ckpt_path=last"])
    assert info.value.code == 2
    assert "no run of experiment 'classifier'" in capsys.readouterr().err


def test_test_subcommand_on_best_checkpoint_reports_accuracy(run_cli):
    folder = run_cli(QUICK)
    again = run_cli(["test", "--config", "configs/classifier.yaml", "--ckpt_path=best",
                     "--trainer.limit_test_batches=1", "--trainer.accelerator=cpu"])
    assert again == folder / "eval" / "test-0"  # its own folder inside the run it evaluates
    summary = json.loads((again / "summary.json").read_text())
    assert 0.0 <= summary["final"]["test/acc"] <= 1.0
    assert summary["checkpoint"].startswith(str(folder / "checkpoints" / "best"))


def test_wandb_mode_never_needs_a_login(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    mode, notice = run_folder.wandb_mode(None)
    assert mode == "offline" and "wandb sync" in notice
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert run_folder.wandb_mode(None) == ("disabled", None)
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert run_folder.wandb_mode(None) == ("online", None)
    with pytest.raises(ValueError, match="online, offline or disabled"):
        run_folder.wandb_mode("sometimes")


def test_module_without_a_monitor_keeps_last_only(run_cli, monkeypatch):
    from lit_papers.core import ClassifierModule

    monkeypatch.setattr(ClassifierModule, "checkpoint_monitor", None)
    folder = run_cli(QUICK)
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["last.ckpt"]


def test_save_figure_accepts_module_or_trainer(run_cli, monkeypatch):
    import matplotlib.pyplot as plt

    from lit_papers.core import ClassifierModule, save_figure

    saved = []

    def on_fit_end(self):
        saved.append(save_figure(self, plt.figure(), "from_module"))
        saved.append(save_figure(self.trainer, plt.figure(), "from_trainer"))

    monkeypatch.setattr(ClassifierModule, "on_fit_end", on_fit_end, raising=False)
    folder = run_cli(QUICK)
    assert saved == [folder / "figures" / "from_module.png", folder / "figures" / "from_trainer.png"]
    assert all(p.is_file() for p in saved)
    assert save_figure(ClassifierModule(), plt.figure(), "detached") is None


@pytest.mark.parametrize("subcommand, key", [("validate", "val/acc"), ("test", "test/acc")])
def test_evaluation_only_runs_write_a_summary(run_cli, subcommand, key):
    folder = run_cli([subcommand, "--config", "configs/classifier.yaml", "--trainer.limit_val_batches=1",
                      "--trainer.limit_test_batches=1", "--trainer.accelerator=cpu"])
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "finished" and 0.0 <= summary["final"][key] <= 1.0
