"""Run folders `<root>/<experiment>/<version>/`: allocation, resume lookup, and the loggers writing there."""

from __future__ import annotations

import errno
import netrc
import os
import re
import secrets
import sys
import zipfile
from pathlib import Path

from lit_papers.errors import UsageError

VERSION_ENV = "LIT_PAPERS_RUN_VERSION"
RUN_DIR_ENV = "LIT_PAPERS_RUN_DIR"  # the claimed folder, for DDP ranks > 0 (evaluation folders included)
_VERSION_RE = re.compile(r"^version_(\d+)$")


def _is_child_rank() -> bool:
    # Lightning's DDP launcher restarts this program in ranks > 0 with LOCAL_RANK set.
    return int(os.environ.get("LOCAL_RANK", "0")) > 0 or int(os.environ.get("NODE_RANK", "0")) > 0


def _scheduler_version(slurm: bool = True) -> str | None:
    """A version every rank of a SLURM/torchrun job agrees on (and a SLURM requeue reuses).

    `slurm=False` when the trainer does not take its ranks from SLURM (a `LightningEnvironment`
    plugin, as in a sweep agent's array task that runs several single-process trials in a row):
    each run then gets its own numbered folder."""
    if slurm and "SLURM_JOB_ID" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
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
    from .load_module import checkpoint_hparams  # torch: imported when a checkpoint is named

    if not class_path:
        return
    written_by = checkpoint_hparams(path).get("_class_path")
    if written_by and _class_of(written_by) is not _class_of(class_path):
        raise UsageError(f"--ckpt_path {path} was written by {written_by}, but this command builds "
                         f"{class_path}. Resume it with the config of the run that wrote it "
                         f"(--config {path.parent.parent / 'config.yaml'}), or pick a checkpoint of {class_path}.")


EVALUATIONS = ("validate", "test", "predict")
_claimed: list[Path] = []  # folders (and experiment folders) this process created


def plan(root: Path, experiment: str, version: str | None, resume_from: Path | None,
         subcommand: str = "fit", slurm: bool = True) -> Path:
    """The folder this run will write to, computed without touching the disk.

    `fit` resuming a run folder's checkpoint continues in that folder; an evaluation of a run
    folder's checkpoint gets `<run>/eval/<subcommand>-<n>/`, so the training run's files stay
    byte-identical; everything else gets a fresh version (`version_N`, or the scheduler's; `slurm`
    as in `_scheduler_version`)."""
    if resume_from is not None and resume_from.parent.name == "checkpoints":
        folder = resume_from.parent.parent
        if subcommand in EVALUATIONS:
            if _is_child_rank() and os.environ.get(RUN_DIR_ENV):
                return Path(os.environ[RUN_DIR_ENV])
            return _next_free(folder / "eval", f"{subcommand}-")
        if folder.parent.resolve() == (root / experiment).resolve() and version in (None, folder.name):
            return folder  # continue the run in its own folder
    if _is_child_rank() and os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    scheduled = _scheduler_version(slurm)
    version = version or scheduled
    if version is not None:
        folder = root / experiment / version
        restarted = int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0
        if folder.exists() and any(folder.iterdir()) and not restarted and not scheduled:
            raise UsageError(
                f"run folder {folder} already holds a run and would be overwritten. Pick another "
                f"--run_version, drop it to get the next free version, or resume that run with "
                f"--ckpt_path {folder / 'checkpoints' / 'last.ckpt'}.")
        return folder
    return _next_free(root / experiment, "version_")


def _next_free(parent: Path, prefix: str) -> Path:
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)$")
    taken = [int(m.group(1)) for p in (parent.iterdir() if parent.is_dir() else ()) if (m := pattern.match(p.name))]
    return parent / f"{prefix}{max(taken, default=-1) + 1}"


def slurm_managed(plugins) -> bool:
    """False when the trainer's plugins name a cluster environment other than SLURM's."""
    from lightning.fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment

    items = plugins if isinstance(plugins, (list, tuple)) else [plugins]
    return not any(isinstance(p, ClusterEnvironment) and not isinstance(p, SLURMEnvironment) for p in items)


def check_writable(root: Path) -> None:
    """UsageError unless `root` exists as a writable folder or can be created (checked without creating it)."""
    probe = root
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        what = "is not a folder" if probe.exists() and not probe.is_dir() else "is not writable"
        raise UsageError(f"--run_root {root}: cannot create run folders there ({probe} {what}). Point --run_root "
                         f"at a writable folder (default: runs).")


def claim(folder: Path) -> Path:
    """Create the planned folder and return it; a numbered one that a parallel run took meanwhile moves
    to the next free number (mkdir is the atomic claim: parallel sweep trials never share a folder)."""
    created, up = [], folder.parent
    while not up.exists() and up.parent != up:
        created.insert(0, up)
        up = up.parent
    try:
        if folder.exists():  # a resumed run, a scheduler restart or the same DDP job's other rank
            _export(folder)
            return folder
        folder.parent.mkdir(parents=True, exist_ok=True)
        prefix = re.match(r"^(version_|(?:validate|test|predict)-)\d+$", folder.name)
        while True:
            try:
                folder.mkdir()
                break
            except FileExistsError:
                if prefix is None:
                    break  # a fixed version another rank created: share it
                folder = _next_free(folder.parent, prefix.group(1))
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise UsageError(f"cannot create the run folder {folder}: {err.strerror or err}. Point --run_root at a "
                         f"writable folder.") from None
    _claimed.extend([*created, folder])
    _export(folder)
    return folder


def _export(folder: Path) -> None:
    os.environ[RUN_DIR_ENV] = str(folder.resolve())
    if folder.parent.name != "eval":
        os.environ[VERSION_ENV] = folder.name


def discard_claimed() -> None:
    """Remove the folders this process created (a command refused after its folder was made):
    a refused command leaves the runs tree as it was."""
    import shutil

    *parents, folder = _claimed or [None]
    if folder is not None and folder.is_dir() and not any(folder.glob("checkpoints/*.ckpt")):
        shutil.rmtree(folder, ignore_errors=True)
        for path in reversed(parents):
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    _claimed.clear()


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


def _run_name(folder: Path) -> str:
    """`<experiment>/<version>`, or `<experiment>/<version>/eval/<subcommand>-<n>` for an evaluation."""
    parts = folder.parts
    return "/".join(parts[-4:] if folder.parent.name == "eval" else parts[-2:])


def _job_type(folder: Path) -> str:
    return folder.name.split("-")[0] if folder.parent.name == "eval" else "fit"


def record_wandb_id(folder: Path, loggers: list) -> None:
    """Write the W&B run id into the claimed folder (a resumed run continues the same W&B run)."""
    for logger in loggers:
        run_id = getattr(logger, "_id", None)
        if run_id and not _is_child_rank() and type(logger).__name__ == "WandbLogger":
            (folder / ".wandb_id").write_text(run_id)


def make_loggers(folder: Path, experiment: str, project: str, entity: str | None, mode: str | None,
                 group: str | None = None, tags: list[str] | None = None, notes: str | None = None,
                 log_model: bool | str = False, config: dict | None = None, user=None) -> list:
    """A CSVLogger writing `metrics.csv` into the run folder, and a WandbLogger beside it (group:
    default the experiment; config: the run's whole resolved config, nested as in config.yaml).
    `user`: a WandbLogger the user put in `trainer.logger`; its own settings (project, tags, notes,
    log_model, ...) are kept, and it gets the run folder's id, folder, group and offline fallback."""
    from lightning.pytorch.loggers import WandbLogger

    from .csv_log import RunCSVLogger

    # version_N as the number N: Lightning names the folder the same and the progress bar shows v_num N
    number = _VERSION_RE.match(folder.name)
    version = int(number.group(1)) if number else folder.name
    loggers = [RunCSVLogger(save_dir=str(folder.parent.parent), name=folder.parent.name, version=version)]
    resolved, notice = wandb_mode(mode)
    if resolved == "disabled":
        return loggers
    if notice and not _is_child_rank():
        print(notice, file=sys.stderr)
    id_file = folder / ".wandb_id"  # stable id: a resumed run continues the same W&B run
    run_id = id_file.read_text().strip() if id_file.exists() else f"{experiment}-{folder.name}-{secrets.token_hex(3)}"
    if os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID"):
        run_id = os.environ["WANDB_RUN_ID"]  # a `wandb agent` trial: the sweep waits for this run id
    if not _is_child_rank() and folder.is_dir():  # a planned folder gets it when it is claimed
        id_file.write_text(run_id)
    chosen = {}
    if user is not None:  # what the user set on their logger, beyond Lightning's defaults
        chosen = {k: v for k, v in user._wandb_init.items()
                  if v is not None and k not in ("id", "dir", "resume", "anonymous", "name")
                  and not (k == "project" and v == "lightning_logs")}
        log_model = user._log_model or log_model
    extra = {"tags": list(tags)} if tags else {}
    if notes:
        extra["notes"] = notes
    if config is not None:
        extra["config"] = config
    extra = {**extra, **{k: v for k, v in chosen.items() if k != "project"}}
    project = chosen.get("project", project)
    loggers.append(WandbLogger(project=project, entity=entity, group=group or experiment, name=_run_name(folder),
                               log_model=log_model, job_type=_job_type(folder), **extra,
                               id=run_id, save_dir=str(folder), offline=resolved == "offline",
                               settings={"silent": True, "init_timeout": 60}))
    # Lightning passes `anonymous=None`, on which wandb warns that the setting has no effect
    loggers[-1]._wandb_init.pop("anonymous", None)
    return loggers
