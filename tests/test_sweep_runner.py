"""The offline sweep runner: N trials at once with cores // N threads each, resume, and a report of what ran."""

from __future__ import annotations

import csv
import json
import os
import sys
import textwrap

import pytest
import yaml
from conftest import REPO

from lit_papers.errors import UsageError
from lit_papers.sweeps import report, runner, state, trial

# A stand-in trial program: records its thread settings, start/end time and argv; writes summary.json.
PROBE = textwrap.dedent('''
    import json, os, sys, time
    started = time.time()
    import torch
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    run = os.path.join(args["run_root"], args["experiment"], args["run_version"])
    os.makedirs(run, exist_ok=True)
    with open(os.path.join(args["run_root"], "calls.txt"), "a") as f:
        f.write(args["x"] + "\\n")
    time.sleep(1.0)
    summary = {"status": "finished", "final": {"test/acc": float(args["x"]), "torch_threads": torch.get_num_threads()},
               "omp": os.environ.get("OMP_NUM_THREADS"), "start": started, "end": time.time()}
    with open(os.path.join(run, "summary.json"), "w") as f:
        json.dump(summary, f)
''')


def _probe_sweep(tmp_path, values=(0.1, 0.2, 0.3, 0.4)):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump({
        "method": "grid", "metric": {"name": "test/acc", "goal": "maximize"},
        "parameters": {"x": {"values": list(values)}}, "program": str(probe),
        "command": ["${env}", "${interpreter}", "${program}", "${args}"]}))
    return path


def _summaries(folder):
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(folder.glob("trial_*/summary.json"))}


def test_thread_budget_is_cores_over_jobs_and_reaches_the_trial_env(monkeypatch):
    assert [trial.thread_budget(j, cores=8) for j in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    env = trial.trial_env(3, base={"OMP_NUM_THREADS": "16", "PATH": "/bin"})
    assert env == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "3", "PATH": "/bin"}
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert trial.available_cores() == 1  # an allocation caps the affinity mask


def test_two_jobs_overlap_each_with_half_the_cores_and_a_rerun_skips_finished_trials(tmp_path, monkeypatch,
                                                                                      capsys):
    monkeypatch.setattr(runner, "available_cores", lambda: 4)
    path, root = _probe_sweep(tmp_path), tmp_path / "runs"
    runner.main([str(path), "--run_root", str(root), "--jobs", "2", "--count", "2"])
    folder = root / "probe"
    first = _summaries(folder)
    assert sorted(first) == ["trial_000", "trial_001"]
    a, b = first.values()
    assert a["start"] < b["end"] and b["start"] < a["end"], "the two trials did not run at the same time"
    for s in first.values():  # 4 cores // 2 jobs, in the trial's environment and in torch's pool
        assert s["omp"] == "2" and s["final"]["torch_threads"] == 2
    stamps = {p: (folder / p / "summary.json").stat().st_mtime_ns for p in first}
    out = capsys.readouterr().out
    assert "up to 2 trial(s) at once, 2 thread(s) each (4 cores)" in out

    runner.main([str(path), "--run_root", str(root), "--jobs", "2"])  # the rest of the grid
    assert {p: (folder / p / "summary.json").stat().st_mtime_ns for p in first} == stamps
    calls = (root / "calls.txt").read_text().split()
    assert sorted(calls) == ["0.1", "0.2", "0.3", "0.4"], "a finished trial ran again or one is missing"
    saved = json.loads((folder / state.STATE_FILE).read_text())
    assert [t["status"] for t in saved["trials"]] == ["finished"] * 4
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("trial_")]
    assert len(rows) == 4 and all(r[1] == "finished" for r in rows)
    assert (folder / "sweep_results.csv").read_text().count("\n") == 5


def test_a_trial_that_finished_before_the_state_was_saved_is_not_rerun(tmp_path):
    path, root = _probe_sweep(tmp_path, values=(0.5,)), tmp_path / "runs"
    folder = root / "probe"
    (folder / "trial_000").mkdir(parents=True)
    (folder / "trial_000" / "summary.json").write_text(json.dumps({"status": "finished", "final": {"test/acc": 0.5}}))
    from lit_papers.sweeps.sweep_file import load_sweep

    saved = state.new_state(load_sweep(path), path)
    saved["trials"] = [{"name": "trial_000", "params": {"x": 0.5}, "status": "running", "version": "trial_000"}]
    state.save_state(folder, saved)
    trials = runner.main([str(path), "--run_root", str(root)])
    assert [(t["status"], t["metrics"]["test/acc"]) for t in trials] == [("finished", 0.5)]
    assert not (root / "calls.txt").exists()


def test_report_shows_the_values_the_trials_ran(tmp_path, capsys):
    run = tmp_path / "trial_000"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({
        "seed_everything": 3, "model": {"class_path": "x.Y", "init_args": {"rounds": 1, "prune_rate": 0.2}}}))
    params = {"model.init_args.rounds": 5, "model.init_args.prune_rate": 0.2, "seed_everything": 3,
              "data.init_args.absent": "kept"}
    assert report.ran_values(run, params) == {"model.init_args.rounds": 1, "model.init_args.prune_rate": 0.2,
                                              "seed_everything": 3, "data.init_args.absent": "kept"}
    # a sweep written before the settings groups: its key is read where the run's config holds it now
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"init_args": {"optim": {"lr": 0.003}}}}))
    assert report.ran_values(run, {"model.init_args.lr": 0.001}) == {"model.init_args.lr": 0.003}
    (run / "config.yaml").write_text(yaml.safe_dump({
        "seed_everything": 3, "model": {"class_path": "x.Y", "init_args": {"rounds": 1, "prune_rate": 0.2}}}))
    trials = [{"name": "trial_000", "version": "trial_000", "status": "finished", "params": params,
               "metrics": {"lottery/es_test_acc": 0.9}}]
    report.report(tmp_path, {"metric": {"name": "lottery/es_test_acc"}}, trials)
    lines = capsys.readouterr().out.splitlines()
    header, row = lines[0].split(), lines[2].split()
    assert row[header.index("rounds")] == "1"
    assert any("model.init_args.rounds: 1 trial(s) ran 1 where the sweep file says 5" in line for line in lines)
    with (tmp_path / "sweep_results.csv").open() as f:
        assert next(csv.DictReader(f))["model.init_args.rounds"] == "1"


def test_open_ended_bayes_dry_run_plans_its_first_trials(capsys):
    trials = runner.main([str(REPO / "sweeps" / "fge.yaml"), "--dry-run", "--jobs", "4", "--run_root", "/nonexistent",
                          "--", "--trainer.max_epochs=2"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(trials) == len(lines) == 4 and all("[planned]" in line for line in lines)
    assert all(line.endswith("--wandb_project=lit-papers --trainer.max_epochs=2") for line in lines)
    assert len({line.split(": ", 1)[1] for line in lines}) == 4, "the planned trials are not distinct"
    assert all("--wandb_project=lit-papers" in line for line in lines)


def test_missing_sweep_engine_is_a_usage_error_naming_the_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sweeps", None)  # `import sweeps` raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        runner.main([str(_probe_sweep(tmp_path)), "--dry-run"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "`sweeps` package" in err and "pip install -e ." in err and "Traceback" not in err


def test_a_second_runner_on_the_same_folder_is_refused(tmp_path):
    with state.lock(tmp_path):
        with pytest.raises(UsageError, match="another sweep runner"):
            state.lock(tmp_path)
    state.lock(tmp_path).close()  # released with the first handle


@pytest.mark.parametrize("flag", ["--jobs=0", "--count=-1", "--threads=x"])
def test_bad_counts_exit_2(flag, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        runner.main([str(_probe_sweep(tmp_path)), flag])
    assert exit_info.value.code == 2


def test_sweep_engine_is_a_runtime_dependency():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("sweeps") for d in project["dependencies"])
    assert not any(d.startswith("sweeps") for extra in project["optional-dependencies"].values() for d in extra)


# A real 2-job sweep: 4 tiny fits of the classifier; a flag after `--` overrides a swept value.
TINY4 = """
method: grid
metric: {name: test/acc, goal: maximize}
parameters:
  model.init_args.optim.lr: {values: [0.001, 0.003]}
  seed_everything: {values: [0, 1]}
  trainer.max_epochs: {value: 5}
command: ["${env}", "${interpreter}", -m, lit_papers, fit, --config, configs/classifier.yaml, "${args}"]
"""
SHORT = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
         "--trainer.limit_test_batches=1", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
         "--trainer.enable_model_summary=false"]


@pytest.mark.slow
def test_two_job_offline_sweep_of_four_tiny_trials(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    path, root = tmp_path / "tiny4.yaml", tmp_path / "runs"
    path.write_text(TINY4)
    trials = runner.main([str(path), "--run_root", str(root), "--jobs", "2", "--", *SHORT])
    out = capsys.readouterr().out
    assert [t["status"] for t in trials] == ["finished"] * 4
    lines = out.splitlines()
    header = next(line.split() for line in lines if line.startswith("trial "))
    rows = [line.split() for line in lines if line.startswith("trial_00")]
    assert len(rows) == 4
    for row in rows:  # the table shows the epochs that ran (1, from after `--`), not the sweep's 5
        assert row[header.index("trainer.max_epochs")] == "1"
        saved = yaml.safe_load((root / "tiny4" / row[0] / "config.yaml").read_text())
        assert saved["trainer"]["max_epochs"] == 1
        summary = json.loads((root / "tiny4" / row[0] / "summary.json").read_text())
        assert float(row[header.index("test/acc")]) == pytest.approx(summary["final"]["test/acc"], abs=1e-3)
    assert {(t["params"]["model.init_args.optim.lr"], t["params"]["seed_everything"]) for t in trials} == \
        {(0.001, 0), (0.001, 1), (0.003, 0), (0.003, 1)}
    assert all(t["threads"] == trial.thread_budget(2) for t in trials)
    assert "trainer.max_epochs: 4 trial(s) ran 1 where the sweep file says 5" in out
    assert os.path.getsize(root / "tiny4" / "sweep_results.csv") > 0
