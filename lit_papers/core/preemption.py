"""`Preemption`: SIGUSR1 (SLURM's `--signal=SIGUSR1@90`, or `kill -USR1`) saves a checkpoint at the
next step boundary, requeues the SLURM job, and stops the run cleanly.

Lightning's own SLURM handler saves inside the signal handler, i.e. at an arbitrary point of a
training step (possibly between the optimizer step and the progress counters), so the resumed
run can repeat or skip a batch. Here the handler only raises a flag; the save happens in
`on_train_batch_end` — the point Lightning's step-checkpoint resume is built for — with the
flag OR-reduced over ranks so every DDP rank stops at the same step. The checkpoint goes to
`checkpoints/last.ckpt` (so `--ckpt_path last` resumes it) and, under SLURM, also to
`hpc_ckpt_N.ckpt` in the run folder, which Lightning restores by itself after the requeue.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback
from lightning.pytorch.trainer.states import TrainerStatus


class Preemption(Callback):
    """Save-and-stop on a requeue signal; requeue the SLURM job from rank 0."""

    def __init__(self, signum: int = signal.SIGUSR1):
        self.signum = signum
        self.requested = False
        self.preempted = False
        self._previous = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        # Registered before Lightning's signal connector runs, which then leaves SIGUSR1 to us.
        if stage == "fit" and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._on_signal)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit" and self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(self.signum, self._previous)
            self._previous = None

    def _on_signal(self, signum, frame) -> None:
        self.requested = True  # async-signal-safe: all work happens at the next step boundary

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            return
        self.preempted = True
        folder = Path(trainer.default_root_dir)
        trainer.save_checkpoint(folder / "checkpoints" / "last.ckpt")
        if SLURMEnvironment.detect():
            trainer.save_checkpoint(trainer._checkpoint_connector.hpc_save_path(str(folder)))
            if trainer.is_global_zero:
                _requeue()
        if trainer.is_global_zero:
            print(f"preempted at step {trainer.global_step}: checkpoint saved in {folder}; resume with "
                  f"--ckpt_path last (SLURM resumes by itself after the requeue)", file=sys.stderr)
        trainer.should_stop = True
        # Stopping mid-epoch still runs on_train_epoch_end, where a ModelCheckpoint would overwrite
        # last.ckpt with a state that claims the epoch is over; it skips steps it has saved.
        for cb in trainer.checkpoint_callbacks:
            cb._last_global_step_saved = trainer.global_step
        # Marks the run 'interrupted' in summary.json (RunArtifacts reads trainer.interrupted at fit end).
        trainer.state.status = TrainerStatus.INTERRUPTED


def _requeue() -> None:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID", "")
    if not job.replace("_", "").isdigit():
        return
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
        note = "requeued" if result.returncode == 0 else f"requeue failed: {result.stderr.strip()}"
    except (OSError, subprocess.SubprocessError) as err:
        note = f"requeue failed: {err}"
    print(f"SLURM job {job}: {note}", file=sys.stderr)
