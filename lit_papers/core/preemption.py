"""`Preemption`: a signal saves a checkpoint at the next step boundary and stops the run cleanly.

- SIGUSR1 (SLURM's `--signal=SIGUSR1@90`, or `kill -USR1`): save, requeue the SLURM job, exit 0.
- SIGTERM (`timeout`, `kill`, schedulers, `wandb agent`) and SIGINT (Ctrl-C): save, stop with
  status `interrupted`; the CLI exits with 128 + the signal number (143, 130). A second Ctrl-C
  stops at once.

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


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # stop for good: the CLI exits with 128 + signum


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class Preemption(Callback):
    """Save-and-stop on SIGUSR1 (and requeue the SLURM job from rank 0), SIGTERM or SIGINT."""

    def __init__(self, signum: int = signal.SIGUSR1, slurm: bool = True):
        self.signum = signum
        self.slurm = slurm  # False when the trainer's plugins name another cluster environment
        self.requested = False
        self.preempted = False
        self.stopped_by: int | None = None  # the signal that stopped the run
        self._signal: int | None = None
        self._previous: dict[int, object] = {}

    def _install(self, signums) -> None:
        for signum in signums:
            self._previous.setdefault(signum, signal.getsignal(signum))
            signal.signal(signum, self._on_signal)

    def setup(self, trainer, pl_module, stage: str) -> None:
        # Registered before Lightning's signal connector runs, which then leaves SIGUSR1 to us.
        if stage == "fit" and _main_thread():
            self._install([self.signum])

    def on_train_start(self, trainer, pl_module) -> None:
        # After Lightning's connector installed its SIGTERM handler (which raises SIGTERMException
        # at the next batch, saving nothing): ours replaces it for the training loop.
        if _main_thread():
            self._install(STOP_SIGNALS)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit" and _main_thread():
            for signum, handler in self._previous.items():
                if signal.getsignal(signum) == self._on_signal:
                    signal.signal(signum, handler)
            self._previous = {}

    def _on_signal(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.requested = True  # async-signal-safe: all work happens at the next step boundary
        self._signal = self._signal or signum

    def _slurm_job(self, trainer) -> bool:
        """Whether SLURM manages this trainer: its cluster environment (multi-process strategies
        have one), else SLURM's detection unless a plugin named another environment."""
        env = getattr(trainer.strategy, "cluster_environment", None)
        if env is not None:
            return isinstance(env, SLURMEnvironment)
        return self.slurm and SLURMEnvironment.detect()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            return
        self.preempted = True
        signum = int(trainer.strategy.reduce(float(self._signal or 0), reduce_op="max")) \
            if trainer.world_size > 1 else (self._signal or self.signum)
        self.stopped_by = signum or self.signum
        folder = Path(trainer.default_root_dir)
        trainer.save_checkpoint(folder / "checkpoints" / "last.ckpt")
        requeue = self.stopped_by == self.signum
        if requeue and self._slurm_job(trainer):
            trainer.save_checkpoint(trainer._checkpoint_connector.hpc_save_path(str(folder)))
            if trainer.is_global_zero:
                _requeue()
        if trainer.is_global_zero:
            name = signal.Signals(self.stopped_by).name
            after = " (SLURM resumes by itself after the requeue)" if requeue else ""
            print(f"{name}: preempted at step {trainer.global_step}: checkpoint saved in {folder}; resume with "
                  f"--ckpt_path last{after}", file=sys.stderr)
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
