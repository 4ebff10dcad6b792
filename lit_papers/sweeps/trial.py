"""One trial of an offline sweep: its folder, its thread budget, its subprocess and its recorded result.

A trial runs the argv `wandb agent` would build, plus flags that put it in the sweep's folder
(`<run_root>/<sweep>/trial_NNN/`), plus what the user passed after `--`. Several trials run at
once with `--jobs N`; each gets `cores // N` threads through OMP_NUM_THREADS (torch sizes its
intra-op pool from it), so N trials never start N full-size thread pools on the same cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lit_papers.errors import UsageError
from lit_papers.sweeps.report import trial_metrics
from lit_papers.sweeps.sweep_file import agent_command, runnable

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
STOP_GRACE_S = 120  # a stopped trial saves at its next step boundary; then it is killed


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask; SLURM_CPUS_PER_TASK caps it inside a job)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cores = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        cores = min(cores, int(slurm))
    return max(1, cores)


def thread_budget(jobs: int, cores: int | None = None) -> int:
    """Threads per trial when `jobs` trials share the cores: cores // jobs, at least one."""
    return max(1, (cores or available_cores()) // jobs)


def trial_env(threads: int, base: dict | None = None) -> dict[str, str]:
    """The environment a trial starts with: ours, with every thread-pool size set to `threads`."""
    env = dict(os.environ if base is None else base)
    env.update({name: str(threads) for name in THREAD_VARS})
    return env


def placement(cfg: dict, folder: Path, name: str, version: str) -> list[str]:
    """Flags appended to the agent's argv so the trial lands in the sweep's folder and W&B project."""
    flags = [f"--run_root={folder.parent}", f"--experiment={name}", f"--run_version={version}"]
    if cfg.get("project"):
        flags.append(f"--wandb_project={cfg['project']}")
    return flags


def trial_version(folder: Path, trial: dict) -> tuple[str, list[str]]:
    """Reuse the trial's folder (resuming from last.ckpt) or pick a fresh one; never clobber a run."""
    version = trial.get("version") or trial["name"]
    run = folder / version
    last = run / "checkpoints" / "last.ckpt"
    if last.is_file():
        return version, [f"--ckpt_path={last}"]
    if run.exists() and any(run.iterdir()):
        retry = 1
        while (folder / f"{trial['name']}_retry{retry}").exists():
            retry += 1
        return f"{trial['name']}_retry{retry}", []
    return version, []


def read_summary(run: Path) -> dict:
    try:
        return json.loads((run / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def adopt_finished(folder: Path, trial: dict) -> bool:
    """A trial the state calls unfinished whose run folder says `finished` (the runner was stopped
    after the trial ended, before it saved the state): record it as finished instead of rerunning it."""
    if not trial.get("version"):
        return False
    summary = read_summary(folder / trial["version"])
    if summary.get("status") != "finished":
        return False
    trial.update(status="finished", metrics=trial_metrics(summary))
    return True


@dataclass
class Running:
    """A started trial: its record (updated in place), process, log file and start time."""

    trial: dict
    proc: subprocess.Popen
    log: object
    t0: float = field(default_factory=time.perf_counter)


def start(folder: Path, name: str, cfg: dict, trial: dict, extra: list[str], threads: int) -> Running:
    """Start one trial as a subprocess writing to `<sweep folder>/<trial>.log`."""
    version, resume = trial_version(folder, trial)
    argv = runnable(agent_command(cfg, trial["params"])) + placement(cfg, folder, name, version) + resume + extra
    trial.update(version=version, status="running", argv=argv, threads=threads)
    log = (folder / f"{trial['name']}.log").open("a")
    print(f"[sweep] {trial['name']} ({threads} thread{'s' * (threads > 1)}): {' '.join(argv)}", flush=True)
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=trial_env(threads))
    return Running(trial, proc, log)


def finish(folder: Path, running: Running, stopped: bool = False) -> None:
    """Record an ended trial: finished only with exit code 0 and a summary.json saying so;
    `stopped` (by the runner) and unfinished: interrupted, resumed by the next invocation."""
    running.log.close()
    trial, code = running.trial, running.proc.returncode
    summary = read_summary(folder / trial["version"])
    ok = code == 0 and summary.get("status") == "finished"
    status = "finished" if ok else "interrupted" if stopped else "failed"
    trial.update(status=status, returncode=code, metrics=trial_metrics(summary),
                 wall_s=round(time.perf_counter() - running.t0, 1))
    if not ok and not stopped:
        print(f"[sweep] {trial['name']} failed (exit {code}); see {folder / (trial['name'] + '.log')}",
              file=sys.stderr)


def stop(folder: Path, running: list[Running]) -> None:
    """The runner is stopping: SIGTERM its trials (each saves last.ckpt at its next step), wait, and
    record them as interrupted so the next invocation resumes them."""
    for r in running:
        if r.proc.poll() is None:
            r.proc.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for r in running:
        try:
            r.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait()
        finish(folder, r, stopped=True)


def first_trial_check(cfg: dict, params: dict, threads: int) -> None:
    """Parse the first trial's argv with the CLI (--print_config): an unknown key fails here, not later."""
    argv = agent_command(cfg, params)
    if "lit_papers" not in argv:
        return
    cli_args = argv[argv.index("lit_papers") + 1:]
    code = subprocess.run([sys.executable, "-m", "lit_papers", *cli_args, "--print_config"],
                          capture_output=True, text=True, env=trial_env(threads))
    if code.returncode != 0:
        message = " ".join(code.stderr.strip().splitlines()[-3:])
        raise UsageError(f"the sweep's first trial is not a valid command: {message}")
