"""Run records are never overwritten, refused commands leave the runs tree as it was, signals end
runs cleanly, exit codes mean what docs/reliability.md says, budgets are never ignored, and a
resumed run's records are whole."""

from __future__ import annotations

import csv
import hashlib
import json
import signal
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, REPO
from test_resume import QUIET, assert_same_run, cli_subprocess, signal_at

from lit_papers.cli import main

CLASSIFIER = str(REPO / "configs" / "classifier.yaml")
SHORT = ["--trainer.max_epochs=2", "--trainer.limit_train_batches=5", "--trainer.limit_val_batches=1",
         "--trainer.limit_test_batches=1", "--trainer.limit_predict_batches=2", "--test_after_fit=false"]


def tree(root: Path) -> dict[str, str]:
    """Every path under `root` with the sha256 of each file ('dir' for folders)."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished classifier run; tests copy it so each sees the pristine run."""
    import os

    os.chdir(REPO)
    root = tmp_path_factory.mktemp("trained") / "runs"
    cli = main(["fit", "--config", CLASSIFIER, *SHORT, f"--run_root={root}", *QUIET])
    return root, cli.run_dir


# -- 1. evaluations write into their own folder ------------------------------------------------
@pytest.mark.parametrize("subcommand", ["test", "validate", "predict"])
def test_evaluation_leaves_the_training_run_byte_identical(subcommand, trained, tmp_path, monkeypatch):
    import shutil

    monkeypatch.chdir(REPO)
    root = tmp_path / "runs"
    shutil.copytree(trained[0], root)
    run = root / trained[1].relative_to(trained[0])
    before = tree(run)
    cli = main([subcommand, "--config", CLASSIFIER, *SHORT, "--ckpt_path=best", f"--run_root={root}", *QUIET])
    assert cli.run_dir == run / "eval" / f"{subcommand}-0"
    after = tree(run)
    assert {k: v for k, v in after.items() if not k.startswith("eval")} == before  # not one byte changed
    summary = json.loads((cli.run_dir / "summary.json").read_text())
    assert summary["subcommand"] == subcommand and summary["status"] == "finished"
    assert Path(summary["checkpoint"]).parent == run / "checkpoints" and "best" in summary["checkpoint"]
    assert (cli.run_dir / "config.yaml").is_file()
    if subcommand == "predict":
        preds = torch.load(cli.run_dir / "predictions.pt")
        assert preds.ndim == 2 and preds.shape[1] == 10 and len(preds) > 0  # logits, one row per digit
    else:
        key = "test/acc" if subcommand == "test" else "val/acc"
        assert 0.0 <= summary["final"][key] <= 1.0
    again = main([subcommand, "--config", CLASSIFIER, *SHORT, "--ckpt_path=best", f"--run_root={root}", *QUIET])
    assert again.run_dir == run / "eval" / f"{subcommand}-1"  # a second evaluation gets its own folder
    # the training run's config still reruns as it was
    assert "verbose" not in (run / "config.yaml").read_text()


# -- 2. and 3. usage errors leave the runs tree as it was ---------------------------------------
REFUSED = [
    ("classifier", ["--trainer.max_epochs=-5"], "max_epochs"),
    ("classifier", ["--model.init_args.optim.lr=-1"], "optim.lr must be positive"),
    ("lottery", ["--model.init_args.prune_rate=1.5"], "prune_rate must be in [0, 1)"),
    ("lottery", ["--model.init_args.prune_rate=-0.2"], "prune_rate must be in [0, 1)"),
    ("lottery", ["--model.init_args.strategy=global"], "output_prune_rate"),
    ("classifier", ["--data.init_args.dataset=cifar10", "--data.init_args.download=false",
                    "--data.init_args.root=/nonexistent/data"], "--data.download=true"),
    ("classifier", ['--model.init_args.arch_kwargs={"depth": 3}'], "lenet300_100 takes"),
    ("fge", ["--trainer.max_epochs=1"], "cycle_epochs"),
    ("mode_connectivity", ["--trainer.max_epochs=1"], "endpoint_epochs"),
    ("lottery", ["--trainer.max_epochs=1"], "round_steps"),
    ("lottery_study", ["--trainer.max_epochs=1"], "round_steps"),
    ("lottery", ["--trainer.max_steps=999999"], "round_steps"),
    ("classifier", ["--data.init_args.val_size=99999"], "val_size"),
]


@pytest.mark.parametrize(("config", "args", "message"), REFUSED,
                         ids=[f"{c}:{' '.join(a)[:40]}" for c, a, _ in REFUSED])
def test_refused_command_leaves_the_runs_tree_as_it_was(config, args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    root = tmp_path / "runs"
    (root / config / "version_0").mkdir(parents=True)
    (root / config / "version_0" / "summary.json").write_text('{"status": "finished"}')
    before = tree(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(REPO / "configs" / f"{config}.yaml"), *args, f"--run_root={root}", *QUIET])
    err = " ".join(capsys.readouterr().err.split())
    assert info.value.code == 2, err[-1500:]
    assert message in err and "Traceback" not in err
    assert tree(tmp_path) == before


def test_run_root_that_cannot_be_created_is_a_usage_error(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for bad in ("/proc/forbidden", str(blocker / "runs")):
        with pytest.raises(SystemExit) as info:
            main(["fit", "--config", CLASSIFIER, f"--run_root={bad}", *QUIET])
        err = " ".join(capsys.readouterr().err.split())
        assert info.value.code == 2 and "--run_root" in err and "Traceback" not in err, err[-800:]
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"]


# -- 4. SIGTERM and SIGINT save, record `interrupted`, exit 128 + signum, resume exactly ---------
@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_saves_at_the_step_records_interrupted_and_resumes_exactly(sig, run_cli, tmp_path):
    args = ["fit", "--config", CLASSIFIER, *SHORT]
    ref = run_cli(args, root=tmp_path / "ref")
    first = cli_subprocess([*args, *signal_at(3, sig, need_checkpoint=False)], tmp_path / "run")
    signum = getattr(signal, sig)
    assert first.returncode == 128 + signum, first.stderr[-2000:]
    assert f"{sig}: preempted at step 3" in first.stderr and "Traceback" not in first.stderr
    folder = next((tmp_path / "run").glob("*/*/checkpoints")).parent
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 3
    assert json.loads((folder / "summary.json").read_text())["status"] == "interrupted"
    resumed = run_cli([*args, "--ckpt_path", "last"], root=tmp_path / "run")
    assert resumed == folder
    assert_same_run(ref, folder)


# -- 5. a failure inside training: traceback, exit 1, `failed: ...` ---------------------------
def test_value_error_inside_training_is_a_failed_run_not_a_usage_error(tmp_path):
    run = cli_subprocess(["fit", "--config", CLASSIFIER, *SHORT, "--trainer.callbacks+=faults.RaiseAt",
                          "--trainer.callbacks.init_args.step=2"], tmp_path / "runs")
    assert run.returncode == 1, run.stderr[-2000:]
    assert "Traceback" in run.stderr and "injected failure at step 2" in run.stderr
    summary = json.loads(next((tmp_path / "runs").glob("*/*/summary.json")).read_text())
    assert summary["status"] == "failed: ValueError"


# -- 6. budgets: every config takes the debug overlay ------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_debug_overlay_runs_every_config(config, run_cli):
    folder = run_cli(["fit", "--config", str(config), "--config", str(REPO / "configs" / "overlays" / "debug.yaml")])
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert 0 < summary["global_step"] <= 20 + 3  # the overlay's 20 steps (a population step may take 3)


def test_lottery_max_steps_stops_early_at_that_step(run_cli):
    folder = run_cli(["fit", "--config", str(REPO / "configs" / "lottery.yaml"), "--trainer.max_steps=30",
                      "--trainer.val_check_interval=10", "--model.init_args.round_steps=20"])
    assert json.loads((folder / "summary.json").read_text())["global_step"] == 30


# -- 7. a resumed run's records are whole ------------------------------------------------------
def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return [{k: v for k, v in row.items() if "time" not in k} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_sigkill_then_resume_records_each_step_once_and_every_segment(run_cli, tmp_path):
    args = ["fit", "--config", CLASSIFIER, *SHORT, "--trainer.log_every_n_steps=1"]
    ref = run_cli(args, root=tmp_path / "ref")
    killed = cli_subprocess([*args, *signal_at(8, "SIGKILL")], tmp_path / "kill")
    assert killed.returncode == -9
    folder = next((tmp_path / "kill").glob("*/*/checkpoints")).parent
    first_segment = json.loads((folder / "summary.json").read_text())["segments_s"]
    resumed = run_cli([*args, "--ckpt_path", "last"], root=tmp_path / "kill")
    assert resumed == folder
    ref_rows, rows = _rows(ref / "metrics.csv"), _rows(folder / "metrics.csv")
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows]  # each step once, in order
    for a, b in zip(ref_rows, rows):
        for key in a:
            if a[key] or b[key]:
                assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-6, abs=1e-7), key
    summary = json.loads((folder / "summary.json").read_text())
    assert len(summary["segments_s"]) == 2 and summary["segments_s"][0] == first_segment[0]
    assert summary["wall_time_s"] == pytest.approx(sum(summary["segments_s"]), abs=1e-3)
