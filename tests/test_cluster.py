"""The cluster/ launchers: valid bash, and under a fake SLURM environment (DRY_RUN=1) the command they
would run, its thread setting, and flags the CLI accepts."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest
import yaml
from conftest import REPO

from lit_papers.cli import main

CLUSTER = REPO / "cluster"
SCRIPTS = sorted([*CLUSTER.glob("*.sbatch"), *CLUSTER.glob("*.sh")])
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_CPUS_PER_TASK",
              "SLURM_JOB_NUM_NODES", "SLURM_NODEID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID",
              "SLURM_LOCALID", "SLURM_RESTART_COUNT")


def dry_run(script: str, *args: str, **env: str) -> tuple[int, dict[str, str], list[str], str]:
    """(exit code, the variables the script exports, the command it would run, stderr) under `env`."""
    base = {k: v for k, v in os.environ.items() if k not in SLURM_VARS and k not in (
        "RUN_ID", "NNODES", "NODE_RANK", "MASTER_ADDR", "GROUP", "JOBS", "OMP_NUM_THREADS", "WANDB_MODE")}
    proc = subprocess.run(["bash", str(CLUSTER / script), *args], env={**base, **env, "DRY_RUN": "1"},
                          capture_output=True, text=True, timeout=60)
    lines = proc.stdout.strip().splitlines()
    exports = dict(line[len("export "):].split("=", 1) for line in lines if line.startswith("export "))
    command = [line for line in lines if not line.startswith("export ")]
    return proc.returncode, exports, shlex.split(command[-1]) if command else [], proc.stderr


def _flag(command: list[str], name: str) -> str:
    """The value of `--name=value` or `--name value` in an argv."""
    for i, arg in enumerate(command):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name:
            return command[i + 1]
    raise KeyError(name)


def _parses_with_the_cli(command: list[str], capsys) -> dict:
    """The config the CLI resolves from the script's `python -m lit_papers fit ...` argv (--print_config)."""
    argv = command[command.index("lit_papers") + 1:]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_valid_bash(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_without_arguments_is_a_usage_error(script):
    code, _, command, err = dry_run(script.name)
    assert code == 2 and command == [] and "usage:" in err


def test_single_node_threads_group_and_command(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    fake = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS_PER_NODE": "4", "SLURM_CPUS_PER_TASK": "6"}
    code, exports, command, _ = dry_run("slurm_single_node.sbatch", "configs/classifier.yaml",
                                        "--seed_everything=3", **fake)
    assert code == 0 and exports == {"OMP_NUM_THREADS": "6"}
    assert command[:5] == ["srun", "python", "-m", "lit_papers", "fit"]
    assert _flag(command, "--trainer.devices") == "4" and _flag(command, "--wandb_group") == "slurm_4242"
    assert command[-1] == "--seed_everything=3", "the user's flags come last and win"
    assert "WANDB_RUN_GROUP" not in (CLUSTER / "slurm_single_node.sbatch").read_text()
    config = _parses_with_the_cli(command, capsys)
    assert config["wandb_group"] == "slurm_4242" and config["trainer"]["strategy"] == "ddp"
    assert config["seed_everything"] == 3
    _, _, command, _ = dry_run("slurm_single_node.sbatch", "configs/classifier.yaml", GROUP="ablation", **fake)
    assert _flag(command, "--wandb_group") == "ablation"


def test_multi_node_takes_nodes_and_tasks_from_slurm(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    fake = {"SLURM_JOB_ID": "7", "SLURM_NTASKS_PER_NODE": "4", "SLURM_JOB_NUM_NODES": "2",
            "SLURM_CPUS_PER_TASK": "8"}
    code, exports, command, _ = dry_run("slurm_multi_node.sbatch", "configs/classifier.yaml", **fake)
    assert code == 0 and exports == {"OMP_NUM_THREADS": "8"}
    assert (_flag(command, "--trainer.num_nodes"), _flag(command, "--trainer.devices")) == ("2", "4")
    config = _parses_with_the_cli(command, capsys)
    assert config["trainer"]["num_nodes"] == 2 and config["wandb_group"] == "slurm_7"
    code, _, command, err = dry_run("slurm_multi_node.sbatch", "configs/classifier.yaml")  # not under sbatch
    assert code == 2 and command == [] and "sbatch --nodes" in err


def test_torchrun_multi_node_shares_one_rendezvous_id_or_refuses():
    header = (CLUSTER / "torchrun.sh").read_text().split("set -euo")[0]
    assert "RUN_ID" in header and "SLURM_JOB_ID" in header and "same on every node" in header
    code, _, command, err = dry_run("torchrun.sh", "4", "configs/deq.yaml", NNODES="2", NODE_RANK="0",
                                    MASTER_ADDR="node0")
    assert code == 2 and command == [] and "RUN_ID" in err
    ids, ranks = set(), []
    for node in ("0", "1"):  # what each node of one SLURM job runs
        code, exports, command, _ = dry_run("torchrun.sh", "4", "configs/deq.yaml", NNODES="2", MASTER_ADDR="node0",
                                            SLURM_JOB_ID="991", SLURM_NODEID=node, SLURM_CPUS_PER_TASK="16")
        assert code == 0 and exports == {"OMP_NUM_THREADS": "4"}  # 16 CPUs // 4 ranks
        ids.add(_flag(command, "--rdzv_id"))
        ranks.append(_flag(command, "--node_rank"))
        assert _flag(command, "--rdzv_endpoint") == "node0:29500" and _flag(command, "--trainer.num_nodes") == "2"
    assert ids == {"991"} and ranks == ["0", "1"]
    _, _, command, _ = dry_run("torchrun.sh", "2", "configs/deq.yaml", NNODES="2", NODE_RANK="1",
                               MASTER_ADDR="node0", RUN_ID="deq42")
    assert _flag(command, "--rdzv_id") == "deq42"


def test_torchrun_single_node_is_standalone():
    code, exports, command, _ = dry_run("torchrun.sh", "2", "configs/deq.yaml", "--trainer.max_epochs=1",
                                        SLURM_CPUS_PER_TASK="6")
    assert code == 0 and exports == {"OMP_NUM_THREADS": "3"}
    assert command[:4] == ["torchrun", "--standalone", "--nproc_per_node=2", "-m"]
    assert command[-1] == "--trainer.max_epochs=1"


def test_sweep_array_gives_trials_the_lightning_environment_plugin(monkeypatch, capsys):
    text = (CLUSTER / "slurm_sweep_array.sbatch").read_text()
    assert "interactive" not in text, "SLURM detection is turned off with the plugin, not the job name"
    code, exports, command, _ = dry_run("slurm_sweep_array.sbatch", "me/lit-papers/abc123", "3",
                                        SLURM_ARRAY_JOB_ID="55", SLURM_ARRAY_TASK_ID="2", SLURM_CPUS_PER_TASK="8")
    assert code == 0 and command == ["wandb", "agent", "--count", "3", "me/lit-papers/abc123"]
    assert exports == {"OMP_NUM_THREADS": "8", "JSONARGPARSE_DEFAULT_ENV": "true",
                       "PL_FIT__TRAINER__PLUGINS": "LightningEnvironment"}
    # What an agent's trial parses with that environment: trainer.plugins is the LightningEnvironment.
    monkeypatch.chdir(REPO)
    for name, value in exports.items():
        monkeypatch.setenv(name, value)
    config = _parses_with_the_cli(["python", "-m", "lit_papers", "fit", "--config", "configs/classifier.yaml"], capsys)
    assert config["trainer"]["plugins"]["class_path"].endswith(".LightningEnvironment")


def test_offline_sweep_job_runs_the_runner_with_jobs():
    assert "interactive" not in (CLUSTER / "slurm_offline_sweep.sbatch").read_text()
    code, exports, command, _ = dry_run("slurm_offline_sweep.sbatch", "sweeps/lottery.yaml", "--count", "3", "--",
                                        "--trainer.max_epochs=1", JOBS="4", SLURM_CPUS_PER_TASK="8")
    assert code == 0 and exports["OMP_NUM_THREADS"] == "8" and exports["WANDB_MODE"] == "offline"
    assert exports["PL_FIT__TRAINER__PLUGINS"] == "LightningEnvironment"
    assert command == ["python", "-m", "lit_papers", "sweep", "sweeps/lottery.yaml", "--jobs", "4", "--count", "3",
                       "--", "--trainer.max_epochs=1"]


@pytest.mark.slow
def test_agent_trials_of_one_array_task_get_their_own_run_folders(run_cli, tmp_path, monkeypatch):
    """Two trials an agent runs in one array task: single-process runs, two run folders."""
    _, exports, _, _ = dry_run("slurm_sweep_array.sbatch", "me/lit-papers/abc123", "2", SLURM_CPUS_PER_TASK="1")
    fake = {**exports, "SLURM_JOB_ID": "56", "SLURM_ARRAY_JOB_ID": "55", "SLURM_ARRAY_TASK_ID": "2",
            "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "lit_papers_sweep", "WANDB_SWEEP_ID": "abc123"}
    for name, value in fake.items():
        monkeypatch.setenv(name, value)
    short = ["fit", "--config", "configs/classifier.yaml", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
             "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1", "--trainer.accelerator=cpu"]
    folders = []
    for run_id in ("trialA", "trialB"):
        monkeypatch.setenv("WANDB_RUN_ID", run_id)
        folders.append(run_cli(short))
    assert folders[0] != folders[1]
    for folder in folders:
        plugins = yaml.safe_load((folder / "config.yaml").read_text())["trainer"]["plugins"]
        assert plugins["class_path"].endswith(".LightningEnvironment")


def test_preemption_requeues_only_jobs_whose_ranks_slurm_manages(monkeypatch):
    """SIGUSR1 under SLURM requeues the job, unless the trainer's cluster environment is another
    (a sweep trial with the LightningEnvironment plugin must not requeue the agent's array task)."""
    from types import SimpleNamespace

    from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

    from lit_papers.core import run_folder
    from lit_papers.core.preemption import Preemption

    for name, value in {"SLURM_JOB_ID": "56", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train"}.items():
        monkeypatch.setenv(name, value)
    single = SimpleNamespace(strategy=SimpleNamespace())  # single-device strategies have no cluster environment
    assert Preemption(slurm=True)._slurm_job(single)
    assert not Preemption(slurm=run_folder.slurm_managed([LightningEnvironment()]))._slurm_job(single)
    assert Preemption(slurm=run_folder.slurm_managed(None))._slurm_job(single)
    ddp = SimpleNamespace(strategy=SimpleNamespace(cluster_environment=LightningEnvironment()))
    assert not Preemption()._slurm_job(ddp)
    slurm_ddp = SimpleNamespace(strategy=SimpleNamespace(cluster_environment=SLURMEnvironment()))
    assert Preemption(slurm=False)._slurm_job(slurm_ddp)
    monkeypatch.delenv("SLURM_NTASKS")  # what Lightning's SLURM detection reads
    assert not Preemption()._slurm_job(single)
