"""`python -m lit_papers sweep sweeps/X.yaml`: a W&B sweep file run on one machine, no server.

Trials are chosen by W&B's own sweep engine (the `sweeps` package: grid, random, bayes), and
each trial runs the command line a `wandb agent` would build from the same file, as a
subprocess, into `<run_root>/<sweep>/trial_NNN/`. The state of the sweep lives in
`<run_root>/<sweep>/sweep_state.json`: running the same command again skips finished trials,
resumes an interrupted one from its `last.ckpt`, and proposes new ones until `--count`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import yaml

from lit_papers.errors import UsageError
from lit_papers.sweep_report import aggregate_figure, print_table, trial_metrics, write_csv

EXIT_USAGE = 2
STATE_FILE = "sweep_state.json"
AGENT_ENV = "/usr/bin/env"  # what the agent puts for ${env} on POSIX
_ENVVAR = re.compile(r"\$\{envvar:([A-Z0-9_]*)\}")


# -- the sweep file --------------------------------------------------------------------------
def load_sweep(path: Path) -> dict:
    """Read and validate a sweep file with the engine's JSON schema plus the agent's own rules."""
    if not path.is_file():
        raise UsageError(f"sweep file {path} not found; the sweep files are in sweeps/*.yaml")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UsageError(f"sweep file {path} is not valid YAML: {err}") from None
    if not isinstance(cfg, dict):
        raise UsageError(f"sweep file {path} must be a mapping with method, metric, parameters, command")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the engine's pydantic-v1 style config warns on import
        from sweeps import schema_violations_from_proposed_config

    violations = schema_violations_from_proposed_config(cfg)
    if violations:
        raise UsageError(f"sweep file {path} does not follow the W&B sweep schema: " + "; ".join(violations))
    command = cfg.get("command")
    if command is None and "program" not in cfg:
        raise UsageError(f"sweep file {path} has neither `command` nor `program`; add command: "
                         '["${env}", "${interpreter}", -m, lit_papers, fit, --config, configs/X.yaml, "${args}"]')
    if command is not None and "${args}" not in command:
        raise UsageError(f"sweep file {path}: `command` must contain ${{args}} (the agent's --key=value "
                         "flags, the only form the LightningCLI parses)")
    if cfg["method"] in ("random", "bayes"):
        cfg.setdefault("_needs_count", True)
    return cfg


def _agent_flags(params: dict) -> dict[str, list[str]]:
    """The agent's argument macros (wandb/sdk/launch/sweeps/utils.py create_sweep_command_args):
    `--{name}={value}` with Python's str(); booleans as bare flags for ${args_no_boolean_flags}."""
    flags = [f"--{k}={v}" for k, v in params.items()]
    return {"args": flags, "args_no_hyphens": [f[2:] for f in flags],
            "args_no_boolean_flags": [f"--{k}" if v is True else f"--{k}={v}"
                                      for k, v in params.items() if v is not False]}


def agent_command(cfg: dict, params: dict) -> list[str]:
    """The argv `wandb agent` builds for one trial (wandb_agent.Agent._command_run)."""
    template = [str(c) for c in cfg.get("command") or ["${env}", "${interpreter}", "${program}", "${args}"]]
    # ${envvar:NAME} -> $NAME; the agent leaves the bare name when the variable is unset.
    template = [_ENVVAR.sub(lambda m: os.environ.get(m.group(1), m.group(1)), c) for c in template]
    macros = {"env": [AGENT_ENV], "interpreter": ["python"], "program": [cfg.get("program", "")],
              **_agent_flags(params)}
    argv: list[str] = []
    for chunk in template:
        argv += macros.get(chunk[2:-1], []) if chunk.startswith("${") and chunk.endswith("}") else [chunk]
    return argv


def runnable(argv: list[str]) -> list[str]:
    """The agent's argv, run with this interpreter (a venv's python even when `python` is another)."""
    out = list(argv)
    if out[:2] == [AGENT_ENV, "python"]:
        out = [sys.executable, *out[2:]]
    return out


def _plain(value):
    """Engine values (numpy scalars) as the plain Python values the server would send the agent."""
    if isinstance(value, np.generic):
        value = value.item()
    return value


# -- choosing trials ------------------------------------------------------------------------
def _engine_runs(trials: list[dict], metric: str | None):
    from sweeps import RunState, SweepRun

    runs = []
    for t in trials:
        state = {"finished": RunState.finished, "failed": RunState.failed}.get(t["status"], RunState.running)
        summary = {}
        if metric and t.get("metrics", {}).get(metric) is not None:
            summary[metric] = t["metrics"][metric]
        runs.append(SweepRun(name=t["name"], state=state, summary_metrics=summary,
                             config={k: {"value": v} for k, v in t["params"].items()}))
    return runs


def propose(cfg: dict, trials: list[dict], seed: int) -> dict | None:
    """The next trial's parameters from the sweep engine, or None when a grid is exhausted."""
    import sweeps

    # Seeded per trial index so a dry run and the real run propose the same random trials.
    random.seed(seed + len(trials))
    np.random.seed(seed + len(trials))
    engine_cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    metric = (cfg.get("metric") or {}).get("name")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GP fit warnings of the bayes engine on few points
        run = sweeps.next_run(engine_cfg, _engine_runs(trials, metric), validate=False)
    if run is None:
        return None
    return {k: _plain(v["value"]) for k, v in sorted(run.config.items())}


def total_trials(cfg: dict, count: int | None) -> int | None:
    """How many trials the sweep has: --count, else the whole grid (None = until the grid is exhausted)."""
    if count is not None:
        return count
    if cfg.get("_needs_count"):
        raise UsageError(f"a {cfg['method']} sweep has no end: pass --count N (the number of trials)")
    return None


# -- state ----------------------------------------------------------------------------------
def sweep_hash(cfg: dict) -> str:
    return hashlib.sha256(json.dumps({k: v for k, v in cfg.items() if not k.startswith("_")},
                                     sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_state(folder: Path, cfg: dict, sweep_file: Path) -> dict:
    path = folder / STATE_FILE
    if not path.exists():
        return {"sweep_file": str(sweep_file), "hash": sweep_hash(cfg), "trials": []}
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UsageError(f"{path} is not valid JSON ({err}); move it away to start afresh") from None
    if state.get("hash") != sweep_hash(cfg):
        raise UsageError(f"{sweep_file} changed since the trials in {folder} were run. Keep those trials: "
                         f"run the new file with another --run_root or --name.")
    return state


def save_state(folder: Path, state: dict) -> None:
    tmp = folder / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.replace(folder / STATE_FILE)  # atomic: a killed sweep never leaves half a state file


# -- running --------------------------------------------------------------------------------
def placement(folder: Path, name: str, version: str) -> list[str]:
    """Flags appended to the agent's argv so the trial lands in the sweep's folder."""
    return [f"--run_root={folder.parent}", f"--experiment={name}", f"--run_version={version}"]


def _trial_version(folder: Path, trial: dict) -> tuple[str, list[str]]:
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


def run_trial(folder: Path, name: str, cfg: dict, trial: dict, extra: list[str]) -> None:
    """Run one trial as a subprocess; record its status, exit code and summary metrics."""
    version, resume = _trial_version(folder, trial)
    argv = runnable(agent_command(cfg, trial["params"])) + placement(folder, name, version) + resume + extra
    trial.update(version=version, status="running", argv=argv)
    log = folder / f"{trial['name']}.log"
    print(f"[sweep] {trial['name']}: {' '.join(argv)}", flush=True)
    t0 = time.perf_counter()
    with log.open("a") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    summary = _read_summary(folder / version)
    ok = proc.returncode == 0 and summary.get("status") == "finished"
    trial.update(status="finished" if ok else "failed", returncode=proc.returncode,
                 metrics=trial_metrics(summary), wall_s=round(time.perf_counter() - t0, 1))
    if not ok:
        print(f"[sweep] {trial['name']} failed (exit {proc.returncode}); see {log}", file=sys.stderr)


def _read_summary(run: Path) -> dict:
    try:
        return json.loads((run / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def first_trial_check(cfg: dict, params: dict) -> None:
    """Parse the first trial's argv with the CLI (--print_config): an unknown key fails here, not later."""
    argv = agent_command(cfg, params)
    if "lit_papers" not in argv:
        return
    cli_args = argv[argv.index("lit_papers") + 1:]
    code = subprocess.run([sys.executable, "-m", "lit_papers", *cli_args, "--print_config"],
                          capture_output=True, text=True)
    if code.returncode != 0:
        message = " ".join(code.stderr.strip().splitlines()[-3:])
        raise UsageError(f"the sweep's first trial is not a valid command: {message}")


def run_sweep(sweep_file: Path, count: int | None, dry_run: bool, run_root: Path, name: str | None,
              seed: int, extra: list[str]) -> list[dict]:
    """Run (or with dry_run only print) the sweep; return the trial records."""
    cfg = load_sweep(sweep_file)
    name = name or sweep_file.stem
    folder = run_root / name
    wanted = total_trials(cfg, count)
    state = (load_state(folder, cfg, sweep_file) if folder.exists()
             else {"sweep_file": str(sweep_file), "hash": sweep_hash(cfg), "trials": []})
    trials = state["trials"]
    if dry_run:
        planned = list(trials)
        while wanted is None or len(planned) < wanted:
            params = propose(cfg, planned, seed)
            if params is None:
                break
            planned.append({"name": f"trial_{len(planned):03d}", "params": params, "status": "planned"})
        for t in planned:
            argv = agent_command(cfg, t["params"]) + placement(folder, name, t.get("version") or t["name"])
            print(f"{t['name']} [{t['status']}]: {' '.join(argv)}")
        return planned
    if not trials:
        params = propose(cfg, [], seed)
        if params is None:
            raise UsageError(f"{sweep_file}: the sweep engine proposed no trial")
        first_trial_check(cfg, params)
    folder.mkdir(parents=True, exist_ok=True)
    for trial in trials:  # unfinished trials of an earlier invocation first, same parameters
        if trial["status"] != "finished":
            run_trial(folder, name, cfg, trial, extra)
            save_state(folder, state)
    while wanted is None or len(trials) < wanted:
        params = propose(cfg, trials, seed)
        if params is None:
            break
        trials.append({"name": f"trial_{len(trials):03d}", "params": params, "status": "pending"})
        save_state(folder, state)
        run_trial(folder, name, cfg, trials[-1], extra)
        save_state(folder, state)
    return trials


def report(folder: Path, cfg: dict, trials: list[dict]) -> None:
    """The table of trials' summary metrics, sweep_results.csv, and the aggregate figure."""
    metric = (cfg.get("metric") or {}).get("name")
    print_table(trials, metric)
    write_csv(folder / "sweep_results.csv", trials)
    figure = aggregate_figure(folder, trials, metric)
    if figure is not None:
        print(f"[sweep] figure: {figure}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lit_papers sweep",
                                description="Run a W&B sweep file offline, trial by trial, resumably.")
    p.add_argument("sweep_file", type=Path, help="a sweep file, e.g. sweeps/lottery.yaml")
    p.add_argument("--count", type=int, default=None,
                   help="total number of trials (default: the whole grid; required for random/bayes)")
    p.add_argument("--dry-run", action="store_true", help="print the trials' command lines, run nothing")
    p.add_argument("--run_root", type=Path, default=Path("runs"), help="trials go to <run_root>/<name>/")
    p.add_argument("--name", default=None, help="sweep folder name (default: the sweep file's stem)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random/bayes proposals")
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    """Entry point of `python -m lit_papers sweep`. Arguments after `--` go to every trial."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    args = _parser().parse_args(argv)
    if args.count is not None and args.count <= 0:
        _fail(f"--count must be a positive number of trials, got {args.count}")
    try:
        trials = run_sweep(args.sweep_file, args.count, args.dry_run, args.run_root, args.name,
                           args.seed, extra)
        if not args.dry_run:
            report(args.run_root / (args.name or args.sweep_file.stem), load_sweep(args.sweep_file), trials)
    except UsageError as err:
        _fail(" ".join(str(err).split()))
    failed = [t["name"] for t in trials if t["status"] == "failed"]
    if failed:
        print(f"[sweep] {len(failed)} trial(s) failed: {', '.join(failed)}; rerun the same command to retry",
              file=sys.stderr)
        raise SystemExit(1)
    return trials


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)
