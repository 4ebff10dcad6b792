"""Sweep files are real W&B sweeps; the offline runner builds the agent's command lines and resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import yaml
from conftest import REPO

from lit_papers.cli import main
from lit_papers.sweeps import proposals, runner, state, sweep_file, trial

SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))
PAPERS = {"lottery", "random_labels", "fge", "deq", "neural_ode", "mode_connectivity"}


def _load(path):
    return yaml.safe_load(path.read_text())


def _config_of(cfg) -> str:
    command = [str(c) for c in cfg["command"]]
    return command[command.index("--config") + 1]


def _require_config(cfg):
    config = REPO / _config_of(cfg)
    if not config.is_file():
        pytest.skip(f"{_config_of(cfg)} does not exist yet (its module has not landed)")
    return config


def _get(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def test_every_paper_has_a_sweep():
    assert PAPERS <= {p.stem for p in SWEEPS}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_follows_wandb_schema(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sweeps import SweepConfig, schema_violations_from_proposed_config
    cfg = _load(path)
    assert schema_violations_from_proposed_config(cfg) == []
    SweepConfig(cfg)  # raises on a schema violation
    command = [str(c) for c in cfg["command"]]
    # `program: -m pkg` breaks the agent; the module form must be in `command` (wandb#1663).
    assert command[:6] == ["${env}", "${interpreter}", "-m", "lit_papers", "fit", "--config"]
    assert command[-1] == "${args}"
    assert cfg["metric"]["name"].count("/") == 1, "metric names are namespaced logged keys"
    # `wandb sweep` creates the sweep in this project, the one the CLI's runs log to by default.
    assert cfg["project"] == "lit-papers"


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_first_trial_parses_and_lands_on_its_keys(path, capsys, monkeypatch):
    """Every swept key is a LightningCLI key, and its value arrives where the sweep meant it."""
    cfg = _load(path)
    _require_config(cfg)
    monkeypatch.chdir(REPO)
    params = proposals.propose(sweep_file.load_sweep(path), [], seed=0)
    argv = sweep_file.agent_command(cfg, params)
    assert argv[:4] == ["/usr/bin/env", "python", "-m", "lit_papers"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv[4:], "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    for key, value in params.items():
        assert _get(printed, key) == value, key


def _logged_by_package(folder, metric: str) -> bool:
    class_path = yaml.safe_load((folder / "config.yaml").read_text())["model"]["class_path"]
    package = REPO / "lit_papers" / class_path.split(".")[1]
    return any(f'"{metric}"' in f.read_text() for f in package.rglob("*.py"))


def _smoke_overlay(config):
    overlay = REPO / "tests" / "smoke" / config.name
    return ["--config", str(overlay)] if overlay.exists() else [
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2",
        "--trainer.limit_test_batches=2"]


@pytest.mark.slow
@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_first_trial_runs_and_logs_the_sweep_metric(path, run_cli):
    """The first trial as a short fit: finishes, and the sweep's metric is a key the run logged."""
    cfg = _load(path)
    config = _require_config(cfg)
    params = proposals.propose(sweep_file.load_sweep(path), [], seed=0)
    argv = sweep_file.agent_command(cfg, params)[4:]
    overlay = _smoke_overlay(config)
    folder = run_cli([*argv, *overlay, "--trainer.accelerator=cpu", "--trainer.devices=1"])
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "finished"
    metric = cfg["metric"]["name"]
    # A metric logged only on an event (e.g. steps-to-fit once the net fits) may be absent from a
    # short fit; then it must at least be a key the module's package logs.
    assert metric in summary["final"] or _logged_by_package(folder, metric), \
        f"{metric} is not a logged key; logged: {sorted(summary['final'])}"
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    smoke = yaml.safe_load((REPO / overlay[1]).read_text()) if overlay[0] == "--config" else {}
    for key, value in params.items():
        try:
            _get(smoke, key)
            continue  # the smoke overlay shortens this knob on purpose
        except (KeyError, TypeError):
            assert _get(saved, key) == value, key


def test_agent_flags_match_wandb_agent():
    """Our copy of the agent's argument building equals wandb's own function."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    params = {"seed_everything": 3, "model.init_args.optim.lr": 0.0012, "model.init_args.ode.adjoint": False,
              "model.init_args.curve": "bezier", "data.init_args.flag": True, "x": 1e-05}
    theirs = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    ours = sweep_file.agent_flags(params)
    for macro in ("args", "args_no_hyphens", "args_no_boolean_flags"):
        assert ours[macro] == theirs[macro], macro


def test_grid_proposals_cover_the_grid_once_and_skip_done_trials():
    cfg = sweep_file.load_sweep(REPO / "sweeps" / "deq.yaml")
    trials = []
    while (params := proposals.propose(cfg, trials, seed=0)) is not None:
        trials.append({"name": str(len(trials)), "params": params, "status": "finished"})
    assert len(trials) == 9
    assert len({json.dumps(t["params"], sort_keys=True) for t in trials}) == 9
    # A failed trial stays in the state: the engine does not propose its parameters again.
    trials[4]["status"] = "failed"
    assert proposals.propose(cfg, trials, seed=0) is None


def test_random_proposals_are_reproducible():
    cfg = sweep_file.load_sweep(REPO / "sweeps" / "fge.yaml")
    first = [proposals.propose(cfg, [{"name": "a", "params": {}, "status": "finished"}] * i, seed=7) for i in range(3)]
    again = [proposals.propose(cfg, [{"name": "a", "params": {}, "status": "finished"}] * i, seed=7) for i in range(3)]
    assert first == again and first[0] != first[1]


def test_interrupted_trial_resumes_in_its_folder_and_never_reuses_a_dirty_one(tmp_path):
    record = {"name": "trial_000", "params": {}, "status": "failed"}
    assert trial.trial_version(tmp_path, record) == ("trial_000", [])
    (tmp_path / "trial_000").mkdir()
    (tmp_path / "trial_000" / "metrics.csv").write_text("step\n")
    assert trial.trial_version(tmp_path, record) == ("trial_000_retry1", [])
    last = tmp_path / "trial_000" / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"")
    assert trial.trial_version(tmp_path, record) == ("trial_000", [f"--ckpt_path={last}"])


TINY = """
method: grid
metric: {name: test/acc, goal: maximize}
parameters:
  model.init_args.optim.lr: {values: [0.001, 0.003]}
command: ["${env}", "${interpreter}", -m, lit_papers, fit, --config, configs/classifier.yaml, "${args}"]
"""
SHORT = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
         "--trainer.limit_test_batches=1", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false"]


def test_dry_run_prints_the_agent_commands_and_touches_nothing(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    runner.main([str(path), "--dry-run", "--run_root", str(tmp_path / "runs")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert "/usr/bin/env python -m lit_papers fit --config configs/classifier.yaml --model.init_args.optim.lr=0.001" \
        in lines[0]
    assert "--model.init_args.optim.lr=0.003" in lines[1]
    assert not (tmp_path / "runs").exists()


def test_changed_sweep_file_is_refused(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    folder = tmp_path / "runs" / "tiny"
    folder.mkdir(parents=True)
    state.save_state(folder, {"hash": "something-else", "trials": []})
    with pytest.raises(SystemExit) as exit_info:
        runner.main([str(path), "--run_root", str(tmp_path / "runs")])
    assert exit_info.value.code == 2


@pytest.mark.slow
def test_offline_sweep_runs_resumes_and_reports(tmp_path):
    """--count 1 runs one trial; the same command without --count skips it and runs the other."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    root = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "lit_papers", "sweep", str(path), "--run_root", str(root)]
    first = subprocess.run([*cmd, "--count", "1", "--", *SHORT], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    done = root / "tiny" / "trial_000" / "summary.json"
    stamp = done.stat().st_mtime_ns
    second = subprocess.run([*cmd, "--", *SHORT], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    assert done.stat().st_mtime_ns == stamp, "a finished trial was run again"
    assert "[sweep] trial_000" not in second.stdout and "[sweep] trial_001" in second.stdout
    saved = json.loads((root / "tiny" / "sweep_state.json").read_text())
    assert [t["status"] for t in saved["trials"]] == ["finished", "finished"]
    assert [t["params"]["model.init_args.optim.lr"] for t in saved["trials"]] == [0.001, 0.003]
    # The table lists both trials with their test/acc from summary.json.
    rows = [line.split() for line in second.stdout.splitlines() if line.startswith("trial_00")]
    accs = {r[0]: float(r[3]) for r in rows}
    for t in saved["trials"]:
        summary = json.loads((root / "tiny" / t["version"] / "summary.json").read_text())
        assert accs[t["name"]] == pytest.approx(summary["final"]["test/acc"], abs=1e-3)
    assert (root / "tiny" / "sweep_figure.png").is_file()
    assert (root / "tiny" / "sweep_results.csv").read_text().count("\n") == 3


def test_agent_trial_logs_under_the_run_id_the_sweep_assigned(tmp_path, monkeypatch):
    from lit_papers.core import run_folder

    folder = tmp_path / "exp" / "version_0"
    folder.mkdir(parents=True)
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep42")
    monkeypatch.setenv("WANDB_RUN_ID", "agentrun7")
    loggers = run_folder.make_loggers(folder, "exp", "lit-papers", None, "offline")
    assert loggers[1]._wandb_init["id"] == "agentrun7"
    assert (folder / ".wandb_id").read_text() == "agentrun7"  # a requeued trial continues that run
    monkeypatch.delenv("WANDB_SWEEP_ID")
    other = tmp_path / "exp" / "version_1"
    other.mkdir()
    loggers = run_folder.make_loggers(other, "exp", "lit-papers", None, "offline")
    assert loggers[1]._wandb_init["id"].startswith("exp-version_1-")  # outside a sweep: the folder's own id
