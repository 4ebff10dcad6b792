"""Run folders `<root>/<experiment>/<version>/`: allocation, resume lookup, and the loggers writing there."""

from __future__ import annotations

import netrc
import os
import re
import secrets
import sys
import zipfile
from pathlib import Path

from lit_papers.errors import UsageError

VERSION_ENV = "LIT_PAPERS_RUN_VERSION"
_VERSION_RE = re.compile(r"^version_(\d+)$")


def _is_child_rank() -> bool:
    # Lightning's DDP launcher restarts this program in ranks > 0 with LOCAL_RANK set.
    return int(os.environ.get("LOCAL_RANK", "0")) > 0 or int(os.environ.get("NODE_RANK", "0")) > 0


def _scheduler_version() -> str | None:
    """A version every rank of a SLURM/torchrun job agrees on (and a SLURM requeue reuses)."""
    if "SLURM_JOB_ID" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        job = os.environ.get("SLURM_ARRAY_JOB_ID")
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"slurm_{job}_{task}" if job and task else f"slurm_{os.environ['SLURM_JOB_ID']}"
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id and run_id != "none":
        return f"torchrun_{run_id}"
    return None


def versions(root: Path, experiment: str) -> list[Path]:
    """Run folders of `experiment`, oldest first (numbered versions by number, others by time)."""
    base = root / experiment
    if not base.is_dir():
        return []
    folders = [p for p in base.iterdir() if p.is_dir()]

    def key(p: Path):
        m = _VERSION_RE.match(p.name)
        return (p.stat().st_mtime, int(m.group(1)) if m else -1)

    return sorted(folders, key=key)


def latest_checkpoint(root: Path, experiment: str, which: str = "last") -> Path:
    """`last.ckpt` (or the best checkpoint) of the newest run of `experiment` that has one."""
    for folder in reversed(versions(root, experiment)):
        ckpts = folder / "checkpoints"
        if which == "last" and (ckpts / "last.ckpt").is_file():
            return ckpts / "last.ckpt"
        if which == "best":
            best = sorted(ckpts.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime)
            if best:
                return best[-1]
    raise UsageError(
        f"--ckpt_path {which}: no run of experiment {experiment!r} under {root} has a {which} checkpoint. "
        f"Train first (python -m lit_papers fit --config ...), pass a checkpoint file, or set "
        f"--experiment/--run_root to where the run lives.")


def check_checkpoint(path: Path, flag: str = "--ckpt_path") -> Path:
    """`path` if it is an existing, complete checkpoint archive; else a UsageError naming the others."""
    if not path.is_file():
        raise UsageError(f"{flag} {path}: no such checkpoint file. Give an existing .ckpt, or 'last'/'best' "
                         f"for the newest run of the experiment.")
    # torch.save writes a zip archive whose directory sits at the end: an empty, truncated
    # (killed mid-write, disk full) or foreign file fails this check without unpickling anything.
    if not zipfile.is_zipfile(path):
        others = sorted(str(p) for p in path.parent.glob("*.ckpt") if p != path and zipfile.is_zipfile(p))
        hint = f" Intact checkpoints beside it: {', '.join(others)}." if others else ""
        raise UsageError(f"{flag} {path}: not a readable PyTorch checkpoint (empty, truncated or another "
                         f"format); nothing was changed.{hint} Pass another checkpoint, or train afresh "
                         f"without {flag}.")
    return path


def _class_of(path: str | None):
    import importlib

    module, _, name = (path or "").rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return path


def check_checkpoint_module(path: Path, class_path: str | None) -> None:
    """UsageError when the checkpoint was written by another LightningModule than `class_path`.

    Without it Lightning reads the checkpoint's class into the config and silently trains that
    module instead, under the other config's experiment name."""
    import torch

    if not class_path:
        return
    try:  # mmap: only the small hyper-parameter record is read, not the weights
        hparams = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("hyper_parameters", {})
    except Exception:  # noqa: BLE001 - an unreadable file is reported where it is loaded
        return
    written_by = hparams.get("_class_path")
    if written_by and _class_of(written_by) is not _class_of(class_path):
        raise UsageError(f"--ckpt_path {path} was written by {written_by}, but this command builds "
                         f"{class_path}. Resume it with the config of the run that wrote it "
                         f"(--config {path.parent.parent / 'config.yaml'}), or pick a checkpoint of {class_path}.")


def allocate(root: Path, experiment: str, version: str | None, resume_from: Path | None) -> Path:
    """Create (or, when resuming, reuse) the run folder. Never hands out a folder that holds a run."""
    if resume_from is not None and resume_from.parent.name == "checkpoints":
        folder = resume_from.parent.parent
        if folder.parent.resolve() == (root / experiment).resolve() and version in (None, folder.name):
            return folder  # continue the run in its own folder
    if _is_child_rank() and os.environ.get(VERSION_ENV):
        return root / experiment / os.environ[VERSION_ENV]
    version = version or _scheduler_version()
    if version is not None:
        folder = root / experiment / version
        restarted = int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0
        if folder.exists() and any(folder.iterdir()) and not restarted and not _scheduler_version():
            raise UsageError(
                f"run folder {folder} already holds a run and would be overwritten. Pick another "
                f"--run_version, drop it to get the next free version, or resume that run with "
                f"--ckpt_path {folder / 'checkpoints' / 'last.ckpt'}.")
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[VERSION_ENV] = folder.name
        return folder
    (root / experiment).mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in (root / experiment).iterdir() if (m := _VERSION_RE.match(p.name))]
    n = max(taken, default=-1) + 1
    while True:  # mkdir is the atomic claim: parallel sweep trials never share a folder
        folder = root / experiment / f"version_{n}"
        try:
            folder.mkdir()
            break
        except FileExistsError:
            n += 1
    os.environ[VERSION_ENV] = folder.name
    return folder


def wandb_mode(requested: str | None) -> tuple[str, str | None]:
    """('online' | 'offline' | 'disabled', a one-line notice or None). Never prompts, never waits."""
    env = os.environ.get("WANDB_MODE")
    mode = (requested or env or "").lower()
    if mode in ("disabled", "offline", "online", "dryrun"):
        return ("offline" if mode == "dryrun" else mode), None
    if mode:
        raise UsageError(f"unknown W&B mode {mode!r}; use online, offline or disabled")
    if os.environ.get("WANDB_API_KEY") or _netrc_has_wandb():
        return "online", None
    return "offline", ("W&B: no credentials found, logging offline to the run folder "
                       "(sync later with `wandb sync <run folder>/wandb/offline-run-*`).")


def _netrc_has_wandb() -> bool:
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def make_loggers(folder: Path, experiment: str, project: str, entity: str | None, mode: str | None) -> list:
    """A CSVLogger writing `metrics.csv` into the run folder, and a WandbLogger beside it."""
    from lightning.pytorch.loggers import WandbLogger

    from .csv_log import RunCSVLogger

    loggers = [RunCSVLogger(save_dir=str(folder.parent.parent), name=experiment, version=folder.name)]
    resolved, notice = wandb_mode(mode)
    if resolved == "disabled":
        return loggers
    if notice and not _is_child_rank():
        print(notice, file=sys.stderr)
    id_file = folder / ".wandb_id"  # stable id: a resumed run continues the same W&B run
    run_id = id_file.read_text().strip() if id_file.exists() else f"{experiment}-{folder.name}-{secrets.token_hex(3)}"
    if os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID"):
        run_id = os.environ["WANDB_RUN_ID"]  # a `wandb agent` trial: the sweep waits for this run id
    if not _is_child_rank():
        id_file.write_text(run_id)
    loggers.append(WandbLogger(project=project, entity=entity, group=experiment, name=f"{experiment}/{folder.name}",
                               id=run_id, save_dir=str(folder), offline=resolved == "offline",
                               settings={"silent": True, "init_timeout": 60}))
    return loggers
