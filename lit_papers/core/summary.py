"""`RunArtifacts`: writes summary.json and the learning-curve figure into the run folder."""

from __future__ import annotations

import csv
import json
import math
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import lightning
import torch
from lightning.pytorch import Callback

from .csv_log import RunCSVLogger
from .figures import run_dir, save_figure


def _better(key: str) -> str | None:
    """'max' or 'min' for metrics whose best value is meaningful, None otherwise."""
    leaf = key.rsplit("/", 1)[-1]
    if "acc" in leaf or leaf.endswith("ll") and not leaf.endswith("nll"):
        return "max"
    if "loss" in leaf or "nll" in leaf or "err" in leaf or "bpd" in leaf:
        return "min"
    return None


def _scalar_metrics(metrics: dict) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            out[key] = float(value)
    return out


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def peak_memory_mb(device: torch.device) -> float:
    """Peak accelerator memory if on CUDA, else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class RunArtifacts(Callback):
    """Tracks final and best-so-far metrics; writes `summary.json` and `figures/learning_curve.png`.

    The summary is merged into an existing one, so `fit` then its test after fit (or a resumed
    fit) keep adding to the same file instead of replacing it. `wall_time_s` is the sum of the
    fit's segments (`segments_s`: each resumed part, measured to its last record, including a
    part killed after its last checkpoint). An evaluation of a checkpoint (`checkpoint` names
    it) writes its own summary in its own folder.
    """

    def __init__(self, seed: int | None = None, experiment: str | None = None, checkpoint: str | None = None):
        self.seed = seed
        self.experiment = experiment
        self.checkpoint = checkpoint
        self.best: dict[str, float] = {}
        self._t0 = time.perf_counter()
        self._prior_segments: list[float] = []
        self._fitting = False

    # -- bookkeeping -----------------------------------------------------------------------
    def _update_best(self, trainer) -> None:
        for key, value in _scalar_metrics(trainer.callback_metrics).items():
            mode = _better(key)
            if mode is None:
                continue
            old = self.best.get(key)
            if old is None or (value > old if mode == "max" else value < old):
                self.best[key] = value

    def on_fit_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()
        self._fitting = True
        old = self._read(trainer)
        resumed = bool(trainer.ckpt_path)
        prior = old.get("segments_s") or ([old["wall_time_s"]] if "wall_time_s" in old else [])
        self._prior_segments = [float(x) for x in prior] if resumed else []
        self.best = dict(old.get("best", {})) if resumed else {}
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._update_best(trainer)
        if trainer.state.fn == "validate":  # a `validate` run has no fit end: record it now
            self._evaluation_written(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._update_best(trainer)
        self._write(trainer, pl_module, status="running")

    def on_fit_end(self, trainer, pl_module) -> None:
        self._update_best(trainer)
        status = "interrupted" if trainer.interrupted else "finished"
        self._write(trainer, pl_module, status=status)
        self._plot_learning_curve(trainer)

    def on_test_end(self, trainer, pl_module) -> None:
        self._evaluation_written(trainer, pl_module)

    def on_predict_end(self, trainer, pl_module) -> None:
        self._evaluation_written(trainer, pl_module)

    def _evaluation_written(self, trainer, pl_module) -> None:
        # After a fit, an evaluation only adds metrics; a run that only evaluates is finished by it.
        status = None if self._read(trainer).get("status") else "finished"
        self._write(trainer, pl_module, status=status)

    @property
    def running(self) -> bool:
        """True once a loop has started: an error from here on is a failure of the run."""
        return getattr(self, "_started", False) or getattr(self, "_evaluating", False)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._evaluating = True

    def on_test_start(self, trainer, pl_module) -> None:
        self._evaluating = True

    def on_predict_start(self, trainer, pl_module) -> None:
        self._evaluating = True

    def on_train_start(self, trainer, pl_module) -> None:
        self._started = True
        if trainer.ckpt_path and trainer.is_global_zero:  # the steps after the checkpoint are replayed
            for logger in trainer.loggers:
                if isinstance(logger, RunCSVLogger) and Path(logger.log_dir) == run_dir(trainer):
                    logger.drop_rows_from(trainer.global_step)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        # Every checkpoint also records the segment's time so far: a SIGKILL loses little of it.
        if self._fitting and trainer.state.fn == "fit":
            self._write(trainer, pl_module, status=None)

    def on_exception(self, trainer, pl_module, exception) -> None:
        # A failure before training started (e.g. a checkpoint that does not fit) leaves the
        # summary of the run being resumed as it was; a new run records its failure.
        folder = run_dir(trainer)
        new_run = folder is not None and not (folder / "summary.json").exists()
        if getattr(self, "_started", False) or new_run:
            self._write(trainer, pl_module, status=f"failed: {type(exception).__name__}")

    def state_dict(self) -> dict:
        return {"best": dict(self.best)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = dict(state_dict.get("best", {}))

    # -- files -------------------------------------------------------------------------------
    @staticmethod
    def _read(trainer) -> dict:
        folder = run_dir(trainer)
        if folder is None or not (folder / "summary.json").exists():
            return {}
        try:
            return json.loads((folder / "summary.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def _write(self, trainer, pl_module, status: str | None) -> None:
        folder = run_dir(trainer)
        if folder is None or not trainer.is_global_zero:
            return
        summary = self._read(trainer)
        final = summary.get("final", {})
        final.update(_scalar_metrics(trainer.callback_metrics))
        segment = round(time.perf_counter() - self._t0, 3)
        summary.update({
            "experiment": self.experiment,
            "version": folder.name,
            "module": type(pl_module).__name__,
            "final": final,
            "best": {**summary.get("best", {}), **self.best},
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "seed": self.seed,
            "device": str(pl_module.device),
            "num_devices": trainer.world_size,
            "peak_memory_mb": round(max(peak_memory_mb(pl_module.device),
                                        summary.get("peak_memory_mb", 0.0)), 1),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "lightning": lightning.__version__, "lit_papers": _package_version()},
            "git_commit": git_commit(),
            "command": " ".join(sys.argv),
        })
        if self.checkpoint is not None:
            summary.update({"checkpoint": self.checkpoint, "subcommand": trainer.state.fn})
        if self._fitting:
            segments = [*self._prior_segments, segment]
            summary["segments_s"] = segments
            summary["wall_time_s"] = round(sum(segments), 3)
        elif status is not None:
            summary["wall_time_s"] = segment
        if status is not None:
            summary["status"] = status
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True))
        tmp.replace(folder / "summary.json")  # atomic: a crash never leaves half a file

    def _plot_learning_curve(self, trainer) -> None:
        folder = run_dir(trainer)
        if folder is None or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            logger.save()
        rows = _read_metrics_csv(folder / "metrics.csv")
        if rows:
            save_figure(trainer, learning_curve_figure(rows), "learning_curve")


def _package_version() -> str:
    from lit_papers import __version__

    return __version__


def _read_metrics_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def learning_curve_figure(rows: list[dict[str, str]]):
    """Loss (left) and accuracy (right) against the optimizer step, from metrics.csv rows."""
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    keys = [k for k in rows[0] if k.startswith(("train/", "val/"))]
    for key in keys:
        points = [(float(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        if not points:
            continue
        leaf = key.rsplit("/", 1)[-1]
        ax = ax_loss if "loss" in leaf else ax_acc if "acc" in leaf else None
        if ax is None:
            continue
        xs, ys = zip(*points)
        ax.plot(xs, ys, label=key, marker="o" if key.startswith("val/") and len(xs) < 40 else None,
                markersize=3, alpha=0.9)
    for ax, title in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("optimizer step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    ax_loss.set_yscale("log")
    fig.tight_layout()
    return fig
