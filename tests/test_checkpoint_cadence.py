"""`--checkpoint_every_n_epochs`: last.ckpt is refreshed every N epochs and always at the end of fit."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REPO

from lit_papers.cli import main

SMOKE = ["fit", "--config", str(REPO / "configs" / "classifier.yaml"), "--trainer.accelerator=cpu",
         "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
         "--test_after_fit=false"]


def _saved_step(folder) -> tuple[int, int]:
    ckpt = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return ckpt["global_step"], ckpt["epoch"]


@pytest.mark.parametrize("every,epochs", [(2, 3), (5, 2)])
def test_last_checkpoint_holds_the_final_step_whatever_the_cadence(run_cli, every, epochs):
    folder = run_cli([*SMOKE, f"--trainer.max_epochs={epochs}", f"--checkpoint_every_n_epochs={every}"])
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["global_step"] == 3 * epochs
    assert _saved_step(folder)[0] == summary["global_step"]


def test_checkpoint_cadence_is_kept_between_saves(run_cli, monkeypatch):
    """With N=2, the save after epoch 1 (0-based) exists before the end-of-fit one: a run killed in
    epoch 2 resumes from step 6, not from scratch."""
    from lit_papers.core.last_checkpoint import LastCheckpoint

    saved: list[int] = []
    original = LastCheckpoint._save_checkpoint

    def record(self, trainer, filepath):
        saved.append(trainer.global_step)
        return original(self, trainer, filepath)

    monkeypatch.setattr(LastCheckpoint, "_save_checkpoint", record)
    run_cli([*SMOKE, "--trainer.max_epochs=5", "--checkpoint_every_n_epochs=2"])
    assert saved == [6, 12, 15]


def test_non_positive_cadence_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*SMOKE, "--checkpoint_every_n_epochs=0", f"--run_root={tmp_path}"])
    assert exit_info.value.code == 2
    assert "checkpoint_every_n_epochs" in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "no run folder for a rejected command line"
