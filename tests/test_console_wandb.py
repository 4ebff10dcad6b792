"""A run's W&B record holds the whole experiment, learning rates are logged, and the console says
only what a user can act on: where the run folder is, what the run ended with."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

ARGS = ["fit", "--config", "configs/classifier.yaml", "--trainer.max_epochs=1", "--trainer.limit_train_batches=4",
        "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1", "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu"]


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("wandb") / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true", "HOME": str(root.parent)}
    for key in ("WANDB_MODE", "WANDB_API_KEY", "LIT_PAPERS_RUN_VERSION", "LIT_PAPERS_RUN_DIR"):
        env.pop(key, None)
    run = subprocess.run([sys.executable, "-m", "lit_papers", *ARGS, f"--run_root={root}", "--wandb_mode=offline",
                          "--wandb_tags=[ablation,seed0]", "--wandb_notes=checking the record",
                          "--wandb_group=my-group"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return root / "classifier" / "version_0", run.stdout + run.stderr


def test_wandb_run_holds_the_whole_config_tags_notes_group_and_config_file(offline_run):
    folder, _ = offline_run
    (run_dir,) = (folder / "wandb").glob("offline-run-*")
    record = next(run_dir.glob("*.wandb")).read_bytes()
    # the resolved CLI config, nested as in config.yaml: trainer settings and the seed included
    for fragment in (b'"max_epochs":1', b'"limit_train_batches":4', b"seed_everything", b"configs/classifier.yaml",
                     b"checking the record", b"ablation", b"seed0", b"my-group"):
        assert fragment in record, fragment
    assert (run_dir / "files" / "cli_config.yaml").read_text() == (folder / "config.yaml").read_text()


def test_learning_rate_is_logged_every_logging_step(offline_run):
    folder, _ = offline_run
    with (folder / "metrics.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("lr-Adam")]
    lr = yaml.safe_load((folder / "config.yaml").read_text())["model"]["init_args"]["optim"]["lr"]
    assert len(rows) == 4 and all(float(r["lr-Adam"]) == pytest.approx(lr) for r in rows)


def test_console_names_the_folder_and_the_result_and_nothing_unactionable(offline_run):
    folder, console = offline_run
    assert f"run folder: {folder} (fit)" in console
    assert "result: finished, test/acc=" in console
    for noise in ("litlogger", "anonymous setting", "FLOPs", "train_acc  | RunningAccuracy"):
        assert noise not in console, noise
    assert "net  | MLP" in console  # the model summary keeps the layers that hold parameters


def test_progress_bar_version_is_the_run_number(tmp_path):
    from lit_papers.core.run_folder import make_loggers

    csv_logger = make_loggers(tmp_path / "exp" / "version_7", "exp", "lit-papers", None, "disabled")[0]
    assert csv_logger.version == 7 and csv_logger.log_dir == str(tmp_path / "exp" / "version_7")


def test_a_users_wandb_logger_is_configured_not_doubled(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    from lit_papers.cli import main

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cli = main([*ARGS, f"--run_root={tmp_path / 'runs'}", "--trainer.logger=WandbLogger",
                "--trainer.logger.init_args.project=custom", "--trainer.logger.init_args.tags=[mine]",
                "--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--test_after_fit=false"])
    loggers = [lg for lg in cli.trainer.loggers if isinstance(lg, WandbLogger)]
    assert len(loggers) == 1
    init = loggers[0]._wandb_init
    assert init["project"] == "custom" and init["tags"] == ["mine"] and init["group"] == "classifier"
    assert init["id"] == (cli.run_dir / ".wandb_id").read_text() and init["dir"] == str(cli.run_dir)
    # with two loggers Lightning would show the last 4 characters of "0_<W&B run id>"
    from lit_papers.core.console import progress_bar

    assert progress_bar().get_metrics(cli.trainer, cli.model)["v_num"] == "0"
