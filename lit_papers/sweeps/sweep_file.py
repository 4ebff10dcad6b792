"""A W&B sweep file: validation with the engine's schema, and the argv `wandb agent` builds from it."""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import yaml

from lit_papers.errors import UsageError

AGENT_ENV = "/usr/bin/env"  # what the agent puts for ${env} on POSIX
_ENVVAR = re.compile(r"\$\{envvar:([A-Z0-9_]*)\}")
ENGINE_MISSING = ("the offline sweep runner needs W&B's sweep engine, the `sweeps` package, which is not "
                  "installed. It is a dependency of lit_papers: reinstall with `pip install -e .` (or "
                  "`pip install 'sweeps>=0.2'`).")


def engine():
    """The `sweeps` package (W&B's sweep engine), or a UsageError naming the install command."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the engine's pydantic-v1 style config warns on import
        try:
            import sweeps
        except ImportError:
            raise UsageError(ENGINE_MISSING) from None
    return sweeps


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
    violations = engine().schema_violations_from_proposed_config(cfg)
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


def agent_flags(params: dict) -> dict[str, list[str]]:
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
              **agent_flags(params)}
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


def plain(value):
    """Engine values (numpy scalars) as the plain Python values the server would send the agent."""
    if isinstance(value, np.generic):
        value = value.item()
    return value
