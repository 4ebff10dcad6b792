"""Every config prints, and a short fit of every quick config produces a complete run folder."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import CONFIGS, PAPER_CONFIGS, REPO

from lit_papers.cli import main


@pytest.mark.parametrize("config", CONFIGS + PAPER_CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_print_config(config, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("lit_papers.")
    if "data" in printed and printed["data"]:
        assert printed["data"]["class_path"].startswith("lit_papers.")


def _smoke_args(config):
    overlay = REPO / "tests" / "smoke" / config.name
    extra = ["--config", str(overlay)] if overlay.exists() else [
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2",
        "--trainer.limit_test_batches=2"]
    return ["fit", "--config", str(config), *extra, "--trainer.accelerator=cpu", "--trainer.devices=1"]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_short_fit_writes_run_folder(config, run_cli):
    folder = run_cli(_smoke_args(config))
    assert folder is not None and folder.is_dir()
    for name in ("config.yaml", "metrics.csv", "summary.json", "checkpoints/last.ckpt"):
        assert (folder / name).is_file(), f"{name} missing in {folder}"
    assert list((folder / "figures").glob("*.png")), "no figure written"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["global_step"] > 0 and summary["wall_time_s"] > 0
    assert summary["versions"]["torch"] and summary["seed"] is not None
    assert summary["final"], "no final metrics recorded"
